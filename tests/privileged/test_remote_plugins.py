"""Remote drivers: plugins as separate processes on real sockets, in a fake host namespace.

The macvlan plugin (labs/plugins/macvlan) end to end; plugins that misbehave
on purpose (slow, crash mid-join, malformed replies) and leave nothing
behind; a plugin that restarts is used again; the networks of a plugin that
is gone are still listed and removable; the Node.js IPAM plugin with the
bridge driver.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from netmgr import errors
from netmgr.containers import RunRequest
from netmgr.controller import AttachRequest, NetworkRequest
from netmgr.engine import Config, open_engine
from netmgr.model import PoolConfig
from tests.conftest import unique
from tests.privileged.conftest import close_engine, ip_json
from tests.privileged.helpers import wait_for
from tests.privileged.plugin_procs import (
    MACVLAN,
    MISBEHAVE,
    node_available,
    node_ipam,
    python_plugin,
)
from tests.privileged.test_rollback import snapshot

TIMEOUT = 1.5  # plugin deadline in these tests (seconds)


class Env:
    """An engine whose plugin directory is ours, a parent interface for macvlan, and plugin processes."""

    def __init__(self, host_ns) -> None:
        self.host_ns = host_ns
        self.base = tempfile.mkdtemp(prefix="nmt-plg-")
        self.plugin_dir = os.path.join(self.base, "plugins")
        os.makedirs(self.plugin_dir)
        self.cfg = Config(state_dir=os.path.join(self.base, "state"), run_dir=os.path.join(self.base, "run"),
                          host_netns=host_ns.path, plugin_dir=self.plugin_dir, extra={"plugin_timeout": TIMEOUT})
        self.procs = []
        self.parent = unique("nmt-par")[:13]
        host_ns.nl.add_veth(self.parent, self.parent + "b", None, up=True)
        host_ns.nl.set_link(host_ns.nl.link_index(self.parent + "b"), up=True)
        self.engine = open_engine(self.cfg)

    def plugin(self, script: str, name: str, *extra: str):
        proc = python_plugin(script, self.plugin_dir, name, self.host_ns.path, *extra).start()
        self.procs.append(proc)
        return proc

    def reopen(self) -> None:
        """Restart the engine (as a daemon restart would)."""
        self.engine.close()
        self.engine = open_engine(self.cfg)

    def close(self) -> None:
        close_engine(self.engine)
        for proc in self.procs:
            proc.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def env(host_ns):
    e = Env(host_ns)
    try:
        yield e
    finally:
        e.close()


def host_links(env) -> set[str]:
    return {link["ifname"] for link in ip_json(env.host_ns.path, "link")}


def sandbox_addrs(key: str) -> dict[str, list[str]]:
    return {link["ifname"]: [a["local"] for a in link["addr_info"]] for link in ip_json(key, "addr")}


def macvlan_net(env, name: str, plugin: str, subnet: str = "10.171.0.0/24"):
    return env.engine.ctl.create_network(NetworkRequest(name, driver=plugin, pools=(PoolConfig(subnet),),
                                                        options={"parent": env.parent}))


# -- discovery and errors ---------------------------------------------------------------


def test_unknown_plugin_is_not_found_and_changes_nothing(env):
    before = snapshot(env.engine, env.host_ns)
    with pytest.raises(errors.DriverNotFound, match='^plugin "nmt-nosuch" not found$'):
        env.engine.ctl.create_network(NetworkRequest("nmt-x", driver="nmt-nosuch"))
    with pytest.raises(errors.DriverNotFound, match='^plugin "nmt-nosuchipam" not found$'):
        env.engine.ctl.create_network(NetworkRequest("nmt-x", ipam_driver="nmt-nosuchipam"))
    assert snapshot(env.engine, env.host_ns) == before


def test_plugin_option_errors_reach_the_user(env):
    env.plugin(MACVLAN, "nmtmv")
    before = snapshot(env.engine, env.host_ns)
    with pytest.raises(errors.InvalidConfig, match='plugin "nmtmv": CreateNetwork: the macvlan driver needs -o parent'):
        env.engine.ctl.create_network(NetworkRequest("nmt-mv", driver="nmtmv"))
    assert snapshot(env.engine, env.host_ns) == before


# -- the macvlan plugin end to end ---------------------------------------------------------


@pytest.mark.parametrize("how", ["in-sandbox", "move"])
def test_macvlan_plugin_end_to_end(env, how):
    env.plugin(MACVLAN, "nmtmv", *(["--move"] if how == "move" else []))
    net = macvlan_net(env, "nmt-mv", "nmtmv")
    assert net.driver_data == {"parent": env.parent} and net.pools[0].gateway == "10.171.0.1"
    c1 = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-mv"))
    c2 = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c2", network="nmt-mv",
                                              ip="10.171.0.50"))
    links = {link["ifname"]: link for link in ip_json(c1.sandbox_key, "link")}
    assert links["eth0"]["link_type"] == "ether" and links["eth0"]["address"] == "02:42:0a:ab:00:02"
    assert links["eth0"].get("linkinfo", {}).get("info_kind", "macvlan") == "macvlan"
    assert sandbox_addrs(c1.sandbox_key)["eth0"] == ["10.171.0.2"]
    assert sandbox_addrs(c2.sandbox_key)["eth0"] == ["10.171.0.50"]
    routes = ip_json(c1.sandbox_key, "route")
    assert any(r["dst"] == "default" and r.get("gateway") == "10.171.0.1" for r in routes)
    ping = subprocess.run(["nsenter", f"--net={c2.sandbox_key}", "busybox", "ping", "-c1", "-W2", "10.171.0.2"],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # nothing of the endpoints stays in the host namespace once the containers are gone
    env.engine.containers.remove(c1.id, force=True)
    env.engine.containers.remove(c2.id, force=True)
    assert not {n for n in host_links(env) if n.startswith("nmp")}
    env.engine.ctl.remove_network("nmt-mv")
    assert not [kv for kv in env.engine.store.list("networks/") if kv.value["name"] == "nmt-mv"]


def test_connect_and_disconnect_a_second_interface(env):
    env.plugin(MACVLAN, "nmtmv")
    macvlan_net(env, "nmt-mv", "nmtmv")
    env.engine.ctl.create_network(NetworkRequest("nmt-br", pools=(PoolConfig("10.172.0.0/24"),)))
    ctr = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-br"))
    ep = env.engine.containers.connect("nmt-mv", "nmt-c1", AttachRequest())
    assert ep.ifname == "eth1" and sandbox_addrs(ctr.sandbox_key)["eth1"] == ["10.171.0.2"]
    env.engine.containers.disconnect("nmt-mv", "nmt-c1")
    assert "eth1" not in sandbox_addrs(ctr.sandbox_key)
    assert not {n for n in host_links(env) if n.startswith("nmp")}


# -- plugins that misbehave ----------------------------------------------------------------

MISBEHAVIOUR = [
    ("slow-join", errors.Unavailable, "Join did not answer within 1.5 s"),
    ("crash-join", errors.Unavailable, "is not available at unix://"),
    ("crash-in-sandbox", errors.Unavailable, "is not available at unix://"),
    ("bad-join", errors.NetmgrError, "malformed Join reply: gateway 'not-an-address'"),
    ("ghost-join", errors.NetmgrError, 'Join returned interface "nmt-ghost0", which is not in the host namespace'),
    ("bad-endpoint", errors.NetmgrError, "CreateEndpoint returned mac_address"),
]


@pytest.mark.parametrize("mode,cls,message", MISBEHAVIOUR, ids=[m[0] for m in MISBEHAVIOUR])
def test_misbehaving_plugin_rolls_back_everything(env, mode, cls, message):
    joined = os.path.join(env.base, "joined")
    env.plugin(MISBEHAVE, "nmtbad", "--mode", mode, "--delay", "3", "--joined", joined)

    def joins() -> int:
        try:
            with open(joined) as f:
                return len(f.readlines())
        except FileNotFoundError:
            return 0

    env.engine.ctl.create_network(NetworkRequest("nmt-bad", driver="nmtbad", pools=(PoolConfig("10.173.0.0/24"),)))
    env.engine.ctl.create_network(NetworkRequest("nmt-br", pools=(PoolConfig("10.174.0.0/24"),)))
    ctr = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-br"))
    before = snapshot(env.engine, env.host_ns, ctr.sandbox_key)
    start = time.monotonic()
    with pytest.raises(cls, match='plugin "nmtbad"') as info:
        env.engine.containers.connect("nmt-bad", "nmt-c1", AttachRequest())
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert time.monotonic() - start < 15  # never hung (the deadline is 1.5 s per call)
    if mode == "slow-join":  # the plugin finishes its slow Join (and, seeing netmgr gave up, creates nothing)
        assert wait_for(lambda: joins() >= 1, timeout=10)
    assert snapshot(env.engine, env.host_ns, ctr.sandbox_key) == before
    # a failed run leaves nothing either
    with pytest.raises(errors.NetmgrError):
        env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c2", network="nmt-bad"))
    if mode == "slow-join":
        assert wait_for(lambda: joins() >= 2, timeout=10)
    assert snapshot(env.engine, env.host_ns, ctr.sandbox_key) == before


def test_failing_create_network_leaves_nothing(env):
    env.plugin(MISBEHAVE, "nmtbad", "--mode", "fail-create")
    before = snapshot(env.engine, env.host_ns)
    with pytest.raises(errors.InvalidConfig, match='^plugin "nmtbad": CreateNetwork: refusing on purpose$'):
        env.engine.ctl.create_network(NetworkRequest("nmt-bad", driver="nmtbad"))
    assert snapshot(env.engine, env.host_ns) == before


# -- restarts and plugins that are gone --------------------------------------------------------


def test_restarted_plugin_is_used_again(env):
    proc = env.plugin(MACVLAN, "nmtmv")
    macvlan_net(env, "nmt-mv", "nmtmv")
    c1 = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-mv"))
    proc.kill()  # a crash: the socket file stays, nobody answers
    before = snapshot(env.engine, env.host_ns)
    with pytest.raises(errors.Unavailable, match='plugin "nmtmv" is not available'):
        env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c2", network="nmt-mv"))
    assert snapshot(env.engine, env.host_ns) == before
    proc.start()  # the same engine, no restart
    c2 = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c2", network="nmt-mv"))
    assert sandbox_addrs(c2.sandbox_key)["eth0"] == ["10.171.0.3"]
    assert sandbox_addrs(c1.sandbox_key)["eth0"] == ["10.171.0.2"]


def test_networks_of_a_gone_plugin_are_listed_and_removable(env):
    proc = env.plugin(MACVLAN, "nmtmv")
    macvlan_net(env, "nmt-mv", "nmtmv")
    proc.stop()  # gone: no socket any more
    env.reopen()  # also after a daemon restart, when the plugin was never contacted
    assert env.engine.ctl.network("nmt-mv").driver == "nmtmv"
    with pytest.raises(errors.DriverNotFound, match='plugin "nmtmv" not found'):
        env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-mv"))
    env.engine.ctl.remove_network("nmt-mv")
    assert "nmt-mv" not in {n.name for n in env.engine.ctl.networks.values()}
    with pytest.raises(errors.DriverNotFound):
        env.engine.ctl.create_network(NetworkRequest("nmt-mv2", driver="nmtmv"))


def test_container_of_a_gone_plugin_can_be_removed(env):
    proc = env.plugin(MACVLAN, "nmtmv")
    macvlan_net(env, "nmt-mv", "nmtmv")
    ctr = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-mv"))
    proc.kill()
    env.engine.containers.remove(ctr.id, force=True)  # the interface goes with the sandbox
    env.engine.ctl.remove_network("nmt-mv")
    assert not {n for n in host_links(env) if n.startswith("nmp")}


def test_plugin_listing(env):
    env.plugin(MACVLAN, "nmtmv")
    macvlan_net(env, "nmt-mv", "nmtmv")
    with open(os.path.join(env.plugin_dir, "nmtspec.spec"), "w") as f:
        f.write("unix:///nonexistent/nmt.sock\n")
    docs = {d["Name"]: d for d in env.engine.plugins.describe({"nmtmv": 1, "nmtgone": 2})}
    assert docs["nmtmv"]["Health"] == "SERVING" and docs["nmtmv"]["Implements"] == ["NetworkDriver"]
    assert docs["nmtmv"]["Scope"] == "local" and docs["nmtmv"]["Networks"] == 1
    assert docs["nmtmv"]["Address"] == f"unix://{env.plugin_dir}/nmtmv.sock"
    assert docs["nmtspec"]["Health"] == "UNREACHABLE" and docs["nmtspec"]["Address"] == "unix:///nonexistent/nmt.sock"
    assert docs["nmtgone"]["Health"] == "NOT_FOUND" and docs["nmtgone"]["Networks"] == 2


# -- the Node.js IPAM plugin with the bridge driver ---------------------------------------------


@pytest.fixture
def nodeipam(env):
    reason = node_available()
    if reason:
        pytest.skip(reason)
    state = os.path.join(env.base, "nodeipam.json")
    proc = node_ipam(env.plugin_dir, "nmtnode", state, "--pool", "10.175.0.0/16", "--size", "24").start()
    env.procs.append(proc)
    return state


def _node_state(path: str) -> dict:
    with open(path) as f:
        return json.load(f)["pools"]


def test_node_ipam_with_the_bridge_driver(env, nodeipam):
    ctl = env.engine.ctl
    net = ctl.create_network(NetworkRequest("nmt-nb", ipam_driver="nmtnode"))
    assert [(p.subnet, p.gateway) for p in net.pools] == [("10.175.0.0/24", "10.175.0.1")]
    assert net.ipam_data["pools"][0]["pool_id"] == "NodeLocal/10.175.0.0/24"
    ctr = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-nb"))
    assert sandbox_addrs(ctr.sandbox_key)["eth0"] == ["10.175.0.2"]
    assert sorted(_node_state(nodeipam)["NodeLocal/10.175.0.0/24"]["addresses"]) == [0x0AAF0001, 0x0AAF0002]
    # a user subnet, range and gateway, and a static address
    other = ctl.create_network(NetworkRequest("nmt-nb2", ipam_driver="nmtnode", pools=(
        PoolConfig("10.176.0.0/24", gateway="10.176.0.254", ip_range="10.176.0.128/25"),)))
    assert (other.pools[0].subnet, other.pools[0].gateway) == ("10.176.0.0/24", "10.176.0.254")
    ep = env.engine.containers.connect("nmt-nb2", "nmt-c1", AttachRequest())
    assert ep.ipv4 == "10.176.0.128/24"
    with pytest.raises(errors.AlreadyExists, match="already in use"):
        env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c2", network="nmt-nb2",
                                             ip="10.176.0.128"))
    env.engine.containers.remove(ctr.id, force=True)
    state = _node_state(nodeipam)
    assert state["NodeLocal/10.175.0.0/24"]["addresses"] == [0x0AAF0001]  # only the gateway is left
    ctl.remove_network("nmt-nb")
    ctl.remove_network("nmt-nb2")
    assert _node_state(nodeipam) == {}


def test_node_ipam_survives_daemon_and_plugin_restarts(env, nodeipam):
    env.engine.ctl.create_network(NetworkRequest("nmt-nb", ipam_driver="nmtnode"))
    env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c1", network="nmt-nb"))
    env.reopen()
    env.procs[-1].stop()
    env.procs[-1].start()
    ctr = env.engine.containers.run(RunRequest(argv=("sleep", "60"), name="nmt-c2", network="nmt-nb"))
    assert sandbox_addrs(ctr.sandbox_key)["eth0"] == ["10.175.0.3"]
    for c in list(env.engine.containers.items.values()):
        env.engine.containers.remove(c.id, force=True)
    env.engine.ctl.remove_network("nmt-nb")
    assert _node_state(nodeipam) == {}
