"""A full state disk and a read-only state dir, on a real tmpfs under a live netmgrd.

Each failing operation prints one line that names the fault, changes nothing
(store, links, nftables, sandboxes, shims), and the same operation succeeds
once space returns or the dir is writable again, with no daemon restart.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile

import pytest

from netmgr.labhost import SimHost
from tests.conftest import unique
from tests.privileged.test_cli import state


@contextlib.contextmanager
def _sim_host_on(mount_fs):
    base = tempfile.mkdtemp(prefix="nmt-sd-")
    host = SimHost(unique(), base)
    os.makedirs(host.state_dir)
    undo_mount = mount_fs(base, host.state_dir)
    try:
        host.up()
        yield host
    finally:
        host.down()
        subprocess.run(["umount", "-l", host.state_dir], capture_output=True)
        undo_mount()
        shutil.rmtree(base, ignore_errors=True)


def _tmpfs(base: str, target: str):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "nmt-state", target], check=True)
    return lambda: None


def _ext4(base: str, target: str):
    """An ext4 image on a loop device, mounted errors=remount-ro (so an error turns it read-only at once)."""
    image = os.path.join(base, "state.img")
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", image], capture_output=True, text=True,
                         check=True).stdout.strip()
    subprocess.run(["mount", "-o", "errors=remount-ro", dev, target], check=True)
    return lambda: subprocess.run(["losetup", "-d", dev], capture_output=True)


@pytest.fixture
def small_disk_host():
    """A simulated host whose state dir is a 8 MiB tmpfs."""
    with _sim_host_on(_tmpfs) as host:
        yield host


@pytest.fixture
def ext4_host():
    """A simulated host whose state dir is a small ext4 file system on a loop device."""
    with _sim_host_on(_ext4) as host:
        yield host


def fill(directory: str) -> str:
    """Write a file until the file system is full; return its path."""
    path = os.path.join(directory, "nmt-filler")
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    # and the last few pages
    with contextlib.suppress(OSError), open(path, "ab", buffering=0) as f:
        while True:
            f.write(b"\0" * 512)
    return path


def one_line(h, result, words: str) -> None:
    assert result.rc != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert words in lines[0], (result.err, h.daemon_log()[-3000:])
    assert "internal error" not in lines[0].lower() and "Traceback" not in result.err


FAILING = [
    (("network", "create", "--subnet", "10.83.0.0/24", "nmt-fd-new"), 1),
    (("run", "-d", "--name", "nmt-fd-c2", "--network", "nmt-fd-net", "sleep", "600"), 125),
    (("network", "connect", "nmt-fd-net2", "nmt-fd-c1"), 1),
    (("network", "rm", "nmt-fd-net3"), 1),
    (("rm", "-f", "nmt-fd-c3"), 1),
]


def _world(h) -> None:
    assert h.cli("network", "create", "--subnet", "10.84.0.0/24", "nmt-fd-net").rc == 0
    assert h.cli("network", "create", "--subnet", "10.85.0.0/24", "nmt-fd-net2").rc == 0
    assert h.cli("network", "create", "--subnet", "10.86.0.0/24", "nmt-fd-net3").rc == 0
    for name in ("nmt-fd-c1", "nmt-fd-c3"):
        assert h.cli("run", "-d", "--name", name, "--network", "nmt-fd-net", "sleep", "600").rc == 0


def _recovers(h) -> None:
    for argv, _ in FAILING:
        r = h.cli(*argv)
        assert r.rc == 0, (argv, r)
    assert h.cli("exec", "nmt-fd-c2", "true").rc == 0
    assert "nmt-fd-new" in h.cli("network", "ls").out


def test_full_state_disk_fails_cleanly_and_recovers(small_disk_host):
    h = small_disk_host
    _world(h)
    filler = fill(h.state_dir)
    try:
        before = state(h)
        for argv, code in FAILING:
            r = h.cli(*argv)
            one_line(h, r, "no space left on device")
            assert r.rc == code, (argv, r)
            assert state(h) == before, argv
        # reads still work on a full disk
        assert h.cli("network", "ls").rc == 0
        assert h.cli("inspect", "nmt-fd-c1").rc == 0
    finally:
        os.unlink(filler)
    _recovers(h)


def test_state_dir_turned_read_only_by_a_disk_error_fails_cleanly(ext4_host):
    """The kernel remounts a file system read-only on an I/O error (errors=remount-ro): every write fails
    with one line and nothing changes; reads are still served. (Such a file system is writable again only
    after fsck and a new mount, so a daemon restart is part of that recovery.)"""
    h = ext4_host
    _world(h)
    before = state(h)
    dev = os.path.basename(os.path.realpath(subprocess.run(["findmnt", "-no", "SOURCE", h.state_dir],
                                                           capture_output=True, text=True).stdout.strip()))
    with open(f"/sys/fs/ext4/{dev}/trigger_fs_error", "w") as f:
        f.write("1")
    assert "emergency_ro" in subprocess.run(["findmnt", "-no", "OPTIONS", h.state_dir], capture_output=True,
                                            text=True).stdout
    for argv, code in FAILING:
        r = h.cli(*argv)
        one_line(h, r, "read-only file system")
        assert r.rc == code, (argv, r)
    assert "nmt-fd-net3" in h.cli("network", "ls").out
    assert h.cli("ps").rc == 0
    after = state(h)
    assert after == before


def test_daemon_started_on_a_read_only_state_dir_serves_reads_and_says_why_writes_fail(small_disk_host):
    h = small_disk_host
    _world(h)
    assert h.cli("rm", "-f", "nmt-fd-c1", "nmt-fd-c3").rc == 0  # a running container keeps its log open
    h.stop_daemon()
    subprocess.run(["mount", "-o", "remount,ro", h.state_dir], check=True)
    try:
        h.start_daemon()
        assert "nmt-fd-net" in h.cli("network", "ls").out
        before = state(h)
        for argv in (("network", "create", "nmt-fd-ro"), ("run", "--network", "nmt-fd-net", "true"),
                     ("network", "rm", "nmt-fd-net3")):
            one_line(h, h.cli(*argv), "read-only file system")
        assert state(h) == before
    finally:
        subprocess.run(["mount", "-o", "remount,rw", h.state_dir], check=True)
    assert h.cli("network", "create", "nmt-fd-ro").rc == 0
    assert h.cli("run", "--rm", "--network", "nmt-fd-net", "true").rc == 0
