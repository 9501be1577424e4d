"""The controller on the real kernel, in-process, with a fake host namespace.

Kernel state is read back through ``ip -j`` and ``nft -j``, not through
netmgr's own netlink layer.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from netmgr import errors
from netmgr.containers import RunRequest
from netmgr.controller import AttachRequest, NetworkRequest
from netmgr.model import PoolConfig
from tests.privileged.conftest import ip_json, nft_json, reopen_engine


def _set(host, name):
    out = nft_json(host, "list", "set", "inet", "netmgr", name)
    elems = out["nftables"][1]["set"].get("elem", [])
    return [e if isinstance(e, str) else e.get("concat", e.get("prefix", e)) for e in elems]


def test_predefined_networks(engine, host_ns):
    names = sorted(n.name for n in engine.ctl.networks.values())
    assert names == ["bridge", "host", "none"]
    links = {l["ifname"]: l for l in ip_json(host_ns.path, "addr")}
    assert links["netmgr0"]["addr_info"][0]["local"] == "172.17.0.1"
    assert "netmgr0" in _set(host_ns.path, "bridges")
    fwd = subprocess.run(["nsenter", f"--net={host_ns.path}", "cat", "/proc/sys/net/ipv4/ip_forward"],
                         capture_output=True, text=True).stdout.strip()
    assert fwd == "1"


def test_network_create_and_remove(engine, host_ns):
    net = engine.ctl.create_network(NetworkRequest("nmt-a", pools=(PoolConfig("10.50.0.0/24", ip_range="10.50.0.128/25"),)))
    br = "nm-" + net.id[:12]
    links = {l["ifname"]: l for l in ip_json(host_ns.path, "addr")}
    assert links[br]["addr_info"][0]["local"] == "10.50.0.1"
    assert br in _set(host_ns.path, "bridges")
    assert engine.store.get(f"networks/{net.id}") is not None
    engine.ctl.remove_network("nmt-a")
    assert br not in {l["ifname"] for l in ip_json(host_ns.path, "link")}
    assert br not in _set(host_ns.path, "bridges")
    assert engine.store.get(f"networks/{net.id}") is None


def test_default_pool_and_overlap(engine):
    a = engine.ctl.create_network(NetworkRequest("nmt-b"))
    assert a.pools[0].subnet == "172.18.0.0/16" and a.pools[0].gateway == "172.18.0.1"
    with pytest.raises(errors.AlreadyExists, match="Pool overlaps with other one on this address space"):
        engine.ctl.create_network(NetworkRequest("nmt-c", pools=(PoolConfig("172.18.5.0/24"),)))
    with pytest.raises(errors.AlreadyExists, match="network with name nmt-b already exists"):
        engine.ctl.create_network(NetworkRequest("nmt-b"))


def _run(engine, name, net, **kw):
    return engine.containers.run(RunRequest(argv=("sleep", "300"), name=name, network=net, **kw))


def test_run_connect_disconnect(engine, host_ns):
    engine.ctl.create_network(NetworkRequest("nmt-n1", pools=(PoolConfig("10.51.0.0/24"),)))
    engine.ctl.create_network(NetworkRequest("nmt-n2", pools=(PoolConfig("10.52.0.0/24"),)))
    ctr = _run(engine, "nmt-c1", "nmt-n1", ip="10.51.0.10")
    sb = ctr.sandbox_key
    addrs = {l["ifname"]: l for l in ip_json(sb, "addr")}
    assert addrs["eth0"]["addr_info"][0]["local"] == "10.51.0.10"
    assert addrs["eth0"]["address"] == "02:42:0a:33:00:0a"
    ep = engine.containers.connect("nmt-n2", "nmt-c1", AttachRequest(aliases=("web",)))
    assert ep.ifname == "eth1" and ep.ipv4 == "10.52.0.2/24" and ep.gateway == ""
    routes = ip_json(sb, "route")
    assert [r for r in routes if r["dst"] == "default"][0]["gateway"] == "10.51.0.1"
    with pytest.raises(errors.AlreadyExists, match="endpoint with name nmt-c1 already exists in network nmt-n2"):
        engine.containers.connect("nmt-n2", "nmt-c1", AttachRequest())
    engine.containers.disconnect("nmt-n2", "nmt-c1")
    assert "eth1" not in {l["ifname"] for l in ip_json(sb, "link")}
    assert engine.ipam.in_use(engine.ctl.network("nmt-n2").id) == 1  # only the gateway
    with pytest.raises(errors.InUse, match="has active endpoints"):
        engine.ctl.remove_network("nmt-n1")
    engine.containers.remove("nmt-c1", force=True)
    assert not [l for l in ip_json(host_ns.path, "link") if l["ifname"].startswith("veth")]
    engine.ctl.remove_network("nmt-n1")


def test_containers_on_one_network_talk_and_networks_are_isolated(engine):
    engine.ctl.create_network(NetworkRequest("nmt-i1", pools=(PoolConfig("10.53.0.0/24"),)))
    engine.ctl.create_network(NetworkRequest("nmt-i2", pools=(PoolConfig("10.54.0.0/24"),)))
    a = _run(engine, "nmt-a1", "nmt-i1")
    _run(engine, "nmt-a2", "nmt-i1")
    _run(engine, "nmt-b1", "nmt-i2")

    def ping(ctr, ip):
        return subprocess.run(["nsenter", f"--net={ctr.sandbox_key}", "busybox", "ping", "-c1", "-W1", ip],
                              capture_output=True).returncode

    assert ping(a, "10.53.0.3") == 0  # same network
    assert ping(a, "10.53.0.1") == 0  # its gateway
    assert ping(a, "10.54.0.2") != 0  # the other network: dropped by the isolation rule


def test_host_and_none_networks(engine, host_ns):
    ctr = _run(engine, "nmt-none", "none")
    assert [l["ifname"] for l in ip_json(ctr.sandbox_key, "link")] == ["lo"]
    with pytest.raises(errors.Conflict, match="private \\(none\\) mode"):
        engine.containers.connect("bridge", "nmt-none", AttachRequest())
    h = _run(engine, "nmt-host", "host")
    assert h.sandbox_key == ""
    with pytest.raises(errors.Conflict, match="sharing network namespace with another container or host"):
        engine.containers.connect("bridge", "nmt-host", AttachRequest())


def test_restart_reloads_state(engine, host_ns):
    engine.ctl.create_network(NetworkRequest("nmt-r", pools=(PoolConfig("10.55.0.0/24"),)))
    _run(engine, "nmt-r1", "nmt-r")
    again = reopen_engine(engine)
    assert again.ctl.network("nmt-r").pools[0].subnet == "10.55.0.0/24"
    assert again.containers.get("nmt-r1").state.status == "running"
    assert again.ipam.in_use(again.ctl.network("nmt-r").id) == 2
    ep = again.containers.connect("bridge", "nmt-r1", AttachRequest())
    assert ep.ifname == "eth1"


def test_container_mounts_hold_no_sandbox(engine):
    """A container's mount namespace must not keep other sandboxes' namespaces alive."""
    a = _run(engine, "nmt-ha", "bridge")
    _run(engine, "nmt-hb", "bridge")
    with open(f"/proc/{a.state.pid}/mountinfo") as f:
        assert engine.ctl.ns_dir not in f.read()


def test_restart_repairs_the_kernel(engine, host_ns):
    """Bridge deleted, ruleset flushed, an interface and a whole sandbox gone, an orphan veth: all repaired."""
    engine.ctl.create_network(NetworkRequest("nmt-f", pools=(PoolConfig("10.56.0.0/24"),)))
    a = _run(engine, "nmt-fa", "nmt-f")
    b = _run(engine, "nmt-fb", "nmt-f")
    engine.containers.connect("bridge", "nmt-fa", AttachRequest())
    br = engine.ctl.network("nmt-f").driver_data["bridge"]
    sh = lambda *cmd: subprocess.run(["nsenter", f"--net={host_ns.path}", *cmd], check=True)  # noqa: E731
    sh("ip", "link", "del", br)
    sh("nft", "flush", "ruleset")
    subprocess.run(["nsenter", f"--net={a.sandbox_key}", "ip", "link", "del", "eth1"], check=True)
    sh("ip", "link", "add", "vethdead001", "type", "veth", "peer", "name", "nmt-peer")
    sh("ip", "link", "set", "vethdead001", "master", "netmgr0")
    engine.ctl.remove_sandbox(b.sandbox_key)  # as after a reboot: the namespace is gone
    reopen_engine(engine)
    links = {l["ifname"]: l for l in ip_json(host_ns.path, "link")}
    assert br in links and "vethdead001" not in links
    assert sum(1 for l in links.values() if l.get("master") == br) == 2
    assert "netmgr0" in _set(host_ns.path, "bridges")
    sb_a = {l["ifname"]: l for l in ip_json(a.sandbox_key, "addr")}
    assert sb_a["eth1"]["addr_info"][0]["local"] == "172.17.0.2"
    sb_b = {l["ifname"]: l for l in ip_json(b.sandbox_key, "addr")}
    assert sb_b["eth0"]["addr_info"][0]["local"] == "10.56.0.3"
    ping = subprocess.run(["nsenter", f"--net={a.sandbox_key}", "busybox", "ping", "-c1", "-W1", "10.56.0.3"],
                          capture_output=True)
    assert ping.returncode == 0
    # b's process is still in the namespace the sandbox key names (bound again from its pid)
    b_now = engine.containers.get("nmt-fb")
    assert os.stat(f"/proc/{b_now.state.pid}/ns/net").st_ino == os.stat(b.sandbox_key).st_ino
