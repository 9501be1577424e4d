"""runtime.netlink / runtime.netns / runtime.nft against the real kernel, checked with ip -j and nft -j."""

from __future__ import annotations

import os
import tempfile

import pytest

from netmgr import errors
from netmgr.drivers.bridge_fw import BridgeFirewall, FwNetwork
from netmgr.runtime import netns, sandbox
from netmgr.runtime.nft import Nft, NftError
from tests.conftest import unique
from tests.privileged.conftest import ip_json, nft_json


def test_netns_create_has_loopback_up_and_remove(host_ns):
    links = ip_json(host_ns.path, "link")
    assert [l["ifname"] for l in links] == ["lo"]
    assert "UP" in links[0]["flags"]
    assert host_ns.inode() == os.stat(host_ns.path).st_ino


def test_netns_create_twice_is_already_exists(host_ns):
    with pytest.raises(errors.AlreadyExists):
        netns.create(host_ns.path)


def test_netns_remove_is_idempotent():
    path = os.path.join(tempfile.mkdtemp(prefix="nmt-"), unique())
    netns.create(path).close()
    netns.remove(path)
    netns.remove(path)
    assert not os.path.exists(path)
    os.rmdir(os.path.dirname(path))


def test_run_in_switches_only_a_throwaway_thread(host_ns):
    own = os.readlink("/proc/thread-self/ns/net")
    inside = netns.run_in(host_ns.path, lambda: os.readlink("/proc/thread-self/ns/net"))
    assert inside != own
    assert os.readlink("/proc/thread-self/ns/net") == own
    netns.sysctl_write(host_ns.path, "net.ipv4.ip_forward", "1")
    assert netns.run_in(host_ns.path, lambda: open("/proc/sys/net/ipv4/ip_forward").read().strip()) == "1"


def test_bridge_veth_peer_in_place_and_configure(host_ns):
    nl = host_ns.nl
    br = nl.add_bridge("nmtbr0", mtu=1400)
    nl.add_addr(br, "10.99.0.1", 24)
    nl.set_link(br, up=True)
    sb_path = host_ns.path + "-sb"
    sb = netns.create(sb_path)
    try:
        nl.add_veth("nmtv0", "eth0", sb.fd, "02:42:0a:63:00:02", 1400, master=br, up=True)
        sandbox.configure_interface(sb, "eth0", ["10.99.0.2/24"], gateway="10.99.0.1")
        host_links = {l["ifname"]: l for l in ip_json(host_ns.path, "link")}
        assert host_links["nmtv0"]["master"] == "nmtbr0"
        assert "UP" in host_links["nmtv0"]["flags"]
        assert host_links["nmtbr0"]["mtu"] == 1400
        sb_links = {l["ifname"]: l for l in ip_json(sb_path, "addr")}
        eth0 = sb_links["eth0"]
        assert eth0["address"] == "02:42:0a:63:00:02"
        assert eth0["mtu"] == 1400
        assert {"local": "10.99.0.2", "prefixlen": 24} in [
            {"local": a["local"], "prefixlen": a["prefixlen"]} for a in eth0["addr_info"]]
        routes = ip_json(sb_path, "route")
        assert {"dst": "default", "gateway": "10.99.0.1", "dev": "eth0"}.items() <= routes[0].items()
        # the peer is never seen in the host namespace
        assert "eth0" not in host_links
        assert nl.del_link(name="nmtv0") is True
        assert nl.del_link(name="nmtv0") is False
        assert "eth0" not in {l["ifname"] for l in ip_json(sb_path, "link")}
    finally:
        sb.close()
        netns.remove(sb_path)


def test_errno_mapping(host_ns):
    nl = host_ns.nl
    nl.add_bridge("nmtbr1")
    with pytest.raises(errors.AlreadyExists) as exc:
        nl.add_bridge("nmtbr1")
    assert "add bridge nmtbr1: File exists" in str(exc.value)
    assert nl.link_index("nmt-nope") is None
    with pytest.raises(errors.NotFound):
        nl.set_link(99999, up=True)


def test_dumps_decode(host_ns):
    nl = host_ns.nl
    br = nl.add_bridge("nmtbr2")
    nl.add_addr(br, "10.98.0.1", 16)
    nl.set_link(br, up=True)
    assert any(l.name == "nmtbr2" and l.kind == "bridge" for l in nl.links())
    assert (br, "10.98.0.1", 16) in nl.addresses()
    assert any(r.dst == "10.98.0.0/16" and r.oif == br for r in nl.routes())


def test_nft_batch_is_atomic_and_bound_to_its_namespace(host_ns):
    nft = Nft(host_ns.path)
    try:
        nft.run([{"add": {"table": {"family": "inet", "name": "nmt"}}}])
        assert nft_json(host_ns.path, "list", "table", "inet", "nmt") is not None
        assert nft_json(None, "list", "table", "inet", "nmt") is None  # not in our own namespace
        with pytest.raises(NftError):
            nft.run([{"add": {"chain": {"family": "inet", "table": "nmt", "name": "c"}}},
                     {"add": {"rule": {"family": "inet", "table": "nmt", "chain": "nope", "expr": [{"accept": None}]}}}])
        assert not [i for i in nft_json(host_ns.path, "list", "table", "inet", "nmt")["nftables"] if "chain" in i]
        nft.delete_table("inet", "nmt")
        nft.delete_table("inet", "nmt")
    finally:
        nft.close()


def _elements(netns_path, set_name):
    out = nft_json(netns_path, "list", "set", "inet", "netmgr", set_name)
    return out["nftables"][1]["set"].get("elem", [])


def test_bridge_firewall_elements_not_rules(host_ns):
    nft = Nft(host_ns.path)
    fw = BridgeFirewall(nft, "netmgr")
    try:
        fw.rebuild([])
        rules_before = [i for i in nft_json(host_ns.path, "list", "table", "inet", "netmgr")["nftables"] if "rule" in i]
        for i in range(5):
            fw.add_network(FwNetwork(f"nmtbr{i}", (f"10.{i}.0.0/16",)))
        rules_after = [i for i in nft_json(host_ns.path, "list", "table", "inet", "netmgr")["nftables"] if "rule" in i]
        assert len(rules_before) == len(rules_after) == 19
        assert sorted(_elements(host_ns.path, "bridges")) == [f"nmtbr{i}" for i in range(5)]
        fw.remove_network(FwNetwork("nmtbr3", ("10.3.0.0/16",)))
        fw.remove_network(FwNetwork("nmtbr3", ("10.3.0.0/16",)))  # already gone: fine
        assert "nmtbr3" not in _elements(host_ns.path, "bridges")
        nft.run("flush ruleset")
        assert not fw.exists()
        fw.rebuild([FwNetwork("nmtbr0", ("10.0.0.0/16",))])
        assert fw.exists() and _elements(host_ns.path, "bridges") == ["nmtbr0"]
    finally:
        fw.delete()
        nft.close()
