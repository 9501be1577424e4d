"""netmgr.cli.container parsers: ``-p/--publish``, ``-m/--memory``, ``-v/--volume``."""

from __future__ import annotations

import pytest

from netmgr import errors
from netmgr.cli.container import parse_bytes, parse_publish, parse_volume


def _ports(spec):
    return [(m.host_ip, m.host_port, m.container_port, m.protocol) for m in parse_publish(spec)]


# -- publish -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, want",
    [
        ("8080:80", [("", 8080, 80, "tcp")]),
        ("8080:80/udp", [("", 8080, 80, "udp")]),
        ("8080:80/sctp", [("", 8080, 80, "sctp")]),
        ("127.0.0.1::81/udp", [("127.0.0.1", 0, 81, "udp")]),
        ("127.0.0.1:8080:80", [("127.0.0.1", 8080, 80, "tcp")]),
        ("0.0.0.0:8080:80/tcp", [("0.0.0.0", 8080, 80, "tcp")]),
        ("[::1]:8080:80", [("::1", 8080, 80, "tcp")]),
        ("80", [("", 0, 80, "tcp")]),
        ("80/udp", [("", 0, 80, "udp")]),
        ("80/", [("", 0, 80, "tcp")]),
        (":80", [("", 0, 80, "tcp")]),
        ("8000-8001:80-81", [("", 8000, 80, "tcp"), ("", 8001, 81, "tcp")]),
        (
            "127.0.0.1:8000-8002:80-82/udp",
            [
                ("127.0.0.1", 8000, 80, "udp"),
                ("127.0.0.1", 8001, 81, "udp"),
                ("127.0.0.1", 8002, 82, "udp"),
            ],
        ),
        ("80-81", [("", 0, 80, "tcp"), ("", 0, 81, "tcp")]),
        ("65535:65535", [("", 65535, 65535, "tcp")]),
    ],
)
def test_publish(spec, want):
    assert _ports(spec) == want


@pytest.mark.parametrize(
    "spec",
    [
        "foo",
        "",
        "8080:",
        "80:foo",
        "foo:80",
        "0:80",
        "80:0",
        "65536:80",
        "80:65536",
        "81-80",
        "8080-8079:80-81",
        "-1:80",
        "1.2.3.4:80",
        "80-:80",
        "-80:80",
        "80-81-82",
        "+80:80",
        "8_0:80",
        " 80:80",
        "80:80 ",
        "80--81",
    ],
)
def test_publish_bad_spec(spec):
    with pytest.raises(errors.InvalidConfig) as exc:
        parse_publish(spec)
    assert str(exc.value) == f'invalid port specification: "{spec}"'


def test_publish_range_length_mismatch():
    with pytest.raises(errors.InvalidConfig) as exc:
        parse_publish("8000-8002:80-81")
    assert (
        str(exc.value) == "invalid ranges specified for container and host Ports: 8000-8002:80-81"
    )


@pytest.mark.parametrize(
    "spec, proto", [("80/xyz", "xyz"), ("8080:80/TCP", "TCP"), ("8080:80/tcp/x", "tcp/x")]
)
def test_publish_bad_proto(spec, proto):
    with pytest.raises(errors.InvalidConfig) as exc:
        parse_publish(spec)
    assert str(exc.value) == f"invalid proto: {proto}"


# -- memory sizes (go-units RAMInBytes) -------------------------------------------------------


@pytest.mark.parametrize(
    "text, want",
    [
        ("512m", 512 << 20),
        ("512M", 512 << 20),
        ("1g", 1 << 30),
        ("1G", 1 << 30),
        ("1024", 1024),
        ("0", 0),
        ("1b", 1),
        ("32k", 32 << 10),
        ("32kb", 32 << 10),
        ("32KB", 32 << 10),
        ("32kib", 32 << 10),
        ("32KiB", 32 << 10),
        ("1mb", 1 << 20),
        ("1 m", 1 << 20),
        ("1.5g", 3 << 29),
        ("0.5k", 512),
        ("1t", 1 << 40),
        ("2p", 2 << 50),
        ("1ib", 1),  # the go-units regex allows it too
    ],
)
def test_parse_bytes(text, want):
    assert parse_bytes(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "foo",
        "",
        "m",
        "b",
        "k",
        "-1m",
        "1x",
        "1e3",
        "1.2.3m",
        "1  m",
        " 512m",
        "512m ",
        "512m\n",
        "inf",
        "nan",
        "infk",
        "nanm",
        "1mm",
        "1bb",
        ".5m",
        "5.m",
        "1kbi",
    ],
)
def test_parse_bytes_rejects(text):
    with pytest.raises(errors.InvalidConfig) as exc:
        parse_bytes(text)
    assert str(exc.value) == f"invalid size: '{text}'"


# -- volumes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, want",
    [
        ("/data:/mnt", ("/data", "/mnt", False)),
        ("/data:/mnt:ro", ("/data", "/mnt", True)),
        ("/data:/mnt:rw", ("/data", "/mnt", False)),
        ("/:/host", ("/", "/host", False)),
    ],
)
def test_parse_volume(spec, want):
    v = parse_volume(spec)
    assert (v.source, v.target, v.read_only) == want


@pytest.mark.parametrize(
    "spec",
    ["data:/mnt", "/data", "/data:mnt", "/data:/mnt:ro:z", ":/mnt", "/data:", "", "named:/mnt"],
)
def test_parse_volume_bad_spec(spec):
    with pytest.raises(errors.InvalidConfig) as exc:
        parse_volume(spec)
    assert str(exc.value) == f"invalid volume specification: '{spec}'"


def test_parse_volume_bad_mode():
    with pytest.raises(errors.InvalidConfig) as exc:
        parse_volume("/data:/mnt:xx")
    assert str(exc.value) == "invalid mode: xx"


# -- "--" and the global flags -------------------------------------------------------------

from netmgr.cli.argv import command, global_flags  # noqa: E402
from netmgr.cli.main import build_parser  # noqa: E402


@pytest.mark.parametrize(
    "argv, want",
    [
        (["run", "-d", "--name", "x", "--", "sleep", "1000"], ["sleep", "1000"]),
        (["run", "-d", "sleep", "1000"], ["sleep", "1000"]),
        (["run", "--", "--", "x"], ["--", "x"]),
        (["run", "--", "sh", "-c", "echo -- --rm"], ["sh", "-c", "echo -- --rm"]),
        (["exec", "c1", "--", "ls", "-l"], ["ls", "-l"]),
        (["exec", "-i", "c1", "ls", "--", "-l"], ["ls", "--", "-l"]),
        (["lab", "exec", "l", "h1", "--", "ip", "-br", "a"], ["ip", "-br", "a"]),
    ],
)
def test_double_dash_ends_the_options(argv, want):
    assert command(build_parser().parse_args(argv).argv) == want


@pytest.mark.parametrize(
    "argv, want",
    [
        (["--debug", "run", "sh", "-c", "x --json"], {"--debug"}),
        (["run", "--debug", "x"], set()),
        (["-H", "unix:///x", "--json", "network", "ls"], {"-H", "--json"}),
        (["--host=unix:///x", "--debug", "ps"], {"--host", "--debug"}),
        (["--", "--debug"], set()),
    ],
)
def test_global_flags_come_before_the_subcommand(argv, want):
    assert global_flags(argv) == want


# -- found by tests/unit/test_fuzz_cli.py ----------------------------------------------------


def _main(capsys, *argv):
    from netmgr.cli import main as cli_main

    rc = cli_main.main(["-H", "unix:///nonexistent/nmt.sock", *argv])
    return rc, capsys.readouterr().err


def test_an_option_whose_value_is_double_dash_keeps_it(capsys):
    rc, err = _main(capsys, "network", "ls", "-f--")
    assert (rc, err) == (1, 'invalid argument "--" for "-f, --filter" flag: bad format of filter '
                            "(expected name=value)\n")


def test_out_of_range_integers_are_usage_errors(capsys):
    rc, err = _main(capsys, "run", "--pids-limit", "99999999999999999999999", "sh")
    assert rc == 125 and "value out of range" in err and "internal error" not in err
    rc, err = _main(capsys, "stop", "-t", "nan", "x")
    assert rc == 125 and 'parsing "nan": invalid syntax' in err


def test_oversized_memory_is_one_line(capsys):
    rc, err = _main(capsys, "run", "-m", "99999999999999999999999g", "sh")
    assert (rc, err) == (125, "invalid size: '99999999999999999999999g': value out of range\n")


def test_non_utf8_argument_is_refused(capsys):
    rc, err = _main(capsys, "network", "create", "nm\udcff")
    assert (rc, err) == (125, 'invalid argument "nm\\xff": not valid UTF-8\n')


def test_echoed_values_cannot_break_the_line(capsys):
    rc, err = _main(capsys, "run", "-p", "80\n\x1b[31m", "sh")
    assert rc == 125 and err.count("\n") == 1 and "\x1b" not in err
