"""The embedded DNS server: Docker's 127.0.0.11 in every sandbox, served by the daemon.

One :class:`DNSServer` lives in the daemon's event loop. For each sandbox it
holds one UDP socket and one listening TCP socket, opened *inside* the
sandbox's network namespace (on a throwaway thread, see
:func:`netmgr.runtime.netns.run_in`) and bound to 127.0.0.11:53 there. A
socket stays in the namespace it was created in, so the loop serves every
sandbox without any thread ever switching namespace afterwards.

A query goes through three steps:

1. :func:`netmgr.dns.wire.parse_query`; malformed → FORMERR (or dropped),
   another opcode → NOTIMP.
2. The resolver callback ``resolver(sandbox_id, qname, qtype)`` with the name
   lowercased and without the trailing dot. It is consulted on every query,
   so records follow connect/disconnect/rm at once. An :class:`Answer` means
   the name is ours: its addresses (A/AAAA, rotated per query for round-robin)
   or names (PTR) are answered, nothing of that type is NODATA. ``None`` means
   not ours.
3. Not ours: forwarded to the upstream resolvers in order over UDP, from
   sockets in the daemon's namespace (or ``upstream_netns``), keeping the
   client's query id; the upstream's answer (NXDOMAIN included) is relayed.
   No upstream, or none answers within ``timeout`` → SERVFAIL. A truncated
   upstream answer is retried over TCP for TCP clients and relayed as-is
   (TC set) to UDP clients.

The resolver is called on the event loop's thread and must not block; what
it may answer is its business (the controller only returns records of
networks the asking sandbox is on).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from netmgr.dns import wire
from netmgr.runtime import netns
from netmgr.runtime.netlink import mapped

__all__ = ["Answer", "DNSServer", "Resolver", "upstreams_from_resolv_conf"]

log = logging.getLogger("netmgr.dns")

DEFAULT_TTL = 600
MAX_UDP_ANSWER = 4096  # cap on an EDNS client's advertised size for our own answers
TCP_IDLE_TIMEOUT = 10.0  # a TCP client that sends nothing for this long is dropped
MAX_TCP_CLIENTS = 32  # per sandbox: more connections are closed at once (each costs a daemon fd)
RR_TABLE_MAX = 4096  # round-robin counters kept per sandbox before starting over
POOL_BATCH = 64  # sockets opened per trip into upstream_netns
POOL_LOW = 16  # fetch the next batch in the background below this many
_LEN = struct.Struct("!H")


@dataclass(frozen=True)
class Answer:
    """What the resolver knows about a name that is ours.

    ``addresses`` answer A (the IPv4 ones) and AAAA (the IPv6 ones);
    ``names`` answer PTR. Nothing of the asked type is NODATA (NOERROR, no
    records). ``nxdomain=True`` with nothing else answers NXDOMAIN instead of
    forwarding (e.g. a reverse name in one of our subnets with no container).
    """

    addresses: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    nxdomain: bool = False


Resolver = Callable[[str, str, int], "Answer | None"]
Upstreams = list[tuple[str, int]] | Callable[[], list[tuple[str, int]]]


def upstreams_from_resolv_conf(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The ``nameserver`` entries of a resolv.conf as ``(ip, 53)``, in order; [] if unreadable.

    Every nameserver is kept, loopback ones included: the forwarding sockets
    live in the daemon's namespace, so whether those are reachable is the
    daemon's call.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            out.append((fields[1], 53))
    return out


@dataclass(eq=False)
class _Sandbox:
    """The sockets and in-flight work of one sandbox."""

    id: str
    netns_path: str | None
    udp: asyncio.DatagramTransport | None = None
    tcp: asyncio.AbstractServer | None = None
    sockname: tuple[str, int] = ("", 0)
    tasks: set[asyncio.Task] = field(default_factory=set)
    tcp_clients: int = 0
    rr: dict[tuple[str, int], int] = field(default_factory=dict)


class _UDPProtocol(asyncio.DatagramProtocol):
    """Hands each datagram of one sandbox's socket to the server."""

    def __init__(self, server: DNSServer, sandbox: _Sandbox) -> None:
        self.server = server
        self.sandbox = sandbox

    def datagram_received(self, data: bytes, addr) -> None:
        """One query from a process in the sandbox."""
        self.server._on_udp(self.sandbox, data, addr)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for an earlier reply."""
        # ICMP errors from a client that went away: nothing to do.
        log.debug("dns %s: udp error %s", self.sandbox.id[:12], exc)


class DNSServer:
    """Embedded DNS for many sandboxes from the daemon's event loop.

    ``upstreams`` is a list of ``(ip, port)`` or a callable returning one
    (read on every forwarded query). Forwarding sockets are opened in the
    daemon's namespace, or in ``upstream_netns`` when given (a fake host).
    ``timeout`` is per upstream. ``listen_addr``/``listen_port`` exist for
    tests (port 0: one ephemeral port shared by UDP and TCP).
    ``max_inflight`` bounds concurrent forwarded queries over all sandboxes;
    beyond it clients get SERVFAIL at once.

    ``stats`` counts queries: ``local`` (answered from the resolver),
    ``forwarded`` (upstream answer relayed), ``failed`` (SERVFAIL sent),
    ``malformed`` (FORMERR/NOTIMP sent or dropped).

    Not thread-safe: call it from the loop's thread only (from another
    thread, use ``asyncio.run_coroutine_threadsafe``).
    """

    def __init__(
        self,
        resolver: Resolver,
        upstreams: Upstreams,
        loop: asyncio.AbstractEventLoop | None = None,
        upstream_netns: str | None = None,
        timeout: float = 1.0,
        *,
        listen_addr: str = "127.0.0.11",
        listen_port: int = 53,
        ttl: int = DEFAULT_TTL,
        max_inflight: int = 256,
    ) -> None:
        self.resolver = resolver
        self.upstreams = upstreams
        self.loop = loop
        self.upstream_netns = upstream_netns
        self.timeout = timeout
        self.listen_addr = listen_addr
        self.listen_port = listen_port
        self.ttl = ttl
        self.max_inflight = max_inflight
        self.stats: dict[str, int] = {"local": 0, "forwarded": 0, "failed": 0, "malformed": 0}
        self._sandboxes: dict[str, _Sandbox] = {}
        self._lock = asyncio.Lock()
        self._inflight = 0
        self._pool = _SocketPool(upstream_netns) if upstream_netns else None

    # ------------------------------------------------------------ sandboxes

    async def add_sandbox(self, sandbox_id: str, netns_path: str | None) -> None:
        """Serve ``sandbox_id`` on listen_addr:listen_port inside ``netns_path``.

        ``netns_path`` None means the current namespace (tests). Idempotent;
        a new path for a known sandbox replaces its sockets. Errors are
        netmgr errors (e.g. PermissionDenied without root).
        """
        async with self._lock:
            loop = self._loop()
            old = self._sandboxes.get(sandbox_id)
            if old is not None and old.netns_path == netns_path:
                return
            if old is not None:
                await self._close_sandbox(self._sandboxes.pop(sandbox_id))
            sb = _Sandbox(sandbox_id, netns_path)
            with mapped(f"open DNS server in sandbox {sandbox_id[:12]}"):
                if netns_path is None:
                    udp_sock, tcp_sock = self._open_listeners()
                else:
                    udp_sock, tcp_sock = netns.run_in(netns_path, self._open_listeners)
            sb.sockname = udp_sock.getsockname()[:2]
            try:
                sb.udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UDPProtocol(self, sb), sock=udp_sock
                )
                sb.tcp = await asyncio.start_server(
                    functools.partial(self._tcp_client, sb), sock=tcp_sock
                )
            except BaseException:
                if sb.udp is not None:
                    sb.udp.close()
                udp_sock.close()
                tcp_sock.close()
                raise
            self._sandboxes[sandbox_id] = sb

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Stop serving ``sandbox_id``: close its sockets, cancel its queries. Idempotent."""
        async with self._lock:
            sb = self._sandboxes.pop(sandbox_id, None)
            if sb is not None:
                await self._close_sandbox(sb)

    def sandboxes(self) -> list[str]:
        """The ids of the sandboxes being served."""
        return list(self._sandboxes)

    def sockname(self, sandbox_id: str) -> tuple[str, int]:
        """The ``(address, port)`` a sandbox is served on (UDP and TCP alike)."""
        return self._sandboxes[sandbox_id].sockname

    async def close(self) -> None:
        """Stop serving every sandbox and drop pooled upstream sockets."""
        async with self._lock:
            while self._sandboxes:
                _, sb = self._sandboxes.popitem()
                await self._close_sandbox(sb)
            if self._pool is not None:
                await self._pool.close()
                self._pool = _SocketPool(self.upstream_netns)

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return self.loop

    def _open_listeners(self) -> tuple[socket.socket, socket.socket]:
        """Bind the UDP and TCP sockets (runs inside the sandbox's namespace)."""
        family = socket.AF_INET6 if ":" in self.listen_addr else socket.AF_INET
        for _ in range(20 if self.listen_port == 0 else 1):
            udp = socket.socket(
                family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
            )
            tcp = socket.socket(
                family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
            )
            try:
                udp.bind((self.listen_addr, self.listen_port))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.listen_addr, udp.getsockname()[1]))
                tcp.listen(128)
                return udp, tcp
            except OSError as exc:
                udp.close()
                tcp.close()
                # With an ephemeral port, TCP may already use UDP's number: draw again.
                if self.listen_port != 0 or exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")

    async def _close_sandbox(self, sb: _Sandbox) -> None:
        if sb.udp is not None:
            sb.udp.close()
        if sb.tcp is not None:
            sb.tcp.close()
        tasks = list(sb.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if sb.tcp is not None:
            await sb.tcp.wait_closed()
        sb.rr.clear()

    # ------------------------------------------------------------ answering

    def _on_udp(self, sb: _Sandbox, data: bytes, addr) -> None:
        reply, query = self._answer_locally(sb, data, tcp=False)
        if reply is not None:
            sb.udp.sendto(reply, addr)
        elif query is not None:
            self._spawn(sb, self._forward_udp(sb, data, query, addr))

    def _answer_locally(
        self, sb: _Sandbox, data: bytes, tcp: bool
    ) -> tuple[bytes | None, wire.Query | None]:
        """``(reply, None)``, or ``(None, query)`` to forward, or ``(None, None)`` to drop."""
        try:
            query = wire.parse_query(data)
        except wire.WireError as exc:
            self.stats["malformed"] += 1
            return (wire.error_response(data, exc.rcode) if exc.rcode else None), None
        if query.qclass != wire.CLASS_IN:
            return None, query
        name = query.qname.lower()
        try:
            answer = self.resolver(sb.id, name, query.qtype)
            if answer is None:
                return None, query
            reply = self._encode(sb, query, name, answer, tcp)
        except Exception:
            log.exception("dns %s: answering %s type %d", sb.id[:12], name, query.qtype)
            self.stats["failed"] += 1
            return wire.response(query, wire.SERVFAIL), None
        self.stats["local"] += 1
        return reply, None

    def _encode(
        self, sb: _Sandbox, query: wire.Query, name: str, answer: Answer, tcp: bool
    ) -> bytes:
        qtype, ttl = query.qtype, self.ttl
        records: list[bytes] = []
        if answer.addresses and qtype in (wire.A, wire.AAAA, wire.ANY):
            addresses = answer.addresses
            if qtype != wire.ANY:  # keep one family, then rotate within it
                v6 = qtype == wire.AAAA
                addresses = tuple(a for a in addresses if (":" in a) is v6)
            if len(addresses) > 1:
                addresses = self._rotate(sb, name, qtype, addresses)
            for address in addresses:
                records.append(
                    wire.rr_aaaa(address, ttl) if ":" in address else wire.rr_a(address, ttl)
                )
        if answer.names and qtype in (wire.PTR, wire.ANY):
            records.extend(wire.rr_ptr(target, ttl) for target in answer.names)
        nxdomain = answer.nxdomain and not (answer.addresses or answer.names)
        rcode = wire.NXDOMAIN if nxdomain else wire.NOERROR
        max_size = 65535 if tcp else min(query.udp_size, MAX_UDP_ANSWER)
        return wire.response(query, rcode, records, max_size=max_size)

    @staticmethod
    def _rotate(sb: _Sandbox, name: str, qtype: int, addresses: tuple[str, ...]) -> tuple[str, ...]:
        """Round-robin: each query for the same (name, type) starts one address further."""
        key = (name, qtype)
        n = sb.rr.get(key, 0)
        if len(sb.rr) >= RR_TABLE_MAX and n == 0:
            sb.rr.clear()
        sb.rr[key] = n + 1
        k = n % len(addresses)
        return addresses[k:] + addresses[:k]

    # ------------------------------------------------------------ TCP clients

    async def _tcp_client(
        self, sb: _Sandbox, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve length-prefixed queries on one connection until EOF, error or idle timeout."""
        if sb.tcp_clients >= MAX_TCP_CLIENTS:
            writer.close()
            return
        task = asyncio.current_task()
        sb.tasks.add(task)
        sb.tcp_clients += 1
        try:
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                (size,) = _LEN.unpack(prefix)
                data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_TIMEOUT)
                reply, query = self._answer_locally(sb, data, tcp=True)
                if query is not None:
                    reply = await self._forwarded_reply(data, query, tcp=True)
                if reply is None:
                    break  # not even a header: nothing sensible to say on this stream
                writer.write(_LEN.pack(len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            sb.tcp_clients -= 1
            sb.tasks.discard(task)
            writer.close()

    # ------------------------------------------------------------ forwarding

    def _spawn(self, sb: _Sandbox, coro) -> None:
        task = self._loop().create_task(coro)
        sb.tasks.add(task)
        task.add_done_callback(sb.tasks.discard)

    async def _forward_udp(self, sb: _Sandbox, data: bytes, query: wire.Query, addr) -> None:
        reply = await self._forwarded_reply(data, query, tcp=False)
        if sb.udp is not None and not sb.udp.is_closing():
            sb.udp.sendto(reply, addr)

    async def _forwarded_reply(self, data: bytes, query: wire.Query, tcp: bool) -> bytes:
        """The upstream's answer to ``data``, or SERVFAIL; counts it in ``stats``."""
        reply = None
        if self._inflight < self.max_inflight:
            self._inflight += 1
            try:
                reply = await self._exchange(data, query, tcp)
            finally:
                self._inflight -= 1
        if reply is None:
            self.stats["failed"] += 1
            return wire.response(query, wire.SERVFAIL)
        self.stats["forwarded"] += 1
        return reply

    def _upstream_list(self) -> list[tuple[str, int]]:
        """The upstreams to try, in order; IP literals only (a name would need a lookup)."""
        upstreams = self.upstreams
        if callable(upstreams):
            try:
                upstreams = upstreams()
            except Exception:
                log.exception("dns: reading upstream resolvers")
                return []
        return [(host, port) for host, port in upstreams if _is_ip(host)]

    async def _exchange(self, data: bytes, query: wire.Query, tcp: bool) -> bytes | None:
        """Ask each upstream in turn; the first usable answer, or None."""
        for host, port in self._upstream_list():
            try:
                reply = await asyncio.wait_for(
                    self._udp_exchange(host, port, data, query), self.timeout
                )
                if tcp and (reply[2] << 8 | reply[3]) & wire.TC:
                    reply = await asyncio.wait_for(
                        self._tcp_exchange(host, port, data, query), self.timeout
                    )
                return reply
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                log.debug("dns: upstream %s:%d: %r", host, port, exc)
        return None

    def _upstream_socket(self, host: str, kind: int) -> socket.socket:
        """A fresh non-blocking socket in the daemon's (or ``upstream_netns``) namespace."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if self._pool is not None:
            return self._pool.take(self._loop(), family, kind)
        return socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    async def _udp_exchange(self, host: str, port: int, data: bytes, query: wire.Query) -> bytes:
        loop = self._loop()
        with self._upstream_socket(host, socket.SOCK_DGRAM) as sock:
            # Connected: the kernel drops datagrams from anyone else, and a fresh
            # socket per query gets a fresh random source port.
            sock.connect((host, port))
            await loop.sock_sendall(sock, data)
            while True:
                reply = await loop.sock_recv(sock, 65535)
                if _matches(reply, query):
                    return reply

    async def _tcp_exchange(self, host: str, port: int, data: bytes, query: wire.Query) -> bytes:
        loop = self._loop()
        with self._upstream_socket(host, socket.SOCK_STREAM) as sock:
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, _LEN.pack(len(data)) + data)
            size = _LEN.unpack(await _recv_exactly(loop, sock, 2))[0]
            reply = await _recv_exactly(loop, sock, size)
            if not _matches(reply, query):
                raise OSError("upstream TCP answer does not match the query")
            return reply


class _SocketPool:
    """Unused sockets opened in another namespace, fetched ahead of need.

    Opening a socket inside a namespace costs a throwaway thread (~0.4 ms,
    with spikes of several ms), so sockets come in batches, and the next batch
    is opened from an executor thread while the pool still has some left.
    """

    def __init__(self, netns_path: str) -> None:
        self.netns_path = netns_path
        self.free: dict[tuple[int, int], list[socket.socket]] = {}
        self.refills: dict[tuple[int, int], asyncio.Future] = {}
        self.closed = False

    def take(self, loop: asyncio.AbstractEventLoop, family: int, kind: int) -> socket.socket:
        """One socket; only a burst that outran the background refill waits for a batch."""
        key = (family, kind)
        free = self.free.setdefault(key, [])
        if len(free) <= POOL_LOW and key not in self.refills:
            fut = loop.run_in_executor(None, self._open_batch, family, kind)
            self.refills[key] = fut
            fut.add_done_callback(functools.partial(self._refilled, key))
        if not free:
            free.extend(self._open_batch(family, kind))
        return free.pop()

    def _open_batch(self, family: int, kind: int) -> list[socket.socket]:
        flags = kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        return netns.run_in(
            self.netns_path, lambda: [socket.socket(family, flags) for _ in range(POOL_BATCH)]
        )

    def _refilled(self, key: tuple[int, int], fut: asyncio.Future) -> None:
        self.refills.pop(key, None)
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.warning("dns: opening sockets in %s: %s", self.netns_path, fut.exception())
            return
        if self.closed:
            for sock in fut.result():
                sock.close()
        else:
            self.free.setdefault(key, []).extend(fut.result())

    async def close(self) -> None:
        """Close every pooled socket, also those of a batch still being opened."""
        self.closed = True
        pending = list(self.refills.values())
        if pending:
            await asyncio.wait(pending)
            await asyncio.sleep(0)  # let _refilled run for them
        for socks in self.free.values():
            for sock in socks:
                sock.close()
        self.free.clear()


def _is_ip(host: str) -> bool:
    try:
        if ":" in host:
            socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        else:
            socket.inet_pton(socket.AF_INET, host)
        return True
    except OSError:
        return False


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), n)
        buf += chunk
    return bytes(buf)


def _matches(reply: bytes, query: wire.Query) -> bool:
    """Is ``reply`` a response to ``query`` (same id, and same question unless it has none)?"""
    if len(reply) < 12 or not reply[2] & 0x80 or (reply[0] << 8 | reply[1]) != query.id:
        return False
    if reply[4] == 0 and reply[5] == 0:
        return True  # e.g. FORMERR without the question
    q = query.question
    return reply[12 : 12 + len(q)].lower() == q.lower()
