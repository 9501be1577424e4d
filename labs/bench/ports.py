"""Ports benchmark: publish 1000 ports one by one (``run -p 20000+i:80``), next to the same runs without -p.

    sudo .venv/bin/python labs/bench/ports.py [--count 1000] [--window 20] [--json FILE]

One simulated host (``netmgr.labhost.SimHost``), always torn down at the end
(also on Ctrl-C or SIGTERM). In it: two twin bridge networks, ``pubnet``
(``--subnet``, default 10.212.0.0/16) and ``nopnet`` (10.213.0.0/16). Then,
for i = 0 .. count-1, a pair of ``ContainerRun`` calls through the API:

* ``pub-NNNN`` on pubnet with one published port,
  ``PortMapping(container_port=80, protocol="tcp", host_port=20000+i)``
  (``-p 20000+i:80``);
* ``nop-NNNN`` on nopnet, the same run without a port (the matching batch);

the two in alternating order (with-port first on even i), so at every point
both networks hold the same number of containers on the same machine. (One
network cannot hold both batches: a Linux bridge has at most 1023 ports, the
1024th veth fails with EXFULL.) Every run is timed on its own. The per-port
cost at the 1st, 10th, 100th and 1000th port is median(with) -
median(without) over ``--window`` pairs centred on that point (clamped at
the ends: the windows of the 1st and the 10th are the same first pairs; the
single runs are shown too).

Around it:

* warm-up: ``--warmup`` runs with and without a port on a third network
  (``pubwarm``, 10.209.0.0/24), removed again before the measured loop (first-use costs stay out);
* nftables: ``nft -j list table inet netmgr`` in the host namespace before the
  loop and after it: the number of rules must stay the same, only the
  elements of the ``dnat4``/``dport4`` maps grow;
* spot check: the first and the last pair (and only those) run a tiny TCP
  server on port 80 instead of ``sleep`` (``/usr/bin/python3 -c ...``,
  answering its own name); after the loop, 127.0.0.1:20000 and
  127.0.0.1:<20000+count-1> (and the network's gateway address) are
  connected to from the host namespace and must answer with the right name.

Nothing here asserts on time: exit 0 when every step worked, 1 when one
failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from attach import BenchError
from common import (
    NS_PER_MS,
    daemon_facts,
    log,
    machine_facts,
    mem_available_mib,
    now_ns,
    remove_containers,
    run_on_simhost,
    settle,
    summary,
    teardown,
    window,
    write_json,
)

NET, NOP_NET, WARM_NET = "pubnet", "nopnet", "pubwarm"
NOP_SUBNET, WARM_SUBNET = "10.213.0.0/16", "10.209.0.0/24"
MAX_BRIDGE_PORTS = 1023  # a Linux bridge numbers its ports with 10 bits: the 1024th gets EXFULL"
POINTS = (1, 10, 100, 1000)
SERVER = (
    "import socket,sys\n"
    "s=socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',80))\n"
    "s.listen(16)\n"
    "while True:\n"
    "    c,_=s.accept()\n"
    "    c.sendall(sys.argv[1].encode()+b'\\n')\n"
    "    c.close()\n"
)


def pb():
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2

    return netmgr_v1_netmgr_pb2


def server_python() -> str:
    """The interpreter the spot-check servers run (the containers see the host's file system)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def nft_counts(host) -> dict:
    """Rules, sets/maps and elements of ``inet netmgr`` in the host namespace."""
    res = host.sh("nft", "-j", "list", "table", "inet", "netmgr")
    if res.rc != 0:
        raise BenchError(f"nft list table inet netmgr failed: {res.err.strip()}")
    items = json.loads(res.out)["nftables"]
    out = {"rules": 0, "chains": 0, "elements": {}}
    for item in items:
        if "rule" in item:
            out["rules"] += 1
        elif "chain" in item:
            out["chains"] += 1
        for kind in ("set", "map"):
            if kind in item:
                out["elements"][item[kind]["name"]] = len(item[kind].get("elem") or [])
    return out


def tcp_ask(host, addr: str, port: int, deadline_s: float = 10.0) -> str:
    """Connect from the host namespace to addr:port and read one line (retrying until the server listens)."""
    from netmgr.runtime import netns

    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        sock = netns.run_in(host.netns_path, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.settimeout(2.0)
        try:
            sock.connect((addr, port))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
            if data:
                return data.decode(errors="replace").strip()
            last = "connection closed without an answer"
        except OSError as exc:
            last = str(exc)
        finally:
            sock.close()
        time.sleep(0.1)
    raise BenchError(f"{addr}:{port} from the host namespace: no answer within {deadline_s:.0f} s ({last})")


def run_ctr(client, name: str, net: str, port: int | None, serve: bool) -> float:
    p = pb()
    argv = [server_python(), "-I", "-S", "-c", SERVER, name] if serve else ["sleep", "3600"]
    ports = [p.PortMapping(container_port=80, protocol="tcp", host_port=port)] if port is not None else []
    req = p.RunRequest(argv=argv, name=name, network=net, ports=ports)
    t0 = now_ns()
    client.call("ContainerRun", req)
    return (now_ns() - t0) / NS_PER_MS


def bench(host, args, results: dict) -> None:
    p = pb()
    client = host.client()
    made: list[str] = []
    try:
        for name, subnet in ((NET, args.subnet), (NOP_NET, NOP_SUBNET), (WARM_NET, WARM_SUBNET)):
            client.call("NetworkCreate", p.NetworkCreateRequest(name=name, driver="bridge",
                                                                pools=[p.IPAMPool(subnet=subnet)]))
        if args.warmup:
            log(f"bench: warm-up: {args.warmup} runs with and without a port on {WARM_NET}, then removed")
            warm = []
            for i in range(args.warmup):
                run_ctr(client, f"warmp-{i}", WARM_NET, args.base_port - 1000 + i, False)
                run_ctr(client, f"warmn-{i}", WARM_NET, None, False)
                warm += [f"warmp-{i}", f"warmn-{i}"]
            remove_containers(client, warm)
        results["nft_before"] = nft_counts(host)
        with_ms: list[float] = []
        without_ms: list[float] = []
        # before the window of each point (pairs lo..hi), let the machine settle: see README
        quiet_before = {window(range(args.count), k, args.window)[0] - 1 for k in POINTS if k <= args.count} - {0}
        results["settles"] = []
        log(f"bench: {args.count} pairs of runs: -p {args.base_port}+i:80 on {NET}, without -p on {NOP_NET}")
        start = now_ns()
        for i in range(args.count):
            if i in quiet_before and args.settle > 0:
                st = settle(args.settle)
                results["settles"].append({"before_pair": i + 1, "seconds": st["seconds"], "quiet": st["quiet"],
                                           "softirq_first_s": st["samples"][0]["softirq"]})
                log(f"bench: before pair {i + 1}: machine quiet after {st['seconds']:.0f} s" if st["quiet"]
                    else f"bench: before pair {i + 1}: machine still busy after {args.settle} s")
            serve = i in (0, args.count - 1)
            pub, nop = f"pub-{i + 1:04d}", f"nop-{i + 1:04d}"
            if i % 2 == 0:
                with_ms.append(run_ctr(client, pub, NET, args.base_port + i, serve))
                made.append(pub)
                without_ms.append(run_ctr(client, nop, NOP_NET, None, serve))
                made.append(nop)
            else:
                without_ms.append(run_ctr(client, nop, NOP_NET, None, serve))
                made.append(nop)
                with_ms.append(run_ctr(client, pub, NET, args.base_port + i, serve))
                made.append(pub)
            if (i + 1) % 100 == 0:
                log(f"bench: {i + 1} pairs")
        results["loop_wall_s"] = (now_ns() - start) / 1e9
        results["with_port_ms"], results["without_port_ms"] = with_ms, without_ms
        results["daemon"] = daemon_facts(host.proc.pid if host.proc else None)
        results["mem_available_mib_after"] = mem_available_mib()
        results["nft_after"] = nft_counts(host)
        log("bench: spot checks from the host namespace")
        gateway = client.documents("NetworkInspect", p.Refs(refs=[NET]))[0]["IPAM"]["Config"][0]["Gateway"]
        checks = []
        for i in (0, args.count - 1):
            want = f"pub-{i + 1:04d}"
            for addr in ("127.0.0.1", gateway):
                t0 = time.monotonic()
                got = tcp_ask(host, addr, args.base_port + i)
                checks.append({"addr": addr, "port": args.base_port + i, "want": want, "got": got,
                               "ok": got == want, "seconds": round(time.monotonic() - t0, 3)})
                if got != want:
                    results["problems"].append(f"{addr}:{args.base_port + i} answered {got!r}, expected {want!r}")
        results["spot_checks"] = checks
        log(f"bench: removing the last {args.rm_sample} containers through the API (timed); "
            "SimHost.down() removes the rest")
        results["teardown"] = teardown(client, made, args.rm_sample)
        results["nft_after_rm"] = nft_counts(host)
        if any(not c["ok"] for c in checks):
            raise BenchError("a published port did not answer as expected (see problems)")
    finally:
        client.close()


# -- report ----------------------------------------------------------------------------------------


def analyse(results: dict, width: int) -> dict:
    with_ms, without_ms = results["with_port_ms"], results["without_port_ms"]
    n = len(with_ms)
    points = []
    for k in POINTS:
        if k > n:
            continue
        lo, hi = window(with_ms, k, width)
        w, wo = with_ms[lo - 1:hi], without_ms[lo - 1:hi]
        points.append({
            "point": k, "with_ms": with_ms[k - 1], "without_ms": without_ms[k - 1], "window": [lo, hi],
            "with_median_ms": statistics.median(w), "without_median_ms": statistics.median(wo),
            "port_cost_ms": statistics.median(w) - statistics.median(wo),
            "paired_diff_median_ms": statistics.median([a - b for a, b in zip(w, wo)]),
        })
    return {"points": points, "with": summary(with_ms), "without": summary(without_ms),
            "port_cost_all_ms": statistics.median(with_ms) - statistics.median(without_ms)}


def render(results: dict) -> str:
    facts = results["facts"]
    a = results["analysis"]
    nb, na = results["nft_before"], results["nft_after"]
    lines = [
        (f"machine: kernel {facts['kernel']}, {facts['cpu_count']} CPUs ({facts['cpu_model']}), "
         f"Python {facts['python']}"),
        (f"{results['count']} pairs of ContainerRun: -p {results['base_port']}+i:80 on {NET} "
         f"({results['subnet']}), "
         f"no -p on {NOP_NET} ({NOP_SUBNET}), alternating; {results['warmup']} warm-up pairs elsewhere first; "
         f"loop {results['loop_wall_s']:.1f} s"),
        (f"port cost = median(with -p) - median(without) over the {results['window']} pairs around each point "
         "(window, 1-based pair numbers); paired = median of (with - without) per pair; p95 = nearest rank"),
        "",
        (f"{'port #':>6} {'with ms':>8} {'w/o ms':>8} {'window':>10} {'with med':>9} {'w/o med':>8} "
        f"{'port cost':>10} {'paired':>7}"),
    ]
    for pt in a["points"]:
        win = f"{pt['window'][0]}-{pt['window'][1]}"
        lines.append(f"{pt['point']:>6} {pt['with_ms']:>8.2f} {pt['without_ms']:>8.2f} {win:>10} "
                     f"{pt['with_median_ms']:>9.2f} {pt['without_median_ms']:>8.2f} {pt['port_cost_ms']:>10.2f} "
                     f"{pt['paired_diff_median_ms']:>7.2f}")
    lines += ["", f"{'all runs':<22} {'n':>5} {'median ms':>10} {'p95 ms':>9} {'min':>7} {'max':>8}"]
    for label, s in (("run with -p", a["with"]), ("run without -p", a["without"])):
        lines.append(f"{label:<22} {s['n']:>5} {s['median_ms']:>10.2f} {s['p95_ms']:>9.2f} {s['min_ms']:>7.2f} "
                     f"{s['max_ms']:>8.2f}")
    lines.append(f"port cost over all pairs (difference of medians): {a['port_cost_all_ms']:.2f} ms")
    lines.append("")
    el_b, el_a = nb["elements"], na["elements"]
    lines.append(f"nftables inet netmgr: rules {nb['rules']} before -> {na['rules']} after "
                 f"({'unchanged' if nb['rules'] == na['rules'] else 'GREW'}); "
                 f"chains {nb['chains']} -> {na['chains']}; "
                 f"elements dnat4 {el_b.get('dnat4', 0)} -> {el_a.get('dnat4', 0)}, "
                 f"dport4 {el_b.get('dport4', 0)} -> {el_a.get('dport4', 0)}")
    after_rm, td = results.get("nft_after_rm"), results.get("teardown")
    if after_rm and td:
        el = after_rm["elements"]
        lines.append(f"after removing {td['removed']} of the containers through the API: "
                     f"rules {after_rm['rules']}, dnat4 {el.get('dnat4', 0)}, dport4 {el.get('dport4', 0)} "
                     "elements")
    for c in results.get("spot_checks", []):
        lines.append(f"spot check: {c['addr']}:{c['port']} from the host namespace -> {c['got']!r} "
                     f"({'ok' if c['ok'] else 'WRONG'}, {c['seconds']:.2f} s incl. waiting for the server)")
    d = results.get("daemon", {})
    if d:
        lines.append(f"daemon with {2 * results['count']} containers: {d.get('fds')} fds (soft limit "
                     f"{d.get('nofile_soft')}), {d.get('rss_mib')} MiB RSS, {d.get('threads')} threads; "
                     f"machine MemAvailable {results.get('mem_available_mib_before')} -> "
                     f"{results.get('mem_available_mib_after')} MiB")
    if td and td["removed"]:
        lines.append(f"teardown: ContainerRemove(force) of the last {td['removed']} containers: "
                     f"{td['seconds'] * 1000 / td['removed']:.1f} ms each; SimHost.down() removed the other "
                     f"{td['left_to_down']}")
    for st in results.get("settles", []):
        lines.append(f"before pair {st['before_pair']}: waited {st['seconds']:.0f} s for the machine to be quiet "
                     f"(softirq {st['softirq_first_s'] * 100:.0f}% of the CPU time in the first second"
                     f"{'' if st['quiet'] else ', still busy at the limit'})")
    for problem in results.get("problems", []):
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="netmgr ports benchmark (publish ports one by one)")
    ap.add_argument("--count", type=int, default=1000, help="containers with a published port (default 1000)")
    ap.add_argument("--window", type=int, default=20, help="pairs per median around each point (default 20)")
    ap.add_argument("--warmup", type=int, default=5, help="uncounted pairs on another network first (default 5)")
    ap.add_argument("--base-port", type=int, default=20000, help="first host port (default 20000)")
    ap.add_argument("--subnet", default="10.212.0.0/16", help="the network's subnet (default 10.212.0.0/16)")
    ap.add_argument("--settle", type=float, default=60,
                    help="before the window of each point, wait up to this many seconds for the machine "
                         "to be quiet "
                         "(default 60; 0: no wait)")
    ap.add_argument("--rm-sample", type=int, default=50,
                    help="at the end, remove this many containers through the API, timed (default 50)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample and summary to FILE")
    args = ap.parse_args(argv)
    if not 2 <= args.count <= MAX_BRIDGE_PORTS or args.window < 1:
        ap.error(f"--count must be 2..{MAX_BRIDGE_PORTS} (a bridge's port limit) and --window >= 1")
    if not (1024 <= args.base_port - 1000 and args.base_port + args.count <= 65536):
        ap.error("--base-port: base-1000 .. base+count must be within 1024..65535")
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, bridges)")
    results: dict = {"facts": machine_facts(), "count": args.count, "window": args.window, "warmup": args.warmup,
                     "base_port": args.base_port, "subnet": args.subnet, "problems": [],
                     "mem_available_mib_before": mem_available_mib(),
                     "percentile": "p95 nearest-rank: ceil(0.95*n)-th smallest sample"}
    rc = run_on_simhost("nmb", lambda host, base: bench(host, args, results), results, fast_down=True)
    if rc == 130:
        return rc
    if results.get("with_port_ms") and len(results["with_port_ms"]) == args.count:
        results["analysis"] = analyse(results, args.window)
        print(render(results))
    write_json(args.json, results)
    return rc


if __name__ == "__main__":
    sys.exit(main())
