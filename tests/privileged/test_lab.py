"""``netmgr lab``: real namespaces, real netmgrd daemons, real etcd — and nothing left after ``down``.

Every lab here has a unique ``nmt-`` name. After each ``down`` the test
checks through independent views (``ip netns list``, ``pgrep``,
/proc/mounts, /proc/PID, the cgroup tree, the root namespace's links) that
no namespace, process, mount, cgroup or directory of the lab remains,
also when ``up`` was SIGKILLed halfway or a daemon was killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from netmgr.drivers import BUILTIN
from netmgr.lab import state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/etcd"), reason="etcd-server is not installed")

BRIDGE_LAB = """
name: {name}
underlay: {{subnet: 192.168.151.0/24, mtu: 1400}}
etcd: {{members: {members}}}
hosts: [host1, host2]
networks:
  - {{name: net1, subnet: 10.31.0.0/24}}
  - {{name: int2, subnet: 10.32.0.0/24, internal: true, hosts: [host2]}}
containers:
  - {{name: a1, host: host1, networks: [net1]}}
  - {{name: a2, host: host1, networks: [{{name: net1, aliases: [web]}}]}}
  - {{name: b1, host: host2, networks: [net1, int2]}}
  - {{name: b2, host: host2, networks: [int2]}}
validate:
  - ping: {{from: a1, to: web}}
  - reach: {{from: a1, to: outside}}
  - reach: {{from: b1, to: host1}}
  - reach: {{from: b2, to: b1}}
  - no_reach: {{from: b2, to: outside}}
"""


def lab_name() -> str:
    return f"nmt-{uuid.uuid4().hex[:6]}"


def lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``netmgr lab ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "netmgr.cli.main", "lab", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def topology(tmp_path, name: str, members: int = 1, text: str = BRIDGE_LAB) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text.format(name=name, members=members)))
    return str(path)


def record(name: str) -> dict:
    with open(os.path.join(state.lab_dir(name), "state.json")) as f:
        return json.load(f)


def snapshot(name: str) -> dict:
    """What the lab runs right now: pids (daemons, etcd, containers), namespace inodes, container ids."""
    rec = record(name)
    pids = [p["pid"] for p in rec["processes"] if p["pid"]]
    ctr_ids = []
    for host in rec["hosts"].values():
        ctr_dir = os.path.join(host["state_dir"], "containers")
        for cid in os.listdir(ctr_dir) if os.path.isdir(ctr_dir) else []:
            ctr_ids.append(cid)
            try:
                with open(os.path.join(ctr_dir, cid, "pid")) as f:
                    pids.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
    inodes = set()
    for path in rec["namespaces"]:
        try:
            inodes.add(os.stat(path).st_ino)
        except OSError:
            pass
    return {"pids": pids, "inodes": inodes, "containers": ctr_ids, "ticks": now_ticks()}


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def now_ticks() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def assert_gone(name: str, snap: dict | None = None) -> None:
    """Nothing of lab ``name`` exists any more, seen from outside netmgr.

    With ``snap`` (taken before ``down``): none of its processes runs and no process
    that started before it runs in one of its namespaces (a freed namespace's inode
    number goes to the next new namespace at once, so later processes do not count).
    """
    prefix = f"nml-{name}-"
    netns = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout
    assert not [ln for ln in netns.splitlines() if ln.startswith(prefix)], netns
    assert not os.path.exists(state.lab_dir(name))
    with open("/proc/mounts") as f:
        mounts = [ln for ln in f if state.lab_dir(name) + "/" in ln or prefix in ln]
    assert not mounts, mounts
    pgrep = subprocess.run(["pgrep", "-af", state.lab_dir(name) + "/"], check=False, capture_output=True, text=True).stdout
    assert not [ln for ln in pgrep.splitlines() if ln.split(None, 1)[0] != str(os.getpid())], pgrep
    links = json.loads(subprocess.run(["ip", "-j", "link"], check=False, capture_output=True, text=True).stdout or "[]")
    assert not [ln["ifname"] for ln in links if ln["ifname"].startswith("v-host")]
    if snap:
        old = [p for p in snap["pids"] if alive(p) and (start_ticks(p) or 1 << 62) <= snap["ticks"]]
        assert not old, f"processes of the lab still run: {old}"
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            except OSError:
                continue
            if ino in snap["inodes"] and (start_ticks(pid) or 1 << 62) <= snap["ticks"]:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().replace(b"\0", b" ").decode(errors="replace")
                raise AssertionError(f"pid {pid} ({argv[:200]}) still runs in a namespace of the lab")
        for cid in snap["containers"]:
            for ctrl in ("pids", "memory", "cpu", "cpuacct", ""):
                assert not os.path.exists(os.path.join("/sys/fs/cgroup", ctrl, "netmgr", cid))


@pytest.fixture
def cleanup():
    """Labs to remove whatever the test did (a failing test leaves nothing either)."""
    names: list[str] = []
    yield names
    for name in names:
        if os.path.exists(state.lab_dir(name)):
            lab("down", name)


def test_up_status_exec_ls_validate_down(tmp_path, cleanup):
    name = lab_name()
    cleanup.append(name)
    path = topology(tmp_path, name)
    t0 = time.monotonic()
    r = lab("up", path)
    up_seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("[1/11] underlay") and "[2/11] etcd: 1 member at 192.168.151.2:2379" in r.stdout
    assert lines[-1].startswith(f"lab {name} up in ")
    assert up_seconds < 30

    r = lab("status", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"lab {name}: up" in r.stdout and "etcd0 192.168.151.2:2379 healthy" in r.stdout
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("host2"))
    assert "running (pid" in row and "int2(bridge), net1(bridge)" in row and "b1(running), b2(running)" in row

    r = lab("ls")
    assert any(ln.split()[:4] == [name, "up", "2", "1"] for ln in r.stdout.splitlines()), r.stdout
    assert name in lab("ls", "-q").stdout.split()

    r = lab("exec", name, "host1", "netmgr", "ps", "--format", "{{.Names}}")
    assert r.returncode == 0 and sorted(r.stdout.split()) == ["a1", "a2"], r.stdout + r.stderr
    r = lab("exec", name, "host2", "ip", "-j", "addr", "show", "eth0")
    eth0 = json.loads(r.stdout)[0]
    assert eth0["mtu"] == 1400 and [a["local"] for a in eth0["addr_info"] if a["family"] == "inet"] == ["192.168.151.12"]
    r = lab("exec", name, "host1", "sh", "-c", 'echo "$NETMGR_HOST"')
    assert r.stdout.strip() == f"unix://{record(name)['hosts']['host1']['socket']}"
    r = lab("exec", name, "nosuch", "true")
    assert r.returncode == 1 and "has no host nosuch" in r.stderr

    # each daemon is pointed at the lab's etcd, which its host reaches over the underlay
    rec = record(name)
    daemon = next(p for p in rec["processes"] if p["role"] == "netmgrd host2")
    with open(f"/proc/{daemon['pid']}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    assert argv[argv.index("--cluster-store") + 1] == "etcd://192.168.151.2:2379"
    assert argv[argv.index("--advertise-addr") + 1] == "192.168.151.12"
    probe = "import urllib.request as u; print(u.urlopen('http://192.168.151.2:2379/health', timeout=3).read().decode())"
    r = lab("exec", name, "host2", sys.executable, "-c", probe)
    assert '"health":"true"' in r.stdout.replace(" ", ""), r.stdout + r.stderr

    r = lab("validate", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sum(ln.startswith("ok ") for ln in r.stdout.splitlines()) == 5 and "all 5 checks passed" in r.stdout

    r = lab("up", path)
    assert r.returncode == 1 and r.stderr.strip() == f"lab {name} already exists (netmgr lab down {name} removes it)"

    snap = snapshot(name)
    assert len(snap["containers"]) == 4
    t0 = time.monotonic()
    r = lab("down", path)  # by file: the lab the file names
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 15
    assert_gone(name, snap)
    r = lab("down", name)
    assert r.returncode == 1 and r.stderr.strip() == f"lab {name} not found"


def test_validate_reports_the_failing_check(tmp_path, cleanup):
    name = lab_name()
    cleanup.append(name)
    text = BRIDGE_LAB.replace("  - no_reach: {{from: b2, to: outside}}", "  - reach: {{from: b2, to: outside, timeout: 1}}")
    assert lab("up", topology(tmp_path, name, text=text)).returncode == 0
    r = lab("validate", name)
    assert r.returncode == 1
    assert "FAIL  reach b2 -> outside: no reply from 203.0.113.1 in 1 s" in r.stdout
    assert r.stderr.strip().startswith(f"validate {name}: 1 of 5 checks failed; first: reach b2 -> outside")
    assert lab("down", name).returncode == 0
    assert_gone(name)


def test_three_member_etcd(tmp_path, cleanup):
    name = lab_name()
    cleanup.append(name)
    r = lab("up", topology(tmp_path, name, members=3))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 members at 192.168.151.2:2379, 192.168.151.3:2379, 192.168.151.4:2379 healthy" in r.stdout
    rec = record(name)
    assert rec["etcd"]["url"] == "etcd://192.168.151.2:2379,192.168.151.3:2379,192.168.151.4:2379"
    r = lab("status", name)
    assert r.stdout.count(" healthy") == 3, r.stdout
    # one member down: the cluster keeps its quorum, status says the lab is degraded
    etcd1 = next(p["pid"] for p in rec["processes"] if p["role"] == "etcd etcd1")
    os.kill(etcd1, signal.SIGKILL)
    r = lab("status", name)
    assert r.returncode == 1 and f"lab {name}: degraded" in r.stdout and "etcd1 192.168.151.3:2379 UNHEALTHY" in r.stdout
    snap = snapshot(name)
    assert lab("down", name).returncode == 0
    assert_gone(name, snap)


def test_down_after_up_was_killed(tmp_path, cleanup):
    """SIGKILL ``lab up`` once its daemons run: ``down`` removes everything it had made."""
    name = lab_name()
    cleanup.append(name)
    with open(tmp_path / "up.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "netmgr.cli.main", "lab", "up", topology(tmp_path, name)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while True:  # until a container exists: namespaces, etcd and both daemons are up by then
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "up.log").read_text()
        try:
            if record(name)["containers"]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    snap = snapshot(name)
    assert sum(alive(p) for p in snap["pids"]) >= 3  # etcd and two daemons outlive the killed tool
    r = lab("ls")
    assert any(ln.split()[:2] == [name, "failed"] for ln in r.stdout.splitlines()), r.stdout
    r = lab("down", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_gone(name, snap)


def test_sigterm_during_up_rolls_back(tmp_path, cleanup):
    """SIGTERM (or Ctrl-C) while ``up`` runs: it removes what it made itself and exits 130."""
    name = lab_name()
    cleanup.append(name)
    proc = subprocess.Popen([sys.executable, "-m", "netmgr.cli.main", "lab", "up", topology(tmp_path, name)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    while True:  # until the first daemon is recorded
        assert proc.poll() is None and time.monotonic() < deadline
        try:
            if record(name)["hosts"]:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    snap = snapshot(name)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "up failed (interrupted)" in out and f"lab {name} removed: " in out
    assert_gone(name, snap)


def test_down_after_a_daemon_was_killed(tmp_path, cleanup):
    name = lab_name()
    cleanup.append(name)
    assert lab("up", topology(tmp_path, name)).returncode == 0
    snap = snapshot(name)
    daemon = next(p["pid"] for p in record(name)["processes"] if p["role"] == "netmgrd host1")
    os.kill(daemon, signal.SIGKILL)
    r = lab("status", name)
    assert r.returncode == 1 and f"lab {name}: degraded" in r.stdout
    assert next(ln for ln in r.stdout.splitlines() if ln.startswith("host1")).split()[3] == "DEAD"
    r = lab("down", name)  # host1's containers have no daemon any more: down still removes them
    assert r.returncode == 0, r.stdout + r.stderr
    assert_gone(name, snap)


def test_failed_up_rolls_back(tmp_path, cleanup):
    """A step refused by a daemon (an overlapping pool): nothing of the lab remains, exit 1, one line."""
    name = lab_name()
    cleanup.append(name)
    text = BRIDGE_LAB.replace("{{name: int2, subnet: 10.32.0.0/24", "{{name: int2, subnet: 10.31.0.128/25")
    r = lab("up", topology(tmp_path, name, text=text))
    assert r.returncode == 1
    assert "up failed (" in r.stdout and f"removing everything lab {name} made" in r.stdout
    assert r.stderr.strip().splitlines() == [
        ("host2: netmgr network create -d bridge --subnet 10.31.0.128/25 --internal int2: "
         "Pool overlaps with other one on this address space")]
    assert_gone(name)


def test_bad_topology_changes_nothing(tmp_path):
    name = lab_name()
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: {name}\nhosts: [host1]\nnetworks: [{{name: n, driver: macvlan}}]\n")
    r = lab("up", str(path))
    assert r.returncode == 1
    assert r.stderr.strip() == f"{path}: networks[0] (n): unknown driver 'macvlan' (bridge or overlay)"
    assert not os.path.exists(state.lab_dir(name))


@pytest.mark.skipif("overlay" not in BUILTIN, reason="the overlay driver is not registered yet (netmgr.drivers.BUILTIN)")
def test_overlay_2host_lab(cleanup):
    """The shipped lab: containers on different hosts ping by name; the internal overlay does not reach out."""
    name = lab_name()
    cleanup.append(name)
    t0 = time.monotonic()
    r = lab("up", "labs/overlay-2host/topology.yaml", "--name", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 30
    r = lab("validate", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok    ping c1 -> c2" in r.stdout and "ok    no_reach c3 -> outside" in r.stdout
    snap = snapshot(name)
    r = lab("down", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_gone(name, snap)
