"""Container shim: the small process that creates and watches one container.

Started by :func:`netmgr.runtime.container.start` as::

    python -I -S .../runtime/shim.py STATE_DIR/shim.spec SYNC_FD

(``python -m netmgr.runtime.shim`` works too). This module is deliberately
self-contained and imports only a few builtin/stdlib modules: the venv's
``site`` (editable-install finder) costs ~25 ms and ``json``/``re`` ~10 ms,
which would dominate ``start()``. The spec therefore arrives as a ``marshal``
file written by the same interpreter.

Process tree and duties::

    daemon ──Popen──► shim (setsid) ──fork──► shim' (this one stays) ──fork──► init
                       exits at once          reparented to init              PID 1 of the
                       (daemon reaps it)      unshare(NEWPID) before fork     new pid ns

``init`` enters the sandbox netns, unshares uts/ipc/mount, builds its file
system view, joins the cgroups and execs the command. A CLOEXEC pipe tells
the shim whether exec succeeded. The shim records ``pid``, ``shim.pid`` (with
their /proc start times) and, when init exits, ``exit``, then reports
``ok PID SHIMPID`` or an error to the daemon over ``SYNC_FD``.

Why init, not the shim, unshares the mount namespace: ``pivot_root`` moves the
root of *every* process of the mount namespace, so a shim sharing it would
lose the host paths of the state dir. It also keeps the shim's /proc the
host's, and the container's mounts (overlay, /proc, binds) vanish with its
last process instead of lingering on the host.
"""

import _signal  # the public ``signal`` module imports ``enum`` (~5 ms)
import ctypes
import marshal
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHM_SIZE = "65536k"  # Docker's default --shm-size

# state_dir file names (the daemon side reads them through netmgr.runtime.container)
PID_FILE = "pid"
SHIM_PID_FILE = "shim.pid"
STARTTIME_SUFFIX = ".starttime"
EXIT_FILE = "exit"
LOG_FILE = "log"

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203,
                   "s390x": 217, "i686": 217, "armv7l": 218}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


# ---------------------------------------------------------------- syscalls

def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(value):
    return None if value is None else os.fsencode(value)


def mount(source, target, fstype, flags=0, data=None):
    """mount(2); raises OSError whose strerror names the operation."""
    what = f"mount {fstype or 'bind'} {source or ''} on {target}".replace("  ", " ")
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), what)


def umount2(target, flags=0):
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def setns(fd, nstype):
    """setns(2) on an open namespace file descriptor."""
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags):
    """unshare(2)."""
    _check(_libc.unshare(flags), "unshare")


def sethostname(name):
    """sethostname(2) in the caller's UTS namespace."""
    raw = os.fsencode(name)
    _check(_libc.sethostname(raw, len(raw)), f"sethostname {name}")


def pivot_root(new_root, put_old):
    """pivot_root(2) through syscall(2): glibc has no wrapper."""
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unsupported machine {os.uname().machine}")
    _libc.syscall.restype = ctypes.c_long
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


# ---------------------------------------------------------------- helpers

class StartError(Exception):
    """A container could not start; carries what the daemon needs to raise."""

    def __init__(self, kind, message, errno=0, exit_code=1):
        super().__init__(message)
        self.kind, self.message, self.errno, self.exit_code = kind, message, errno, exit_code

    def encode(self):
        """Wire form: fields separated by NUL (messages never contain NUL)."""
        fields = (self.kind, str(self.errno), str(self.exit_code), self.message)
        return "\0".join(fields).encode("utf-8", "surrogateescape")

    @classmethod
    def decode(cls, raw):
        """Inverse of :meth:`encode`."""
        kind, errno, code, message = raw.decode("utf-8", "surrogateescape").split("\0", 3)
        return cls(kind, message, int(errno), int(code))


def _os_error(exc):
    text = exc.strerror or str(exc)
    if exc.filename is not None:
        text = f"{text}: {exc.filename}"
    return StartError("KernelError", f"setup container: {text}", exc.errno or 0, 1)


def resolve_in_root(root, path):
    """Resolve ``path`` as if ``root`` were ``/``: symlinks are followed but
    can never lead outside ``root`` (absolute targets restart at ``root``,
    ``..`` stops at it). The final component need not exist."""
    if root in (None, "/"):
        return os.path.normpath("/" + path)
    todo = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    done = []
    links = 0
    while todo:
        name = todo.pop()
        if name == "..":
            if done:
                done.pop()
            continue
        current = os.path.join(root, *done, name)
        if not os.path.islink(current):
            done.append(name)
            continue
        links += 1
        if links > 40:
            raise OSError(40, f"resolve {path} in {root}: Too many levels of symbolic links")
        target = os.readlink(current)
        if target.startswith("/"):
            done = []
        todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
    return os.path.join(root, *done)


def read_starttime(pid, proc="/proc"):
    """Start time (clock ticks since boot) of ``pid`` from /proc/PID/stat, or None."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and ')': split after the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])


def write_atomic(path, text):
    """Write a small file so that readers see either nothing or all of it."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _write_pidfile(state_dir, name, pid):
    start = read_starttime(pid)
    write_atomic(os.path.join(state_dir, name + STARTTIME_SUFFIX), f"{start}\n")
    write_atomic(os.path.join(state_dir, name), f"{pid}\n")


def _ensure_target(path, is_dir):
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if is_dir:
        os.mkdir(path)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


# ---------------------------------------------------------------- init (PID 1) setup

def _enter_namespaces(spec):
    os.setsid()  # like runc: the container's init leads its own session
    if spec["netns_path"] is not None:
        fd = os.open(spec["netns_path"], os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
    unshare(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNS)
    # Without this, mounts below would propagate to the host's shared mounts.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Our copy of the sandbox netns bind mounts would keep every other sandbox's
    # namespace (and its devices) alive until this container exits.
    for path in spec.get("hide_mounts", ()):
        try:
            umount2(path, MNT_DETACH)
        except OSError:
            pass
    sethostname(spec["hostname"])


def _join_cgroups(spec):
    for procs in spec["cgroup_procs"]:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            # "0" = the writing process, whatever pid namespace it is in
            os.write(fd, b"0")
        finally:
            os.close(fd)


def _redirect_stdio(spec):
    log = os.path.join(spec["state_dir"], LOG_FILE)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _mount_rootfs(spec):
    state = spec["state_dir"]
    merged = os.path.join(state, "rootfs")
    options = "lowerdir={},upperdir={},workdir={}".format(
        spec["rootfs"], os.path.join(state, "upper"), os.path.join(state, "work"))
    mount("overlay", merged, "overlay", 0, options)
    for name in ("proc", "sys", "dev", "etc"):
        _ensure_target(resolve_in_root(merged, name), True)
    return merged


def _mount_kernel_fs(root, host_network):
    """Fresh /proc (for the new pid ns), read-only /sys (shows the sandbox's
    netns), a private /dev/shm; with a rootfs, the host's /dev bound in."""
    top = root or ""
    if root is not None:
        # Binding the host's /dev (not a fresh tmpfs with device nodes) gives
        # the container every host device; acceptable for netmgr's purposes.
        mount("/dev", top + "/dev", None, MS_BIND | MS_REC)
    mount("proc", top + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # sysfs is one superblock per netns: in the host's netns without a rootfs
    # it is already mounted right there, and mounting it again is EBUSY.
    if root is not None or not host_network:
        mount("sysfs", top + "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # Never mkdir under /dev: it is the host's devtmpfs.
    if os.path.isdir(top + "/dev/shm"):
        mount("shm", top + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              f"mode=1777,size={SHM_SIZE}")
    if os.path.isdir(top + "/dev/mqueue"):
        mount("mqueue", top + "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _bind(src, root, dst, read_only, create):
    target = resolve_in_root(root, dst)
    if not os.path.lexists(target):
        if not create:
            return False
        _ensure_target(target, os.path.isdir(src))
    mount(src, target, None, MS_BIND | MS_REC)
    if read_only:
        # A bind mount takes the source's flags; read-only needs a remount.
        # Keep nosuid/nodev/noexec (ST_* and MS_* share these bits).
        keep = os.statvfs(target).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
    return True


def _bind_files(spec, root):
    create = root is not None
    for key, dst in (("hosts_file", "/etc/hosts"), ("resolv_file", "/etc/resolv.conf"),
                     ("hostname_file", "/etc/hostname")):
        if spec[key] is not None:
            # Without a rootfs a missing target is skipped: never create host files.
            _bind(spec[key], root, dst, False, create)
    for src, dst, read_only in spec["volumes"]:
        if not _bind(src, root, dst, read_only, create):
            raise StartError(
                "InvalidConfig", f"volume target {dst} does not exist (no rootfs: the "
                "container sees the host's file system)", 2, 1)


def _pivot(root):
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root on top of the new one; the
    # detach below then drops it (runc's trick: no put_old directory needed).
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")


def _setup_filesystem(spec):
    root = _mount_rootfs(spec) if spec["rootfs"] is not None else None
    _mount_kernel_fs(root, spec["netns_path"] is None)
    _bind_files(spec, root)
    if root is not None:
        _pivot(root)
        os.makedirs(spec["workdir"], exist_ok=True)
    os.chdir(spec["workdir"])


def _environment(spec):
    env = dict(spec["env"])
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", spec["hostname"])
    env.setdefault("HOME", "/root")
    return env


def find_executable(name, path):
    """Resolve ``argv[0]`` like exec.LookPath in the current root; raise StartError."""
    if "/" in name:
        if not os.path.exists(name):
            raise StartError("InvalidConfig", f'exec: "{name}": stat {name}: '
                             "no such file or directory", 2, 127)
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise StartError("InvalidConfig", f'exec: "{name}": executable file not found in $PATH',
                     2, 127)


def _exec(spec):
    env = _environment(spec)
    argv = spec["argv"]
    exe = find_executable(argv[0], env["PATH"])
    os.umask(0o022)
    # Python ignores SIGPIPE and SIGXFSZ; exec keeps ignored signals ignored.
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGHUP, _signal.SIGINT):
        _signal.signal(sig, _signal.SIG_DFL)
    try:
        os.execve(exe, argv, env)
    except OSError as exc:
        kind = "InvalidConfig" if exc.errno in (2, 13, 8) else "KernelError"
        raise StartError(kind, f'exec: "{argv[0]}": {os.strerror(exc.errno).lower()}',
                         exc.errno, 127 if exc.errno == 2 else 126) from None


def _init(spec, status_fd):
    """Body of the container's PID 1 until exec; never returns."""
    try:
        _enter_namespaces(spec)
        _join_cgroups(spec)
        _redirect_stdio(spec)
        _setup_filesystem(spec)
        _exec(spec)
        error = StartError("InternalError", "exec returned")
    except StartError as exc:
        error = exc
    except OSError as exc:
        error = _os_error(exc)
    except BaseException as exc:  # noqa: BLE001 - must report, never unwind into the shim
        error = StartError("InternalError", f"setup container: {exc!r}")
    try:
        os.write(status_fd, error.encode())
    finally:
        os._exit(error.exit_code)


# ---------------------------------------------------------------- the shim proper

def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _wait_exit_code(pid):
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    # Docker reports death by signal N as 128+N.
    return 128 - code if code < 0 else code


def _report(sync_fd, text):
    if sync_fd is None:
        return
    try:
        os.write(sync_fd, text)
    except OSError:
        pass  # the daemon went away: the container keeps running regardless
    os.close(sync_fd)


def _run(spec, sync_fd):
    state = spec["state_dir"]
    _write_pidfile(state, SHIM_PID_FILE, os.getpid())
    # The first child forked after this is PID 1 of a new pid namespace.
    unshare(CLONE_NEWPID)
    status_r, status_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(status_r)
        _init(spec, status_w)
    os.close(status_w)
    _write_pidfile(state, PID_FILE, child)
    failure = _read_all(status_r)
    os.close(status_r)
    if failure:
        code = _wait_exit_code(child)
        write_atomic(os.path.join(state, EXIT_FILE), f"{code}\n")
        _report(sync_fd, b"error\0" + failure)
        return 1
    _report(sync_fd, f"ok {child} {os.getpid()}\n".encode())
    code = _wait_exit_code(child)
    write_atomic(os.path.join(state, EXIT_FILE), f"{code}\n")
    return 0


def main(args):
    """Entry point: ``shim SPEC_PATH [SYNC_FD]``; returns the shim's exit status."""
    with open(args[0], "rb") as f:
        spec = marshal.load(f)
    sync_fd = int(args[1]) if len(args) > 1 else None
    if sync_fd is not None:
        os.set_inheritable(sync_fd, False)
    if os.fork():
        # Let the caller reap us now; the real shim is reparented to init, so
        # the daemon never collects zombies and may restart freely.
        os._exit(0)
    # A fresh fork child is never a process-group leader, so setsid() cannot
    # fail: detached from the caller's session however we were started.
    os.setsid()
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    try:
        return _run(spec, sync_fd)
    except StartError as exc:
        _report(sync_fd, b"error\0" + exc.encode())
    except OSError as exc:
        _report(sync_fd, b"error\0" + _os_error(exc).encode())
    return 1


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))
