"""netmgr.model: records survive to_dict/from_dict, directly and through JSON (the store's path)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from netmgr.model import (
    Container,
    ContainerConfig,
    ContainerState,
    Endpoint,
    Network,
    PoolConfig,
    PortMapping,
    from_dict,
    new_id,
    now_rfc3339,
    to_dict,
)

NETWORK = Network(
    id="74b7c7a98d758aa053f7f686dcb5c75b118c00c8c8359366636a447fac905a88",
    name="labnet",
    driver="bridge",
    created="2026-11-28T06:24:54.094667103Z",
    internal=True,
    attachable=True,
    ipv6=True,
    options={"com.docker.network.bridge.name": "br-test"},
    labels={"env": "prod"},
    ipam_options={"x": "y"},
    pools=(
        PoolConfig("10.123.0.0/16", "10.123.0.254", "10.123.4.0/24", {"dns": "10.123.0.3"}),
        PoolConfig("fd00:1::/64", "fd00:1::1"),
    ),
    user_subnet=True,
    driver_data={"bridge": "br-74b7c7a98d75", "mtu": 1500, "nested": {"a": [1, 2]}},
)

ENDPOINT = Endpoint(
    id="6387f6d70ea4d9b014f3c67f5106403c7ea53d26eec455186f12a209dfbfc184",
    network_id=NETWORK.id,
    container_id="6f771d184b81f7285253b7e1b6ed89b465aacfb1586c3934b3910e88ed44bd53",
    name="web2",
    ifname="eth1",
    mac="02:42:0a:7b:04:4d",
    ipv4="10.123.4.77/16",
    ipv6="fd00:1::2/64",
    gateway="10.123.0.254",
    gateway6="fd00:1::1",
    aliases=("api", "www"),
    static_ipv4="10.123.4.77",
    driver_data={"veth": "nm3f2a"},
)

CONTAINER = Container(
    id=ENDPOINT.container_id,
    name="web2",
    created="2026-11-28T06:25:01.402411533Z",
    config=ContainerConfig(
        argv=("sh", "-c", "exit 7"),
        hostname="web",
        env=(("A", "1"), ("PATH", "/bin:/usr/bin"), ("EMPTY", "")),
        rootfs="/srv/rootfs",
        volumes=(("/data", "/mnt", True), ("/tmp/x", "/x", False)),
        memory=512 << 20,
        cpus=1.5,
        pids_limit=64,
        network_mode="labnet",
        auto_remove=True,
        ports=(PortMapping(80, "tcp", "", 8080), PortMapping(81, "udp", "127.0.0.1", 32768)),
        workdir="/srv",
    ),
    sandbox_key="/run/netmgr/netns/6f771d184b81",
    state=ContainerState(
        status="exited",
        pid=0,
        shim_pid=42,
        exit_code=7,
        started_at="2026-11-28T06:25:02Z",
        finished_at="2026-11-28T06:25:03Z",
    ),
)

RECORDS = [
    NETWORK,
    ENDPOINT,
    CONTAINER,
    Network("i", "n", "null"),
    Endpoint("e", "n", "c", "x"),
    Container("c", "x", "", ContainerConfig(argv=())),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(record):
    assert from_dict(type(record), to_dict(record)) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip_through_json(record):
    data = json.loads(json.dumps(to_dict(record)))
    back = from_dict(type(record), data)
    assert back == record
    assert type(back) is type(record)


def test_nested_types_are_rebuilt():
    back = from_dict(Container, json.loads(json.dumps(to_dict(CONTAINER))))
    assert isinstance(back.config, ContainerConfig)
    assert isinstance(back.state, ContainerState)
    assert all(isinstance(p, PortMapping) for p in back.config.ports)
    assert isinstance(back.config.argv, tuple)
    assert back.config.env == (("A", "1"), ("PATH", "/bin:/usr/bin"), ("EMPTY", ""))
    assert back.config.volumes[0] == ("/data", "/mnt", True)
    assert isinstance(back.config.volumes[0], tuple)
    net = from_dict(Network, json.loads(json.dumps(to_dict(NETWORK))))
    assert all(isinstance(p, PoolConfig) for p in net.pools)
    assert net.pools[0].aux == {"dns": "10.123.0.3"}
    ep = from_dict(Endpoint, json.loads(json.dumps(to_dict(ENDPOINT))))
    assert ep.aliases == ("api", "www")


def test_to_dict_is_plain_json_data():
    data = to_dict(CONTAINER)
    assert json.loads(json.dumps(data)) == data  # tuples have become lists already
    assert data["config"]["ports"][1] == {
        "container_port": 81,
        "protocol": "udp",
        "host_ip": "127.0.0.1",
        "host_port": 32768,
    }
    assert data["config"]["volumes"] == [["/data", "/mnt", True], ["/tmp/x", "/x", False]]


def test_to_dict_does_not_share_mutable_state():
    data = to_dict(NETWORK)
    data["labels"]["env"] = "changed"
    data["driver_data"]["nested"]["a"].append(3)
    assert NETWORK.labels == {"env": "prod"}
    assert NETWORK.driver_data["nested"]["a"] == [1, 2]


def test_from_dict_ignores_unknown_fields_and_fills_defaults():
    data = to_dict(ENDPOINT)
    data["added_by_a_newer_version"] = {"x": 1}
    del data["driver_data"]
    del data["aliases"]
    back = from_dict(Endpoint, data)
    assert back == dataclasses.replace(ENDPOINT, driver_data={}, aliases=())


def test_old_container_record_without_state():
    data = to_dict(CONTAINER)
    del data["state"]
    del data["config"]["ports"]
    back = from_dict(Container, data)
    assert back.state == ContainerState()
    assert back.config.ports == ()


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        NETWORK.name = "x"  # type: ignore[misc]


def test_new_id_and_time():
    a, b = new_id(), new_id()
    assert re.fullmatch(r"[0-9a-f]{64}", a) and a != b
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", now_rfc3339())
