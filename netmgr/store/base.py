"""The store interface shared by the embedded (SQLite) and cluster (etcd) backends.

Keys are ``/``-separated strings (``networks/<id>``, ``endpoints/<net>/<ep>``);
values are JSON-serialisable dicts. Every write bumps a store-wide revision,
as etcd does, so compare-and-swap and watches work the same on both backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class KV:
    """One stored key with its value and the revision of its last write."""

    key: str
    value: dict
    mod_revision: int


@dataclass(frozen=True)
class Op:
    """One write inside a transaction: a put (value set) or a delete (value None)."""

    key: str
    value: dict | None = None


@dataclass(frozen=True)
class Compare:
    """A transaction guard: the key's mod revision must equal ``mod_revision`` (0: absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Event:
    """A change seen by a watch: ``value`` None means the key was deleted."""

    key: str
    value: dict | None
    revision: int = 0
    prev: dict | None = field(default=None, compare=False)


class Store(Protocol):
    """What the controller, drivers and IPAM need from a store."""

    def get(self, key: str) -> KV | None:
        """The key's value, or None."""

    def put(self, key: str, value: dict) -> int:
        """Write unconditionally; return the new revision."""

    def cas(self, key: str, value: dict, mod_revision: int) -> bool:
        """Write only if the key's revision is ``mod_revision`` (0: key must be absent)."""

    def delete(self, key: str) -> bool:
        """Delete; False when the key was not there."""

    def list(self, prefix: str) -> list[KV]:
        """Every key under ``prefix``, sorted by key."""

    def txn(self, compares: list[Compare], ops: list[Op]) -> bool:
        """Apply ``ops`` atomically if every compare holds; False (nothing written) otherwise."""

    def watch(self, prefix: str, callback: Callable[[Event], None], start_revision: int = 0) -> Callable[[], None]:
        """Call ``callback`` for each change under ``prefix``; return a cancel function."""

    def check_writable(self) -> None:
        """Raise :class:`~netmgr.errors.StorageError` unless a write can commit now.

        Called before a step that cannot be undone (removing kernel objects),
        so a full or read-only state dir fails the operation before it starts.
        """

    def close(self) -> None:
        """Release the backend."""
