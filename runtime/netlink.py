"""The one thin layer over rtnetlink.

Requests go over a plain ``AF_NETLINK`` socket that we own, encoded by
:mod:`netmgr.runtime.nlmsg` with ``struct`` (a few µs each); only dumps are
decoded with pyroute2's message classes, and this is the only module that
imports pyroute2. pyroute2's high-level ``IPRoute`` costs about 1 ms of
Python per request in 0.9.x, its message classes ~0.3 ms to encode a nested
request; the attach path issues five (``labs/bench/attach.py`` measures the
pyroute2 floor and netmgr side by side).

This module also owns:

* the errno → :mod:`netmgr.errors` mapping (:func:`mapped`), so callers never
  see ``OSError`` from netlink;
* the retry of dumps interrupted by ``NLM_F_DUMP_INTR`` (the kernel sets it
  when the table changed during the dump; CNI's netlinksafe retries 5 times).

A :class:`Netlink` object is bound to the network namespace its socket was
opened in (see :mod:`netmgr.runtime.netns` for opening one inside a sandbox);
it is not thread-safe: the controller uses it from its single worker thread.
"""

from __future__ import annotations

import contextlib
import errno as E
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_SETLINK,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netmgr import errors
from netmgr.runtime import nlmsg

NETLINK_ROUTE = 0
NLM_F_DUMP_INTR = 0x10
IFF_UP = 0x1
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
DUMP_RETRIES = 5
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid

__all__ = ["Netlink", "Link", "Route", "mapped", "open_socket"]


@dataclass(frozen=True)
class Link:
    """One network device as a dump reports it."""

    index: int
    name: str
    kind: str
    master: int
    up: bool
    mac: str
    mtu: int


@dataclass(frozen=True)
class Route:
    """One IPv4/IPv6 route (only what overlap checks and tests need)."""

    dst: str  # CIDR, "0.0.0.0/0" for the default route
    gateway: str | None
    oif: int
    table: int


_ERRNO_CLASS = {
    E.EEXIST: errors.AlreadyExists,
    E.ENODEV: errors.NotFound,
    E.ENOENT: errors.NotFound,
    E.ESRCH: errors.NotFound,
    E.EPERM: errors.PermissionDenied,
    E.EACCES: errors.PermissionDenied,
    E.EADDRNOTAVAIL: errors.NotFound,
}


def error_for(code: int, context: str) -> errors.NetmgrError:
    """The netmgr error for a kernel errno, with ``context`` in front of strerror."""
    cls = _ERRNO_CLASS.get(code)
    msg = f"{context}: {os.strerror(code)}" if context else os.strerror(code)
    if cls is None:
        return errors.KernelError(msg, errno=code)
    return cls(msg)


@contextlib.contextmanager
def mapped(context: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a typed netmgr error."""
    try:
        yield
    except errors.NetmgrError as exc:
        raise exc.wrap(context) from exc
    except OSError as exc:
        raise error_for(exc.errno or E.EIO, context) from exc


def open_socket() -> socket.socket:
    """A bound rtnetlink socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


class Netlink:
    """An rtnetlink socket bound to one network namespace, with typed helpers."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else open_socket()
        if self.sock.getsockname()[0] == 0:
            self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self.sock.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport ---------------------------------------------------------

    def _encode(self, msg, mtype: int, flags: int) -> tuple[bytes, int]:
        self._seq += 1
        if isinstance(msg, nlmsg.RawMsg):
            return msg.encode(mtype, flags | NLM_F_REQUEST, self._seq), self._seq
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags | NLM_F_REQUEST
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        return bytes(msg.data), self._seq

    def _read_acks(self, pending: dict[int, str]) -> None:
        """Read until every seq in ``pending`` is acknowledged; raise the first error."""
        first_err: errors.NetmgrError | None = None
        while pending:
            data = self.sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, offset)
                if mtype == NLMSG_ERROR and seq in pending:
                    (code,) = struct.unpack_from("=i", data, offset + 16)
                    ctx = pending.pop(seq)
                    if code and first_err is None:
                        first_err = error_for(-code, ctx)
                offset += max(length, 16) + (-length % 4)
        if first_err is not None:
            raise first_err

    def request(self, *steps: tuple[object, int, int, str]) -> None:
        """Send ``(msg, type, flags, context)`` steps in one datagram; wait for every ack.

        The kernel processes them in order; the first failure is raised (later
        steps may have run, so callers batch only steps that depend on
        each other: a failed address add makes the route add fail too).
        """
        out = bytearray()
        pending: dict[int, str] = {}
        for msg, mtype, flags, ctx in steps:
            data, seq = self._encode(msg, mtype, flags | NLM_F_ACK)
            out += data
            pending[seq] = ctx
        self.sock.send(bytes(out))
        self._read_acks(pending)

    def dump(self, msg, mtype: int, cls) -> list:
        """A decoded dump, retried while the kernel flags it interrupted."""
        for _ in range(DUMP_RETRIES):
            result, interrupted = self._dump_once(msg, mtype, cls)
            if not interrupted:
                return result
        raise errors.KernelError("netlink dump interrupted %d times" % DUMP_RETRIES, errno=E.EINTR)

    def _dump_once(self, msg, mtype: int, cls) -> tuple[list, bool]:
        data, seq = self._encode(msg, mtype, NLM_F_DUMP)
        self.sock.send(data)
        result, interrupted = [], False
        while True:
            buf = self.sock.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(buf):
                length, rtype, flags, rseq, _pid = _HDR.unpack_from(buf, offset)
                chunk = buf[offset : offset + length]
                offset += max(length, 16) + (-length % 4)
                if rseq != seq:
                    continue
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if rtype == NLMSG_DONE:
                    return result, interrupted
                if rtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", chunk, 16)
                    raise error_for(-code, "netlink dump")
                parsed = cls(chunk)
                parsed.decode()
                result.append(parsed)

    # -- links ---------------------------------------------------------------

    def link_index(self, name: str) -> int | None:
        """The ifindex of ``name`` in this namespace, or None (one GETLINK, header parse only)."""
        data, seq = self._encode(nlmsg.ifinfo(attrs=nlmsg.nla_str(nlmsg.IFLA_IFNAME, name)), RTM_GETLINK, 0)
        self.sock.send(data)
        while True:
            buf = self.sock.recv(65536)
            _len, mtype, _fl, rseq, _pid = _HDR.unpack_from(buf, 0)
            if rseq != seq:
                continue
            if mtype == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", buf, 16)
                if -code in (E.ENODEV, E.ENOENT):
                    return None
                raise error_for(-code, f"get link {name}")
            # ifinfmsg: family(B) pad(B) type(H) index(i) after the 16-byte header
            return struct.unpack_from("=i", buf, 20)[0]

    def add_bridge(self, name: str, mtu: int | None = None, mac: str | None = None,
                   mcast_snooping: bool | None = None) -> int:
        """Create a bridge (down) and return its ifindex.

        ``mac``: a fixed address (otherwise the kernel gives the bridge the
        lowest MAC of its ports, and changes it as ports come and go);
        ``mcast_snooping``: None keeps the kernel's default (on).
        """
        info = nlmsg.linkinfo("bridge", nlmsg.bridge_data(mcast_snooping))
        msg = nlmsg.ifinfo(attrs=nlmsg.link_attrs(name, mtu, mac) + info)
        self.request((msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"add bridge {name}"))
        return self._index_or_fail(name)

    def set_bridge(self, index: int, mcast_snooping: bool) -> None:
        """Change a bridge's options (IFLA_BR_*) in place."""
        info = nlmsg.linkinfo("bridge", nlmsg.bridge_data(mcast_snooping))
        self.request((nlmsg.ifinfo(index, attrs=info), RTM_NEWLINK, 0, f"set bridge {index}"))

    def add_veth(
        self,
        name: str,
        peer_name: str,
        peer_netns_fd: int | None = None,
        peer_mac: str | None = None,
        mtu: int | None = None,
        master: int | None = None,
        up: bool = False,
    ) -> None:
        """Create a veth pair with its peer directly inside ``peer_netns_fd``.

        Creating the peer in place avoids a later move between namespaces,
        which waits for an RCU grace period (~15-20 ms). ``master`` and
        ``up`` apply to the host side in the same request (one round trip).
        """
        info = nlmsg.linkinfo("veth", nlmsg.veth_peer(peer_name, peer_netns_fd, peer_mac, mtu))
        flags = IFF_UP if up else 0
        msg = nlmsg.ifinfo(flags=flags, change=flags, attrs=nlmsg.link_attrs(name, mtu, None, master) + info)
        self.request((msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"add veth {name}"))

    def add_vxlan(self, name: str, vni: int, local: str, port: int = 4789, mtu: int | None = None,
                  underlay_index: int | None = None, master: int | None = None, up: bool = True) -> int:
        """Create a VXLAN device with learning off and ARP proxy on; return its index.

        With learning off and no all-zeros FDB entry nothing is flooded to
        other hosts: every remote MAC and IP is programmed (:meth:`fdb_add`,
        :meth:`neigh_add`), and the device answers ARP from its neighbour table.
        """
        info = nlmsg.linkinfo("vxlan", nlmsg.vxlan_data(vni, local, port, underlay_index))
        flags = IFF_UP if up else 0
        msg = nlmsg.ifinfo(flags=flags, change=flags, attrs=nlmsg.link_attrs(name, mtu, None, master) + info)
        self.request((msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"add vxlan {name} (VNI {vni})"))
        return self._index_or_fail(name)

    def fdb_add(self, index: int, mac: str, dst: str) -> None:
        """Frames for ``mac`` on the VXLAN device ``index`` go to VTEP ``dst`` (replaces)."""
        self.request((nlmsg.fdb(index, mac, dst), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, f"add fdb {mac}"))

    def fdb_del(self, index: int, mac: str, dst: str | None = None) -> None:
        """Remove an FDB entry; already gone is success."""
        with contextlib.suppress(errors.NotFound):
            self.request((nlmsg.fdb(index, mac, dst), RTM_DELNEIGH, 0, f"delete fdb {mac}"))

    def fdb_pin(self, port_index: int, mac: str) -> None:
        """Pin ``mac`` to the bridge port ``port_index`` (a static entry; moves a learned one there)."""
        self.request((nlmsg.fdb_static(port_index, mac), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE,
                      f"pin fdb {mac}"))

    def neigh_add(self, index: int, address: str, mac: str) -> None:
        """A permanent neighbour entry ``address`` → ``mac`` on ``index`` (replaces)."""
        self.request((nlmsg.neigh(index, address, mac), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE,
                      f"add neighbour {address}"))

    def peer_add(self, index: int, mac: str, dst: str, addresses: list[str]) -> None:
        """:meth:`fdb_add` and a :meth:`neigh_add` per address, in one datagram (one round trip)."""
        steps = [(nlmsg.fdb(index, mac, dst), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, f"add fdb {mac}")]
        steps += [(nlmsg.neigh(index, a, mac), RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, f"add neighbour {a}")
                  for a in addresses]
        self.request(*steps)

    def neigh_del(self, index: int, address: str, mac: str = "00:00:00:00:00:00") -> None:
        """Remove a neighbour entry; already gone is success."""
        with contextlib.suppress(errors.NotFound):
            self.request((nlmsg.neigh(index, address, mac), RTM_DELNEIGH, 0, f"delete neighbour {address}"))

    def _index_or_fail(self, name: str) -> int:
        index = self.link_index(name)
        if index is None:
            raise errors.KernelError(f"link {name} vanished right after creation", errno=E.ENODEV)
        return index

    def set_link_msg(self, index: int, up: bool | None = None, master: int | None = None,
                     mtu: int | None = None, name: str | None = None, mac: str | None = None):
        """Build (not send) an RTM_NEWLINK that changes an existing link."""
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        return nlmsg.ifinfo(index, flags, change, nlmsg.link_attrs(name, mtu, mac, master))

    def set_link(self, index: int, **changes) -> None:
        """Change an existing link: up, master, mtu, name, mac."""
        self.request((self.set_link_msg(index, **changes), RTM_NEWLINK, 0, f"set link {index}"))

    def move_link(self, index: int, netns_fd: int, name: str | None = None, mac: str | None = None) -> None:
        """Move a link into the namespace ``netns_fd``, renamed to ``name``, with MAC ``mac``.

        One request: the kernel moves the device first (which takes it down and
        waits for an RCU grace period, ~15-20 ms), then renames it there, so the
        new name only has to be free in the target namespace.
        """
        msg = nlmsg.ifinfo(index, attrs=nlmsg.link_attrs(name, None, mac, None, netns_fd))
        self.request((msg, RTM_NEWLINK, 0, f"move link {index} to another namespace as {name or index}"))

    def del_link(self, index: int | None = None, name: str | None = None) -> bool:
        """Delete a link by index or by name (no lookup); already gone is success (False)."""
        msg = nlmsg.ifinfo(index or 0, attrs=b"" if index is not None else nlmsg.nla_str(nlmsg.IFLA_IFNAME, name or ""))
        try:
            self.request((msg, RTM_DELLINK, 0, f"delete link {name or index}"))
        except errors.NotFound:
            return False
        return True

    def set_hairpin(self, index: int, on: bool = True) -> None:
        """Let a bridge port send frames back out the port they came in on.

        Needed when a container reaches its own published port through the
        host's address. Built by hand: the bridge only accepts IFLA_PROTINFO
        with NLA_F_NESTED set, which pyroute2's encoder leaves out.
        """
        self._seq += 1
        brport_mode = struct.pack("=HHB3x", 5, 4, 1 if on else 0)  # IFLA_BRPORT_MODE (4), u8
        protinfo = struct.pack("=HH", 4 + len(brport_mode), 12 | 0x8000) + brport_mode  # IFLA_PROTINFO|NESTED
        body = struct.pack("=BxHiII", socket.AF_BRIDGE, 0, index, 0, 0) + protinfo
        header = _HDR.pack(16 + len(body), RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
        self.sock.send(header + body)
        self._read_acks({self._seq: f"set hairpin on link {index}"})

    def links(self) -> list[Link]:
        """Every link in this namespace."""
        return [_link_from(m) for m in self.dump(ifinfmsg(), RTM_GETLINK, ifinfmsg)]

    # -- addresses and routes --------------------------------------------

    def addr_msg(self, index: int, address: str, prefixlen: int):
        """Build an RTM_NEWADDR/DELADDR body for ``address/prefixlen`` on ``index``."""
        return nlmsg.ifaddr(index, address, prefixlen)

    def add_addr(self, index: int, address: str, prefixlen: int) -> None:
        """Add one address; an identical existing address is an AlreadyExists error."""
        self.request((self.addr_msg(index, address, prefixlen), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
                      f"add address {address}/{prefixlen}"))

    def del_addr(self, index: int, address: str, prefixlen: int) -> None:
        """Remove one address; already gone is success."""
        with contextlib.suppress(errors.NotFound):
            self.request((self.addr_msg(index, address, prefixlen), RTM_DELADDR, 0, f"delete address {address}"))

    def route_msg(self, dst: str, gateway: str | None = None, oif: int | None = None, table: int = 254):
        """Build an RTM_NEWROUTE/DELROUTE body; ``dst`` is a CIDR or 'default'."""
        return nlmsg.rtmsg(dst, gateway, oif, table)

    def add_route(self, dst: str, gateway: str | None = None, oif: int | None = None) -> None:
        """Add a route; an existing identical route is AlreadyExists."""
        self.request((self.route_msg(dst, gateway, oif), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, f"add route {dst}"))

    def del_route(self, dst: str, gateway: str | None = None, oif: int | None = None) -> None:
        """Remove a route; already gone is success."""
        with contextlib.suppress(errors.NotFound):
            self.request((self.route_msg(dst, gateway, oif), RTM_DELROUTE, 0, f"delete route {dst}"))

    def routes(self, family: int = AF_INET) -> list[Route]:
        """Routes of the main table (and other non-local tables) of ``family``."""
        msg = rtmsg()
        msg["family"] = family
        out = []
        for m in self.dump(msg, RTM_GETROUTE, rtmsg):
            table = m.get_attr("RTA_TABLE") or m["table"]
            if table == 255:  # the local table: host's own addresses, not reachable subnets
                continue
            dst = m.get_attr("RTA_DST") or ("::" if family == AF_INET6 else "0.0.0.0")
            out.append(Route(f"{dst}/{m['dst_len']}", m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_OIF") or 0, table))
        return out

    def addresses(self, family: int = 0) -> list[tuple[int, str, int]]:
        """(ifindex, address, prefixlen) of every address in this namespace."""
        msg = ifaddrmsg()
        msg["family"] = family
        return [(m["index"], m.get_attr("IFA_ADDRESS"), m["prefixlen"]) for m in self.dump(msg, RTM_GETADDR, ifaddrmsg)]


def _link_from(m) -> Link:
    info = m.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else ""
    return Link(
        index=m["index"],
        name=m.get_attr("IFLA_IFNAME"),
        kind=kind or "",
        master=m.get_attr("IFLA_MASTER") or 0,
        up=bool(m["flags"] & IFF_UP),
        mac=m.get_attr("IFLA_ADDRESS") or "",
        mtu=m.get_attr("IFLA_MTU") or 0,
    )
