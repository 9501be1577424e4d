"""cgroups against fake v1 and v2 trees in tmp_path (no root needed).

A real cgroupfs lets rmdir remove a directory that still "contains" its
control files and refuses (EBUSY) while processes remain; ``fake_rmdir``
mimics that so remove() can be tested on plain directories.
"""

from __future__ import annotations

import errno
import os

import pytest
from netmgr.runtime import cgroups

from netmgr.errors import Conflict, InvalidConfig, KernelError

CID = "c" * 64
_real_rmdir = os.rmdir


@pytest.fixture
def fake_rmdir(monkeypatch):
    """cgroupfs-like rmdir; ``busy`` maps path → number of EBUSY answers left."""
    busy: dict[str, int] = {}

    def rmdir(path, *args, **kwargs):
        path = os.fspath(path)
        if not os.path.isdir(path):
            return _real_rmdir(path, *args, **kwargs)
        procs = os.path.join(path, "cgroup.procs")
        if os.path.exists(procs):
            with open(procs) as f:
                has_tasks = bool(f.read().strip())
        else:
            has_tasks = False
        if has_tasks or busy.get(path, 0) != 0:
            busy[path] = busy.get(path, 0) - 1
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        entries = [os.path.join(path, e) for e in os.listdir(path)]
        if any(os.path.isdir(e) and not os.path.islink(e) for e in entries):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        for entry in entries:
            os.unlink(entry)
        _real_rmdir(path)

    monkeypatch.setattr(os, "rmdir", rmdir)
    return busy


@pytest.fixture
def v1(tmp_path, fake_rmdir):
    root = tmp_path / "v1"
    for controller in ("memory", "cpu", "cpuacct", "pids", "cpuset"):
        (root / controller).mkdir(parents=True)
    return str(root)


@pytest.fixture
def v1_comounted(tmp_path, fake_rmdir):
    root = tmp_path / "v1co"
    (root / "cpu,cpuacct").mkdir(parents=True)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    (root / "memory").mkdir()
    return str(root)


@pytest.fixture
def v2(tmp_path, fake_rmdir):
    root = tmp_path / "v2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    (root / "cgroup.subtree_control").write_text("")
    return str(root)


def _read(*parts) -> str:
    with open(os.path.join(*parts)) as f:
        return f.read().strip()


# ---------------------------------------------------------------- detection

def test_detect_version(v1, v2):
    assert cgroups.detect_version(v1) == 1
    assert cgroups.detect_version(v2) == 2


def test_detect_version_nothing_mounted(tmp_path):
    with pytest.raises(KernelError, match="no cgroup hierarchy"):
        cgroups.detect_version(str(tmp_path))


def test_root_from_environment(monkeypatch, v2):
    monkeypatch.setenv(cgroups.ROOT_ENV, v2)
    assert cgroups.cgroup_root() == v2
    assert cgroups.detect_version() == 2
    assert cgroups.cgroup_root("/elsewhere") == "/elsewhere"
    monkeypatch.delenv(cgroups.ROOT_ENV)
    assert cgroups.cgroup_root() == "/sys/fs/cgroup"


@pytest.mark.parametrize("parent", ["", "/abs", "a/../b", "..", "a//b", "./a"])
def test_invalid_parent(v1, parent):
    with pytest.raises(InvalidConfig, match="invalid cgroup parent"):
        cgroups.locate(parent, CID, v1)


def test_locate_v1_skips_unmounted_and_unused(v1):
    cg = cgroups.locate("netmgr", CID, v1)
    assert cg.version == 1
    assert dict(cg.dirs) == {c: os.path.join(v1, c, "netmgr", CID)
                             for c in ("memory", "cpu", "cpuacct", "pids")}
    assert not os.path.exists(os.path.join(v1, "memory", "netmgr"))  # locate touches nothing


def test_locate_v1_comounted_hierarchy_used_once(v1_comounted):
    cg = cgroups.locate("netmgr", CID, v1_comounted)
    assert cg.dir_for("cpu") == cg.dir_for("cpuacct")
    assert len(cg.paths) == 2
    assert cg.dir_for("pids") is None


def test_cgroup_round_trips_through_dict(v1):
    cg = cgroups.locate("a/b", CID, v1)
    assert cgroups.Cgroup.from_dict(cg.to_dict()) == cg


# ---------------------------------------------------------------- create

def test_create_v1_writes_limits(v1):
    limits = cgroups.Limits(memory=64 << 20, cpus=0.5, pids=32)
    cg = cgroups.create("netmgr", CID, limits, root=v1)
    assert _read(v1, "memory/netmgr", CID, "memory.limit_in_bytes") == str(64 << 20)
    assert _read(v1, "cpu/netmgr", CID, "cpu.cfs_period_us") == "100000"
    assert _read(v1, "cpu/netmgr", CID, "cpu.cfs_quota_us") == "50000"
    assert _read(v1, "pids/netmgr", CID, "pids.max") == "32"
    assert os.path.isdir(os.path.join(v1, "cpuacct/netmgr", CID))
    assert not os.path.exists(os.path.join(v1, "cpuset/netmgr"))
    assert cgroups.read_limits(cg) == limits


def test_create_v1_without_limits_only_makes_dirs(v1):
    cg = cgroups.create("netmgr", CID, root=v1)
    for path in cg.paths:
        assert os.listdir(path) == []
    assert cgroups.read_limits(cg) == cgroups.Limits()


def test_create_v1_comounted(v1_comounted):
    cg = cgroups.create("netmgr", CID, cgroups.Limits(cpus=1.5), root=v1_comounted)
    assert _read(v1_comounted, "cpu,cpuacct/netmgr", CID, "cpu.cfs_quota_us") == "150000"
    assert cgroups.read_limits(cg).cpus == 1.5


def test_create_v2_delegates_controllers_and_writes_limits(v2):
    limits = cgroups.Limits(memory=128 << 20, cpus=0.25, pids=100)
    cg = cgroups.create("netmgr/sub", CID, limits, root=v2)
    assert cg.version == 2 and cg.paths == (os.path.join(v2, "netmgr/sub", CID),)
    assert _read(v2, "cgroup.subtree_control") == "+cpu +memory +pids"
    path = cg.paths[0]
    assert _read(path, "memory.max") == str(128 << 20)
    assert _read(path, "cpu.max") == "25000 100000"
    assert _read(path, "pids.max") == "100"
    assert cgroups.read_limits(cg) == limits


def test_create_v2_nested_parents_get_delegation(v2):
    # a real kernel lists the delegated controllers in each child's cgroup.controllers
    os.makedirs(os.path.join(v2, "netmgr"))
    with open(os.path.join(v2, "netmgr", "cgroup.controllers"), "w") as f:
        f.write("cpu memory pids\n")
    cgroups.create("netmgr", CID, root=v2)
    assert _read(v2, "netmgr", "cgroup.subtree_control") == "+cpu +memory +pids"


def test_limit_for_missing_controller_is_invalid(v1_comounted):
    with pytest.raises(InvalidConfig, match="pids limit requested but the pids cgroup"):
        cgroups.create("netmgr", CID, cgroups.Limits(pids=10), root=v1_comounted)
    assert not os.path.exists(os.path.join(v1_comounted, "memory/netmgr", CID))


def test_limit_for_missing_v2_controller_is_invalid(v2):
    with open(os.path.join(v2, "cgroup.controllers"), "w") as f:
        f.write("cpu memory\n")
    with pytest.raises(InvalidConfig, match="pids"):
        cgroups.create("netmgr", CID, cgroups.Limits(pids=10), root=v2)


def test_create_replaces_stale_empty_cgroup(v1):
    stale = os.path.join(v1, "memory/netmgr", CID)
    os.makedirs(stale)
    with open(os.path.join(stale, "memory.limit_in_bytes"), "w") as f:
        f.write("1234")
    cgroups.create("netmgr", CID, root=v1)
    assert os.listdir(stale) == []


def test_create_refuses_cgroup_in_use(v1):
    busy = os.path.join(v1, "pids/netmgr", CID)
    os.makedirs(busy)
    with open(os.path.join(busy, "cgroup.procs"), "w") as f:
        f.write("4242\n")
    with pytest.raises(Conflict, match="in use"):
        cgroups.create("netmgr", CID, root=v1)
    assert os.path.exists(os.path.join(busy, "cgroup.procs"))  # untouched
    assert not os.path.exists(os.path.join(v1, "memory/netmgr", CID))  # undone


def test_create_undoes_on_write_failure(v1):
    pids_dir = os.path.join(v1, "pids/netmgr", CID)
    real_mkdir = os.mkdir

    def mkdir_with_bad_file(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if os.fspath(path) == pids_dir:
            real_mkdir(os.path.join(path, "pids.max"))  # writing it fails: EISDIR

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "mkdir", mkdir_with_bad_file)
    try:
        with pytest.raises(KernelError, match="pids.max") as exc:
            cgroups.create("netmgr", CID, cgroups.Limits(pids=5), root=v1)
    finally:
        mp.undo()
    assert exc.value.errno == errno.EISDIR
    for controller in ("memory", "cpu", "cpuacct"):
        assert not os.path.exists(os.path.join(v1, controller, "netmgr", CID))


# ---------------------------------------------------------------- processes, removal

def test_add_process_and_procs(v1):
    cg = cgroups.create("netmgr", CID, root=v1)
    cgroups.add_process(cg, 4242)
    for procs_file in cg.procs_files():
        assert _read(procs_file) == "4242"
    assert cgroups.procs(cg) == [4242]


def test_procs_of_missing_cgroup_is_empty(v1):
    assert cgroups.procs(cgroups.locate("netmgr", CID, v1)) == []


def test_remove_is_idempotent(v1):
    cg = cgroups.create("netmgr", CID, root=v1)
    cgroups.remove(cg)
    assert all(not os.path.exists(p) for p in cg.paths)
    assert os.path.isdir(os.path.join(v1, "memory", "netmgr"))  # the parent stays
    cgroups.remove(cg)


def test_remove_retries_transient_ebusy(v1, fake_rmdir):
    cg = cgroups.create("netmgr", CID, root=v1)
    fake_rmdir[cg.dir_for("memory")] = 3
    cgroups.remove(cg, timeout=5)
    assert not os.path.exists(cg.dir_for("memory"))


def test_remove_reports_every_failure_and_removes_the_rest(v1):
    cg = cgroups.create("netmgr", CID, root=v1)
    for controller in ("memory", "pids"):
        with open(os.path.join(cg.dir_for(controller), "cgroup.procs"), "w") as f:
            f.write("1\n")
    with pytest.raises(KernelError) as exc:
        cgroups.remove(cg, timeout=0.05)
    assert exc.value.errno == errno.EBUSY
    assert cg.dir_for("memory") in str(exc.value) and cg.dir_for("pids") in str(exc.value)
    assert not os.path.exists(cg.dir_for("cpu"))
    assert not os.path.exists(cg.dir_for("cpuacct"))


# ---------------------------------------------------------------- reading back

def test_read_limits_unlimited_values(v1, v2):
    cg1 = cgroups.create("netmgr", CID, root=v1)
    files = {"memory": ("memory.limit_in_bytes", "9223372036854771712"),
             "cpu": ("cpu.cfs_quota_us", "-1"), "pids": ("pids.max", "max")}
    for controller, (name, value) in files.items():
        with open(os.path.join(cg1.dir_for(controller), name), "w") as f:
            f.write(value + "\n")
    assert cgroups.read_limits(cg1) == cgroups.Limits()
    cg2 = cgroups.create("netmgr", CID, root=v2)
    for name, value in (("memory.max", "max"), ("cpu.max", "max 100000"), ("pids.max", "max")):
        with open(os.path.join(cg2.paths[0], name), "w") as f:
            f.write(value + "\n")
    assert cgroups.read_limits(cg2) == cgroups.Limits()


def test_stats_v1(v1):
    cg = cgroups.create("netmgr", CID, cgroups.Limits(memory=64 << 20, pids=10), root=v1)
    values = {("memory", "memory.usage_in_bytes"): "5000000",
              ("memory", "memory.stat"): "cache 10\ntotal_inactive_file 4096\n",
              ("cpuacct", "cpuacct.usage"): "123456789", ("pids", "pids.current"): "3"}
    for (controller, name), value in values.items():
        with open(os.path.join(cg.dir_for(controller), name), "w") as f:
            f.write(value)
    assert cgroups.stats(cg) == cgroups.CgroupStats(
        memory_usage=5000000, memory_cache=4096, memory_limit=64 << 20,
        cpu_usage_ns=123456789, pids_current=3, pids_limit=10)


def test_stats_v2(v2):
    cg = cgroups.create("netmgr", CID, root=v2)
    values = {"memory.current": "7000", "memory.stat": "anon 1\ninactive_file 100\n",
              "cpu.stat": "usage_usec 2500\nuser_usec 2000\n", "pids.current": "2",
              "memory.max": "max", "pids.max": "max"}
    for name, value in values.items():
        with open(os.path.join(cg.paths[0], name), "w") as f:
            f.write(value + "\n")
    assert cgroups.stats(cg) == cgroups.CgroupStats(
        memory_usage=7000, memory_cache=100, memory_limit=None, cpu_usage_ns=2_500_000,
        pids_current=2, pids_limit=None)


def test_stats_of_missing_controller_files_are_none(v1_comounted):
    cg = cgroups.create("netmgr", CID, root=v1_comounted)
    assert cgroups.stats(cg) == cgroups.CgroupStats()


# ---------------------------------------------------------------- joining another pid's cgroups

def _fake_proc(tmp_path, pid, text):
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(text)
    return str(proc)


def test_procs_files_of_pid_v1(v1, tmp_path):
    proc = _fake_proc(tmp_path, 7, (
        "9:name=systemd:/\n8:pids:/netmgr/x\n4:memory:/netmgr/x\n3:cpuset:/\n"
        "2:cpuacct:/netmgr/x\n1:cpu:/\n0::/\n"))
    assert cgroups.procs_files_of_pid(7, v1, proc=proc) == [
        os.path.join(v1, "pids/netmgr/x/cgroup.procs"),
        os.path.join(v1, "memory/netmgr/x/cgroup.procs"),
        os.path.join(v1, "cpuacct/netmgr/x/cgroup.procs")]


def test_procs_files_of_pid_v1_comounted(v1_comounted, tmp_path):
    proc = _fake_proc(tmp_path, 7, "2:cpu,cpuacct:/netmgr/x\n1:memory:/netmgr/x\n")
    assert cgroups.procs_files_of_pid(7, v1_comounted, proc=proc) == [
        os.path.join(v1_comounted, "cpu/netmgr/x/cgroup.procs"),
        os.path.join(v1_comounted, "memory/netmgr/x/cgroup.procs")]


def test_procs_files_of_pid_v2(v2, tmp_path):
    proc = _fake_proc(tmp_path, 7, "0::/netmgr/x\n")
    assert cgroups.procs_files_of_pid(7, v2, proc=proc) == [
        os.path.join(v2, "netmgr/x/cgroup.procs")]
    proc = _fake_proc(tmp_path / "other", 8, "0::/\n")
    assert cgroups.procs_files_of_pid(8, v2, proc=proc) == []
