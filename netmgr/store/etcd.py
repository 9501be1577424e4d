"""The cluster store: etcd v3 (through aetcd) behind the same interface as :class:`SQLiteStore`.

Loops and threads: gRPC channels belong to one event loop, so the store runs on
one, the daemon's (``loop``) or else a private loop on a thread that ``close()``
stops. The synchronous :class:`Store` methods (the controller's worker thread)
submit to that loop and wait; on the loop thread itself they would deadlock and
raise RuntimeError: code there awaits the ``a``-twins (``aget``, ``aput``, …).

Keys are stored as ``prefix + key`` so several labs or tests share one etcd;
callers never see the prefix. Values are JSON; ``KV.mod_revision`` is etcd's.

Watch callbacks run **on the loop thread**, one at a time, in revision order:
they must not block nor call the synchronous methods (hand the event to a
worker, or await the ``a``-twins; a coroutine callback is awaited). A watch
resumes after a lost connection from the revision after its last event. If
that revision was compacted, the store calls ``on_resync(kvs, revision)`` with
the prefix as of ``revision``, or else the callback with the resync signal
``Event(RESYNC_KEY, None, revision)`` (:func:`is_resync`): list the prefix
again. Either way events go on from ``revision + 1``.

Leases: ``grant_lease`` takes the node liveness lease, kept alive every
``ttl/3``; ``put(..., lease=True)`` attaches a key to it. If it is lost (it
expired while etcd was unreachable) the store grants a new one, re-puts every
key it had attached, then calls ``on_lease_lost(new_id)`` on the loop thread.

Errors: every call has a deadline (``timeout``); connection failures and timeouts raise
``Unavailable("cluster store etcd://H:P is unreachable: get k: …")``; requests etcd refuses
(too large) raise InvalidConfig. Importing this module loads neither aetcd nor grpc.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import logging
import re
import threading
from typing import Any, Callable

from netmgr import errors
from netmgr.store.base import KV, Compare, Event, Op

__all__ = ["EtcdStore", "parse_cluster_store", "is_resync", "RESYNC_KEY"]

log = logging.getLogger("netmgr.store.etcd")

#: the key of the resync signal a watch callback gets after a compaction (no real key is empty)
RESYNC_KEY = ""
_TXN_CHUNK = 100  # etcd refuses transactions of more than --max-txn-ops (128 by default)
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 2.0
_CHANNEL_OPTIONS = {  # reconnect within 2 s (not gRPC's 120 s); pings find a dead host (etcd allows >= 5 s)
    "grpc.max_receive_message_length": 128 << 20, "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 2000,
    "grpc.keepalive_time_ms": 10000, "grpc.keepalive_timeout_ms": 5000,
}
_ENDPOINT = re.compile(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})")
_USAGE = "expected etcd://HOST:PORT[,HOST:PORT...]"


def parse_cluster_store(url: str) -> list[tuple[str, int]]:
    """``"etcd://H:P[,H:P]"`` → ``[(host, port), …]`` (IPv6 in brackets); InvalidConfig otherwise."""
    if not isinstance(url, str) or not url.startswith("etcd://"):
        raise errors.InvalidConfig(f"invalid cluster store {url!r}: {_USAGE}")
    endpoints = []
    for part in url[len("etcd://"):].split(","):
        m = _ENDPOINT.fullmatch(part)
        host, port = ((m[1], m[2]) if m[1] else (m[3], m[5])) if m else ("", "0")
        if not host or (m[1] and _ip_version(host) != 6) or not 0 < int(port) < 65536:
            raise errors.InvalidConfig(f"invalid cluster store {url!r}: bad endpoint {part!r}, {_USAGE}")
        endpoints.append((host, int(port)))
    return endpoints


def is_resync(event: Event) -> bool:
    """True for the resync signal: list the watched prefix again; events go on after it."""
    return event.key == RESYNC_KEY


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _grpc_target(endpoints: list[tuple[str, int]]) -> tuple[str, int]:
    """The ``(host, port)`` to give aetcd, which dials ``f"{host}:{port}"``."""
    v6 = {_ip_version(host) for host, _ in endpoints} == {6}
    addrs = [f"[{h}]:{p}" if v6 else f"{h}:{p}" for h, p in endpoints]
    if len(endpoints) > 1:
        if not v6 and {_ip_version(host) for host, _ in endpoints} != {4}:
            raise errors.InvalidConfig(f"several etcd endpoints must all be IPv4 or all IPv6 addresses: {addrs}")
        # gRPC's multi-address target: the channel fails over between the members by itself
        addrs = [("ipv6:" if v6 else "ipv4:") + ",".join(addrs)]
    host, _, port = addrs[0].rpartition(":")
    return host, int(port)


def _range_end(key: bytes) -> bytes:
    """The end of etcd's range for every key starting with ``key`` (``b"\\0"``: every key)."""
    if not key:
        return b"\0"
    return key[:-1] + bytes([key[-1] + 1]) if key[-1] < 0xFF else _range_end(key[:-1])


def _encode(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(raw: bytes) -> Any:
    return json.loads(raw) if raw else None


async def _invoke(what: str, fn: Callable, *args: Any) -> None:
    """Call a user callback (awaited if it is a coroutine); log its errors, never raise them."""
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:  # the write has committed: a failing callback must not stop the others
        log.exception("%s failed", what)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class EtcdStore:
    """A :class:`~netmgr.store.base.Store` on an etcd v3 cluster (see the module docstring)."""

    def __init__(self, endpoints: list[tuple[str, int]] | str, prefix: str = "/netmgr/",
                 loop: asyncio.AbstractEventLoop | None = None, timeout: float = 5.0,
                 on_lease_lost: Callable[[int], Any] | None = None) -> None:
        self.endpoints = parse_cluster_store(endpoints) if isinstance(endpoints, str) else [
            (str(h), int(p)) for h, p in endpoints]
        if not self.endpoints:
            raise errors.InvalidConfig(f"no etcd endpoint given: {_USAGE}")
        #: ``etcd://H:P[,H:P]``, named in every error message
        self.url = "etcd://" + ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        # a prefix without its "/" would overlap its neighbours ("/lab1" and "/lab10")
        self.prefix, self.timeout = prefix + ("/" if prefix and not prefix.endswith("/") else ""), float(timeout)
        #: called on the loop thread with the new lease ID once a lost lease is replaced
        self.on_lease_lost = on_lease_lost
        self._target, self._pfx = _grpc_target(self.endpoints), self.prefix.encode()
        self._client, self._watches = None, set()
        self._lease_id: int | None = None
        self._lease_ttl, self._lease_dirty, self._lease_lock = 0, False, asyncio.Lock()
        self._leased: dict[str, bytes] = {}  # key → last value put with the lease: re-put if it is lost
        self._keepalive: asyncio.Task | None = None
        self._closed, self._thread = False, None
        if loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="netmgr-etcd", daemon=True)
            self._thread.start()
        self._loop = loop

    def _sync(self, name: str, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` on the store's loop from another thread and wait for it."""
        if self._closed and name != "close" or not self._loop.is_running():
            raise RuntimeError(f"EtcdStore.{name}(): the store is closed or its event loop is not running")
        if _running_loop() is self._loop:
            raise RuntimeError(f"EtcdStore.{name}() called on the store's event loop thread, where it "
                               f"would deadlock: use 'await store.a{name}(...)' there")
        future, budget = asyncio.run_coroutine_threadsafe(fn(*args), self._loop), 2 * self.timeout + 1
        try:  # each RPC has its own deadline: this one guards a stalled loop
            return future.result(budget)
        except TimeoutError as exc:
            future.cancel()
            raise self._unreachable(name, f"no answer within {budget:g}s") from exc

    def _on_loop(self, name: str) -> None:
        if self._closed:
            raise RuntimeError(f"EtcdStore.{name}(): the store is closed")
        if _running_loop() is not self._loop:
            raise RuntimeError(f"EtcdStore.a{name}() must be awaited on the store's loop; "
                               f"use store.{name}() from other threads")

    @property
    def _rpc(self):
        import aetcd.rpc  # here, not at import time: local networks never load aetcd nor grpc

        return aetcd.rpc

    async def _conn(self):
        """The aetcd client, made on first use (making the channel does no I/O)."""
        if self._client is None:
            import aetcd

            self._client = aetcd.Client(*self._target, timeout=self.timeout, options=_CHANNEL_OPTIONS)
        await self._client.connect()
        return self._client

    async def _call(self, what: str, service: str, method: str, request: Any):
        """One unary RPC with the store's deadline and error mapping."""
        client = await self._conn()
        stub = client.kvstub if service == "kv" else client.leasestub
        try:
            return await getattr(stub, method)(request, timeout=self.timeout, metadata=client.metadata)
        except Exception as exc:
            self._raise(what, exc)

    def _raise(self, what: str, exc: BaseException):
        mapped = self._map_error(what, exc)
        if mapped is exc:
            raise exc
        raise mapped from exc

    def _unreachable(self, what: str, detail: str) -> errors.Unavailable:
        return errors.Unavailable(f"cluster store {self.url} is unreachable: {what}: {detail}")

    def _map_error(self, what: str, exc: BaseException) -> BaseException:
        """The netmgr error for a gRPC failure or timeout; anything else unchanged."""
        if isinstance(exc, (errors.NetmgrError, asyncio.CancelledError)):
            return exc
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return self._unreachable(what, str(exc) or f"no answer within {self.timeout:g}s")
        if not (callable(getattr(exc, "code", None)) and callable(getattr(exc, "details", None))):
            return exc  # not a gRPC error: a bug or bad input (TypeError from json), raised as is
        name, details = exc.code().name, exc.details() or exc.code().name
        if name == "DEADLINE_EXCEEDED":
            return self._unreachable(what, f"no answer within {self.timeout:g}s")
        if name in ("UNAVAILABLE", "CANCELLED"):
            return self._unreachable(what, details)
        if name == "INVALID_ARGUMENT":
            return errors.InvalidConfig(f"cluster store {self.url} refused {what}: {details}")
        if name == "NOT_FOUND":  # "requested lease not found"
            return errors.NotFound(f"cluster store {self.url}: {what}: {details}")
        return errors.Unavailable(f"cluster store {self.url} failed: {what}: {details}")

    def _key(self, key: str) -> bytes:
        return self._pfx + key.encode()

    def _unkey(self, raw: bytes) -> str:
        return raw[len(self._pfx):].decode()

    # -- the async twins: call them on the store's loop -----------------------------------

    async def aget(self, key: str) -> KV | None:
        """See :meth:`get`."""
        self._on_loop("get")
        resp = await self._call(f"get {key}", "kv", "Range", self._rpc.RangeRequest(key=self._key(key)))
        return KV(key, _decode(resp.kvs[0].value), resp.kvs[0].mod_revision) if resp.kvs else None

    async def alist(self, prefix: str) -> list[KV]:
        """See :meth:`list`."""
        self._on_loop("list")
        return (await self._list(prefix))[0]

    async def alist_at(self, prefix: str) -> tuple[list[KV], int]:
        """See :meth:`list_at`."""
        self._on_loop("list_at")
        return await self._list(prefix)

    async def _list(self, prefix: str) -> tuple[list[KV], int]:
        start = self._key(prefix)
        # etcd orders by key bytes, as SQLite orders TEXT (UTF-8, binary collation)
        request = self._rpc.RangeRequest(key=start or b"\0", range_end=_range_end(start),
                                         sort_order=self._rpc.RangeRequest.ASCEND)
        resp = await self._call(f"list {prefix}", "kv", "Range", request)
        return [KV(self._unkey(kv.key), _decode(kv.value), kv.mod_revision) for kv in resp.kvs], resp.header.revision

    async def arevision(self) -> int:
        """See :meth:`revision`."""
        self._on_loop("revision")
        request = self._rpc.RangeRequest(key=self._pfx or b"\0", count_only=True)
        return (await self._call("revision", "kv", "Range", request)).header.revision

    async def aput(self, key: str, value: dict, lease: bool = False) -> int:
        """See :meth:`put`."""
        self._on_loop("put")
        return (await self._write(f"put {key}", [], [Op(key, value)], lease)).header.revision

    async def acas(self, key: str, value: dict, mod_revision: int, lease: bool = False) -> bool:
        """See :meth:`cas`."""
        self._on_loop("cas")
        return (await self._write(f"cas {key}", [Compare(key, mod_revision)], [Op(key, value)], lease)).succeeded

    async def adelete(self, key: str) -> bool:
        """See :meth:`delete`."""
        self._on_loop("delete")
        resp = await self._write(f"delete {key}", [], [Op(key, None)], False)
        return resp.responses[0].response_delete_range.deleted > 0

    async def atxn(self, compares: list[Compare], ops: list[Op], lease: bool = False) -> bool:
        """See :meth:`txn`."""
        self._on_loop("txn")
        return (await self._write("txn", compares, ops, lease)).succeeded

    def _put_op(self, key: str, raw: bytes, lease_id: int):
        return self._rpc.RequestOp(request_put=self._rpc.PutRequest(key=self._key(key), value=raw, lease=lease_id))

    def _txn_request(self, compares: list[Compare], ops: list[Op], lease_id: int):
        rpc, last = self._rpc, {}
        for op in ops:  # etcd refuses a key twice in one txn; applied in order, the last op wins
            last.pop(op.key, None)
            last[op.key] = op
        success = [self._put_op(op.key, _encode(op.value), lease_id) if op.value is not None else
                   rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(op.key)))
                   for op in last.values()]
        compare = [rpc.Compare(key=self._key(c.key), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                               mod_revision=c.mod_revision) for c in compares]
        return rpc.TxnRequest(compare=compare, success=success)

    async def _write(self, what: str, compares: list[Compare], ops: list[Op], lease: bool):
        """One etcd transaction; every value is encoded before anything is sent."""
        if lease and self._lease_id is None:
            raise RuntimeError(f"EtcdStore {what} with lease=True needs grant_lease() first")
        lease_id = self._lease_id if lease else 0
        try:
            resp = await self._call(what, "kv", "Txn", self._txn_request(compares, ops, lease_id))
        except errors.NotFound:
            if not lease:
                raise
            await self._recover_lease(lease_id, expired=True)  # lost under us: replace it, retry once
            resp = await self._call(what, "kv", "Txn", self._txn_request(compares, ops, self._lease_id))
        if resp.succeeded:
            for op in ops:
                if lease and op.value is not None:
                    self._leased[op.key] = _encode(op.value)
                else:
                    self._leased.pop(op.key, None)  # deleted, or put without the lease: detached
        return resp

    async def awatch(self, prefix: str, callback: Callable[[Event], Any], start_revision: int = 0,
                     on_resync: Callable[[list[KV], int], Any] | None = None) -> Callable[[], None]:
        """See :meth:`watch`."""
        self._on_loop("watch")
        watch = _Watch(self, prefix, callback, start_revision, on_resync)
        self._watches.add(watch)
        try:
            await asyncio.wait_for(asyncio.shield(watch.created), 2 * self.timeout)
        except BaseException as exc:
            watch.cancel()
            self._raise(f"watch {prefix}", exc)
        return watch.cancel

    @property
    def lease_id(self) -> int | None:
        """The store's lease (None before :meth:`grant_lease` or after :meth:`revoke_lease`)."""
        return self._lease_id

    async def agrant_lease(self, ttl: int) -> int:
        """See :meth:`grant_lease`."""
        self._on_loop("grant_lease")
        if self._lease_id is not None:
            raise RuntimeError(f"EtcdStore already holds lease {self._lease_id:x}: revoke_lease() first")
        resp = await self._call("grant lease", "lease", "LeaseGrant", self._rpc.LeaseGrantRequest(TTL=int(ttl)))
        self._lease_id, self._lease_ttl = resp.ID, resp.TTL
        self._keepalive = self._loop.create_task(self._keep_alive())
        return resp.ID

    async def arevoke_lease(self) -> None:
        """See :meth:`revoke_lease`."""
        self._on_loop("revoke_lease")
        lease_id, self._lease_id = self._lease_id, None
        self._leased.clear()
        await self._stop_keepalive()
        if lease_id is not None:
            try:
                await self._call("revoke lease", "lease", "LeaseRevoke", self._rpc.LeaseRevokeRequest(ID=lease_id))
            except errors.NotFound:
                pass  # expired already

    async def _stop_keepalive(self) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _keep_alive(self) -> None:
        """Refresh the lease every ttl/3; replace it (and re-put its keys) when it is gone."""
        failing = False
        while self._lease_id is not None:
            await asyncio.sleep(self._lease_ttl / 3)
            lease_id = self._lease_id
            try:
                alive = await self._refresh(lease_id)
                if not alive or self._lease_dirty:
                    await self._recover_lease(lease_id, expired=not alive)
                failing = False
            except errors.NetmgrError as exc:  # etcd unreachable: keep trying, the lease may live on
                (log.debug if failing else log.warning)("keepalive of etcd lease %x: %s", lease_id, exc)
                failing = True

    async def _refresh(self, lease_id: int) -> bool:
        """One keepalive round trip; False when etcd no longer knows the lease."""
        client = await self._conn()
        call = client.leasestub.LeaseKeepAlive(timeout=max(self._lease_ttl / 3, 0.5), metadata=client.metadata)
        try:
            await call.write(self._rpc.LeaseKeepAliveRequest(ID=lease_id))
            resp = await call.read()
        except Exception as exc:
            self._raise("lease keepalive", exc)
        finally:
            call.cancel()
        return getattr(resp, "TTL", 0) > 0

    async def _recover_lease(self, lost_id: int, expired: bool) -> None:
        """Replace the ``expired`` lease ``lost_id`` (if still current) and re-put the keys it held."""
        async with self._lease_lock:
            if self._lease_id != lost_id:
                return  # replaced meanwhile by another caller, or revoked
            if expired:
                log.warning("etcd lease %x of %s is gone; granting a new one", lost_id, self.url)
                resp = await self._call("grant lease", "lease", "LeaseGrant",
                                        self._rpc.LeaseGrantRequest(TTL=self._lease_ttl))
                self._lease_id, self._lease_dirty = resp.ID, True
            if not self._lease_dirty:
                return
            items = list(self._leased.items())
            for i in range(0, len(items), _TXN_CHUNK):
                puts = [self._put_op(k, v, self._lease_id) for k, v in items[i:i + _TXN_CHUNK]]
                await self._call("re-put leased keys", "kv", "Txn", self._rpc.TxnRequest(success=puts))
            self._lease_dirty = False
        log.warning("etcd lease %x lost: now %x, %d keys re-put", lost_id, self._lease_id, len(items))
        if self.on_lease_lost is not None:
            await _invoke("on_lease_lost callback", self.on_lease_lost, self._lease_id)

    async def aclose(self) -> None:
        """See :meth:`close`."""
        if self._closed:
            return
        self._on_loop("close")
        self._closed = True
        for watch in list(self._watches):
            watch.cancel()
        await asyncio.gather(*[w.task for w in self._watches], return_exceptions=True)
        await self._stop_keepalive()
        if self._client is not None:
            try:
                await self._client.close()
            except Exception as exc:
                log.debug("closing the etcd channel: %s", exc)

    def close(self) -> None:
        """Cancel watches and keepalive, close the channel, stop a private loop (idempotent; the lease stays)."""
        if self._thread is None:  # the daemon's loop: not ours to stop
            return None if self._closed or not self._loop.is_running() else self._sync("close", self.aclose)
        if threading.current_thread() is self._thread:
            raise RuntimeError("EtcdStore.close() called on the store's loop thread: await store.aclose()")
        if self._thread.is_alive():
            try:
                self._sync("close", self.aclose)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(self.timeout)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    # -- the synchronous Store interface --------------------------------------------------

    def get(self, key: str) -> KV | None:
        """See :meth:`Store.get`."""
        return self._sync("get", self.aget, key)

    def list(self, prefix: str) -> list[KV]:
        """See :meth:`Store.list` (sorted by key; ``""`` lists everything under the store prefix)."""
        return self._sync("list", self.alist, prefix)

    def list_at(self, prefix: str) -> tuple[list[KV], int]:
        """:meth:`list` and the revision it was read at (watch from ``revision + 1`` to miss nothing)."""
        return self._sync("list_at", self.alist_at, prefix)

    def put(self, key: str, value: dict, lease: bool = False) -> int:
        """See :meth:`Store.put`; ``lease=True`` attaches the key to the store's lease."""
        return self._sync("put", self.aput, key, value, lease)

    def cas(self, key: str, value: dict, mod_revision: int, lease: bool = False) -> bool:
        """See :meth:`Store.cas`; ``lease`` as for :meth:`put`."""
        return self._sync("cas", self.acas, key, value, mod_revision, lease)

    def delete(self, key: str) -> bool:
        """See :meth:`Store.delete`."""
        return self._sync("delete", self.adelete, key)

    def txn(self, compares: list[Compare], ops: list[Op], lease: bool = False) -> bool:
        """See :meth:`Store.txn`; with ``lease`` every put in ``ops`` is attached to the store's lease."""
        return self._sync("txn", self.atxn, compares, ops, lease)

    def revision(self) -> int:
        """etcd's revision: that of the last write to the cluster (under any prefix)."""
        return self._sync("revision", self.arevision)

    def watch(self, prefix: str, callback: Callable[[Event], Any], start_revision: int = 0,
              on_resync: Callable[[list[KV], int], Any] | None = None) -> Callable[[], None]:
        """Call ``callback`` (on the loop thread) for each change under ``prefix``; return cancel.

        Returns once the watch exists; ``start_revision`` > 0 replays history. ``cancel()`` is
        idempotent, works from any thread; no callback starts after it returns.
        """
        return self._sync("watch", self.awatch, prefix, callback, start_revision, on_resync)

    def grant_lease(self, ttl: int) -> int:
        """Take the store's lease (``ttl`` s; etcd's minimum is 2) and keep it alive; return its ID."""
        return self._sync("grant_lease", self.agrant_lease, ttl)

    def revoke_lease(self) -> None:
        """Revoke the lease now: every key attached to it is deleted. Idempotent."""
        return self._sync("revoke_lease", self.arevoke_lease)


class _Watch:
    """One prefix watch on its own gRPC stream, resumed from the next revision after errors."""

    def __init__(self, store: EtcdStore, prefix: str, callback: Callable, start_revision: int,
                 on_resync: Callable | None) -> None:
        self.store, self.prefix, self.callback, self.on_resync = store, prefix, callback, on_resync
        self.next_rev = start_revision  # 0: from the revision at creation
        self.cancelled, self.created = False, store._loop.create_future()
        self.task = store._loop.create_task(self.run())

    def cancel(self) -> None:
        """Stop delivering events (any thread, idempotent)."""
        if self.cancelled:
            return
        self.cancelled = True
        if not self.store._loop.is_closed():
            self.store._loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self.store._watches.discard(self)
        self.task.cancel()

    async def run(self) -> None:
        """Keep the stream open until cancelled; a failure to create it the first time is reported."""
        backoff = _BACKOFF_MIN
        while not self.cancelled:
            try:
                await self._stream()
                backoff = _BACKOFF_MIN  # after a resync: re-create at once from the new revision
            except Exception as exc:
                error = self.store._map_error(f"watch {self.prefix}", exc)
                if not self.created.done():
                    self.created.set_exception(error)
                    return
                log.warning("%s; resuming from revision %d in %.1fs", error, self.next_rev, backoff)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, _BACKOFF_MAX)

    async def _stream(self) -> None:
        store = self.store
        client, rpc, key = await store._conn(), store._rpc, store._key(self.prefix)
        create = rpc.WatchCreateRequest(key=key or b"\0", range_end=_range_end(key), prev_kv=True,
                                        start_revision=self.next_rev, progress_notify=True)
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            resp = await asyncio.wait_for(self._create(call, rpc.WatchRequest(create_request=create)), store.timeout)
            if self.next_rev == 0:
                self.next_rev = resp.header.revision + 1
            if not self.created.done():
                self.created.set_result(None)
            while not self.cancelled:
                resp = await call.read()
                if not hasattr(resp, "events"):  # grpc.aio.EOF
                    raise ConnectionError("etcd closed the watch stream")
                if resp.compact_revision:
                    return await self._resync(resp.compact_revision)
                if resp.canceled:
                    raise ConnectionError(f"etcd cancelled the watch: {resp.cancel_reason}")
                await self._deliver(resp)
        finally:
            call.cancel()

    @staticmethod
    async def _create(call, request):
        await call.write(request)
        resp = await call.read()
        if not getattr(resp, "created", False) or resp.canceled:
            raise ConnectionError(f"etcd did not create the watch: {getattr(resp, 'cancel_reason', '')}")
        return resp

    async def _deliver(self, resp) -> None:
        if not resp.events:  # a progress notification: every later event has a higher revision
            self.next_rev = max(self.next_rev, resp.header.revision + 1)
            return
        for ev in resp.events:
            if self.cancelled:
                return
            self.next_rev = ev.kv.mod_revision + 1
            try:
                prev = _decode(ev.prev_kv.value) if ev.HasField("prev_kv") else None
                value = None if ev.type == self.store._rpc.Event.DELETE else _decode(ev.kv.value)
            except ValueError:
                log.error("watch %s: %r is not JSON; event skipped", self.prefix, ev.kv.key)
                continue
            await self._notify(self.callback, Event(self.store._unkey(ev.kv.key), value, ev.kv.mod_revision, prev))

    async def _resync(self, compact_revision: int) -> None:
        log.warning("watch %s: revision %d is compacted (now %d): resync", self.prefix, self.next_rev,
                    compact_revision)
        if self.on_resync is not None:
            kvs, revision = await self.store._list(self.prefix)
            fn, args = self.on_resync, (kvs, revision)
        else:
            revision = await self.store.arevision()
            fn, args = self.callback, (Event(RESYNC_KEY, None, revision),)
        self.next_rev = revision + 1
        await self._notify(fn, *args)

    async def _notify(self, fn: Callable, *args: Any) -> None:
        if not self.cancelled:
            await _invoke(f"etcd watch callback for {self.prefix!r}", fn, *args)
