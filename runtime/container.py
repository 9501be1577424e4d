"""Container processes: start, watch, signal, exec into and clean up.

A container is a process in the sandbox's network namespace (created
elsewhere and passed as ``netns_path``) plus new uts, ipc, pid and mount
namespaces, with its own hostname and /etc files, an optional overlayfs root,
volumes and cgroup limits.

The daemon never switches namespaces itself: :func:`start` launches a
detached shim (:mod:`netmgr.runtime.shim`) that creates the container and
records everything in the caller-owned ``state_dir``:

=================  ==========================================================
``spec.json``      the ContainerSpec plus its cgroup (read by cleanup/stats)
``shim.spec``      the same for the shim (marshal: the shim avoids json)
``pid``            host pid of the container's PID 1 (``pid.starttime``: its
                   /proc start time, to detect pid reuse)
``shim.pid``       host pid of the shim (``shim.pid.starttime``)
``exit``           exit code, written atomically when PID 1 exits (128+N
                   for death by signal N, 127/126 when exec failed)
``log``            stdout and stderr of the container, combined, appended
``shim.log``       the shim's own stderr (normally empty)
``upper``/``work``/``rootfs``  overlayfs dirs when a rootfs is used
=================  ==========================================================

Containers survive a daemon restart: every function here works from
``state_dir`` and the pid alone. All functions block (``start`` ~tens of ms,
``stop`` up to its timeout); call them from a worker thread in asyncio code.
"""

from __future__ import annotations

import errno
import json
import logging
import marshal
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from netmgr import statefiles
from netmgr.runtime import cgroups, mounts, shim

from netmgr.errors import (
    Conflict,
    InternalError,
    InvalidConfig,
    KernelError,
    NetmgrError,
    PermissionDenied,
)

__all__ = [
    "DEFAULT_PATH",
    "ContainerSpec",
    "Liveness",
    "ProcessInfo",
    "cleanup",
    "exec_argv",
    "exit_code",
    "is_running",
    "kill",
    "read_logs",
    "start",
    "stats",
    "stop",
    "wait",
]

log = logging.getLogger(__name__)

DEFAULT_PATH = shim.DEFAULT_PATH
START_TIMEOUT = 30.0
KILL_GRACE = 10.0
MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum
_ID_RE = re.compile(r"[0-9a-f]{64}")
_ENV_NAME_RE = re.compile(r"[^=\0]+")
_STALE_FILES = ("exit", "pid", "pid.starttime", "shim.pid", "shim.pid.starttime")


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one container process."""

    id: str                      # 64-hex container id
    argv: tuple[str, ...]
    state_dir: str               # exists, owned by the caller
    netns_path: str | None       # sandbox netns bind-mount path; None = host network ns
    hostname: str
    hosts_file: str | None = None
    resolv_file: str | None = None
    hostname_file: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    rootfs: str | None = None    # lower dir of an overlayfs root; None = host's root view
    volumes: tuple[tuple[str, str, bool], ...] = ()   # (host_src, ctr_dst, read_only)
    memory: int | None = None    # bytes
    cpus: float | None = None
    pids_limit: int | None = None
    cgroup_parent: str = "netmgr"
    cgroup_root: str | None = None   # None: $NETMGR_CGROUP_ROOT or /sys/fs/cgroup
    #: mount points to detach inside the container (the daemon's sandbox netns dir, so a
    #: container's mount namespace never keeps other sandboxes' namespaces alive)
    hide_mounts: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict) -> ContainerSpec:
        """Rebuild a spec saved as JSON (lists back to tuples)."""
        data = dict(data)
        data["argv"] = tuple(data["argv"])
        data["env"] = tuple(tuple(kv) for kv in data.get("env", ()))
        data["volumes"] = tuple((s, d, bool(ro)) for s, d, ro in data.get("volumes", ()))
        data["hide_mounts"] = tuple(data.get("hide_mounts", ()))
        return cls(**data)


@dataclass(frozen=True)
class ProcessInfo:
    """A started container: host pids of its PID 1 and of its shim."""

    pid: int
    shim_pid: int


# ---------------------------------------------------------------- validation

def _no_nul(*values: str | None) -> None:
    for value in values:
        if value is not None and "\0" in value:
            raise InvalidConfig(f"invalid value {value!r}: contains a NUL byte")


def _validate_process(spec: ContainerSpec) -> None:
    if not _ID_RE.fullmatch(spec.id):
        raise InvalidConfig(f"invalid container id {spec.id!r}: want 64 hex digits")
    if not spec.argv or not spec.argv[0]:
        raise InvalidConfig("no command specified")
    _no_nul(*spec.argv, spec.hostname, spec.workdir)
    if not spec.hostname or len(spec.hostname.encode()) > 64:
        raise InvalidConfig(f"invalid hostname {spec.hostname!r}: want 1 to 64 bytes")
    for name, value in spec.env:
        if not _ENV_NAME_RE.fullmatch(name):
            raise InvalidConfig(f"invalid environment variable name {name!r}")
        _no_nul(value)
    if not spec.workdir.startswith("/"):
        raise InvalidConfig(f"the working directory '{spec.workdir}' is invalid, "
                            "it needs to be an absolute path")


def _validate_paths(spec: ContainerSpec) -> None:
    if not os.path.isdir(spec.state_dir):
        raise InvalidConfig(f"state dir {spec.state_dir} does not exist")
    for path in (spec.netns_path, spec.hosts_file, spec.resolv_file, spec.hostname_file):
        _no_nul(path)
        if path is not None and not os.path.exists(path):
            raise InvalidConfig(f"{path}: no such file or directory")
    if spec.rootfs is not None:
        if not os.path.isdir(spec.rootfs):
            raise InvalidConfig(f"rootfs {spec.rootfs} is not a directory")
        for path in (spec.rootfs, spec.state_dir):
            if "," in path or ":" in path:
                raise InvalidConfig(f"path {path} cannot be used in overlayfs options "
                                    "(contains ',' or ':')")
    for src, dst, _ in spec.volumes:
        _no_nul(src, dst)
        if not os.path.isabs(src) or not os.path.exists(src):
            raise InvalidConfig(f"invalid mount config: bind source path does not exist: {src}")
        if not os.path.isabs(dst) or os.path.normpath(dst) == "/":
            raise InvalidConfig(f"invalid mount config: invalid mount path: '{dst}' "
                                "mount path must be absolute and not '/'")


def _validate_limits(spec: ContainerSpec) -> None:
    if spec.memory is not None and spec.memory < MIN_MEMORY:
        raise InvalidConfig("Minimum memory limit allowed is 6MB")
    ncpu = os.cpu_count() or 1
    if spec.cpus is not None and not 0.01 <= spec.cpus <= ncpu:
        raise InvalidConfig(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are "
                            f"only {ncpu} CPUs available")
    if spec.pids_limit is not None and spec.pids_limit <= 0:
        raise InvalidConfig(f"invalid pids limit {spec.pids_limit}: want a positive "
                            "number (None for unlimited)")


# ---------------------------------------------------------------- state files

def _path(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, name)


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text and text != "None" else None


def _load_state(state_dir: str) -> tuple[ContainerSpec, cgroups.Cgroup] | None:
    try:
        with open(_path(state_dir, "spec.json"), encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    cg = cgroups.Cgroup.from_dict(data.pop("cgroup"))
    return ContainerSpec.from_dict(data), cg


def _write_state(spec: ContainerSpec, cg: cgroups.Cgroup) -> str:
    data = asdict(spec) | {"cgroup": cg.to_dict()}
    shim.write_atomic(_path(spec.state_dir, "spec.json"), json.dumps(data, indent=1))
    shim_spec = {
        "id": spec.id, "argv": list(spec.argv), "state_dir": os.path.abspath(spec.state_dir),
        "netns_path": spec.netns_path, "hostname": spec.hostname,
        "hosts_file": spec.hosts_file, "resolv_file": spec.resolv_file,
        "hostname_file": spec.hostname_file, "env": [list(kv) for kv in spec.env],
        "workdir": spec.workdir, "rootfs": spec.rootfs,
        "volumes": [[s, os.path.normpath(d), bool(ro)] for s, d, ro in spec.volumes],
        "cgroup_procs": list(cg.procs_files()),
        "hide_mounts": list(spec.hide_mounts),
    }
    path = _path(spec.state_dir, "shim.spec")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        marshal.dump(shim_spec, f)
    os.rename(tmp, path)
    return path


def _alive(pid: int | None, starttime: int | None) -> bool:
    """True if ``pid`` exists, is not a zombie and started at ``starttime``.

    An unknown start time means the state dir does not vouch for ``pid``:
    never treat (and so never signal) such a process as the container's.
    """
    if not pid or starttime is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return False
    return int(fields[19]) == starttime


def _starttime(state_dir: str, name: str, pid: int) -> int | None:
    if _read_int(_path(state_dir, name)) != pid:
        return None
    return _read_int(_path(state_dir, name + shim.STARTTIME_SUFFIX))


# ---------------------------------------------------------------- start

def start(spec: ContainerSpec) -> ProcessInfo:
    """Start the container and return once its command has been exec'd.

    Raises InvalidConfig for a bad spec or a command that cannot be run
    (Docker's wording, e.g. ``exec: "x": executable file not found in
    $PATH``), Conflict if the state dir's container is still running, and
    KernelError/PermissionDenied when namespace, mount or cgroup work fails.
    After a failed start the cgroups are already removed; ``exit`` may hold
    127/126.
    """
    _validate_process(spec)
    _validate_paths(spec)
    _validate_limits(spec)
    with statefiles.guard(spec.state_dir, "prepare the container's state dir"):
        _prepare_state_dir(spec)
    limits = cgroups.Limits(memory=spec.memory, cpus=spec.cpus, pids=spec.pids_limit)
    cg = cgroups.create(spec.cgroup_parent, spec.id, limits, root=spec.cgroup_root)
    try:
        with statefiles.guard(spec.state_dir, "write the container's state"):
            shim_spec = _write_state(spec, cg)
        return _launch(spec, shim_spec)
    except BaseException:
        try:
            cgroups.remove(cg)
        except NetmgrError as exc:
            log.warning("start %s: undo cgroup: %s", spec.id[:12], exc)
        raise


def _prepare_state_dir(spec: ContainerSpec) -> None:
    pid = _read_int(_path(spec.state_dir, "pid"))
    if pid is not None and is_running(spec.state_dir, pid):
        raise Conflict(f"container {spec.id[:12]} is already running")
    for name in _STALE_FILES:
        try:
            os.unlink(_path(spec.state_dir, name))
        except FileNotFoundError:
            pass
    if spec.rootfs is not None:
        for name in ("upper", "work", "rootfs"):
            os.makedirs(_path(spec.state_dir, name), mode=0o755, exist_ok=True)


def _launch(spec: ContainerSpec, shim_spec: str) -> ProcessInfo:
    read_fd, write_fd = os.pipe()
    try:
        err = os.open(_path(spec.state_dir, "shim.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            proc = subprocess.Popen(
                _shim_command(shim_spec, write_fd), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err, pass_fds=(write_fd,),
                start_new_session=True, cwd="/", env={})
        finally:
            os.close(err)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        report = _read_report(read_fd, START_TIMEOUT)
    except InternalError:
        _kill_leftovers(spec.state_dir)
        raise
    finally:
        os.close(read_fd)
        proc.wait()  # the first shim process exits right after forking the real one
    return _parse_report(spec, report)


def _kill_leftovers(state_dir: str) -> None:
    for name in ("pid", "shim.pid"):
        pid = _read_int(_path(state_dir, name))
        if pid is not None and _alive(pid, _starttime(state_dir, name, pid)):
            os.kill(pid, signal.SIGKILL)


def _shim_command(shim_spec: str, sync_fd: int) -> list[str]:
    # -I -S: no site (its editable-install finder alone costs ~25 ms); the shim
    # needs only the stdlib. Its directory goes last on sys.path so the cached
    # bytecode is used and nothing there can shadow a stdlib module. os._exit:
    # interpreter teardown would delay the shim's exit by ~5 ms.
    code = ("import sys,os;sys.path.append(sys.argv[1]);import shim;"
            "os._exit(shim.main(sys.argv[2:]))")
    return [sys.executable, "-I", "-S", "-c", code, os.path.dirname(shim.__file__),
            shim_spec, str(sync_fd)]


def _read_report(fd: int, timeout: float) -> bytes:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise InternalError(f"container shim did not report within {timeout:.0f}s")
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _parse_report(spec: ContainerSpec, report: bytes) -> ProcessInfo:
    if report.startswith(b"ok "):
        _, pid, shim_pid = report.split()
        return ProcessInfo(pid=int(pid), shim_pid=int(shim_pid))
    if report.startswith(b"error\0"):
        failure = shim.StartError.decode(report[len(b"error\0"):])
        raise _error_from(failure)
    raise InternalError(f"container shim failed without a report: {_shim_log_tail(spec)}")


def _error_from(failure: shim.StartError) -> NetmgrError:
    if failure.kind == "InvalidConfig":
        return InvalidConfig(failure.message)
    if failure.kind == "KernelError":
        if failure.errno == errno.EPERM:
            return PermissionDenied(failure.message)
        return KernelError(failure.message, failure.errno)
    return InternalError(failure.message)


def _shim_log_tail(spec: ContainerSpec) -> str:
    try:
        with open(_path(spec.state_dir, "shim.log"), "rb") as f:
            lines = f.read().decode(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no shim.log)"
    return lines[-1] if lines else "(shim.log is empty)"


# ---------------------------------------------------------------- state queries

def is_running(state_dir: str, pid: int) -> bool:
    """True if the container's PID 1 is alive (pid reuse excluded) and no exit is recorded."""
    if os.path.exists(_path(state_dir, "exit")):
        return False
    return _alive(pid, _starttime(state_dir, "pid", pid))


class Liveness:
    """:func:`is_running` for many containers: one ``poll`` of a held pidfd after the first full check.

    The full check reads three files and ``/proc/<pid>/stat`` (~0.15 ms); every
    API call that names a container makes it. After a full check has passed,
    a pidfd on PID 1 answers the same question with one syscall and without
    any pid-reuse race (a pidfd follows its process, not the number). The
    pidfd is opened *before* that full check: if the check then finds the
    recorded start time at that pid, the pidfd is that process. One
    descriptor per running container; :meth:`forget` when it is removed.
    Not thread safe: use it from the one thread that runs operations.
    """

    def __init__(self) -> None:
        self._fds: dict[str, tuple[int, int]] = {}  # state dir -> (pid, pidfd)

    def is_running(self, state_dir: str, pid: int) -> bool:
        """Same answer as :func:`is_running`."""
        held = self._fds.get(state_dir)
        if held is not None:
            if held[0] == pid and not _pidfd_exited(held[1]):
                return True
            self.forget(state_dir)  # exited, or a new PID 1 (restart): the full check decides
        try:
            fd = os.pidfd_open(pid) if pid else -1
        except OSError:
            fd = -1
        if is_running(state_dir, pid):
            if fd >= 0:
                self._fds[state_dir] = (pid, fd)
            return True
        if fd >= 0:
            os.close(fd)
        return False

    def forget(self, state_dir: str) -> None:
        """Close the descriptor held for this container, if any."""
        held = self._fds.pop(state_dir, None)
        if held is not None:
            os.close(held[1])

    def close(self) -> None:
        """Close every descriptor."""
        for state_dir in list(self._fds):
            self.forget(state_dir)


def _pidfd_exited(fd: int) -> bool:
    """A pidfd polls readable once its process has exited (zombie included)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def exit_code(state_dir: str) -> int | None:
    """The recorded exit code, or None while the container runs (or never ran)."""
    return _read_int(_path(state_dir, "exit"))


def wait(state_dir: str, timeout: float | None) -> int | None:
    """Wait until the exit code is recorded; None on timeout.

    Raises InternalError if the shim died without recording one (someone
    killed it): the exit code is lost, the container may still run.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay, next_shim_check = 0.001, time.monotonic() + 0.5
    while True:
        code = exit_code(state_dir)
        if code is not None:
            return code
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return None
        if now >= next_shim_check:
            next_shim_check = now + 0.5
            _check_shim(state_dir)
        pause = delay if deadline is None else min(delay, max(deadline - now, 0))
        time.sleep(pause)
        delay = min(delay * 2, 0.05)


def _check_shim(state_dir: str) -> None:
    shim_pid = _read_int(_path(state_dir, "shim.pid"))
    if shim_pid is not None and _alive(shim_pid, _starttime(state_dir, "shim.pid", shim_pid)):
        return
    if exit_code(state_dir) is None:
        raise InternalError(f"container shim {shim_pid} died without recording an exit "
                            f"code ({state_dir})")


def stats(state_dir: str) -> cgroups.CgroupStats:
    """Resource usage of the container (``netmgr stats``)."""
    state = _load_state(state_dir)
    if state is None:
        raise InvalidConfig(f"no container state in {state_dir}")
    return cgroups.stats(state[1])


def read_logs(state_dir: str) -> bytes:
    """Everything the container wrote to stdout and stderr (``docker logs``)."""
    try:
        with open(_path(state_dir, "log"), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


# ---------------------------------------------------------------- signals

def _send(state_dir: str, pid: int, sig: int) -> bool:
    """Signal PID 1 through a pidfd (no pid-reuse race); False if it is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        # the pidfd pins the process: checking the start time now is race-free
        if not is_running(state_dir, pid):
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def kill(state_dir: str, pid: int, sig: int) -> None:
    """Send ``sig`` to the container's PID 1; Conflict if it is not running.

    Note: PID 1 of a pid namespace ignores signals it has no handler for
    (SIGKILL and SIGSTOP excepted), as in Docker.
    """
    if not _send(state_dir, pid, sig):
        state = _load_state(state_dir)
        name = state[0].id[:12] if state else state_dir
        raise Conflict(f"Container {name} is not running")


def stop(state_dir: str, pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns once the exit
    code is recorded. A container that is already gone is success."""
    if not _send(state_dir, pid, signal.SIGTERM):
        _wait_recorded(state_dir, pid, KILL_GRACE)
        return
    try:
        if wait(state_dir, timeout) is not None:
            return
    except InternalError:
        pass  # shim gone: fall through to SIGKILL, which needs no shim
    _send(state_dir, pid, signal.SIGKILL)
    _wait_recorded(state_dir, pid, KILL_GRACE)


def _wait_recorded(state_dir: str, pid: int, timeout: float) -> None:
    try:
        if wait(state_dir, timeout) is not None:
            return
    except InternalError:
        if not _alive(pid, _starttime(state_dir, "pid", pid)):
            return  # the shim was killed; the process is gone all the same
        raise
    if _alive(pid, _starttime(state_dir, "pid", pid)):
        raise KernelError(f"container process {pid} did not exit within {timeout:.0f}s "
                          "of SIGKILL", errno.ETIMEDOUT)


# ---------------------------------------------------------------- exec

_JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; ' \
                'exec "$@"'


def exec_argv(pid: int, argv: list[str],
              env: Iterable[tuple[str, str]] | Mapping[str, str] = (),
              workdir: str | None = None) -> list[str]:
    """Command line that runs ``argv`` inside the running container ``pid``.

    It joins the container's cgroups (a host ``sh``), sets the environment
    (the container's initial one from /proc/PID/environ, overridden by
    ``env`` pairs; ``env -i``) and enters net, uts, ipc, pid and mount
    namespaces, root and cwd (or ``workdir``) with ``nsenter``. The caller
    runs it with its own stdio; its exit status is the command's.
    """
    if not argv:
        raise InvalidConfig("no command specified")
    variables = _container_environ(pid)
    variables.update(dict(env))
    variables.setdefault("PATH", DEFAULT_PATH)
    nsenter = [shutil.which("nsenter") or "nsenter", "-t", str(pid),
               "-n", "-u", "-i", "-p", "-m", "-r"]
    nsenter.append(f"--wdns={workdir}" if workdir else "-w")
    command = [shutil.which("env") or "env", "-i",
               *(f"{k}={v}" for k, v in variables.items()), *nsenter, "--", *argv]
    procs = cgroups.procs_files_of_pid(pid)
    if not procs:
        return command
    return ["/bin/sh", "-c", _JOIN_CGROUPS, "netmgr-exec", *procs, "--", *command]


def _container_environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except FileNotFoundError as exc:
        raise Conflict(f"container process {pid} is not running") from exc
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {os.fsdecode(k): os.fsdecode(v) for k, v in pairs}


# ---------------------------------------------------------------- cleanup

def cleanup(spec_or_state_dir: ContainerSpec | str, *, remove_layer: bool = False,
            timeout: float = 5.0) -> None:
    """Release what a stopped container holds: any leftover mounts below its
    state dir and its cgroups; with ``remove_layer`` also the overlay's upper
    and work dirs (``docker rm``). Idempotent. Tries every step and raises one
    KernelError listing all failures; Conflict if the container still runs."""
    state_dir = (spec_or_state_dir.state_dir if isinstance(spec_or_state_dir, ContainerSpec)
                 else spec_or_state_dir)
    state = _load_state(state_dir)
    if state is None and isinstance(spec_or_state_dir, ContainerSpec):
        spec = spec_or_state_dir
        state = (spec, cgroups.locate(spec.cgroup_parent, spec.id, spec.cgroup_root))
    pid = _read_int(_path(state_dir, "pid"))
    if pid is not None and is_running(state_dir, pid):
        raise Conflict(f"container {os.path.basename(state_dir)} is still running")
    _wait_shim_gone(state_dir, timeout)
    failures = mounts.unmount_below(state_dir)
    if state is not None:
        try:
            cgroups.remove(state[1], timeout=timeout)
        except NetmgrError as exc:
            failures.append(str(exc))
    if remove_layer:
        for name in ("rootfs", "upper", "work"):
            if os.path.lexists(_path(state_dir, name)):
                shutil.rmtree(_path(state_dir, name),
                              onerror=lambda _f, p, e: failures.append(f"remove {p}: {e[1]}"))
    if failures:
        raise KernelError(f"cleanup {state_dir}: " + "; ".join(failures))


def _wait_shim_gone(state_dir: str, timeout: float) -> None:
    shim_pid = _read_int(_path(state_dir, "shim.pid"))
    if shim_pid is None:
        return
    starttime = _starttime(state_dir, "shim.pid", shim_pid)
    deadline = time.monotonic() + timeout
    while _alive(shim_pid, starttime) and time.monotonic() < deadline:
        time.sleep(0.005)
