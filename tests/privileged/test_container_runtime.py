"""Container process runtime against the real kernel (root only).

Each test gets its own netns (``nmt-rt-*``), cgroup parent (``nmt-rt-*``) and
state dirs under tmp_path. Finalizers stop and clean every container, kill
anything still in the test's netns or cgroups, remove the cgroup parent and
the netns, and then fail the test if anything had leaked.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest
from netmgr.runtime import cgroups
from netmgr.runtime import container as ctr

from netmgr.errors import Conflict, InvalidConfig

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("nsenter") is None,
                       reason="needs ip and nsenter"),
]

BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "cat", "hostname", "echo", "ls", "sleep", "test", "readlink")


def _rand() -> str:
    return secrets.token_hex(4)


def _pids_in_netns(inode: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (leftover shims)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _host_mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return [line for line in f if text in line]


@pytest.fixture
def netns():
    """A fresh named netns; removed even on failure, with a leak check."""
    name = f"nmt-rt-{_rand()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    path = f"/run/netns/{name}"
    inode = os.stat(path).st_ino
    yield path
    leaked = _pids_in_netns(inode)
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], check=True)
    assert not leaked, f"processes left in {name}: {leaked}"


@pytest.fixture
def cgroup_parent():
    """A unique cgroup parent; every hierarchy's dir is removed afterwards."""
    parent = f"nmt-rt-{_rand()}"
    yield parent
    leaked = []
    probe = cgroups.locate(parent, "probe")
    for directory in {os.path.dirname(p) for p in probe.paths}:
        if not os.path.isdir(directory):
            continue
        for child in os.listdir(directory):
            path = os.path.join(directory, child)
            if os.path.isdir(path):
                leaked.append(path)
                cg = cgroups.Cgroup(probe.version, (("x", path),))
                for pid in cgroups.procs(cg):
                    os.kill(pid, signal.SIGKILL)
                cgroups.remove(cg, timeout=5)
        os.rmdir(directory)
    assert not leaked, f"cgroups left: {leaked}"


@pytest.fixture
def run(tmp_path, netns, cgroup_parent):
    """Factory: ``run(argv, **spec_fields) -> (spec, info)``; cleans up after the test."""
    started: list[ctr.ContainerSpec] = []

    def start(argv, **fields):
        state_dir = tmp_path / f"nmt-ctr-{len(started)}-{_rand()}"
        state_dir.mkdir()
        values = {"id": secrets.token_hex(32), "argv": tuple(argv), "state_dir": str(state_dir),
                  "netns_path": netns, "hostname": "nmt-host", "cgroup_parent": cgroup_parent}
        values.update(fields)
        spec = ctr.ContainerSpec(**values)
        started.append(spec)
        return spec, ctr.start(spec)

    start.specs = started
    yield start
    for spec in started:
        pid = ctr._read_int(os.path.join(spec.state_dir, "pid"))
        if pid is not None:
            ctr.stop(spec.state_dir, pid, timeout=0.2)
        ctr.cleanup(spec, remove_layer=True)
    shims = _pids_mentioning(str(tmp_path))
    for pid in shims:
        os.kill(pid, signal.SIGKILL)
    mounts = _host_mounts_mentioning(str(tmp_path))
    assert not shims, f"shim processes left: {shims}"
    assert not mounts, f"mounts left on the host: {mounts}"


@pytest.fixture
def etc_files(tmp_path):
    """hosts, resolv.conf and hostname files as the daemon would write them."""
    files = {"hosts": "127.0.0.1\tlocalhost\n10.9.0.2\tnmt-host\n",
             "resolv.conf": "nameserver 127.0.0.11\noptions ndots:0\n",
             "hostname": "nmt-host\n"}
    for name, text in files.items():
        (tmp_path / f"nmt-{name}").write_text(text)
    return {name: str(tmp_path / f"nmt-{name}") for name in files}, files


@pytest.fixture
def rootfs(tmp_path):
    """A tiny root file system: static busybox and a few applet links."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs a static busybox at /bin/busybox")
    lower = tmp_path / "nmt-lower"
    (lower / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, lower / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (lower / "bin" / applet).symlink_to("busybox")
    (lower / "etc").mkdir()
    (lower / "etc" / "hosts").write_text("# lower hosts\n")
    return lower


def _wait_done(spec, timeout=10.0):
    code = ctr.wait(spec.state_dir, timeout)
    assert code is not None, "container did not exit"
    return code, ctr.read_logs(spec.state_dir).decode()


def _wait_log(spec, needle, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = ctr.read_logs(spec.state_dir).decode()
        if needle in text:
            return text
        time.sleep(0.01)
    raise AssertionError(f"{needle!r} not in log: {ctr.read_logs(spec.state_dir)!r}")


def _host_ns(kind):
    return os.readlink(f"/proc/self/ns/{kind}")


# ---------------------------------------------------------------- identity

def test_hostname_pid1_and_etc_files(run, etc_files):
    paths, contents = etc_files
    host_name = os.uname().nodename
    spec, info = run(
        ["sh", "-c", "hostname; echo pid=$$; cat /etc/hosts /etc/resolv.conf /etc/hostname"],
        hosts_file=paths["hosts"], resolv_file=paths["resolv.conf"],
        hostname_file=paths["hostname"])
    assert info.pid > 1 and info.shim_pid > 1
    code, out = _wait_done(spec)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "nmt-host"
    assert lines[1] == "pid=1"
    assert "\n".join(lines[2:]) + "\n" == (
        contents["hosts"] + contents["resolv.conf"] + contents["hostname"])
    assert os.uname().nodename == host_name


def test_namespaces(run, netns):
    script = ("readlink /proc/self/ns/net /proc/self/ns/uts /proc/self/ns/ipc "
              "/proc/self/ns/mnt /proc/self/ns/pid; sleep 1000")
    spec, info = run(["sh", "-c", script])
    out = _wait_log(spec, "pid:[")
    net, uts, ipc, mnt, pid = out.split()
    assert net == f"net:[{os.stat(netns).st_ino}]"
    assert net != _host_ns("net")
    for kind, value in (("uts", uts), ("ipc", ipc), ("mnt", mnt), ("pid", pid)):
        assert value != _host_ns(kind), kind
    # from the host, the container's PID 1 is in the same namespaces
    assert os.readlink(f"/proc/{info.pid}/ns/uts") == uts
    # container mounts exist only in the container's mount namespace
    assert not _host_mounts_mentioning(spec.state_dir)
    with open(f"/proc/{info.pid}/mountinfo") as f:
        assert any(" /proc " in line for line in f)
    assert ctr.is_running(spec.state_dir, info.pid)


def test_host_network_namespace(run):
    spec, _ = run(["readlink", "/proc/self/ns/net"], netns_path=None)
    code, out = _wait_done(spec)
    assert code == 0 and out.strip() == _host_ns("net")


# ---------------------------------------------------------------- lifecycle

def test_exit_code_propagates(run):
    spec, info = run(["sh", "-c", "exit 3"])
    assert ctr.wait(spec.state_dir, 10) == 3
    assert ctr.exit_code(spec.state_dir) == 3
    assert not ctr.is_running(spec.state_dir, info.pid)


def test_unknown_command(run, cgroup_parent):
    with pytest.raises(InvalidConfig) as exc:
        run(["nmt-nosuchcmd"])
    assert str(exc.value) == 'exec: "nmt-nosuchcmd": executable file not found in $PATH'
    spec = run.specs[-1]
    assert ctr.exit_code(spec.state_dir) == 127  # Docker's code for "not found"
    # a failed start already removed its cgroup
    for path in cgroups.locate(cgroup_parent, spec.id).paths:
        assert not os.path.exists(path)
    with pytest.raises(InvalidConfig, match=r'exec: "/nmt/none": stat /nmt/none: no such file'):
        run(["/nmt/none"])


def test_stop_escalates_to_sigkill(run):
    spec, info = run(["sleep", "1000"])
    assert ctr.is_running(spec.state_dir, info.pid)
    began = time.monotonic()
    ctr.stop(spec.state_dir, info.pid, timeout=0.5)
    elapsed = time.monotonic() - began
    # sleep as PID 1 has no SIGTERM handler, so only SIGKILL ends it
    assert 0.5 <= elapsed < 5
    assert ctr.exit_code(spec.state_dir) == 128 + signal.SIGKILL
    assert not ctr.is_running(spec.state_dir, info.pid)
    assert not os.path.exists(f"/proc/{info.pid}")
    assert cgroups.procs(cgroups.locate(spec.cgroup_parent, spec.id)) == []
    ctr.stop(spec.state_dir, info.pid, timeout=0.5)  # idempotent


def test_stop_graceful_with_handler(run):
    spec, info = run(["sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"])
    _wait_log(spec, "ready")
    began = time.monotonic()
    ctr.stop(spec.state_dir, info.pid, timeout=5)
    assert time.monotonic() - began < 2
    assert ctr.exit_code(spec.state_dir) == 7


def test_kill_and_not_running(run):
    spec, info = run(["sleep", "1000"])
    ctr.kill(spec.state_dir, info.pid, signal.SIGKILL)
    assert ctr.wait(spec.state_dir, 5) == 137
    with pytest.raises(Conflict, match="is not running"):
        ctr.kill(spec.state_dir, info.pid, signal.SIGTERM)


def test_foreign_pid_is_never_signalled(run):
    """A pid the state dir does not vouch for (reused pid, wrong caller) is left alone."""
    spec, _ = run(["true"])
    assert ctr.wait(spec.state_dir, 10) == 0
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert not ctr.is_running(spec.state_dir, other.pid)
        ctr.stop(spec.state_dir, other.pid, timeout=0.1)
        with pytest.raises(Conflict):
            ctr.kill(spec.state_dir, other.pid, signal.SIGKILL)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_liveness_cache_agrees_with_the_full_check(run):
    """Liveness answers like is_running: alive, then dead after a kill, with one pidfd held meanwhile."""
    live = ctr.Liveness()
    try:
        spec, info = run(["sleep", "1000"])
        assert live.is_running(spec.state_dir, info.pid)
        assert spec.state_dir in live._fds  # a pidfd is held now: later checks are one poll
        assert live.is_running(spec.state_dir, info.pid)
        ctr.kill(spec.state_dir, info.pid, signal.SIGKILL)
        ctr.wait(spec.state_dir, 5)
        assert not live.is_running(spec.state_dir, info.pid)
        assert spec.state_dir not in live._fds  # closed once it exited
    finally:
        live.close()


def test_liveness_cache_never_vouches_for_a_foreign_pid(run):
    """A pid the state dir does not vouch for is not running, and no pidfd stays open for it."""
    spec, _ = run(["true"])
    assert ctr.wait(spec.state_dir, 10) == 0
    other = subprocess.Popen(["sleep", "30"])
    live = ctr.Liveness()
    try:
        assert not live.is_running(spec.state_dir, other.pid)
        assert live._fds == {}
    finally:
        live.close()
        other.kill()
        other.wait()


def test_liveness_cache_follows_a_new_pid_1(run):
    """Asked about another pid (a restart gave the container a new PID 1), the held pidfd is not trusted."""
    live = ctr.Liveness()
    other = subprocess.Popen(["sleep", "30"])
    try:
        spec, first = run(["sleep", "1000"])
        assert live.is_running(spec.state_dir, first.pid)
        # the state dir vouches for first.pid only: the full check decides, and says no
        assert not live.is_running(spec.state_dir, other.pid)
        assert spec.state_dir not in live._fds
        assert live.is_running(spec.state_dir, first.pid)
    finally:
        live.close()
        other.kill()
        other.wait()


def test_wait_timeout_returns_none(run):
    spec, _ = run(["sleep", "1000"])
    assert ctr.wait(spec.state_dir, 0.1) is None
    assert ctr.exit_code(spec.state_dir) is None


def test_logs_and_restart(run):
    spec, _ = run(["sh", "-c", "echo out; echo err >&2"])
    code, out = _wait_done(spec)
    assert code == 0
    assert out == "out\nerr\n"
    ctr.cleanup(spec)
    info = ctr.start(spec)  # docker start: same state dir, log appended
    assert ctr.wait(spec.state_dir, 10) == 0
    assert ctr.read_logs(spec.state_dir) == b"out\nerr\nout\nerr\n"
    assert info.pid > 1


def test_start_refuses_running_container(run):
    spec, _ = run(["sleep", "1000"])
    with pytest.raises(Conflict, match="already running"):
        ctr.start(spec)


def test_cleanup_refuses_running_then_is_idempotent(run):
    spec, info = run(["sleep", "1000"])
    with pytest.raises(Conflict, match="still running"):
        ctr.cleanup(spec.state_dir)
    ctr.stop(spec.state_dir, info.pid, timeout=0)
    ctr.cleanup(spec.state_dir)
    ctr.cleanup(spec.state_dir)
    for path in cgroups.locate(spec.cgroup_parent, spec.id).paths:
        assert not os.path.exists(path)


def test_container_outlives_the_process_that_started_it(run, tmp_path):
    """A daemon restart must not take its containers down."""
    spec, _ = run(["true"])  # registers cleanup; reuse its settings below
    assert ctr.wait(spec.state_dir, 10) == 0
    ctr.cleanup(spec)
    code = ("import sys; from netmgr.runtime import container as c; "
            "spec = c.ContainerSpec.from_dict(__import__('json').loads(sys.argv[1])); "
            "print(c.start(spec).pid)")
    data = ctr._load_state(spec.state_dir)[0]
    fields = {k: getattr(data, k) for k in ("id", "state_dir", "netns_path", "hostname",
                                              "cgroup_parent")}
    fields["argv"] = ["sleep", "1000"]
    res = subprocess.run([sys.executable, "-c", code, json.dumps(fields)],
                         capture_output=True, text=True, timeout=30, check=True)
    pid = int(res.stdout)
    assert ctr.is_running(spec.state_dir, pid)
    ctr.stop(spec.state_dir, pid, timeout=0.2)
    assert ctr.exit_code(spec.state_dir) == 137


# ---------------------------------------------------------------- exec

def test_exec_argv(run):
    spec, info = run(["sleep", "1000"], env=(("NMT_A", "1"),), hostname="nmt-exec")
    script = "hostname; echo $$; echo $NMT_A $NMT_B; cat /proc/self/cgroup; pwd"
    argv = ctr.exec_argv(info.pid, ["sh", "-c", script], env=[("NMT_B", "2")], workdir="/tmp")
    res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "nmt-exec"
    assert int(lines[1]) > 1          # pid inside the container's pid ns
    assert lines[2] == "1 2"
    assert any(line.endswith(f"/{spec.cgroup_parent}/{spec.id}") for line in lines[3:])
    assert lines[-1] == "/tmp"
    res = subprocess.run(ctr.exec_argv(info.pid, ["sh", "-c", "exit 5"]), timeout=10,
                         check=False)
    assert res.returncode == 5


# ---------------------------------------------------------------- cgroups

def test_limits_applied(run):
    spec, info = run(["sleep", "1000"], memory=64 << 20, pids_limit=32, cpus=0.5)
    cg = cgroups.locate(spec.cgroup_parent, spec.id)
    if cg.version == 1:
        def read(controller, name):
            with open(os.path.join(cg.dir_for(controller), name)) as f:
                return f.read().strip()
        assert read("memory", "memory.limit_in_bytes") == str(64 << 20)
        assert read("pids", "pids.max") == "32"
        assert read("cpu", "cpu.cfs_quota_us") == "50000"
        assert read("cpu", "cpu.cfs_period_us") == "100000"
    assert cgroups.read_limits(cg) == cgroups.Limits(memory=64 << 20, cpus=0.5, pids=32)
    assert info.pid in cgroups.procs(cg)
    usage = ctr.stats(spec.state_dir)
    assert usage.memory_usage and usage.memory_usage > 0
    assert usage.pids_current == 1 and usage.pids_limit == 32
    assert usage.cpu_usage_ns is not None


def test_pids_limit_enforced(run):
    spec, _ = run(["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 5 & done; echo spawned"],
                  pids_limit=3)
    code, out = _wait_done(spec, timeout=20)
    # dash gives up at the first failed fork: "sh: 0: Cannot fork"
    assert code != 0 and "spawned" not in out
    assert "fork" in out.lower(), out


# ---------------------------------------------------------------- file systems

def test_rootfs_overlay_copy_on_write(run, rootfs, etc_files):
    paths, contents = etc_files
    script = ("echo data > /nmt-new; echo more >> /etc/hosts; cat /etc/hosts; hostname; "
              "ls /; test -e /usr/bin/python3 || echo isolated")
    spec, _ = run(["sh", "-c", script],
                  rootfs=str(rootfs), hosts_file=paths["hosts"])
    code, out = _wait_done(spec)
    assert code == 0, out
    assert contents["hosts"] + "more\n" in out
    assert "nmt-host" in out and "isolated" in out
    upper = os.path.join(spec.state_dir, "upper")
    with open(os.path.join(upper, "nmt-new")) as f:
        assert f.read() == "data\n"
    assert not (rootfs / "nmt-new").exists()
    assert (rootfs / "etc" / "hosts").read_text() == "# lower hosts\n"
    # the container appended to the bound daemon file, not to the lower layer
    with open(paths["hosts"]) as f:
        assert f.read() == contents["hosts"] + "more\n"


def test_exec_into_rootfs_container(run, rootfs):
    spec, info = run(["sleep", "1000"], rootfs=str(rootfs))
    argv = ctr.exec_argv(info.pid, ["sh", "-c", "echo x > /nmt-exec; ls /bin/busybox; hostname"])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["/bin/busybox", "nmt-host"]
    assert os.path.exists(os.path.join(spec.state_dir, "upper", "nmt-exec"))


def test_rootfs_command_resolved_in_container_root(run, rootfs):
    assert shutil.which("python3")
    with pytest.raises(InvalidConfig, match='exec: "python3": executable file not found'):
        run(["python3", "-c", "pass"], rootfs=str(rootfs))


def test_rootfs_symlink_cannot_escape(run, rootfs, etc_files, tmp_path):
    paths, contents = etc_files
    victim = tmp_path / "nmt-victim"
    victim.write_text("host file\n")
    (rootfs / "etc" / "hosts").unlink()
    (rootfs / "etc" / "hosts").symlink_to(f"/../../../..{victim}")
    spec, _ = run(["cat", "/etc/hosts"], rootfs=str(rootfs), hosts_file=paths["hosts"])
    code, out = _wait_done(spec)
    assert code == 0 and out == contents["hosts"]
    assert victim.read_text() == "host file\n"


def test_volumes_rw_and_ro(run, rootfs, tmp_path):
    rw, ro = tmp_path / "nmt-vol-rw", tmp_path / "nmt-vol-ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "seed").write_text("seed\n")
    script = ("echo hello > /data/rw/file; cat /data/ro/seed; "
              "echo x > /data/ro/file || echo ro-refused")
    spec, _ = run(["sh", "-c", script], rootfs=str(rootfs),
                  volumes=((str(rw), "/data/rw", False), (str(ro), "/data/ro", True)))
    code, out = _wait_done(spec)
    assert code == 0, out
    assert (rw / "file").read_text() == "hello\n"
    assert "seed" in out and "ro-refused" in out
    assert not (ro / "file").exists()
    assert "Read-only file system" in out


def test_volume_without_rootfs(run, tmp_path):
    src, dst = tmp_path / "nmt-src", tmp_path / "nmt-dst"
    src.mkdir()
    dst.mkdir()
    (src / "f").write_text("from volume\n")
    spec, _ = run(["cat", f"{dst}/f"], volumes=((str(src), str(dst), True),))
    code, out = _wait_done(spec)
    assert code == 0 and out == "from volume\n"
    assert not (dst / "f").exists()  # the bind lived only in the container
    with pytest.raises(InvalidConfig, match="volume target"):
        run(["true"], volumes=((str(src), "/nmt-missing-target", False),))


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("fields, message", [
    ({"id": "abc"}, "invalid container id"),
    ({"argv": ()}, "no command specified"),
    ({"workdir": "rel"}, "needs to be an absolute path"),
    ({"memory": 1024}, "Minimum memory limit allowed is 6MB"),
    ({"cpus": 1000.0}, "Range of CPUs"),
    ({"volumes": (("/nmt-no-such-src", "/x", False),)}, "bind source path does not exist"),
    ({"netns_path": "/run/netns/nmt-no-such"}, "no such file or directory"),
])
def test_invalid_specs(run, fields, message):
    fields = dict(fields)
    argv = fields.pop("argv", ("true",))
    with pytest.raises(InvalidConfig, match=message):
        run(argv, **fields)
