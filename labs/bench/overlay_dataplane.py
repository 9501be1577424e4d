"""The data-plane half of overlay.py: netmgr's overlay next to the same path built by hand.

* netmgr: a :class:`~netmgr.testing.multihost.MultiHost` of 2 hosts, an
  overlay network ``dpnet`` (10.98.0.0/24), container X (``sleep``) on h1 and Y
  on h2;
* by hand (:class:`HandPath`), with ``ip`` / ``bridge`` / ``sysctl`` commands
  only: the same topology in namespaces of its own (``<tag>x-ul``, ``-ha``,
  ``-hb``, ``-ca``, ``-cb``): an underlay namespace with a bridge (MTU 1500),
  two "hosts" with a veth on it, in each a bridge + VXLAN device (VNI 4096,
  ``nolearning proxy``, MTU 1450) + a veth to a "container" namespace, static
  ``bridge fdb append`` / ``ip neigh add`` entries for the other side; the
  containers get X's and Y's own addresses and MACs, so both paths carry
  byte-identical packets;
* ``hand+fw``: the hand-built path with netmgr's nftables table (copied from h1
  and h2 with ``nft list table``) loaded into its two host namespaces, a
  diagnostic that tells the firewall's cost from everything else.

Traffic tools are stdlib scripts run inside the namespaces with ``nsenter
--net=PATH python -I -S -c ...`` (iperf3 is not installed here); the same
script and arguments on every path. Fragments are looked for twice: the
``Ip:`` fragmentation and reassembly counters of every namespace on both
paths, and a packet socket on each underlay's ``ul-h1`` port whose BPF filter
passes only IPv4 fragments (a 3000-byte UDP datagram from h1 to h2 is the
control that proves the capture sees them). Nothing is sent outside
namespaces this benchmark created.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from attach import BenchError
from common import log, summary99
from overlay_watch import echo_request

DP_NET, DP_SUBNET = "dpnet", "10.98.0.0/24"
HAND_UNDERLAY = "10.253.73"
HAND_VNI = 4096
OVERLAY_MTU = 1450
TCP_PORT = 5201
IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_DO = 10, 0, 2  # linux/in.h
SNMP_KEYS = ("FragCreates", "FragOKs", "FragFails", "ReasmReqds", "ReasmOKs")

TCP_RECV = r"""
import json, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
t0 = time.perf_counter_ns()
buf = bytearray(1 << 20)
mv = memoryview(buf)
total = 0
while True:
    n = c.recv_into(mv)
    if not n:
        break
    total += n
t1 = time.perf_counter_ns()
print(json.dumps({"bytes": total, "seconds": (t1 - t0) / 1e9}), flush=True)
"""

TCP_SEND = r"""
import json, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
buf = bytes(1 << 20)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    s.sendall(buf)
mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
s.close()
print(json.dumps({"mss": mss}), flush=True)
"""

PINGER = r"""
import json, os, select, socket, struct, sys, time
dst, count, interval, warm = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident, src = os.getpid() & 0xFFFF, socket.inet_aton(dst)
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF
rtts, lost, perf = [], 0, time.perf_counter_ns
for i in range(warm + count):
    seq = i & 0xFFFF
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + bytes(56)
    pkt = struct.pack("!BBHHH", 8, 0, csum(body), ident, seq) + bytes(56)
    t0 = perf()
    s.sendto(pkt, (dst, 0))
    got = None
    while got is None:
        left = 1.0 - (perf() - t0) / 1e9
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        data = s.recv(65536)
        t1 = perf()
        ihl = (data[0] & 15) * 4
        if data[12:16] == src and data[ihl] == 0 and struct.unpack_from("!HH", data, ihl + 4) == (ident, seq):
            got = t1
    if i >= warm:
        if got is None:
            lost += 1
        else:
            rtts.append((got - t0) / 1e6)
    time.sleep(interval / 1000)
print(json.dumps({"rtt_ms": rtts, "lost": lost}), flush=True)
"""


def sh(*cmd: str, input: str | None = None) -> str:
    """Run a command; its stdout, or BenchError with its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=60,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def in_ns(path: str, *cmd: str, input: str | None = None) -> str:
    """Run a command inside the network namespace at ``path``."""
    return sh("nsenter", f"--net={path}", *cmd, input=input)


def py_in_ns(path: str, script: str, *args: str) -> list[str]:
    """The argv that runs a stdlib script inside a namespace."""
    return ["nsenter", f"--net={path}", sys.executable, "-I", "-S", "-c", script, *args]


class HandPath:
    """The overlay path built by hand (see the module docstring); ``remove()`` is idempotent."""

    def __init__(self, tag: str, x: dict, y: dict) -> None:
        self.names = {k: f"{tag}x-{k}" for k in ("ul", "ha", "hb", "ca", "cb")}
        self.paths = {k: f"/run/netns/{v}" for k, v in self.names.items()}
        self.x, self.y = x, y  # {"ip", "mac"} of netmgr's X and Y: the hand-built containers take the same
        self.made: list[str] = []

    def build(self) -> None:
        """Namespaces, underlay, per host a bridge + VXLAN + veth to its container, static peers."""
        n = self.names
        for key in ("ul", "ha", "hb", "ca", "cb"):
            sh("ip", "netns", "add", n[key])
            self.made.append(n[key])
            sh("ip", "-n", n[key], "link", "set", "lo", "up")
        for key in ("ca", "cb"):  # as netmgr's sandboxes: new interfaces start with IPv6 off
            in_ns(self.paths[key], "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", n["ul"], "link", "add", "ul0", "mtu", "1500", "type", "bridge")
        sh("ip", "-n", n["ul"], "addr", "add", f"{HAND_UNDERLAY}.1/24", "dev", "ul0")
        sh("ip", "-n", n["ul"], "link", "set", "ul0", "up")
        for i, (host, ctr, me) in enumerate((("ha", "ca", self.x), ("hb", "cb", self.y))):
            self._host(i, n[host], self.paths[host], n[ctr], me)
        for host, other, vtep in (("ha", self.y, f"{HAND_UNDERLAY}.12"), ("hb", self.x, f"{HAND_UNDERLAY}.11")):
            in_ns(self.paths[host], "bridge", "fdb", "append", other["mac"], "dev", "vx0", "dst", vtep, "self",
                  "permanent")
            sh("ip", "-n", n[host], "neigh", "add", other["ip"], "lladdr", other["mac"], "dev", "vx0", "nud",
               "permanent")

    def _host(self, i: int, host: str, host_path: str, ctr: str, me: dict) -> None:
        addr = f"{HAND_UNDERLAY}.{11 + i}"
        ul = self.names["ul"]
        sh("ip", "-n", ul, "link", "add", f"ul-h{i + 1}", "mtu", "1500", "type", "veth", "peer", "name", "eth0",
           "mtu", "1500", "netns", host)
        sh("ip", "-n", ul, "link", "set", f"ul-h{i + 1}", "master", "ul0", "up")
        sh("ip", "-n", host, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", host, "link", "set", "eth0", "up")
        sh("ip", "-n", host, "route", "add", "default", "via", f"{HAND_UNDERLAY}.1")
        sh("ip", "-n", host, "link", "add", "ov0", "mtu", str(OVERLAY_MTU), "type", "bridge")
        in_ns(host_path, "sysctl", "-q", "-w", "net.ipv6.conf.ov0.disable_ipv6=1")
        sh("ip", "-n", host, "link", "set", "ov0", "up")
        sh("ip", "-n", host, "link", "add", "vx0", "mtu", str(OVERLAY_MTU), "type", "vxlan", "id", str(HAND_VNI),
           "local", addr, "dstport", "4789", "nolearning", "proxy")
        sh("ip", "-n", host, "link", "set", "vx0", "master", "ov0", "up")
        sh("ip", "-n", host, "link", "add", "veth0", "mtu", str(OVERLAY_MTU), "type", "veth", "peer", "name", "eth0",
           "mtu", str(OVERLAY_MTU), "address", me["mac"], "netns", ctr)
        sh("ip", "-n", host, "link", "set", "veth0", "master", "ov0", "up")
        in_ns(host_path, "sysctl", "-q", "-w", "net.ipv6.conf.veth0.disable_ipv6=1")
        sh("ip", "-n", ctr, "addr", "add", f"{me['ip']}/24", "dev", "eth0")
        sh("ip", "-n", ctr, "link", "set", "eth0", "up")

    def load_firewall(self, rules: dict[str, str]) -> None:
        """Load netmgr's table (``nft list table`` text, per hand host) into the hand-built hosts."""
        for host, text in rules.items():
            in_ns(self.paths[host], "nft", "-f", "-", input=text)

    def unload_firewall(self) -> None:
        for host in ("ha", "hb"):
            subprocess.run(["nsenter", f"--net={self.paths[host]}", "nft", "delete", "table", "inet", "netmgr"],
                           capture_output=True, check=False)

    def remove(self) -> list[str]:
        """Delete every namespace made (their links go with them); what could not be removed."""
        failed = []
        for name in reversed(self.made):
            proc = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True, check=False)
            if proc.returncode != 0 and os.path.exists(f"/run/netns/{name}"):
                failed.append(f"{name}: {proc.stderr.strip()}")
        self.made = [m for m in self.made if os.path.exists(f"/run/netns/{m}")]
        return failed


def vxlan_details(path: str, dev: str) -> str:
    """The ``vxlan ...`` line of ``ip -d link show`` without the VNI and local address (to compare paths)."""
    out = in_ns(path, "ip", "-d", "link", "show", dev)
    line = next((ln.strip() for ln in out.splitlines() if ln.strip().startswith("vxlan ")), "")
    words = line.split()
    drop = {i + 1 for i, w in enumerate(words) if w in ("id", "local")} | {i for i, w in enumerate(words)
                                                                           if w in ("id", "local")}
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def sysctls(path: str) -> dict[str, str]:
    """``sysctl -a`` of a namespace, net.* keys that are not per interface (except all/default)."""
    out = subprocess.run(["nsenter", f"--net={path}", "sysctl", "-a"], capture_output=True, text=True,
                         check=False).stdout
    keep = {}
    for line in out.splitlines():
        key, _, value = line.partition(" = ")
        parts = key.split(".")
        if not key.startswith("net.") or (len(parts) > 3 and parts[2] in ("conf", "neigh")
                                           and parts[3] not in ("all", "default")):
            continue
        keep[key] = value.strip()
    return keep


def snmp(path: str) -> dict[str, int]:
    """The fragment counters of ``Ip:`` in /proc/net/snmp of a namespace."""
    from netmgr.runtime import netns

    def read() -> str:
        with open("/proc/thread-self/net/snmp") as f:
            return f.read()

    lines = [ln.split() for ln in netns.run_in(path, read).splitlines() if ln.startswith("Ip:")]
    values = dict(zip(lines[0][1:], lines[1][1:]))
    return {k: int(values[k]) for k in SNMP_KEYS}


# Classic BPF: accept IPv4 frames whose MF flag or fragment offset is set (tcpdump's "ip[6:2] & 0x3fff != 0")
_FRAG_FILTER = ((0x28, 0, 0, 12), (0x15, 0, 3, 0x0800), (0x28, 0, 0, 20), (0x45, 0, 1, 0x3FFF),
                (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0))
SO_ATTACH_FILTER, ETH_P_ALL = 26, 0x0003


class UnderlayFragments:
    """Counts IPv4 fragments crossing one underlay port (a packet socket in the underlay namespace).

    The socket is opened with protocol 0 (it receives nothing), gets the filter, and only then
    binds to the port for every protocol: no unfiltered frame is ever queued. Only fragments pass
    the filter, so the count is exact at any traffic rate.
    """

    def __init__(self, ns_path: str, ifname: str) -> None:
        import ctypes

        from netmgr.runtime import netns

        sock = netns.run_in(ns_path, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
        insns = b"".join(struct.pack("HBBI", *ins) for ins in _FRAG_FILTER)
        self._prog = ctypes.create_string_buffer(insns)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                        struct.pack("HL", len(_FRAG_FILTER), ctypes.addressof(self._prog)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        netns.run_in(ns_path, lambda: sock.bind((ifname, ETH_P_ALL)))
        sock.setblocking(False)
        self.sock, self.seen = sock, 0

    def count(self) -> int:
        """Fragments seen so far."""
        while True:
            try:
                self.sock.recv(1 << 16)
                self.seen += 1
            except (BlockingIOError, InterruptedError):
                return self.seen

    def close(self) -> None:
        self.sock.close()


def frag_delta(before: dict, after: dict) -> dict:
    return {ns: {k: after[ns][k] - before[ns][k] for k in SNMP_KEYS if after[ns][k] != before[ns][k]}
            for ns in before}


def tcp_round(src: str, dst: str, dst_ip: str, seconds: float) -> dict:
    """One TCP bulk transfer src → dst for ``seconds``; Gbit/s as the receiver saw it."""
    recv = subprocess.Popen(py_in_ns(dst, TCP_RECV, str(TCP_PORT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        if recv.stdout.readline().strip() != "ready":
            raise BenchError(f"TCP receiver did not start: {recv.stderr.read()[-500:]}")
        send = subprocess.run(py_in_ns(src, TCP_SEND, dst_ip, str(TCP_PORT), str(seconds)), capture_output=True,
                              text=True, timeout=seconds + 30, check=False)
        if send.returncode != 0:
            raise BenchError(f"TCP sender failed: {send.stderr.strip()[-500:]}")
        out, err = recv.communicate(timeout=30)
        if recv.returncode != 0:
            raise BenchError(f"TCP receiver failed: {err.strip()[-500:]}")
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    res = json.loads(out)
    res["gbps"] = res["bytes"] * 8 / res["seconds"] / 1e9
    res["mss"] = json.loads(send.stdout)["mss"]
    return res


def ping_block(src: str, dst_ip: str, count: int, interval_ms: float, warm: int) -> dict:
    """``count`` sequential echo round trips (56-byte payload) from ``src``."""
    proc = subprocess.run(py_in_ns(src, PINGER, dst_ip, str(count), str(interval_ms), str(warm)),
                          capture_output=True, text=True, timeout=count * 2 + 60, check=False)
    if proc.returncode != 0:
        raise BenchError(f"pinger failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def df_echo(path: str, dst_ip: str, total: int, df: bool = True, timeout: float = 2.0) -> dict:
    """One ICMP echo of ``total`` bytes of IPv4 from the namespace at ``path``, with DF (or without).

    ``{"sent": True, "reply_len": N}`` when answered, ``{"error": "EMSGSIZE"}`` when the kernel
    refuses to send it, ``{"sent": True, "reply_len": None}`` when nothing came back.
    """
    import select

    from netmgr.runtime import netns

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT)
        return s

    sock = netns.run_in(path, make)
    ident, seq = (os.getpid() + total) & 0xFFFF, total & 0xFFFF
    try:
        try:
            sock.sendto(echo_request(ident, seq, bytes(total - 28)), (dst_ip, 0))
        except OSError as exc:
            return {"error": errno.errorcode.get(exc.errno, str(exc.errno))}
        deadline = time.monotonic() + timeout
        src = socket.inet_aton(dst_ip)
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data = sock.recv(65536)
            ihl = (data[0] & 15) * 4
            if data[12:16] == src and data[ihl] == 0 and struct.unpack_from("!HH", data, ihl + 4) == (ident, seq):
                return {"sent": True, "reply_len": struct.unpack_from("!H", data, 2)[0]}
        return {"sent": True, "reply_len": None}
    finally:
        sock.close()


def mtu_facts(path: str, dst_ip: str) -> dict:
    """1450 bytes with DF answered at full size; 1451 with DF refused locally (EMSGSIZE)."""
    full, over = df_echo(path, dst_ip, OVERLAY_MTU), df_echo(path, dst_ip, OVERLAY_MTU + 1)
    ok = full.get("reply_len") == OVERLAY_MTU and over.get("error") == "EMSGSIZE"
    return {"df_1450": full, "df_1451": over, "ok": ok}


def paired_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def measure(variants: dict, args, toggle_fw) -> dict:
    """TCP rounds, then ping blocks, the variants alternating (order rotated each round)."""
    names = list(variants)
    tcp: dict[str, list] = {v: [] for v in names}
    ping: dict[str, dict] = {v: {"rtt_ms": [], "lost": 0, "block_medians": []} for v in names}
    for r in range(args.tcp_rounds):
        for v in names[r % len(names):] + names[:r % len(names)]:
            toggle_fw(v)
            src, dst, ip = variants[v]
            tcp[v].append(tcp_round(src, dst, ip, args.tcp_seconds))
            log(f"bench: dataplane: TCP round {r + 1} {v}: {tcp[v][-1]['gbps']:.2f} Gbit/s")
    for b in range(args.ping_blocks):
        for v in names[b % len(names):] + names[:b % len(names)]:
            toggle_fw(v)
            src, _dst, ip = variants[v]
            res = ping_block(src, ip, args.ping_count, args.ping_interval, warm=10)
            ping[v]["rtt_ms"] += res["rtt_ms"]
            ping[v]["lost"] += res["lost"]
            ping[v]["block_medians"].append(statistics.median(res["rtt_ms"]) if res["rtt_ms"] else float("nan"))
    return {"tcp": tcp, "ping": ping}


def summarize(data: dict) -> dict:
    out: dict = {"tcp": {}, "ping": {}}
    for v, rounds in data["tcp"].items():
        g = [x["gbps"] for x in rounds]
        out["tcp"][v] = {"gbps": g, "median_gbps": statistics.median(g), "min_gbps": min(g), "max_gbps": max(g),
                         "mss": sorted({x["mss"] for x in rounds})}
    for v, p in data["ping"].items():
        out["ping"][v] = summary99(p["rtt_ms"]) | {"lost": p["lost"]}
    t, p = out["tcp"], out["ping"]
    out["ratios"] = {}
    for other in [v for v in t if v != "netmgr"]:
        out["ratios"][other] = {
            "tcp_median": t["netmgr"]["median_gbps"] / t[other]["median_gbps"],
            "tcp_paired_median": paired_ratio(t["netmgr"]["gbps"], t[other]["gbps"]),
            "rtt_median": p["netmgr"]["median_ms"] / p[other]["median_ms"],
            "rtt_paired_block_median": paired_ratio(data["ping"]["netmgr"]["block_medians"],
                                                    data["ping"][other]["block_medians"]),
            "rtt_p99": p["netmgr"]["p99_ms"] / p[other]["p99_ms"]}
    return out


# -- the whole data-plane part --------------------------------------------------------------------


def _pb():
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2

    return netmgr_v1_netmgr_pb2


def setup_netmgr(m) -> tuple[dict, dict]:
    """``dpnet`` on the 2-host cluster, X on h1 and Y on h2; their sandbox, address and MAC."""
    p = _pb()
    c1, c2 = m.hosts[0].client(), m.hosts[1].client()
    try:
        c1.call("NetworkCreate", p.NetworkCreateRequest(name=DP_NET, driver="overlay",
                                                        pools=[p.IPAMPool(subnet=DP_SUBNET)]))
        deadline = time.monotonic() + 20
        while True:  # the network reaches h2 through its etcd watch
            try:
                c2.documents("NetworkInspect", p.Refs(refs=[DP_NET]))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        out = []
        for client, name in ((c1, "dpx"), (c2, "dpy")):
            client.call("ContainerRun", p.RunRequest(argv=["sleep", "3600"], name=name, network=DP_NET))
            doc = client.documents("ContainerInspect", p.Refs(refs=[name]))[0]
            net = doc["NetworkSettings"]["Networks"][DP_NET]
            out.append({"name": name, "sandbox": doc["NetworkSettings"]["SandboxKey"], "ip": net["IPAddress"],
                        "mac": net["MacAddress"], "network_id": net["NetworkID"]})
        return out[0], out[1]
    finally:
        c1.close()
        c2.close()


def wait_reachable(path: str, ip: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while df_echo(path, ip, 84, timeout=0.5).get("reply_len") is None:
        if time.monotonic() > deadline:
            raise BenchError(f"{ip} does not answer from {path}")


def run_dataplane(tag: str, args, out: dict) -> None:
    """Build both paths, measure, check MTU and fragments; everything removed in ``finally``."""
    from common import signals_ignored

    from netmgr.testing.multihost import MultiHost

    m = MultiHost(2, subnet_prefix="10.253.72", ttl=args.ttl, prefix=f"{tag}d")
    hand = None
    try:
        log("bench: dataplane: starting 2 hosts")
        m.up()
        x, y = setup_netmgr(m)
        out["netmgr_path"] = {"x": x, "y": y}
        hand = HandPath(tag, {"ip": x["ip"], "mac": x["mac"]}, {"ip": y["ip"], "mac": y["mac"]})
        hand.build()
        hp = hand.paths
        out["vxlan"] = {"netmgr": vxlan_details(m.hosts[0].netns_path, "vx-" + x["network_id"][:12]),
                        "hand": vxlan_details(hp["ha"], "vx0")}
        out["sysctl_diff"] = sysctl_diff(sysctls(m.hosts[0].netns_path), sysctls(hp["ha"]))
        wait_reachable(x["sandbox"], y["ip"])
        wait_reachable(hp["ca"], y["ip"])
        traffic(m, hand, x, y, args, out)
        out["mtu"] = {"netmgr": mtu_facts(x["sandbox"], y["ip"]), "hand": mtu_facts(hp["ca"], y["ip"])}
        netmgr_spaces = {"h1": m.hosts[0].netns_path, "h2": m.hosts[1].netns_path, "underlay": m.ul_path,
                         "X": x["sandbox"], "Y": y["sandbox"]}
        out["control"] = fragmentation_control(netmgr_spaces, x["sandbox"], y["ip"])
        out["summary"] = summarize(out["raw"])
    finally:
        with signals_ignored():
            if hand is not None:
                failed = hand.remove()
                if failed:
                    out.setdefault("cleanup_failures", []).extend(failed)
            m.down()


def traffic(m, hand: HandPath, x: dict, y: dict, args, out: dict) -> None:
    """The alternating TCP and ping measurements, with the fragment counters and the underlay capture around them."""
    from common import cpu_shares, cpu_times

    hp = hand.paths
    fw = {host: in_ns(h.netns_path, "nft", "list", "table", "inet", "netmgr")
          for host, h in (("ha", m.hosts[0]), ("hb", m.hosts[1]))}
    variants = {"netmgr": (x["sandbox"], y["sandbox"], y["ip"]), "hand": (hp["ca"], hp["cb"], y["ip"]),
                "hand+fw": (hp["ca"], hp["cb"], y["ip"])}
    loaded = {"fw": False}

    def toggle_fw(variant: str) -> None:
        want = variant == "hand+fw"
        if want and not loaded["fw"]:
            hand.load_firewall(fw)
        elif loaded["fw"] and not want:
            hand.unload_firewall()
        loaded["fw"] = want

    spaces = {"netmgr": {"h1": m.hosts[0].netns_path, "h2": m.hosts[1].netns_path, "underlay": m.ul_path,
                         "X": x["sandbox"], "Y": y["sandbox"]},
              "hand": {"ha": hp["ha"], "hb": hp["hb"], "underlay": hp["ul"], "ca": hp["ca"], "cb": hp["cb"]}}
    before = {v: {k: snmp(p) for k, p in s.items()} for v, s in spaces.items()}
    watches = {"netmgr": UnderlayFragments(m.ul_path, "ul-h1"), "hand": UnderlayFragments(hp["ul"], "ul-h1")}
    try:
        cpu0 = cpu_times()
        out["raw"] = measure(variants, args, toggle_fw)
        out["cpu"] = cpu_shares(cpu0, cpu_times())
        out["underlay_fragments"] = {v: w.count() for v, w in watches.items()}
        out["frag_during_traffic"] = {v: frag_delta(before[v], {k: snmp(p) for k, p in s.items()})
                                      for v, s in spaces.items()}
        out["underlay_control"] = underlay_control(m, watches["netmgr"])
    finally:
        toggle_fw("netmgr")
        for w in watches.values():
            w.close()


def sysctl_diff(a: dict, b: dict) -> dict:
    """Keys whose values differ between two namespaces (netmgr's host, the hand-built one)."""
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
            and not k.endswith(("stable_secret", "hash_secret")) and "random" not in k}


def underlay_control(m, watch: UnderlayFragments) -> dict:
    """A 3000-byte UDP datagram from h1 to h2's underlay address: the capture must see its fragments."""
    from netmgr.runtime import netns

    before = watch.count()
    sock = netns.run_in(m.hosts[0].netns_path, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sock.sendto(bytes(3000), (m.addr(1), 9))  # discard port: h2 answers port unreachable, nothing else
    finally:
        sock.close()
    time.sleep(0.2)
    return {"udp_bytes": 3000, "fragments_seen": watch.count() - before}


def fragmentation_control(spaces: dict, src: str, ip: str) -> dict:
    """A 1451-byte echo *without* DF: the counters must show the sender fragmenting (the method works)."""
    before = {k: snmp(p) for k, p in spaces.items()}
    echo = df_echo(src, ip, OVERLAY_MTU + 1, df=False)
    return {"echo": echo, "delta": frag_delta(before, {k: snmp(p) for k, p in spaces.items()})}


def problems_of(out: dict) -> list[str]:
    """Correctness findings of the data-plane part (not speed)."""
    found = []
    for v, facts in out.get("mtu", {}).items():
        if not facts["ok"]:
            found.append(f"MTU on the {v} path: 1450 with DF -> {facts['df_1450']}, 1451 with DF -> "
                         f"{facts['df_1451']} (want an answer of 1450 bytes, then EMSGSIZE)")
    for v, spaces in out.get("frag_during_traffic", {}).items():
        for ns, delta in spaces.items():
            if delta:
                found.append(f"fragments on the {v} path in {ns} during the TCP runs: {delta}")
    for v, seen in out.get("underlay_fragments", {}).items():
        if seen:
            found.append(f"{seen} IP fragments crossed the underlay of the {v} path during the traffic")
    ctl = out.get("underlay_control")
    if ctl and not ctl["fragments_seen"]:
        found.append("the underlay capture saw no fragment of the control datagram: it cannot be trusted")
    vx = out.get("vxlan")
    if vx and vx["netmgr"] != vx["hand"]:
        found.append(f"the VXLAN devices differ: netmgr {vx['netmgr']!r}, hand {vx['hand']!r}")
    return found
