"""Shard bridges (``-o com.netmgr.bridge.ports_per_bridge=N``) on the real kernel.

With N = 2 a handful of containers spreads over the network's bridge and two
or three shards, so every path crosses a trunk: container to container on one
shard, across shards and to the network's bridge, to the gateway, out to
another host (NAT), in through a published port; ICC off across shards;
rollback, restart and removal leave no shard behind or missing.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from netmgr import errors
from netmgr.containers import RunRequest
from netmgr.controller import AttachRequest, Controller, NetworkRequest
from netmgr.drivers.bridge import OPT_ICC, OPT_PORTS, bridge_name, shard_name, trunk_names
from netmgr.model import PoolConfig, PortMapping
from tests.privileged.conftest import HOST_IP, OUTSIDE_IP, ip_json, reopen_engine
from tests.privileged.helpers import request, server_argv
from tests.privileged.test_rollback import Injected, _after, snapshot


def ping(ctr, ip: str) -> bool:
    return subprocess.run(["nsenter", f"--net={ctr.sandbox_key}", "busybox", "ping", "-c1", "-W1", ip],
                          capture_output=True).returncode == 0


def sharded(engine, name: str, subnet: str, per_bridge: int = 2, **options):
    opts = {OPT_PORTS: str(per_bridge), **options}
    return engine.ctl.create_network(NetworkRequest(name, pools=(PoolConfig(subnet),), options=opts))


def run(engine, name: str, net: str, argv=("sleep", "600"), **kw):
    return engine.containers.run(RunRequest(argv=tuple(argv), name=name, network=net, **kw))


def masters(host_ns) -> dict[str, str]:
    """Link name -> its master's name, in the fake host."""
    links = ip_json(host_ns.path, "link", "show")
    by_index = {link["ifindex"]: link["ifname"] for link in links}
    return {link["ifname"]: link.get("master", "") for link in links if by_index}


def host_ifname(engine, ctr) -> str:
    (ep,) = engine.ctl.container_endpoints(ctr.id)
    return ep.driver_data["veth"]


def names_of(host_ns, prefix: str) -> list[str]:
    return sorted(link["ifname"] for link in ip_json(host_ns.path, "link", "show") if link["ifname"].startswith(prefix))


def test_endpoints_spread_over_shards_and_every_path_works(engine, host_ns, outside):
    net = sharded(engine, "nmt-shd", "10.63.0.0/24")
    ctrs = [run(engine, f"nmt-shd{i}", "nmt-shd") for i in range(5)]
    ms = masters(host_ns)
    root = bridge_name(net)
    placed = [ms[host_ifname(engine, c)] for c in ctrs]
    assert placed == [root, root, shard_name(net.id, 1), shard_name(net.id, 1), shard_name(net.id, 2)]
    for k in (1, 2):
        outer, inner = trunk_names(net.id, k)
        assert ms[outer] == root and ms[inner] == shard_name(net.id, k)
    # shards are plain L2: no address, no IPv6
    for name in (shard_name(net.id, 1), trunk_names(net.id, 1)[0]):
        (link,) = ip_json(host_ns.path, "addr", "show", "dev", name)
        assert link["addr_info"] == []
    ips = [engine.ctl.container_endpoints(c.id)[0].ipv4.split("/")[0] for c in ctrs]
    assert ping(ctrs[0], ips[1])  # on the network's bridge
    assert ping(ctrs[2], ips[3])  # on one shard
    assert ping(ctrs[2], ips[4])  # shard to shard
    assert ping(ctrs[4], ips[0])  # shard to the network's bridge
    assert ping(ctrs[4], "10.63.0.1")  # the gateway
    # only the network's bridge answers ARP for the gateway (a shard bridge would too, with its own MAC)
    (root_link,) = ip_json(host_ns.path, "link", "show", "dev", root)
    for ctr in ctrs:
        assert ping(ctr, "10.63.0.1")
        (gw,) = ip_json(ctr.sandbox_key, "neigh", "show", "10.63.0.1")
        assert gw["lladdr"] == root_link["address"], ctr.name
    # out to another host (masqueraded) and in through a published port, from a shard
    srv = run(engine, "nmt-shdsrv", "nmt-shd", server_argv(engine.cfg.state_dir, "tcp", 80, "nmt-shdsrv"),
              ports=(PortMapping(80, "tcp", "", 8095),))
    assert masters(host_ns)[host_ifname(engine, srv)] == shard_name(net.id, 2)  # the second place on shard 2
    for _ in range(100):
        if request(outside.path, "tcp", HOST_IP, 8095, 0.2):
            break
        time.sleep(0.05)
    assert request(outside.path, "tcp", HOST_IP, 8095) == f"nmt-shdsrv {OUTSIDE_IP}"
    assert ping(ctrs[4], OUTSIDE_IP)


def test_icc_off_holds_across_shards(engine, host_ns):
    net = sharded(engine, "nmt-shdi", "10.64.0.0/24", **{OPT_ICC: "false"})
    ctrs = [run(engine, f"nmt-shdi{i}", "nmt-shdi") for i in range(5)]
    ips = [engine.ctl.container_endpoints(c.id)[0].ipv4.split("/")[0] for c in ctrs]
    assert not ping(ctrs[0], ips[1])  # same bridge
    assert not ping(ctrs[2], ips[3])  # same shard
    assert not ping(ctrs[2], ips[4])  # across shards
    assert not ping(ctrs[4], ips[0])  # shard to the network's bridge
    assert ping(ctrs[4], "10.64.0.1") and ping(ctrs[2], "10.64.0.1")  # the gateway stays reachable
    assert trunk_names(net.id, 1)[0] in str(subprocess.run(
        ["nsenter", f"--net={host_ns.path}", "nft", "list", "set", "bridge", engine.cfg.nft_table, "noicc"],
        capture_output=True, text=True).stdout)


def test_shards_follow_the_endpoints_and_go_with_the_network(engine, host_ns):
    net = sharded(engine, "nmt-shdr", "10.65.0.0/24")
    ctrs = [run(engine, f"nmt-shdr{i}", "nmt-shdr") for i in range(3)]
    assert names_of(host_ns, shard_name(net.id, 0)[:-3]) == [shard_name(net.id, 1)]
    engine.containers.remove(ctrs[2].id, force=True)  # the shard's only endpoint
    assert names_of(host_ns, shard_name(net.id, 0)[:-3]) == []
    assert names_of(host_ns, trunk_names(net.id, 0)[0][:-3]) == []
    # connect/disconnect of a running container to the sharded network
    other = engine.ctl.create_network(NetworkRequest("nmt-shdo", pools=(PoolConfig("10.66.0.0/24"),)))
    extra = run(engine, "nmt-shdx", "nmt-shdo")
    engine.containers.connect("nmt-shdr", extra.id, AttachRequest())
    assert masters(host_ns)[engine.ctl.container_endpoints(extra.id)[1].driver_data["veth"]] == shard_name(net.id, 1)
    assert ping(extra, engine.ctl.container_endpoints(ctrs[0].id)[0].ipv4.split("/")[0])
    engine.containers.disconnect("nmt-shdr", extra.id)
    assert names_of(host_ns, shard_name(net.id, 0)[:-3]) == []
    for c in ctrs[:2] + [extra]:
        engine.containers.remove(c.id, force=True)
    engine.ctl.remove_network(net.id)
    engine.ctl.remove_network(other.id)
    prefixes = (shard_name(net.id, 0)[:-3], trunk_names(net.id, 0)[0][:-3], trunk_names(net.id, 0)[1][:-3], bridge_name(net))
    assert [n for n in names_of(host_ns, "nm") if n.startswith(prefixes)] == []


@pytest.mark.parametrize("step", ["_step_join", "_step_configure", "_step_external"])
def test_failed_connect_leaves_no_shard(engine, host_ns, monkeypatch, step):
    """The third endpoint opens shard 1; the connect fails after that step: everything is as before."""
    net = sharded(engine, "nmt-shdf", "10.67.0.0/24")
    for i in range(2):
        run(engine, f"nmt-shdf{i}", "nmt-shdf")
    extra = run(engine, "nmt-shdfx", "bridge")
    before = snapshot(engine, host_ns)
    monkeypatch.setattr(Controller, step, _after(getattr(Controller, step)))
    with pytest.raises(Injected):
        engine.containers.connect("nmt-shdf", extra.id, AttachRequest())
    monkeypatch.undo()
    assert snapshot(engine, host_ns) == before
    assert names_of(host_ns, shard_name(net.id, 0)[:-3]) == []
    # and the next endpoint still gets shard 1
    engine.containers.connect("nmt-shdf", extra.id, AttachRequest())
    assert masters(host_ns)[engine.ctl.container_endpoints(extra.id)[1].driver_data["veth"]] == shard_name(net.id, 1)


def test_restart_remakes_a_missing_shard_and_keeps_the_others(engine, host_ns):
    net = sharded(engine, "nmt-shds", "10.68.0.0/24")
    ctrs = [run(engine, f"nmt-shds{i}", "nmt-shds") for i in range(5)]
    ips = [engine.ctl.container_endpoints(c.id)[0].ipv4.split("/")[0] for c in ctrs]
    again = reopen_engine(engine, between=lambda: subprocess.run(
        ["nsenter", f"--net={host_ns.path}", "ip", "link", "del", shard_name(net.id, 2)], check=True))
    ms = masters(host_ns)
    # the shard is back, with its trunk, and the endpoint's veth on it; nothing was taken for an orphan
    assert ms[trunk_names(net.id, 1)[0]] == bridge_name(net) and ms[trunk_names(net.id, 2)[1]] == shard_name(net.id, 2)
    assert ms[host_ifname(again, ctrs[4])] == shard_name(net.id, 2)
    assert ping(ctrs[4], ips[0]) and ping(ctrs[2], ips[4])
    # occupancy was recounted: the next endpoint fills shard 2
    ctr = run(again, "nmt-shds5", "nmt-shds")
    assert masters(host_ns)[host_ifname(again, ctr)] == shard_name(net.id, 2)


def test_bad_option_is_refused_and_changes_nothing(engine, host_ns):
    before = names_of(host_ns, "nm")
    for bad in ("1", "x", "1001", "-3"):
        with pytest.raises(errors.InvalidConfig, match="ports_per_bridge"):
            sharded(engine, "nmt-shdbad", "10.69.0.0/24", per_bridge=bad)
    assert names_of(host_ns, "nm") == before
    assert "nmt-shdbad" not in [n.name for n in engine.ctl.networks.values()]
