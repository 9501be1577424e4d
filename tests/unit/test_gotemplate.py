"""Tests for netmgr.cli.gotemplate, the Go text/template subset behind --format.

Expected outputs were checked against Go's text/template (go1.19) with
Docker's template functions, on the same data decoded from JSON.
"""

from __future__ import annotations

import pytest

from netmgr.cli import gotemplate
from netmgr.cli.gotemplate import compile, format_value, is_true, render, to_json
from netmgr.errors import InvalidConfig

NETWORK = {
    "Name": "web",
    "Id": "4f8b6a1b2e0c9d8e7f6a5b4c3d2e1f00",
    "Scope": "local",
    "Driver": "bridge",
    "EnableIPv6": False,
    "IPAM": {
        "Driver": "default",
        "Options": None,
        "Config": [
            {"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"},
            {"Subnet": "fd00::/64", "Gateway": "fd00::1"},
        ],
    },
    "Internal": False,
    "Attachable": True,
    "Containers": {
        "bbb": {"Name": "db", "IPv4Address": "172.20.0.3/16"},
        "aaa": {"Name": "app", "IPv4Address": "172.20.0.2/16"},
    },
    "Options": {},
    "Labels": {"com.example": "yes", "env": "prod"},
}

DATA = {"A": 1, "N": None, "S": "abc", "L": [1, 2], "M": {"b": 1, "a": 2}, "F": 1.5,
        "E": "", "EL": [], "EM": {}, "T": True}


def run(template: str, data: object = DATA) -> str:
    return render(template, data)


# ------------------------------------------------------------- docker-typical


@pytest.mark.parametrize("template, expected", [
    ("{{.Name}} {{.Driver}}", "web bridge"),
    ('{{json .IPAM}}',
     ('{"Driver":"default","Options":null,"Config":[{"Subnet":"172.20.0.0/16",'
     '"Gateway":"172.20.0.1"},{"Subnet":"fd00::/64","Gateway":"fd00::1"}]}')),
    ("{{range .IPAM.Config}}{{.Subnet}}{{end}}", "172.20.0.0/16fd00::/64"),
    ("{{range .IPAM.Config}}{{.Subnet}} {{end}}", "172.20.0.0/16 fd00::/64 "),
    ("{{range $k, $v := .Containers}}{{$v.Name}} {{end}}", "app db "),
    ("{{range $k, $v := .Containers}}{{$k}}={{$v.IPv4Address}};{{end}}",
     "aaa=172.20.0.2/16;bbb=172.20.0.3/16;"),
    ('{{index .Labels "com.example"}}', "yes"),
    ('{{index .Labels "missing"}}', "<no value>"),
    ("{{if .Internal}}yes{{else}}no{{end}}", "no"),
    ("{{if .Attachable}}yes{{else}}no{{end}}", "yes"),
    ("{{.IPAM.Driver}}", "default"),
    ("{{(index .IPAM.Config 0).Gateway}}", "172.20.0.1"),
    ("{{with index .IPAM.Config 1}}{{.Gateway}}{{end}}", "fd00::1"),
    ("{{.Labels}}", "map[com.example:yes env:prod]"),
    ("{{.Options}}", "map[]"),
    ("{{.IPAM.Options}}", "<no value>"),
    ("{{.EnableIPv6}}", "false"),
    ("{{json .Labels}}", '{"com.example":"yes","env":"prod"}'),
    ("{{len .Containers}}", "2"),
    ("{{truncate .Id 12}}", "4f8b6a1b2e0c"),
    ("{{upper .Driver}}/{{lower .Scope}}/{{title .Name}}", "BRIDGE/local/Web"),
    ('{{range $i, $c := .IPAM.Config}}{{if $i}}, {{end}}{{$c.Subnet}}{{end}}',
     "172.20.0.0/16, fd00::/64"),
    ('{{join (split .IPAM.Driver "a") "-"}}', "def-ult"),
    ("{{.NoSuchField}}", "<no value>"),
    ("{{.Name}}\t{{.Driver}}", "web\tbridge"),
])
def test_docker_typical(template: str, expected: str) -> None:
    assert render(template, NETWORK) == expected


# ------------------------------------------------------------- fields, vars


@pytest.mark.parametrize("template, expected", [
    ("plain text", "plain text"),
    ("", ""),
    ("{{.A}}", "1"),
    ("{{.S}}{{.A}}", "abc1"),
    ("{{.N}}", "<no value>"),
    ("{{.Zz}}", "<no value>"),
    ("{{.Zz.Y.X}}", "<no value>"),
    ("{{.M.a}}", "2"),
    ("{{.M.zz.yy}}", "<no value>"),
    ("{{.L}}", "[1 2]"),
    ("{{.M}}", "map[a:2 b:1]"),
    ("{{.T}}", "true"),
    ("{{.F}}", "1.5"),
    ("{{.EL}}|{{.EM}}|{{.E}}", "[]|map[]|"),
    ("{{$.A}}", "1"),
    ("{{$x := .M}}{{$x.a}}", "2"),
    ("{{$x := 1}}{{$x = 2}}{{$x}}", "2"),
    ("{{$a := 1}}{{if true}}{{$a = 2}}{{end}}{{$a}}", "2"),
    ("{{$x := .L}}{{range $x}}{{.}}{{end}}{{$x | len}}", "122"),
    ("{{with .M}}{{.a}}{{$.A}}{{end}}", "21"),
    ("{{with $x := .M}}{{$x.a}}{{end}}", "2"),
    ("{{range .L}}{{$.A}}{{.}}{{end}}", "1112"),
    ("{{(.M).a}}", "2"),
    ("{{ .A }}", "1"),
])
def test_fields_and_variables(template: str, expected: str) -> None:
    assert run(template) == expected


def test_dot_and_dollar_print_whole_data() -> None:
    data = {"b": [1, None], "a": {"y": True, "x": "s"}, "n": None}
    assert render("{{.}}", data) == "map[a:map[x:s y:true] b:[1 <nil>] n:<nil>]"
    assert render("{{$}}", data) == render("{{.}}", data)


def test_non_dict_data() -> None:
    assert render("{{.}}", "text") == "text"
    assert render("{{range .}}{{.}},{{end}}", ["a", "b"]) == "a,b,"
    assert render("{{.}}", None) == "<no value>"
    assert render("{{len .}}", [1, 2, 3]) == "3"


def test_object_attributes() -> None:
    class Obj:
        Name = "o1"
    assert render("{{.Name}}", Obj()) == "o1"


# ------------------------------------------------------------- control flow


@pytest.mark.parametrize("template, expected", [
    ("{{if .A}}y{{end}}", "y"),
    ("{{if .N}}y{{else}}n{{end}}", "n"),
    ("{{if .Zz}}y{{else}}n{{end}}", "n"),
    ("{{if .N}}1{{else if .A}}2{{else}}3{{end}}", "2"),
    ("{{if .N}}1{{else if .E}}2{{else if .T}}3{{end}}", "3"),
    ("{{if .N}}1{{else if .E}}2{{end}}", ""),
    ("{{with .N}}1{{else}}{{.A}}{{end}}", "1"),
    ("{{with .M}}{{.a}}{{else}}none{{end}}", "2"),
    ("{{with .EM}}x{{else}}none{{end}}", "none"),
    ("{{range .L}}<{{.}}>{{end}}", "<1><2>"),
    ("{{range .EL}}x{{else}}empty{{end}}", "empty"),
    ("{{range .N}}x{{else}}e{{end}}", "e"),
    ("{{range .Zz}}x{{else}}e{{end}}", "e"),
    ("{{range $i, $e := .L}}{{$i}}={{$e}};{{end}}", "0=1;1=2;"),
    ("{{range $k, $v := .M}}{{$k}}={{$v}};{{end}}", "a=2;b=1;"),
    ("{{range $v := .M}}{{$v}};{{end}}", "2;1;"),
    ("{{range .M}}{{.}}{{end}}", "21"),
    ("{{range .L}}{{if eq . 2}}{{break}}{{end}}{{.}}{{end}}", "1"),
    ("{{range .L}}{{if eq . 1}}{{continue}}{{end}}{{.}}{{end}}", "2"),
    ("{{range .L}}{{$e := .}}{{$e}}{{end}}", "12"),
    ("{{range 3}}{{.}}{{end}}", "012"),
])
def test_control_flow(template: str, expected: str) -> None:
    assert run(template) == expected


@pytest.mark.parametrize("value, truth", [
    (True, True), (False, False), (0, False), (1, True), (-1, True), (0.0, False),
    (0.5, True), ("", False), ("0", True), ([], False), ([0], True), ({}, False),
    ({"a": 0}, True), (None, False), (gotemplate.MISSING, False),
])
def test_truthiness(value: object, truth: bool) -> None:
    assert is_true(value) is truth
    assert render("{{if .}}T{{else}}F{{end}}", value) == ("T" if truth else "F")


# ------------------------------------------------------------- whitespace, comments


@pytest.mark.parametrize("template, expected", [
    ("a  {{- .A -}}  b", "a1b"),
    ("a  {{-3}}  b {{3 -}} x", "a  -3  b 3x"),
    ("a {{/* c */}} b {{- /* c2 */ -}} c", "a  bc"),
    ("{{/* multi\nline */}}x", "x"),
    ("{{range .L -}}\n  {{.}}\n{{- end}}", "12"),
    ("{{if eq .A 1 -}} one {{- end}}", "one"),
    ("{{ .A }}{{- .S -}}", "1abc"),
    ("x\n{{- /* c */ -}}\ny", "xy"),
    ("{{\n.A\n}}", "1"),
])
def test_trim_markers_and_comments(template: str, expected: str) -> None:
    assert run(template) == expected


# ------------------------------------------------------------- literals


@pytest.mark.parametrize("template, expected", [
    ('{{"a\\tb"}}', "a\tb"),
    ('{{"\\x41\\u00e9\\n"}}', "Aé\n"),
    ('{{"\\"quoted\\""}}', '"quoted"'),
    ("{{`raw\\n`}}", "raw\\n"),
    ("{{'a'}}", "97"),
    ("{{0x10}} {{-5}} {{1_000}} {{010}} {{0b11}}", "16 -5 1000 8 3"),
    ("{{true}} {{false}}", "true false"),
    ("{{1.5}} {{1e6}} {{1e21}} {{0.00001}} {{123456.0}} {{0.0001}}",
     "1.5 1e+06 1e+21 1e-05 123456 0.0001"),
    ('{{print nil}}', "<nil>"),
    ("{{(1)}}", "1"),
])
def test_literals(template: str, expected: str) -> None:
    assert run(template) == expected


# ------------------------------------------------------------- functions


@pytest.mark.parametrize("template, expected", [
    ('{{index .M "a"}}', "2"),
    ('{{index .M "zz"}}', "<no value>"),
    ("{{index .L 1}}", "2"),
    ("{{index .M}}", "map[a:2 b:1]"),
    ('{{index . "L" 1}}', "2"),
    ("{{index .S 1}}", "98"),
    ("{{len .L}} {{len .M}} {{len .S}} {{len \"é\"}}", "2 2 3 2"),
    ('{{slice "abc" 1 2}} {{slice .L 1}} {{slice .L}}', "b [2] [1 2]"),
    ('{{join .L ","}}', "1,2"),
    ('{{join (split "a,b" ",") "-"}}', "a-b"),
    ('{{split "a,b,,c" ","}}', "[a b  c]"),
    ('{{split "abc" ""}} {{len (split "" ",")}}', "[a b c] 1"),
    ('{{title "hello wORLD foo-bar o\'neil x_y"}}', "Hello WORLD Foo-Bar O'Neil X_y"),
    ('{{upper "aé"}} {{lower "ABC"}}', "AÉ abc"),
    ('{{truncate "abcdef" 3}}|{{truncate "ab" 5}}', "abc|ab"),
    ('{{pad "ab" 1 2}}|{{pad "" 1 2}}|', " ab  ||"),
    ("{{print 1 2 \"a\" \"b\" 3 nil}}", "1 2ab3 <nil>"),
    ("{{print}}|{{print .L .M}}|{{print 1 .S}}", "|[1 2] map[a:2 b:1]|1abc"),
    ('{{println 1 "a"}}', "1 a\n"),
    ("{{println}}", "\n"),
    ("{{json .S}} {{json 1}} {{json true}} {{json .F}} {{json .L}} {{json .N}} {{json .Zz}}",
     '"abc" 1 true 1.5 [1,2] null null'),
    ("{{json .M}}", '{"b":1,"a":2}'),
    ("{{json .EL}} {{json .EM}}", "[] {}"),
    ('{{json "a<b>&\\u2028\\n\\x01\\t é"}}', '"a<b>&\\u2028\\n\\u0001\\t é"'),
    ("{{json 1e21}} {{json 1e20}} {{json 0.0000001}}", "1e+21 100000000000000000000 1e-7"),
])
def test_functions(template: str, expected: str) -> None:
    assert run(template) == expected


@pytest.mark.parametrize("template, expected", [
    ("{{eq .A 1}}", "true"),
    ('{{eq .S "x" "abc"}}', "true"),
    ("{{eq 1 1 2}}|{{ne 1 2}}|{{le 2 2}}|{{ge \"a\" \"b\"}}|{{gt 1.5 1.2}}|{{lt .A 2}}",
     "true|true|true|false|true|true"),
    ("{{eq .N nil}}|{{eq .Zz nil}}|{{eq .N 1}}|{{eq 1 .N}}|{{eq .L nil}}",
     "true|true|false|false|false"),
    ("{{and 1 0 2}}|{{and 1 2}}|{{or 0 \"\" .S}}|{{or 0 \"\"}}", "0|2|abc|"),
    ("{{not .L}}|{{not .EL}}", "false|true"),
    ("{{if and .A .S}}y{{end}}", "y"),
    ("{{if or .N .E}}y{{else}}n{{end}}", "n"),
    ("{{.A | eq 1}}", "true"),
    ("{{.A | and 0}}|{{.A | or 0}}", "0|1"),
    ('{{"x" | eq "x" "y"}}', "true"),
    ('{{"z" | eq "x" "y"}}', "false"),
    ("{{.L | len | eq 2}}", "true"),
])
def test_comparisons_and_logic(template: str, expected: str) -> None:
    assert run(template) == expected


@pytest.mark.parametrize("template, expected", [
    ('{{printf "%s-%d" "a" 3}}', "a-3"),
    ('{{printf "%v|%v|%v|%v" .L .M .N .T}}', "[1 2]|map[a:2 b:1]|<nil>|true"),
    ('{{printf "%q" "h\\"i"}}', '"h\\"i"'),
    ('{{printf "%q" "é\\x01\\u2028"}}', '"é\\x01\\u2028"'),
    ('{{printf "%q" 65}}', "'A'"),
    ('{{printf "%%"}}', "%"),
    ('{{printf "%5s|%-5d|%x|%t|%f|%.2f" "a" 3 255 true 1.5 2.0}}',
     "    a|3    |ff|true|1.500000|2.00"),
    ('{{printf "%-10s|%10s|" "ab" "cd"}}', "ab        |        cd|"),
    ('{{printf "%3d|%-3d|%03d|%+d" 5 5 -5 5}}', "  5|5  |-05|+5"),
    ('{{printf "%x|%X|%#x|%o|%b|%c|%U" 255 255 255 8 5 65 65}}', "ff|FF|0xff|10|101|A|U+0041"),
    ('{{printf "%d %s" "x" 1}}', "%!d(string=x) %!s(int=1)"),
    ('{{printf "%s %d" .N .N}}', "%!s(<nil>) %!d(<nil>)"),
    ('{{printf "%d"}}', "%!d(MISSING)"),
    ('{{printf "x" 1}}', "x%!(EXTRA int=1)"),
    ('{{printf "%s" .L}}', "[%!s(int=1) %!s(int=2)]"),
    ('{{printf "%5v|" .L}}', "[    1     2]|"),
    ('{{printf "%T %T %T" 1 "a" .L}}', "int string []interface {}"),
    ('{{printf "%v %s" 1e6 1.5}}', "1e+06 %!s(float64=1.5)"),
    ('{{.S | printf "%s-%s" "x"}}', "x-abc"),
    ('{{json .M | printf "%s"}}', '{"b":1,"a":2}'),
    ('{{index .M "a" | printf "%03d"}}', "002"),
])
def test_printf(template: str, expected: str) -> None:
    assert run(template) == expected


# ------------------------------------------------------------- errors

PARSE = "template parsing error: template: :1: "


@pytest.mark.parametrize("template, message", [
    ("{{foo}}", 'function "foo" not defined'),
    ("{{.A | foo}}", 'function "foo" not defined'),
    ("{{.A", "unclosed action"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ("{{if .A}}x", "unexpected EOF"),
    ("{{range .L}}x", "unexpected EOF"),
    ("{{if}}", "missing value for if"),
    ("{{}}", "missing value for command"),
    ("{{$x}}", 'undefined variable "$x"'),
    ("{{if .A}}{{$y := 3}}{{end}}{{$y}}", 'undefined variable "$y"'),
    ('{{"abc}}', "unterminated quoted string"),
    ("{{.A ! }}", 'unexpected "!" in operand'),
    ("{{.A)}}", 'unexpected ")" in command'),
    ("{{(.A}}", "unclosed left paren"),
    ("{{| .A}}", 'unexpected "|" in command'),
    ("{{.A := 1}}", 'unexpected ":=" in operand'),
    ("{{$x, $y := .L}}", "too many declarations in command"),
    ("{{range $x, $y, $z := .L}}{{end}}", "too many declarations in range"),
    ("{{break}}", "{{break}} outside {{range}}"),
    ("{{range .L}}{{else}}{{else}}{{end}}", "expected end; found {{else}}"),
    ("{{/* c */ }}", "comment ends before closing delimiter"),
    ("{{/* c", "unclosed comment"),
    ("{{-.Name}}", 'bad number syntax: "-.N"'),
    ("{{.A!}}", "bad character U+0021 '!'"),
    ('{{template "x"}}', "{{template}} is not supported"),
    ("{{.A | 3}}", "non executable command in pipeline stage 2"),
])
def test_parse_errors(template: str, message: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        compile(template)
    assert str(err.value) == PARSE + message


def test_parse_error_reports_line() -> None:
    with pytest.raises(InvalidConfig, match=r"^template parsing error: template: :3: "):
        compile("a\nb\n{{nope}}")


def test_lexical_errors_come_in_source_order() -> None:
    with pytest.raises(InvalidConfig, match='function "nope" not defined'):
        compile('{{nope}} {{"unterminated}}')


EXEC = 'template parsing error: template: :1:'


@pytest.mark.parametrize("template, message", [
    ("{{.N.X}}", '4: executing "" at <.N.X>: nil pointer evaluating interface {}.X'),
    ("{{.S.X}}", '4: executing "" at <.S.X>: can\'t evaluate field X in type interface {}'),
    ("{{index .L 5}}", ('2: executing "" at <index .L 5>: error calling index: '
                       "index out of range: 5")),
    ("{{index .N 1}}", ('2: executing "" at <index .N 1>: error calling index: '
                       "index of untyped nil")),
    ("{{lower .Nope}}", '8: executing "" at <.Nope>: invalid value; expected string'),
    ("{{lower .A}}", '8: executing "" at <.A>: wrong type for value; expected string; got int'),
    ("{{lower 5}}", '8: executing "" at <5>: expected string; found 5'),
    ("{{len .A}}", '2: executing "" at <len .A>: error calling len: len of type int'),
    ("{{eq .A 1.0}}", ('2: executing "" at <eq .A 1.0>: error calling eq: '
                      "incompatible types for comparison")),
    ("{{eq .L .L}}", ('2: executing "" at <eq .L .L>: error calling eq: '
                     "non-comparable type [%!s(int=1) %!s(int=2)]: []interface {}")),
    ("{{lt true false}}", ('2: executing "" at <lt true false>: error calling lt: '
                          "invalid type for comparison")),
    ("{{range .S}}x{{end}}", '8: executing "" at <.S>: range can\'t iterate over abc'),
    ("{{.A 1}}", '2: executing "" at <.A>: A is not a method but has arguments'),
    ("{{1 2}}", '2: executing "" at <1>: can\'t give argument to non-function 1'),
    ("{{nil}}", '2: executing "" at <nil>: nil is not a command'),
    ("{{.A | .S}}", '7: executing "" at <.S>: S is not a method but has arguments'),
    ("{{not}}", '2: executing "" at <not>: wrong number of args for not: want 1 got 0'),
    ("{{and}}", '2: executing "" at <and>: wrong number of args for and: want at least 1 got 0'),
    ("{{slice .S 1 5}}", ('2: executing "" at <slice .S 1 5>: error calling slice: '
                         "index out of range: 5")),
])
def test_execution_errors(template: str, message: str) -> None:
    tmpl = compile(template)
    with pytest.raises(InvalidConfig) as err:
        tmpl.execute(DATA)
    assert str(err.value) == EXEC + message


def test_execution_error_partial_output() -> None:
    tmpl = compile("ok {{.A}} {{.S.X}} never")
    assert tmpl.execute(DATA, partial=True) == "ok 1 "


def test_errors_are_invalid_config_with_exit_code() -> None:
    with pytest.raises(InvalidConfig) as err:
        render("{{foo}}", {})
    assert err.value.exit_code == 1
    assert "\n" not in str(err.value)


# ------------------------------------------------------------- API


def test_compile_once_execute_many() -> None:
    tmpl = compile("{{.Name}}:{{len .Tags}}")
    assert tmpl.source == "{{.Name}}:{{len .Tags}}"
    assert [tmpl.execute({"Name": n, "Tags": t}) for n, t in (("a", []), ("b", [1]))] == \
        ["a:0", "b:1"]


def test_custom_and_overridden_functions() -> None:
    tmpl = compile('{{shout .S}} {{upper "x"}}', funcs={"shout": lambda s: s + "!"})
    assert tmpl.execute(DATA) == "abc! X"
    assert tmpl.execute(DATA, funcs={"upper": lambda s: s}) == "abc! x"
    with pytest.raises(InvalidConfig):
        tmpl.execute(DATA, funcs={"nope": str})


def test_custom_function_errors_are_wrapped() -> None:
    def fail(_: object) -> str:
        raise ValueError("boom")
    with pytest.raises(InvalidConfig, match="error calling fail: boom"):
        compile("{{fail .A}}", funcs={"fail": fail}).execute(DATA)


@pytest.mark.parametrize("value, expected", [
    (None, "<nil>"), (True, "true"), (3, "3"), (2.0, "2"), (1e-5, "1e-05"),
    (1234567.0, "1.234567e+06"),
    (-0.5, "-0.5"), ("s", "s"), ([1, [2, "x"]], "[1 [2 x]]"),
    ({"b": {"c": None}, "a": []}, "map[a:[] b:map[c:<nil>]]"),
    ((1, 2), "[1 2]"),
])
def test_format_value(value: object, expected: str) -> None:
    assert format_value(value) == expected


def test_to_json_compact_and_indented() -> None:
    value = {"b": [1, {"x": None}], "a": {}, "c": [], "s": 'q"\\'}
    assert to_json(value) == '{"b":[1,{"x":null}],"a":{},"c":[],"s":"q\\"\\\\"}'
    assert to_json(value, indent="  ") == (
        '{\n  "b": [\n    1,\n    {\n      "x": null\n    }\n  ],\n'
        '  "a": {},\n  "c": [],\n  "s": "q\\"\\\\"\n}')
    assert to_json([]) == "[]"
    assert to_json(-0.0) == "-0"
    with pytest.raises(ValueError):
        to_json(float("nan"))
