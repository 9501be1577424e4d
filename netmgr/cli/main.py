"""``netmgr``: the docker-style command line.

Thin: parse flags, call the daemon, print what it answers. This ``main``
is the CLI's one error boundary: a :class:`NetmgrError` prints one line on
stderr and exits with its ``exit_code`` (``run`` uses 125 when the
container could not be created, like Docker); anything else prints
"internal error" (with the traceback under ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from netmgr import __version__, errors
from netmgr.cli import container as container_cmds
from netmgr.cli.argv import global_flags, not_utf8, one_line
from netmgr.cli import lab as lab_cmds
from netmgr.cli import network as network_cmds
from netmgr.cli import plugin as plugin_cmds


class UsageError(errors.InvalidConfig):
    """A flag or argument the parser rejected (Docker exits 125 for these): one line, then a hint line."""

    exit_code = 125

    def __init__(self, message: str = "", hint: str = "") -> None:
        super().__init__(one_line(message) + (f"\n{hint}" if hint else ""))


class Parser(argparse.ArgumentParser):
    """argparse with Docker's usage-error behaviour (one line + hint, exit 125)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message, f"See '{self.prog} --help'.")

    def _get_values(self, action, arg_strings):
        # argparse drops a "--" given as an option's own value (-f--, --label=--) and then appends the
        # option's default (a list) or stores nothing: the value is the string "--", as in Docker
        if action.option_strings and arg_strings == ["--"] and action.nargs in (None, "?"):
            return self._get_value(action, "--")
        return super()._get_values(action, arg_strings)


def build_parser() -> Parser:
    """The whole command tree."""
    p = Parser(prog="netmgr", description="A container network manager (Docker's CNM)")
    p.add_argument("-H", "--host", default=None, help="daemon socket (unix:///path), or $NETMGR_HOST")
    p.add_argument("--debug", action="store_true", help="print tracebacks of internal errors")
    p.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    p.add_argument("--json", action="store_true", help="errors as JSON {\"error\", \"code\"}")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    network_cmds.register(sub)
    container_cmds.register(sub)
    plugin_cmds.register(sub)
    lab_cmds.register(sub)
    d = sub.add_parser("daemon", help="run the daemon in the foreground (same as netmgrd)")
    from netmgr.daemon.flags import build_parser as daemon_flags

    daemon_flags(d)
    d.set_defaults(func=_daemon)
    v = sub.add_parser("version", help="client and daemon versions")
    v.set_defaults(func=_version)
    i = sub.add_parser("info", help="daemon-wide information")
    i.add_argument("-f", "--format", default=None)
    i.set_defaults(func=_info)
    return p


def _daemon(args, _client_factory) -> int:
    from netmgr.daemon.main import run_daemon

    return run_daemon(args)


def _version(args, client_factory) -> int:
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

    print(f"Client:\n Version:    {__version__}")
    resp = client_factory().call("Version", pb.Empty())
    print(f"\nServer:\n Version:    {resp.version}\n API version: {resp.api_version}\n"
          f" Python:     {resp.python}\n Kernel:     {resp.kernel}")
    return 0


def _info(args, client_factory) -> int:
    from netmgr.cli.output import print_inspect
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

    docs = client_factory().documents("Info", pb.Empty())
    if args.format:
        print_inspect(args.format, docs)
    else:
        for key, value in docs[0].items():
            print(f" {key}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``netmgr``; the CLI's error boundary."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    leading = global_flags(argv)
    debug = "--debug" in leading
    as_json = "--json" in leading
    clients = []

    def client_factory():
        from netmgr.client import Client

        if not clients:
            clients.append(Client(args.host))
        return clients[0]

    try:
        bad = not_utf8(argv)
        if bad is not None:
            raise UsageError(f'invalid argument "{bad}": not valid UTF-8')
        args = parser.parse_args(argv)
        if args.version:
            print(f"netmgr version {__version__}")
            return 0
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return args.func(args, client_factory) or 0
    except errors.NetmgrError as exc:
        return _report(exc, as_json, getattr(exc, "cli_exit_code", exc.exit_code))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception:
        if debug:
            traceback.print_exc()
        return _report(errors.InternalError("internal error"), as_json, 1)
    finally:
        for c in clients:
            c.close()


def _report(exc: errors.NetmgrError, as_json: bool, code: int) -> int:
    if as_json:
        print(json.dumps({"error": exc.message, "code": exc.kind}), file=sys.stderr)
    else:
        print(exc.message if isinstance(exc, UsageError) else one_line(exc.message), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
