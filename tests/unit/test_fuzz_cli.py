"""Property-based tests of the command line (hypothesis): whatever a user types, netmgr answers sanely.

The argv are drawn from the real parser's command tree (every subcommand
except ``daemon`` and ``lab``, which act on this machine) with random flags,
values and positionals: names, CIDRs, ports, sizes, labels, oversized and
non-UTF-8 values (NETMGR_FUZZ_SCALE multiplies the case counts). The daemon is a stub that refuses every call, so what is
tested is the client side: parsing and building the request. The property:
``main`` returns an exit code, never "internal error" or a traceback, and a
failure prints one line (two for a usage error: the line and Docker's
"See 'netmgr … --help'." hint). The gRPC API side, against a live daemon:
tests/privileged/test_fuzz_api.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmgr import errors
from netmgr.cli import argv as cli_argv
from netmgr.cli import main as cli_main
from netmgr.cli.container import parse_bytes, parse_publish, parse_volume

SKIP = {"daemon", "lab"}


def examples(n: int) -> int:
    """``n`` cases in CI; NETMGR_FUZZ_SCALE=10 runs ten times as many."""
    return int(n * float(os.environ.get("NETMGR_FUZZ_SCALE", "1")))


class StubClient:
    """A daemon that is never there: every call raises Unavailable (what a CLI without a daemon sees)."""

    def __init__(self, host=None) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name):
        def refuse(*args, **kwargs):
            raise errors.Unavailable("stub daemon")
        return refuse


def _tree() -> list[tuple[list[str], list[argparse.Action]]]:
    """(command path, actions) of every leaf subcommand of the real parser."""
    out = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and path:
            out.append((path, [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]))
        for action in subs:
            seen = set()
            for name, child in action.choices.items():
                if id(child) in seen or (not path and name in SKIP):
                    continue
                seen.add(id(child))
                walk(child, path + [name])

    walk(cli_main.build_parser(), [])
    return out


TREE = _tree()

INTERESTING = [
    "", "-", "--", "0", "-1", "65535", "65536", "99999999999999999999999", "nan", "inf", "1e400",
    "10.0.0.0/8", "10.1.2.0/24", "10.1.2.0/33", "::/0", "fd00::/64", "300.1.1.1", "10.1.2.3", "::1",
    "a=b", "=", "a=", "=b", "8080:80", "80/udp", "1-65535:1-65535", "127.0.0.1::80", "[::1]:80:80/sctp",
    "1k", "1.5g", "-5m", "/tmp:/x:ro", "relative:/x", "bridge", "host", "none", "overlay", "nmt-x",
    "com.docker.network.bridge.name=x" * 3, "x" * 300, "é" * 40, "\udcff", "a\udcc3b", "{{json .}}",
    "{{.Name", "driver=bridge", "name=", "label!=x", "until=1h",
]
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
NUMBER = st.one_of(st.integers().map(str), st.floats().map(repr),
                   st.sampled_from(["nan", "inf", "-inf", "1e400", "99999999999999999999999", "-1", "0", "0x10"]))
VALUE = st.one_of(st.sampled_from(INTERESTING), NUMBER, TEXT,
                  st.text(max_size=3000).map(lambda s: s.replace("\x00", "")))


@st.composite
def argvs(draw) -> list[str]:
    path, actions = draw(st.sampled_from(TREE))
    argv = list(path)
    options = [a for a in actions if a.option_strings]
    for action in draw(st.lists(st.sampled_from(options), max_size=6)) if options else []:
        flag = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:
            argv.append(flag)
            continue
        value = draw(NUMBER if action.type is not None and draw(st.booleans()) else VALUE)
        if draw(st.booleans()):
            argv.append(f"{flag}={value}" if flag.startswith("--") else flag + value)
        else:
            argv += [flag, value]
    argv += draw(st.lists(VALUE, max_size=4))
    if draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--", "--json", "--debug", "-x"])))
    return argv


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    stdin, sys.stdin = sys.stdin, io.StringIO("")  # prune's confirmation: no answer
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = cli_main.main(argv)
    finally:
        sys.stdin = stdin
    return rc, err.getvalue()


@pytest.fixture(autouse=True)
def stub_daemon(monkeypatch):
    import netmgr.client

    monkeypatch.setattr(netmgr.client, "Client", StubClient)


@settings(max_examples=examples(500), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(argvs())
def test_any_command_line_gets_an_exit_code_and_at_most_one_line(argv):
    rc, err = _run(argv)
    assert isinstance(rc, int)
    assert err != "internal error\n" and "Traceback (most recent call last)" not in err, (argv, err)
    lines = err.strip("\n").splitlines()
    if rc != 0 and "--json" not in argv[:1]:
        assert lines, argv
        assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("See '")), (argv, err)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=12), max_size=5))
def test_non_utf8_anywhere_is_refused_with_one_line(words):
    argv = ["network", "create", *words, "a\udcffb"]
    rc, err = _run(argv)
    assert rc == 125
    assert err == 'invalid argument "a\\xffb": not valid UTF-8\n' or cli_argv.not_utf8(words) is not None


@settings(max_examples=examples(2000), deadline=None)
@given(VALUE)
def test_publish_spec_parses_to_valid_mappings_or_one_typed_error(spec):
    try:
        maps = parse_publish(spec)
    except errors.InvalidConfig as exc:
        assert str(exc)  # main prints it on one line (escaped): test_any_command_line_…
        return
    assert maps
    for m in maps:
        assert 0 <= m.host_port <= 65535 and 1 <= m.container_port <= 65535
        assert m.protocol in ("tcp", "udp", "sctp")


@settings(max_examples=examples(1000), deadline=None)
@given(VALUE)
def test_sizes_and_volumes_parse_or_fail_typed(text):
    for parse in (parse_bytes, parse_volume):
        try:
            parse(text)
        except errors.InvalidConfig as exc:
            assert str(exc)
    with contextlib.suppress(errors.InvalidConfig):
        assert parse_bytes(text) >= 0
