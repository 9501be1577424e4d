"""Overlay benchmark (issue 4): peer convergence across hosts, and the overlay's data plane.

    sudo .venv/bin/python labs/bench/overlay.py [--hosts 3,10] [--runs 200] [--json FILE]
    sudo .venv/bin/python labs/bench/overlay.py --convergence      # only the first part
    sudo .venv/bin/python labs/bench/overlay.py --dataplane        # only the second part

**Convergence**, for each N in ``--hosts``: a :class:`~netmgr.testing.multihost.MultiHost`
of N hosts (one etcd, N netmgrd), started once and torn down after. An overlay
network ``ovbench`` (10.97.0.0/24); on every host a long-lived "anchor"
container on it (so every host has the network's bridge and VXLAN device; with
``--cold`` none on h1); on h1 (host A) a ``probe`` container on the default
bridge network. One run:

1. the observer (``overlay_watch.py``, a child process) drains its sockets and
   starts pinging the probe's overlay address every ``--ping-interval`` ms from
   one other host's anchor (h2, h3, ... in turn);
2. t0; ``NetworkConnect(ovbench, probe)`` on h1 through the API; t1;
3. the observer timestamps, on every other host, the ``RTM_NEWNEIGH`` of the
   probe's FDB entry (MAC → h1's VTEP) and of its neighbour entry (IP → MAC,
   written second: "programmed"), seen by a netlink socket inside that host's
   namespace; the peer record's arrival at an independent etcd watcher; and the
   first echo reply;
4. ``NetworkDisconnect`` (timed too), and the observer waits until every host
   has deleted both entries (``RTM_DELNEIGH``) and etcd the record.

The pinging anchor has a permanent neighbour entry for the probe's address
(the probe gets the same address and MAC every run), so "first ping" is the
datapath's readiness and not the pinging container's ARP retry timer (1 s).
The observer's timestamping thread runs at real-time priority (SCHED_FIFO 10;
``--no-rt``), so a busy machine delays the daemons, not the stopwatch; each
run also records the CPU time the hypervisor stole meanwhile (/proc/stat).
Next to the runs, in alternating blocks, the observer times etcd put → watch
event with two clients of its own (the daemons' own client code): the floor
under any etcd-based convergence on this machine.

**Data plane** (``overlay_dataplane.py``): TCP throughput and ping RTT between
two containers on two hosts over netmgr's overlay, next to the same path built
by hand with ``ip``/``bridge`` commands, alternating; MTU correctness (1450 with
DF answered, 1451 with DF refused with EMSGSIZE); IP fragment counters of every
namespace on the path.

Nothing here asserts on time: exit 0 when every step worked (the figures are
reported, the target is a verdict line), 1 when a step failed or a correctness
check did not hold, 130 when interrupted. Everything is removed in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from attach import BenchError, block_sizes
from common import (
    cpu_shares,
    cpu_times,
    daemon_facts,
    leftovers,
    log,
    machine_facts,
    now_ns,
    rand_tag,
    settle,
    signals_ignored,
    sigterm_as_interrupt,
    summary99,
    write_json,
)
from overlay_report import RTNL_STALL_MS, STEAL_MS, render, verdict

NET, NET_SUBNET = "ovbench", "10.97.0.0/24"
PROBE = "probe"


def pb():
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2

    return netmgr_v1_netmgr_pb2


class ObserverProc:
    """``overlay_watch.py`` running in host 1's namespace; one JSON object a line each way."""

    def __init__(self, netns_path: str, cfg: dict, log_path: str) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as err:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={netns_path}", sys.executable, os.path.join(HERE, "overlay_watch.py"),
                 json.dumps(cfg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        self.buf = b""
        try:
            self.ready = self.read(60)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def send(self, obj: dict) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict:
        """The next line (own buffering: select() cannot see lines already read into a Python buffer)."""
        fd, deadline = self.proc.stdout.fileno(), time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"the observer said nothing for {timeout:g} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise BenchError(f"the observer exited: {self.stderr_tail()}")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def stderr_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Convergence:
    """One cluster of N hosts: the network, anchors, probe, observer, and the runs."""

    def __init__(self, m, args) -> None:
        self.m, self.args = m, args
        self.clients = [h.client() for h in m.hosts]
        self.a = self.clients[0]
        self.others = [f"h{i + 1}" for i in range(1, m.n)]
        self.conn = pb().ConnectRequest(network=NET, container=PROBE)
        self.disc = pb().DisconnectRequest(network=NET, container=PROBE)
        self.obs: ObserverProc | None = None

    # -- setup, in order ---------------------------------------------------------------------

    def setup(self) -> None:
        self._network()
        self._containers()
        self._learn_probe_address()
        self._pin_probe_neighbour()
        self._wait_steady()
        self._start_observer()

    def _network(self) -> None:
        from netmgr import errors

        p = pb()
        for attempt in range(3):  # etcd on a busy machine has missed the daemon's 3 s deadline during setup
            try:
                self.net_id = self.a.call("NetworkCreate", p.NetworkCreateRequest(
                    name=NET, driver="overlay", pools=[p.IPAMPool(subnet=NET_SUBNET)])).id
                break
            except errors.Unavailable:
                if attempt == 2:
                    raise
                log("bench: NetworkCreate: cluster store unavailable, retrying")
            except errors.AlreadyExists:  # an earlier attempt did go through
                self.net_id = self.a.documents("NetworkInspect", p.Refs(refs=[NET]))[0]["Id"]
                break
        self.vx = "vx-" + self.net_id[:12]
        deadline = time.monotonic() + 30
        for client in self.clients[1:]:  # every daemon learns the network through its etcd watch
            while True:
                try:
                    client.documents("NetworkInspect", p.Refs(refs=[NET]))
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def _containers(self) -> None:
        p = pb()
        self.anchors: dict[str, dict] = {}
        for i, client in enumerate(self.clients):
            if i == 0 and self.args.cold:
                continue
            name = f"anchor-h{i + 1}"
            client.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=name, network=NET))
            doc = client.documents("ContainerInspect", p.Refs(refs=[name]))[0]
            self.anchors[f"h{i + 1}"] = {"name": name, "sandbox": doc["NetworkSettings"]["SandboxKey"],
                                         "ip": doc["NetworkSettings"]["Networks"][NET]["IPAddress"]}
        self.a.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=PROBE))  # default bridge network

    def _learn_probe_address(self) -> None:
        """One untimed connect: the address (and MAC) the probe gets, the same every run."""
        self.a.call("NetworkConnect", self.conn)
        doc = self.a.documents("ContainerInspect", pb().Refs(refs=[PROBE]))[0]
        net = doc["NetworkSettings"]["Networks"][NET]
        self.ip, self.mac = net["IPAddress"], net["MacAddress"]
        self.a.call("NetworkDisconnect", self.disc)

    def _pin_probe_neighbour(self) -> None:
        """In each pinging anchor's sandbox: probe IP → MAC, permanent (no ARP timer in "first ping")."""
        for host in self.others:
            anchor = self.anchors[host]
            out = subprocess.run(["nsenter", f"--net={anchor['sandbox']}", "ip", "-o", "-4", "addr", "show"],
                                 capture_output=True, text=True, check=True).stdout
            ifname = next(ln.split()[1] for ln in out.splitlines() if f" {anchor['ip']}/" in ln)
            subprocess.run(["nsenter", f"--net={anchor['sandbox']}", "ip", "neigh", "replace", self.ip, "lladdr",
                            self.mac, "dev", ifname, "nud", "permanent"], check=True, capture_output=True)

    def _wait_steady(self, timeout: float = 30.0) -> None:
        """Every host has its VXLAN device with every other anchor programmed."""
        deadline = time.monotonic() + timeout
        for i, host in enumerate(self.m.hosts):
            if i == 0 and self.args.cold:
                continue
            want = len(self.anchors) - 1
            while True:
                out = host.sh("ip", "-o", "neigh", "show", "dev", self.vx, "nud", "permanent").out
                if len(out.splitlines()) >= want:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"h{i + 1}: {len(out.splitlines())} of {want} anchors programmed after "
                                     f"{timeout:g} s")
                time.sleep(0.1)

    def _start_observer(self) -> None:
        cfg = {"hosts": [{"name": h, "netns": self.m.hosts[int(h[1:]) - 1].netns_path, "vx": self.vx,
                          "sandbox": self.anchors[h]["sandbox"]} for h in self.others],
               "etcd": f"etcd://{self.m.gateway}:2379", "prefix": "/netmgr/", "watch": f"peers/{self.net_id}/",
               "floor_prefix": "/nmbfloor/", "rt": not self.args.no_rt}
        self.obs = ObserverProc(self.m.hosts[0].netns_path, cfg, os.path.join(self.m.base, "observer.log"))

    # -- measuring -----------------------------------------------------------------------------------

    def run(self, k: int) -> dict:
        """One connect (timed to every host's entries and the first ping) and one disconnect."""
        ping_from = self.others[k % len(self.others)]
        timeout = self.args.timeout
        steal0 = cpu_times()[7]
        self.obs.send({"cmd": "arm", "kind": "add", "run": k, "ip": self.ip, "mac": self.mac,
                       "ping_from": ping_from, "interval_ms": self.args.ping_interval, "timeout_s": timeout})
        self.obs.read(10)
        t0 = now_ns()
        self.a.call("NetworkConnect", self.conn)
        t1 = now_ns()
        add = self.obs.read(timeout + 10)
        self.obs.send({"cmd": "arm", "kind": "del", "run": k, "ip": self.ip, "mac": self.mac, "timeout_s": timeout})
        self.obs.read(10)
        t2 = now_ns()
        self.a.call("NetworkDisconnect", self.disc)
        t3 = now_ns()
        rem = self.obs.read(timeout + 10)
        out = sample(k, ping_from, (t0, t1, t2, t3), add, rem)
        # CPU time the hypervisor gave to other guests while this run wanted it (all vCPUs): a pause of the
        # whole machine shows here, not in netmgr
        out["steal_ms"] = (cpu_times()[7] - steal0) * 1000 / os.sysconf("SC_CLK_TCK")
        time.sleep(self.args.gap * (0.5 + random.random()))  # no phase lock with the leases' keep-alives
        return out

    def floor(self, n: int) -> dict:
        self.obs.send({"cmd": "floor", "n": n})
        return self.obs.read(60 + n)

    def close(self) -> None:
        if self.obs is not None:
            self.obs.close()
        for client in self.clients:
            client.close()


def sample(k: int, ping_from: str, times: tuple, add: dict, rem: dict) -> dict:
    """One run's figures in ms: entries relative to the connect's start (t0), removals to the disconnect's."""
    t0, t1, t2, t3 = times

    def ms(t, base):
        return None if t is None else (t - base) / 1e6

    out = {"run": k, "t0_ns": t0, "ping_from": ping_from, "api_connect_ms": ms(t1, t0), "api_disconnect_ms": ms(t3, t2),
           "etcd_ms": ms(add.get("etcd"), t0), "fdb_ms": {h: ms(t, t0) for h, t in add["fdb"].items()},
           "programmed_ms": {h: ms(t, t0) for h, t in add["neigh"].items()},
           "first_ping_ms": ms(add.get("reply"), t0), "answered_echo_sent_ms": ms(add.get("reply_seq_sent"), t0),
           "echoes_sent": add["echoes_sent"], "etcd_del_ms": ms(rem.get("etcd"), t2),
           "removed_ms": {h: ms(t, t2) for h, t in rem["neigh"].items()},
           "fdb_removed_ms": {h: ms(t, t2) for h, t in rem["fdb"].items()},
           "complete": bool(add["done"] and rem["done"]), "overrun": add["overrun"] + rem["overrun"]}
    if out["programmed_ms"]:
        out["all_programmed_ms"] = max(out["programmed_ms"].values())
        out["all_fdb_ms"] = max(out["fdb_ms"].values()) if out["fdb_ms"] else None
    if out["removed_ms"]:
        out["all_removed_ms"] = max(out["removed_ms"].values())
    return out


def summarize(runs: list[dict], hosts: list[str], floor: list[dict]) -> dict:
    """summary99 of every series (complete runs only)."""
    ok = [r for r in runs if r["complete"]]
    series: dict[str, list[float]] = {
        "api_connect": [r["api_connect_ms"] for r in ok],
        "etcd_event": [r["etcd_ms"] for r in ok],
        "fdb_all": [r["all_fdb_ms"] for r in ok],
        "programmed_all": [r["all_programmed_ms"] for r in ok],
        "first_ping": [r["first_ping_ms"] for r in ok],
        "watch_to_programmed_all": [r["all_programmed_ms"] - r["etcd_ms"] for r in ok],
        "api_disconnect": [r["api_disconnect_ms"] for r in ok],
        "removed_all": [r["all_removed_ms"] for r in ok],
        "floor_put_to_watch": [x for f in floor for x in f["watch_ms"]],
        "floor_put": [x for f in floor for x in f["put_ms"]],
    }
    calm = [r for r in ok if r.get("steal_ms", 0) < STEAL_MS]
    series["programmed_all_no_steal"] = [r["all_programmed_ms"] for r in calm]
    if any("rtnl_stall_ms" in r for r in ok):
        series["programmed_all_no_rtnl_stall"] = [r["all_programmed_ms"] for r in ok
                                                  if r["rtnl_stall_ms"] <= RTNL_STALL_MS]
    for h in hosts:
        series[f"programmed_{h}"] = [r["programmed_ms"][h] for r in ok]
    return {k: summary99(v) for k, v in series.items() if v}


def proc_cpu_ms(pids: dict[str, int]) -> dict[str, float]:
    """utime + stime (all threads) of each process, in ms (clock-tick resolution)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) * 1000 / tick
        except (OSError, IndexError, ValueError):
            pass
    return out


class Busy:
    """Keeps one host's daemon busy: ContainerRun + ContainerRemove in a loop, on a thread (``--busy-host``)."""

    def __init__(self, host) -> None:
        import threading

        self.client, self.ops, self.errors = host.client(), 0, []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="busy", daemon=True)

    def _loop(self) -> None:
        p = pb()
        while not self.stop_flag.is_set():
            try:
                self.client.call("ContainerRun", p.RunRequest(argv=["sleep", "60"], name="busy"))
                self.client.call("ContainerRemove", p.Refs(refs=["busy"], force=True))
                self.ops += 2
            except Exception as exc:  # noqa: BLE001 - counted and reported, the runs go on
                self.errors.append(str(exc))
                time.sleep(0.1)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        self.client.close()


class RtnlProbe:
    """``overlay_watch.py --rtnl-probe``: times an RTNL-holding request every 2 ms (``--rtnl-probe``)."""

    def __init__(self, tag: str, log_path: str) -> None:
        import signal

        self.sigint = signal.SIGINT
        with open(log_path, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "overlay_watch.py"), "--rtnl-probe",
                                          f"{tag}r-rtnl", "2"], stdout=subprocess.PIPE, stderr=err)
        if json.loads(self.proc.stdout.readline() or "{}").get("ready") is not True:
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"the RTNL probe did not start (see {log_path})")

    def stop(self) -> dict:
        self.proc.send_signal(self.sigint)
        out, _ = self.proc.communicate(timeout=60)
        return json.loads(out.splitlines()[-1])


def annotate_rtnl(runs: list[dict], probe: dict) -> None:
    """Per run: the longest probe request that overlapped [t0, all programmed] (ms; 0 if none over 1 ms)."""
    for r in runs:
        end = r["t0_ns"] + (r.get("all_programmed_ms") or 0) * 1e6
        r["rtnl_stall_ms"] = max((ms for t, ms in probe["slow"] if t < end and t + ms * 1e6 > r["t0_ns"]),
                                 default=0.0)


def measure_runs(conv: Convergence, args, entry: dict, pids: dict[str, int]) -> None:
    """Warm-up, then the runs in blocks, each block after a block of the etcd floor."""
    for k in range(args.warmup):
        entry["warmup"].append(conv.run(-1 - k))
    probe = RtnlProbe(entry["tag"], os.path.join(conv.m.base, "rtnl-probe.log")) if args.rtnl_probe else None
    try:
        _blocks(conv, args, entry, pids)
    finally:
        if probe is not None:
            entry["rtnl_probe"] = probe.stop()
            annotate_rtnl(entry["runs"], entry["rtnl_probe"])


def _blocks(conv: Convergence, args, entry: dict, pids: dict[str, int]) -> None:
    """The measured blocks (etcd floor, then runs), with the processes' CPU time over the runs only."""
    floors = block_sizes(args.floor_samples, args.blocks) if args.floor_samples > 0 else []
    cpu0, k, runs_s = cpu_times(), 0, 0.0
    proc_ms = dict.fromkeys(pids, 0.0)
    for b, size in enumerate(block_sizes(args.runs, args.blocks)):
        if b < len(floors):
            entry["floor"].append(conv.floor(floors[b]))
        before, start = proc_cpu_ms(pids), time.monotonic()
        for _ in range(size):
            entry["runs"].append(conv.run(k))
            k += 1
        runs_s += time.monotonic() - start
        after = proc_cpu_ms(pids)
        for name in proc_ms:
            proc_ms[name] += after.get(name, 0.0) - before.get(name, 0.0)
        log(f"bench: convergence {entry['hosts']} hosts: {k}/{args.runs} runs")
    entry["cpu"] = cpu_shares(cpu0, cpu_times())
    entry["runs_wall_s"] = runs_s
    entry["proc_cpu_ms"] = proc_ms


def idle_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU ms per second of each process while nothing is asked of the cluster (keep-alives only)."""
    before = proc_cpu_ms(pids)
    time.sleep(seconds)
    after = proc_cpu_ms(pids)
    return {name: (after[name] - before[name]) / seconds for name in after if name in before}


def bench_convergence(n: int, tag: str, args, entry: dict) -> None:
    """Start N hosts, set up, settle, warm up, measure in blocks with the etcd floor, tear down."""
    from netmgr.testing.multihost import MultiHost

    entry.update({"hosts": n, "tag": tag, "runs": [], "warmup": [], "floor": [], "cold": args.cold,
                  "busy_host": args.busy_host})
    m = MultiHost(n, subnet_prefix="10.253.71", ttl=args.ttl, prefix=f"{tag}c{n}")
    conv = None
    try:
        start = time.monotonic()
        log(f"bench: convergence: starting {n} hosts")
        m.up()
        conv = Convergence(m, args)
        conv.setup()
        entry["setup_s"] = time.monotonic() - start
        entry["probe"] = {"ip": conv.ip, "mac": conv.mac}
        entry["observer_rt"] = conv.obs.ready.get("rt", False)
        entry["settle"] = settle(args.settle) if args.settle > 0 else None
        pids = {h.name: h.proc.pid for h in m.hosts if h.proc} | {"etcd": m.etcd.proc.pid}
        entry["idle_cpu_ms_per_s"] = idle_cpu(pids, 3.0)
        if args.busy_host and args.busy_host <= n:
            busy = Busy(m.hosts[args.busy_host - 1])
            with busy:
                measure_runs(conv, args, entry, pids)
            entry["busy"] = {"ops": busy.ops, "errors": busy.errors[:5]}
        else:
            measure_runs(conv, args, entry, pids)
        entry["loadavg"] = os.getloadavg()
        entry["daemons"] = {h.name: daemon_facts(h.proc.pid if h.proc else None) for h in m.hosts}
    finally:
        with signals_ignored():
            if conv is not None:
                conv.close()
            start = time.monotonic()
            m.down()
            entry["teardown_s"] = time.monotonic() - start
            entry["summary"] = summarize(entry["runs"], conv.others if conv else [], entry["floor"])
            entry["cpu_per_run_ms"] = cpu_per_run(entry)


def cpu_per_run(entry: dict) -> dict:
    """CPU ms per run (connect + disconnect) of h1's daemon, the others' on average, and etcd, idle rate subtracted."""
    used, idle, runs = entry.get("proc_cpu_ms"), entry.get("idle_cpu_ms_per_s", {}), len(entry["runs"])
    if not used or not runs:
        return {}
    net = {k: (v - idle.get(k, 0.0) * entry["runs_wall_s"]) / runs for k, v in used.items()}
    others = [v for k, v in net.items() if k not in ("h1", "etcd")]
    return {"h1": net.get("h1"), "others_mean": sum(others) / len(others) if others else None,
            "etcd": net.get("etcd"), "per_host": net}


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="netmgr overlay benchmark (convergence and data plane)")
    ap.add_argument("--convergence", action="store_true", help="only the convergence part")
    ap.add_argument("--dataplane", action="store_true", help="only the data-plane part")
    ap.add_argument("--hosts", default="3,10", help="cluster sizes for convergence (default 3,10)")
    ap.add_argument("--runs", type=int, default=200, help="measured connect/disconnect runs per size (default 200)")
    ap.add_argument("--warmup", type=int, default=10, help="uncounted runs first (default 10)")
    ap.add_argument("--blocks", type=int, default=5, help="runs and the etcd floor alternate in N blocks (default 5)")
    ap.add_argument("--floor-samples", type=int, default=200, help="etcd put->watch samples per size (default 200)")
    ap.add_argument("--ping-interval", type=float, default=1.0, help="ms between echo requests (default 1)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds a run waits for every host (default 5)")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between runs, jittered x0.5-1.5 (default 0.05)")
    ap.add_argument("--ttl", type=int, default=10, help="the daemons' --cluster-ttl (default 10, netmgr's default)")
    ap.add_argument("--settle", type=float, default=10,
                    help="after setup, wait up to S s for a quiet machine (default 10; 0: no wait)")
    ap.add_argument("--no-rt", action="store_true",
                    help="the observer's timestamping thread at normal priority (default: SCHED_FIFO 10)")
    ap.add_argument("--busy-host", type=int, default=0, metavar="I",
                    help="diagnostic: keep host I's daemon busy (container run + rm in a loop) during the runs")
    ap.add_argument("--rtnl-probe", action="store_true",
                    help="diagnostic: time an RTNL-holding netlink request every 2 ms during the runs (real-time "
                         "priority, private namespace) and report the runs that overlapped a stall")
    ap.add_argument("--cold", action="store_true",
                    help="no anchor on h1: each connect also creates h1's bridge and VXLAN device")
    ap.add_argument("--tcp-rounds", type=int, default=15, help="TCP transfers per path, alternating (default 15)")
    ap.add_argument("--tcp-seconds", type=float, default=1.0, help="seconds per TCP transfer (default 1)")
    ap.add_argument("--ping-blocks", type=int, default=5, help="ping blocks per path, alternating (default 5)")
    ap.add_argument("--ping-count", type=int, default=400, help="echoes per ping block (default 400)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    args = ap.parse_args(argv)
    try:
        args.hosts = [int(x) for x in args.hosts.split(",") if x.strip()]
    except ValueError:
        ap.error("--hosts takes comma-separated integers")
    if any(h < 2 or h > 50 for h in args.hosts):
        ap.error("--hosts: each size must be 2..50")
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces)")
    args.do_convergence = args.convergence or not args.dataplane
    args.do_dataplane = args.dataplane or not args.convergence
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tag = "nmbo" + rand_tag(5)  # in every namespace, directory and process this run makes
    results: dict = {"facts": machine_facts(), "tag": tag, "args": {k: v for k, v in vars(args).items()},
                     "convergence": [], "problems": []}
    restore = sigterm_as_interrupt()
    rc, started = 0, time.monotonic()
    try:
        if args.do_convergence:
            for n in args.hosts:
                entry: dict = {}
                results["convergence"].append(entry)
                bench_convergence(n, tag, args, entry)
                results["problems"] += [f"{n} hosts: run {r['run']} incomplete (hosts programmed: "
                                        f"{sorted(r['programmed_ms'])}, reply: {r['first_ping_ms'] is not None})"
                                        for r in entry["runs"] if not r["complete"]]
        if args.do_dataplane:
            from overlay_dataplane import problems_of, run_dataplane

            results["dataplane"] = {}
            run_dataplane(tag, args, results["dataplane"])
            results["problems"] += problems_of(results["dataplane"])
    except KeyboardInterrupt:
        rc = 130
        log("bench: interrupted, cleaned up")
    except Exception as exc:  # noqa: BLE001 - report whatever broke; the parts cleaned up after themselves
        rc = 1
        results["problems"].append(f"{type(exc).__name__}: {exc}")
        log(f"bench: FAILED:\n{traceback.format_exc()}")
    finally:
        restore()
    results["wall_s"] = time.monotonic() - started
    results["leftovers"] = leftovers(tag)
    if any(results["leftovers"].values()):
        results["problems"].append(f"left behind: {results['leftovers']}")
    if rc == 0 and results["problems"]:
        rc = 1
    results["verdict"] = verdict(results)
    if rc != 130:
        print(render(results, args))
    write_json(args.json, results)
    return rc


if __name__ == "__main__":
    sys.exit(main())
