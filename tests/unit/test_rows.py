"""netmgr.cli.rows: ``network ls`` and ``ps`` rows, Go time text and go-units HumanDuration."""

from __future__ import annotations

import datetime as dt

import pytest

from netmgr.cli import rows

MIN, HOUR, DAY = 60, 3600, 86400


@pytest.mark.parametrize(
    "seconds, text",
    [
        # the table of go-units' own TestHumanDuration
        (0, "Less than a second"),
        (0.999, "Less than a second"),
        (-5, "Less than a second"),
        (1, "1 second"),
        (1.9, "1 second"),
        (2, "2 seconds"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (120, "2 minutes"),
        (59 * MIN, "59 minutes"),
        (60 * MIN, "About an hour"),
        (HOUR + 29 * MIN, "About an hour"),
        (HOUR + 30 * MIN, "2 hours"),  # Go rounds half up: int(1.5 + 0.5)
        (2 * HOUR + 30 * MIN, "3 hours"),  # not banker's rounding (round(2.5) == 2)
        (3 * HOUR, "3 hours"),
        (47 * HOUR, "47 hours"),
        (47 * HOUR + 29 * MIN, "47 hours"),
        (47 * HOUR + 30 * MIN, "2 days"),
        (48 * HOUR, "2 days"),
        (DAY * 7, "7 days"),
        (DAY * 13, "13 days"),
        (DAY * 14, "2 weeks"),
        (DAY * 59, "8 weeks"),
        (DAY * 60, "2 months"),
        (DAY * 365, "12 months"),
        (DAY * 365 * 2 - DAY, "24 months"),
        (DAY * 365 * 2, "2 years"),
        (DAY * 365 * 3 - 10 * MIN, "2 years"),  # years use the truncated hours
        (DAY * 365 * 3, "3 years"),
        (DAY * 365 * 10, "10 years"),
    ],
)
def test_human_duration(seconds, text):
    assert rows.human_duration(seconds) == text


@pytest.mark.parametrize(
    "rfc, go",
    [
        ("2026-11-28T06:24:54.094667103Z", "2026-11-28 06:24:54.094667103 +0000 UTC"),
        ("2026-11-28T06:24:54.094667000Z", "2026-11-28 06:24:54.094667 +0000 UTC"),
        ("2026-11-28T06:24:54.100000000Z", "2026-11-28 06:24:54.1 +0000 UTC"),
        ("2026-11-28T06:24:54.000000000Z", "2026-11-28 06:24:54 +0000 UTC"),
        ("2026-11-28T06:24:54Z", "2026-11-28 06:24:54 +0000 UTC"),
    ],
)
def test_go_time(rfc, go):
    assert rows.go_time(rfc) == go


def test_parse_time():
    t = rows.parse_time("2026-11-28T06:24:54.094667103Z")
    assert t == dt.datetime(2026, 11, 28, 6, 24, 54, 94667, tzinfo=dt.UTC)
    assert rows.parse_time("2026-11-28T06:24:54Z") == dt.datetime(
        2026, 11, 28, 6, 24, 54, tzinfo=dt.UTC
    )
    assert rows.parse_time("2026-11-28T06:24:54.5Z").microsecond == 500000


NET_DOC = {
    "Name": "labnet",
    "Id": "74b7c7a98d758aa053f7f686dcb5c75b118c00c8c8359366636a447fac905a88",
    "Created": "2026-11-28T06:24:54.094667103Z",
    "Scope": "local",
    "Driver": "bridge",
    "EnableIPv6": False,
    "Internal": True,
    "Labels": {"env": "prod"},
}


def test_network_row_like_dockers_json():
    assert rows.network_row(NET_DOC) == {
        "CreatedAt": "2026-11-28 06:24:54.094667103 +0000 UTC",
        "Driver": "bridge",
        "ID": "74b7c7a98d75",
        "IPv6": "false",
        "Internal": "true",
        "Labels": "env=prod",
        "Name": "labnet",
        "Scope": "local",
    }


def test_network_row_no_trunc_and_labels():
    doc = dict(NET_DOC, Labels={"a": "1", "b": "2"})
    row = rows.network_row(doc, no_trunc=True)
    assert row["ID"] == NET_DOC["Id"]
    assert set(row["Labels"].split(",")) == {"a=1", "b=2"}
    assert rows.network_row(dict(NET_DOC, Labels=None))["Labels"] == ""
    assert all(isinstance(v, str) for v in row.values())


NOW = dt.datetime(2026, 11, 28, 6, 30, 0, tzinfo=dt.UTC)


def _ctr_doc(status="running", cmd=("sleep", "3600"), **state):
    st = {
        "Status": status,
        "ExitCode": 0,
        "StartedAt": "2026-11-28T06:29:58.5Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    }
    st.update(state)
    return {
        "Id": "fd1ab47d13ad" + "0" * 52,
        "Created": "2026-11-28T06:29:57.5Z",
        "Name": "/psweb",
        "State": st,
        "Config": {"Cmd": list(cmd), "Rootfs": ""},
        "NetworkSettings": {
            "Networks": {"cnet": {}, "bridge": {}},
            "Ports": {
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                "81/udp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}],
            },
        },
    }


def test_container_row_running():
    row = rows.container_row(_ctr_doc(), now=NOW)
    assert row == {
        "ID": "fd1ab47d13ad",
        "Image": "-",
        "Command": '"sleep 3600"',
        "CreatedAt": "2026-11-28 06:29:57.5 +0000 UTC",
        "RunningFor": "2 seconds ago",
        "Status": "Up 1 second",
        "State": "running",
        "Ports": "0.0.0.0:8080->80/tcp, 127.0.0.1:32768->81/udp",
        "Names": "psweb",
        "Networks": "bridge,cnet",
    }


def test_container_row_exited_and_created():
    exited = _ctr_doc("exited", ExitCode=7, FinishedAt="2026-11-28T06:29:58Z")
    assert rows.container_row(exited, now=NOW)["Status"] == "Exited (7) 2 seconds ago"
    created = _ctr_doc("created")
    assert rows.container_row(created, now=NOW)["Status"] == "Created"
    old = dict(_ctr_doc(), Created="2026-11-28T05:29:00Z")
    assert rows.container_row(old, now=NOW)["RunningFor"] == "About an hour ago"


def test_container_row_command_quoting_and_truncation():
    # the daemon single-quotes only arguments with a space: "sh -c 'exit 7'"
    assert (
        rows.container_row(_ctr_doc(cmd=("sh", "-c", "exit 7")), now=NOW)["Command"]
        == "\"sh -c 'exit 7'\""
    )
    assert rows.container_row(_ctr_doc(cmd=("echo", "$HOME")), now=NOW)["Command"] == '"echo $HOME"'
    assert rows.container_row(_ctr_doc(cmd=("true",)), now=NOW)["Command"] == '"true"'
    long = ("sh", "-c", "while true; do sleep 1; done")
    assert (
        rows.container_row(_ctr_doc(cmd=long), now=NOW)["Command"] == '"sh -c \'while true; …"'
    )  # 19 chars + …
    assert len(rows.container_row(_ctr_doc(cmd=long), now=NOW)["Command"]) == 22
    full = rows.container_row(_ctr_doc(cmd=long), no_trunc=True, now=NOW)
    assert full["Command"] == "\"sh -c 'while true; do sleep 1; done'\""
    assert full["ID"] == "fd1ab47d13ad" + "0" * 52
    exactly20 = ("x" * 20,)
    assert rows.container_row(_ctr_doc(cmd=exactly20), now=NOW)["Command"] == '"' + "x" * 20 + '"'


def test_container_row_image_and_no_ports():
    doc = _ctr_doc()
    doc["Config"]["Rootfs"] = "/srv/rootfs"
    doc["NetworkSettings"]["Ports"] = {}
    row = rows.container_row(doc, now=NOW)
    assert row["Image"] == "/srv/rootfs"
    assert row["Ports"] == ""


def test_columns_and_headers():
    assert [h for h, _ in rows.NETWORK_COLUMNS] == ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]
    assert [h for h, _ in rows.PS_COLUMNS] == [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    assert set(rows.NETWORK_HEADERS) == set(rows.network_row(NET_DOC))
    assert set(rows.PS_HEADERS) == set(rows.container_row(_ctr_doc(), now=NOW))
