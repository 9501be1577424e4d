"""The embedded DNS at 127.0.0.11 inside real sandbox namespaces (root).

Three namespaces of our own: ``host`` plays the daemon's host (the fake
upstream resolver listens on its 127.0.0.1:53, and forwarding sockets are
opened there through ``upstream_netns``), ``sb1`` and ``sb2`` are sandboxes.
The server runs on an event loop in a background thread, as in the daemon;
clients run inside the sandboxes (Python on a throwaway thread via
``netns.run_in``, busybox nslookup and a benchmark process via nsenter).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from netmgr.dns import DNSServer, wire
from netmgr.runtime import netns
from tests.conftest import unique
from tests.unit.test_dns_server import FakeUpstream, resolver

DNS_HEX = "0B00007F:0035"  # 127.0.0.11:53 as /proc/net/{udp,tcp} print it


class LoopThread:
    """An asyncio loop on its own thread, like the daemon's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dns-loop", daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def leftover():
            return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

        tasks = self.call(leftover())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        assert not tasks, tasks


class World:
    """The namespaces, the fake upstream and the server under test."""

    def __init__(self, base: str) -> None:
        self.paths = {name: os.path.join(base, unique()) for name in ("host", "sb1", "sb2")}
        self.upstreams: list[tuple[str, int]] = [("127.0.0.1", 53)]
        self.fake = FakeUpstream({"example.org": ("192.0.2.7",)})
        self.server = DNSServer(resolver, lambda: self.upstreams, upstream_netns=self.paths["host"])
        self.lt: LoopThread | None = None


@pytest.fixture
def world():
    fds = set(os.listdir("/proc/self/fd"))
    base = tempfile.mkdtemp(prefix="nmt-dns-")
    w = World(base)
    handles = []
    try:
        for path in w.paths.values():
            handles.append(netns.create(path))
        w.lt = LoopThread()
        socks = netns.run_in(w.paths["host"], lambda: FakeUpstream.open_sockets("127.0.0.1", 53))
        w.lt.call(w.fake.start(socks))
        w.lt.call(w.server.add_sandbox("sb1", w.paths["sb1"]))
        w.lt.call(w.server.add_sandbox("sb2", w.paths["sb2"]))
        yield w
    finally:
        if w.lt is not None:
            w.lt.call(w.server.close())
            if w.fake.udp is not None:
                w.lt.call(w.fake.stop())
            w.lt.stop()
        for handle in handles:
            handle.close()
        for path in w.paths.values():
            netns.remove(path)
        shutil.rmtree(base, ignore_errors=True)
    assert set(os.listdir("/proc/self/fd")) - fds == set()


# ------------------------------------------------------------------ clients inside a namespace


def query_in(
    path: str, name: str, qtype: int = wire.A, qid: int = 99, tcp: bool = False
) -> wire.Message:
    """Ask 127.0.0.11 from inside ``path`` (a throwaway thread; the loop thread serves)."""
    data = wire.build_query(name, qtype, qid)

    def ask() -> bytes:
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(5)
            sock.connect(("127.0.0.11", 53))
            if not tcp:
                sock.send(data)
                return sock.recv(65535)
            sock.sendall(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", _recv_exactly(sock, 2))[0]
            return _recv_exactly(sock, size)

    return wire.decode_message(netns.run_in(path, ask))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("short read")
        buf += chunk
    return buf


def listening(path: str) -> tuple[bool, bool]:
    """Is 127.0.0.11:53 bound for UDP / TCP in the namespace at ``path`` (read from /proc)?"""

    def read() -> tuple[bool, bool]:
        found = []
        for proto in ("udp", "tcp"):
            with open(f"/proc/thread-self/net/{proto}") as f:
                found.append(DNS_HEX in f.read())
        return found[0], found[1]

    return netns.run_in(path, read)


def nslookup(path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nsenter", f"--net={path}", "busybox", "nslookup", *args, "127.0.0.11"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def addresses(msg: wire.Message) -> list[str]:
    return [r.data for r in msg.answers]


# ------------------------------------------------------------------ tests


def test_sockets_are_bound_inside_the_sandboxes_only(world):
    assert listening(world.paths["sb1"]) == (True, True)
    assert listening(world.paths["sb2"]) == (True, True)
    assert listening(world.paths["host"]) == (False, False)
    for proto in ("udp", "tcp"):
        with open(f"/proc/self/net/{proto}") as f:
            assert DNS_HEX not in f.read()


def test_a_aaaa_ptr_from_inside(world):
    sb1 = world.paths["sb1"]
    msg = query_in(sb1, "WEB", qid=1234)
    assert msg.id == 1234 and addresses(msg) == ["10.0.0.2"] and msg.answers[0].ttl == 600
    assert addresses(query_in(sb1, "web", wire.AAAA)) == ["fd00::2"]
    msg = query_in(sb1, "db", wire.AAAA)
    assert msg.rcode == wire.NOERROR and msg.answers == []
    assert addresses(query_in(sb1, wire.ip_to_ptr("10.0.0.3"), wire.PTR)) == ["db.cnet"]
    assert addresses(query_in(sb1, wire.ip_to_ptr("fd00::2"), wire.PTR)) == ["web.cnet"]
    assert world.fake.seen == []


def test_each_sandbox_gets_its_own_answers(world):
    assert addresses(query_in(world.paths["sb1"], "web")) == ["10.0.0.2"]
    assert addresses(query_in(world.paths["sb2"], "web")) == ["10.1.0.2"]
    assert addresses(query_in(world.paths["sb2"], "cache")) == ["10.1.0.9"]
    assert (
        query_in(world.paths["sb1"], "cache").rcode == wire.NXDOMAIN
    )  # forwarded, upstream says no
    assert query_in(world.paths["sb2"], "db").rcode == wire.NXDOMAIN
    assert [s[2] for s in world.fake.seen] == ["cache", "db"]


def test_forwarding_through_the_host_namespace(world):
    sb1 = world.paths["sb1"]
    msg = query_in(sb1, "example.org", qid=777)
    assert msg.id == 777 and addresses(msg) == ["192.0.2.7"]
    assert query_in(sb1, "nosuch.example").rcode == wire.NXDOMAIN
    assert world.fake.seen == [("udp", 777, "example.org"), ("udp", 99, "nosuch.example")]
    world.fake.silent.add("slow.example")
    t0 = time.monotonic()
    assert query_in(sb1, "slow.example").rcode == wire.SERVFAIL
    assert time.monotonic() - t0 < 3
    world.upstreams = []
    assert query_in(sb1, "example.org").rcode == wire.SERVFAIL
    assert addresses(query_in(sb1, "web")) == ["10.0.0.2"]


def test_round_robin_from_inside(world):
    firsts = [addresses(query_in(world.paths["sb1"], "lb"))[0] for _ in range(6)]
    assert firsts == ["10.0.0.10", "10.0.0.11", "10.0.0.12"] * 2


def test_tcp_from_inside(world):
    sb1 = world.paths["sb1"]
    assert addresses(query_in(sb1, "web", tcp=True)) == ["10.0.0.2"]
    assert len(query_in(sb1, "many", tcp=True).answers) == 100
    assert query_in(sb1, "many").flags & wire.TC
    world.fake.truncated.add("big.example")
    assert len(query_in(sb1, "big.example", tcp=True).answers) == 200
    assert [s[0] for s in world.fake.seen] == ["udp", "tcp"]


def test_busybox_nslookup(world):
    sb1 = world.paths["sb1"]
    out = nslookup(sb1, "web.")
    assert out.returncode == 0, out.stderr
    assert "10.0.0.2" in out.stdout and "fd00::2" in out.stdout
    out = nslookup(sb1, "10.0.0.3")
    assert "db.cnet" in out.stdout, out.stdout + out.stderr
    out = nslookup(sb1, "example.org.")
    assert "192.0.2.7" in out.stdout, out.stdout + out.stderr
    out = nslookup(sb1, "nosuch.example.")
    assert "NXDOMAIN" in out.stdout + out.stderr


def test_remove_and_add_again(world):
    sb1 = world.paths["sb1"]
    world.lt.call(world.server.remove_sandbox("sb1"))
    world.lt.call(world.server.remove_sandbox("sb1"))
    assert listening(sb1) == (False, False)
    with pytest.raises(OSError):
        query_in(sb1, "web")
    assert addresses(query_in(world.paths["sb2"], "web")) == ["10.1.0.2"]
    world.lt.call(world.server.add_sandbox("sb1", sb1))
    world.lt.call(world.server.add_sandbox("sb1", sb1))
    assert listening(sb1) == (True, True)
    assert addresses(query_in(sb1, "web")) == ["10.0.0.2"]


BENCH = textwrap.dedent("""
    import socket, struct, sys, time
    name, count = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.connect(("127.0.0.11", 53))
    head = struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 0)[2:]
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0\\0\\1\\0\\1"
    lat = []
    t0 = time.perf_counter()
    for i in range(count):
        t = time.perf_counter_ns()
        sock.send(struct.pack("!H", i & 0xFFFF) + head + qname)
        sock.recv(4096)
        lat.append(time.perf_counter_ns() - t)
    total = time.perf_counter() - t0
    lat.sort()
    p50, p99 = lat[len(lat) // 2] / 1000, lat[int(len(lat) * 0.99)] / 1000
    print(f"{count / total:.0f} {p50:.1f} {p99:.1f}")
""")


def bench(path: str, name: str, count: int, clients: int = 1) -> list[tuple[float, float, float]]:
    """Run ``clients`` benchmark processes at once inside ``path``; (qps, p50 us, p99 us) each."""
    cmd = ["nsenter", f"--net={path}", sys.executable, "-c", BENCH, name, str(count)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        out.append(tuple(float(x) for x in stdout.split()))
    return out


def test_benchmark_queries_from_inside(world):
    """Sequential UDP queries from processes inside sb1: prints q/s and latencies, asserts none."""
    sb1 = world.paths["sb1"]
    runs = [
        ("local", "web", 5000, 1),
        ("local", "web", 2000, 4),
        ("forwarded", "example.org", 2000, 1),
    ]
    for label, name, count, clients in runs:
        results = bench(sb1, name, count, clients)
        qps = sum(r[0] for r in results)
        p50 = max(r[1] for r in results)
        p99 = max(r[2] for r in results)
        print(
            f"\ndns bench {label}, {clients} client(s) x {count} queries: "
            f"{qps:.0f} q/s, p50 {p50:.0f} us, p99 {p99:.0f} us"
        )
    print(f"dns stats: {world.server.stats}")
    assert world.server.stats == {"local": 13000, "forwarded": 2000, "failed": 0, "malformed": 0}
