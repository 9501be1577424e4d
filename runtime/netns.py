"""Named network namespaces (sandboxes) bind-mounted under the daemon's run dir.

Python 3.11 has no ``os.setns``, and a thread that switched namespace can
never be trusted again (CNI ``ns_linux.go``: such an OS thread must be thrown
away). So every namespace switch here happens on a *throwaway thread*: a new
OS thread that calls ``unshare``/``setns``, does a few syscalls (bind mount,
open a socket, write a sysctl) and exits. The daemon's own threads never
change namespace. A thread costs ~0.1 ms; forking the daemon (pyroute2's way)
costs 10-25 ms and is unsafe next to gRPC's threads.

Sockets opened inside a namespace stay in it: :class:`NetnsHandle` keeps one
rtnetlink socket per sandbox for its whole life.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as E
import os
import threading
from typing import Callable, TypeVar

from netmgr import errors
from netmgr.runtime.netlink import Netlink, mapped, open_socket

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")

__all__ = ["NetnsHandle", "attach", "create", "open_handle", "remove", "ensure_ns_dir", "run_in", "sysctl_write"]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _on_throwaway_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a new OS thread that dies afterwards (it may change namespace)."""
    box: dict = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=body, name="netns-switch", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
    finally:
        os.close(fd)


def ensure_ns_dir(ns_dir: str) -> None:
    """Make ``ns_dir`` a shared mount point (as iproute2 does for /run/netns).

    Being a mount point lets a container's mount namespace detach all
    sandbox bind mounts with one lazy unmount, so no container keeps another
    sandbox's namespace alive.
    """
    os.makedirs(ns_dir, mode=0o700, exist_ok=True)
    if _libc.mount(b"", ns_dir.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    with mapped(f"mount {ns_dir}"):
        _check(_libc.mount(ns_dir.encode(), ns_dir.encode(), b"none", MS_BIND | MS_REC, None), "bind")
        _check(_libc.mount(b"", ns_dir.encode(), b"none", MS_SHARED | MS_REC, None), "make shared")


class NetnsHandle:
    """One sandbox namespace: its path, an open fd, and an rtnetlink socket inside it."""

    def __init__(self, path: str, nl: Netlink) -> None:
        self.path = path
        self.nl = nl
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        """Close the fd and the socket (the namespace itself stays)."""
        self.nl.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def inode(self) -> int:
        """The namespace's inode number (what ``readlink /proc/PID/ns/net`` shows)."""
        return os.fstat(self.fd).st_ino


def _sandbox_defaults(ipv6_off: bool) -> None:
    # Addresses come from IPAM; duplicate address detection would only keep every new
    # interface's IPv6 link-local address tentative for ~1 s, delaying its first packets
    # (netavark does the same). New interfaces start with IPv6 off: otherwise each one
    # sends router solicitations and MLD reports that the bridge copies to every port
    # (at 1000 endpoints that kept 15% of the CPU in softirq); an endpoint with an IPv6
    # address turns it on for its own interface (enable_ipv6).
    settings = [("all/accept_dad", "0"), ("default/accept_dad", "0")]
    if ipv6_off:
        settings.append(("default/disable_ipv6", "1"))
    try:  # one walk through /proc/sys/net/ipv6 for the three (see _net_sysctl_dir)
        conf = os.open("/proc/sys/net/ipv6/conf", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # IPv6 disabled in this kernel
    try:
        for key, value in settings:
            with contextlib.suppress(OSError):
                _write_at(conf, key, value)
    finally:
        os.close(conf)


def create(path: str, sandbox: bool = True) -> NetnsHandle:
    """Create a new namespace bound at ``path`` with loopback up; return its handle.

    ``sandbox``: new interfaces start with IPv6 off (a container's namespace);
    False for namespaces that play a host (labs, tests). A file already at
    ``path`` is AlreadyExists. On failure nothing is left.
    """

    def body():
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None), "bind")
            _sandbox_defaults(sandbox)
            return open_socket()
        except BaseException:
            _libc.umount2(path.encode(), MNT_DETACH)
            os.unlink(path)
            raise

    with mapped(f"create network namespace {os.path.basename(path)}"):
        sock = _on_throwaway_thread(body)
    handle = NetnsHandle(path, Netlink(sock))
    try:
        handle.nl.set_link(1, up=True)  # loopback is always ifindex 1 in a new namespace
    except BaseException:
        handle.close()
        remove(path)
        raise
    return handle


def attach(path: str, pid: int) -> NetnsHandle:
    """Bind the namespace of process ``pid`` at ``path`` again (its bind mount was lost)."""
    proc = f"/proc/{pid}/ns/net"
    with mapped(f"attach network namespace of pid {pid}"):
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        try:
            _check(_libc.mount(proc.encode(), path.encode(), b"none", MS_BIND, None), "bind")
        except BaseException:
            os.unlink(path)
            raise
    return open_handle(path)


def open_handle(path: str) -> NetnsHandle:
    """A handle on an existing namespace (after a daemon restart)."""
    with mapped(f"open network namespace {os.path.basename(path)}"):
        sock = _on_throwaway_thread(lambda: (_setns(path), open_socket())[1])
    return NetnsHandle(path, Netlink(sock))


def remove(path: str) -> None:
    """Unmount and delete the namespace file; already gone is success.

    The kernel frees the namespace (and its devices) once nothing holds it.
    """
    _libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != E.EBUSY:
            raise errors.KernelError(f"remove network namespace {path}: {exc.strerror}", exc.errno) from exc


def run_in(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` inside the namespace at ``path`` on a throwaway thread.

    ``fn`` must only make syscalls (open /proc/sys files, sockets): it runs on a
    thread whose namespace differs from the rest of the process.
    """
    return _on_throwaway_thread(lambda: (_setns(path), fn())[1])


def _write_at(dir_fd: int | None, rel: str, value: str) -> None:
    fd = os.open(rel, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


# (st_dev, st_ino) of a network namespace, "ipv6" -> O_PATH descriptor of its /proc/sys/net/ipv6
_net_dirs: dict[tuple[int, int, str], int] = {}
_net_dirs_lock = threading.Lock()


def _net_sysctl_dir(proto: str) -> int:
    """An O_PATH descriptor of ``/proc/sys/net/<proto>`` as the calling thread's namespace sees it.

    Cached per namespace; call with ``_net_dirs_lock`` held and use it under the lock.

    procfs has one dcache for all namespaces, and /proc/sys/net is one dentry
    for all of them: each namespace that ever opened something under
    /proc/sys/net/ipv6 (every sandbox does, see :func:`_sandbox_defaults`) has
    its own ``ipv6`` dentry there, all with the same parent and name, hence on
    one hash chain, and a path walk compares against each of them
    (``proc_sys_compare``): 0.2 µs per namespace when idle, up to 1 µs on a
    busy machine, so 0.2-1 ms per write at 1000 containers, on every attach.
    Opening relative to this descriptor skips that component.
    """
    st = os.stat("/proc/thread-self/ns/net")
    key = (st.st_dev, st.st_ino, proto)
    fd = _net_dirs.get(key)
    if fd is None:
        fd = _net_dirs[key] = os.open(f"/proc/sys/net/{proto}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return fd


def _write_own(key: str, value: str) -> None:
    """Write a sysctl of the calling thread's own namespace."""
    parts = key.split(".", 2)
    if len(parts) == 3 and parts[0] == "net":
        with _net_dirs_lock:
            try:
                return _write_at(_net_sysctl_dir(parts[1]), parts[2].replace(".", "/"), value)
            except OSError:
                # a descriptor left from a namespace that is gone (its inode number reused)
                # fails like a missing key: drop them all and let the full path decide
                for fd in _net_dirs.values():
                    os.close(fd)
                _net_dirs.clear()
    _write_at(None, "/proc/sys/" + key.replace(".", "/"), value)


def sysctl_write(path: str | None, key: str, value: str) -> None:
    """Write ``/proc/sys/<key>`` in the namespace at ``path`` (None: the current one)."""
    proc = "/proc/sys/" + key.replace(".", "/")

    with mapped(f"sysctl {key}"):
        if path:
            run_in(path, lambda: _write_at(None, proc, value))
        else:
            _write_own(key, value)
