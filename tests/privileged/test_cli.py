"""The docker-style CLI end to end against a simulated host's netmgrd.

Every bad-input case must print one line on stderr, exit 1 (125 for
``run``), and leave the store and the kernel exactly as they were; the store
is read straight from the daemon's SQLite file, the kernel with ip -j / nft -j.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import subprocess
import threading
import time

import pytest

from netmgr.testing.chaos import cgroup_dirs
from tests.privileged.conftest import ip_json, nft_json


def store_rows(host) -> list:
    """The store's rows, read straight from the file (also on a read-only state dir: ``immutable``)."""
    uri = "file:" + os.path.join(host.state_dir, "netmgr.db") + "?mode=ro"
    for suffix in ("", "&immutable=1"):
        db = sqlite3.connect(uri + suffix, uri=True)
        try:
            return sorted(db.execute("SELECT key, value FROM kv").fetchall())
        except sqlite3.OperationalError:
            if suffix:
                raise
        finally:
            db.close()


def state(host) -> dict:
    """Store, links, addresses, nftables, sandboxes and container shims of a simulated host."""
    nft = nft_json(host.netns_path, "list", "table", "inet", "netmgr")
    shims = subprocess.run(["pgrep", "-f", f"netmgr.runtime.shim.*{host.state_dir}"], capture_output=True, text=True)
    return {
        "store": store_rows(host),
        "links": sorted(l["ifname"] for l in ip_json(host.netns_path, "link")),
        "addrs": sorted((l["ifname"], a["local"]) for l in ip_json(host.netns_path, "addr") for a in l["addr_info"]),
        "nft": sorted(json.dumps(_no_handle(i), sort_keys=True) for i in nft["nftables"] if "set" in i or "rule" in i
                      or "map" in i),
        "sandboxes": sorted(os.listdir(os.path.join(host.run_dir, "netns"))),
        "shims": len(shims.stdout.split()),
    }


def _no_handle(obj: dict) -> dict:
    """nft objects without handles, elements sorted (a rebuilt table renumbers and reorders them)."""
    def norm(body: dict) -> dict:
        out = {k: v for k, v in body.items() if k != "handle"}
        if "elem" in out:
            out["elem"] = sorted(out["elem"], key=lambda e: json.dumps(e, sort_keys=True))
        return out
    return {kind: norm(body) for kind, body in obj.items()}


@pytest.fixture(scope="module")
def world(sim_host):
    """Two user networks and two containers that the bad-input cases run against."""
    h = sim_host
    assert h.cli("network", "create", "--subnet", "10.80.0.0/24", "--gateway", "10.80.0.254", "nmt-n1").rc == 0
    assert h.cli("network", "create", "--subnet", "10.81.0.0/24", "nmt-n2").rc == 0
    assert h.cli("network", "create", "nmt-auto").rc == 0
    assert h.cli("run", "-d", "--name", "nmt-c1", "--network", "nmt-n1", "--ip", "10.80.0.10", "sleep", "600").rc == 0
    assert h.cli("run", "-d", "--name", "nmt-c2", "--network", "nmt-n2", "sleep", "600").rc == 0
    h.ids = {"n1": _id(h, "network", "nmt-n1"), "c1": _id(h, "container", "nmt-c1"),
             "c2": _id(h, "container", "nmt-c2")}
    return h


BAD = [
    # (argv, exit code, stderr)
    (("network", "create", "--subnet", "10.82.0.0/33", "nmt-x"), 1, "Invalid subnet 10.82.0.0/33 : invalid CIDR address: 10.82.0.0/33"),
    (("network", "create", "--subnet", "foo", "nmt-x"), 1, "Invalid subnet foo : invalid CIDR address: foo"),
    (("network", "create", "--subnet", "10.80.0.0/16", "nmt-x"), 1, "Pool overlaps with other one on this address space"),
    (("network", "create", "--subnet", "10.82.0.0/24", "--gateway", "10.99.0.1", "nmt-x"), 1,
     "no matching subnet for gateway 10.99.0.1"),
    (("network", "create", "--subnet", "10.82.0.0/24", "--ip-range", "10.99.0.0/25", "nmt-x"), 1,
     "no matching subnet for range 10.99.0.0/25"),
    (("network", "create", "--gateway", "10.82.0.1", "nmt-x"), 1, "every ip-range or gateway must have a corresponding subnet"),
    (("network", "create", "nmt-n1"), 1, "network with name nmt-n1 already exists"),
    (("network", "create", "-d", "nosuch", "nmt-x"), 1, 'plugin "nosuch" not found'),
    (("network", "create", "--ipam-driver", "nosuchipam", "nmt-x"), 1, 'plugin "nosuchipam" not found'),
    (("network", "create", "nmt x"), 1, "invalid network name 'nmt x': only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
    (("network", "create", "nmt/x"), 1, "invalid network name 'nmt/x': only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
    (("network", "create", "-d", "host", "nmt-x"), 1, 'only one instance of "host" network is allowed'),
    (("network", "create", "-d", "overlay", "nmt-x"), 1, "the overlay driver is global-scope and needs a cluster store: "
     "start netmgrd with --cluster-store etcd://HOST:PORT[,HOST:PORT] --advertise-addr IP"),
    (("network", "create", "-o", "com.docker.network.driver.mtu=abc", "nmt-x"), 1,
     "invalid MTU 'abc': want a number from 68 to 65535"),
    (("network", "rm", "nmt-n1"), 1, "error while removing network: network nmt-n1 id {n1} has active endpoints"),
    (("network", "rm", "nosuchnet"), 1, "network nosuchnet not found"),
    (("network", "rm", "bridge"), 1, "bridge is a pre-defined network and cannot be removed"),
    (("network", "connect", "nmt-n1", "nmt-c1"), 1, "endpoint with name nmt-c1 already exists in network nmt-n1"),
    (("network", "connect", "nmt-n1", "nosuchc"), 1, "No such container: nosuchc"),
    (("network", "connect", "nosuchnet", "nmt-c1"), 1, "network nosuchnet not found"),
    (("network", "connect", "--ip", "10.81.0.200", "nmt-n1", "nmt-c2"), 1,
     "Invalid address 10.81.0.200: It does not belong to any of this network's subnets"),
    (("network", "connect", "--ip", "10.80.0.10", "nmt-n1", "nmt-c2"), 1, "Address already in use"),
    (("network", "connect", "--ip", "10.80.0.254", "nmt-n1", "nmt-c2"), 1, "Address already in use"),
    (("network", "connect", "--ip", "172.17.0.50", "bridge", "nmt-c2"), 1,
     "user specified IP address is supported on user defined networks only"),
    (("network", "connect", "--ip", "172.18.0.50", "nmt-auto", "nmt-c2"), 1,
     "user specified IP address is supported only when connecting to networks with user configured subnets"),
    (("network", "connect", "host", "nmt-c1"), 1,
     "container cannot be disconnected from host network or connected to host network"),
    (("network", "disconnect", "nmt-n1", "nmt-c2"), 1, "container {c2} is not connected to network nmt-n1"),
    (("run", "-d", "--name", "nmt-c1", "sleep", "1"), 125,
     'Conflict. The container name "/nmt-c1" is already in use by container "{c1}". '
     "You have to remove (or rename) that container to be able to reuse that name."),
    (("run", "-d", "--name", "nmt bad", "sleep", "1"), 125,
     "Invalid container name (nmt bad), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
    (("run", "-d", "--network", "nosuch", "sleep", "1"), 125, "network nosuch not found"),
    (("run", "-d", "--network", "nmt-n1", "--ip", "10.80.0.10", "sleep", "1"), 125, "Address already in use"),
    (("run", "-d", "--network", "nmt-n1", "--ip", "10.99.0.10", "sleep", "1"), 125,
     "Invalid address 10.99.0.10: It does not belong to any of this network's subnets"),
    (("run", "-d", "--network", "nmt-n1", "nmt-nosuchcmd"), 127,
     'exec: "nmt-nosuchcmd": executable file not found in $PATH'),
    (("rm", "nmt-c1"), 1, "You cannot remove a running container {c1}. "
     "Stop the container before attempting removal or force remove"),
    (("rm", "nosuchc"), 1, "No such container: nosuchc"),
    (("exec", "nosuchc", "true"), 1, "No such container: nosuchc"),
    (("network", "ls", "--filter", "nosuch=1"), 1, "Invalid filter 'nosuch'"),
]


@pytest.mark.parametrize("argv,code,message", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_changes_nothing(world, argv, code, message):
    h = world
    before = state(h)
    r = h.cli(*argv)
    assert (r.rc, r.err) == (code, message.format(**h.ids) + "\n")
    assert state(h) == before


def _id(h, kind, name):
    args = ("network", "inspect") if kind == "network" else ("inspect",)
    return json.loads(h.cli(*args, "-f", "{{json .Id}}", name).out)


def test_daemon_not_running(tmp_path):
    from netmgr.cli.main import main

    code = subprocess.run([os.sys.executable, "-m", "netmgr.cli.main", "-H", f"unix://{tmp_path}/none.sock",
                           "network", "ls"], capture_output=True, text=True)
    assert code.returncode == 1
    assert code.stderr == (f"Cannot connect to the netmgr daemon at unix://{tmp_path}/none.sock. "
                           "Is the netmgr daemon running?\n")
    assert main  # the entry point is importable without a daemon


def test_second_daemon_refuses(world):
    h = world
    proc = subprocess.run(["nsenter", f"--net={h.netns_path}", os.sys.executable, "-m", "netmgr.daemon.main",
                           "--state-dir", h.state_dir + "-2", "--run-dir", h.run_dir], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1
    assert "another netmgrd" in proc.stderr and "is already running on" in proc.stderr
    assert h.cli("network", "ls", "-q").rc == 0


def test_network_ls_inspect_and_formats(world):
    h = world
    out = h.cli("network", "ls").out.splitlines()
    assert out[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    names = [line.split()[1] for line in out[1:]]
    assert names == sorted(names) and {"bridge", "host", "none", "nmt-n1"} <= set(names)
    assert h.cli("network", "ls", "--filter", "driver=null", "--format", "{{.Name}}").out == "none\n"
    assert h.cli("network", "ls", "-q", "--filter", "name=nmt-n1").out.strip() == _id(h, "network", "nmt-n1")[:12]
    doc = json.loads(h.cli("network", "inspect", "nmt-n1").out)[0]
    assert list(doc) == ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal", "Attachable",
                         "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"]
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.80.0.0/24", "Gateway": "10.80.0.254"}]
    (ctr,) = doc["Containers"].values()
    assert ctr["Name"] == "nmt-c1" and ctr["IPv4Address"] == "10.80.0.10/24"
    assert h.cli("network", "inspect", "-f", "{{.Name}}", "nmt-n1", "nmt-n2").out == "nmt-n1\nnmt-n2\n"
    prefix = _id(h, "network", "nmt-n2")[:5]
    assert h.cli("network", "inspect", "-f", "{{.Name}}", prefix).out == "nmt-n2\n"
    r = h.cli("network", "inspect", "nmt-n1", "nosuchnet")
    assert r.rc == 1 and json.loads(r.out)[0]["Name"] == "nmt-n1" and r.err == "network nosuchnet not found\n"


def test_connect_disconnect_and_ping(world):
    h = world
    assert h.cli("network", "connect", "--alias", "web", "nmt-n2", "nmt-c1").rc == 0
    doc = json.loads(h.cli("inspect", "nmt-c1").out)[0]
    nets = doc["NetworkSettings"]["Networks"]
    assert sorted(nets) == ["nmt-n1", "nmt-n2"]
    assert nets["nmt-n2"]["Aliases"][0] == "web"
    c2_ip = json.loads(h.cli("inspect", "nmt-c2").out)[0]["NetworkSettings"]["Networks"]["nmt-n2"]["IPAddress"]
    assert h.cli("exec", "nmt-c1", "busybox", "ping", "-c1", "-W2", c2_ip).rc == 0
    assert h.cli("exec", "nmt-c1", "ip", "-o", "link", "show", "eth1").rc == 0
    assert h.cli("network", "disconnect", "nmt-n2", "nmt-c1").rc == 0
    assert h.cli("exec", "nmt-c1", "busybox", "ping", "-c1", "-W1", c2_ip).rc != 0  # isolated again
    assert h.cli("exec", "nmt-c1", "ip", "-o", "link", "show", "eth1").rc != 0


def test_run_attached_exit_code_rm_and_logs(world):
    h = world
    r = h.cli("run", "--rm", "--network", "nmt-n1", "--name", "nmt-once", "sh", "-c", "echo hello; hostname; exit 3")
    assert r.rc == 3 and r.out.startswith("hello\n")
    assert h.cli("inspect", "nmt-once").rc == 1  # removed
    assert h.cli("run", "-d", "--name", "nmt-log", "--hostname", "nmt-h", "sh", "-c", "echo out; hostname").rc == 0
    for _ in range(100):
        if "exited" in h.cli("ps", "-a", "--filter", "name=nmt-log", "--format", "{{.State}}").out:
            break
        time.sleep(0.05)
    assert h.cli("logs", "nmt-log").out.startswith("out\nnmt-h\n")
    assert "Exited (0)" in h.cli("ps", "-a", "--filter", "name=nmt-log").out
    assert h.cli("ps", "-q", "--filter", "name=nmt-log").out == ""
    assert h.cli("rm", "nmt-log").out == "nmt-log\n"


def test_double_dash_ends_the_options(world):
    """``--`` ends the options of run and exec, as in Docker: it is not the command."""
    h = world
    r = h.cli("run", "--rm", "--network", "nmt-n1", "--", "sh", "-c", "echo dd --json --debug")
    assert (r.rc, r.out, r.err) == (0, "dd --json --debug\n", "")
    assert h.cli("run", "-d", "--name", "nmt-dd", "--network", "nmt-n1", "--", "sleep", "1000").rc == 0
    try:
        assert h.cli("inspect", "-f", "{{.Path}} {{json .Args}}", "nmt-dd").out == 'sleep ["1000"]\n'
        assert h.cli("exec", "nmt-dd", "--", "ls", "-d", "/").out == "/\n"
        assert h.cli("exec", "nmt-dd", "--", "--").rc != 0  # a program called -- is still possible
    finally:
        assert h.cli("rm", "-f", "nmt-dd").rc == 0


def test_prune_removes_only_unused(world):
    h = world
    assert h.cli("network", "create", "nmt-unused").rc == 0
    r = h.cli("network", "prune", "-f")
    assert r.out.startswith("Deleted Networks:\n") and "nmt-unused\n" in r.out and "nmt-n1" not in r.out
    assert "bridge\n" not in r.out
    assert h.cli("network", "prune", "-f").out == ""


def test_daemon_sigkill_and_restart_keeps_everything(world):
    import signal

    h = world
    before = state(h)
    h.stop_daemon(signal.SIGKILL)
    assert h.cli("network", "ls").rc == 1
    h.start_daemon()
    assert state(h) == before
    assert "nmt-c1" in h.cli("ps", "--format", "{{.Names}}").out
    c2_ip = json.loads(h.cli("inspect", "nmt-c2").out)[0]["NetworkSettings"]["Networks"]["nmt-n2"]["IPAddress"]
    assert h.cli("network", "connect", "nmt-n2", "nmt-c1").rc == 0
    assert h.cli("exec", "nmt-c1", "busybox", "ping", "-c1", "-W2", c2_ip).rc == 0
    assert h.cli("network", "disconnect", "nmt-n2", "nmt-c1").rc == 0


def test_events_stream(world):
    h = world
    proc = subprocess.Popen([os.sys.executable, "-m", "netmgr.cli.main", "-H", f"unix://{h.socket}", "events"],
                            stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        # the stream is live once a probe network's events arrive (no sleep guessing when it subscribed)
        for _ in range(100):
            assert h.cli("network", "create", "nmt-probe").rc == 0
            assert h.cli("network", "rm", "nmt-probe").rc == 0
            try:
                lines.get(timeout=0.1)
                break
            except queue.Empty:
                pass
        assert h.cli("network", "create", "nmt-ev").rc == 0
        assert h.cli("network", "rm", "nmt-ev").rc == 0
        got = [lines.get(timeout=10) for _ in range(2)]
        while "name=nmt-probe" in got[0]:  # the rest of the probes' events
            got = [got[1], lines.get(timeout=10)]
    finally:
        proc.kill()
        proc.wait()
    assert " network create " in got[0] and "name=nmt-ev" in got[0] and "type=bridge" in got[0]
    assert " network destroy " in got[1] and "name=nmt-ev" in got[1]


def test_flushed_ruleset_is_reapplied_without_restart(world):
    h = world
    before = state(h)
    assert h.sh("nft", "flush", "ruleset").rc == 0
    for _ in range(100):
        time.sleep(0.05)
        if state(h)["nft"] == before["nft"]:
            break
    assert state(h) == before
    assert h.sh("nft", "delete", "chain", "inet", "netmgr", "forward").rc == 0
    for _ in range(100):
        time.sleep(0.05)
        if state(h)["nft"] == before["nft"]:
            break
    assert state(h) == before


def test_publish_port_and_ps(world):
    h = world
    r = h.cli("run", "-d", "--name", "nmt-pub", "--network", "nmt-n1", "-p", "8080:80", "-p", "127.0.0.1::81/udp",
              "sleep", "600")
    assert r.rc == 0, r.err
    out = h.cli("port", "nmt-pub").out.splitlines()
    assert out[0] == "80/tcp -> 0.0.0.0:8080"
    assert out[1].startswith("81/udp -> 127.0.0.1:") and 32768 <= int(out[1].rsplit(":", 1)[1]) <= 60999
    assert h.cli("port", "nmt-pub", "80").out == "0.0.0.0:8080\n"
    assert h.cli("port", "nmt-pub", "82").err == "Error: No public port '82/tcp' published for nmt-pub\n"
    ps = h.cli("ps", "--filter", "name=nmt-pub", "--format", "{{.Ports}}").out
    assert ps.startswith("0.0.0.0:8080->80/tcp, 127.0.0.1:")
    r = h.cli("run", "-d", "--name", "nmt-pub2", "--network", "nmt-n1", "-p", "8080:80", "sleep", "600")
    assert (r.rc, r.err) == (125, "Bind for 0.0.0.0:8080 failed: port is already allocated\n")
    assert h.cli("rm", "-f", "nmt-pub").rc == 0


def test_stop_start_keeps_the_network(world):
    h = world
    assert h.cli("run", "-d", "--name", "nmt-ss", "--network", "nmt-n2", "sleep", "600").rc == 0
    ip_before = json.loads(h.cli("inspect", "nmt-ss").out)[0]["NetworkSettings"]["Networks"]["nmt-n2"]["IPAddress"]
    cid = json.loads(h.cli("inspect", "nmt-ss").out)[0]["Id"]
    assert cgroup_dirs(cid)
    assert h.cli("stop", "-t", "1", "nmt-ss").out == "nmt-ss\n"
    assert "Exited (137)" in h.cli("ps", "-a", "--filter", "name=nmt-ss").out
    assert cgroup_dirs(cid) == []  # released at exit, as runc's delete; start makes new ones
    assert h.cli("exec", "nmt-ss", "true").err.startswith("Container ")
    assert h.cli("start", "nmt-ss").out == "nmt-ss\n"
    doc = json.loads(h.cli("inspect", "nmt-ss").out)[0]
    assert doc["State"]["Running"] and doc["NetworkSettings"]["Networks"]["nmt-n2"]["IPAddress"] == ip_before
    assert h.cli("exec", "nmt-ss", "busybox", "ping", "-c1", "-W2", "10.81.0.1").rc == 0
    assert h.cli("rm", "-f", "nmt-ss").rc == 0


def test_container_dead_while_the_daemon_was_down(world):
    """A kill of the daemon during ``rm -f`` (after the process, before the record; chaos found it).

    The daemon comes back to a container whose process is gone: it is exited, its cgroups are
    released, its sandbox and address stay (a stopped container's), and ``rm`` removes all of it.
    """
    import signal

    h = world
    assert h.cli("run", "-d", "--name", "nmt-dead", "--network", "nmt-n2", "sleep", "600").rc == 0
    doc = json.loads(h.cli("inspect", "nmt-dead").out)[0]
    cid, key, pid = doc["Id"], doc["NetworkSettings"]["SandboxKey"], doc["State"]["Pid"]
    veth = "veth" + doc["NetworkSettings"]["Networks"]["nmt-n2"]["EndpointID"][:7]
    h.stop_daemon(signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    h.start_daemon()
    assert "Exited (137)" in h.cli("ps", "-a", "--filter", "name=nmt-dead").out
    assert cgroup_dirs(cid) == []
    assert os.path.exists(key) and any(link["ifname"] == veth for link in ip_json(h.netns_path, "link"))
    assert h.cli("rm", "nmt-dead").rc == 0
    assert not os.path.exists(key) and not any(link["ifname"] == veth for link in ip_json(h.netns_path, "link"))


def test_stats(world):
    h = world
    assert h.cli("run", "-d", "--name", "nmt-st", "--network", "nmt-n1", "--memory", "64m", "sleep", "600").rc == 0
    out = h.cli("stats", "--no-stream", "nmt-st").out.splitlines()
    assert out[0].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
    assert "nmt-st" in out[1] and "/ 64MiB" in out[1]
    assert h.cli("rm", "-f", "nmt-st").rc == 0
