"""Stores: one interface (:mod:`.base`), an embedded SQLite backend, an etcd backend later."""

from netmgr.store.base import KV, Compare, Event, Op, Store
from netmgr.store.sqlite import SQLiteStore

__all__ = ["KV", "Compare", "Event", "Op", "Store", "SQLiteStore"]
