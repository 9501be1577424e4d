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
    for key, value in settings:
        try:
            with open(f"/proc/sys/net/ipv6/conf/{key}", "w") as f:
                f.write(value)
        except OSError:
            pass  # IPv6 disabled in this kernel


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


def sysctl_write(path: str | None, key: str, value: str) -> None:
    """Write ``/proc/sys/<key>`` in the namespace at ``path`` (None: the current one)."""
    proc = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(proc, "w") as f:
            f.write(value)

    with mapped(f"sysctl {key}"):
        run_in(path, write) if path else write()
