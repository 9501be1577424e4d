"""Tests for netmgr.cli.table: docker-style tables, --format for ls and inspect.

Table layouts were checked against Go's text/tabwriter with docker's settings
(minwidth 10, tabwidth 1, padding 3, padchar ' ') and against `docker network
ls` (docker CLI 28).
"""

from __future__ import annotations

import json

import pytest

from netmgr.cli.table import format_inspect, format_output, format_table, tabwrite
from netmgr.errors import InvalidConfig

COLUMNS = [("NETWORK ID", "{{.ID}}"), ("NAME", "{{.Name}}"), ("DRIVER", "{{.Driver}}"),
           ("SCOPE", "{{.Scope}}")]
HEADERS = {"CreatedAt": "CREATED AT", "IPv6": "IPV6"}
NETWORKS = [
    {"ID": "4f8b6a1b2e0c", "Name": "bridge", "Driver": "bridge", "Scope": "local",
     "IPv6": "false", "Internal": "false", "Labels": "", "CreatedAt": "2024-01-02 03:04:05"},
    {"ID": "6d5b6c1f4d2e", "Name": "host", "Driver": "host", "Scope": "local",
     "IPv6": "false", "Internal": "false", "Labels": "a=1", "CreatedAt": "2024-01-02 03:04:06"},
]
DOCKER_LS = (
    "NETWORK ID     NAME      DRIVER    SCOPE\n"
    "4f8b6a1b2e0c   bridge    bridge    local\n"
    "6d5b6c1f4d2e   host      host      local\n"
)


# ------------------------------------------------------------- tabwriter


def test_format_table_matches_docker_network_ls() -> None:
    rows = [[n["ID"], n["Name"], n["Driver"], n["Scope"]] for n in NETWORKS]
    assert format_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows) == DOCKER_LS


def test_columns_are_widest_cell_plus_three_but_at_least_ten() -> None:
    out = format_table(["A", "B", "C"], [["x" * 12, "y", "z"]])
    assert out == "A              B         C\n" + "x" * 12 + "   y         z\n"


def test_last_column_is_not_padded() -> None:
    out = format_table(["NAME", "LONG"], [["a", "x" * 30], ["b", ""]])
    # the empty last cell of "b" is not padded; the cell before it still is
    assert out.splitlines() == ["NAME      LONG", "a         " + "x" * 30, "b         "]


def test_table_without_rows_is_header_only() -> None:
    assert format_table(["NETWORK ID", "NAME"], []) == "NETWORK ID   NAME\n"


def test_width_counts_characters_not_bytes() -> None:
    out = format_table(["N", "X"], [["héllo-wörld", "1"]])
    assert out.splitlines()[1] == "héllo-wörld   1"


@pytest.mark.parametrize("text, expected", [
    ("", ""),
    ("a\tb\n", "a         b\n"),
    ("a\tb", "a         b"),
    ("a\tb\t\n", "a         b         \n"),  # a trailing tab pads the cell before it
    ("a\t\n", "a         \n"),
    ("a\tb\nc\n", "a         b\nc\n"),
    # a line without a tab ends the alignment block
    ("abcdefghijkl\tx\nplain\ny\tz\n", "abcdefghijkl   x\nplain\ny         z\n"),
    # a column block spans only consecutive lines having that column
    ("a\tb\tc\nabcdefghijklmn\tb\n", "a                b         c\nabcdefghijklmn   b\n"),
    ("\t\n", "          \n"),
])
def test_tabwrite_like_go(text: str, expected: str) -> None:
    assert tabwrite(text) == expected


def test_tabwrite_custom_settings() -> None:
    assert tabwrite("a\tb\n", minwidth=0, padding=1) == "a b\n"


# ------------------------------------------------------------- format_output


@pytest.mark.parametrize("fmt", [None, "", "table"])
def test_default_table(fmt: str | None) -> None:
    assert format_output(fmt, NETWORKS, COLUMNS) == DOCKER_LS


def test_default_table_without_objects_prints_header() -> None:
    assert format_output(None, [], COLUMNS) == "NETWORK ID   NAME      DRIVER    SCOPE\n"


def test_json_is_one_compact_object_per_line() -> None:
    out = format_output("json", NETWORKS, COLUMNS)
    lines = out.splitlines()
    assert out.endswith("\n") and len(lines) == 2
    assert json.loads(lines[0]) == NETWORKS[0]
    assert lines[1].startswith('{"ID":"6d5b6c1f4d2e","Name":"host",')
    assert format_output("json", [], COLUMNS) == ""


def test_custom_table_takes_headers_from_default_columns() -> None:
    out = format_output("table {{.ID}}\t{{.Name}}", NETWORKS, COLUMNS)
    assert out == ("NETWORK ID     NAME\n"
                   "4f8b6a1b2e0c   bridge\n"
                   "6d5b6c1f4d2e   host\n")


def test_custom_table_header_map_and_unknown_fields() -> None:
    out = format_output("table {{.Name}}\t{{.CreatedAt}}\t{{.Labels}}", NETWORKS, COLUMNS,
                        headers=HEADERS)
    assert out.splitlines() == [
        "NAME      CREATED AT            LABELS",
        "bridge    2024-01-02 03:04:05   ",
        "host      2024-01-02 03:04:06   a=1",
    ]


def test_custom_table_with_escaped_tab_as_typed_in_a_shell() -> None:
    out = format_output(r"table {{.Scope}}\t{{.Driver}}\t{{.Name}}", NETWORKS, COLUMNS)
    assert out == ("SCOPE     DRIVER    NAME\n"
                   "local     bridge    bridge\n"
                   "local     host      host\n")


def test_table_header_keeps_names_through_functions() -> None:
    fmt = 'table {{upper .Name}}\t{{json .Driver}}\t{{.Name | printf "%s"}}'
    assert format_output(fmt, NETWORKS[:1], COLUMNS) == (
        "NAME      DRIVER     NAME\n"
        'BRIDGE    "bridge"   bridge\n')


def test_table_header_applies_pad_like_docker() -> None:
    out = format_output("table {{pad .Name 1 1}}|", NETWORKS[:1], COLUMNS)
    assert out == " NAME |\n bridge |\n"


def test_table_prefix_without_space_and_plain_text() -> None:
    assert format_output("tablex{{.Name}}", NETWORKS, COLUMNS) == "xNAME\nxbridge\nxhost\n"
    assert format_output("table {{.Name}}:{{.Driver}}", NETWORKS, COLUMNS) == (
        "NAME:DRIVER\nbridge:bridge\nhost:host\n")


def test_table_header_error_keeps_partial_header() -> None:
    objects = [{"Name": "web", "IPAM": {"Driver": "default"}}]
    out = format_output("table {{.Name}}\t{{.IPAM.Driver}}", objects, COLUMNS)
    assert out.splitlines() == ["NAME      ", "web       default"]


def test_template_renders_once_per_object() -> None:
    assert format_output("{{.Name}} {{.Driver}}", NETWORKS, COLUMNS) == (
        "bridge bridge\nhost host\n")
    assert format_output("{{.ID}}", NETWORKS, COLUMNS) == "4f8b6a1b2e0c\n6d5b6c1f4d2e\n"
    assert format_output("{{.Name}}", [], COLUMNS) == ""


def test_template_is_trimmed_and_escapes_translated() -> None:
    assert format_output(r"  {{.Name}}\t{{.Driver}}\n  ", NETWORKS[:1], COLUMNS) == (
        "bridge\tbridge\n\n")


def test_template_missing_field_prints_no_value() -> None:
    assert format_output("{{.Nope}}", NETWORKS[:1], COLUMNS) == "<no value>\n"


@pytest.mark.parametrize("fmt", ["{{foo}}", "table {{.Name", "{{end}}"])
def test_bad_format_raises_invalid_config(fmt: str) -> None:
    with pytest.raises(InvalidConfig, match="^template parsing error: template: :1: "):
        format_output(fmt, NETWORKS, COLUMNS)


def test_execution_error_raises_invalid_config() -> None:
    with pytest.raises(InvalidConfig, match="can't evaluate field X"):
        format_output("{{.Name.X}}", NETWORKS, COLUMNS)


# ------------------------------------------------------------- format_inspect

INSPECT = [{
    "Name": "web", "Id": "4f8b", "EnableIPv6": False,
    "IPAM": {"Driver": "default", "Options": None,
             "Config": [{"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"}]},
    "Containers": {}, "Labels": {"a": "1"},
}]
INSPECT_TEXT = """[
    {
        "Name": "web",
        "Id": "4f8b",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": [
                {
                    "Subnet": "172.20.0.0/16",
                    "Gateway": "172.20.0.1"
                }
            ]
        },
        "Containers": {},
        "Labels": {
            "a": "1"
        }
    }
]
"""


@pytest.mark.parametrize("fmt", [None, ""])
def test_inspect_default_is_indented_json_array(fmt: str | None) -> None:
    assert format_inspect(fmt, INSPECT) == INSPECT_TEXT


def test_inspect_without_objects() -> None:
    assert format_inspect(None, []) == "[]\n"
    assert format_inspect("json", []) == "[]\n"
    assert format_inspect("{{.Name}}", []) == ""


def test_inspect_json_is_one_line_array() -> None:
    out = format_inspect("json", INSPECT * 2)
    assert out.count("\n") == 1 and out.startswith('[{"Name":"web","Id":"4f8b",')
    assert json.loads(out) == INSPECT * 2


@pytest.mark.parametrize("fmt, expected", [
    ("{{.Name}}", "web\nweb\n"),
    ("{{json .IPAM}}", '{"Driver":"default","Options":null,"Config":[{"Subnet":"172.20.0.0/16",'
                       '"Gateway":"172.20.0.1"}]}\n' * 2),
    ("{{range .IPAM.Config}}{{.Subnet}}{{end}}", "172.20.0.0/16\n" * 2),
    ('{{index .Labels "a"}}', "1\n1\n"),
    ("  {{.Name}} ", "  web \n  web \n"),  # inspect keeps the template as is
    (r"{{.Name}}\t", "web\\t\nweb\\t\n"),
])
def test_inspect_template_per_object(fmt: str, expected: str) -> None:
    assert format_inspect(fmt, INSPECT * 2) == expected


def test_inspect_bad_template() -> None:
    with pytest.raises(InvalidConfig, match='function "nope" not defined'):
        format_inspect("{{nope .Name}}", INSPECT)
