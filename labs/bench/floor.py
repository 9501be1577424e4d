"""The kernel floor of a bridge attach: the same netlink work netmgr does, done directly.

``attach.py`` runs this inside the simulated host's namespace::

    nsenter --net=/run/netns/nmb-XXXXXX python labs/bench/floor.py --runs 50 --json -

Setup (not timed): a bridge ``nmfbr<tag>`` with 10.203.0.1/24, up, and a
sandbox namespace (``netmgr.runtime.netns.create``, bind-mounted under
``--ns-dir`` or a fresh temp dir) with loopback up. Per iteration, exactly
what netmgr's bridge driver + controller do for ``network connect`` of a
running container to a second network, and for ``network disconnect``:

connect
    1. create a veth pair whose peer is created directly in the sandbox as
       ``eth1`` with a fixed MAC; the host side is enslaved to the bridge and
       set up in the same request;
    2. in the sandbox: look up eth1's ifindex, add 10.203.0.2/24 (the kernel
       adds the connected route), set eth1 up; the ``+defroute`` variants
       also add ``default via 10.203.0.1`` (netmgr adds none on a second
       network, so the plain variants are the ones to compare with);
disconnect
    3. delete the host-side veth (the kernel removes the peer with it).

Two implementations of the same steps:

``raw``
    pyroute2's message classes (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``) for
    encoding only, sent over plain ``AF_NETLINK`` sockets this script owns:
    one request for step 1, one RTM_GETLINK and one datagram carrying
    NEWADDR + NEWLINK(up) [+ NEWROUTE] for step 2, one DELLINK for step 3.
    This is the request sequence of ``netmgr.runtime.netlink`` /
    ``netmgr.runtime.sandbox.configure_interface``, written out here
    independently (no netmgr code on the timed path).
``pyroute2``
    the high-level API a typical user writes: ``IPRoute()`` in the host and
    ``IPRoute(netns=path)`` for the sandbox (both opened once, as netmgr keeps
    one socket per sandbox), ``link('add', kind='veth', peer={...})``,
    ``link_lookup``, ``addr('add')``, ``link('set', state='up')``,
    ``route('add')``, ``link('del')``. The cost of opening
    ``IPRoute(netns=path)`` (pyroute2 forks a helper for it) is reported
    separately.

The variants run interleaved (iteration i of every variant, then i+1, the
order rotated each iteration), so a slow phase of the machine hits all of
them alike.

Run by hand in the machine's own namespace, it creates a throwaway "host"
namespace for the bridge first, so it never adds a bridge or address to the
real host. Everything it creates is removed in ``finally`` (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import errno as E
import json
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import NS_PER_MS, in_initial_netns, machine_facts, now_ns, rand_tag, summary
from netmgr.runtime import netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

SUBNET_PLEN = 24
BRIDGE_ADDR = "10.203.0.1"
PEER_ADDR = "10.203.0.2"
PEER_MAC = "02:42:0a:cb:00:02"
PEER_NAME = "eth1"
IFF_UP = 0x1
_HDR = struct.Struct("=IHHII")  # nlmsghdr

VARIANTS = ("raw", "raw+defroute", "pyroute2", "pyroute2+defroute")
MAIN_PID = os.getpid()  # pyroute2 forks helpers (IPRoute(netns=...)); they must never run our cleanup


# -- raw netlink: our own socket, pyroute2 only for encoding ---------------------------------


class RawNl:
    """A minimal rtnetlink requester over a socket we own (no pyroute2 transport)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0

    @staticmethod
    def open() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        sock.bind((0, 0))
        return sock

    def _encode(self, msg, mtype: int, flags: int) -> tuple[bytes, int]:
        self.seq += 1
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags | NLM_F_REQUEST
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        return bytes(msg.data), self.seq

    def request(self, *steps: tuple[object, int, int]) -> None:
        """Send the steps in one datagram, each with NLM_F_ACK; raise OSError on the first error."""
        out = bytearray()
        pending: set[int] = set()
        for msg, mtype, flags in steps:
            data, seq = self._encode(msg, mtype, flags | NLM_F_ACK)
            out += data
            pending.add(seq)
        self.sock.send(bytes(out))
        first = 0
        while pending:
            buf = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(buf):
                length, mtype, _fl, seq, _pid = _HDR.unpack_from(buf, off)
                if mtype == NLMSG_ERROR and seq in pending:
                    pending.discard(seq)
                    (code,) = struct.unpack_from("=i", buf, off + 16)
                    first = first or -code
                off += max(length, 16) + (-length % 4)
        if first:
            raise OSError(first, os.strerror(first))

    def link_index(self, name: str) -> int:
        """RTM_GETLINK by name; the ifindex from the reply's header."""
        msg = ifinfmsg()
        msg["attrs"].append(("IFLA_IFNAME", name))
        data, seq = self._encode(msg, RTM_GETLINK, 0)
        self.sock.send(data)
        while True:
            buf = self.sock.recv(65536)
            _len, mtype, _fl, rseq, _pid = _HDR.unpack_from(buf, 0)
            if rseq != seq:
                continue
            if mtype == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", buf, 16)
                raise OSError(-code, f"get link {name}: {os.strerror(-code)}")
            return struct.unpack_from("=i", buf, 20)[0]

    # message builders

    @staticmethod
    def veth_msg(name: str, peer: str, peer_ns_fd: int, peer_mac: str, master: int):
        peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", peer_ns_fd), ("IFLA_ADDRESS", peer_mac)]
        info = {"attrs": [("IFLA_INFO_KIND", "veth"),
                          ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]})]}
        msg = ifinfmsg()
        msg["attrs"] += [("IFLA_IFNAME", name), ("IFLA_LINKINFO", info), ("IFLA_MASTER", master)]
        msg["flags"] = msg["change"] = IFF_UP
        return msg

    @staticmethod
    def bridge_msg(name: str):
        msg = ifinfmsg()
        msg["attrs"] += [("IFLA_IFNAME", name), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})]
        return msg

    @staticmethod
    def addr_msg(index: int, address: str, plen: int):
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = plen
        msg["index"] = index
        msg["attrs"] += [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        return msg

    @staticmethod
    def up_msg(index: int):
        msg = ifinfmsg()
        msg["index"] = index
        msg["flags"] = msg["change"] = IFF_UP
        return msg

    @staticmethod
    def default_route_msg(gateway: str):
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["dst_len"] = 0
        msg["table"] = 254
        msg["proto"] = 4  # static
        msg["type"] = 1  # unicast
        msg["scope"] = 0  # universe
        msg["attrs"] += [("RTA_GATEWAY", gateway), ("RTA_TABLE", 254)]
        return msg

    @staticmethod
    def del_by_name_msg(name: str):
        msg = ifinfmsg()
        msg["attrs"].append(("IFLA_IFNAME", name))
        return msg


class Floor:
    """The bridge, the sandbox and the open sockets/handles; every variant's connect/disconnect."""

    def __init__(self, tag: str, ns_dir: str) -> None:
        self.tag = tag
        self.bridge = f"nmfbr{tag}"
        self.veth = f"nmfv{tag}"
        self.ns_dir = ns_dir
        self.sb_path = os.path.join(ns_dir, f"nmf-sb-{tag}")
        self.host_ns_path: str | None = None
        self.sb_handle = None
        self.host_handle = None
        self.host: RawNl | None = None
        self.sb: RawNl | None = None
        self.sb_fd = -1
        self.br_index = 0
        self.ipr = None
        self.ipr_sb = None

    # -- setup / cleanup ---------------------------------------------------------------------

    def setup(self, own_host_ns: bool) -> None:
        if own_host_ns:
            self.host_ns_path = os.path.join(self.ns_dir, f"nmf-host-{self.tag}")
            self.host_handle = netns.create(self.host_ns_path, sandbox=False)
            self.host = RawNl(netns.run_in(self.host_ns_path, RawNl.open))
        else:
            self.host = RawNl(RawNl.open())
        self.sb_handle = netns.create(self.sb_path)
        self.sb_fd = self.sb_handle.fd
        self.sb = RawNl(netns.run_in(self.sb_path, RawNl.open))
        self.host.request((RawNl.bridge_msg(self.bridge), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL))
        self.br_index = self.host.link_index(self.bridge)
        self.host.request((RawNl.addr_msg(self.br_index, BRIDGE_ADDR, SUBNET_PLEN), RTM_NEWADDR,
                           NLM_F_CREATE | NLM_F_EXCL),
                          (RawNl.up_msg(self.br_index), RTM_NEWLINK, 0))

    def open_pyroute2(self) -> float:
        """Open the IPRoute objects once (like netmgr's per-sandbox socket); ms for the netns one."""
        from pyroute2 import IPRoute

        self.ipr = IPRoute(netns=self.host_ns_path) if self.host_ns_path else IPRoute()
        start = now_ns()
        self.ipr_sb = IPRoute(netns=self.sb_path)
        return (now_ns() - start) / NS_PER_MS

    def cleanup(self) -> list[str]:
        """Remove everything; keep going on errors and return them."""
        problems: list[str] = []

        def attempt(what, fn):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - cleanup reports, never raises
                problems.append(f"{what}: {exc}")

        for ipr in (self.ipr_sb, self.ipr):
            if ipr is not None:
                attempt("close IPRoute", ipr.close)
        if self.host is not None:
            for name in (self.veth, self.bridge):
                def delete(name=name):
                    try:
                        self.host.request((RawNl.del_by_name_msg(name), RTM_DELLINK, 0))
                    except OSError as exc:
                        if exc.errno not in (E.ENODEV, E.ENOENT):  # not there: nothing to do
                            raise
                attempt(f"delete {name}", delete)
            attempt("close host socket", self.host.sock.close)
        if self.sb is not None:
            attempt("close sandbox socket", self.sb.sock.close)
        for handle in (self.sb_handle, self.host_handle):
            if handle is not None:
                attempt("close handle", handle.close)
        for path in (self.sb_path, self.host_ns_path):
            if path:
                attempt(f"remove netns {path}", lambda p=path: netns.remove(p))
        return problems

    # -- the measured steps ------------------------------------------------------------------

    def raw_connect(self, default_route: bool) -> None:
        self.host.request((RawNl.veth_msg(self.veth, PEER_NAME, self.sb_fd, PEER_MAC, self.br_index),
                           RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL))
        index = self.sb.link_index(PEER_NAME)
        steps = [(RawNl.addr_msg(index, PEER_ADDR, SUBNET_PLEN), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL),
                 (RawNl.up_msg(index), RTM_NEWLINK, 0)]
        if default_route:
            steps.append((RawNl.default_route_msg(BRIDGE_ADDR), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL))
        self.sb.request(*steps)

    def raw_disconnect(self) -> None:
        self.host.request((RawNl.del_by_name_msg(self.veth), RTM_DELLINK, 0))

    def pyroute2_connect(self, default_route: bool) -> None:
        self.ipr.link("add", ifname=self.veth, kind="veth",
                      peer={"ifname": PEER_NAME, "net_ns_fd": self.sb_path, "address": PEER_MAC},
                      master=self.br_index, state="up")
        index = self.ipr_sb.link_lookup(ifname=PEER_NAME)[0]
        self.ipr_sb.addr("add", index=index, address=PEER_ADDR, prefixlen=SUBNET_PLEN)
        self.ipr_sb.link("set", index=index, state="up")
        if default_route:
            self.ipr_sb.route("add", dst="default", gateway=BRIDGE_ADDR)

    def pyroute2_disconnect(self) -> None:
        self.ipr.link("del", ifname=self.veth)

    def connect(self, variant: str) -> None:
        if variant.startswith("raw"):
            self.raw_connect(variant.endswith("+defroute"))
        else:
            self.pyroute2_connect(variant.endswith("+defroute"))

    def disconnect(self, variant: str) -> None:
        self.raw_disconnect() if variant.startswith("raw") else self.pyroute2_disconnect()

    # -- a check that the work was really done (outside the timed path) ----------------------

    def verify_connected(self, variant: str) -> None:
        """eth1 up with its MAC and address in the sandbox, the host side up on the bridge.

        Uses the IPRoute objects opened once: opening and closing more of them
        (pyroute2 0.9.7) sometimes closes file descriptors that are no longer
        theirs when their event loop is garbage-collected, among them the
        sandbox fd the raw variant passes as IFLA_NET_NS_FD.
        """
        default_route = variant.endswith("+defroute")
        if os.fstat(self.sb_fd).st_ino != os.stat(self.sb_path).st_ino:
            raise RuntimeError(f"verify {variant}: the sandbox fd no longer refers to the sandbox namespace")
        links = {l.get_attr("IFLA_IFNAME"): l for l in self.ipr_sb.get_links()}
        link = links.get(PEER_NAME)
        if link is None or not link["flags"] & IFF_UP or link.get_attr("IFLA_ADDRESS") != PEER_MAC:
            raise RuntimeError(f"verify {variant}: {PEER_NAME} missing, down or wrong MAC in the sandbox")
        addrs = [a.get_attr("IFA_ADDRESS") for a in self.ipr_sb.get_addr(index=link["index"])]
        if PEER_ADDR not in addrs:
            raise RuntimeError(f"verify {variant}: {PEER_ADDR} not on {PEER_NAME}: {addrs}")
        defaults = [r for r in self.ipr_sb.get_routes(family=socket.AF_INET) if r["dst_len"] == 0
                    and r["table"] == 254]
        if bool(defaults) != default_route:
            raise RuntimeError(f"verify {variant}: default route present={bool(defaults)}, wanted {default_route}")
        host_links = {l.get_attr("IFLA_IFNAME"): l for l in self.ipr.get_links()}
        veth = host_links.get(self.veth)
        if veth is None or veth.get_attr("IFLA_MASTER") != self.br_index or not veth["flags"] & IFF_UP:
            raise RuntimeError(f"verify {variant}: host side {self.veth} missing, down or not on {self.bridge}")

    def check_all(self) -> None:
        """Each variant once, verified, then torn down (not timed); the sandbox is empty again."""
        for variant in VARIANTS:
            self.connect(variant)
            self.verify_connected(variant)
            self.disconnect(variant)
        left = [l.get_attr("IFLA_IFNAME") for l in self.ipr_sb.get_links()]
        if left != ["lo"]:
            raise RuntimeError(f"verify: the sandbox still has {left} after disconnect")


def run(args) -> dict:
    tag = rand_tag()
    made_dir = args.ns_dir is None
    ns_dir = args.ns_dir or tempfile.mkdtemp(prefix="nmf-")
    os.makedirs(ns_dir, exist_ok=True)
    own_host_ns = in_initial_netns()
    if own_host_ns:
        print("floor: running in the machine's own network namespace: using a throwaway host namespace "
              "for the bridge", file=sys.stderr)
    floor = Floor(tag, ns_dir)
    samples = {v: {"connect": [], "disconnect": []} for v in VARIANTS}
    try:
        floor.setup(own_host_ns)
        netns_open_ms = floor.open_pyroute2()
        floor.check_all()  # correctness first: each variant once, checked (not timed)
        for i in range(args.warmup + args.runs):
            # rotate the order each iteration: no variant always follows the same one
            # (a veth delete's cost depends on how long ago the previous one was)
            for variant in VARIANTS[i % len(VARIANTS):] + VARIANTS[:i % len(VARIANTS)]:
                t0 = now_ns()
                floor.connect(variant)
                t1 = now_ns()
                floor.disconnect(variant)
                t2 = now_ns()
                if i >= args.warmup:
                    samples[variant]["connect"].append((t1 - t0) / NS_PER_MS)
                    samples[variant]["disconnect"].append((t2 - t1) / NS_PER_MS)
        floor.check_all()  # and still doing the same work at the end
    finally:
        if os.getpid() != MAIN_PID:  # a forked pyroute2 helper unwinding (SIGTERM/SIGINT): not ours to clean
            os._exit(1)
        problems = floor.cleanup()
        if made_dir:
            shutil.rmtree(ns_dir, ignore_errors=True)
        for p in problems:
            print(f"floor: cleanup: {p}", file=sys.stderr)
    result = {"facts": machine_facts(), "runs": args.runs, "warmup": args.warmup,
              "pyroute2_netns_open_ms": netns_open_ms, "variants": {}}
    for variant in VARIANTS:
        s = samples[variant]
        s["pair"] = [c + d for c, d in zip(s["connect"], s["disconnect"])]
        result["variants"][variant] = {
            "samples_ms": s,
            "summary": {k: summary(v) for k, v in s.items()},
        }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="measured iterations per variant (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="uncounted iterations first (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-': stdout)")
    ap.add_argument("--ns-dir", help="directory for the sandbox namespace file (default: a new temp dir)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    result = run(args)
    if args.json == "-":
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        print(f"{'variant':<20} {'step':<11} {'median ms':>10} {'p95 ms':>10}")
        for variant, data in result["variants"].items():
            for step, s in data["summary"].items():
                print(f"{variant:<20} {step:<11} {s['median_ms']:>10.2f} {s['p95_ms']:>10.2f}")
        print(f"pyroute2 IPRoute(netns=...) open: {result['pyroute2_netns_open_ms']:.2f} ms (once)")
    return 0


def _sigterm(_sig, _frame):
    # pyroute2 stops its forked helper with SIGTERM: in that child, exit at once,
    # never unwind into the parent's ``finally`` (it would unmount our namespaces)
    if os.getpid() != MAIN_PID:
        os._exit(1)
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)  # clean up in finally, as on Ctrl-C
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
