"""netmgr.daemon.filters: ``--filter`` for ``network ls/prune`` and ``ps``, and the ls sort order.

Cases follow docs/docker-reference.md ("network ls", "ps").
"""

from __future__ import annotations

import datetime as dt
from collections import namedtuple

import pytest

from netmgr import errors
from netmgr.daemon import filters
from netmgr.model import Container, ContainerConfig, ContainerState, Endpoint, Network

F = namedtuple("F", "key value")


def _net(
    name,
    nid,
    driver="bridge",
    labels=None,
    predefined=False,
    created="2026-11-28T06:25:01.402411533Z",
):
    return Network(
        id=nid,
        name=name,
        driver=driver,
        labels=labels or {},
        predefined=predefined,
        created=created,
    )


NETS = [
    _net("bridge", "0da93a710419" + "0" * 52, predefined=True),
    _net("host", "096c7bfdeecf" + "0" * 52, driver="host", predefined=True),
    _net("none", "87630c052ac5" + "0" * 52, driver="null", predefined=True),
    _net("Zed", "e289192f189e" + "0" * 52),
    _net("alpha", "563d91b74ca5" + "0" * 52),
    _net("net2", "6a03034e9d99" + "0" * 52),
    _net("net10", "2cfa88beb0c7" + "0" * 52),
    _net("netA", "980c7745b3df" + "0" * 52),
    _net("labnet", "74b7c7a98d75" + "0" * 52, labels={"env": "prod", "owner": "netmgr"}),
    _net("labnet2", "74b8c7a98d75" + "0" * 52, labels={"env": "test"}),
    _net("macvlan1", "aaaa" + "0" * 60, driver="macvlan"),
]


class FakeCtl:
    """The three things the filters read from the controller."""

    def __init__(self, networks, endpoints=()):
        self.networks = {n.id: n for n in networks}
        self._endpoints = list(endpoints)

    def network_endpoints(self, network_id):
        return [ep for ep in self._endpoints if ep.network_id == network_id]

    def container_endpoints(self, container_id):
        return [ep for ep in self._endpoints if ep.container_id == container_id]


def _names(*raw, nets=NETS, ctl=None, prune=False):
    ctl = ctl or FakeCtl(nets)
    return sorted(n.name for n in filters.networks(nets, [F(*r) for r in raw], ctl, prune=prune))


# -- network filters ---------------------------------------------------------------


def test_no_filter_keeps_everything():
    assert len(filters.networks(NETS, [], FakeCtl(NETS))) == len(NETS)


def test_driver():
    assert _names(("driver", "null")) == ["none"]
    assert _names(("driver", "host")) == ["host"]
    assert _names(("driver", "macvlan")) == ["macvlan1"]
    assert _names(("driver", "bridg")) == []  # exact, not substring


def test_name_is_case_sensitive_substring():
    assert _names(("name", "net1")) == ["net10"]
    assert _names(("name", "net")) == ["labnet", "labnet2", "net10", "net2", "netA"]
    assert _names(("name", "NET")) == []
    assert _names(("name", "^net1$")) == []


def test_id_prefix():
    assert _names(("id", "74b7")) == ["labnet"]
    assert _names(("id", "74b")) == ["labnet", "labnet2"]
    assert _names(("id", "c7a98d75")) == []  # prefix only
    assert _names(("id", NETS[0].id)) == ["bridge"]


def test_label_key_and_key_value():
    assert _names(("label", "env")) == ["labnet", "labnet2"]
    assert _names(("label", "env=prod")) == ["labnet"]
    assert _names(("label", "env=")) == []
    assert _names(("label", "owner")) == ["labnet"]
    assert _names(("label", "nosuch")) == []


def test_type_custom_and_builtin():
    assert _names(("type", "builtin")) == ["bridge", "host", "none"]
    custom = _names(("type", "custom"))
    assert "bridge" not in custom and len(custom) == len(NETS) - 3


def test_type_bad_value():
    with pytest.raises(errors.InvalidConfig) as exc:
        _names(("type", "bogus"))
    assert "bogus" in str(exc.value)


def test_scope():
    assert len(_names(("scope", "local"))) == len(NETS)
    assert _names(("scope", "swarm")) == []


def test_same_key_is_or():
    assert _names(("name", "net1"), ("name", "Zed")) == ["Zed", "net10"]
    assert _names(("driver", "host"), ("driver", "null")) == ["host", "none"]


def test_different_keys_are_and():
    assert _names(("name", "net"), ("driver", "host")) == []
    assert _names(("name", "net"), ("label", "env")) == ["labnet", "labnet2"]
    assert _names(("type", "builtin"), ("driver", "bridge")) == ["bridge"]


def test_same_and_different_keys_together():
    assert _names(("name", "net1"), ("name", "labnet"), ("label", "env=prod")) == ["labnet"]


@pytest.mark.parametrize("key", ["nosuch", "until", "label!", "Name"])
def test_unknown_key(key):
    with pytest.raises(errors.InvalidConfig) as exc:
        _names((key, "1"))
    assert str(exc.value) == f"Invalid filter '{key}'"


def test_dangling():
    ep = Endpoint(id="e" * 64, network_id=NETS[4].id, container_id="c" * 64, name="c1")
    ctl = FakeCtl(NETS, [ep])
    dangling = _names(("dangling", "true"), ctl=ctl)
    assert "alpha" not in dangling and "bridge" not in dangling and "Zed" in dangling
    used = _names(("dangling", "false"), ctl=ctl)
    assert "alpha" in used and "bridge" in used and "Zed" not in used


# -- prune filters -------------------------------------------------------------------


def test_prune_label_and_not_label():
    assert _names(("label", "env"), prune=True) == ["labnet", "labnet2"]
    assert "labnet" not in _names(("label!", "env=prod"), prune=True)
    assert "labnet2" in _names(("label!", "env=prod"), prune=True)
    assert "alpha" in _names(("label!", "env"), prune=True)


@pytest.mark.parametrize("key", ["name", "driver", "nosuch"])
def test_prune_rejects_ls_only_keys(key):
    with pytest.raises(errors.InvalidConfig) as exc:
        _names((key, "x"), prune=True)
    assert str(exc.value) == f"Invalid filter '{key}'"


def _aged_nets():
    now = dt.datetime.now(dt.UTC)

    def stamp(hours):
        return (now - dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"

    return [_net("old", "1" * 64, created=stamp(48)), _net("new", "2" * 64, created=stamp(1))]


@pytest.mark.parametrize("value", ["24h", "1440m", "23h59m60s", "86400s", "1.5h"])
def test_prune_until_duration(value):
    assert _names(("until", value), nets=_aged_nets(), prune=True) == ["old"]


def test_prune_until_timestamps():
    nets = _aged_nets()
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)
    assert _names(("until", str(int(cutoff.timestamp()))), nets=nets, prune=True) == ["old"]
    assert _names(("until", cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")), nets=nets, prune=True) == [
        "old"
    ]
    assert _names(("until", "2000-01-01"), nets=nets, prune=True) == []
    assert _names(("until", "2999-01-01T00:00:00Z"), nets=nets, prune=True) == ["new", "old"]


@pytest.mark.parametrize("value", ["yesterday", "inf", "nan", "1e400", "", "24x", "h"])
def test_prune_until_bad_value(value):
    with pytest.raises(errors.InvalidConfig):
        _names(("until", value), nets=_aged_nets(), prune=True)


def test_prune_until_network_without_created_time():
    nets = [_net("undated", "3" * 64, created="")]
    assert _names(("until", "1h"), nets=nets, prune=True) == ["undated"]


# -- natural sort ---------------------------------------------------------------------


def test_natural_sorted_docker_ls_order():
    got = [n.name for n in filters.natural_sorted(NETS, key=lambda n: n.name)]
    assert got.index("Zed") < got.index("alpha") < got.index("bridge")
    assert got.index("net2") < got.index("net10") < got.index("netA")


def test_natural_sorted_reference_listing():
    listing = [
        "Zed",
        "a-very-long-network-name-for-width-testing",
        "alpha",
        "bridge",
        "host",
        "net2",
        "net10",
        "netA",
        "none",
    ]
    shuffled = sorted(listing, key=lambda s: s[::-1])
    assert filters.natural_sorted(shuffled, key=str) == listing


@pytest.mark.parametrize(
    "a, b",
    [
        ("Zed", "alpha"),
        ("net2", "net10"),
        ("net1", "netA"),
        ("netA", "netaux"),
        ("net", "net1"),
        ("a1", "a-b"),
        ("a1", "ab"),
        ("1a", "a"),
        ("net9b", "net10a"),
        ("x2y3", "x2y10"),
        ("net1", "net01"),
        ("a", "b"),
    ],
)
def test_natural_sorted_pairs(a, b):
    assert filters.natural_sorted([b, a], key=str) == [a, b]
    assert filters.natural_sorted([a, b], key=str) == [a, b]


def test_natural_sorted_big_numbers_and_empty():
    assert filters.natural_sorted(["n" + "9" * 30, "n10"], key=str) == ["n10", "n" + "9" * 30]
    assert filters.natural_sorted([], key=str) == []
    assert filters.natural_sorted(["", "a"], key=str) == ["", "a"]


# -- container filters ----------------------------------------------------------------


def _ctr(name, cid, status="running", exit_code=0):
    return Container(
        id=cid,
        name=name,
        created="2026-11-28T06:25:01Z",
        config=ContainerConfig(argv=("sh",)),
        state=ContainerState(status=status, exit_code=exit_code),
    )


CNET = _net("cnet", "4d7315af5734" + "0" * 52)
CTRS = [
    _ctr("psweb", "fd1ab47d13ad" + "0" * 52),
    _ctr("psexit", "a8377a25899d" + "0" * 52, status="exited", exit_code=7),
    _ctr("pskilled", "5aa7ad113b35" + "0" * 52, status="exited", exit_code=137),
    _ctr("pscreated", "4bd30a668918" + "0" * 52, status="created"),
    _ctr("c1", "8e1986815e8e" + "0" * 52),
]
EPS = [
    Endpoint(id="e1" * 32, network_id=NETS[0].id, container_id=CTRS[0].id, name="psweb"),
    Endpoint(id="e2" * 32, network_id=CNET.id, container_id=CTRS[4].id, name="c1"),
    Endpoint(id="e3" * 32, network_id=NETS[0].id, container_id=CTRS[4].id, name="c1"),
]


def _cnames(*raw):
    ctl = FakeCtl(NETS + [CNET], EPS)
    return sorted(c.name for c in filters.containers(CTRS, [F(*r) for r in raw], ctl))


def test_container_name_substring_and_regex():
    assert _cnames(("name", "ps")) == ["pscreated", "psexit", "pskilled", "psweb"]
    assert _cnames(("name", "^/psweb$")) == ["psweb"]
    assert _cnames(("name", "web"), ("name", "c1")) == ["c1", "psweb"]


def test_container_id_prefix():
    assert _cnames(("id", "fd1a")) == ["psweb"]
    assert _cnames(("id", "d1ab")) == []


def test_container_status_and_exited():
    assert _cnames(("status", "exited")) == ["pskilled", "psexit"][::-1]
    assert _cnames(("status", "created")) == ["pscreated"]
    assert _cnames(("exited", "137")) == ["pskilled"]
    assert _cnames(("exited", "0")) == []
    assert _cnames(("status", "running"), ("status", "created")) == ["c1", "pscreated", "psweb"]


def test_container_status_bad_value():
    with pytest.raises(errors.InvalidConfig) as exc:
        _cnames(("status", "bogus"))
    assert str(exc.value) == "Invalid filter 'status=bogus'"


def test_container_network_by_name_or_id_prefix():
    assert _cnames(("network", "cnet")) == ["c1"]
    assert _cnames(("network", "bridge")) == ["c1", "psweb"]
    assert _cnames(("network", "4d73")) == ["c1"]
    assert _cnames(("network", "nosuch")) == []


def test_container_keys_are_anded():
    assert _cnames(("network", "bridge"), ("name", "web")) == ["psweb"]


def test_container_unknown_key():
    with pytest.raises(errors.InvalidConfig) as exc:
        _cnames(("ancestorz", "x"))
    assert str(exc.value) == "Invalid filter 'ancestorz'"


def test_wants_all():
    assert filters.wants_all([F("status", "exited")])
    assert filters.wants_all([F("exited", "0")])
    assert not filters.wants_all([F("name", "x")])
    assert not filters.wants_all([])
