"""Property-based tests of the gRPC API against a live netmgrd on the real kernel (hypothesis).

Random NetworkCreate, NetworkConnect and ContainerRun requests: names,
drivers, CIDRs, gateways, ranges, driver options, labels, addresses,
aliases, ports, limits, oversized values. The property, for every request:

* it succeeds and what it made is valid (inspect shows it, the kernel has it),
  and removing it gives back exactly the state before (store rows, links,
  addresses, nftables, sandboxes, shims); or
* it fails with a typed error (never "internal error", never an untyped
  gRPC status) and a one-line message, and the state is exactly as before.

Case counts scale with NETMGR_FUZZ_SCALE. The CLI side: tests/unit/test_fuzz_cli.py.
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netmgr import errors
from netmgr.client import Client
from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb
from tests.privileged.test_cli import state


def examples(n: int) -> int:
    return int(n * float(os.environ.get("NETMGR_FUZZ_SCALE", "1")))


SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
BIG = st.text(st.characters(blacklist_categories=("Cs",)), min_size=300, max_size=5000)
NAME_CHARS = st.sampled_from("abcXYZ019_.-")
NAME = st.one_of(
    st.builds(lambda s: "nmt-fz-" + s, st.text(NAME_CHARS, max_size=12)),
    st.sampled_from(["", "bridge", "host", "none", "nmt-fz-net", "-x", ".x", "a" * 300, "nmt fz", "nmt/fz"]),
    TEXT, BIG)
V4NET = st.builds(lambda a, p: str(ipaddress.ip_network(f"10.{a}.0.0/{p}", strict=False)),
                  st.integers(88, 97), st.integers(8, 32))
V6NET = st.builds(lambda a, p: str(ipaddress.ip_network(f"fd{a:02x}::/{p}", strict=False)),
                  st.integers(0, 255), st.integers(48, 128))
CIDR = st.one_of(V4NET, V6NET, st.sampled_from(["", "10.90.0.0/33", "10.90.0.1/24", "300.0.0.0/8", "0.0.0.0/0",
                                                 "127.0.0.0/8", "224.0.0.0/4", "::/0", "fe80::/64", "x"]), TEXT)
ADDR = st.one_of(st.builds(lambda a, b: f"10.{a}.0.{b}", st.integers(88, 97), st.integers(0, 255)),
                 st.sampled_from(["", "10.90.0.0", "10.90.0.255", "::1", "fd00::1", "1.2.3.4.5", "x"]), TEXT)
OPTION_KEYS = st.sampled_from([
    "com.docker.network.bridge.name", "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade", "com.docker.network.driver.mtu",
    "com.docker.network.bridge.host_binding_ipv4", "com.docker.network.bridge.gateway_mode_ipv4",
    "com.docker.network.container_iface_prefix", "com.docker.network.bridge.inhibit_ipv4",
    "com.docker.network.enable_ipv6", "parent", "encrypted", "nmt-unknown"])
OPTION_VALUES = st.one_of(st.sampled_from(["true", "false", "1", "0", "68", "1280", "9000", "65536", "-1", "",
                                           "nat", "routed", "lo", "netmgr0", "nmt-fzbr", "a" * 20, "eth"]), TEXT)


@st.composite
def pools(draw):
    subnet = draw(CIDR)
    return pb.IPAMPool(subnet=subnet, gateway=draw(st.one_of(st.just(""), ADDR)),
                       ip_range=draw(st.one_of(st.just(""), CIDR)),
                       aux_addresses=draw(st.dictionaries(TEXT, ADDR, max_size=2)))


WILD_CREATE = st.builds(
    pb.NetworkCreateRequest,
    name=NAME, driver=st.sampled_from(["", "bridge", "null", "host", "overlay", "macvlan", "nmt-nodriver", "Bridge"]),
    pools=st.lists(pools(), max_size=3), ipam_driver=st.sampled_from(["", "default", "null", "nmt-noipam"]),
    ipam_options=st.dictionaries(TEXT, TEXT, max_size=2),
    options=st.dictionaries(OPTION_KEYS, OPTION_VALUES, max_size=3),
    labels=st.dictionaries(st.one_of(TEXT, BIG), st.one_of(TEXT, BIG), max_size=3),
    internal=st.booleans(), attachable=st.booleans(), ipv6=st.booleans())

WILD_CONNECT = st.builds(
    pb.ConnectRequest,
    network=st.sampled_from(["nmt-fz-net2", "nmt-fz-net", "nmt-fz-none", "host", "none", ""]),
    container=st.sampled_from(["nmt-fz-c", "nmt-fz-missing", ""]),
    ip=st.one_of(st.just(""), ADDR), ip6=st.one_of(st.just(""), ADDR),
    aliases=st.lists(st.one_of(NAME, TEXT), max_size=3))

PORT = st.builds(pb.PortMapping, container_port=st.integers(0, 70000).filter(lambda p: p < 2**32),
                 protocol=st.sampled_from(["tcp", "udp", "sctp", "", "icmp", "TCP"]),
                 host_ip=st.sampled_from(["", "127.0.0.1", "0.0.0.0", "::", "10.98.0.1", "1.2.3.4", "x"]),
                 host_port=st.integers(0, 70000))

WILD_RUN = st.builds(
    pb.RunRequest,
    argv=st.one_of(st.just(["sleep", "60"]), st.lists(TEXT, max_size=3)),
    name=st.one_of(st.just(""), NAME), network=st.sampled_from(["", "nmt-fz-net", "none", "host", "nmt-fz-nope"]),
    ip=st.one_of(st.just(""), ADDR), aliases=st.lists(TEXT, max_size=2),
    ports=st.lists(PORT, max_size=3), hostname=st.one_of(st.just(""), TEXT, BIG),
    env=st.lists(st.one_of(TEXT, st.just("A=b"), st.just("=x")), max_size=3),
    workdir=st.sampled_from(["", "/", "/tmp", "relative", "/nonexistent-nmt"]),
    memory=st.sampled_from([0, -1, 1, 4096, 6 << 20, 1 << 62]),
    cpus=st.sampled_from([0.0, -1.0, 0.001, 0.5, 1e9, float("nan"), float("inf")]),
    pids_limit=st.sampled_from([0, -5, 1, 100, 1 << 62]))


# mostly valid requests, so that the success path (and its clean removal) is exercised as much as refusals
HEX = st.text(st.sampled_from("0123456789abcdef"), min_size=6, max_size=6)


@st.composite
def valid_pool(draw):
    net = ipaddress.ip_network(draw(st.builds(lambda a, b, p: f"10.{a}.{b}.0/{p}", st.integers(88, 97),
                                              st.integers(0, 255), st.integers(16, 28))), strict=False)
    hosts = net.num_addresses - 2
    gateway = str(net[draw(st.integers(1, hosts))]) if draw(st.booleans()) else ""
    ip_range = str(ipaddress.ip_network(f"{net[0]}/{net.prefixlen + 1}")) if draw(st.booleans()) else ""
    return pb.IPAMPool(subnet=str(net), gateway=gateway, ip_range=ip_range)


VALID_OPTIONS = st.fixed_dictionaries({}, optional={
    "com.docker.network.bridge.name": st.builds(lambda h: "nmt-fzb" + h, HEX),
    "com.docker.network.bridge.enable_icc": st.sampled_from(["true", "false"]),
    "com.docker.network.bridge.enable_ip_masquerade": st.sampled_from(["true", "false"]),
    "com.docker.network.driver.mtu": st.integers(1280, 9000).map(str)})

VALID_CREATE = st.builds(
    pb.NetworkCreateRequest, name=st.builds(lambda h: "nmt-fz-" + h, HEX),
    driver=st.sampled_from(["", "bridge", "bridge", "null"]), pools=st.lists(valid_pool(), max_size=1),
    options=VALID_OPTIONS, labels=st.dictionaries(st.one_of(TEXT, BIG), st.one_of(TEXT, BIG), max_size=3),
    internal=st.booleans(), attachable=st.booleans())
NETWORK_CREATE = st.one_of(WILD_CREATE, VALID_CREATE)

VALID_CONNECT = st.builds(
    pb.ConnectRequest, network=st.just("nmt-fz-net2"), container=st.just("nmt-fz-c"),
    ip=st.one_of(st.just(""), st.integers(2, 254).map(lambda b: f"10.99.0.{b}")),
    aliases=st.lists(st.builds(lambda h: "nmt-fz-a" + h, HEX), max_size=3))
CONNECT = st.one_of(WILD_CONNECT, VALID_CONNECT)

VALID_RUN = st.builds(
    pb.RunRequest, argv=st.just(["sleep", "60"]), name=st.one_of(st.just(""), st.builds(lambda h: "nmt-fz-r" + h, HEX)),
    network=st.just("nmt-fz-net"), ip=st.one_of(st.just(""), st.integers(2, 254).map(lambda b: f"10.98.0.{b}")),
    aliases=st.lists(st.builds(lambda h: "nmt-fz-a" + h, HEX), max_size=2),
    ports=st.lists(st.builds(pb.PortMapping, container_port=st.integers(1, 65535),
                             protocol=st.sampled_from(["tcp", "udp", "sctp"]),
                             host_ip=st.sampled_from(["", "127.0.0.1"]),
                             host_port=st.one_of(st.just(0), st.integers(20000, 60000))), max_size=3),
    hostname=st.one_of(st.just(""), st.builds(lambda h: "h" + h, HEX)), env=st.lists(st.just("A=b"), max_size=1),
    memory=st.sampled_from([0, 64 << 20]), cpus=st.sampled_from([0.0, 0.5]), pids_limit=st.sampled_from([0, 100]))
RUN = st.one_of(WILD_RUN, VALID_RUN)


@pytest.fixture(scope="module")
def api(sim_host):
    h = sim_host
    assert h.cli("network", "create", "--subnet", "10.98.0.0/24", "nmt-fz-net").rc == 0
    assert h.cli("network", "create", "--subnet", "10.99.0.0/24", "nmt-fz-net2").rc == 0
    assert h.cli("run", "-d", "--name", "nmt-fz-c", "--network", "nmt-fz-net", "sleep", "3600").rc == 0
    client = Client(f"unix://{h.socket}")
    yield h, client
    client.close()


def _typed_failure(exc: errors.NetmgrError, request) -> None:
    event(type(exc).__name__)
    assert not isinstance(exc, errors.InternalError), (request, exc)
    assert type(exc) is not errors.NetmgrError, (request, exc)  # a class, not an untyped status
    assert exc.message and exc.message.count("\n") <= str(request).count("\\n"), (request, exc)


@settings(max_examples=examples(150), **SETTINGS)
@given(NETWORK_CREATE)
def test_network_create_is_valid_or_a_typed_error_that_changes_nothing(api, request):
    h, client = api
    before = state(h)
    try:
        net_id = client.call("NetworkCreate", request).id
    except errors.NetmgrError as exc:
        _typed_failure(exc, request)
        assert state(h) == before, request
        return
    event("created")
    doc = client.documents("NetworkInspect", pb.Refs(refs=[net_id]))[0]
    assert doc["Name"] == request.name and doc["Id"] == net_id
    for cfg in doc["IPAM"]["Config"] or []:
        ipaddress.ip_network(cfg["Subnet"])  # strict: a network address
    _, failures = client.batch("NetworkRemove", pb.Refs(refs=[net_id]))
    assert not failures, failures
    assert state(h) == before, request


@settings(max_examples=examples(80), **SETTINGS)
@given(CONNECT)
def test_connect_is_valid_or_a_typed_error_that_changes_nothing(api, request):
    h, client = api
    before = state(h)
    try:
        client.call("NetworkConnect", request)
    except errors.NetmgrError as exc:
        _typed_failure(exc, request)
        assert state(h) == before, request
        return
    event("connected")
    doc = client.documents("ContainerInspect", pb.Refs(refs=["nmt-fz-c"]))[0]
    assert request.network in doc["NetworkSettings"]["Networks"]
    client.call("NetworkDisconnect", pb.DisconnectRequest(network=request.network, container=request.container))
    assert state(h) == before, request


@settings(max_examples=examples(60), **SETTINGS)
@given(RUN)
def test_run_is_valid_or_a_typed_error_that_changes_nothing(api, request):
    h, client = api
    before = state(h)
    try:
        resp = client.call("ContainerRun", request)
    except errors.NetmgrError as exc:
        _typed_failure(exc, request)
        assert state(h) == before, request
        return
    event("started")
    doc = client.documents("ContainerInspect", pb.Refs(refs=[resp.id]))[0]
    assert doc["Id"] == resp.id
    _, failures = client.batch("ContainerRemove", pb.Refs(refs=[resp.id], force=True))
    assert not failures, failures
    assert state(h) == before, request
