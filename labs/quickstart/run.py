#!/usr/bin/env python3
"""The single-host demo lab: two bridge networks, three containers.

It runs netmgrd on a simulated host (a network namespace of its own, see
netmgr/labhost.py) with the embedded SQLite store, so the machine's own
network is never touched, and it removes everything when done, also on
failure or Ctrl-C. Every step prints the netmgr command and its output;
the lab exits non-zero if netmgr did not behave as a Docker user expects.

    sudo .venv/bin/python labs/quickstart/run.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from netmgr.labhost import SimHost  # noqa: E402

FAILED: list[str] = []


def step(host: SimHost, *args: str, expect_rc: int = 0) -> str:
    """Run one netmgr command, print it like a shell session, check its exit code."""
    print(f"$ netmgr {' '.join(args)}")
    r = host.cli(*args)
    sys.stdout.write(r.out)
    sys.stderr.write(r.err)
    if r.rc != expect_rc:
        FAILED.append(f"netmgr {' '.join(args)}: exit {r.rc}, expected {expect_rc}")
        print(f"  !! exit {r.rc}, expected {expect_rc}")
    return r.out


def ip_of(host: SimHost, ctr: str, net: str) -> str:
    out = host.cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", ctr).out
    return json.loads(out)[net]["IPAddress"]


def demo(host: SimHost) -> None:
    print("# two user-defined bridge networks")
    step(host, "network", "create", "--subnet", "10.10.1.0/24", "--label", "lab=quickstart", "frontend")
    step(host, "network", "create", "--subnet", "10.10.2.0/24", "--label", "lab=quickstart", "backend")
    step(host, "network", "ls")
    print("\n# three containers: web and api on frontend, db on backend")
    step(host, "run", "-d", "--name", "web", "--network", "frontend", "--hostname", "web", "sleep", "3600")
    step(host, "run", "-d", "--name", "api", "--network", "frontend", "--ip", "10.10.1.20", "sleep", "3600")
    step(host, "run", "-d", "--name", "db", "--network", "backend", "sleep", "3600")
    step(host, "ps")
    api, db = ip_of(host, "api", "frontend"), ip_of(host, "db", "backend")
    print("\n# within a network: web reaches api")
    step(host, "exec", "web", "busybox", "ping", "-c", "2", "-W", "1", api)
    print("\n# between networks: web cannot reach db (isolation)")
    step(host, "exec", "web", "busybox", "ping", "-c", "1", "-W", "1", db, expect_rc=1)
    print("\n# connect api to backend too: it gets eth1 and reaches db")
    step(host, "network", "connect", "backend", "api")
    step(host, "exec", "api", "ip", "-brief", "address")
    step(host, "exec", "api", "busybox", "ping", "-c", "2", "-W", "1", db)
    print("\n# network inspect")
    step(host, "network", "inspect", "backend")
    print("\n# disconnect again, then clean up")
    step(host, "network", "disconnect", "backend", "api")
    step(host, "rm", "-f", "web", "api", "db")
    step(host, "network", "rm", "frontend", "backend")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the simulated host up (remove it with Ctrl-C)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the quickstart lab needs root (namespaces, bridges, nftables)", file=sys.stderr)
        return 1
    host = SimHost(f"nmqs-{os.getpid()}", tempfile.mkdtemp(prefix="nmqs-"))
    print(f"# simulated host {host.name}: network namespace {host.netns_path}, netmgrd on {host.socket}\n")
    try:
        host.up()
        demo(host)
        if args.keep:
            print(f"\nkept: netmgr -H unix://{host.socket} ...   (Ctrl-C removes it)")
            import signal

            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        host.down()
        os.rmdir(os.path.dirname(host.dir)) if os.path.isdir(os.path.dirname(host.dir)) else None
    if FAILED:
        print("\nquickstart FAILED:\n  " + "\n  ".join(FAILED), file=sys.stderr)
        return 1
    print("\nquickstart OK: containers on one network talk, networks are isolated, everything was removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
