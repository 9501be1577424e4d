"""Container cgroups: limits (memory, cpu, pids) and accounting, v1 and v2.

Layout, as Docker's cgroupfs driver: ``<root>/<parent>/<id>`` in each v1
hierarchy netmgr uses (memory, cpu, cpuacct, pids; co-mounted hierarchies
such as ``cpu,cpuacct`` are handled once), or once in the v2 unified tree.

The root is ``/sys/fs/cgroup`` unless given as an argument or by
``$NETMGR_CGROUP_ROOT``, so unit tests can run against a fake tree. The version
is detected from the root: v2 when ``<root>/cgroup.controllers`` exists, v1
otherwise (hybrid hosts with a ``unified`` v2 mount for systemd count as v1).

Limit files written:

========  ==========================================  ==================
limit     v1                                          v2
========  ==========================================  ==================
memory    memory.limit_in_bytes                       memory.max
cpus      cpu.cfs_period_us + cpu.cfs_quota_us         cpu.max "Q P"
pids      pids.max                                    pids.max
========  ==========================================  ==================

Swap is left unlimited (Docker's default doubles the memory limit for swap).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass

from netmgr.errors import Conflict, InvalidConfig, KernelError

__all__ = [
    "CPU_PERIOD_US",
    "DEFAULT_ROOT",
    "ROOT_ENV",
    "Cgroup",
    "CgroupStats",
    "Limits",
    "add_process",
    "cgroup_root",
    "create",
    "detect_version",
    "locate",
    "procs",
    "procs_files_of_pid",
    "read_limits",
    "remove",
    "stats",
]

DEFAULT_ROOT = "/sys/fs/cgroup"
ROOT_ENV = "NETMGR_CGROUP_ROOT"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("cpu", "memory", "pids")
CPU_PERIOD_US = 100_000
# v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes, just under 2**63.
_V1_UNLIMITED = 1 << 62
_LIMIT_CONTROLLER = {"memory": "memory", "cpus": "cpu", "pids": "pids"}


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container; None means unlimited."""

    memory: int | None = None   # bytes
    cpus: float | None = None   # CPUs, e.g. 0.5
    pids: int | None = None


@dataclass(frozen=True)
class Cgroup:
    """Where one container's cgroup lives: ``dirs`` maps controller → directory.

    In v2 every controller maps to the same directory; in v1 co-mounted
    controllers share one. ``paths`` lists each distinct directory once.
    """

    version: int
    dirs: tuple[tuple[str, str], ...]

    @property
    def paths(self) -> tuple[str, ...]:
        """Distinct cgroup directories, in creation order."""
        return tuple(dict.fromkeys(d for _, d in self.dirs))

    def dir_for(self, controller: str) -> str | None:
        """Directory of ``controller``, or None when that controller is not available."""
        return dict(self.dirs).get(controller)

    def procs_files(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a process writes itself into to join."""
        return tuple(os.path.join(p, "cgroup.procs") for p in self.paths)

    def to_dict(self) -> dict:
        """JSON-friendly form, inverse of :meth:`from_dict`."""
        return {"version": self.version, "dirs": [list(d) for d in self.dirs]}

    @classmethod
    def from_dict(cls, data: dict) -> Cgroup:
        """Rebuild a Cgroup saved with :meth:`to_dict`."""
        return cls(int(data["version"]), tuple((c, d) for c, d in data["dirs"]))


@dataclass(frozen=True)
class CgroupStats:
    """Accounting for ``netmgr stats``; None where the controller is missing."""

    memory_usage: int | None = None       # bytes, page cache included
    memory_cache: int | None = None       # inactive file pages (Docker subtracts them)
    memory_limit: int | None = None
    cpu_usage_ns: int | None = None
    pids_current: int | None = None
    pids_limit: int | None = None


def cgroup_root(root: str | None = None) -> str:
    """The cgroup mount root: ``root``, else ``$NETMGR_CGROUP_ROOT``, else /sys/fs/cgroup."""
    return root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT


def detect_version(root: str | None = None) -> int:
    """2 for a unified hierarchy at ``root``, 1 for per-controller hierarchies."""
    base = cgroup_root(root)
    if os.path.exists(os.path.join(base, "cgroup.controllers")):
        return 2
    if any(os.path.isdir(os.path.join(base, c)) for c in V1_CONTROLLERS):
        return 1
    raise KernelError(f"no cgroup hierarchy found under {base}", errno.ENOENT)


def _check_parent(parent: str) -> None:
    parts = parent.split("/")
    if not parent or parent.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidConfig(f"invalid cgroup parent {parent!r}: want a relative path "
                            "like 'netmgr' without '..'")


def locate(parent: str, cid: str, root: str | None = None) -> Cgroup:
    """Compute the cgroup of container ``cid`` under ``parent`` without touching it."""
    _check_parent(parent)
    if not cid or "/" in cid or cid in (".", ".."):
        raise InvalidConfig(f"invalid container id {cid!r}")
    base = cgroup_root(root)
    if detect_version(base) == 2:
        path = os.path.join(base, parent, cid)
        return Cgroup(2, tuple((c, path) for c in V2_CONTROLLERS))
    dirs = []
    seen: dict[str, str] = {}
    for controller in V1_CONTROLLERS:
        hierarchy = os.path.join(base, controller)
        if not os.path.isdir(hierarchy):
            continue
        # cpu and cpuacct are often one hierarchy reached through two symlinks
        real = os.path.realpath(hierarchy)
        path = seen.setdefault(real, os.path.join(hierarchy, parent, cid))
        dirs.append((controller, path))
    return Cgroup(1, tuple(dirs))


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise KernelError(f"write {value!r} to {path}: {exc.strerror}", exc.errno) from exc


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _available_v2(directory: str) -> set[str]:
    text = _read(os.path.join(directory, "cgroup.controllers"))
    return set(text.split()) if text else set()


def _check_limits(cg: Cgroup, limits: Limits, root: str) -> None:
    available = _available_v2(root) if cg.version == 2 else {c for c, _ in cg.dirs}
    for field, controller in _LIMIT_CONTROLLER.items():
        if getattr(limits, field) is not None and controller not in available:
            raise InvalidConfig(f"{field} limit requested but the {controller} cgroup "
                                f"controller is not available under {root}")


def _delegate_v2(directory: str) -> None:
    wanted = _available_v2(directory) & set(V2_CONTROLLERS)
    if wanted:
        # Children only get the controllers their parent delegates.
        _write(os.path.join(directory, "cgroup.subtree_control"),
               " ".join(f"+{c}" for c in sorted(wanted)))


def _enable_v2_controllers(root: str, parent: str) -> None:
    level = root
    _delegate_v2(level)
    for part in parent.split("/"):
        level = os.path.join(level, part)
        os.makedirs(level, exist_ok=True)
        _delegate_v2(level)


def _make_dir(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    # A stale cgroup from an earlier run: reuse is wrong if it still has tasks.
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise Conflict(f"cgroup {path} already exists and is in use") from exc
        raise KernelError(f"remove stale cgroup {path}: {exc.strerror}", exc.errno) from exc
    os.mkdir(path)


def _write_limits(cg: Cgroup, limits: Limits) -> None:
    v1 = cg.version == 1
    if limits.memory is not None:
        name = "memory.limit_in_bytes" if v1 else "memory.max"
        _write(os.path.join(cg.dir_for("memory"), name), str(limits.memory))
    if limits.cpus is not None:
        quota = max(1000, round(limits.cpus * CPU_PERIOD_US))
        cpu = cg.dir_for("cpu")
        if v1:
            _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))
        else:
            _write(os.path.join(cpu, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
    if limits.pids is not None:
        _write(os.path.join(cg.dir_for("pids"), "pids.max"), str(limits.pids))


def create(parent: str, cid: str, limits: Limits = Limits(), root: str | None = None) -> Cgroup:
    """Create the container's cgroup(s) and apply ``limits``.

    A leftover empty cgroup of the same name is replaced; one that still has
    processes raises Conflict. On failure the directories created here are
    removed again.
    """
    base = cgroup_root(root)
    cg = locate(parent, cid, base)
    _check_limits(cg, limits, base)
    made: list[str] = []
    try:
        if cg.version == 2:
            _enable_v2_controllers(base, parent)
        for path in cg.paths:
            _make_dir(path)
            made.append(path)
        _write_limits(cg, limits)
    except BaseException as exc:
        try:
            remove(Cgroup(cg.version, tuple(("", p) for p in made)), timeout=0.5)
        except KernelError:
            pass  # the original error matters more; cleanup() retries removal
        if isinstance(exc, OSError):
            raise KernelError(f"create cgroup {cid}: {exc.strerror}: {exc.filename}",
                              exc.errno) from exc
        raise
    return cg


def add_process(cg: Cgroup, pid: int) -> None:
    """Move process ``pid`` (all its threads) into the cgroup."""
    for procs_file in cg.procs_files():
        _write(procs_file, str(pid))


def procs(cg: Cgroup) -> list[int]:
    """Pids in the cgroup (read from the first hierarchy); [] when it is gone."""
    for path in cg.paths:
        text = _read(os.path.join(path, "cgroup.procs"))
        if text is not None:
            return [int(p) for p in text.split()]
    return []


def _rmdir(path: str, deadline: float) -> None:
    delay = 0.005
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # EBUSY: exiting tasks are still being torn down by the kernel.
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def remove(cg: Cgroup, timeout: float = 2.0) -> None:
    """Remove the cgroup directories; idempotent. Retries EBUSY until
    ``timeout``; tries every directory and raises one KernelError listing
    every failure."""
    deadline = time.monotonic() + timeout
    failures = []
    for path in reversed(cg.paths):
        try:
            _rmdir(path, deadline)
        except OSError as exc:
            failures.append((path, exc))
    if failures:
        detail = "; ".join(f"{p}: {e.strerror}" for p, e in failures)
        raise KernelError(f"remove cgroup: {detail}", failures[0][1].errno)


def _int_or_none(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    value = int(text)
    return None if value < 0 or value >= _V1_UNLIMITED else value


def _file(cg: Cgroup, controller: str, name: str) -> str | None:
    directory = cg.dir_for(controller)
    return None if directory is None else _read(os.path.join(directory, name))


def read_limits(cg: Cgroup) -> Limits:
    """Read back the limits currently set in the cgroup files."""
    def file(controller: str, name: str) -> str | None:
        return _file(cg, controller, name)

    if cg.version == 1:
        memory = _int_or_none(file("memory", "memory.limit_in_bytes"))
        quota = _int_or_none(file("cpu", "cpu.cfs_quota_us"))
        period = _int_or_none(file("cpu", "cpu.cfs_period_us")) or CPU_PERIOD_US
    else:
        memory = _int_or_none(file("memory", "memory.max"))
        cpu_max = (file("cpu", "cpu.max") or "max").split()
        quota = _int_or_none(cpu_max[0])
        period = int(cpu_max[1]) if len(cpu_max) > 1 else CPU_PERIOD_US
    cpus = None if quota is None else quota / period
    return Limits(memory=memory, cpus=cpus, pids=_int_or_none(file("pids", "pids.max")))


def _stat_value(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def stats(cg: Cgroup) -> CgroupStats:
    """Current usage: memory, cumulative CPU time and number of pids."""
    def file(controller: str, name: str) -> str | None:
        return _file(cg, controller, name)

    limits = read_limits(cg)
    if cg.version == 1:
        usage = file("memory", "memory.usage_in_bytes")
        cache = _stat_value(file("memory", "memory.stat"), "total_inactive_file")
        cpu = file("cpuacct", "cpuacct.usage")
        cpu_ns = None if cpu is None else int(cpu)
    else:
        usage = file("memory", "memory.current")
        cache = _stat_value(file("memory", "memory.stat"), "inactive_file")
        usec = _stat_value(file("cpu", "cpu.stat"), "usage_usec")
        cpu_ns = None if usec is None else usec * 1000
    current = file("pids", "pids.current")
    return CgroupStats(
        memory_usage=None if usage is None else int(usage), memory_cache=cache,
        memory_limit=limits.memory, cpu_usage_ns=cpu_ns,
        pids_current=None if current is None else int(current), pids_limit=limits.pids)


def procs_files_of_pid(pid: int, root: str | None = None, proc: str = "/proc") -> list[str]:
    """``cgroup.procs`` files of the cgroups netmgr manages that ``pid`` is in
    (below the root only), so another process can join the same cgroups."""
    base = cgroup_root(root)
    version = detect_version(base)
    text = _read(f"{proc}/{pid}/cgroup") or ""
    files = []
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if path == "/" or (version == 2) != (controllers == ""):
            continue
        if version == 2:
            files.append(os.path.join(base, path.lstrip("/"), "cgroup.procs"))
            continue
        names = controllers.split(",")
        if any(n in V1_CONTROLLERS for n in names):
            hierarchy = os.path.join(base, next(n for n in names if n in V1_CONTROLLERS))
            files.append(os.path.join(hierarchy, path.lstrip("/"), "cgroup.procs"))
    return files
