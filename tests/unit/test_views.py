"""netmgr.views: Docker-shaped inspect documents (docs/docker-reference.md, "network inspect",
"container inspect")."""

from __future__ import annotations

import json

from netmgr.model import (
    Container,
    ContainerConfig,
    ContainerState,
    Endpoint,
    Network,
    PoolConfig,
    PortMapping,
)
from netmgr.views import container_doc, network_doc, network_settings

NETWORK_KEYS = [
    "Name",
    "Id",
    "Created",
    "Scope",
    "Driver",
    "EnableIPv6",
    "IPAM",
    "Internal",
    "Attachable",
    "Ingress",
    "ConfigFrom",
    "ConfigOnly",
    "Containers",
    "Options",
    "Labels",
]
ENDPOINT_KEYS = [
    "IPAMConfig",
    "Links",
    "Aliases",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "MacAddress",
    "DriverOpts",
]

BRIDGE = Network(
    id="0da93a710419b5c8dbb887f0b9e38686ccb8585c3799b18ef930c17ef9c5ca69",
    name="bridge",
    driver="bridge",
    created="2026-11-28T06:00:00.1Z",
    predefined=True,
    pools=(PoolConfig("172.17.0.0/16", "172.17.0.1"),),
    options={
        "com.docker.network.bridge.name": "docker0",
        "com.docker.network.bridge.default_bridge": "true",
    },
)
HOST = Network(
    id="096c7bfdeecfc47ee981530ed14d7db833258c8745791fe390823a0be853d5fd",
    name="host",
    driver="host",
    predefined=True,
)
INSPNET = Network(
    id="05dbc8ed436eede44224b546db7521100b89a1c124dda76fa581f44a2ffb2d50",
    name="inspnet",
    driver="bridge",
    created="2026-11-28T06:25:01.402411533Z",
    attachable=True,
    labels={"owner": "netmgr", "env": "test"},
    options={"b": "2", "a": "1"},
    pools=(
        PoolConfig(
            "10.123.0.0/16",
            "10.123.0.254",
            "10.123.4.0/24",
            {"router": "10.123.0.2", "dns": "10.123.0.3"},
        ),
    ),
    user_subnet=True,
)
CNET = Network(
    id="4d7315af57344a24e426ef95c464972729a7f960a636baf80da31b0f25a0a9c9",
    name="cnet",
    driver="bridge",
    pools=(PoolConfig("10.40.0.0/24", "10.40.0.1"),),
)
CID = "6f771d184b81f7285253b7e1b6ed89b465aacfb1586c3934b3910e88ed44bd53"
EP_INSP = Endpoint(
    id="6387f6d70ea4d9b014f3c67f5106403c7ea53d26eec455186f12a209dfbfc184",
    network_id=INSPNET.id,
    container_id=CID,
    name="web2",
    ifname="eth0",
    mac="02:42:0a:7b:04:4d",
    ipv4="10.123.4.77/16",
    gateway="10.123.0.254",
    aliases=("api",),
    static_ipv4="10.123.4.77",
)
EP_CNET = Endpoint(
    id="d8c32016fc9af25c755cd69e1552f397304552ee25f491a13f85fa4ea701dd25",
    network_id=CNET.id,
    container_id=CID,
    name="web2",
    ifname="eth1",
    mac="02:42:0a:28:00:03",
    ipv4="10.40.0.3/24",
    gateway="10.40.0.1",
    aliases=("extra",),
)
WEB2 = Container(
    id=CID,
    name="web2",
    created="2026-11-28T06:25:10.5Z",
    config=ContainerConfig(argv=("sleep", "3600"), network_mode="inspnet", hostname="6f771d184b81"),
    sandbox_key="/run/netmgr/netns/6f771d184b81",
    state=ContainerState(status="running", pid=1234, started_at="2026-11-28T06:25:11Z"),
)
NETWORKS = {n.id: n for n in (BRIDGE, HOST, INSPNET, CNET)}


# -- network inspect ----------------------------------------------------------------------


def test_network_doc_key_order():
    doc = network_doc(INSPNET, [])
    assert list(doc) == NETWORK_KEYS
    assert list(doc["IPAM"]) == ["Driver", "Options", "Config"]
    assert list(json.loads(json.dumps(doc))) == NETWORK_KEYS


def test_network_doc_values():
    doc = network_doc(INSPNET, [EP_INSP])
    assert doc["Name"] == "inspnet" and doc["Id"] == INSPNET.id
    assert doc["Created"] == "2026-11-28T06:25:01.402411533Z"
    assert doc["Scope"] == "local" and doc["Driver"] == "bridge"
    assert doc["EnableIPv6"] is False and doc["Internal"] is False and doc["Attachable"] is True
    assert (
        doc["Ingress"] is False
        and doc["ConfigFrom"] == {"Network": ""}
        and doc["ConfigOnly"] is False
    )
    assert list(doc["Options"]) == ["a", "b"] and list(doc["Labels"]) == [
        "env",
        "owner",
    ]  # map keys sorted


def test_ipam_json_like_dockers():
    # docker network inspect -f '{{json .IPAM}}' inspnet
    want = (
        '{"Driver":"default","Options":{},"Config":[{"Subnet":"10.123.0.0/16","IPRange":"10.123.4.0/24",'
        '"Gateway":"10.123.0.254","AuxiliaryAddresses":{"dns":"10.123.0.3","router":"10.123.0.2"}}]}'
    )
    assert json.dumps(network_doc(INSPNET, [])["IPAM"], separators=(",", ":")) == want


def test_ipam_config_omits_empty_keys():
    assert network_doc(CNET, [])["IPAM"]["Config"] == [
        {"Subnet": "10.40.0.0/24", "Gateway": "10.40.0.1"}
    ]
    bare = Network(id="x" * 64, name="bare", driver="bridge", pools=(PoolConfig("10.70.0.0/16"),))
    assert network_doc(bare, [])["IPAM"]["Config"] == [{"Subnet": "10.70.0.0/16"}]
    assert network_doc(bare, [])["IPAM"]["Options"] == {}


def test_predefined_network_has_null_options_and_no_gateway():
    doc = network_doc(BRIDGE, [])
    assert doc["IPAM"] == {
        "Driver": "default",
        "Options": None,
        "Config": [{"Subnet": "172.17.0.0/16"}],
    }
    assert (
        json.dumps(doc["IPAM"]["Config"], separators=(",", ":")) == '[{"Subnet":"172.17.0.0/16"}]'
    )
    assert network_doc(HOST, [])["IPAM"] == {"Driver": "default", "Options": None, "Config": []}


def test_network_doc_containers():
    other = Endpoint(
        id="e" * 64,
        network_id=INSPNET.id,
        container_id="0" * 64,
        name="first",
        ipv4="10.123.4.0/16",
        mac="02:42:0a:7b:04:00",
    )
    doc = network_doc(INSPNET, [EP_INSP, other])
    assert list(doc["Containers"]) == ["0" * 64, CID]  # sorted by container ID
    assert doc["Containers"][CID] == {
        "Name": "web2",
        "EndpointID": EP_INSP.id,
        "MacAddress": "02:42:0a:7b:04:4d",
        "IPv4Address": "10.123.4.77/16",
        "IPv6Address": "",
    }
    assert list(doc["Containers"][CID]) == [
        "Name",
        "EndpointID",
        "MacAddress",
        "IPv4Address",
        "IPv6Address",
    ]
    assert network_doc(INSPNET, [])["Containers"] == {}


def test_network_doc_does_not_alias_record_dicts():
    doc = network_doc(INSPNET, [])
    doc["Labels"]["x"] = "y"
    doc["IPAM"]["Config"][0]["AuxiliaryAddresses"]["z"] = "1"
    assert "x" not in INSPNET.labels and "z" not in INSPNET.pools[0].aux


# -- container inspect --------------------------------------------------------------------


def test_networks_shape_two_user_networks():
    ns = network_settings(WEB2, [EP_INSP, EP_CNET], NETWORKS)
    assert list(ns["Networks"]) == ["cnet", "inspnet"]
    insp = ns["Networks"]["inspnet"]
    assert list(insp) == ENDPOINT_KEYS
    assert insp == {
        "IPAMConfig": {"IPv4Address": "10.123.4.77"},
        "Links": None,
        "Aliases": ["api", "6f771d184b81"],
        "NetworkID": INSPNET.id,
        "EndpointID": EP_INSP.id,
        "Gateway": "10.123.0.254",
        "IPAddress": "10.123.4.77",
        "IPPrefixLen": 16,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "02:42:0a:7b:04:4d",
        "DriverOpts": None,
    }
    cnet = ns["Networks"]["cnet"]
    # joined with `network connect`: IPAMConfig {} and DriverOpts {}
    assert cnet["IPAMConfig"] == {} and cnet["DriverOpts"] == {}
    assert cnet["Aliases"] == ["extra", "6f771d184b81"]
    assert cnet["IPPrefixLen"] == 24
    # not on the default bridge: the top-level fields are empty
    for key in (
        "EndpointID",
        "Gateway",
        "IPAddress",
        "MacAddress",
        "IPv6Gateway",
        "GlobalIPv6Address",
    ):
        assert ns[key] == ""
    assert ns["IPPrefixLen"] == 0 and ns["GlobalIPv6PrefixLen"] == 0
    assert ns["SandboxKey"] == WEB2.sandbox_key and ns["SandboxID"] == CID


def test_networks_shape_default_bridge():
    ctr = Container(
        id="9" * 64,
        name="psweb",
        created="",
        sandbox_key="/run/x",
        config=ContainerConfig(
            argv=("sleep", "1"),
            network_mode="bridge",
            ports=(PortMapping(80, "tcp", "", 8080), PortMapping(81, "udp", "127.0.0.1", 32768)),
        ),
    )
    ep = Endpoint(
        id="e" * 64,
        network_id=BRIDGE.id,
        container_id=ctr.id,
        name="psweb",
        mac="02:42:ac:11:00:04",
        ipv4="172.17.0.4/16",
        gateway="172.17.0.1",
        ports=ctr.config.ports,  # resolved host ports live on the endpoint
    )
    ns = network_settings(ctr, [ep], NETWORKS)
    bridge = ns["Networks"]["bridge"]
    assert (
        bridge["IPAMConfig"] is None and bridge["Aliases"] is None and bridge["DriverOpts"] is None
    )
    assert ns["EndpointID"] == ep.id and ns["IPAddress"] == "172.17.0.4" and ns["IPPrefixLen"] == 16
    assert ns["Gateway"] == "172.17.0.1" and ns["MacAddress"] == "02:42:ac:11:00:04"
    assert ns["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
        "81/udp": [{"HostIp": "127.0.0.1", "HostPort": "32768"}],
    }


def test_network_settings_key_order():
    ns = network_settings(WEB2, [], NETWORKS)
    assert list(ns) == [
        "Bridge",
        "SandboxID",
        "HairpinMode",
        "LinkLocalIPv6Address",
        "LinkLocalIPv6PrefixLen",
        "Ports",
        "SandboxKey",
        "SecondaryIPAddresses",
        "SecondaryIPv6Addresses",
        "EndpointID",
        "Gateway",
        "GlobalIPv6Address",
        "GlobalIPv6PrefixLen",
        "IPAddress",
        "IPPrefixLen",
        "IPv6Gateway",
        "MacAddress",
        "Networks",
    ]
    assert ns["Networks"] == {} and ns["Ports"] == {}


def test_endpoint_of_a_removed_network_is_shown_by_id():
    ghost = Endpoint(
        id="e" * 64, network_id="f" * 64, container_id=CID, name="web2", ipv4="10.9.0.2/24"
    )
    ns = network_settings(WEB2, [ghost], NETWORKS)
    assert list(ns["Networks"]) == ["f" * 64]
    assert ns["Networks"]["f" * 64]["Aliases"] is None


def test_container_doc():
    doc = container_doc(WEB2, [EP_INSP, EP_CNET], NETWORKS)
    assert list(doc)[:3] == ["Id", "Created", "Path"]
    assert doc["Name"] == "/web2" and doc["Path"] == "sleep" and doc["Args"] == ["3600"]
    assert doc["State"]["Running"] is True and doc["State"]["Pid"] == 1234
    assert doc["HostConfig"]["NetworkMode"] == "inspnet"
    assert doc["HostConfig"]["Binds"] is None and doc["HostConfig"]["PidsLimit"] is None
    assert doc["Config"]["Cmd"] == ["sleep", "3600"]
    assert set(doc["NetworkSettings"]["Networks"]) == {"cnet", "inspnet"}
    json.dumps(doc)


def test_container_doc_config_fields():
    ctr = Container(
        id="1" * 64,
        name="c",
        created="",
        config=ContainerConfig(
            argv=(),
            env=(("A", "1"), ("B", "x=y")),
            volumes=(("/d", "/m", True), ("/e", "/n", False)),
            memory=512 << 20,
            cpus=1.5,
            pids_limit=64,
            ports=(PortMapping(80),),
        ),
    )
    doc = container_doc(ctr, [], NETWORKS)
    assert doc["Path"] == "" and doc["Args"] == []
    assert doc["Config"]["Env"] == ["A=1", "B=x=y"]
    assert doc["HostConfig"]["Binds"] == ["/d:/m:ro", "/e:/n"]
    assert doc["HostConfig"]["Memory"] == 512 << 20
    assert doc["HostConfig"]["NanoCpus"] == 1_500_000_000
    assert doc["HostConfig"]["PidsLimit"] == 64
    assert doc["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert doc["NetworkSettings"]["SandboxID"] == ""
    assert doc["State"]["Running"] is False
