"""``netmgr lab down``: remove everything a lab made, whatever state it is in.

Driven by the lab's record (written before each object was made), never by
asking the daemons: a lab whose ``up`` was SIGKILLed halfway, or whose
netmgrd died, comes down the same way. Steps, each one carrying on after a
failure and reporting it (teardown is idempotent; already gone is fine):

1. stop a ``lab up`` of this lab that still runs (SIGKILL);
2. SIGKILL the lab's processes: etcd members, netmgrd daemons and container
   shims (their command line names a path under the lab's directory) and
   every process inside one of the lab's network namespaces (containers,
   ``lab exec`` shells) — never the calling process or its ancestors;
3. remove the containers' cgroups;
4. detach every mount under the lab's directory (the daemons' sandbox
   namespaces) and remove the lab's namespaces from /run/netns (their
   links, bridges and addresses go with them: nothing was made outside);
5. check that nothing is left, then remove the lab's directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable

from netmgr.errors import NetmgrError
from netmgr.lab.state import LabRecord
from netmgr.labhost import remove_cgroups_of
from netmgr.runtime import mounts, netns

__all__ = ["down", "lab_processes", "leftovers", "namespace_ids", "remove"]

_NSFS_DEV = os.stat("/proc/self/ns/net").st_dev


def down(name: str, out: Callable[[str], None] = print) -> list[str]:
    """Remove lab ``name`` (its record must exist); returns the failures (empty: all gone)."""
    rec = LabRecord.open(name)
    _stop_tool(rec, out)
    rec.lock(wait=True)
    try:
        return remove(rec, out)
    finally:
        rec.unlock()


def remove(rec: LabRecord, out: Callable[[str], None] = print) -> list[str]:
    """Remove everything ``rec`` lists, then the lab's directory; returns the failures."""
    t0 = time.monotonic()
    if rec.data.get("namespaces") is not None:
        rec.set("status", "removing")
    ids: set[tuple[int, int]] = set()
    killed = _kill(rec, ids)
    # checked while the namespaces are still mounted: once freed, the kernel hands their
    # inode numbers to the next new namespace at once, which may be anybody's
    failures = [f"process {what} did not exit" for what in lab_processes(rec, ids).values()]
    for state_dir in rec.get("state_dirs", []):
        remove_cgroups_of(state_dir)
    failures += _unmount_and_remove_namespaces(rec)
    failures += leftovers(rec)
    if failures:
        rec.save()
        return failures
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(rec.dir)
    if os.path.exists(rec.dir):
        return [f"directory {rec.dir} could not be removed"]
    spaces = max(len(ids), len(rec.get("namespaces", [])))  # the lab's own and the daemons' sandboxes
    out(f"lab {rec.name} removed: {killed} processes, {spaces} network namespaces, its directory "
        f"({time.monotonic() - t0:.1f} s)")
    return failures


# -- processes ---------------------------------------------------------------------------------


def _stop_tool(rec: LabRecord, out: Callable[[str], None]) -> None:
    """SIGKILL a ``netmgr lab up`` of this lab that is still running (not ourselves)."""
    pid = rec.get("tool_pid")
    if not pid or pid == os.getpid() or not _alive(pid):
        return
    argv = _cmdline(pid)
    if "lab" in argv and "up" in argv:
        out(f"stopping netmgr lab up (pid {pid}) of lab {rec.name}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone([pid], 5.0)


def namespace_ids(rec: LabRecord) -> set[tuple[int, int]]:
    """(device, inode) of every live namespace of the lab: hosts, underlay, the daemons' sandboxes."""
    paths = list(rec.get("namespaces", []))
    for host in rec.get("hosts", {}).values():
        sandboxes = os.path.join(host["run_dir"], "netns")
        with contextlib.suppress(OSError):
            paths += [os.path.join(sandboxes, n) for n in os.listdir(sandboxes)]
    ids = set()
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if st.st_dev == _NSFS_DEV:  # a bind-mounted namespace, not a bare file
                ids.add((st.st_dev, st.st_ino))
    return ids


def lab_processes(rec: LabRecord, ns_ids: set[tuple[int, int]]) -> dict[int, str]:
    """pid → what it is, for every process of the lab (never us or our ancestors)."""
    marker = rec.dir.rstrip("/") + "/"
    spare = _ancestors()
    found: dict[int, str] = {}
    for pid in _pids():
        if pid in spare:
            continue
        argv = _cmdline(pid)
        if not argv:
            continue  # kernel thread, or gone
        role = _role(argv) if any(marker in a for a in argv) else None
        if role:
            found[pid] = f"{role} (pid {pid})"
            continue
        if _net_ns(pid) in ns_ids:
            found[pid] = f"{os.path.basename(argv[0])} (pid {pid}) in a namespace of the lab"
    return found


def _role(argv: list[str]) -> str | None:
    """What a process whose command line names a lab path is: netmgrd, a container shim, etcd."""
    joined = " ".join(argv)
    if "netmgr.daemon.main" in joined:
        return "netmgrd"
    if "shim.main" in joined or "netmgr.runtime.shim" in joined:
        return "container shim"
    if os.path.basename(argv[0]) == "etcd":
        return "etcd"
    return None


def _kill(rec: LabRecord, ids: set[tuple[int, int]]) -> int:
    """SIGKILL every process of the lab; how many there were.

    Scans again until a scan finds nothing: a daemon or shim killed in the middle
    of starting a container may have forked a child (or made a sandbox) after the
    previous scan. ``ids`` collects every namespace seen, for :func:`leftovers`.
    """
    killed: dict[int, str] = {}
    for _round in range(10):
        ids |= namespace_ids(rec)
        procs = {p: what for p, what in lab_processes(rec, ids).items() if p not in killed}
        if not procs:
            break
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.update(procs)
        _wait_gone(list(procs), 10.0)
    return len(killed)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        if left:
            time.sleep(0.02)
    return left


def _alive(pid: int) -> bool:
    """True for a running process; a zombie child is reaped and counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _net_ns(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids | {1}


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


# -- mounts and namespaces ----------------------------------------------------------------------


def _unmount_and_remove_namespaces(rec: LabRecord) -> list[str]:
    failures = [f"unmount under {rec.dir}: {f}" for f in mounts.unmount_below(rec.dir)]
    for path in rec.get("namespaces", []):
        try:
            netns.remove(path)
        except (OSError, NetmgrError) as exc:  # keep going: report every namespace that stays
            failures.append(f"namespace {path}: {exc}")
    return failures


def leftovers(rec: LabRecord) -> list[str]:
    """What of the lab still exists (namespaces, mounts, processes); empty when all is gone.

    Processes count when their command line names the lab's directory, or when they
    run in a namespace of the lab that is still mounted (a freed namespace's inode
    number is soon reused, so it says nothing).
    """
    left = [f"namespace {p} still exists" for p in rec.get("namespaces", []) if os.path.exists(p)]
    watched = set(rec.get("namespaces", []))
    prefix = rec.dir.rstrip("/") + "/"
    left += [f"mount {m} still exists" for m in mounts.mount_points()
             if m in watched or m.startswith(prefix) or m == rec.dir]
    left += [f"process {what} still runs" for what in lab_processes(rec, namespace_ids(rec)).values()]
    return left
