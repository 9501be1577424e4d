"""netmgr.store.etcd against a real etcd on 127.0.0.1 (started by netmgr.testing.etcd).

Needs no root, but starts /usr/bin/etcd, so it lives with the privileged
tests that CI runs; skipped when etcd-server is not installed. One etcd per
module; every test works under its own key prefix.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time
import uuid

import pytest

from netmgr import errors
from netmgr.store import KV, Compare, Event, Op
from netmgr.store.etcd import RESYNC_KEY, EtcdStore, is_resync, parse_cluster_store
from netmgr.testing.etcd import ETCD_BINARY, EtcdCluster, EtcdServer, free_port
from tests.store_contract import *  # noqa: F401,F403 - the shared store contract, run on this backend
from tests.privileged.helpers import wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BINARY), reason=f"{ETCD_BINARY} not installed")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdServer(str(tmp_path_factory.mktemp("etcd"))) as server:
        yield server


@pytest.fixture
def prefix():
    return f"/nmt-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def store(etcd, prefix):
    s = EtcdStore([("127.0.0.1", etcd.client_port)], prefix=prefix, timeout=5)
    yield s
    s.close()


@pytest.fixture
def make_store(etcd, prefix):
    """More stores (on the module's etcd and prefix unless given); all closed afterwards."""
    made = []

    def make(endpoints=None, **kw):
        kw.setdefault("prefix", prefix)
        made.append(EtcdStore(endpoints or etcd.url, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def retry(fn, timeout=10.0):
    """``fn()`` until it stops raising Unavailable (etcd coming back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except errors.Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def raw(etcd, coro_fn):
    """Run ``coro_fn(client)`` with a plain aetcd client: an independent view of etcd."""
    import aetcd

    async def main():
        async with aetcd.Client("127.0.0.1", etcd.client_port, timeout=5) as client:
            return await coro_fn(client)

    return asyncio.run(main())


def raw_lease(etcd, prefix, key):
    """The lease etcd has attached to ``key`` (0: none)."""
    async def lease_of(client):
        got = await client.get((prefix + key).encode())
        return got.lease if got else None

    return raw(etcd, lease_of)


# -- the Store interface, as the SQLite tests check it ------------------------------------


def test_put_get_overwrite(store):
    assert store.get("networks/a") is None
    value = {"name": "a", "n": 1, "l": [1, 2], "d": {"x": None}, "u": "ünï"}
    rev = store.put("networks/a", value)
    assert store.get("networks/a") == KV("networks/a", value, rev)
    rev2 = store.put("networks/a", {"v": 2})
    assert rev2 > rev and store.get("networks/a") == KV("networks/a", {"v": 2}, rev2)
    store.put("labels/é", {"v": 1})
    assert [kv.key for kv in store.list("labels/")] == ["labels/é"]


def test_cas(store):
    assert store.cas("new", {"v": 1}, 0) is True
    assert store.cas("new", {"v": 2}, 0) is False
    assert store.get("new").value == {"v": 1}
    rev = store.put("k", {"v": 1})
    assert store.cas("k", {"v": 2}, rev) is True
    assert store.cas("k", {"v": 3}, rev) is False  # stale now
    assert store.cas("k", {"v": 3}, store.get("k").mod_revision) is True
    assert store.get("k").value == {"v": 3}
    assert store.cas("missing", {"v": 1}, 5) is False
    assert store.get("missing") is None
    rev = store.put("d", {"v": 1})
    store.delete("d")
    assert store.cas("d", {"v": 2}, rev) is False  # after a delete only 0 matches
    assert store.cas("d", {"v": 2}, 0) is True


def test_txn_same_key_twice_last_op_wins(store):
    assert store.txn([], [Op("a", {"v": 1}), Op("a", {"v": 2}), Op("b", {"v": 1}), Op("b")])
    assert store.get("a").value == {"v": 2}
    assert store.get("b") is None


def test_txn_with_unencodable_value_writes_nothing(store):
    before = store.revision()
    with pytest.raises(TypeError):
        store.txn([], [Op("a", {"v": 1}), Op("b", {"v": object()})])
    assert store.get("a") is None
    assert store.revision() == before


def test_too_many_ops_is_invalid_config(store):
    with pytest.raises(errors.InvalidConfig, match="too many operations"):
        store.txn([], [Op(f"k{i}", {}) for i in range(200)])


def test_two_stores_see_each_others_writes(store, make_store):
    other = make_store()
    rev = store.put("k", {"v": 1})
    assert other.get("k") == KV("k", {"v": 1}, rev)
    assert other.cas("k", {"v": 2}, rev) is True
    assert store.cas("k", {"v": 3}, rev) is False


def test_prefix_isolation(etcd, prefix, make_store):
    a = make_store(prefix=prefix + "a/")
    b = make_store(prefix=prefix + "b/")
    parent = make_store(prefix=prefix)
    seen: list[Event] = []
    a.watch("", seen.append)
    a.put("k", {"who": "a"})
    b.put("k", {"who": "b"})
    b.put("k2", {"who": "b"})
    assert a.get("k").value == {"who": "a"}
    assert b.get("k").value == {"who": "b"}
    assert [kv.key for kv in a.list("")] == ["k"]
    assert [kv.key for kv in parent.list("")] == ["a/k", "b/k", "b/k2"]
    assert b.delete("k") and a.get("k") is not None
    a.put("done", {})
    assert wait_for(lambda: len(seen) == 2)
    assert [e.key for e in seen] == ["k", "done"]


# -- watches ------------------------------------------------------------------------------


def test_watch_sees_puts_and_deletes_under_prefix(store):
    seen: list[Event] = []
    store.watch("networks/", seen.append)
    r1 = store.put("networks/a", {"v": 1})
    store.put("networks2/x", {"v": 1})
    store.put("endpoints/a/1", {"v": 1})
    store.delete("networks/a")
    r2 = store.revision()
    assert wait_for(lambda: len(seen) >= 2)
    assert [(e.key, e.value, e.revision, e.prev) for e in seen] == [
        ("networks/a", {"v": 1}, r1, None),
        ("networks/a", None, r2, {"v": 1}),
    ]


def test_watch_sees_each_op_of_a_txn_and_nothing_of_a_failed_one(store):
    seen: list[Event] = []
    store.watch("", seen.append)
    store.txn([], [Op("a", {"v": 1}), Op("b", {"v": 2})])
    store.txn([Compare("a", 0)], [Op("c", {"v": 3})])
    store.cas("a", {}, 0)
    store.put("end", {})
    assert wait_for(lambda: len(seen) == 3)
    assert [e.key for e in seen] == ["a", "b", "end"]
    assert seen[0].revision == seen[1].revision


def test_watch_cancel_is_idempotent_and_leaves_other_watches(store):
    seen: list[Event] = []
    other: list[Event] = []
    cancel = store.watch("k", seen.append)
    store.watch("k", other.append)
    store.put("k", {"v": 1})
    assert wait_for(lambda: len(seen) == 1 and len(other) == 1)
    cancel()
    cancel()
    store.put("k", {"v": 2})
    assert wait_for(lambda: len(other) == 2)
    time.sleep(0.1)
    assert len(seen) == 1


def test_watch_from_an_old_revision_replays_history(store):
    r1 = store.put("k", {"v": 1})
    store.put("k", {"v": 2})
    store.delete("k")
    seen: list[Event] = []
    store.watch("k", seen.append, start_revision=r1)
    assert wait_for(lambda: len(seen) == 3)
    assert [(e.value, e.revision) for e in seen] == [({"v": 1}, r1), ({"v": 2}, r1 + 1), (None, r1 + 2)]


def test_watch_callback_errors_do_not_stop_the_watch(store):
    seen: list[Event] = []

    def bad(event):
        seen.append(event)
        raise ValueError("boom")

    store.watch("", bad)
    store.put("a", {})
    store.put("b", {})
    assert wait_for(lambda: len(seen) == 2)


def test_watch_async_callback_is_awaited_in_order(store):
    seen: list[str] = []

    async def slow(event):
        await asyncio.sleep(0.02 if event.key == "a" else 0)
        seen.append(event.key)

    store.watch("", slow)
    for key in "abc":
        store.put(key, {})
    assert wait_for(lambda: len(seen) == 3)
    assert seen == ["a", "b", "c"]


def test_watch_resync_after_compaction(etcd, store):
    r1 = store.put("k", {"v": 1})
    store.put("k", {"v": 2})
    store.put("gone", {})
    store.delete("gone")
    now = store.put("k", {"v": 3})
    raw(etcd, lambda c: c.compact(now, physical=True))

    seen: list[Event] = []
    store.watch("", seen.append, start_revision=r1)
    assert wait_for(lambda: len(seen) == 1)
    assert is_resync(seen[0]) and seen[0].key == RESYNC_KEY and seen[0].revision >= now
    snapshot: list = []
    store.watch("", lambda e: None, start_revision=r1, on_resync=lambda kvs, rev: snapshot.append((kvs, rev)))
    assert wait_for(lambda: snapshot)
    kvs, rev = snapshot[0]
    assert kvs == [KV("k", {"v": 3}, now)] and rev >= now
    r5 = store.put("k", {"v": 4})  # the watch goes on after the resync
    assert wait_for(lambda: len(seen) == 2)
    assert (seen[1].key, seen[1].value, seen[1].revision) == ("k", {"v": 4}, r5)


def test_watch_resumes_after_etcd_restart(etcd, store, make_store):
    seen: list[Event] = []
    store.watch("", seen.append)
    store.put("before", {})
    assert wait_for(lambda: len(seen) == 1)
    etcd.kill()
    etcd.start()
    writer = make_store(timeout=2)
    revs = [retry(lambda i=i: writer.put(f"after{i}", {"i": i})) for i in range(5)]
    assert wait_for(lambda: len(seen) == 6, timeout=15)
    assert [e.key for e in seen] == ["before"] + [f"after{i}" for i in range(5)]
    assert [e.revision for e in seen[1:]] == revs


# -- leases -------------------------------------------------------------------------------


def test_lease_revoke_deletes_leased_keys_only(etcd, prefix, store):
    with pytest.raises(RuntimeError, match="grant_lease"):
        store.put("k", {}, lease=True)
    lease = store.grant_lease(5)
    assert store.lease_id == lease
    store.put("node", {"up": True}, lease=True)
    store.cas("peer", {"p": 1}, 0, lease=True)
    store.put("plain", {})
    assert raw_lease(etcd, prefix, "node") == lease
    with pytest.raises(RuntimeError, match="already holds"):
        store.grant_lease(5)
    store.revoke_lease()
    store.revoke_lease()  # idempotent
    assert store.lease_id is None
    assert store.get("node") is None and store.get("peer") is None
    assert store.get("plain") is not None


def test_lease_kept_alive_then_expires_when_keepalive_stops(make_store):
    owner, observer = make_store(), make_store()
    owner.grant_lease(2)
    owner.put("node", {"up": True}, lease=True)
    time.sleep(4)  # twice the TTL: only the keepalive keeps the key
    assert observer.get("node") is not None
    owner.close()  # keepalive stops; close does not revoke
    t0 = time.monotonic()
    assert wait_for(lambda: observer.get("node") is None, timeout=6)
    print(f"\nleased key vanished {time.monotonic() - t0:.1f}s after its owner closed (ttl 2s)")


def test_lost_lease_is_regranted_and_keys_re_put(etcd, prefix, make_store):
    lost: list[int] = []
    owner = make_store(on_lease_lost=lost.append)
    old = owner.grant_lease(2)
    owner.put("node", {"n": 1}, lease=True)
    owner.put("peer", {"p": 1}, lease=True)
    owner.put("peer", {"p": 2}, lease=True)
    owner.put("unleased", {"u": 1}, lease=True)
    owner.put("unleased", {"u": 2})  # a put without the lease detaches the key
    raw(etcd, lambda c: c.revoke_lease(old))  # behind the store's back: its keys are deleted
    assert wait_for(lambda: lost, timeout=5)  # the keepalive finds it gone
    mid = owner.lease_id
    raw(etcd, lambda c: c.revoke_lease(mid))
    owner.put("late", {"l": 1}, lease=True)  # finds the lease gone (unless the keepalive did), retries
    assert wait_for(lambda: len(lost) == 2, timeout=5)
    new = owner.lease_id
    assert lost == [mid, new] and len({old, mid, new}) == 3
    assert owner.get("node").value == {"n": 1} and owner.get("peer").value == {"p": 2}
    assert {key: raw_lease(etcd, prefix, key) for key in ("node", "peer", "late", "unleased")} == {
        "node": new, "peer": new, "late": new, "unleased": 0}
    owner.revoke_lease()
    assert owner.get("node") is None and owner.get("unleased") is not None


# -- failures, loops and threads -----------------------------------------------------------


def test_paused_etcd_raises_unavailable_within_timeout_then_recovers(etcd, make_store):
    s = make_store(timeout=1)
    seen: list[Event] = []
    s.watch("", seen.append)
    s.put("k", {"v": 1})
    etcd.pause()
    try:  # the timed-out writes reach etcd and apply after resume(): they use other keys
        for call in (lambda: s.get("k"), lambda: s.put("late", {}), lambda: s.list(""),
                     lambda: s.cas("late2", {}, 0), lambda: s.watch("x", print)):
            t0 = time.monotonic()
            with pytest.raises(errors.Unavailable) as exc:
                call()
            assert time.monotonic() - t0 < 3.5
            assert f"cluster store etcd://127.0.0.1:{etcd.client_port} is unreachable" in str(exc.value)
    finally:
        etcd.resume()
    assert retry(lambda: s.get("k")).value == {"v": 1}
    s.put("k2", {})
    assert wait_for(lambda: seen and seen[-1].key == "k2")
    assert {e.key for e in seen} <= {"k", "late", "late2", "k2"} and seen[0].key == "k"


def test_nothing_listening_is_unavailable(make_store):
    port = free_port()
    s = make_store(f"etcd://127.0.0.1:{port}", timeout=1)
    t0 = time.monotonic()
    with pytest.raises(errors.Unavailable, match=f"cluster store etcd://127.0.0.1:{port} is unreachable"):
        s.put("k", {})
    with pytest.raises(errors.Unavailable):
        s.watch("", print)
    assert time.monotonic() - t0 < 5


def test_several_endpoints_fail_over(etcd, make_store):
    s = make_store([("127.0.0.1", free_port()), ("127.0.0.1", etcd.client_port)], timeout=3)
    assert s.url == f"etcd://127.0.0.1:{s.endpoints[0][1]},127.0.0.1:{etcd.client_port}"
    rev = s.put("k", {})
    assert s.get("k").mod_revision == rev


def test_private_loop_mode(store):
    threads: list[threading.Thread] = []
    errs: list[Exception] = []

    def callback(event):
        threads.append(threading.current_thread())
        try:
            store.get(event.key)  # a sync call on the loop thread would deadlock
        except RuntimeError as exc:
            errs.append(exc)

    store.watch("", callback)
    store.put("k", {})
    assert wait_for(lambda: errs)
    assert threads[0].name == "netmgr-etcd" and threads[0] is not threading.current_thread()
    assert "deadlock" in str(errs[0]) and "aget" in str(errs[0])
    thread = store._thread
    store.close()
    store.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        store.get("k")


def test_daemon_loop_mode(etcd, prefix):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="daemon-loop")
    thread.start()
    s = EtcdStore(etcd.url, prefix=prefix, loop=loop, timeout=5)
    try:
        seen: list[tuple[str, str]] = []
        s.watch("", lambda e: seen.append((e.key, threading.current_thread().name)))
        rev = s.put("k", {"v": 1})  # from this thread: submitted to the daemon's loop

        async def on_loop():
            got = await s.aget("k")
            await s.aput("k2", {"v": 2})
            kvs = await s.alist("")
            ok = await s.atxn([Compare("k", rev)], [Op("k", {"v": 3})])
            try:
                s.get("k")
            except RuntimeError as exc:
                return got, kvs, ok, exc

        got, kvs, ok, exc = asyncio.run_coroutine_threadsafe(on_loop(), loop).result(10)
        assert got.value == {"v": 1} and [kv.key for kv in kvs] == ["k", "k2"] and ok
        assert "event loop thread" in str(exc)
        with pytest.raises(RuntimeError, match="must be awaited on the store's loop"):
            asyncio.run(s.aget("k"))
        assert wait_for(lambda: len(seen) == 3)
        assert {name for _, name in seen} == {"daemon-loop"}
        s.close()
        assert loop.is_running()  # the daemon's loop is not the store's to stop
    finally:
        s.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_import_starts_nothing_and_loads_no_grpc():
    code = ("import sys, threading, netmgr.store.etcd; "
            "assert 'aetcd' not in sys.modules and 'grpc' not in sys.modules, 'loaded'; "
            "assert threading.active_count() == 1")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[2])


@pytest.mark.parametrize("url, expected", [
    ("etcd://10.0.0.1:2379", [("10.0.0.1", 2379)]), ("etcd://[fd00::1]:2379", [("fd00::1", 2379)]),
    ("etcd://10.0.0.1:2379,10.0.0.2:2380", [("10.0.0.1", 2379), ("10.0.0.2", 2380)]),
    ("etcd://etcd-1.lab:2379", [("etcd-1.lab", 2379)]),
])
def test_parse_cluster_store(url, expected):
    assert parse_cluster_store(url) == expected


@pytest.mark.parametrize("url", [
    "", "10.0.0.1:2379", "http://10.0.0.1:2379", "consul://h:8500", "etcd://", "etcd://h", "etcd://h:0",
    "etcd://h:99999", "etcd://h:1/path", "etcd://h:1,", "etcd://::1:2379", "etcd://h_x:1", "etcd://h:1 ",
    "etcd://[10.0.0.1]:2379", "etcd://[zz]:1",
])
def test_parse_cluster_store_rejects(url):
    with pytest.raises(errors.InvalidConfig, match="cluster store|etcd://HOST:PORT"):
        parse_cluster_store(url)


def test_several_hostnames_are_refused():
    with pytest.raises(errors.InvalidConfig, match="IPv4 or all IPv6"):
        EtcdStore("etcd://a.lab:2379,b.lab:2379")


def test_three_member_cluster_survives_one_member_down(tmp_path, make_store):
    with EtcdCluster(str(tmp_path), 3) as cluster:
        s = make_store(cluster.url, timeout=3)
        seen: list[Event] = []
        s.watch("", seen.append)
        s.put("a", {})
        cluster.members[0].kill()  # the member the channel picked first
        revs = [retry(lambda i=i: s.put(f"b{i}", {})) for i in range(3)]
        assert wait_for(lambda: [e.key for e in seen] == ["a", "b0", "b1", "b2"], timeout=15)
        assert [e.revision for e in seen[1:]] == revs


def test_latency(store):
    """Printed, never asserted: put latency and put → watch event latency in one process."""
    n = 200
    got: dict[int, float] = {}
    store.watch("lat/", lambda e: got.__setitem__(e.value["i"], time.perf_counter()))
    put_ms, event_ms = [], []
    for i in range(n):
        t0 = time.perf_counter()
        store.put(f"lat/{i % 10}", {"i": i})
        put_ms.append((time.perf_counter() - t0) * 1000)
        assert wait_for(lambda i=i: i in got)
        event_ms.append((got[i] - t0) * 1000)

    def summary(xs):
        return f"median {statistics.median(xs):.2f} ms, p95 {statistics.quantiles(xs, n=20)[-1]:.2f} ms"

    print(f"\netcd put latency ({n}): {summary(put_ms)}\netcd put->watch event ({n}): {summary(event_ms)}")
