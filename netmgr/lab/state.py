"""The record of a lab: ``/run/netmgr-labs/NAME/state.json``.

The record is the lab's memory of everything it made. It is written
*before* each object is created (intent first), so whatever happens to the
tool or to a daemon afterwards — a crash halfway through ``up``, a SIGKILL,
a dead netmgrd — ``down`` knows every namespace, process, mount and
directory to remove. Keys::

    name, topology (absolute path), status (creating | up | failed | removing),
    created (unix time), tool_pid (the ``lab up`` process, while it runs)
    namespaces   [path]                       every netns file under /run/netns
    processes    [{role, pid, marker}]        etcd members, daemons; ``marker`` is a path
                                              that appears in the process's command line
    state_dirs   [path]                       the daemons' state dirs (shims, cgroups)
    underlay     {netns, gateway, outside, subnet}
    etcd         {url, members: [{name, address, netns, data_dir}]}
    hosts        {name: {netns, dir, socket, address}}

Writes are atomic (a temporary file renamed over the old one), so a record
is never half-written. The lab's directory is created with ``mkdir``, which
is also what makes a second ``up`` of the same name fail at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time

from netmgr import errors

__all__ = ["LABS_DIR", "LabExists", "LabNotFound", "LabRecord", "lab_dir", "list_names"]

#: where lab records and the lab's files live (tmpfs: a lab does not outlive a reboot, nor does a netns)
LABS_DIR = os.environ.get("NETMGR_LABS_DIR", "/run/netmgr-labs")


class LabExists(errors.AlreadyExists):
    """``up`` of a name that already has a record."""


class LabNotFound(errors.NotFound):
    """No record of that lab."""


def lab_dir(name: str) -> str:
    """The directory of lab ``name``."""
    return os.path.join(LABS_DIR, name)


def list_names() -> list[str]:
    """Names of every lab with a directory (a record, or an ``up`` that died before writing one), sorted."""
    try:
        entries = os.listdir(LABS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if os.path.isdir(os.path.join(LABS_DIR, n)))


class LabRecord:
    """One lab's state record; :meth:`save` after every change."""

    def __init__(self, name: str, data: dict) -> None:
        self.name = name
        self.dir = lab_dir(name)
        self.data = data
        self._lock_fd: int | None = None

    @property
    def path(self) -> str:
        """``LABS_DIR/NAME/state.json``."""
        return os.path.join(self.dir, "state.json")

    # -- creating and opening ------------------------------------------------------

    @classmethod
    def create(cls, name: str, topology: str) -> LabRecord:
        """Make the lab's directory and first record (held locked); :class:`LabExists` if taken."""
        os.makedirs(LABS_DIR, mode=0o755, exist_ok=True)
        try:
            os.mkdir(lab_dir(name), 0o700)
        except FileExistsError:
            raise LabExists(f"lab {name} already exists (netmgr lab down {name} removes it)") from None
        rec = cls(name, {
            "name": name, "topology": os.path.abspath(topology), "status": "creating", "created": time.time(),
            "tool_pid": os.getpid(), "namespaces": [], "processes": [], "state_dirs": [],
            "underlay": {}, "etcd": {}, "hosts": {}, "networks": [], "containers": [],
        })
        rec.lock(wait=False)
        rec.save()
        return rec

    @classmethod
    def open(cls, name: str) -> LabRecord:
        """The record of lab ``name``; :class:`LabNotFound` if there is none."""
        try:
            with open(os.path.join(lab_dir(name), "state.json")) as f:
                data = json.load(f)
        except FileNotFoundError:
            if os.path.isdir(lab_dir(name)):  # up died between mkdir and its first write
                return cls(name, {"name": name, "status": "failed"})
            raise LabNotFound(f"lab {name} not found") from None
        except ValueError as exc:
            raise errors.InvalidConfig(f"lab {name}: unreadable record {lab_dir(name)}/state.json: {exc}") from None
        return cls(name, data)

    # -- changing ---------------------------------------------------------------------

    def save(self) -> None:
        """Write the record atomically."""
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def add(self, key: str, item) -> None:
        """Append ``item`` to the list ``key`` and save (call *before* creating the object)."""
        self.data.setdefault(key, []).append(item)
        self.save()

    def set(self, key: str, value) -> None:
        """Set ``key`` and save."""
        self.data[key] = value
        self.save()

    def get(self, key: str, default=None):
        """A value of the record."""
        return self.data.get(key, default)

    # -- the lock: held by ``up`` for its whole run, taken by ``down`` --------------------

    def lock(self, wait: bool, timeout: float = 30.0) -> bool:
        """Take ``NAME/lock``; without ``wait`` return False at once when another process holds it."""
        fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return True
            except BlockingIOError:
                if not wait or time.monotonic() > deadline:
                    os.close(fd)
                    if wait:
                        raise errors.Conflict(f"lab {self.name} is locked by another netmgr lab command") from None
                    return False
                time.sleep(0.05)

    def unlock(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
