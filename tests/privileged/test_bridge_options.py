"""Bridge driver options as Docker names them, checked in the kernel and the ruleset."""

from __future__ import annotations

import pytest

from netmgr import errors
from netmgr.containers import RunRequest
from netmgr.controller import NetworkRequest
from netmgr.model import PoolConfig, PortMapping
from tests.privileged.conftest import ip_json, nft_json


def _elements(host, name):
    out = nft_json(host, "list", "map" if name.startswith(("dnat", "dport")) else "set", "inet", "netmgr", name)
    body = out["nftables"][1]
    return (body.get("set") or body.get("map")).get("elem", [])


def test_name_mtu_and_labels(engine, host_ns):
    engine.ctl.create_network(NetworkRequest("nmt-opt", pools=(PoolConfig("10.63.0.0/24"),), labels={"a": "b"},
                                             attachable=True, options={"com.docker.network.bridge.name": "nmt-br9",
                                                                       "com.docker.network.driver.mtu": "1400"}))
    links = {l["ifname"]: l for l in ip_json(host_ns.path, "link")}
    assert links["nmt-br9"]["mtu"] == 1400
    ctr = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-mtu", network="nmt-opt"))
    assert {l["ifname"]: l for l in ip_json(ctr.sandbox_key, "link")}["eth0"]["mtu"] == 1400
    net = engine.ctl.network("nmt-opt")
    assert net.labels == {"a": "b"} and net.attachable


def test_masquerade_off_and_host_binding(engine, host_ns):
    engine.ctl.create_network(NetworkRequest("nmt-nomasq", pools=(PoolConfig("10.63.1.0/24"),), options={
        "com.docker.network.bridge.enable_ip_masquerade": "false",
        "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"}))
    assert {"prefix": {"addr": "10.63.1.0", "len": 24}} not in _elements(host_ns.path, "masq4")
    engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-hb", network="nmt-nomasq",
                                     ports=(PortMapping(80, "tcp", "", 8099),)))
    keys = [e[0]["concat"] for e in _elements(host_ns.path, "dnat4a")]
    assert ["127.0.0.1", "tcp", 8099] in keys
    assert not _elements(host_ns.path, "dnat4")  # not on every address


def test_bad_options_change_nothing(engine, host_ns):
    before = ip_json(host_ns.path, "link")
    for opts in ({"com.docker.network.driver.mtu": "20"}, {"com.docker.network.bridge.enable_icc": "maybe"},
                 {"com.docker.network.bridge.name": "a-name-longer-than-15"}):
        with pytest.raises(errors.InvalidConfig):
            engine.ctl.create_network(NetworkRequest("nmt-bad", pools=(PoolConfig("10.63.2.0/24"),), options=opts))
    assert ip_json(host_ns.path, "link") == before
    assert "nmt-bad" not in {n.name for n in engine.ctl.networks.values()}
