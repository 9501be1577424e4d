"""The VXLAN building blocks of the overlay driver on the real kernel.

Two simulated hosts joined by an underlay veth, each with a bridge and a
VXLAN device (learning off, ARP proxy on) and one "container" namespace.
With static FDB and neighbour entries programmed on both sides the
containers reach each other, and no ARP broadcast crosses the underlay.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest
from scapy.layers.inet import ICMP
from scapy.layers.l2 import ARP
from scapy.layers.vxlan import VXLAN

from netmgr.runtime import netns, sandbox
from tests.privileged.conftest import ip_json
from tests.privileged.helpers import Capture

VNI = 4242
UNDERLAY = {"a": "10.250.0.1", "b": "10.250.0.2"}
OVERLAY = {"a": ("10.251.0.2", "02:42:0a:fb:00:02"), "b": ("10.251.0.3", "02:42:0a:fb:00:03")}


@pytest.fixture
def two_hosts():
    base = tempfile.mkdtemp(prefix="nmt-vx-")
    handles = {}
    try:
        for name in ("a", "b", "ca", "cb"):
            handles[name] = netns.create(os.path.join(base, f"nmt-{name}"))
        a, b = handles["a"], handles["b"]
        a.nl.add_veth("under0", "under0", b.fd, up=True)
        sandbox.configure_interface(b, "under0", [f"{UNDERLAY['b']}/24"])
        a.nl.add_addr(a.nl.link_index("under0"), UNDERLAY["a"], 24)
        for host in ("a", "b"):
            h, ctr = handles[host], handles["c" + host]
            br = h.nl.add_bridge("ov0", mtu=1450)
            h.nl.set_link(br, up=True)
            h.nl.add_vxlan("vx0", VNI, UNDERLAY[host], mtu=1450, master=br)
            ip, mac = OVERLAY[host]
            h.nl.add_veth("vethc", "eth0", ctr.fd, mac, 1450, master=br, up=True)
            sandbox.configure_interface(ctr, "eth0", [f"{ip}/24"])
        yield handles
    finally:
        for h in handles.values():
            h.close()
            netns.remove(h.path)
        os.rmdir(base)


def ping(ctr, ip) -> int:
    return subprocess.run(["nsenter", f"--net={ctr.path}", "busybox", "ping", "-c1", "-W1", ip],
                          capture_output=True).returncode


def program(handles, host, peer):
    """Host ``host`` learns peer ``peer``'s container: MAC → VTEP, IP → MAC."""
    h = handles[host]
    vx = h.nl.link_index("vx0")
    ip, mac = OVERLAY[peer]
    h.nl.fdb_add(vx, mac, UNDERLAY[peer])
    h.nl.neigh_add(vx, ip, mac)


def test_static_peers_connect_and_nothing_floods(two_hosts):
    h = two_hosts
    link = {l["ifname"]: l for l in ip_json(h["a"].path, "-d", "link")}["vx0"]
    info = link["linkinfo"]["info_data"]
    assert info["id"] == VNI and info["learning"] is False and info["proxy"] is True
    assert ping(h["ca"], OVERLAY["b"][0]) != 0  # nothing programmed: no flood-and-learn
    program(h, "a", "b")
    program(h, "b", "a")
    assert ping(h["ca"], OVERLAY["b"][0]) == 0
    fdb = subprocess.run(["nsenter", f"--net={h['a'].path}", "bridge", "fdb", "show", "dev", "vx0"],
                         capture_output=True, text=True).stdout
    assert f"{OVERLAY['b'][1]} dst {UNDERLAY['b']} self permanent" in fdb


def test_arp_is_answered_locally(two_hosts):
    """The VXLAN devices' ARP proxies answer: no ARP crosses the underlay.

    The capture is on the underlay, where crossing happens. (On host b's vx0 itself cb's own ARP request
    for ca, and b's proxy answering it, are seen: both stay on host b.) The capture must also see the
    encapsulated ping both ways, so a capture that started late cannot pass the test.
    """
    h = two_hosts
    program(h, "a", "b")
    program(h, "b", "a")
    with Capture(h["b"].path, "under0") as cap:
        for ctr in ("ca", "cb"):
            subprocess.run(["nsenter", f"--net={h[ctr].path}", "ip", "neigh", "flush", "all"], check=True)
        assert ping(h["ca"], OVERLAY["b"][0]) == 0
        frames = cap.stop()
    inner = [f[VXLAN].payload for f in frames if f.haslayer(VXLAN)]
    assert [p for p in inner if p.haslayer(ARP)] == []
    assert {p[ICMP].type for p in inner if p.haslayer(ICMP)} == {0, 8}  # echo request and reply crossed


def test_entries_removed(two_hosts):
    h = two_hosts
    program(h, "a", "b")
    program(h, "b", "a")
    assert ping(h["ca"], OVERLAY["b"][0]) == 0
    vx = h["a"].nl.link_index("vx0")
    h["a"].nl.fdb_del(vx, OVERLAY["b"][1], UNDERLAY["b"])
    h["a"].nl.neigh_del(vx, OVERLAY["b"][0])
    h["a"].nl.fdb_del(vx, OVERLAY["b"][1], UNDERLAY["b"])  # already gone: fine
    subprocess.run(["nsenter", f"--net={h['ca'].path}", "ip", "neigh", "flush", "all"], check=True)
    assert ping(h["ca"], OVERLAY["b"][0]) != 0
