"""netmgr.dns.server without root: sandboxes served on 127.0.0.1 ephemeral ports in this namespace.

The "upstream resolver" is :class:`FakeUpstream`, a tiny DNS server of our own
on 127.0.0.1; no query ever leaves loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time

import pytest

from netmgr import errors
from netmgr.dns import Answer, DNSServer, ptr_to_ip, upstreams_from_resolv_conf, wire

RECORDS = {
    "sb1": {
        "web": ("10.0.0.2", "fd00::2"),
        "db": ("10.0.0.3",),
        "lb": ("10.0.0.10", "10.0.0.11", "10.0.0.12"),
        "lb6": ("10.0.0.10", "fd00::10", "10.0.0.11", "fd00::11"),
        "many": tuple(f"10.0.1.{i}" for i in range(1, 101)),
    },
    "sb2": {"web": ("10.1.0.2",), "cache": ("10.1.0.9",)},
}


def resolver(sandbox_id: str, name: str, qtype: int) -> Answer | None:
    """Like the controller's: only the records of the asking sandbox's networks."""
    records = RECORDS.get(sandbox_id, {})
    if qtype == wire.PTR:
        ip = ptr_to_ip(name)
        names = tuple(f"{n}.cnet" for n, addrs in records.items() if ip in addrs)
        return Answer(names=names) if names else None
    if name in records:
        return Answer(addresses=records[name])
    if name == "gone.cnet":
        return Answer(nxdomain=True)
    if name == "boom":
        raise RuntimeError("resolver bug")
    return None


# ------------------------------------------------------------------ a fake upstream


class FakeUpstream:
    """A DNS server of our own: A records from ``records``, NXDOMAIN otherwise.

    Names in ``silent`` get no answer, names in ``truncated`` get an empty
    TC answer over UDP (and the full one over TCP). ``spoof_first`` sends a
    reply with a wrong id before the real one. ``seen`` logs
    ``(proto, id, qname)``. UDP and TCP share one port.
    """

    def __init__(self, records: dict[str, tuple[str, ...]] | None = None) -> None:
        self.records = records or {}
        self.silent: set[str] = set()
        self.truncated: set[str] = set()
        self.spoof_first = False
        self.seen: list[tuple[str, int, str]] = []
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.AbstractServer | None = None
        self.addr: tuple[str, int] = ("", 0)

    @staticmethod
    def open_sockets(host: str = "127.0.0.1", port: int = 0) -> tuple[socket.socket, socket.socket]:
        """Bind UDP and TCP on one port (call inside the namespace wanted)."""
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            try:
                udp.bind((host, port))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, udp.getsockname()[1]))
                tcp.listen(16)
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
                if port:
                    raise
        raise OSError("no free port")

    async def start(self, socks: tuple[socket.socket, socket.socket] | None = None) -> FakeUpstream:
        udp_sock, tcp_sock = socks or self.open_sockets()
        self.addr = udp_sock.getsockname()[:2]
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(lambda: _FakeUDP(self), sock=udp_sock)
        self.tcp = await asyncio.start_server(self._tcp, sock=tcp_sock)
        return self

    async def stop(self) -> None:
        self.udp.close()
        self.tcp.close()
        await self.tcp.wait_closed()

    def reply(self, data: bytes, proto: str) -> list[bytes]:
        q = wire.parse_query(data)
        self.seen.append((proto, q.id, q.qname))
        name = q.qname.lower()
        if name in self.silent:
            return []
        if proto == "udp" and name in self.truncated:
            out = bytearray(wire.response(q))
            out[2] |= wire.TC >> 8
            return [bytes(out)]
        if name in self.records or name in self.truncated:
            addrs = self.records.get(name, tuple(f"10.9.{i // 256}.{i % 256}" for i in range(200)))
            out = wire.response(q, answers=[wire.rr_a(a, 30) for a in addrs], ra=True)
        else:
            out = wire.response(q, wire.NXDOMAIN)
        if self.spoof_first:
            return [struct.pack("!H", (q.id + 1) & 0xFFFF) + out[2:], out]
        return [out]

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                for out in self.reply(await reader.readexactly(size), "tcp"):
                    writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        writer.close()


class _FakeUDP(asyncio.DatagramProtocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    def datagram_received(self, data: bytes, addr) -> None:
        for out in self.upstream.reply(data, "udp"):
            self.upstream.udp.sendto(out, addr)


# ------------------------------------------------------------------ clients and harness


async def udp_ask(addr, data: bytes, timeout: float = 3.0) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(addr)
        await loop.sock_sendall(sock, data)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)


async def ask(addr, name: str, qtype: int = wire.A, qid: int = 4321, **kw) -> wire.Message:
    return wire.decode_message(await udp_ask(addr, wire.build_query(name, qtype, qid, **kw)))


async def tcp_ask(addr, *queries: bytes) -> list[bytes]:
    reader, writer = await asyncio.open_connection(*addr)
    try:
        out = []
        for data in queries:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3))[0]
            out.append(await reader.readexactly(size))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


def addresses(msg: wire.Message) -> list[str]:
    return [r.data for r in msg.answers]


def run(body, upstream_records=None, sandboxes=("sb1", "sb2"), upstreams="fake", **kw):
    """Run ``body(srv, addrs, fake)`` against a fresh server; check nothing leaks afterwards."""

    async def main():
        fds = set(os.listdir("/proc/self/fd"))
        fake = await FakeUpstream(upstream_records).start()
        srv = DNSServer(
            resolver,
            [fake.addr] if upstreams == "fake" else upstreams,
            listen_addr="127.0.0.1",
            listen_port=0,
            **kw,
        )
        try:
            for sb in sandboxes:
                await srv.add_sandbox(sb, None)
            await body(srv, {sb: srv.sockname(sb) for sb in sandboxes}, fake)
        finally:
            await srv.close()
            await fake.stop()
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert srv.sandboxes() == []
        leaked = set(os.listdir("/proc/self/fd")) - fds
        assert not leaked, [
            os.readlink(f"/proc/self/fd/{fd}")
            for fd in leaked
            if os.path.exists(f"/proc/self/fd/{fd}")
        ]

    asyncio.run(main())


# ------------------------------------------------------------------ local answers


def test_a_and_aaaa_answers_with_ttl_id_and_case():
    async def body(srv, addrs, fake):
        msg = await ask(addrs["sb1"], "WEB.", wire.A, qid=777)
        assert msg.id == 777 and msg.rcode == wire.NOERROR
        assert msg.questions == [("WEB", wire.A, wire.CLASS_IN)]
        assert [(r.name, r.type, r.ttl, r.data) for r in msg.answers] == [
            ("WEB", wire.A, 600, "10.0.0.2")
        ]
        assert msg.flags & wire.RA and msg.flags & wire.RD and not msg.flags & wire.AA
        assert addresses(await ask(addrs["sb1"], "web", wire.AAAA)) == ["fd00::2"]
        assert fake.seen == [] and srv.stats["local"] == 2

    run(body)


def test_nodata_for_missing_family_and_other_types():
    async def body(srv, addrs, fake):
        for qtype in (wire.AAAA, wire.MX, wire.TXT):
            msg = await ask(addrs["sb1"], "db", qtype)
            assert msg.rcode == wire.NOERROR and msg.answers == []
        assert fake.seen == []

    run(body)


def test_ptr_answers():
    async def body(srv, addrs, fake):
        msg = await ask(addrs["sb1"], wire.ip_to_ptr("10.0.0.3"), wire.PTR)
        assert [(r.type, r.data) for r in msg.answers] == [(wire.PTR, "db.cnet")]
        msg = await ask(addrs["sb1"], wire.ip_to_ptr("fd00::2"), wire.PTR)
        assert addresses(msg) == ["web.cnet"]
        msg = await ask(addrs["sb2"], wire.ip_to_ptr("10.0.0.3"), wire.PTR)  # not sb2's: forwarded
        assert msg.rcode == wire.NXDOMAIN and len(fake.seen) == 1

    run(body)


def test_each_sandbox_sees_only_its_own_names():
    async def body(srv, addrs, fake):
        assert addresses(await ask(addrs["sb1"], "web")) == ["10.0.0.2"]
        assert addresses(await ask(addrs["sb2"], "web")) == ["10.1.0.2"]
        assert addresses(await ask(addrs["sb2"], "cache")) == ["10.1.0.9"]
        msg = await ask(addrs["sb1"], "cache")
        assert msg.rcode == wire.NXDOMAIN and msg.answers == []
        assert [q[2] for q in fake.seen] == ["cache"]

    run(body)


def test_round_robin_rotates_per_query_and_type():
    async def body(srv, addrs, fake):
        seen = [addresses(await ask(addrs["sb1"], "lb")) for _ in range(4)]
        assert seen == [
            ["10.0.0.10", "10.0.0.11", "10.0.0.12"],
            ["10.0.0.11", "10.0.0.12", "10.0.0.10"],
            ["10.0.0.12", "10.0.0.10", "10.0.0.11"],
            ["10.0.0.10", "10.0.0.11", "10.0.0.12"],
        ]
        # A and AAAA queries (glibc sends both) do not disturb each other's rotation.
        firsts = []
        for _ in range(2):
            firsts.append(addresses(await ask(addrs["sb1"], "lb6", wire.A))[0])
            firsts.append(addresses(await ask(addrs["sb1"], "lb6", wire.AAAA))[0])
        assert firsts == ["10.0.0.10", "fd00::10", "10.0.0.11", "fd00::11"]

    run(body)


def test_resolver_nxdomain_and_resolver_errors():
    async def body(srv, addrs, fake):
        msg = await ask(addrs["sb1"], "gone.cnet")
        assert msg.rcode == wire.NXDOMAIN and fake.seen == []
        assert (await ask(addrs["sb1"], "boom")).rcode == wire.SERVFAIL
        assert addresses(await ask(addrs["sb1"], "db")) == ["10.0.0.3"]  # still serving
        assert srv.stats["failed"] == 1

    run(body)


def test_big_answer_truncated_over_udp_complete_over_tcp():
    async def body(srv, addrs, fake):
        msg = await ask(addrs["sb1"], "many")
        assert msg.flags & wire.TC and 0 < len(msg.answers) < 100
        msg = await ask(addrs["sb1"], "many", udp_size=4096)
        assert not msg.flags & wire.TC and len(msg.answers) == 100
        [raw] = await tcp_ask(addrs["sb1"], wire.build_query("many", wire.A, 5))
        msg = wire.decode_message(raw)
        assert not msg.flags & wire.TC and len(msg.answers) == 100 and not msg.additional

    run(body)


def test_tcp_several_queries_on_one_connection():
    async def body(srv, addrs, fake):
        out = await tcp_ask(
            addrs["sb1"],
            wire.build_query("web", wire.A, 1),
            wire.build_query("nope", wire.A, 2),
            wire.build_query("db", wire.A, 3, udp_size=1232),
        )
        msgs = [wire.decode_message(o) for o in out]
        assert [m.id for m in msgs] == [1, 2, 3]
        assert addresses(msgs[0]) == ["10.0.0.2"] and msgs[1].rcode == wire.NXDOMAIN
        assert addresses(msgs[2]) == ["10.0.0.3"] and msgs[2].additional[0].type == wire.OPT

    run(body)


# ------------------------------------------------------------------ malformed


def test_malformed_queries_formerr_notimp_or_dropped():
    async def body(srv, addrs, fake):
        addr = addrs["sb1"]
        good = wire.build_query("web", wire.A, 0x0BAD)
        out = wire.decode_message(await udp_ask(addr, good[:-2]))
        assert out.id == 0x0BAD and out.rcode == wire.FORMERR
        out = wire.decode_message(
            await udp_ask(addr, good[:2] + b"\x28\x00" + good[4:])
        )  # opcode 5 UPDATE
        assert out.rcode == wire.NOTIMP
        for junk in (b"", b"\x01\x02\x03", b"\x00\x01\x81\x80" + good[4:]):
            with pytest.raises(asyncio.TimeoutError):
                await udp_ask(addr, junk, timeout=0.2)
        [raw] = await tcp_ask(addr, good[:13])
        assert wire.decode_message(raw).rcode == wire.FORMERR
        assert addresses(await ask(addr, "web")) == ["10.0.0.2"]
        assert srv.stats["malformed"] == 6 and fake.seen == []

    run(body)


# ------------------------------------------------------------------ forwarding


def test_forward_relays_upstream_answer_keeping_id():
    async def body(srv, addrs, fake):
        msg = await ask(addrs["sb1"], "Example.ORG", qid=0x4242)
        assert msg.id == 0x4242 and addresses(msg) == ["192.0.2.7"] and msg.answers[0].ttl == 30
        msg = await ask(addrs["sb1"], "nosuch.example")
        assert msg.rcode == wire.NXDOMAIN
        assert fake.seen == [("udp", 0x4242, "Example.ORG"), ("udp", 4321, "nosuch.example")]
        assert srv.stats["forwarded"] == 2

    run(body, upstream_records={"example.org": ("192.0.2.7",)})


def test_no_upstream_is_servfail():
    async def body(srv, addrs, fake):
        t0 = time.monotonic()
        assert (await ask(addrs["sb1"], "example.org")).rcode == wire.SERVFAIL
        assert time.monotonic() - t0 < 0.5
        assert srv.stats["failed"] == 1

    run(body, upstreams=[])


def test_silent_upstream_times_out_to_servfail():
    async def body(srv, addrs, fake):
        fake.silent.add("slow.example")
        t0 = time.monotonic()
        assert (await ask(addrs["sb1"], "slow.example")).rcode == wire.SERVFAIL
        assert 0.2 <= time.monotonic() - t0 < 2

    run(body, timeout=0.3)


def test_next_upstream_after_timeout_or_refusal():
    async def body(srv, addrs, fake):
        quiet = await FakeUpstream().start()
        quiet.silent.add("example.org")
        closed = FakeUpstream.open_sockets()
        closed_addr = closed[0].getsockname()
        for s in closed:
            s.close()  # nothing listens there any more: ICMP port unreachable
        srv.upstreams = [closed_addr, quiet.addr, fake.addr]
        try:
            assert addresses(await ask(addrs["sb1"], "example.org")) == ["192.0.2.7"]
        finally:
            await quiet.stop()
        assert [s[2] for s in quiet.seen] == ["example.org"]

    run(body, upstream_records={"example.org": ("192.0.2.7",)}, timeout=0.3)


def test_upstreams_callable_read_per_query():
    current: list = []

    async def body(srv, addrs, fake):
        assert (await ask(addrs["sb1"], "example.org")).rcode == wire.SERVFAIL
        current.append(fake.addr)
        assert addresses(await ask(addrs["sb1"], "example.org")) == ["192.0.2.7"]

    run(body, upstream_records={"example.org": ("192.0.2.7",)}, upstreams=lambda: current)


def test_upstream_that_is_not_an_ip_literal_is_skipped():
    async def body(srv, addrs, fake):
        srv.upstreams = [("localhost", fake.addr[1]), ("not an ip", 53), fake.addr]
        assert addresses(await ask(addrs["sb1"], "example.org")) == ["192.0.2.7"]
        srv.upstreams = [("localhost", fake.addr[1])]
        assert (await ask(addrs["sb1"], "example.org")).rcode == wire.SERVFAIL
        assert len(fake.seen) == 1

    run(body, upstream_records={"example.org": ("192.0.2.7",)})


def test_spoofed_reply_with_wrong_id_is_ignored():
    async def body(srv, addrs, fake):
        fake.spoof_first = True
        msg = await ask(addrs["sb1"], "example.org", qid=100)
        assert msg.id == 100 and addresses(msg) == ["192.0.2.7"]

    run(body, upstream_records={"example.org": ("192.0.2.7",)})


def test_truncated_upstream_answer_tc_to_udp_client_tcp_fallback_for_tcp_client():
    async def body(srv, addrs, fake):
        fake.truncated.add("big.example")
        msg = await ask(addrs["sb1"], "big.example")
        assert msg.flags & wire.TC and msg.answers == []
        [raw] = await tcp_ask(addrs["sb1"], wire.build_query("big.example", wire.A, 9))
        msg = wire.decode_message(raw)
        assert msg.id == 9 and len(msg.answers) == 200 and not msg.flags & wire.TC
        assert [s[0] for s in fake.seen] == ["udp", "udp", "tcp"]

    run(body)


def test_non_in_class_is_forwarded():
    async def body(srv, addrs, fake):
        msg = await ask(addrs["sb1"], "web", qclass=3)  # CHAOS
        assert msg.rcode == wire.NXDOMAIN and [s[2] for s in fake.seen] == ["web"]

    run(body)


def test_inflight_limit_answers_servfail():
    async def body(srv, addrs, fake):
        assert (await ask(addrs["sb1"], "example.org")).rcode == wire.SERVFAIL
        assert fake.seen == []

    run(body, upstream_records={"example.org": ("192.0.2.7",)}, max_inflight=0)


# ------------------------------------------------------------------ lifecycle


def test_add_and_remove_are_idempotent_and_remove_closes_the_port():
    async def body(srv, addrs, fake):
        await srv.add_sandbox("sb1", None)
        assert srv.sockname("sb1") == addrs["sb1"] and sorted(srv.sandboxes()) == ["sb1", "sb2"]
        fake.silent.add("slow.example")
        pending = asyncio.ensure_future(
            udp_ask(addrs["sb1"], wire.build_query("slow.example"), timeout=0.5)
        )
        await asyncio.sleep(0.1)
        await srv.remove_sandbox("sb1")  # cancels the forwarded query in flight
        await srv.remove_sandbox("sb1")
        assert srv.sandboxes() == ["sb2"]
        with pytest.raises((asyncio.TimeoutError, ConnectionRefusedError)):
            await pending
        with pytest.raises((asyncio.TimeoutError, ConnectionRefusedError)):
            await ask(addrs["sb1"], "web")
        with pytest.raises(ConnectionRefusedError):
            await tcp_ask(addrs["sb1"], wire.build_query("web"))
        assert addresses(await ask(addrs["sb2"], "web")) == ["10.1.0.2"]

    run(body, timeout=5)


def test_close_with_idle_tcp_client_and_pending_forward_leaks_nothing():
    async def body(srv, addrs, fake):
        fake.silent.add("slow.example")
        reader, writer = await asyncio.open_connection(*addrs["sb1"])
        pending = asyncio.ensure_future(
            udp_ask(addrs["sb2"], wire.build_query("slow.example"), timeout=1)
        )
        await asyncio.sleep(0.1)
        await srv.close()
        assert await reader.read() == b""  # the server hung up
        writer.close()
        with pytest.raises((asyncio.TimeoutError, ConnectionRefusedError)):
            await pending

    run(body, timeout=5)


def test_add_sandbox_port_in_use_is_a_netmgr_error():
    async def body(srv, addrs, fake):
        other = DNSServer(resolver, [], listen_addr="127.0.0.1", listen_port=addrs["sb1"][1])
        with pytest.raises(errors.NetmgrError, match="open DNS server in sandbox x"):
            await other.add_sandbox("x", None)
        await other.close()

    run(body)


def test_upstreams_from_resolv_conf(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nsearch example.com\nnameserver 10.255.255.53\n"
        "nameserver   fd00::53 \noptions ndots:0\nnameserver 127.0.0.53\nnameserver\n"
    )
    assert upstreams_from_resolv_conf(str(conf)) == [
        ("10.255.255.53", 53),
        ("fd00::53", 53),
        ("127.0.0.53", 53),
    ]
    assert upstreams_from_resolv_conf(str(tmp_path / "missing")) == []


def test_tcp_clients_per_sandbox_are_capped(monkeypatch):
    monkeypatch.setattr("netmgr.dns.server.MAX_TCP_CLIENTS", 2)

    async def body(srv, addrs, fake):
        conns = [await asyncio.open_connection(*addrs["sb1"]) for _ in range(3)]
        try:
            assert await asyncio.wait_for(conns[2][0].read(), 2) == b""  # the third is hung up on
            data = wire.build_query("web", wire.A, 1)
            for reader, writer in conns[:2]:
                writer.write(struct.pack("!H", len(data)) + data)
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                assert addresses(wire.decode_message(await reader.readexactly(size))) == [
                    "10.0.0.2"
                ]
        finally:
            for _, writer in conns:
                writer.close()

    run(body)
