"""Lab topology files: defaults, the shipped labs, and one clear line for every mistake."""

from __future__ import annotations

import copy
import ipaddress
import os

import pytest

from netmgr import errors
from netmgr.lab.topology import DEFAULT_COMMAND, TopologyError, check_lab_name, load, parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASE = {
    "name": "t1",
    "hosts": ["host1", "host2"],
    "networks": [
        {"name": "ov1", "driver": "overlay", "subnet": "10.20.0.0/24"},
        {"name": "br1", "subnet": "10.30.0.0/24", "hosts": ["host2"]},
    ],
    "containers": [
        {"name": "c1", "host": "host1", "networks": ["ov1"]},
        {"name": "c2", "host": "host2", "networks": [{"name": "ov1", "ip": "10.20.0.9", "aliases": ["db"]}, "br1"]},
    ],
    "validate": [
        {"ping": {"from": "c1", "to": "c2"}},
        {"ping": {"from": "c1", "to": "db"}},
        {"reach": {"from": "c1", "to": "outside"}},
        {"no_reach": {"from": "c2", "to": "10.9.9.9", "timeout": 1}},
        {"reach": {"from": "c2", "to": "host1"}},
    ],
}


def with_(path: str, value):
    """BASE with the value at ``path`` (dotted; list indexes as numbers) replaced; None deletes."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return doc


def test_defaults_of_a_minimal_file():
    topo = parse({"hosts": ["h1"]}, "/some/where/mini.yaml")
    assert topo.name == "mini"  # no name: the file's name
    assert topo.underlay.subnet == ipaddress.IPv4Network("192.168.150.0/24")
    assert str(topo.underlay.gateway) == "192.168.150.1"
    assert topo.underlay.mtu == 1500 and str(topo.underlay.outside) == "203.0.113.1/24"
    assert topo.etcd_members == 1 and [str(a) for a in topo.etcd_addresses] == ["192.168.150.2"]
    assert [(h.name, str(h.address)) for h in topo.hosts] == [("h1", "192.168.150.11")]
    assert topo.networks == () and topo.containers == () and topo.checks == ()


def test_full_example():
    topo = parse(BASE, "x.yaml")
    ov1, br1 = topo.networks
    assert (ov1.driver, ov1.hosts) == ("overlay", ("host1",))  # overlay: created through the first host
    assert (br1.driver, br1.hosts) == ("bridge", ("host2",))
    c1, c2 = topo.containers
    assert c1.command == DEFAULT_COMMAND and c1.networks[0].network == "ov1"
    assert [(a.network, a.ip, a.aliases) for a in c2.networks] == [("ov1", "10.20.0.9", ("db",)), ("br1", None, ())]
    assert [c.describe() for c in topo.checks][:2] == ["ping c1 -> c2", "ping c1 -> db"]
    assert topo.checks[3].timeout == 1.0 and topo.checks[2].timeout == 10.0
    assert topo.container("db") is c2 and topo.is_container("db") and not topo.is_container("host1")


def test_etcd_three_members_and_explicit_addresses():
    doc = with_("hosts", ["a", {"name": "b", "address": "192.168.150.40"}])
    doc["etcd"] = {"members": 3}
    doc["containers"] = doc["validate"] = []
    doc["networks"] = []
    topo = parse(doc, "t.yaml")
    assert [str(a) for a in topo.etcd_addresses] == ["192.168.150.2", "192.168.150.3", "192.168.150.4"]
    assert [str(h.address) for h in topo.hosts] == ["192.168.150.11", "192.168.150.40"]
    assert parse({"hosts": ["a"], "etcd": 3}, "t.yaml").etcd_members == 3  # shorthand


def test_bridge_networks_default_to_every_host_and_commands_split():
    doc = {"hosts": ["a", "b"], "networks": [{"name": "n"}],
           "containers": [{"name": "c", "host": "b", "networks": ["n"], "command": "sh -c 'sleep 5'"}]}
    topo = parse(doc, "t.yaml")
    assert topo.networks[0].hosts == ("a", "b")
    assert topo.containers[0].command == ("sh", "-c", "sleep 5")
    single = parse({"hosts": ["only"], "containers": [{"name": "c"}]}, "t.yaml")
    assert single.containers[0].host == "only" and single.containers[0].networks[0].network == "bridge"


@pytest.mark.parametrize("lab", ["overlay-2host", "overlay-3host"])
def test_shipped_labs_parse(lab):
    topo = load(os.path.join(ROOT, "labs", lab, "topology.yaml"))
    assert topo.name == lab
    assert topo.etcd_members == (3 if lab == "overlay-3host" else 1)
    assert any(n.driver == "overlay" and n.internal for n in topo.networks)
    hosts_on_overlay = {c.host for c in topo.containers for a in c.networks if a.network == "ov1"}
    assert len(hosts_on_overlay) >= 2
    kinds = {c.kind for c in topo.checks}
    assert kinds == {"ping", "reach", "no_reach"}


def test_readme_example_parses():
    import yaml

    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("### Multi-host labs"):]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    topo = parse(yaml.safe_load(block), "README.md")
    assert [n.name for n in topo.networks] == ["ov1", "ovint", "br1"] and len(topo.checks) == 3


BAD = [
    # (document, expected message fragment)
    (["hosts"], "expected a mapping, got a list"),
    ({**BASE, "hostz": []}, "unknown key 'hostz'"),
    (with_("name", "Bad Name"), "name: invalid lab name 'Bad Name'"),
    (with_("name", "x" * 33), "at most 32 characters"),
    ({k: v for k, v in BASE.items() if k != "name"}, None),  # no name: the file's name "lab"
    (with_("hosts", []), "hosts: a lab needs at least one host"),
    (with_("hosts", "host1"), "hosts: expected a list"),
    (with_("hosts", ["host1", "host1"]), "hosts[1].name: duplicate host 'host1'"),
    (with_("hosts", ["Host_1"]), "hosts[0].name: invalid name 'Host_1'"),
    (with_("hosts", ["a-very-long-hostname"]), "at most 13 characters"),
    (with_("hosts", ["outside"]), "'outside' is reserved"),
    (with_("hosts", [{"name": "h", "address": "10.0.0.1"}]), "not in the underlay subnet"),
    (with_("hosts", [{"name": "h", "address": "192.168.150.2"}]), "already used"),
    (with_("hosts", [{"name": "h", "adress": "192.168.150.50"}]), "hosts[0]: unknown key 'adress'"),
    ({**BASE, "underlay": {"subnet": "192.168.150.1/24"}}, "underlay.subnet: not an IPv4 subnet"),
    ({**BASE, "underlay": {"subnet": "192.168.150.0/28"}}, "too small"),
    ({**BASE, "underlay": {"mtu": 100}}, "underlay.mtu: expected an integer from 1280 to 9000"),
    ({**BASE, "underlay": {"outside": "192.168.150.200/24"}}, "overlaps the underlay subnet"),
    ({**BASE, "underlay": {"outside": "nowhere"}}, "underlay.outside: not an IPv4 address"),
    ({**BASE, "etcd": {"members": 2}}, "etcd.members: expected 1 or 3, got 2"),
    ({**BASE, "etcd": {"member": 3}}, "etcd: unknown key 'member'"),
    (with_("networks.0.driver", "macvlan"), "networks[0] (ov1): unknown driver 'macvlan' (bridge or overlay)"),
    (with_("networks.1.name", "ov1"), "networks[1] (ov1): duplicate network name"),
    (with_("networks.1.name", "bridge"), "'bridge' is a predefined network"),
    (with_("networks.0.hosts", ["host1"]), "an overlay network is global"),
    (with_("networks.1.host", "host1"), "a bridge network exists per host"),
    (with_("networks.0.host", "host9"), "networks[0] (ov1).host: unknown host 'host9'"),
    (with_("networks.1.hosts", ["host9"]), "unknown host 'host9'"),
    (with_("networks.0.subnet", "192.168.150.0/25"), "overlaps the underlay subnet"),
    (with_("networks.0.subnet", "10.20.0.0/33"), "networks[0] (ov1).subnet: not an IPv4 subnet"),
    (with_("networks.0.gateway", "10.99.0.1"), "networks[0] (ov1).gateway: 10.99.0.1 is not in 10.20.0.0/24"),
    (with_("networks.1.subnet", None) | {"networks": [BASE["networks"][0], {"name": "b", "gateway": "10.1.1.1"}]},
     "a gateway needs a subnet"),
    (with_("networks.0.internal", "yes"), "expected true or false, got 'yes'"),
    (with_("networks.0.options", ["a=b"]), "expected a mapping of driver options"),
    (with_("containers.0.networks", ["nope"]), "containers[0] (c1).networks[0]: unknown network 'nope'"),
    (with_("containers.0.networks", ["br1"]), "bridge network 'br1' does not exist on host 'host1'"),
    (with_("containers.0.networks", ["ov1", "ov1"]), "network 'ov1' listed twice"),
    (with_("containers.0.networks", ["none", "ov1"]), "'none' cannot be combined"),
    (with_("containers.0.networks", [{"name": "ov1", "ip": "10.20.0.300"}]), "not an IPv4 address: '10.20.0.300'"),
    (with_("containers.0.host", None), "containers[0] (c1): missing 'host' (the lab has several)"),
    (with_("containers.0.host", "host9"), "containers[0] (c1).host: unknown host 'host9'"),
    (with_("containers.1.name", "c1"), "containers[1] (c1): duplicate container name"),
    (with_("containers.1.name", "host1"), "reserved or names a host"),
    (with_("containers.0.command", []), "empty command"),
    (with_("containers.0.command", {"a": 1}), "expected a string or a list of strings"),
    (with_("containers.0.image", "busybox"), "containers[0]: unknown key 'image'"),
    (with_("validate.0", {"pong": {"from": "c1", "to": "c2"}}), "validate[0]: unknown check 'pong'"),
    (with_("validate.0", {"ping": {"from": "c1", "to": "c2"}, "reach": {}}), "validate[0]: expected one check"),
    (with_("validate.0.ping.from", "c9"), "validate[0].ping.from: unknown container 'c9'"),
    (with_("validate.0.ping.from", "host1"), "unknown container 'host1'"),
    (with_("validate.0.ping.to", "c9"), "validate[0].ping.to: 'c9' is no container, alias, host"),
    (with_("validate.0.ping.to", None), "validate[0].ping: missing 'to'"),
    (with_("validate.0.ping.timeout", 0), "validate[0].ping.timeout: expected seconds"),
]


@pytest.mark.parametrize("doc,fragment", BAD, ids=[f"{i}:{(b[1] or 'name')[:30]}" for i, b in enumerate(BAD)])
def test_bad_input_gives_one_clear_line(doc, fragment):
    if fragment is None:
        assert parse(doc, "lab.yaml").name == "lab"
        with pytest.raises(TopologyError, match=r"^Lab.yaml: missing 'name' \(and the file name 'Lab'"):
            parse(doc, "Lab.yaml")
        return
    with pytest.raises(TopologyError) as info:
        parse(doc, "lab.yaml")
    msg = info.value.message
    assert msg.startswith("lab.yaml: ") and fragment in msg, msg
    assert "\n" not in msg
    assert isinstance(info.value, errors.InvalidConfig) and info.value.exit_code == 1


def test_load_reports_yaml_syntax_and_missing_files(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nhosts: [a, b\n")
    with pytest.raises(TopologyError, match=r"broken.yaml: not valid YAML: line \d+, column \d+"):
        load(str(bad))
    with pytest.raises(TopologyError, match="cannot read: No such file or directory"):
        load(str(tmp_path / "missing.yaml"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(TopologyError, match="expected a mapping, got nothing"):
        load(str(empty))


def test_lab_names():
    assert check_lab_name("overlay-2host") == "overlay-2host"
    for bad in ("", "-x", "A", "a/b", "a.b", "x" * 33, None):
        with pytest.raises(TopologyError):
            check_lab_name(bad)


def test_cli_registers_lab_commands():
    from netmgr.cli.main import build_parser

    p = build_parser()
    args = p.parse_args(["lab", "up", "labs/overlay-2host/topology.yaml", "--name", "x"])
    assert (args.file, args.name, args.func.__name__) == ("labs/overlay-2host/topology.yaml", "x", "up")
    args = p.parse_args(["lab", "exec", "ov2", "host1", "netmgr", "ps", "-a"])
    assert (args.lab, args.host, args.argv) == ("ov2", "host1", ["netmgr", "ps", "-a"])
    for sub in ("down", "status", "validate"):
        assert p.parse_args(["lab", sub, "ov2"]).lab == "ov2"
    assert p.parse_args(["lab", "ls", "-q"]).quiet
