"""Scale benchmark: ``network connect`` + ``disconnect`` latency against the size of the network.

    sudo .venv/bin/python labs/bench/scale.py [--sizes 1,10,100,1000] [--runs 50] [--json FILE] [--docker]

One simulated host (``netmgr.labhost.SimHost``), always torn down at the end
(also on Ctrl-C or SIGTERM). In it: a big bridge network (``--subnet``,
default 10.210.0.0/16), a small one (10.211.0.0/24) and a probe container
``probe`` (``sleep 3600``) on the small one. For each size S in ``--sizes``:

1. fill: ``ContainerRun`` of ``sleep 3600`` containers on the big network
   through the API until it holds S endpoints (each run is timed: the fill
   is a run-latency-vs-size measurement of its own);
2. settle: wait (``--settle``) until the machine is quiet: every new
   interface floods the bridge with IPv6 multicast for seconds (README.md);
3. check once (not timed): connect the probe to the big network, its inspect
   and its sandbox show the address; disconnect, both are gone;
4. ``--warmup`` uncounted pairs, then ``--runs`` pairs of ``NetworkConnect``
   + ``NetworkDisconnect`` of the probe to/from the big network (so the big
   network goes from S to S+1 endpoints and back), alternating in
   ``--blocks`` blocks with two floors run in the host namespace:
   ``floor.py`` (the raw kernel work of the same attach, on a bridge of its
   own) and the same raw steps on the big network's own bridge
   (``scale.py --same-bridge-floor``, a child mode of this script).

A reference network of 10 containers (``scaleref``) is measured alternately
with the big one, pair by pair (the raw steps too, bridge by bridge), so the
size of the network is compared at the same moment and on the same host.

The report: per size, the API's median and p95 (nearest rank), both floors',
the ratios; the flatness figure p95(connect at the largest size) / p95(at 10),
issue target <= 1.2; the same against the reference network, with the
kernel's and netmgr's shares; median connect / raw floor connect, target <= 2.
``--probe-no-ipv6`` disables IPv6 in the probe's sandbox (a diagnostic).
At the end the last ``--rm-sample`` containers are removed through the API
(timed) and ``SimHost.down()`` removes the rest with the daemon stopped.
With ``--docker`` and a live /var/run/docker.sock, Docker's Engine API does
the same at the same sizes (after the netmgr part; labs/bench/README.md
shows how to run dockerd in a namespace of its own for this). Nothing here asserts on time: exit 0
when every step worked, 1 when one failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from attach import (
    DOCKER_SOCK,
    BenchError,
    Engine,
    block_sizes,
    docker_alive,
    merge_floor,
    pick_image,
    run_floor,
)
from common import (
    NS_PER_MS,
    cpu_shares,
    cpu_times,
    daemon_facts,
    log,
    machine_facts,
    mem_available_mib,
    now_ns,
    rand_tag,
    run_on_simhost,
    settle,
    summary,
    teardown,
    write_json,
)

BIG, SMALL, REF = "scalebig", "scalesmall", "scaleref"
SMALL_SUBNET, REF_SUBNET = "10.211.0.0/24", "10.212.0.0/24"
REF_SIZE = 10  # endpoints on the reference network, whatever the big one holds
PROBE = "probe"
PORTS_OPTION = "com.netmgr.bridge.ports_per_bridge"  # drivers/bridge.py OPT_PORTS


def pb():
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2

    return netmgr_v1_netmgr_pb2


class Scale:
    """The simulated host's networks, the probe, the fill containers and the measurements."""

    def __init__(self, host, args) -> None:
        self.host, self.args = host, args
        self.client = host.client()
        self.bridge = ""  # the big network's bridge (nm-<id12>)
        self.fill: list[str] = []  # names of the fill containers, in run order
        self.fill_ms: list[float] = []  # ContainerRun latency of each, same order
        self.ref_bridge = ""  # the reference network's bridge
        self.floor_bridge = ""  # where the probe's veth goes on the big network (a shard, when sharded)
        self.conn = pb().ConnectRequest(network=BIG, container=PROBE)
        self.disc = pb().DisconnectRequest(network=BIG, container=PROBE)
        self.ref_conn = pb().ConnectRequest(network=REF, container=PROBE)
        self.ref_disc = pb().DisconnectRequest(network=REF, container=PROBE)
        self.prefix = args.subnet.split("/")[0].rsplit(".", 2)[0] + "."  # "10.210."

    def setup(self) -> None:
        p = pb()
        for name, subnet in ((BIG, self.args.subnet), (SMALL, SMALL_SUBNET), (REF, REF_SUBNET)):
            options = {}
            if name in (BIG, REF) and self.args.ports_per_bridge:  # both, so the two differ only in size
                options[PORTS_OPTION] = str(self.args.ports_per_bridge)
            resp = self.client.call("NetworkCreate", p.NetworkCreateRequest(name=name, driver="bridge", options=options,
                                                                            pools=[p.IPAMPool(subnet=subnet)]))
            if name == BIG:
                self.bridge = "nm-" + resp.id[:12]  # drivers/bridge.py bridge_name()
            elif name == REF:
                self.ref_bridge = "nm-" + resp.id[:12]
        self.client.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=PROBE, network=SMALL))
        for i in range(REF_SIZE):
            self.client.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=f"ref{i + 1:02d}", network=REF))
        if self.args.probe_no_ipv6:  # diagnostic: the probe's new interfaces send no IPv6 multicast
            from netmgr.runtime import netns

            doc = self.client.documents("ContainerInspect", p.Refs(refs=[PROBE]))[0]
            key = doc["NetworkSettings"]["SandboxKey"]
            for conf in ("all", "default"):
                netns.sysctl_write(key, f"net.ipv6.conf.{conf}.disable_ipv6", "1")

    def fill_to(self, size: int) -> dict:
        """Run containers on the big network until it holds ``size``; what that took."""
        p = pb()
        start, first, cpu0 = now_ns(), len(self.fill), cpu_times()
        while len(self.fill) < size:
            name = f"fill{len(self.fill) + 1:04d}"
            t0 = now_ns()
            self.client.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=name, network=BIG))
            self.fill_ms.append((now_ns() - t0) / NS_PER_MS)
            self.fill.append(name)
            if len(self.fill) % 100 == 0:
                log(f"bench: fill: {len(self.fill)} containers on {BIG}")
        added = self.fill_ms[first:]
        out = {"added": len(added), "wall_s": (now_ns() - start) / 1e9, "cpu": cpu_shares(cpu0, cpu_times())}
        if added:
            out["run"] = summary(added)
        return out

    def count_endpoints(self) -> int:
        doc = self.client.documents("NetworkInspect", pb().Refs(refs=[BIG]))[0]
        return len(doc.get("Containers") or {})

    def check_attached(self, want: bool) -> None:
        """Outside the timed path: the probe's record and its sandbox agree with ``want``."""
        doc = self.client.documents("ContainerInspect", pb().Refs(refs=[PROBE]))[0]
        settings = doc["NetworkSettings"]
        ep = settings["Networks"].get(BIG)
        if bool(ep) != want:
            raise BenchError(f"inspect {PROBE}: connected to {BIG} = {bool(ep)}, expected {want}")
        res = self.host.sh("nsenter", f"--net={settings['SandboxKey']}", "ip", "-o", "-4", "addr", "show")
        if res.rc != 0:
            raise BenchError(f"cannot look into the sandbox of {PROBE}: {res.err.strip()}")
        if want:
            ip, plen = ep["IPAddress"], ep["IPPrefixLen"]
            if not ip.startswith(self.prefix) or f" {ip}/{plen} " not in res.out:
                raise BenchError(f"{PROBE} has no {ip}/{plen} in its sandbox after connect:\n{res.out}")
        elif f" {self.prefix}" in res.out:
            raise BenchError(f"{PROBE} still has an address of {self.args.subnet} after disconnect:\n{res.out}")

    def probe_bridge(self) -> str:
        """The bridge the probe's veth is on now: the network's, or with shards the shard it went to."""
        doc = self.client.documents("ContainerInspect", pb().Refs(refs=[PROBE]))[0]
        veth = "veth" + doc["NetworkSettings"]["Networks"][BIG]["EndpointID"][:7]  # drivers/bridge.py veth_name()
        res = self.host.sh("ip", "-j", "link", "show", veth)
        if res.rc != 0:
            raise BenchError(f"cannot find the probe's veth {veth}: {res.err.strip()}")
        return json.loads(res.out)[0].get("master") or self.bridge

    def check(self, size: int) -> None:
        have = self.count_endpoints()
        if have != size:
            raise BenchError(f"{BIG} holds {have} endpoints, expected {size}")
        self.client.call("NetworkConnect", self.conn)
        self.check_attached(True)
        self.floor_bridge = self.probe_bridge()
        if self.count_endpoints() != size + 1:
            raise BenchError(f"{BIG} does not hold {size + 1} endpoints with the probe connected")
        self.client.call("NetworkDisconnect", self.disc)
        self.check_attached(False)

    def pairs(self, n: int, samples: dict | None, ref: dict | None) -> None:
        """``n`` connect/disconnect pairs on the big network, each next to one on the reference network.

        The two alternate (their order swapped every iteration), so both see the
        same machine and the same host-wide state (every container, namespace and
        process); only the size of the network attached to differs.
        """
        big = (self.conn, self.disc, samples)
        small = (self.ref_conn, self.ref_disc, ref)
        for i in range(n):
            for conn, disc, out in (big, small) if i % 2 == 0 else (small, big):
                t0 = now_ns()
                self.client.call("NetworkConnect", conn)
                t1 = now_ns()
                self.client.call("NetworkDisconnect", disc)
                t2 = now_ns()
                if out is not None:
                    out["connect"].append((t1 - t0) / NS_PER_MS)
                    out["disconnect"].append((t2 - t1) / NS_PER_MS)

    def close(self) -> None:
        self.client.close()


def with_pair(samples: dict) -> dict:
    out = {k: list(v) for k, v in samples.items()}
    out["pair"] = [c + d for c, d in zip(out["connect"], out["disconnect"])]
    return out


def bench_netmgr(host, base: str, args, results: dict) -> None:
    floor_ns_dir = os.path.join(base, "floor-ns")
    os.makedirs(floor_ns_dir, exist_ok=True)
    scale = Scale(host, args)
    try:
        scale.setup()
        blocks = block_sizes(args.runs, args.blocks)
        for size in args.sizes:
            log(f"bench: size {size}: filling {BIG} to {size} endpoints")
            fill = scale.fill_to(size)
            fill["daemon"] = daemon_facts(host.proc.pid if host.proc else None)
            fill["mem_available_mib"] = mem_available_mib()
            if args.settle > 0:
                fill["settle"] = settle(args.settle)
                log(f"bench: size {size}: machine quiet after {fill['settle']['seconds']:.0f} s"
                    if fill["settle"]["quiet"] else f"bench: size {size}: machine still busy after {args.settle} s")
            log(f"bench: size {size}: check, {args.warmup} warm-up + {args.runs} connect/disconnect "
                f"pairs alternating with floor.py in {len(blocks)} blocks")
            scale.check(size)
            scale.pairs(args.warmup, None, None)
            api, ref = {"connect": [], "disconnect": []}, {"connect": [], "disconnect": []}
            same, same_ref = {"connect": [], "disconnect": []}, {"connect": [], "disconnect": []}
            parts = []
            cpu0 = cpu_times()
            for n in blocks:
                scale.pairs(n, api, ref)
                if not args.no_floor:
                    parts.append(run_floor(host, n, args.warmup, floor_ns_dir))
                    got = run_same_bridge_floor(host, [scale.floor_bridge, scale.ref_bridge], n, SAME_BRIDGE_WARMUP,
                                                floor_ns_dir, args.probe_no_ipv6)
                    for out, key in ((same, scale.floor_bridge), (same_ref, scale.ref_bridge)):
                        out["connect"] += got[key]["connect"]
                        out["disconnect"] += got[key]["disconnect"]
            entry = {"size": size, "fill": fill, "api": with_pair(api), "ref": with_pair(ref),
                     "cpu": cpu_shares(cpu0, cpu_times())}
            entry["api_summary"] = {k: summary(v) for k, v in entry["api"].items()}
            entry["ref_summary"] = {k: summary(v) for k, v in entry["ref"].items()}
            if parts:
                entry["floor"] = merge_floor(parts)
                entry["same_bridge_floor"] = with_pair(same)
                entry["same_bridge_summary"] = {k: summary(v) for k, v in entry["same_bridge_floor"].items()}
                entry["ref_bridge_floor"] = with_pair(same_ref)
                entry["ref_bridge_summary"] = {k: summary(v) for k, v in entry["ref_bridge_floor"].items()}
            results["netmgr"].append(entry)
        log(f"bench: removing the last {args.rm_sample} containers through the API (timed); "
            "SimHost.down() removes the rest")
        results["fill_run_ms"] = scale.fill_ms
        results["teardown"] = teardown(scale.client, [PROBE] + scale.fill, args.rm_sample)
    finally:
        scale.close()


# -- the raw floor on the big network's own bridge ------------------------------------------------

SAME_BRIDGE_WARMUP = 2


def run_same_bridge_floor(host, bridges: list[str], runs: int, warmup: int, ns_dir: str, no_ipv6: bool) -> dict:
    """``scale.py --same-bridge-floor`` inside the host namespace: floor.py's raw steps on each of ``bridges``."""
    cmd = ["nsenter", f"--net={host.netns_path}", sys.executable, os.path.abspath(__file__), "--same-bridge-floor",
           ",".join(bridges), str(runs), str(warmup), ns_dir, "no-ipv6" if no_ipv6 else "ipv6"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise BenchError(f"same-bridge floor exited {proc.returncode}:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout)


def same_bridge_floor_main(bridges: list[str], runs: int, warmup: int, ns_dir: str, no_ipv6: bool) -> int:
    """floor.py's raw connect/disconnect, with the veth enslaved to existing bridges (netmgr's).

    Runs in the simulated host's namespace. A sandbox namespace of its own (under
    ``ns_dir``), the veth ``nmfs<6 hex>`` with its peer created in it as eth1
    (10.203.0.2/24, a subnet nothing else uses: only the kernel work matters), on
    each of ``bridges`` in turn (the order rotated every iteration), which are left
    as they were. Prints JSON samples (ms) per bridge.
    """
    import errno

    from floor import (
        NLM_F_CREATE,
        NLM_F_EXCL,
        PEER_ADDR,
        PEER_MAC,
        PEER_NAME,
        RTM_DELLINK,
        RTM_NEWADDR,
        RTM_NEWLINK,
        SUBNET_PLEN,
        RawNl,
    )
    from netmgr.runtime import netns

    tag = rand_tag()
    veth, sb_path = f"nmfs{tag}", os.path.join(ns_dir, f"nmf-sbb-{tag}")
    host = RawNl(RawNl.open())
    indexes = {bridge: host.link_index(bridge) for bridge in bridges}
    sb_handle = netns.create(sb_path)
    if no_ipv6:
        for conf in ("all", "default"):
            netns.sysctl_write(sb_path, f"net.ipv6.conf.{conf}.disable_ipv6", "1")
    sb = RawNl(netns.run_in(sb_path, RawNl.open))
    samples = {bridge: {"connect": [], "disconnect": []} for bridge in bridges}

    def connect(br_index: int) -> None:
        host.request((RawNl.veth_msg(veth, PEER_NAME, sb_handle.fd, PEER_MAC, br_index), RTM_NEWLINK,
                      NLM_F_CREATE | NLM_F_EXCL))
        index = sb.link_index(PEER_NAME)
        sb.request((RawNl.addr_msg(index, PEER_ADDR, SUBNET_PLEN), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL),
                   (RawNl.up_msg(index), RTM_NEWLINK, 0))

    def disconnect() -> None:
        host.request((RawNl.del_by_name_msg(veth), RTM_DELLINK, 0))

    try:
        for index in indexes.values():  # checked once, not timed: both ends exist
            connect(index)
            host.link_index(veth)
            sb.link_index(PEER_NAME)
            disconnect()
        for i in range(warmup + runs):
            turn = i % len(bridges)
            for bridge in bridges[turn:] + bridges[:turn]:
                t0 = now_ns()
                connect(indexes[bridge])
                t1 = now_ns()
                disconnect()
                t2 = now_ns()
                if i >= warmup:
                    samples[bridge]["connect"].append((t1 - t0) / NS_PER_MS)
                    samples[bridge]["disconnect"].append((t2 - t1) / NS_PER_MS)
    finally:
        try:
            disconnect()
        except OSError as exc:
            if exc.errno not in (errno.ENODEV, errno.ENOENT):
                raise
        host.sock.close()
        sb.sock.close()
        sb_handle.close()
        netns.remove(sb_path)
    print(json.dumps(samples))
    return 0


# -- Docker ----------------------------------------------------------------------------------------


def bench_docker(tag: str, args) -> dict | str:
    """The same sizes with Docker's Engine API; samples, or why it was skipped."""
    engine = Engine()
    nets: list[str] = []
    cids: list[str] = []
    try:
        image = pick_image(engine.call("GET", "/images/json"))
        if image is None:
            return "no local image to run a container from"
        for suffix in ("big", "small"):
            nets.append(engine.call("POST", "/networks/create", {"Name": f"nmb-{tag}-{suffix}", "Driver": "bridge",
                                                                 "CheckDuplicate": True})["Id"])

        def run(name: str, net: str) -> str:
            ctr = engine.call("POST", f"/containers/create?name={urllib.parse.quote(name)}", {
                "Image": image, "Entrypoint": ["sleep"], "Cmd": ["3600"], "HostConfig": {"NetworkMode": net}})
            cids.append(ctr["Id"])
            engine.call("POST", f"/containers/{ctr['Id']}/start")
            return ctr["Id"]

        probe = run(f"nmb-{tag}-probe", nets[1])
        out: dict = {"image": image, "sizes": []}
        filled = 0
        for size in args.sizes:
            start = now_ns()
            while filled < size:
                filled += 1
                run(f"nmb-{tag}-f{filled}", nets[0])
            fill_s = (now_ns() - start) / 1e9
            samples = {"connect": [], "disconnect": []}
            for i in range(args.warmup + args.runs):
                t0 = now_ns()
                engine.call("POST", f"/networks/{nets[0]}/connect", {"Container": probe})
                t1 = now_ns()
                engine.call("POST", f"/networks/{nets[0]}/disconnect", {"Container": probe, "Force": False})
                t2 = now_ns()
                if i >= args.warmup:
                    samples["connect"].append((t1 - t0) / NS_PER_MS)
                    samples["disconnect"].append((t2 - t1) / NS_PER_MS)
            out["sizes"].append({"size": size, "fill_s": fill_s, "samples": with_pair(samples)})
        return out
    except BenchError as exc:
        return f"failed: {exc}"
    finally:
        for cid in cids:
            try:
                engine.call("DELETE", f"/containers/{cid}?force=1&v=1")
            except (OSError, BenchError, http.client.HTTPException) as exc:
                log(f"docker cleanup: container {cid[:12]}: {exc}")
        for net_id in nets:
            try:
                engine.call("DELETE", f"/networks/{net_id}")
            except (OSError, BenchError, http.client.HTTPException) as exc:
                log(f"docker cleanup: network {net_id[:12]}: {exc}")
        engine.close()


# -- report ----------------------------------------------------------------------------------------


def floor_med(entry: dict, step: str) -> float | None:
    try:
        return entry["floor"]["variants"]["raw"]["summary"][step]["median_ms"]
    except KeyError:
        return None


def verdicts(results: dict) -> dict:
    out: dict = {}
    by_size = {e["size"]: e for e in results.get("netmgr", [])}
    if by_size:
        largest = max(by_size)
        base = 10 if 10 in by_size else min(by_size)
        if largest != base:
            big, small = by_size[largest]["api_summary"]["connect"], by_size[base]["api_summary"]["connect"]
            ratio = big["p95_ms"] / small["p95_ms"]
            out["flat"] = {"what": f"API connect p95 at {largest} / p95 at {base}", "ratio": ratio, "limit": 1.2,
                           "met": ratio <= 1.2, "median_ratio": big["median_ms"] / small["median_ms"]}
        floor = {}
        for size, e in by_size.items():
            fm = floor_med(e, "connect")
            if fm:
                r = e["api_summary"]["connect"]["median_ms"] / fm
                floor[str(size)] = {"ratio": r, "met": r <= 2.0}
        if floor:
            out["floor"] = {"what": "API connect median / raw floor connect median, per size", "limit": 2.0,
                            "per_size": floor}
        out["interleaved"] = {str(size): interleaved(e) for size, e in by_size.items() if "ref_summary" in e}
    return out


def interleaved(e: dict) -> dict:
    """The big network against the reference one, measured alternately in the same blocks.

    ``api``: p95 and median ratios of API connect; ``kernel``: the same for the raw
    steps on the two bridges; ``own_ms``: netmgr's own share (API median − same-bridge
    raw median) on each network, i.e. what netmgr adds on top of the kernel.
    """
    big, ref = e["api_summary"]["connect"], e["ref_summary"]["connect"]
    out = {"api": {"p95": big["p95_ms"] / ref["p95_ms"], "median": big["median_ms"] / ref["median_ms"]}}
    kb, kr = e.get("same_bridge_summary", {}).get("connect"), e.get("ref_bridge_summary", {}).get("connect")
    if kb and kr:
        out["kernel"] = {"p95": kb["p95_ms"] / kr["p95_ms"], "median": kb["median_ms"] / kr["median_ms"],
                         "added_median_ms": kb["median_ms"] - kr["median_ms"]}
        out["own_ms"] = {"big": big["median_ms"] - kb["median_ms"], "ref": ref["median_ms"] - kr["median_ms"]}
    return out


def render(results: dict) -> str:
    facts = results["facts"]
    lines = [
        (f"machine: kernel {facts['kernel']}, {facts['cpu_count']} CPUs ({facts['cpu_model']}), "
         f"Python {facts['python']}, pyroute2 {facts['pyroute2']}"),
        (f"per size: {results['warmup']} warm-up + {results['runs']} connect/disconnect pairs of the probe to "
         f"{BIG} ({results['subnet']}), alternating with floor.py in {results['blocks']} blocks"
         + ("; IPv6 disabled in the probe's sandbox (--probe-no-ipv6)" if results.get("probe_no_ipv6") else "")
         + (f"; {BIG} and {REF} sharded: {results['ports_per_bridge']} ports per bridge"
            if results.get("ports_per_bridge") else "")),
        ("p95 = nearest rank; floor raw = floor.py's raw steps on a bridge of its own (no other ports); "
         "same bridge = the same raw steps on the big network's bridge (with all its endpoints); x = API median / that median"),
        "",
        (f"{'endpoints':>9} {'step':<11} {'n':>4} {'median ms':>10} {'p95 ms':>8} {'raw med':>8} {'raw p95':>8} "
        f"{'x raw':>6} {'same-br med':>12} {'same-br p95':>12} {'x same':>7}"),
    ]
    nan = float("nan")
    for e in results.get("netmgr", []):
        for step in ("connect", "disconnect", "pair"):
            s = e["api_summary"][step]
            fm = floor_med(e, step)
            fp = e["floor"]["variants"]["raw"]["summary"][step]["p95_ms"] if fm else None
            sb = e.get("same_bridge_summary", {}).get(step)
            lines.append(f"{e['size']:>9} {step:<11} {s['n']:>4} {s['median_ms']:>10.2f} {s['p95_ms']:>8.2f} "
                         f"{fm if fm is not None else nan:>8.2f} {fp if fp is not None else nan:>8.2f} "
                         f"{(s['median_ms'] / fm) if fm else nan:>6.2f} "
                         f"{sb['median_ms'] if sb else nan:>12.2f} {sb['p95_ms'] if sb else nan:>12.2f} "
                         f"{(s['median_ms'] / sb['median_ms']) if sb else nan:>7.2f}")
    lines += ["", (f"{'fill to':>9} {'runs':>5} {'wall s':>7} {'run med ms':>11} {'run p95 ms':>11} "
                  f"{'softirq':>8} {'settle s':>9} {'daemon fds':>11} {'RSS MiB':>8} {'measured at softirq':>20}")]
    for e in results.get("netmgr", []):
        f = e["fill"]
        run = f.get("run")
        d = f.get("daemon", {})
        st = f.get("settle")
        settled = "-" if not st else f"{st['seconds']:.0f}" + ("" if st["quiet"] else "+")
        lines.append(f"{e['size']:>9} {f['added']:>5} {f['wall_s']:>7.1f} "
                     f"{run['median_ms'] if run else float('nan'):>11.2f} "
                     f"{run['p95_ms'] if run else float('nan'):>11.2f} {f['cpu']['softirq'] * 100:>7.0f}% "
                     f"{settled:>9} {d.get('fds', '-'):>11} {d.get('rss_mib', '-'):>8} "
                     f"{e['cpu']['softirq'] * 100:>19.0f}%")
    if any("ref_summary" in e for e in results.get("netmgr", [])):
        lines += ["", (f"interleaved with the reference network ({REF}, {REF_SIZE} endpoints; the same probe, "
                       "alternating pair by pair, and the raw steps alternating between the two bridges):"),
                  (f"{'endpoints':>9} {'ref med':>8} {'ref p95':>8} {'big/ref p95':>12} {'big/ref med':>12} "
                   f"{'kernel p95':>11} {'kernel med':>11} {'kernel +ms':>11} {'own ms ref':>11} {'own ms big':>11}")]
        for e in results.get("netmgr", []):
            if "ref_summary" not in e:
                continue
            r, it = e["ref_summary"]["connect"], interleaved(e)
            k, own = it.get("kernel"), it.get("own_ms")
            lines.append(f"{e['size']:>9} {r['median_ms']:>8.2f} {r['p95_ms']:>8.2f} {it['api']['p95']:>12.2f} "
                         f"{it['api']['median']:>12.2f} {k['p95'] if k else nan:>11.2f} "
                         f"{k['median'] if k else nan:>11.2f} {k['added_median_ms'] if k else nan:>11.2f} "
                         f"{own['ref'] if own else nan:>11.2f} {own['big'] if own else nan:>11.2f}")
    fill = results.get("fill_run_ms") or []
    if len(fill) >= 40:
        head, tail = fill[:20], fill[-20:]
        lines.append(f"ContainerRun on {BIG}: runs 1-20 median {statistics.median(head):.2f} ms, runs "
                     f"{len(fill) - 19}-{len(fill)} median {statistics.median(tail):.2f} ms")
    lines.append("")
    v = results.get("verdict", {})
    if "flat" in v:
        f = v["flat"]
        verdict = "met" if f["met"] else "NOT met"
        lines.append(f"flatness: {f['what']} = {f['ratio']:.2f} (target <= 1.20: {verdict}); "
                     f"medians: {f['median_ratio']:.2f}")
    if v.get("interleaved"):
        size = max(v["interleaved"], key=int)
        it = v["interleaved"][size]
        line = (f"interleaved flatness: API connect p95 on {size} endpoints / on {REF_SIZE}, same blocks = "
                f"{it['api']['p95']:.2f} (medians {it['api']['median']:.2f})")
        if "kernel" in it:
            line += (f"; the kernel's raw steps alone: {it['kernel']['p95']:.2f} (medians {it['kernel']['median']:.2f},"
                     f" +{it['kernel']['added_median_ms']:.2f} ms); netmgr's own share: {it['own_ms']['ref']:.2f} ms "
                     f"on {REF_SIZE}, {it['own_ms']['big']:.2f} ms on {size}")
        lines.append(line)
    if "floor" in v:
        parts = ", ".join(f"{size}: {x['ratio']:.2f}" for size, x in v["floor"]["per_size"].items())
        met = all(x["met"] for x in v["floor"]["per_size"].values())
        lines.append(f"x floor: API connect median / raw floor connect median = {parts} "
                     f"(target <= 2.00: {'met' if met else 'NOT met'})")
    td = results.get("teardown")
    if td and td["removed"]:
        lines.append(f"teardown: ContainerRemove(force) of the last {td['removed']} containers: "
                     f"{td['seconds'] * 1000 / td['removed']:.1f} ms each; SimHost.down() removed the other "
                     f"{td['left_to_down']}")
    docker = results.get("docker")
    if isinstance(docker, str):
        lines.append(f"docker: {docker}")
    elif isinstance(docker, dict):
        lines.append(f"docker: image {docker['image']}, Engine API over {DOCKER_SOCK}")
        for e in docker["sizes"]:
            c, d = summary(e["samples"]["connect"]), summary(e["samples"]["disconnect"])
            lines.append(f"  docker {e['size']:>5} endpoints: connect median {c['median_ms']:.2f} p95 "
                         f"{c['p95_ms']:.2f} ms, disconnect median {d['median_ms']:.2f} p95 {d['p95_ms']:.2f} ms "
                         f"(fill {e['fill_s']:.1f} s)")
    for problem in results.get("problems", []):
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--same-bridge-floor"]:  # the child run by run_same_bridge_floor()
        return same_bridge_floor_main(argv[1].split(","), int(argv[2]), int(argv[3]), argv[4], argv[5] == "no-ipv6")
    ap = argparse.ArgumentParser(description="netmgr scale benchmark (attach latency vs network size)")
    ap.add_argument("--sizes", default="1,10,100,1000",
                    help="endpoints on the big network at each step, increasing (default 1,10,100,1000)")
    ap.add_argument("--runs", type=int, default=50, help="measured connect/disconnect pairs per size (default 50)")
    ap.add_argument("--warmup", type=int, default=5,
                    help="uncounted pairs per size, and per floor block (default 5)")
    ap.add_argument("--blocks", type=int, default=5, help="API and floor alternate in this many blocks (default 5)")
    ap.add_argument("--subnet", default="10.210.0.0/16", help="subnet of the big network (default 10.210.0.0/16)")
    ap.add_argument("--settle", type=float, default=60,
                    help="after each fill, wait up to this many seconds for the machine to be quiet "
                         "(default 60; 0: no wait)")
    ap.add_argument("--probe-no-ipv6", action="store_true",
                    help="diagnostic: disable IPv6 in the probe's sandbox (and the same-bridge floor's), so its "
                         "interfaces send no IPv6 multicast onto the big bridge")
    ap.add_argument("--ports-per-bridge", type=int, default=0, metavar="N",
                    help="create the big and the reference network with -o com.netmgr.bridge.ports_per_bridge=N "
                         "(shard bridges of N ports; default 0: one bridge, Docker's layout)")
    ap.add_argument("--rm-sample", type=int, default=50,
                    help="at the end, remove this many containers through the API, timed (default 50)")
    ap.add_argument("--no-floor", action="store_true", help="skip floor.py (no ratios)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample and summary to FILE")
    ap.add_argument("--docker", action="store_true", help="also time Docker's Engine API, if it is running")
    args = ap.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error("--sizes takes comma-separated integers")
    limit = 1022 if not args.ports_per_bridge else 4000  # shards lift the bridge's 1023 ports; the /16 remains
    if not args.sizes or args.sizes != sorted(set(args.sizes)) or args.sizes[0] < 0 or args.sizes[-1] > limit:
        ap.error(f"--sizes must be increasing, distinct and 0..{limit} (a Linux bridge has at most 1023 ports, "
                 "one is the probe's; more with --ports-per-bridge)")
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, bridges)")

    results: dict = {"facts": machine_facts(), "sizes": args.sizes, "runs": args.runs, "warmup": args.warmup,
                     "blocks": len(block_sizes(args.runs, args.blocks)), "subnet": args.subnet, "netmgr": [],
                     "probe_no_ipv6": args.probe_no_ipv6, "ports_per_bridge": args.ports_per_bridge,
                     "problems": [], "percentile": "p95 nearest-rank: ceil(0.95*n)-th smallest sample"}
    rc = run_on_simhost("nmb", lambda host, base: bench_netmgr(host, base, args, results), results, fast_down=True)
    if rc == 0:
        if args.docker and docker_alive():
            log(f"bench: docker at sizes {args.sizes}")
            results["docker"] = bench_docker(rand_tag(), args)
        else:
            results["docker"] = "not running, skipped" if args.docker else "not requested (--docker), skipped"
    if rc == 130:
        return rc
    results["verdict"] = verdicts(results)
    if results["netmgr"]:
        print(render(results))
    write_json(args.json, results)
    return rc


if __name__ == "__main__":
    sys.exit(main())
