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

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import urllib.parse
from typing import Callable

from netmgr import errors, statefiles
from netmgr.store.base import KV, Compare, Event, Op

log = logging.getLogger("netmgr.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, mod_revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (id, revision) VALUES (1, 0);
"""
_PROBE_KEY = "\x00probe"  # sorts before every real key; never committed
_PROBE_BYTES = 16384  # a value with overflow pages: a probe that fits leaves room for a real write's pages


class SQLiteStore:
    """A :class:`~netmgr.store.base.Store` on one SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        with statefiles.guard(os.path.dirname(path) or ".", "create the state dir"):
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self._lock = threading.RLock()
        self._watches: list[tuple[str, Callable[[Event], None]]] = []
        #: True while the state dir is read-only: reads are served, each write first tries to reopen
        self.read_only = False
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_rw()
        except sqlite3.Error as exc:
            err = self._error(exc, "open the store")
            if getattr(err, "errno", None) != errno.EROFS:
                raise err from exc
        log.warning("the state dir of %s is read-only: serving the store read-only", self.path)
        self.read_only = True
        return self._open_ro()

    def _open_rw(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _open_ro(self) -> sqlite3.Connection:
        """A read-only connection; ``immutable`` when no ``-shm`` file is there (a clean stop removed it)."""
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        for suffix in ("", "&immutable=1"):
            db = sqlite3.connect(uri + suffix, uri=True, isolation_level=None, check_same_thread=False, timeout=10)
            try:
                db.execute("SELECT revision FROM meta WHERE id = 1").fetchone()
                return db
            except sqlite3.Error as exc:
                db.close()
                last = exc
        raise self._error(last, "open the store") from last

    def _reopen_rw(self) -> None:
        """Called before a write while read-only: the state dir may be writable again (remounted rw)."""
        if statefiles.probe(self.path) == errno.EROFS:
            raise errors.StorageError(f"{statefiles.STORAGE_ERRNOS[errno.EROFS]}: write the store {self.path}",
                                      errno.EROFS)
        try:
            db = self._open_rw()
        except sqlite3.Error as exc:
            raise self._error(exc, "write the store") from exc
        self._db.close()
        self._db, self.read_only = db, False
        log.info("the state dir of %s is writable again", self.path)

    def _error(self, exc: sqlite3.Error, action: str) -> errors.StorageError | errors.Unavailable:
        """A disk fault as StorageError; any other SQLite error as Unavailable."""
        return statefiles.storage_error(exc, self.path, action) or errors.Unavailable(f"{action} {self.path}: {exc}")

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc, "read the store") from exc

    def get(self, key: str) -> KV | None:
        """See :meth:`Store.get`."""
        rows = self._query("SELECT value, mod_revision FROM kv WHERE key = ?", (key,))
        row = rows[0] if rows else None
        return KV(key, json.loads(row[0]), row[1]) if row else None

    def list(self, prefix: str) -> list[KV]:
        """See :meth:`Store.list`."""
        upper = prefix + "\U0010ffff"
        rows = self._query("SELECT key, value, mod_revision FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                           (prefix, upper))
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
        return self._query("SELECT revision FROM meta WHERE id = 1")[0][0]

    def check_writable(self) -> None:
        """Raise StorageError unless a write can commit now (run before an operation that cannot be undone).

        A throwaway row is written and deleted in one transaction that commits:
        it needs the same kinds of pages in the WAL as a real write. Space can
        still run out between this check and the write; that write then fails
        the same way and the operation can be retried.
        """
        with self._lock:
            if self.read_only:
                self._reopen_rw()
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO kv (key, value, mod_revision) VALUES (?, ?, 0)",
                           (_PROBE_KEY, "0" * _PROBE_BYTES))
                db.execute("DELETE FROM kv WHERE key = ?", (_PROBE_KEY,))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(db)
                raise self._error(exc, "write the store") from exc

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        # after SQLITE_FULL/IOERR SQLite may have rolled back already: a failing ROLLBACK is no news
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def txn(self, compares: list[Compare], ops: list[Op]) -> bool:
        """See :meth:`Store.txn`."""
        events: list[Event] = []
        with self._lock:
            if self.read_only:
                self._reopen_rw()
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
                self._rollback(db)
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, "write the store") from exc
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
