"""Kernel experiment: what adding a veth port costs on a bridge with few vs many ports.

    sudo .venv/bin/python labs/bench/bridgeport.py [--ports 10,1000] [--runs 100] [--configs A,B,...]

No netmgr daemon and no netmgr code on the timed path (``netmgr.runtime``
only opens sockets in the namespaces and encodes requests). For each port
count P, in namespaces of its own under ``/run/netns``
(``nmflat-<hex>-host`` holds the bridges, ``-peers`` the peers of the filler
ports, ``-sb`` the sandbox; IPv6 is off by default in ``-peers`` and
``-sb``, as in netmgr's sandboxes), one bridge per configuration
(``--configs``), side by side:

1. ``br<k>`` with the configuration, up, 10.(200+k).0.1/16, and P filler
   veths (host side on the bridge with the configuration's IPv6 treatment,
   peer up in ``-peers``), all made with ``ip -batch`` (not timed); 2 s pause;
2. ``--warmup`` + ``--runs`` rounds; each round measures every bridge once
   (order rotated), each step timed on its own, from a thread inside the host
   namespace (as netmgrd runs):
   ``veth``    NEWLINK veth ``nmfp<k>``, peer created in ``-sb`` as eth1, host
               side master br<k> and up, one request (netmgr's join);
               ``veth_cpu`` is this thread's CPU time (user + kernel) in it;
   ``v6off``   disable_ipv6 of the host side by a direct sysctl write
               (``v6sysctl``; ``v6open`` = the open() alone);
   ``getlink`` RTM_GETLINK eth1 in the sandbox;
   ``conf``    NEWADDR + NEWLINK up in the sandbox, one datagram (carrier comes
               up, the port is enabled); with ``lateup`` also the host side's up;
   ``after``   one RTM_GETLINK of the bridge right away (waits for the RTNL
               lock if the kernel is still busy with the new port);
   ``del``     DELLINK of the host side;
   ``connect`` = veth + v6off + getlink + conf.

Configuration words (joined with ``+``): ``nosnoop`` (mcast_snooping 0),
``mac`` (a fixed bridge MAC: no bridge-ID recalculation over the ports),
``mtu`` (an MTU set after creation, which is what marks it user-set and
stops the MTU auto-adjust; an MTU given at creation does not), ``v6sysctl``
(host sides' IPv6 disabled by sysctl, netmgr's way), ``v6gen``
(IFLA_INET6_ADDR_GEN_MODE none instead, as a second message in the create
datagram: the kernel refuses IFLA_AF_SPEC on a link being created),
``lateup`` (host side created down, set up after the peer: one port enable
instead of three), ``shard<N>`` (e.g. ``shard64``: the filler ports spread over
shard bridges of at most N ports, each joined to the bridge by a veth trunk,
and the measured veth attached to the last shard: a design in which no bridge
ever holds more than N endpoint ports); no v6 word: the host sides keep IPv6. Everything is
removed at the end (also on error or Ctrl-C). Results: labs/bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import summary
from netmgr.runtime import netns, nlmsg
from netmgr.runtime.netlink import Netlink, open_socket
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK

IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 26, 8, 1
STEPS = ("veth", "v6off", "getlink", "conf", "after", "del")


def sh(*cmd: str, inp: str | None = None) -> None:
    subprocess.run(cmd, input=inp, text=True, check=True, capture_output=True)


def af_spec_no_addrgen() -> bytes:
    inet6 = nlmsg.nla(socket.AF_INET6, nlmsg.nla(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE])))
    return nlmsg.nla(IFLA_AF_SPEC | 0x8000, inet6)


class Rig:
    """The namespaces of one port count: one bridge per configuration, measured in turn."""

    def __init__(self, tag: str, ports: int, configs: list[set[str]]) -> None:
        self.ports, self.configs = ports, configs
        self.names = {k: f"nmflat-{tag}-{k}" for k in ("host", "peers", "sb")}
        self.bridges: list[int] = []
        self.attach_to: dict[int, str] = {}  # configuration -> the bridge its measured veth joins (shards)

    def path(self, key: str) -> str:
        return "/run/netns/" + self.names[key]

    def up(self) -> None:
        for key, name in self.names.items():
            sh("ip", "netns", "add", name)
            if key != "host":
                sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1",
                   "net.ipv6.conf.all.disable_ipv6=1")
            sh("ip", "-n", name, "link", "set", "lo", "up")
        for k, config in enumerate(self.configs):
            self._bridge(k, config)
        self.host = Netlink(netns.run_in(self.path("host"), open_socket))
        self.sb = Netlink(netns.run_in(self.path("sb"), open_socket))
        self.sb_fd = os.open(self.path("sb"), os.O_RDONLY | os.O_CLOEXEC)
        self.bridges = [self.host.link_index(self.attach_to.get(k, f"br{k}")) for k in range(len(self.configs))]

    def _bridge(self, k: int, config: set[str]) -> None:
        h, br = self.names["host"], f"br{k}"
        sh("ip", "-n", h, "link", "add", br, *(["address", f"02:00:00:00:00:{k + 1:02x}"] if "mac" in config else []),
           "type", "bridge", *(["mcast_snooping", "0"] if "nosnoop" in config else []))
        if "mtu" in config:  # a change (not the creation) sets BROPT_MTU_SET_BY_USER: no auto-adjust
            sh("ip", "-n", h, "link", "set", br, "mtu", "1499")
            sh("ip", "-n", h, "link", "set", br, "mtu", "1500")
        sh("ip", "-n", h, "addr", "add", f"10.{200 + k}.0.1/16", "dev", br)
        sh("ip", "-n", h, "link", "set", br, "up")
        if not self.ports:
            return
        # the filler ports get the same host-side IPv6 treatment as the measured one, before they go up
        gen = "addrgenmode none" if "v6gen" in config else ""
        shard = next((int(w[5:]) for w in config if w.startswith("shard")), 0)
        masters = [br] * self.ports
        if shard:
            masters = [self._shard(k, i // shard, config) for i in range(self.ports)]
            self.attach_to[k] = masters[-1]
        sh("ip", "-n", h, "-batch", "-", inp="".join(
            f"link add f{k}x{i} type veth peer name p{k}x{i} netns {self.names['peers']}\n"
            f"link set f{k}x{i} master {masters[i]} {gen}\n" for i in range(self.ports)))
        if "v6sysctl" in config:
            sh("ip", "netns", "exec", h, "sh", "-c", f"for i in $(seq 0 {self.ports - 1}); do "
               f"echo 1 > /proc/sys/net/ipv6/conf/f{k}x$i/disable_ipv6; done")
        sh("ip", "-n", h, "-batch", "-", inp="".join(f"link set f{k}x{i} up\n" for i in range(self.ports)))
        sh("ip", "-n", self.names["peers"], "-batch", "-",
           inp="".join(f"link set p{k}x{i} up\n" for i in range(self.ports)))

    def _shard(self, k: int, j: int, config: set[str]) -> str:
        """Shard bridge ``j`` of configuration ``k`` (made once): no address, joined to br<k> by a veth trunk."""
        h, name = self.names["host"], f"br{k}s{j}"
        if not os.path.exists(f"/run/netns/{h}") or subprocess.run(
                ["ip", "-n", h, "link", "show", name], capture_output=True).returncode != 0:
            sh("ip", "-n", h, "link", "add", name, "type", "bridge",
               *(["mcast_snooping", "0"] if "nosnoop" in config else []))
            sh("ip", "-n", h, "link", "add", f"t{k}x{j}a", "type", "veth", "peer", "name", f"t{k}x{j}b")
            sh("ip", "-n", h, "link", "set", f"t{k}x{j}a", "master", f"br{k}", "up")
            sh("ip", "-n", h, "link", "set", f"t{k}x{j}b", "master", name, "up")
            sh("ip", "-n", h, "link", "set", name, "up")
        return name

    def down(self) -> None:
        for attr in ("host", "sb"):
            if hasattr(self, attr):
                getattr(self, attr).close()
        if hasattr(self, "sb_fd"):
            os.close(self.sb_fd)
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    def one(self, k: int, i: int) -> dict[str, float]:
        """One connect (timed step by step) and disconnect on bridge ``k``."""
        config, veth = self.configs[k], f"nmfp{k}"
        c = time.perf_counter_ns
        info = nlmsg.linkinfo("veth", nlmsg.veth_peer("eth1", self.sb_fd, "02:42:0a:cb:00:02", None))
        attrs = nlmsg.link_attrs(veth, None, None, self.bridges[k]) + info
        up = 0 if "lateup" in config else 1  # lateup: the host side goes up after the peer (one port enable)
        steps = [(nlmsg.ifinfo(flags=up, change=up, attrs=attrs), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, "veth")]
        if "v6gen" in config:  # the kernel takes IFLA_AF_SPEC only on an existing link: a 2nd message
            steps.append((nlmsg.ifinfo(attrs=nlmsg.nla_str(nlmsg.IFLA_IFNAME, veth) + af_spec_no_addrgen()),
                          RTM_NEWLINK, 0, "addrgenmode"))
        cpu0 = time.thread_time_ns()
        t0 = c()
        self.host.request(*steps)
        t1 = c()
        cpu1 = time.thread_time_ns()
        if "v6sysctl" in config:  # as the daemon does it: a direct write, this thread is in the host namespace
            fd = os.open(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6", os.O_WRONLY | os.O_CLOEXEC)
            t_open = c()
            os.write(fd, b"1")
            os.close(fd)
        t2 = c()
        index = self.sb.link_index("eth1")
        t3 = c()
        addr = f"10.{200 + k}.{1 + i // 250 % 250}.{1 + i % 250}"
        self.sb.request((nlmsg.ifaddr(index, addr, 16), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, "addr"),
                        (nlmsg.ifinfo(index, 1, 1), RTM_NEWLINK, 0, "up"))
        if "lateup" in config:
            self.host.request((nlmsg.ifinfo(attrs=nlmsg.nla_str(nlmsg.IFLA_IFNAME, veth), flags=1, change=1),
                               RTM_NEWLINK, 0, "host side up"))
        t4 = c()
        self.host.link_index(f"br{k}")
        t5 = c()
        self.host.request((nlmsg.ifinfo(attrs=nlmsg.nla_str(nlmsg.IFLA_IFNAME, veth)), RTM_DELLINK, 0, "del"))
        t6 = c()
        out = {step: (b - a) / 1e6 for step, a, b in zip(STEPS, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6))}
        out["connect"] = (t4 - t0) / 1e6
        if "v6sysctl" in config:
            out["v6open"] = (t_open - t1) / 1e6
        out["veth_cpu"] = (cpu1 - cpu0) / 1e6  # this thread's CPU time (user + kernel) in the veth step
        return out


def measure(tag: str, ports: int, configs: list[str], runs: int, warmup: int) -> list[dict]:
    """Every configuration's samples at ``ports`` filler ports, interleaved run by run."""
    rig = Rig(tag, ports, [set(c.split("+")) for c in configs])
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        rig.up()
        netns._setns(rig.path("host"))  # the timed loop runs in the host namespace, as netmgrd does (no os.setns in 3.11)
        time.sleep(2)
        samples: list[dict[str, list[float]]] = [{} for _ in configs]
        for i in range(warmup + runs):
            order = list(range(len(configs)))
            order = order[i % len(order):] + order[:i % len(order)]  # rotate: no config always goes first
            for k in order:
                got = rig.one(k, i)
                if i >= warmup:
                    for step, v in got.items():
                        samples[k].setdefault(step, []).append(v)
        return [{"ports": ports, "config": cfg, "samples": s, "summary": {k: summary(v) for k, v in s.items()}}
                for cfg, s in zip(configs, samples)]
    finally:
        netns._libc.setns(home, netns.CLONE_NEWNET)
        os.close(home)
        rig.down()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", default="10,1000", help="filler ports per bridge, comma-separated (at most 1022)")
    ap.add_argument("--configs", default="v6sysctl,v6sysctl+nosnoop,v6sysctl+nosnoop+mac+mtu,v6gen+nosnoop",
                    help="bridge configurations measured side by side (one bridge each), comma-separated")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole matrix (noise)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample and summary to FILE")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, bridges)")

    def on_sigterm(_sig, _frame):
        raise KeyboardInterrupt  # unwind through measure()'s cleanup

    signal.signal(signal.SIGTERM, on_sigterm)
    out = []
    tag = secrets.token_hex(3)
    cols = ("connect",) + STEPS + ("veth_cpu", "v6open")
    print(f"{'ports':>5} {'config':<24} " + " ".join(f"{s + ' med/p95':>14}" for s in cols) + "   (ms)")
    try:
        sizes = [int(p) for p in args.ports.split(",")]
    except ValueError:
        ap.error("--ports takes comma-separated integers")
    for ports in sizes * args.rounds:
        try:
            got = measure(tag, ports, args.configs.split(","), args.runs, args.warmup)
        except KeyboardInterrupt:
            return 130
        for r in got:
            out.append(r)
            sm = r["summary"]
            print(f"{ports:>5} {r['config']:<24} " + " ".join(
                f"{sm[s]['median_ms']:>6.3f}/{sm[s]['p95_ms']:>7.3f}" if s in sm else f"{'-':>14}" for s in cols),
                flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
