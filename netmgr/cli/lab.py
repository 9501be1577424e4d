"""``netmgr lab up|down|ls|status|exec|validate``: multi-host labs on one machine.

Thin: parse flags, call :mod:`netmgr.lab`, print. Labs need no daemon of
the caller's (each simulated host runs its own), so these commands never
use ``-H``; they need root (namespaces, bridges, mounts).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from netmgr import errors
from netmgr.cli.argv import command

HELP_TARGET = "a lab's name, or the topology file that names it"


def register(sub) -> None:
    """Add ``lab`` and its subcommands."""
    lab = sub.add_parser("lab", help="multi-host labs from a topology file (simulated hosts, underlay, etcd)")
    lsub = lab.add_subparsers(dest="lab_command")
    lab.set_defaults(func=lambda a, c: (lab.print_help(), 0)[1])

    u = lsub.add_parser("up", help="create a lab from a topology file (YAML)")
    u.add_argument("file")
    u.add_argument("--name", default=None, help="the lab's name (default: the file's 'name')")
    u.set_defaults(func=up)

    d = lsub.add_parser("down", help="remove everything a lab made (also after a crash)")
    d.add_argument("lab", metavar="NAME|FILE", help=HELP_TARGET)
    d.set_defaults(func=down)

    ls = lsub.add_parser("ls", help="list labs")
    ls.add_argument("-q", "--quiet", action="store_true", help="names only")
    ls.set_defaults(func=ls_)

    st = lsub.add_parser("status", help="hosts, daemons, etcd health, networks and containers of a lab")
    st.add_argument("lab", metavar="NAME|FILE", help=HELP_TARGET)
    st.set_defaults(func=status)

    e = lsub.add_parser("exec", help="run a command in a lab host's namespace (NETMGR_HOST set to its daemon)")
    e.add_argument("lab", metavar="NAME", help=HELP_TARGET)
    e.add_argument("host", metavar="HOST", help="a host of the lab, or 'underlay'")
    e.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD", help="default: a shell")
    e.set_defaults(func=exec_)

    v = lsub.add_parser("validate", help="run the topology's checks (exit 1 when one fails)")
    v.add_argument("lab", metavar="NAME|FILE", help=HELP_TARGET)
    v.set_defaults(func=validate)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise errors.PermissionDenied("netmgr lab needs root (network namespaces, bridges, mounts)")


def _lab_name(target: str) -> str:
    """A lab name, or the name inside the topology file ``target``."""
    from netmgr.lab import topology

    if os.path.isfile(target):
        return topology.load(target).name
    return topology.check_lab_name(target)


def _say(line: str) -> None:
    print(line, flush=True)


def _interrupt(_sig, _frame) -> None:
    raise KeyboardInterrupt


def up(args, _client) -> int:
    """Create the lab; progress lines on stdout; roll back on failure."""
    from netmgr.drivers import BUILTIN
    from netmgr.lab import runner, topology
    from netmgr.testing.etcd import ETCD_BINARY

    topo = topology.load(args.file)  # every mistake in the file is reported before anything is made
    name = topology.check_lab_name(args.name) if args.name else topo.name
    _need_root()
    if not os.path.exists(ETCD_BINARY):
        raise errors.Unavailable(f"{ETCD_BINARY} not found (install the Debian package etcd-server)")
    for net in topo.networks:
        if net.driver not in BUILTIN:
            raise errors.DriverNotFound(f'network {net.name}: driver "{net.driver}" is not available in this netmgr')
    signal.signal(signal.SIGTERM, _interrupt)  # a killed up rolls back like Ctrl-C
    runner.up(topo, name, out=_say)
    return 0


def down(args, _client) -> int:
    """Remove the lab; exit 1 listing whatever could not be removed."""
    from netmgr.lab import teardown

    _need_root()
    name = _lab_name(args.lab)
    failures = teardown.down(name, out=_say)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    if failures:
        raise errors.KernelError(f"lab {name}: {len(failures)} thing(s) could not be removed (see above)")
    return 0


def ls_(args, _client) -> int:
    """``NAME  STATE  HOSTS  ETCD  CREATED  TOPOLOGY``."""
    from netmgr.cli.table import format_table
    from netmgr.lab import status as st

    rows = st.ls_rows()
    if args.quiet:
        for r in rows:
            print(r["NAME"])
        return 0
    cols = ["NAME", "STATE", "HOSTS", "ETCD", "CREATED", "TOPOLOGY"]
    sys.stdout.write(format_table(cols, [[r[c] for c in cols] for r in rows]))
    return 0


def status(args, _client) -> int:
    """Hosts, daemons, etcd and what each daemon holds; exit 1 unless the lab is healthy."""
    from netmgr.lab import state
    from netmgr.lab import status as st

    rec = state.LabRecord.open(_lab_name(args.lab))
    for line in st.status_lines(rec):
        print(line)
    return 0 if st.lab_state(rec) == "up" else 1


def exec_(args, _client) -> int:
    """Replace this process with ``nsenter --net=HOSTNS CMD`` (NETMGR_HOST = the host's daemon)."""
    from netmgr.lab import state

    _need_root()
    rec = state.LabRecord.open(_lab_name(args.lab))
    env = dict(os.environ, NETMGR_LAB=rec.name, NETMGR_LAB_HOST=args.host)
    # the venv's bin dir first, so `netmgr` inside the namespace is this netmgr
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "/usr/bin:/bin")])
    if args.host == "underlay":
        netns_path = rec.get("underlay", {}).get("netns")
        env.pop("NETMGR_HOST", None)
    else:
        host = rec.get("hosts", {}).get(args.host)
        if host is None:
            known = ", ".join([*rec.get("hosts", {}), "underlay"])
            raise errors.NotFound(f"lab {rec.name} has no host {args.host} (hosts: {known})")
        netns_path = host["netns"]
        env["NETMGR_HOST"] = f"unix://{host['socket']}"
    if not netns_path or not os.path.exists(netns_path):
        raise errors.NotFound(f"lab {rec.name}: the namespace of {args.host} does not exist")
    argv = command(args.argv) or [os.environ.get("SHELL") or "/bin/sh"]
    sys.stdout.flush()
    os.execvpe("nsenter", ["nsenter", f"--net={netns_path}", *argv], env)
    return 127  # not reached


def validate(args, _client) -> int:
    """Run the checks of the topology the lab was made from."""
    from netmgr.lab import checks, state, topology

    _need_root()
    rec = state.LabRecord.open(_lab_name(args.lab))
    if rec.get("status") != "up":
        raise errors.Conflict(f"lab {rec.name} is not up (state {rec.get('status')})")
    topo = topology.load(os.path.join(rec.dir, "topology.yaml"))
    if not topo.checks:
        print(f"lab {rec.name}: the topology has no checks")
        return 0
    results = checks.run_checks(rec, topo, out=_say)
    failed = [r for r in results if not r.ok]
    if failed:
        first = failed[0]
        raise errors.NetmgrError(f"validate {rec.name}: {len(failed)} of {len(results)} checks failed; first: "
                                 f"{first.check.describe()}: {first.detail}")
    print(f"validate {rec.name}: all {len(results)} checks passed")
    return 0
