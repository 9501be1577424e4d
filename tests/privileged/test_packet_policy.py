"""Isolation, ICC off and internal networks, checked at packet level with scapy.

A crafted UDP packet (with an honest or a spoofed source) is sent from
inside one container and a sniffer inside another counts what arrives, so
the check does not depend on replies finding their way back.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from scapy.layers.inet import UDP
from scapy.packet import Raw

from netmgr.containers import RunRequest
from netmgr.controller import NetworkRequest
from netmgr.model import PoolConfig
from tests.privileged.conftest import OUTSIDE_IP, ip_json
from tests.privileged.helpers import Capture

SEND = """
import sys
from scapy.all import IP, UDP, Ether, Raw, conf, sendp, getmacbyip
conf.verb = 0
src, dst, dst_mac, mark = sys.argv[1:5]
pkt = Ether(dst=dst_mac) / IP(src=src, dst=dst) / UDP(sport=4242, dport=4243) / Raw(mark.encode())
sendp(pkt, iface="eth0", count=3, inter=0.05)
"""


def arrives(sender_ns: str, receiver_ns: str, src: str, dst: str, dst_mac: str) -> int:
    """How many of 3 crafted packets from ``sender_ns`` reach ``receiver_ns``'s eth0."""
    mark = ("nmt-" + os.urandom(4).hex()).encode()
    with Capture(receiver_ns, "eth0") as cap:
        subprocess.run(["nsenter", f"--net={sender_ns}", sys.executable, "-c", SEND, src, dst, dst_mac, mark],
                       check=True, timeout=30)
        frames = cap.stop()
    return sum(1 for f in frames if f.haslayer(UDP) and f.haslayer(Raw) and mark in bytes(f[Raw].load))


def mac_of(netns_path: str, ifname: str) -> str:
    return [l for l in ip_json(netns_path, "link") if l["ifname"] == ifname][0]["address"]


def addr(engine, ctr) -> str:
    return engine.ctl.container_endpoints(ctr.id)[0].ipv4.split("/")[0]


def gw_mac(engine, host_ns, net_name) -> str:
    return mac_of(host_ns.path, engine.ctl.network(net_name).driver_data["bridge"])


@pytest.fixture
def run(engine):
    def start(name, net):
        return engine.containers.run(RunRequest(argv=("sleep", "300"), name=name, network=net))
    return start


def test_isolation_between_networks_even_with_spoofed_source(engine, host_ns, run):
    engine.ctl.create_network(NetworkRequest("nmt-pa", pools=(PoolConfig("10.62.1.0/24"),)))
    engine.ctl.create_network(NetworkRequest("nmt-pb", pools=(PoolConfig("10.62.2.0/24"),)))
    a, a2, b = run("nmt-a", "nmt-pa"), run("nmt-a2", "nmt-pa"), run("nmt-b", "nmt-pb")
    # same network, straight over the bridge: arrives (the check works)
    assert arrives(a.sandbox_key, a2.sandbox_key, addr(engine, a), addr(engine, a2), mac_of(a2.sandbox_key, "eth0")) == 3
    gw = gw_mac(engine, host_ns, "nmt-pa")
    assert arrives(a.sandbox_key, b.sandbox_key, addr(engine, a), addr(engine, b), gw) == 0
    # spoofing a source address of the other network does not help
    assert arrives(a.sandbox_key, b.sandbox_key, "10.62.2.77", addr(engine, b), gw) == 0


def test_icc_off_blocks_containers_not_the_gateway(engine, host_ns, run):
    engine.ctl.create_network(NetworkRequest("nmt-noicc", pools=(PoolConfig("10.62.3.0/24"),),
                                             options={"com.docker.network.bridge.enable_icc": "false"}))
    a, b = run("nmt-i1", "nmt-noicc"), run("nmt-i2", "nmt-noicc")
    assert arrives(a.sandbox_key, b.sandbox_key, addr(engine, a), addr(engine, b), mac_of(b.sandbox_key, "eth0")) == 0
    assert arrives(a.sandbox_key, b.sandbox_key, "10.62.3.1", addr(engine, b), mac_of(b.sandbox_key, "eth0")) == 0
    ping = subprocess.run(["nsenter", f"--net={a.sandbox_key}", "busybox", "ping", "-c1", "-W1", "10.62.3.1"],
                          capture_output=True)
    assert ping.returncode == 0


def test_internal_network_does_not_reach_out(engine, host_ns, outside, run):
    engine.ctl.create_network(NetworkRequest("nmt-int", pools=(PoolConfig("10.62.4.0/24"),), internal=True))
    engine.ctl.create_network(NetworkRequest("nmt-ext", pools=(PoolConfig("10.62.5.0/24"),)))
    a, a2, e = run("nmt-in1", "nmt-int"), run("nmt-in2", "nmt-int"), run("nmt-ex1", "nmt-ext")
    assert not [r for r in ip_json(a.sandbox_key, "route") if r["dst"] == "default"]  # no route out
    assert arrives(a.sandbox_key, a2.sandbox_key, addr(engine, a), addr(engine, a2), mac_of(a2.sandbox_key, "eth0")) == 3
    gw = gw_mac(engine, host_ns, "nmt-int")
    assert arrives(a.sandbox_key, outside.path, addr(engine, a), OUTSIDE_IP, gw) == 0  # no forwarding out
    assert arrives(a.sandbox_key, outside.path, "10.62.5.9", OUTSIDE_IP, gw) == 0  # not with a spoofed source
    # the non-internal network does reach the other host (the check works)
    assert arrives(e.sandbox_key, outside.path, addr(engine, e), OUTSIDE_IP, gw_mac(engine, host_ns, "nmt-ext")) == 3
