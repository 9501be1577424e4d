"""The embedded store: SQLite in WAL mode under the daemon's state dir.

One table ``kv(key, value, mod_revision)`` plus a one-row revision counter.
Writes are transactions (``BEGIN IMMEDIATE``), so a compare-and-swap is
atomic against other processes too. ``synchronous=NORMAL`` in WAL mode keeps
the database consistent across a crash and costs no fsync per commit (the
last commits before a power loss may be lost; the daemon reconciles the
kernel with the store on start, so that is safe).

Watches are in-process: this backend serves one daemon.
"""

from __future__ import annotations

import json
import os
import sqlite3
import logging
import threading
from typing import Callable

from netmgr import errors
from netmgr.store.base import KV, Compare, Event, Op

log = logging.getLogger("netmgr.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, mod_revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (id, revision) VALUES (1, 0);
"""


class SQLiteStore:
    """A :class:`~netmgr.store.base.Store` on one SQLite file."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise errors.Unavailable(f"open store {path}: {exc}") from exc
        self._lock = threading.RLock()
        self._watches: list[tuple[str, Callable[[Event], None]]] = []

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def get(self, key: str) -> KV | None:
        """See :meth:`Store.get`."""
        with self._lock:
            row = self._db.execute("SELECT value, mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
        return KV(key, json.loads(row[0]), row[1]) if row else None

    def list(self, prefix: str) -> list[KV]:
        """See :meth:`Store.list`."""
        upper = prefix + "\U0010ffff"
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value, mod_revision FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, upper)
            ).fetchall()
        return [KV(k, json.loads(v), r) for k, v, r in rows]

    def put(self, key: str, value: dict) -> int:
        """See :meth:`Store.put`."""
        self.txn([], [Op(key, value)])
        return self.revision()

    def cas(self, key: str, value: dict, mod_revision: int) -> bool:
        """See :meth:`Store.cas`."""
        return self.txn([Compare(key, mod_revision)], [Op(key, value)])

    def delete(self, key: str) -> bool:
        """See :meth:`Store.delete`."""
        if self.get(key) is None:
            return False
        self.txn([], [Op(key, None)])
        return True

    def revision(self) -> int:
        """The store-wide revision of the last write."""
        with self._lock:
            return self._db.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0]

    def txn(self, compares: list[Compare], ops: list[Op]) -> bool:
        """See :meth:`Store.txn`."""
        events: list[Event] = []
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                if not self._compares_hold(compares):
                    db.execute("ROLLBACK")
                    return False
                rev = db.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0] + 1
                for op in ops:
                    events.append(self._apply(op, rev))
                db.execute("UPDATE meta SET revision = ? WHERE id = 1", (rev,))
                db.execute("COMMIT")
            except BaseException as exc:  # also a value json cannot encode: never leave the txn open
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise errors.Unavailable(f"store write failed: {exc}") from exc
                raise
            watches = list(self._watches)
        self._notify(watches, events)
        return True

    def _compares_hold(self, compares: list[Compare]) -> bool:
        for cmp in compares:
            row = self._db.execute("SELECT mod_revision FROM kv WHERE key = ?", (cmp.key,)).fetchone()
            if (row[0] if row else 0) != cmp.mod_revision:
                return False
        return True

    def _apply(self, op: Op, rev: int) -> Event:
        if op.value is None:
            self._db.execute("DELETE FROM kv WHERE key = ?", (op.key,))
        else:
            self._db.execute(
                "INSERT INTO kv (key, value, mod_revision) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision",
                (op.key, json.dumps(op.value, separators=(",", ":")), rev),
            )
        return Event(op.key, op.value, rev)

    def watch(self, prefix: str, callback: Callable[[Event], None], start_revision: int = 0) -> Callable[[], None]:
        """See :meth:`Store.watch` (in-process only; ``start_revision`` is not replayed)."""
        entry = (prefix, callback)
        with self._lock:
            self._watches.append(entry)

        def cancel() -> None:
            with self._lock:
                if entry in self._watches:
                    self._watches.remove(entry)

        return cancel

    @staticmethod
    def _notify(watches, events: list[Event]) -> None:
        # the write has committed: a failing watcher must not turn it into an error
        for event in events:
            for prefix, callback in watches:
                if event.key.startswith(prefix):
                    try:
                        callback(event)
                    except Exception:
                        log.exception("store watch callback for %r failed", prefix)
