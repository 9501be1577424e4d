"""netmgr.ipam: CIDR parsing, pool validation, overlap checks, default pools, addresses.

Error texts are Docker 20.10's (docs/docker-reference.md, "network create" and
"Static container IPs").
"""

from __future__ import annotations

import pytest

from netmgr import errors
from netmgr.ipam import DEFAULT_POOLS, IPAM, parse_cidr, parse_default_pool
from netmgr.model import PoolConfig


def _ipam_with(subnet: str, net_id: str = "n1", routes=(), **kw) -> IPAM:
    ipam = IPAM(host_routes=lambda: list(routes))
    ipam.add_network(net_id, [ipam.validate_pool(PoolConfig(subnet, **kw))])
    return ipam


# -- parse_cidr --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["10.0.0.0/8", "10.1.2.0/24", "0.0.0.0/0", "10.0.0.0/32", "fd00::/64", "::/0", "10.0.0.0/08"],
)
def test_parse_cidr_accepts_go_style(text):
    assert str(parse_cidr(text)).split("/")[1] == str(int(text.split("/")[1]))


@pytest.mark.parametrize(
    "text",
    [
        "10/8",
        "10.0.0.0/33",
        "foo",
        "10.0.0.0",
        "10.0.0/8",
        "010.0.0.0/8",
        "10.0.0.0/",
        "/8",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "fd00::/129",
        "10.0.0.0/8/9",
        " 10.0.0.0/8",
        "10.0.0.0 /8",
        "1.2.3.4.5/8",
        "",
    ],
)
def test_parse_cidr_rejects_what_go_rejects(text):
    with pytest.raises(errors.InvalidConfig) as exc:
        parse_cidr(text)
    assert str(exc.value) == f"invalid CIDR address: {text}"


# -- parse_default_pool ----------------------------------------------------------


def test_parse_default_pool():
    assert parse_default_pool("base=10.10.0.0/16,size=24") == ("10.10.0.0/16", 24)
    assert parse_default_pool("size=20,base=192.168.0.0/16") == ("192.168.0.0/16", 20)
    assert parse_default_pool("base=fd00::/48,size=64") == ("fd00::/48", 64)


@pytest.mark.parametrize(
    "text",
    [
        "base=10.10.0.0/16",
        "size=24",
        "",
        "10.10.0.0/16,24",
        "base=10.10.0.0/16,size=x",
        "base=10.10.0.0/16,size=8",
        "base=10.10.0.0/16,size=33",
        "base=foo,size=24",
    ],
)
def test_parse_default_pool_rejects(text):
    with pytest.raises(errors.InvalidConfig):
        parse_default_pool(text)


def test_custom_default_pool_is_used():
    ipam = IPAM(default_pools=[parse_default_pool("base=10.10.0.0/16,size=24")])
    assert ipam.allocate_default_subnet() == "10.10.0.0/24"


# -- validate_pool -------------------------------------------------------------


def test_validate_pool_fills_gateway_and_has_no_side_effect():
    ipam = IPAM()
    cfg = ipam.validate_pool(PoolConfig("10.20.0.0/16"))
    assert cfg == PoolConfig("10.20.0.0/16", "10.20.0.1", "", {})
    assert not ipam.has_network("n1")
    # validating twice does not count as taking the pool
    ipam.validate_pool(PoolConfig("10.20.0.0/16"))
    ipam.check_overlap("10.20.0.0/16")


def test_validate_pool_keeps_user_values():
    cfg = IPAM().validate_pool(
        PoolConfig(
            "10.123.0.0/16",
            "10.123.0.254",
            "10.123.4.0/24",
            {"router": "10.123.0.2", "dns": "10.123.0.3"},
        )
    )
    assert cfg == PoolConfig(
        "10.123.0.0/16",
        "10.123.0.254",
        "10.123.4.0/24",
        {"router": "10.123.0.2", "dns": "10.123.0.3"},
    )


@pytest.mark.parametrize("subnet", ["10.0.0.0/33", "foo", "10/8", ""])
def test_validate_pool_bad_subnet_docker_message(subnet):
    with pytest.raises(errors.InvalidConfig) as exc:
        IPAM().validate_pool(PoolConfig(subnet))
    assert str(exc.value) == f"Invalid subnet {subnet} : invalid CIDR address: {subnet}"


@pytest.mark.parametrize("gateway", ["10.99.0.1", "foo", "fd00::1", "10.97.0.1/24"])
def test_validate_pool_gateway_outside(gateway):
    with pytest.raises(errors.InvalidConfig) as exc:
        IPAM().validate_pool(PoolConfig("10.20.0.0/16", gateway=gateway))
    assert str(exc.value) == f"no matching subnet for gateway {gateway}"


@pytest.mark.parametrize("ip_range", ["10.30.0.0/24", "10.0.0.0/8", "fd00::/64"])
def test_validate_pool_range_outside_or_larger(ip_range):
    with pytest.raises(errors.InvalidConfig) as exc:
        IPAM().validate_pool(PoolConfig("10.20.0.0/16", ip_range=ip_range))
    assert str(exc.value) == f"no matching subnet for range {ip_range}"


def test_validate_pool_bad_range_cidr():
    with pytest.raises(errors.InvalidConfig) as exc:
        IPAM().validate_pool(PoolConfig("10.96.0.0/16", ip_range="10.96.0.0/33"))
    assert "invalid CIDR address: 10.96.0.0/33" in str(exc.value)


def test_validate_pool_range_equal_to_subnet_is_fine():
    cfg = IPAM().validate_pool(PoolConfig("10.20.0.0/24", ip_range="10.20.0.0/24"))
    assert cfg.ip_range == "10.20.0.0/24"


@pytest.mark.parametrize("aux", ["10.99.0.5", "foo", "", "fd00::5"])
def test_validate_pool_aux_outside(aux):
    with pytest.raises(errors.InvalidConfig) as exc:
        IPAM().validate_pool(PoolConfig("10.20.0.0/16", aux={"host1": aux}))
    assert str(exc.value) == f"no matching subnet for aux-address {aux}"


def test_validate_pool_small_subnets_have_no_gateway():
    ipam = IPAM()
    assert ipam.validate_pool(PoolConfig("10.0.0.0/30")).gateway == "10.0.0.1"
    assert ipam.validate_pool(PoolConfig("10.0.0.0/31")).gateway == ""
    assert ipam.validate_pool(PoolConfig("10.0.0.0/32")).gateway == ""


def test_validate_pool_ipv6():
    assert IPAM().validate_pool(PoolConfig("fd00:1::/64")) == PoolConfig(
        "fd00:1::/64", "fd00:1::1", "", {}
    )


# -- check_overlap ---------------------------------------------------------------


@pytest.mark.parametrize("subnet", ["10.20.0.0/16", "10.20.5.0/24", "10.0.0.0/8"])
def test_overlap_with_other_network_both_directions(subnet):
    ipam = _ipam_with("10.20.0.0/16")
    with pytest.raises(errors.AlreadyExists) as exc:
        ipam.check_overlap(subnet)
    assert str(exc.value) == "Pool overlaps with other one on this address space"
    assert isinstance(exc.value, errors.Conflict)


def test_no_overlap_for_neighbours_or_other_family():
    ipam = _ipam_with("10.20.0.0/16")
    ipam.check_overlap("10.21.0.0/16")
    ipam.check_overlap("10.19.255.0/24")
    ipam.check_overlap("::/0")


def test_overlap_skips_own_network():
    ipam = _ipam_with("10.20.0.0/16")
    ipam.check_overlap("10.20.0.0/16", skip_network="n1")


def test_removed_network_frees_its_pool():
    ipam = _ipam_with("10.20.0.0/16")
    ipam.remove_network("n1")
    ipam.remove_network("n1")  # idempotent
    assert not ipam.has_network("n1")
    ipam.check_overlap("10.20.0.0/16")


@pytest.mark.parametrize("subnet", ["192.168.1.0/24", "192.168.1.128/25", "192.168.0.0/16"])
def test_overlap_with_host_route_both_directions(subnet):
    ipam = IPAM(host_routes=lambda: ["192.168.1.0/24"])
    with pytest.raises(errors.AlreadyExists) as exc:
        ipam.check_overlap(subnet)
    assert str(exc.value).startswith("Pool overlaps with other one on this address space")
    assert "192.168.1.0/24" in str(exc.value)


def test_host_default_route_and_other_family_ignored():
    ipam = IPAM(host_routes=lambda: ["0.0.0.0/0", "::/0", "fd00::/64"])
    ipam.check_overlap("10.0.0.0/8")


def test_host_routes_are_read_on_every_check():
    routes: list[str] = []
    ipam = IPAM(host_routes=lambda: routes)
    ipam.check_overlap("10.1.0.0/16")
    routes.append("10.1.2.0/24")
    with pytest.raises(errors.AlreadyExists):
        ipam.check_overlap("10.1.0.0/16")


# -- allocate_default_subnet ---------------------------------------------------------


def _docker_order() -> list[str]:
    return [f"172.{n}.0.0/16" for n in range(17, 32)] + [
        f"192.168.{16 * n}.0/20" for n in range(16)
    ]


def test_default_pools_are_dockers():
    assert DEFAULT_POOLS[0] == ("172.17.0.0/16", 16)
    assert DEFAULT_POOLS[-1] == ("192.168.0.0/16", 20)


def test_allocate_default_subnet_in_docker_order_until_exhausted():
    ipam = IPAM()
    got = []
    for i in range(31):
        subnet = ipam.allocate_default_subnet()
        got.append(subnet)
        ipam.add_network(f"n{i}", [ipam.validate_pool(PoolConfig(subnet))])
    assert got == _docker_order()
    with pytest.raises(errors.Unavailable) as exc:
        ipam.allocate_default_subnet()
    assert str(exc.value) == (
        "could not find an available, non-overlapping IPv4 address pool among the "
        "defaults to assign to the network"
    )


def test_allocate_default_subnet_skips_networks_and_routes():
    ipam = IPAM(host_routes=lambda: ["0.0.0.0/0", "172.18.3.0/24"])
    ipam.add_network("docker0", [PoolConfig("172.17.0.0/16", "172.17.0.1")])
    ipam.add_network("big", [PoolConfig("172.20.0.0/14", "172.20.0.1")])
    assert ipam.allocate_default_subnet() == "172.19.0.0/16"
    ipam.add_network("x", [PoolConfig("172.19.0.0/16")])
    assert ipam.allocate_default_subnet() == "172.24.0.0/16"


def test_allocate_default_subnet_reuses_a_freed_pool():
    ipam = IPAM()
    ipam.add_network("a", [PoolConfig(ipam.allocate_default_subnet())])
    ipam.add_network("b", [PoolConfig(ipam.allocate_default_subnet())])
    ipam.remove_network("a")
    assert ipam.allocate_default_subnet() == "172.17.0.0/16"


def test_allocate_default_subnet_ipv6_has_no_default():
    with pytest.raises(errors.Unavailable) as exc:
        IPAM().allocate_default_subnet(version=6)
    assert str(exc.value) == (
        "could not find an available, non-overlapping IPv6 address pool among the "
        "defaults to assign to the network"
    )


def test_allocate_default_subnet_ipv6_custom_pool():
    ipam = IPAM(default_pools=[("fd00::/48", 64)])
    assert ipam.allocate_default_subnet(version=6) == "fd00::/64"
    with pytest.raises(errors.Unavailable):
        ipam.allocate_default_subnet(version=4)


# -- request_address ---------------------------------------------------------------


def test_request_lowest_free_skips_gateway_and_network():
    ipam = _ipam_with("10.40.0.0/24")
    assert ipam.request_address("n1") == "10.40.0.2/24"
    assert ipam.request_address("n1") == "10.40.0.3/24"
    ipam.release_address("n1", "10.40.0.2/24")
    assert ipam.request_address("n1") == "10.40.0.2/24"
    assert ipam.request_address("n1") == "10.40.0.4/24"


def test_request_skips_aux_and_user_gateway():
    ipam = _ipam_with("10.40.0.0/24", gateway="10.40.0.2", aux={"a": "10.40.0.1", "b": "10.40.0.3"})
    assert ipam.in_use("n1") == 3
    assert ipam.request_address("n1") == "10.40.0.4/24"


def test_request_respects_ip_range_and_gives_its_network_address():
    # Docker: with --ip-range 10.123.4.0/24 inside a /16 the first container got 10.123.4.0
    ipam = _ipam_with("10.123.0.0/16", gateway="10.123.0.254", ip_range="10.123.4.0/24")
    assert ipam.request_address("n1") == "10.123.4.0/16"
    assert ipam.request_address("n1") == "10.123.4.1/16"


def test_request_in_small_range_until_exhausted():
    ipam = _ipam_with("10.0.0.0/29", ip_range="10.0.0.4/30")
    assert [ipam.request_address("n1", label="net1 (abc)") for _ in range(3)] == [
        "10.0.0.4/29",
        "10.0.0.5/29",
        "10.0.0.6/29",
    ]  # .7 is the subnet's broadcast
    with pytest.raises(errors.Unavailable) as exc:
        ipam.request_address("n1", label="net1 (abc)")
    assert (
        str(exc.value) == "no available IPv4 addresses on this network's address pools: net1 (abc)"
    )


def test_request_never_gives_broadcast():
    ipam = _ipam_with("10.0.0.0/28")
    got = {ipam.request_address("n1") for _ in range(13)}
    assert "10.0.0.15/28" not in got and "10.0.0.0/28" not in got and "10.0.0.1/28" not in got
    with pytest.raises(errors.Unavailable):
        ipam.request_address("n1")


def test_slash_30():
    ipam = _ipam_with("10.0.0.0/30")
    assert ipam.request_address("n1") == "10.0.0.2/30"
    with pytest.raises(errors.Unavailable):
        ipam.request_address("n1")
    with pytest.raises(errors.AlreadyExists):
        ipam.request_address("n1", ip="10.0.0.3")  # broadcast


def test_slash_31_uses_both_addresses():
    # RFC 3021: a /31 has no network or broadcast address, and no gateway is chosen
    ipam = _ipam_with("10.0.0.0/31")
    assert ipam.request_address("n1") == "10.0.0.0/31"
    assert ipam.request_address("n1") == "10.0.0.1/31"
    with pytest.raises(errors.Unavailable):
        ipam.request_address("n1")


def test_slash_32_single_address():
    ipam = _ipam_with("10.0.0.7/32")
    assert ipam.request_address("n1") == "10.0.0.7/32"
    with pytest.raises(errors.Unavailable):
        ipam.request_address("n1")


def test_two_pools_second_used_when_first_full():
    ipam = IPAM()
    ipam.add_network(
        "n1",
        [
            ipam.validate_pool(PoolConfig("10.0.0.0/30")),
            ipam.validate_pool(PoolConfig("10.1.0.0/24")),
        ],
    )
    assert ipam.request_address("n1") == "10.0.0.2/30"
    assert ipam.request_address("n1") == "10.1.0.2/24"


def test_ipv6_pool():
    ipam = _ipam_with("fd00:1::/64")
    assert ipam.request_address("n1", version=6) == "fd00:1::2/64"
    assert ipam.request_address("n1", version=6) == "fd00:1::3/64"
    assert ipam.request_address("n1", version=4) == ""  # no IPv4 pool: no address, no error
    assert ipam.request_address("n1", version=6, ip="fd00:1::ff") == "fd00:1::ff/64"
    with pytest.raises(errors.AlreadyExists):
        ipam.request_address("n1", version=6, ip="fd00:1::")  # the subnet-router anycast address
    with pytest.raises(errors.AlreadyExists):
        ipam.request_address("n1", version=6, ip="fd00:1::1")  # the gateway


def test_ipv6_small_pool_exhaustion():
    ipam = _ipam_with("fd00::/126")
    assert ipam.request_address("n1", version=6) == "fd00::2/126"
    assert ipam.request_address("n1", version=6) == "fd00::3/126"  # no broadcast in IPv6
    with pytest.raises(errors.Unavailable) as exc:
        ipam.request_address("n1", version=6, label="v6net")
    assert str(exc.value) == "no available IPv6 addresses on this network's address pools: v6net"


def test_dual_stack_network():
    ipam = IPAM()
    ipam.add_network(
        "n1",
        [
            ipam.validate_pool(PoolConfig("10.5.0.0/24")),
            ipam.validate_pool(PoolConfig("fd05::/64")),
        ],
    )
    assert ipam.request_address("n1", 4) == "10.5.0.2/24"
    assert ipam.request_address("n1", 6) == "fd05::2/64"


def test_request_on_unknown_network():
    ipam = IPAM()
    assert ipam.request_address("nope") == ""
    with pytest.raises(errors.InvalidConfig) as exc:
        ipam.request_address("nope", ip="10.0.0.5")
    assert (
        str(exc.value)
        == "Invalid address 10.0.0.5: It does not belong to any of this network's subnets"
    )


# -- static addresses -----------------------------------------------------------------


def test_static_address():
    ipam = _ipam_with("10.123.0.0/16", ip_range="10.123.4.0/24")
    assert ipam.request_address("n1", ip="10.123.4.77") == "10.123.4.77/16"
    # a static address outside the ip-range but inside the subnet is allowed, as in Docker
    assert ipam.request_address("n1", ip="10.123.9.9") == "10.123.9.9/16"
    # the dynamic allocator then skips them
    for _ in range(77):
        assert ipam.request_address("n1") != "10.123.4.77/16"


@pytest.mark.parametrize("ip", ["10.40.0.5", "10.40.0.1", "10.40.0.0", "10.40.0.255", "10.40.0.9"])
def test_static_address_taken(ip):
    ipam = _ipam_with("10.40.0.0/24", aux={"dns": "10.40.0.9"})
    ipam.request_address("n1", ip="10.40.0.5")
    with pytest.raises(errors.AlreadyExists) as exc:
        ipam.request_address("n1", ip=ip)
    assert str(exc.value) == "Address already in use"


def test_static_address_outside():
    ipam = _ipam_with("10.40.0.0/24")
    with pytest.raises(errors.InvalidConfig) as exc:
        ipam.request_address("n1", ip="10.99.0.10")
    assert (
        str(exc.value)
        == "Invalid address 10.99.0.10: It does not belong to any of this network's subnets"
    )


def test_static_address_malformed():
    ipam = _ipam_with("10.40.0.0/24")
    with pytest.raises(errors.InvalidConfig) as exc:
        ipam.request_address("n1", ip="foo")
    assert str(exc.value) == "invalid IPv4 address: foo"


def test_static_address_taken_does_not_change_state():
    ipam = _ipam_with("10.40.0.0/24")
    ipam.request_address("n1", ip="10.40.0.5")
    before = ipam.in_use("n1")
    with pytest.raises(errors.AlreadyExists):
        ipam.request_address("n1", ip="10.40.0.5")
    with pytest.raises(errors.InvalidConfig):
        ipam.request_address("n1", ip="10.99.0.5")
    assert ipam.in_use("n1") == before


# -- release / mark ------------------------------------------------------------------------


def test_release_is_idempotent():
    ipam = _ipam_with("10.40.0.0/24")
    addr = ipam.request_address("n1")
    assert ipam.in_use("n1") == 2
    ipam.release_address("n1", addr)
    ipam.release_address("n1", addr)
    ipam.release_address("n1", "")
    ipam.release_address("n1", "10.99.0.1/24")
    ipam.release_address("gone", addr)
    assert ipam.in_use("n1") == 1


def test_release_keeps_gateway_and_aux():
    ipam = _ipam_with("10.40.0.0/24", aux={"dns": "10.40.0.9"})
    ipam.release_address("n1", "10.40.0.1/24")
    ipam.release_address("n1", "10.40.0.9/24")
    assert ipam.in_use("n1") == 2
    with pytest.raises(errors.AlreadyExists):
        ipam.request_address("n1", ip="10.40.0.1")
    with pytest.raises(errors.AlreadyExists):
        ipam.request_address("n1", ip="10.40.0.9")


def test_mark_address_restores_state():
    ipam = _ipam_with("10.40.0.0/24")
    ipam.mark_address("n1", "10.40.0.2/24")
    ipam.mark_address("n1", "10.40.0.2/24")
    ipam.mark_address("n1", "")
    ipam.mark_address("n1", "10.99.0.2/24")  # outside every pool: ignored
    assert ipam.in_use("n1") == 2
    assert ipam.request_address("n1") == "10.40.0.3/24"
    with pytest.raises(errors.AlreadyExists):
        ipam.request_address("n1", ip="10.40.0.2")


def test_rebuild_from_records_gives_same_state():
    """The controller rebuilds IPAM from stored records; the result must match the live state."""
    live = _ipam_with("10.40.0.0/24", aux={"dns": "10.40.0.9"})
    addrs = [live.request_address("n1") for _ in range(3)]
    rebuilt = IPAM()
    rebuilt.add_network("n1", [PoolConfig("10.40.0.0/24", "10.40.0.1", "", {"dns": "10.40.0.9"})])
    for a in addrs:
        rebuilt.mark_address("n1", a)
    assert rebuilt.in_use("n1") == live.in_use("n1")
    assert rebuilt.request_address("n1") == live.request_address("n1")


def test_lowest_free_address_first_with_the_search_hint():
    ipam = IPAM()
    ipam.add_network("n", [PoolConfig("10.9.0.0/24", "10.9.0.1")])
    got = [ipam.request_address("n") for _ in range(5)]
    assert got == [f"10.9.0.{i}/24" for i in range(2, 7)]
    ipam.request_address("n", ip="10.9.0.8")  # static, above the hint
    ipam.release_address("n", "10.9.0.4/24")
    ipam.release_address("n", "10.9.0.3/24")
    assert ipam.request_address("n") == "10.9.0.3/24"  # the lowest free again
    assert ipam.request_address("n") == "10.9.0.4/24"
    assert ipam.request_address("n") == "10.9.0.7/24"
    assert ipam.request_address("n") == "10.9.0.9/24"  # .8 was taken statically
