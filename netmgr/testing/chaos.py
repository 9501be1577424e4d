"""Seeded chaos against live daemons: random operations, SIGKILLs (mid-operation too), restarts, invariants.

Used by ``tests/privileged/test_chaos.py`` (a bounded run in CI) and ``labs/chaos/run.py`` (a long one).
A :class:`Chaos` drives a :class:`~netmgr.testing.multihost.MultiHost` through the docker-style CLI, as a
user would: bridge networks on one host and overlay networks across all, ``run -d`` (some with ``-p``),
``rm -f``, ``network connect/disconnect/create/rm``, and daemon kills. A kill either hits an idle daemon or
one in the middle of an operation (the CLI call is started, the daemon is SIGKILLed a random few
milliseconds later, then restarted).

The model of what exists is never guessed: after every kill, and every ``check_every`` operations, the
invariants are checked against what the daemons report and what the kernel has (:meth:`Chaos.check`):

* store and kernel agree: each container's sandbox, its interfaces and addresses, the host side veth on
  its network's bridge; no veth, bridge, VXLAN device or sandbox that no record owns;
* no leaked process (container shims), cgroup, or nftables port mapping;
* no address allocated twice: per network, across every host;
* every running container reaches one other container on each of its networks, by address, and by name
  on a user-defined network (Docker's default ``bridge`` has no embedded DNS: :func:`ping_targets`).

Everything is driven by one ``random.Random(seed)``; the seed is printed first so a failure replays
(timing inside the kernel and the daemons still varies, so a replay is the same sequence of operations
and kill points, not the same interleaving).
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from netmgr.labhost import SimHost

PREFIX = "nmx"  # every object this module creates


class InvariantBroken(AssertionError):
    """What the daemons report and what the kernel has disagree (or an address is taken twice)."""


@dataclass
class Tally:
    """What a run did: operations by kind and outcome, kills, checks."""

    ops: collections.Counter = field(default_factory=collections.Counter)
    kills: int = 0
    kills_mid_op: int = 0
    checks: int = 0
    pings: int = 0

    def summary(self) -> str:
        """One paragraph for a log or a closing note."""
        done = sum(self.ops.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        return (f"{done} operations ({kinds}); {self.kills} daemon SIGKILLs ({self.kills_mid_op} mid-operation);"
                f" {self.checks} invariant checks, {self.pings} pings")


def _json(result) -> list:
    return json.loads(result.out) if result.rc == 0 and result.out.strip() else []


class Chaos:
    """Random operations and kills on ``cluster``'s hosts; :meth:`run` does ``ops`` of them."""

    def __init__(self, cluster, seed: int, log=print, check_every: int = 100, kill_rate: float = 0.03) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.seed = seed
        self.log = log
        self.check_every = check_every
        self.kill_rate = kill_rate
        self.tally = Tally()
        self.seen_containers: dict[str, int] = {}  # container id → host index, every one ever created
        self._n = 0
        #: per host: (networks, containers) to pick from; updated by each operation, re-read after kills
        #: and checks (a stale name only makes an operation fail, which is part of the game)
        self._lists: list[tuple[set[str], set[str]]] = []

    # -- the run ---------------------------------------------------------------------

    def run(self, ops: int) -> Tally:
        """``ops`` random operations; invariants after each kill, every ``check_every`` and at the end."""
        self.log(f"chaos: seed {self.seed}, {ops} operations on {len(self.cluster.hosts)} hosts")
        for i in range(ops):
            if self.rng.random() < self.kill_rate:
                self.kill_and_restart(mid_op=self.rng.random() < 0.5)
                self.check()
            else:
                self.operation()
            if (i + 1) % self.check_every == 0:
                self.check()
        self.check()
        self.log("chaos: " + self.tally.summary())
        return self.tally

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{PREFIX}{stem}{self._n}"

    def _host(self) -> tuple[int, SimHost]:
        i = self.rng.randrange(len(self.cluster.hosts))
        return i, self.cluster.hosts[i]

    # -- operations --------------------------------------------------------------------

    def operation(self) -> None:
        """One random operation (its failure, when the situation calls for one, is part of the game)."""
        kind = self.rng.choices(["net", "netrm", "run", "rm", "connect", "disconnect"], [8, 5, 35, 22, 18, 12])[0]
        i, host = self._host()
        argv = self._argv(kind, i, host)
        if argv is None:
            self.tally.ops[f"{kind}:skipped"] += 1
            return
        result = host.cli(*argv, timeout=120)
        self._record(kind, i, argv, result)

    def _argv(self, kind: str, i: int, host: SimHost) -> list[str] | None:
        rng = self.rng
        if not self._lists:
            self._refresh()
        nets, ctrs = (sorted(x) for x in self._lists[i])
        if kind == "net":
            if rng.random() < 0.4:
                return ["network", "create", "-d", "overlay", "--attachable", self._name("ov")]
            return ["network", "create", self._name(f"br{i}")]
        if kind == "netrm":
            return ["network", "rm", rng.choice(nets)] if nets else None
        if kind == "run":
            argv = ["run", "-d", "--name", self._name(f"c{i}")]
            if nets:
                argv += ["--network", rng.choice(nets)]
            if rng.random() < 0.3:
                argv += ["-p", f"{rng.randrange(20000, 20040)}:{rng.choice([80, 53])}/{rng.choice(['tcp', 'udp'])}"]
            return argv + ["sleep", "100000"]
        if kind == "rm":
            return ["rm", "-f", rng.choice(ctrs)] if ctrs else None
        if kind in ("connect", "disconnect"):
            if not ctrs or not nets:
                return None
            return ["network", kind, rng.choice(nets), rng.choice(ctrs)]
        raise ValueError(kind)

    def _record(self, kind: str, i: int, argv: list[str], result) -> None:
        outcome = "ok" if result.rc == 0 else "refused"
        self.tally.ops[f"{kind}:{outcome}"] += 1
        err = result.err.strip()
        if result.rc != 0 and ("\n" in err or "internal error" in err or "Traceback" in err or not err):
            raise InvariantBroken(f"{' '.join(argv)} on host {i + 1}: rc {result.rc}, not one clear line: {err!r}")
        if result.rc != 0:
            return
        nets, ctrs = self._lists[i]
        if kind == "run":
            self.seen_containers[result.out.strip()] = i
            ctrs.add(argv[argv.index("--name") + 1])
        elif kind == "rm":
            ctrs.discard(argv[-1])
        elif kind == "net":
            for other in (self._lists if "overlay" in argv else [self._lists[i]]):
                other[0].add(argv[-1])
        elif kind == "netrm":
            for other in self._lists:
                other[0].discard(argv[-1])

    def _refresh(self) -> None:
        self._lists = [(set(self._networks(h)), set(self._containers(h))) for h in self.cluster.hosts]

    def _networks(self, host: SimHost) -> list[str]:
        out = host.cli("network", "ls", "--format", "{{.Name}}").out.split()
        return sorted(n for n in out if n.startswith(PREFIX))

    def _containers(self, host: SimHost) -> list[str]:
        return sorted(host.cli("ps", "-a", "--format", "{{.Names}}").out.split())

    # -- kills -------------------------------------------------------------------------

    def kill_and_restart(self, mid_op: bool) -> None:
        """SIGKILL one daemon (while it serves a random operation, when ``mid_op``) and start it again."""
        i, host = self._host()
        self.tally.kills += 1
        proc = None
        if mid_op:
            kind = self.rng.choice(["net", "netrm", "run", "rm", "connect", "disconnect"])
            argv = self._argv(kind, i, host)
            if argv is not None:
                self.tally.kills_mid_op += 1
                cmd = [sys.executable, "-m", "netmgr.cli.main", "-H", f"unix://{host.socket}", *argv]
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(self.rng.uniform(0.1, 0.4))  # the CLI's start-up is ~0.1 s: land inside the call
        self.log(f"chaos: SIGKILL host {i + 1}'s daemon" + (f" during {' '.join(argv)}" if proc else ""))
        host.stop_daemon(signal.SIGKILL)
        if proc is not None:
            out, err = proc.communicate(timeout=60)
            if proc.returncode == 0 and argv[0] == "run":
                self.seen_containers[out.strip()] = i
        host.start_daemon(timeout=60)
        self._lists = []

    # -- invariants --------------------------------------------------------------------

    def check(self) -> None:
        """Every invariant of the module docstring, on every host (overlay state converges: retried)."""
        self.tally.checks += 1
        deadline = time.monotonic() + 15
        while True:
            try:
                views = [self._view(h) for h in self.cluster.hosts]
                for i, view in enumerate(views):
                    self._check_host(i, view)
                self._check_unique_addresses(views)
                break
            except InvariantBroken:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._check_cgroups(views)
        self._check_reachability(views)
        self._lists = []

    def _view(self, host: SimHost) -> dict:
        ids = host.cli("ps", "-aq", "--no-trunc").out.split()
        ctrs = _json(host.cli("inspect", *ids)) if ids else []
        net_ids = host.cli("network", "ls", "-q", "--no-trunc").out.split()
        nets = {n["Id"]: n for n in _json(host.cli("network", "inspect", *net_ids))} if net_ids else {}
        return {"host": host, "containers": ctrs, "networks": nets}

    def _check_host(self, i: int, view: dict) -> None:
        host = view["host"]
        links = {link["ifname"]: link for link in _ip_json(host.netns_path, "link")}
        want_links, want_sandboxes, ports = set(), set(), set()
        running = [c for c in view["containers"] if c["State"]["Running"]]
        # a stopped container keeps its sandbox, interfaces and addresses until rm (netmgr's rule,
        # netmgr/containers.py): one whose process died with the daemon (a kill during its rm -f)
        # comes back as exited, with them
        for ctr in view["containers"]:
            key = ctr["NetworkSettings"]["SandboxKey"]
            if key:
                want_sandboxes.add(os.path.basename(key))
            sandbox_addrs = {a["local"] for link in _ip_json(key, "addr") for a in link.get("addr_info", [])} \
                if key else set()
            for net_name, ep in ctr["NetworkSettings"]["Networks"].items():
                net = view["networks"].get(ep["NetworkID"])
                if net is None:
                    raise InvariantBroken(f"host {i + 1}: {ctr['Name']} is on network {net_name}, which is gone")
                if net["Driver"] not in ("bridge", "overlay"):
                    continue
                veth = "veth" + ep["EndpointID"][:7]
                want_links.add(veth)
                if veth not in links:
                    raise InvariantBroken(f"host {i + 1}: {ctr['Name']} on {net_name}: no host veth {veth}")
                if ep["IPAddress"] not in sandbox_addrs:
                    raise InvariantBroken(f"host {i + 1}: {ctr['Name']} on {net_name}: {ep['IPAddress']} "
                                          f"not in its sandbox ({sorted(sandbox_addrs)})")
            for binding in (ctr["NetworkSettings"].get("Ports") or {}).items():
                port, hosts = binding
                for h in hosts or []:
                    ports.add((port.split("/")[1], int(h["HostPort"])))
        stray = {n for n in links if n.startswith("veth")} - want_links
        if stray:
            raise InvariantBroken(f"host {i + 1}: veths that no endpoint owns: {sorted(stray)}")
        self._check_bridges(i, view, links)
        sandboxes = set(os.listdir(os.path.join(host.run_dir, "netns")))
        if sandboxes != want_sandboxes:
            raise InvariantBroken(f"host {i + 1}: sandboxes {sorted(sandboxes)} but the containers have "
                                  f"{sorted(want_sandboxes)}")
        shims = _shims_under(host.state_dir)
        if shims != len(running):
            raise InvariantBroken(f"host {i + 1}: {shims} container shims for {len(running)} running containers")
        mapped = _nft_ports(host.netns_path)
        if mapped != ports:
            raise InvariantBroken(f"host {i + 1}: nftables maps ports {sorted(mapped)}, containers publish "
                                  f"{sorted(ports)}")

    def _check_bridges(self, i: int, view: dict, links: dict) -> None:
        local = {"nm-" + nid[:12] for nid, n in view["networks"].items() if n["Driver"] == "bridge"}
        overlay = {nid[:12] for nid, n in view["networks"].items() if n["Driver"] == "overlay"}
        for name in links:
            if name.startswith("nm-") and not name.startswith("nm-s") and name not in local:
                raise InvariantBroken(f"host {i + 1}: bridge {name} belongs to no network")
            if name.startswith(("ov-", "vx-")) and name[3:] not in overlay:
                raise InvariantBroken(f"host {i + 1}: overlay device {name} belongs to no network")

    def _check_unique_addresses(self, views: list[dict]) -> None:
        owner: dict[tuple[str, str], str] = {}
        for i, view in enumerate(views):
            for ctr in view["containers"]:
                for ep in ctr["NetworkSettings"]["Networks"].values():
                    for ip in (ep.get("IPAddress"), ep.get("GlobalIPv6Address")):
                        if not ip:
                            continue
                        key, who = (ep["NetworkID"], ip), f"{ctr['Name']} on host {i + 1}"
                        if key in owner and owner[key] != who:
                            raise InvariantBroken(f"{ip} is allocated twice: {owner[key]} and {who}")
                        owner[key] = who

    def _check_cgroups(self, views: list[dict]) -> None:
        running = {c["Id"] for v in views for c in v["containers"] if c["State"]["Running"]}
        for cid in self.seen_containers:
            dirs = cgroup_dirs(cid)
            if cid not in running and dirs:
                raise InvariantBroken(f"container {cid[:12]} is not running but keeps cgroups {dirs}")

    def _check_reachability(self, views: list[dict]) -> None:
        members: dict[str, list[tuple[SimHost, str, str]]] = collections.defaultdict(list)
        for view in views:
            for ctr in view["containers"]:
                if not ctr["State"]["Running"]:
                    continue
                for ep in ctr["NetworkSettings"]["Networks"].values():
                    net = view["networks"].get(ep["NetworkID"], {})
                    if (net.get("Options") or {}).get("com.docker.network.bridge.enable_icc") == "false":
                        continue  # containers must not reach each other there (the gateway bridge, as Docker's)
                    if ep.get("IPAddress"):
                        members[ep["NetworkID"]].append((ctr["State"]["Pid"], ctr["Name"].lstrip("/"),
                                                         ep["IPAddress"], net.get("Name", "")))
        for net_id, group in members.items():
            if len(group) < 2:
                continue
            for k, (pid, name, _ip, net_name) in enumerate(group):
                _pid, peer, peer_ip, _ = group[(k + 1) % len(group)]
                for target in ping_targets(net_name, peer, peer_ip):
                    self.tally.pings += 1
                    if not _ping(pid, target):
                        raise InvariantBroken(f"{name} cannot reach {target} on network {net_id[:12]}")


def ping_targets(net_name: str, peer: str, peer_ip: str) -> tuple[str, ...]:
    """What a container must reach a peer by: its address, and its name on a user-defined network.

    Docker's predefined ``bridge`` network has no embedded DNS (containers there resolve each other
    only through ``--link``), and netmgr keeps that: pinging a peer there by name is not an invariant.
    """
    return (peer_ip,) if net_name == "bridge" else (peer, peer_ip)


def _ping(pid: int, target: str) -> bool:
    """One ping from inside a container (its network and mount namespaces: its resolv.conf, the embedded DNS)."""
    for _ in range(10):  # a new overlay peer is programmed from etcd's watch: a moment after the run
        if subprocess.run(["nsenter", "-t", str(pid), "-n", "-m", "--", "busybox", "ping", "-c1", "-W1", target],
                          capture_output=True, check=False).returncode == 0:
            return True
    return False


def _ip_json(netns_path: str, what: str) -> list:
    proc = subprocess.run(["nsenter", f"--net={netns_path}", "ip", "-j", what], capture_output=True, text=True,
                          check=False)
    return json.loads(proc.stdout or "[]")


def _shims_under(state_dir: str) -> int:
    marker = os.path.abspath(state_dir)
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if "import shim;" in cmdline and marker in cmdline:
            count += 1
    return count


def _nft_ports(netns_path: str) -> set[tuple[str, int]]:
    """(proto, host port) keys of the port maps in netmgr's table of a host."""
    proc = subprocess.run(["nsenter", f"--net={netns_path}", "nft", "-j", "list", "table", "inet", "netmgr"],
                          capture_output=True, text=True, check=False)
    out = set()
    for item in json.loads(proc.stdout or '{"nftables": []}')["nftables"]:
        m = item.get("map")
        if not m or not m["name"].startswith("dport"):
            continue
        for key, _value in m.get("elem", []):
            parts = key["concat"]
            out.add((str(parts[-2]), int(parts[-1])))
    return out


def cgroup_dirs(cid: str) -> list[str]:
    found = []
    for root in ("/sys/fs/cgroup", *(os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup"))):
        path = os.path.join(root, "netmgr", cid)
        if os.path.isdir(path):
            found.append(path)
    return found
