"""The observer of overlay.py's convergence runs: a child process that timestamps what each host sees.

    nsenter --net=<host 1 namespace> python overlay_watch.py CONFIG_JSON

It opens, once:

* on every watched host, an rtnetlink socket **inside that host's
  namespace** (``netns.run_in``) subscribed to ``RTNLGRP_NEIGH``: it receives
  every neighbour and FDB change made there (``RTM_NEWNEIGH`` /
  ``RTM_DELNEIGH``, parsed by hand below);
* in the anchor container's sandbox of every watched host, a raw ICMP socket
  (the pinger of the "first ping" figure);
* an etcd watch on the network's peer records (``netmgr.store.etcd``, the
  daemons' own client, from host 1's namespace, where this process runs):
  when the connect's write reaches an independent watcher.

Commands come on stdin, one JSON object a line; answers go to stdout, one a
line. ``arm`` (kind ``add`` or ``del``) drains every socket, answers
``{"armed": run}`` and then waits, without reading stdin, for the probe's
entries to appear (``add``) or go (``del``) on every host, pinging every
``interval_ms`` from one host's anchor until a reply comes (``add``); then it
answers with the timestamps. ``floor`` measures etcd put → watch event with
two clients of its own. A second mode, ``overlay_watch.py --rtnl-probe NAME MS``
(overlay.py ``--rtnl-probe``), times an RTNL-holding request every MS ms until
SIGINT (:func:`rtnl_probe`). Every timestamp is ``time.perf_counter_ns()``
(CLOCK_MONOTONIC, the same clock in every process of the machine), taken
right after ``select`` returns, before parsing.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import socket
import struct
import sys
import threading
import time

from netmgr.runtime import netns

RTNLGRP_NEIGH = 3
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NDA_DST, NDA_LLADDR = 1, 2
AF_BRIDGE = 7
_HDR = struct.Struct("=IHHII")  # nlmsghdr
_NDMSG = struct.Struct("=BBHiHBB")  # ndmsg: family, pad1, pad2, ifindex, state, flags, type
_NLA = struct.Struct("=HH")
_ECHO = struct.Struct("!BBHHH")  # ICMP type, code, checksum, id, seq
PR_SET_PDEATHSIG = 1


def now() -> int:
    return time.perf_counter_ns()


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def neigh_events(data: bytes):
    """(type, family, ifindex, NDA_DST bytes, NDA_LLADDR bytes) of each neighbour message in ``data``."""
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, _seq, _pid = _HDR.unpack_from(data, off)
        if length < 16:
            return
        if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH) and length >= 16 + _NDMSG.size:
            family, _p1, _p2, ifindex, _state, _nflags, _ntype = _NDMSG.unpack_from(data, off + 16)
            dst = lladdr = None
            a, end = off + 16 + _NDMSG.size, off + length
            while a + 4 <= end:
                alen, atype = _NLA.unpack_from(data, a)
                if alen < 4:
                    break
                atype &= 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
                if atype == NDA_DST:
                    dst = bytes(data[a + 4:a + alen])
                elif atype == NDA_LLADDR:
                    lladdr = bytes(data[a + 4:a + alen])
                a += (alen + 3) & ~3
            yield mtype, family, ifindex, dst, lladdr
        off += (length + 3) & ~3


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request (type 8)."""
    body = _ECHO.pack(8, 0, 0, ident, seq) + payload
    return _ECHO.pack(8, 0, checksum(body), ident, seq) + payload


def echo_reply_of(data: bytes, ident: int, src: bytes) -> int | None:
    """The sequence number if ``data`` (an IPv4 packet from a raw socket) is our echo reply from ``src``."""
    ihl = (data[0] & 0x0F) * 4
    if len(data) < ihl + 8 or data[12:16] != src:
        return None
    itype, _code, _csum, rid, seq = _ECHO.unpack_from(data, ihl)
    return seq if itype == 0 and rid == ident else None


def _open_neigh_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: no ENOBUFS during a burst
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 1 << (RTNLGRP_NEIGH - 1)))
    sock.setblocking(False)
    return sock


def _open_icmp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    return sock


class Host:
    """One watched host: its neighbour socket (in its namespace), VXLAN device index and pinger."""

    def __init__(self, spec: dict) -> None:
        self.name = spec["name"]
        self.nl = netns.run_in(spec["netns"], _open_neigh_socket)
        self.vx = netns.run_in(spec["netns"], lambda: socket.if_nametoindex(spec["vx"]))
        self.icmp = netns.run_in(spec["sandbox"], _open_icmp_socket) if spec.get("sandbox") else None


class EtcdWatch:
    """Peer-record events of the network, timestamped on the store's loop thread."""

    def __init__(self, url: str, prefix: str, key_prefix: str) -> None:
        from netmgr.store.etcd import EtcdStore

        self.store = EtcdStore(url, prefix=prefix, timeout=5.0)
        self.events: list[tuple[int, str, dict | None]] = []
        self.cancel = self.store.watch(key_prefix, lambda ev: self.events.append((now(), ev.key, ev.value)))

    def close(self) -> None:
        self.cancel()
        self.store.close()


class Observer:
    """The command loop (see the module docstring)."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.hosts = [Host(spec) for spec in cfg["hosts"]]
        self.by_nl = {h.nl.fileno(): h for h in self.hosts}
        self.etcd = EtcdWatch(cfg["etcd"], cfg["prefix"], cfg["watch"]) if cfg.get("watch") else None
        self.ident = os.getpid() & 0xFFFF
        self.floor_stores = self._floor_stores() if cfg.get("floor_prefix") else None

    def _floor_stores(self):
        """Two clients of their own for the floor; made now, so their threads never run at real-time priority."""
        from netmgr.store.etcd import EtcdStore

        writer = EtcdStore(self.cfg["etcd"], prefix=self.cfg["floor_prefix"], timeout=5.0)
        reader = EtcdStore(self.cfg["etcd"], prefix=self.cfg["floor_prefix"], timeout=5.0)
        self.floor_box: dict = {"event": threading.Event(), "t": 0}

        def seen(_ev) -> None:
            self.floor_box["t"] = now()
            self.floor_box["event"].set()

        return writer, reader, reader.watch("k/", seen)

    def drain(self) -> None:
        for h in self.hosts:
            for sock in (h.nl, h.icmp):
                while sock is not None:
                    try:
                        sock.recv(1 << 16)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:  # ENOBUFS: events were lost while nobody watched; harmless here
                        if exc.errno != errno.ENOBUFS:
                            raise
        if self.etcd:
            self.etcd.events.clear()

    def arm(self, cmd: dict) -> dict:
        """One phase of a run: wait for the probe's entries on every host (and a ping reply)."""
        adding = cmd["kind"] == "add"
        want = RTM_NEWNEIGH if adding else RTM_DELNEIGH
        ip, mac = socket.inet_aton(cmd["ip"]), bytes.fromhex(cmd["mac"].replace(":", ""))
        pinger = next((h for h in self.hosts if h.name == cmd.get("ping_from")), None) if adding else None
        interval = int(cmd.get("interval_ms", 1.0) * 1e6)
        self.drain()
        neigh: dict[str, int] = {}
        fdb: dict[str, int] = {}
        sent: dict[int, int] = {}
        out: dict = {"run": cmd["run"], "kind": cmd["kind"], "overrun": [], "send_errors": 0}
        emit({"armed": cmd["run"]})
        deadline = now() + int(cmd.get("timeout_s", 5.0) * 1e9)
        socks = [h.nl for h in self.hosts] + ([pinger.icmp] if pinger else [])
        seq, next_ping, reply = 0, now(), None
        payload = struct.pack("!q", cmd["run"]) + bytes(48)  # 56 bytes, as ping's default
        while True:
            t = now()
            if pinger and reply is None and t >= next_ping:
                seq = (seq + 1) & 0xFFFF
                try:
                    pinger.icmp.sendto(echo_request(self.ident, seq, payload), (cmd["ip"], 0))
                except OSError:
                    out["send_errors"] += 1
                sent[seq] = t
                next_ping = t + interval
            etcd_t = self._etcd_time(cmd, adding)
            if etcd_t:
                out["etcd"] = etcd_t
            done = len(neigh) == len(self.hosts) and len(fdb) == len(self.hosts)
            done = done and (reply is not None or pinger is None) and (self.etcd is None or "etcd" in out)
            if done or t > deadline:
                break
            wait = (next_ping - t) if pinger and reply is None else 2_000_000
            ready, _, _ = select.select(socks, [], [], max(0, min(wait, deadline - t)) / 1e9)
            t = now()
            for sock in ready:
                if pinger and sock is pinger.icmp:
                    reply = reply or self._read_reply(pinger, ip, sent, t)
                    continue
                host = self.by_nl[sock.fileno()]
                self._read_neigh(host, want, ip, mac, t, neigh, fdb, out)
        out.update(neigh=neigh, fdb=fdb, echoes_sent=len(sent), done=done)
        if reply:
            out["reply"], out["reply_seq_sent"] = reply
        return out

    def _read_neigh(self, host: Host, want: int, ip: bytes, mac: bytes, t: int, neigh: dict, fdb: dict,
                    out: dict) -> None:
        while True:
            try:
                data = host.nl.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                out["overrun"].append(host.name)
                continue
            for mtype, family, ifindex, dst, lladdr in neigh_events(data):
                if mtype != want or ifindex != host.vx:
                    continue
                if family == socket.AF_INET and dst == ip:
                    neigh.setdefault(host.name, t)
                elif family == AF_BRIDGE and lladdr == mac:
                    fdb.setdefault(host.name, t)

    def _read_reply(self, pinger: Host, ip: bytes, sent: dict, t: int):
        while True:
            try:
                data = pinger.icmp.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return None
            seq = echo_reply_of(data, self.ident, ip)
            if seq is not None and seq in sent:
                return t, sent[seq]

    def _etcd_time(self, cmd: dict, adding: bool) -> int | None:
        if self.etcd is None:
            return None
        for t, key, value in list(self.etcd.events):
            if adding and value is not None and str(value.get("ip", "")).split("/")[0] == cmd["ip"]:
                self.peer_key = key
                return t
            if not adding and value is None and key == getattr(self, "peer_key", None):
                return t
        return None

    def floor(self, cmd: dict) -> dict:
        """etcd put (one client) → watch event (another client): ``n`` samples, one at a time.

        Runs on the main thread; with ``rt`` it is switched back to normal scheduling meanwhile,
        so the floor sees the same scheduler as the daemons' clients.
        """
        rt = _set_rt(False) if self.cfg.get("rt") else False
        try:
            return self._floor(cmd["n"])
        finally:
            if rt:
                _set_rt(True)

    def _floor(self, n: int) -> dict:
        writer = self.floor_stores[0]
        box = self.floor_box
        watch_ms, put_ms, lost = [], [], 0
        for i in range(n):
            box["event"].clear()
            t0 = now()
            writer.put(f"k/{i % 8}", {"i": i, "pad": "x" * 200})  # about a peer record's size
            t1 = now()
            if box["event"].wait(5.0):
                watch_ms.append((box["t"] - t0) / 1e6)
                put_ms.append((t1 - t0) / 1e6)
            else:
                lost += 1
            time.sleep(0.005)
        return {"floor": True, "watch_ms": watch_ms, "put_ms": put_ms, "lost": lost}

    def close(self) -> None:
        if self.etcd:
            self.etcd.close()
        if self.floor_stores:
            writer, reader, cancel = self.floor_stores
            cancel()
            writer.close()
            reader.close()
        for h in self.hosts:
            h.nl.close()
            if h.icmp:
                h.icmp.close()


def _set_rt(on: bool) -> bool:
    """This thread (only) to SCHED_FIFO priority 10, or back to SCHED_OTHER; True if it worked."""
    try:
        if on:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        else:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        return True
    except OSError:
        return False


def rtnl_probe(ns_name: str, interval_ms: float) -> int:
    """Time an RTNL-holding request (an FDB replace on a VXLAN device of a private namespace) every
    ``interval_ms`` until SIGINT; print the requests slower than 1 ms and a summary.

    The daemons program peers with the same kind of request; the kernel serialises them on one
    mutex (RTNL) shared by every namespace of the machine, so a long stall here is a stall there.
    """
    import subprocess

    from netmgr.runtime.netlink import Netlink, open_socket

    path = f"/run/netns/{ns_name}"
    subprocess.run(["ip", "netns", "add", ns_name], check=True)
    samples: list[float] = []
    slow: list[tuple[int, float]] = []
    try:
        subprocess.run(["ip", "-n", ns_name, "link", "add", "vx0", "type", "vxlan", "id", "42", "local",
                        "10.9.9.9", "dstport", "4789", "nolearning"], check=True)
        nl = Netlink(netns.run_in(path, open_socket))
        index = nl.link_index("vx0")
        _set_rt(True)
        emit({"ready": True})
        try:
            while True:
                t0 = now()
                nl.fdb_add(index, f"02:00:00:00:00:{len(samples) % 200:02x}", "10.9.9.10")
                ms = (now() - t0) / 1e6
                samples.append(ms)
                if ms > 1.0:
                    slow.append((t0, ms))
                time.sleep(interval_ms / 1000)
        except KeyboardInterrupt:
            pass
        nl.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns_name], check=False)
    ordered = sorted(samples)
    emit({"n": len(samples), "median_ms": ordered[len(ordered) // 2] if ordered else None,
          "p99_ms": ordered[max(0, -(-99 * len(ordered) // 100) - 1)] if ordered else None,
          "max_ms": ordered[-1] if ordered else None, "slow": slow})
    return 0


def main() -> int:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9)  # never outlive overlay.py
    if sys.argv[1] == "--rtnl-probe":
        return rtnl_probe(sys.argv[2], float(sys.argv[3]))
    cfg = json.loads(sys.argv[1])
    obs = Observer(cfg)
    # Timestamps are taken when this thread wakes up: at real-time priority it runs as soon as a
    # netlink event or reply arrives, even on a busy machine. Only this thread: the etcd clients'
    # threads (made above) stay at normal priority, like the daemons'.
    rt = _set_rt(True) if cfg.get("rt") else False
    emit({"ready": True, "vx": {h.name: h.vx for h in obs.hosts}, "rt": rt})
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "arm":
                emit(obs.arm(cmd))
            elif cmd["cmd"] == "floor":
                emit(obs.floor(cmd))
            elif cmd["cmd"] == "quit":
                break
    finally:
        obs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
