"""Full-size packets fit the overlay: the MTU leaves room for VXLAN, and DF is honoured.

Two simulated hosts (netmgr.testing.multihost) with an overlay network; X on
h1, Y on h2. From X's sandbox (a raw ICMP socket opened inside it), an echo
request with DF set (IP_PMTUDISC_DO) of 1450 bytes of IPv4 in all reaches Y
and comes back whole, and one of 1451 bytes is refused locally with EMSGSIZE:
nothing bigger than the underlay's 1500 ever leaves as an outer packet.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import time
import uuid

import pytest
from netmgr.runtime import netns

from netmgr.testing.multihost import MultiHost

pytestmark = pytest.mark.privileged

IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # linux/in.h


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def echo_df(sandbox: str, dst: str, total: int, timeout: float = 1.0) -> int | None:
    """Send one DF echo of ``total`` IPv4 bytes from ``sandbox``; the reply's total length, None without one.

    OSError (EMSGSIZE) when the kernel refuses to send it.
    """

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        return s

    sock = netns.run_in(sandbox, make)
    ident, seq, payload = os.getpid() & 0xFFFF, total & 0xFFFF, bytes(total - 28)
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    try:
        sock.sendto(struct.pack("!BBHHH", 8, 0, _checksum(body), ident, seq) + payload, (dst, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
            data = sock.recv(65536)
            ihl = (data[0] & 15) * 4
            if data[12:16] == socket.inet_aton(dst) and data[ihl] == 0 and \
                    struct.unpack_from("!HH", data, ihl + 4) == (ident, seq):
                return struct.unpack_from("!H", data, 2)[0]
        return None
    finally:
        sock.close()


def ok(result) -> str:
    assert result.rc == 0, result.err
    return result.out


@pytest.fixture(scope="module")
def pair():
    """X on h1 and Y on h2 on one overlay network: (X's sandbox, Y's overlay address)."""
    net, x, y = (f"nmtmtu{k}{uuid.uuid4().hex[:4]}" for k in "nxy")
    with MultiHost(2, subnet_prefix="10.252.9", ttl=3) as m:
        h1, h2 = m.hosts
        ok(h1.cli("network", "create", "-d", "overlay", "--subnet", "10.69.0.0/24", net))
        deadline = time.monotonic() + 10
        while h2.cli("network", "inspect", net).rc != 0:
            assert time.monotonic() < deadline, "the overlay network never reached h2"
            time.sleep(0.05)
        ok(h1.cli("run", "-d", "--name", x, "--network", net, "sleep", "600"))
        ok(h2.cli("run", "-d", "--name", y, "--network", net, "sleep", "600"))
        sandbox = json.loads(ok(h1.cli("inspect", x)))[0]["NetworkSettings"]["SandboxKey"]
        y_ip = json.loads(ok(h2.cli("inspect", y)))[0]["NetworkSettings"]["Networks"][net]["IPAddress"]
        deadline = time.monotonic() + 10
        while echo_df(sandbox, y_ip, 84, timeout=0.5) is None:  # peers are programmed from etcd
            assert time.monotonic() < deadline, f"{y_ip} never answered a small echo from {x}"
        yield sandbox, y_ip


def _mtu(sandbox: str, ifname: str) -> int:
    """SIOCGIFMTU of ``ifname`` inside the sandbox."""
    import fcntl

    def ioctl_mtu() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16si", ifname.encode(), 0)
            return struct.unpack("16si", fcntl.ioctl(s.fileno(), 0x8921, req))[1]

    return netns.run_in(sandbox, ioctl_mtu)


def test_overlay_interface_mtu_leaves_room_for_vxlan(pair):
    sandbox, _ = pair
    assert _mtu(sandbox, "eth0") == 1450  # underlay 1500 - 50 (outer IPv4 + UDP + VXLAN + inner Ethernet)


def test_full_size_packet_with_df_crosses_the_overlay(pair):
    sandbox, y_ip = pair
    assert echo_df(sandbox, y_ip, 1450, timeout=2.0) == 1450


def test_one_byte_more_with_df_fails_locally_with_emsgsize(pair):
    sandbox, y_ip = pair
    with pytest.raises(OSError) as exc:
        echo_df(sandbox, y_ip, 1451)
    assert exc.value.errno == errno.EMSGSIZE
