"""netmgr.store.sqlite: the embedded store, on a file under tmp_path."""

from __future__ import annotations

import sqlite3

import pytest

from netmgr import errors
from netmgr.store import KV, Compare, Event, Op, SQLiteStore
from tests.store_contract import *  # noqa: F401,F403 - the shared store contract, run on this backend


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "state" / "store.db")


@pytest.fixture
def store(path):
    s = SQLiteStore(path)
    yield s
    s.close()


def test_get_missing(store):
    assert store.get("networks/nope") is None


def test_put_get(store):
    rev = store.put("networks/a", {"name": "a", "n": 1, "l": [1, 2], "d": {"x": None}})
    kv = store.get("networks/a")
    assert kv == KV("networks/a", {"name": "a", "n": 1, "l": [1, 2], "d": {"x": None}}, rev)


def test_put_overwrites_and_bumps_mod_revision(store):
    r1 = store.put("k", {"v": 1})
    r2 = store.put("k", {"v": 2})
    assert r2 > r1
    assert store.get("k") == KV("k", {"v": 2}, r2)


def test_creates_parent_dir(tmp_path):
    p = tmp_path / "a" / "b" / "store.db"
    s = SQLiteStore(str(p))
    s.put("k", {})
    s.close()
    assert p.exists()


def test_list_empty_prefix_is_everything(store):
    store.put("b", {})
    store.put("a/x", {})
    assert [kv.key for kv in store.list("")] == ["a/x", "b"]


def test_list_prefix_with_like_wildcards_is_literal(store):
    store.put("a%/1", {})
    store.put("a_/1", {})
    store.put("ab/1", {})
    assert [kv.key for kv in store.list("a%/")] == ["a%/1"]
    assert [kv.key for kv in store.list("a_/")] == ["a_/1"]


def test_unicode_keys_and_values(store):
    store.put("labels/é", {"v": "ünï"})
    assert store.get("labels/é").value == {"v": "ünï"}
    assert [kv.key for kv in store.list("labels/")] == ["labels/é"]


# -- compare-and-swap and transactions ----------------------------------------------------


def test_cas_revision_zero_creates_only(store):
    assert store.cas("k", {"v": 1}, 0) is True
    assert store.cas("k", {"v": 2}, 0) is False
    assert store.get("k").value == {"v": 1}


def test_cas_with_current_and_stale_revision(store):
    rev = store.put("k", {"v": 1})
    assert store.cas("k", {"v": 2}, rev) is True
    assert store.cas("k", {"v": 3}, rev) is False  # stale now
    assert store.get("k").value == {"v": 2}
    assert store.cas("k", {"v": 3}, store.get("k").mod_revision) is True
    assert store.get("k").value == {"v": 3}


def test_cas_on_missing_key_with_nonzero_revision(store):
    assert store.cas("k", {"v": 1}, 5) is False
    assert store.get("k") is None


def test_cas_after_delete_needs_zero(store):
    rev = store.put("k", {"v": 1})
    store.delete("k")
    assert store.cas("k", {"v": 2}, rev) is False
    assert store.cas("k", {"v": 2}, 0) is True


def test_txn_with_unencodable_value_writes_nothing_and_store_stays_usable(store):
    before = store.revision()
    with pytest.raises(TypeError):
        store.txn([], [Op("a", {"v": 1}), Op("b", {"v": object()})])
    assert store.get("a") is None
    assert store.revision() == before
    store.put("c", {"v": 1})  # no transaction left open
    assert store.get("c").value == {"v": 1}


def test_two_handles_on_one_file_see_each_others_writes(path):
    a, b = SQLiteStore(path), SQLiteStore(path)
    try:
        rev = a.put("k", {"v": 1})
        assert b.get("k") == KV("k", {"v": 1}, rev)
        assert b.cas("k", {"v": 2}, rev) is True
        assert a.cas("k", {"v": 3}, rev) is False
        assert a.revision() == b.revision()
    finally:
        a.close()
        b.close()


# -- watches --------------------------------------------------------------------------


def test_watch_sees_puts_and_deletes_under_prefix(store):
    seen: list[Event] = []
    store.watch("networks/", seen.append)
    r1 = store.put("networks/a", {"v": 1})
    store.put("networks2/x", {"v": 1})
    store.put("endpoints/a/1", {"v": 1})
    store.delete("networks/a")
    r2 = store.revision()
    assert [(e.key, e.value, e.revision) for e in seen] == [
        ("networks/a", {"v": 1}, r1),
        ("networks/a", None, r2),
    ]


def test_watch_sees_each_op_of_a_txn_and_nothing_of_a_failed_one(store):
    seen: list[Event] = []
    store.watch("", seen.append)
    store.txn([], [Op("a", {"v": 1}), Op("b", {"v": 2})])
    store.txn([Compare("a", 0)], [Op("c", {"v": 3})])
    store.cas("a", {}, 0)
    assert [e.key for e in seen] == ["a", "b"]
    assert seen[0].revision == seen[1].revision


def test_watch_cancel(store):
    seen: list[Event] = []
    other: list[Event] = []
    cancel = store.watch("k", seen.append)
    store.watch("k", other.append)
    store.put("k", {"v": 1})
    cancel()
    cancel()  # idempotent
    store.put("k", {"v": 2})
    assert len(seen) == 1
    assert len(other) == 2


def test_watch_callback_may_read_the_store(store):
    reads = []
    store.watch("k", lambda e: reads.append(store.get(e.key)))
    store.put("k", {"v": 1})
    assert reads[0].value == {"v": 1}


# -- persistence and pragmas ---------------------------------------------------------------


def test_reopen_keeps_data_and_revision(path):
    s = SQLiteStore(path)
    s.put("networks/a", {"name": "a"})
    s.put("networks/b", {"name": "b"})
    s.delete("networks/b")
    rev = s.revision()
    s.close()
    s2 = SQLiteStore(path)
    try:
        assert s2.get("networks/a").value == {"name": "a"}
        assert s2.get("networks/b") is None
        assert s2.revision() == rev
        assert s2.put("networks/c", {}) == rev + 1
    finally:
        s2.close()


def test_wal_mode(store, path):
    store.put("k", {})
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_open_failure_is_unavailable(tmp_path):
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(errors.Unavailable) as exc:
        SQLiteStore(str(target))  # a directory, not a database file
    assert str(target) in str(exc.value)
