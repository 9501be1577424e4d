"""Remote plugins through the daemon and the CLI, on a simulated host with ``--plugin-dir``.

As a third party would: drop a plugin's socket in the plugin directory and
use it with ``netmgr network create -d NAME``; ``netmgr plugin ls`` shows it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from netmgr.labhost import SimHost
from tests.conftest import unique
from tests.privileged.plugin_procs import MACVLAN, node_available, node_ipam, python_plugin


@pytest.fixture(scope="module")
def host():
    base = tempfile.mkdtemp(prefix="nmt-plc-")
    plugin_dir = os.path.join(base, "plugins")
    os.makedirs(plugin_dir)
    h = SimHost(unique(), base, daemon_args=("--dns-upstream", "none", "--plugin-dir", plugin_dir))
    h.plugin_dir = plugin_dir
    h.procs = []
    h.up()
    try:
        assert h.sh("ip", "link", "add", "nmt-par0", "type", "veth", "peer", "name", "nmt-par1").rc == 0
        assert h.sh("ip", "link", "set", "nmt-par0", "up").rc == 0
        assert h.sh("ip", "link", "set", "nmt-par1", "up").rc == 0
        h.procs.append(python_plugin(MACVLAN, plugin_dir, "nmtmv", h.netns_path).start())
        yield h
    finally:
        for proc in h.procs:
            proc.stop()
        h.down()
        shutil.rmtree(base, ignore_errors=True)


def ok(h: SimHost, *args: str) -> str:
    res = h.cli(*args)
    assert res.rc == 0, f"netmgr {' '.join(args)}: {res.err}"
    return res.out


def test_unknown_driver_is_one_line_and_exit_1(host):
    res = host.cli("network", "create", "-d", "nmt-nosuch", "nmt-x")
    assert (res.rc, res.err, res.out) == (1, 'plugin "nmt-nosuch" not found\n', "")
    assert "nmt-x" not in ok(host, "network", "ls", "--format", "{{.Name}}").split()


def test_dropped_in_plugin_works_with_network_create(host):
    net_id = ok(host, "network", "create", "-d", "nmtmv", "--subnet", "10.181.0.0/24", "-o", "parent=nmt-par0",
                "nmt-mv").strip()
    assert len(net_id) == 64
    assert ok(host, "network", "ls", "--filter", "driver=nmtmv", "--format", "{{.Name}} {{.Driver}} {{.Scope}}") \
        == "nmt-mv nmtmv local\n"
    ok(host, "run", "-d", "--name", "nmt-m1", "--network", "nmt-mv", "sleep", "60")
    ok(host, "run", "-d", "--name", "nmt-m2", "--network", "nmt-mv", "sleep", "60")
    assert host.cli("exec", "nmt-m2", "busybox", "ping", "-c1", "-W2", "10.181.0.2").rc == 0
    doc = json.loads(ok(host, "network", "inspect", "nmt-mv"))[0]
    assert doc["Driver"] == "nmtmv" and len(doc["Containers"]) == 2
    ok(host, "rm", "-f", "nmt-m1", "nmt-m2")
    ok(host, "network", "rm", "nmt-mv")


def test_plugin_ls(host):
    ok(host, "network", "create", "-d", "nmtmv", "--subnet", "10.182.0.0/24", "-o", "parent=nmt-par0", "nmt-ls")
    try:
        out = ok(host, "plugin", "ls")
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "ADDRESS", "PROVIDES", "SCOPE", "HEALTH", "NETWORKS"]
        assert lines[1].split() == ["nmtmv", f"unix://{host.plugin_dir}/nmtmv.sock", "NetworkDriver", "local",
                                    "SERVING", "1"]
        docs = [json.loads(line) for line in ok(host, "plugin", "ls", "--format", "{{json .}}").splitlines()]
        assert docs[0]["Description"].startswith("macvlan")
        assert ok(host, "plugin", "ls", "-q") == "nmtmv\n"
    finally:
        ok(host, "network", "rm", "nmt-ls")


def test_networks_of_a_gone_plugin(host):
    ok(host, "network", "create", "-d", "nmtmv", "--subnet", "10.183.0.0/24", "-o", "parent=nmt-par0", "nmt-gone")
    proc = host.procs[0]
    proc.stop()
    try:
        assert "nmt-gone" in ok(host, "network", "ls", "--format", "{{.Name}}").split()
        row = ok(host, "plugin", "ls", "--format", "{{.Name}} {{.Health}} {{.Networks}}")
        assert row == "nmtmv NOT_FOUND 1\n"
        res = host.cli("run", "-d", "--name", "nmt-g1", "--network", "nmt-gone", "sleep", "60")
        assert res.rc == 125 and res.err == 'plugin "nmtmv" not found\n'
        ok(host, "network", "rm", "nmt-gone")
    finally:
        proc.start()
    # back without restarting netmgrd
    ok(host, "network", "create", "-d", "nmtmv", "--subnet", "10.183.0.0/24", "-o", "parent=nmt-par0", "nmt-back")
    ok(host, "run", "-d", "--name", "nmt-b1", "--network", "nmt-back", "sleep", "60")
    ok(host, "rm", "-f", "nmt-b1")
    ok(host, "network", "rm", "nmt-back")


def test_node_ipam_plugin_with_bridge_through_the_cli(host):
    reason = node_available()
    if reason:
        pytest.skip(reason)
    state = os.path.join(host.dir, "nodeipam.json")
    proc = node_ipam(host.plugin_dir, "nmtnode", state, "--pool", "10.184.0.0/16").start()
    host.procs.append(proc)
    ok(host, "network", "create", "--ipam-driver", "nmtnode", "nmt-nb")
    ipam = json.loads(ok(host, "network", "inspect", "-f", "{{json .IPAM}}", "nmt-nb"))
    assert ipam["Driver"] == "nmtnode" and ipam["Config"][0]["Subnet"] == "10.184.0.0/24"
    ok(host, "run", "-d", "--name", "nmt-n1", "--network", "nmt-nb", "sleep", "60")
    assert "10.184.0.2/24" in ok(host, "exec", "nmt-n1", "ip", "-o", "-4", "addr", "show", "eth0")
    assert host.cli("exec", "nmt-n1", "busybox", "ping", "-c1", "-W2", "10.184.0.1").rc == 0  # the bridge gateway
    ls = ok(host, "plugin", "ls", "--format", "{{.Name}} {{.Provides}} {{.Health}} {{.Networks}}")
    assert "nmtnode Ipam SERVING 1" in ls.splitlines()
    ok(host, "rm", "-f", "nmt-n1")
    ok(host, "network", "rm", "nmt-nb")
    with open(state) as f:
        assert json.load(f)["pools"] == {}
