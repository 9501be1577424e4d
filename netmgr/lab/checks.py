"""``netmgr lab validate``: run a topology's checks from inside its containers.

Kinds (``to`` is a container, a host, ``outside`` or an IPv4 address):

``ping``
    ``busybox ping`` of the target *by name* (a container's name or alias) (through the container's
    embedded DNS) until one reply comes back or ``timeout`` (default 10 s)
    passes; names of overlay peers may need a moment to arrive from etcd.
``reach``
    the same by address: a container (or alias) target is pinged at its addresses,
    one reply on any of them passes.
``no_reach``
    no reply from any of the target's addresses within ``timeout``
    (default 2 s); "network unreachable" passes at once.

Each check runs ``netmgr exec``'s command line (the daemon's ``nsenter``
argv for the container) directly, so a check costs a ping, not a CLI start.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from netmgr import errors
from netmgr.lab.state import LabRecord
from netmgr.lab.topology import OUTSIDE, Check, Topology

__all__ = ["CheckResult", "run_checks"]

_PINGED = re.compile(r"PING \S+ \(([0-9.]+)\)")


@dataclass
class CheckResult:
    """The outcome of one check."""

    check: Check
    ok: bool
    detail: str
    seconds: float

    def line(self) -> str:
        """``ok    ping c1 -> c2: 10.20.0.3 answered (0.1 s)``."""
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.check.describe()}: {self.detail} ({self.seconds:.1f} s)"


def run_checks(rec: LabRecord, topo: Topology, out: Callable[[str], None] = print) -> list[CheckResult]:
    """Run every check of ``topo`` in order, printing one line each; return the results."""
    clients: dict[str, object] = {}
    results = []
    try:
        for check in topo.checks:
            t0 = time.monotonic()
            try:
                ok, detail = _run(rec, topo, check, clients)
            except errors.NetmgrError as exc:
                ok, detail = False, exc.message
            result = CheckResult(check, ok, detail, time.monotonic() - t0)
            out(result.line())
            results.append(result)
    finally:
        for client in clients.values():
            client.close()
    return results


def _client(rec: LabRecord, host: str, clients: dict):
    from netmgr.client import Client

    if host not in clients:
        clients[host] = Client(f"unix://{rec.get('hosts')[host]['socket']}", timeout=10)
    return clients[host]


def _run(rec: LabRecord, topo: Topology, check: Check, clients: dict) -> tuple[bool, str]:
    src = topo.container(check.src)
    client = _client(rec, src.host, clients)
    targets = _targets(rec, topo, check, clients)
    if not targets:
        return check.kind == "no_reach", f"{check.dst} has no address"
    if check.kind == "no_reach":
        results = _ping(client, src.name, targets, wait=check.timeout)
        for target, (rc, text) in zip(targets, results):
            if rc == 0:
                return False, f"{_pinged(text, target)} answered"
        why = " (network unreachable)" if all("unreachable" in text.lower() for _rc, text in results) else ""
        return True, f"no reply from {', '.join(targets)}{why}"
    deadline = time.monotonic() + check.timeout
    while True:
        last = ""
        for target, (rc, text) in zip(targets, _ping(client, src.name, targets, wait=1)):
            if rc == 0:
                return True, f"{_pinged(text, target)} answered"
            last = _last_line(text)
        if time.monotonic() >= deadline:
            return False, f"no reply from {', '.join(targets)} in {check.timeout:g} s ({last or 'no output'})"
        time.sleep(0.2)


def _targets(rec: LabRecord, topo: Topology, check: Check, clients: dict) -> list[str]:
    """What to ping: a name for ``ping`` of a container, addresses otherwise."""
    dst = check.dst
    if dst == OUTSIDE:
        return [rec.get("underlay")["outside"]]
    if any(h.name == dst for h in topo.hosts):
        return [str(topo.host(dst).address)]
    if not topo.is_container(dst):
        return [dst]  # an IPv4 address
    if check.kind == "ping":
        return [dst]
    ctr = topo.container(dst)
    docs, _failures = _client(rec, ctr.host, clients).inspect("ContainerInspect", [ctr.name])
    nets = docs[0]["NetworkSettings"]["Networks"] if docs else {}
    # only the networks the topology gave it: a gateway-bridge address is local to its host
    wanted = {a.network for a in ctr.networks}
    return [n["IPAddress"] for name, n in nets.items() if name in wanted and n.get("IPAddress")]


def _ping(client, container: str, targets: list[str], wait: float) -> list[tuple[int, str]]:
    """One ``busybox ping -c 1`` per target from inside ``container``, all at once: (exit code, output)."""
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

    procs = []
    for target in targets:
        cmd = ["busybox", "ping", "-c", "1", "-W", str(max(1, round(wait))), target]
        argv = client.call("ContainerExec", pb.ExecRequest(container=container, argv=cmd)).argv
        procs.append(subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=wait + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        results.append((proc.returncode, out))
    return results


def _pinged(text: str, target: str) -> str:
    m = _PINGED.search(text)
    return f"{target} ({m[1]})" if m and m[1] != target else target


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""
