"""The store contract: tests every backend must pass, written once.

Imported by ``tests/unit/test_store.py`` (SQLite) and
``tests/privileged/test_store_etcd.py`` (etcd); each defines the ``store``
fixture for its backend, and pytest collects these functions in both modules.
"""

from __future__ import annotations

import threading

from netmgr.store import Compare, Op

__all__ = [
    "test_list_by_prefix_sorted_no_over_matching",
    "test_delete",
    "test_revision_is_monotonic",
    "test_failed_writes_do_not_bump_revision",
    "test_txn_all_or_nothing",
    "test_txn_success_mixes_puts_and_deletes",
    "test_cas_race_between_threads_one_winner",
]

KEYS = ["networks/b", "networks/a", "networks2/x", "networks", "networks.", "network/y", "endpoints/a/1"]


def test_list_by_prefix_sorted_no_over_matching(store):
    for key in KEYS:
        store.put(key, {"k": key})
    assert [kv.key for kv in store.list("networks/")] == ["networks/a", "networks/b"]
    assert [kv.key for kv in store.list("networks2/")] == ["networks2/x"]
    assert [kv.value["k"] for kv in store.list("networks/")] == ["networks/a", "networks/b"]
    assert store.list("containers/") == []
    assert [kv.key for kv in store.list("endpoints/a/")] == ["endpoints/a/1"]
    assert [kv.key for kv in store.list("endpoints/b/")] == []
    assert [kv.key for kv in store.list("")] == sorted(KEYS)


def test_delete(store):
    store.put("k", {"v": 1})
    assert store.delete("k") is True
    assert store.get("k") is None
    assert store.delete("k") is False
    assert store.delete("never") is False


def test_revision_is_monotonic(store):
    revs = [store.revision()]
    revs.append(store.put("a", {}))
    revs.append(store.put("b", {}))
    store.delete("a")
    revs.append(store.revision())
    assert store.cas("c", {}, 0)
    revs.append(store.revision())
    assert store.txn([], [Op("d", {}), Op("e", {})])
    revs.append(store.revision())
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    # one transaction is one revision, shared by every key it wrote
    assert store.get("d").mod_revision == store.get("e").mod_revision == revs[-1]


def test_failed_writes_do_not_bump_revision(store):
    store.put("k", {})
    rev = store.revision()
    assert store.cas("k", {}, 0) is False
    assert store.delete("nope") is False
    assert store.txn([Compare("k", rev + 1)], [Op("x", {})]) is False  # a revision k never had
    assert store.revision() == rev


def test_txn_all_or_nothing(store):
    rev_a = store.put("a", {"v": 1})
    store.put("b", {"v": 1})
    before = store.revision()
    ok = store.txn([Compare("a", rev_a), Compare("b", 12345)], [Op("a", {"v": 2}), Op("b", None), Op("c", {"v": 2})])
    assert ok is False
    assert store.get("a").value == {"v": 1}
    assert store.get("b").value == {"v": 1}
    assert store.get("c") is None
    assert store.revision() == before


def test_txn_success_mixes_puts_and_deletes(store):
    rev_a = store.put("a", {"v": 1})
    store.put("b", {"v": 1})
    assert store.txn([Compare("a", rev_a), Compare("c", 0)], [Op("a", {"v": 2}), Op("b"), Op("c", {"v": 3})]) is True
    assert store.get("a").value == {"v": 2}
    assert store.get("b") is None
    assert store.get("c").value == {"v": 3}


def test_cas_race_between_threads_one_winner(store):
    results = []
    barrier = threading.Barrier(8)

    def worker(i):
        barrier.wait()
        results.append(store.cas("lock", {"owner": i}, 0))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
