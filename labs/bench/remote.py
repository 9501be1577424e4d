"""Remote-driver benchmark: attach latency through a gRPC plugin next to the built-in bridge, same run.

    sudo .venv/bin/python labs/bench/remote.py [--runs 50] [--warmup 5] [--blocks 5] [--json FILE]

One simulated host (``netmgr.labhost.SimHost``: its own namespace and
netmgrd, started with ``--plugin-dir``), always torn down at the end (also
on Ctrl-C or SIGTERM). In it: the macvlan plugin of ``labs/plugins/macvlan``
(a separate process, on its unix socket, in the host's namespace), a veth
pair as the macvlan parent, a container ``bench1`` on the bridge network
``benchnet1``, and three more networks:

* ``benchbr`` (built-in bridge, 10.212.0.0/24);
* ``benchmv`` (the remote macvlan driver, 10.213.0.0/24, ``-o parent=…``): the
  plugin creates each macvlan directly in the sandbox (``created_in_sandbox``);
* ``benchmvm`` (the same plugin run with ``--move``, 10.214.0.0/24): it creates
  them in the host namespace and netmgr moves them, libnetwork's way.

Measured through one gRPC channel to the daemon (``netmgr.client.Client``):
``NetworkConnect`` and ``NetworkDisconnect`` of bench1 to/from each network.
The drivers alternate in ``--blocks`` blocks (in order in even blocks,
reversed in odd ones), so a busy spell of the machine does not land on one
side only. Every sample is one call's wall-clock time; medians
are ``statistics.median``, p95 is nearest-rank (``common.p95``). Ratios are
remote / bridge. Nothing asserts on time: the script reports.

Where the difference comes from: the bridge driver creates each veth with its
peer already in the sandbox (~1 ms of kernel work) inside the daemon; a
remote driver adds the plugin's gRPC round trips (CreateEndpoint, Join,
ProgramExternalConnectivity: ~1.5 ms each here) and the plugin's own netlink
work (pyroute2's IPRoute: several ms). With ``--move`` netmgr also moves the
interface between namespaces, which waits for an RCU grace period (~15-20 ms,
see shared/architecture.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from common import log, machine_facts, ms_since, now_ns, p95, run_on_simhost, summary, write_json

from netmgr.testing.procs import PluginProc

MACVLAN = os.path.join(ROOT, "labs", "plugins", "macvlan", "plugin.py")
PLUGINS = {"benchmv": (), "benchmvm": ("--move",)}
NETS = {"bridge": "benchbr", "remote": "benchmv", "remote_move": "benchmvm"}


def start_plugin(host, plugin_dir: str, name: str, extra: tuple[str, ...]) -> PluginProc:
    """The macvlan plugin process in the simulated host's namespace (stopped by pid)."""
    argv = [sys.executable, MACVLAN, "--plugin-dir", plugin_dir, "--name", name, "--log-level", "warning", *extra]
    return PluginProc(argv, host.netns_path, os.path.join(plugin_dir, f"{name}.sock"),
                      os.path.join(plugin_dir, f"{name}.log"), cwd=ROOT).start()


def cli(host, *args: str) -> str:
    res = host.cli(*args)
    if res.rc != 0:
        raise RuntimeError(f"`netmgr {' '.join(args)}` exited {res.rc}: {res.err.strip()}")
    return res.out


def setup(host, plugin_dir: str) -> list[PluginProc]:
    """Restart the daemon with --plugin-dir, start the plugin, create the networks and the container."""
    host.stop_daemon()
    host.daemon_args = tuple(host.daemon_args) + ("--plugin-dir", plugin_dir)
    host.start_daemon()
    for args in (("ip", "link", "add", "nmb-par0", "type", "veth", "peer", "name", "nmb-par1"),
                 ("ip", "link", "set", "nmb-par0", "up"), ("ip", "link", "set", "nmb-par1", "up")):
        res = host.sh(*args)
        if res.rc != 0:
            raise RuntimeError(f"{' '.join(args)}: {res.err.strip()}")
    plugins = [start_plugin(host, plugin_dir, name, extra) for name, extra in PLUGINS.items()]
    cli(host, "network", "create", "--subnet", "10.211.0.0/24", "benchnet1")
    cli(host, "network", "create", "--subnet", "10.212.0.0/24", NETS["bridge"])
    for name, subnet in (("benchmv", "10.213.0.0/24"), ("benchmvm", "10.214.0.0/24")):
        cli(host, "network", "create", "-d", name, "--subnet", subnet, "-o", "parent=nmb-par0", name)
    cli(host, "run", "-d", "--name", "bench1", "--network", "benchnet1", "sleep", "3600")
    return plugins


def measure(client, net: str, n: int, out: dict | None) -> None:
    """``n`` connect + disconnect pairs of bench1 to/from ``net``."""
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

    for _ in range(n):
        start = now_ns()
        client.call("NetworkConnect", pb.ConnectRequest(network=net, container="bench1"))
        connect = ms_since(start)
        start = now_ns()
        client.call("NetworkDisconnect", pb.DisconnectRequest(network=net, container="bench1"))
        disconnect = ms_since(start)
        if out is not None:
            out["connect"].append(connect)
            out["disconnect"].append(disconnect)


def bench(host, base: str, args, results: dict) -> None:
    plugin_dir = os.path.join(base, "plugins")
    os.makedirs(plugin_dir, exist_ok=True)
    plugins = setup(host, plugin_dir)
    client = host.client()
    try:
        samples = {side: {"connect": [], "disconnect": []} for side in NETS}
        for side, net in NETS.items():
            measure(client, net, args.warmup, None)
        per_block = [args.runs // args.blocks + (1 if i < args.runs % args.blocks else 0) for i in range(args.blocks)]
        for block, n in enumerate(per_block):
            order = list(NETS) if block % 2 == 0 else list(reversed(NETS))
            for side in order:
                measure(client, NETS[side], n, samples[side])
            log(f"bench: block {block + 1}/{len(per_block)} done")
        results["samples"] = samples
        results["summary"] = {side: {op: summary(v) for op, v in ops.items()} for side, ops in samples.items()}
        results["ratio"] = {
            side: {op: {"median": statistics.median(samples[side][op]) / statistics.median(samples["bridge"][op]),
                        "p95": p95(samples[side][op]) / p95(samples["bridge"][op])}
                   for op in ("connect", "disconnect")}
            for side in NETS if side != "bridge"}
        res = host.cli("plugin", "ls")
        results["plugin_ls"] = res.out
    finally:
        client.close()
        cli(host, "rm", "-f", "bench1")
        for plugin in plugins:
            plugin.stop()


def report(results: dict) -> None:
    if "summary" not in results:
        return
    print(f"remote driver (macvlan plugin) vs built-in bridge, {results['runs']} runs each, same host and run")
    print(f"{'':32}{'median ms':>10}{'p95 ms':>10}")
    for op in ("connect", "disconnect"):
        for side in NETS:
            s = results["summary"][side][op]
            print(f"  {op:<11}{side:<19}{s['median_ms']:>10.2f}{s['p95_ms']:>10.2f}")
        for side, ratio in results["ratio"].items():
            r = ratio[op]
            print(f"  {op:<11}{side + '/bridge':<19}{r['median']:>9.2f}x{r['p95']:>9.2f}x")
    print(results.get("plugin_ls", ""), end="")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50, help="measured connect/disconnect pairs per driver")
    ap.add_argument("--warmup", type=int, default=5, help="uncounted pairs per driver first")
    ap.add_argument("--blocks", type=int, default=5, help="the drivers alternate in this many blocks")
    ap.add_argument("--json", metavar="FILE", help="also write every sample and summary to FILE")
    args = ap.parse_args()
    args.blocks = max(1, min(args.blocks, args.runs))
    results: dict = {"facts": machine_facts(), "runs": args.runs}
    rc = run_on_simhost("nmb", lambda host, base: bench(host, base, args, results), results)
    report(results)
    write_json(args.json, results)
    return rc


if __name__ == "__main__":
    sys.exit(main())
