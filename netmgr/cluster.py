"""The cluster: global-scope state in etcd, shared by every host's netmgrd.

Key layout under the store's prefix (``/netmgr/`` by default)::

    nodes/<node id>            {name, addr}                  on this node's lease (netmgr.nodeid)
    node-names/<name>          {node}                        a node name is held once, on the lease
    networks/<network id>      the Network record (global scope only)
    names/<network name>       {network}                     a name is taken once
    subnets/<cidr>             {network}                     an exact subnet is taken once
    vni/<vni>                  {network}                     VXLAN IDs (overlay driver)
    addr/<network id>/<ip>     {endpoint, node}              global IPAM, on the owner's lease
    peers/<network id>/<ep id> {ip, ip6, mac, vtep, node, name, aliases, container}
                                                             on the owner's lease

Every allocation is one etcd transaction that compares "absent"
(``mod_revision == 0``) on the keys it takes, so two hosts that allocate at
the same moment never get the same address, VNI, name or subnet: one
transaction wins, the other learns which key was taken and tries the next.

An endpoint's address keys and its peer record are written in that same
transaction and hang off the node's lease: when a host dies, etcd deletes
them after the lease TTL and every other host's watch removes the peer.

Threads: the synchronous methods run on the controller's worker thread. The
connection loop, the watches and their callbacks run on the store's event
loop; callbacks never touch the controller: they hand each change to
``deliver`` (which queues it on the worker thread, in order).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Protocol

import netaddr

from netmgr import errors
from netmgr.model import Endpoint, Network, to_dict
from netmgr.nodeid import IdentityClash, Node, claim
from netmgr.store.base import KV, Compare, Event, Op

log = logging.getLogger("netmgr.cluster")

#: Docker swarm's default pool for global-scope networks
GLOBAL_DEFAULT_POOLS = (("10.0.0.0/8", 24),)
VNI_FIRST, VNI_LAST = 4096, (1 << 24) - 1  # Docker's overlay starts at 4096 too
DEFAULT_TTL = 10
_RETRIES = 32
_BACKOFF_MIN, _BACKOFF_MAX = 0.2, 2.0


class PeerSink(Protocol):
    """What programs the datapath for remote endpoints (the overlay driver), on its own thread."""

    def set_peer(self, key: str, value: dict | None) -> None:
        """One peer record changed (None: deleted)."""

    def set_all_peers(self, peers: dict[str, dict]) -> None:
        """Every peer record."""


class ClusterHandler(Protocol):
    """What receives the cluster's changes (the controller), always on its worker thread."""

    def cluster_networks(self, values: list[dict]) -> None:
        """The full list of global networks (after connecting or a compaction)."""

    def cluster_network(self, network_id: str, value: dict | None) -> None:
        """One global network was created (value) or removed (None)."""

    def cluster_peers(self, peers: dict[str, dict]) -> None:
        """Every peer record of other nodes (key → record), after connecting or a compaction."""

    def cluster_peer(self, key: str, value: dict | None) -> None:
        """One peer record of another node appeared, changed or went away."""

    def cluster_connected(self) -> None:
        """The cluster is (again) reachable with a fresh lease: republish what is ours."""


def subnet_key(cidr: str) -> str:
    """``subnets/10.0.0.0_24``: a key with no second '/'."""
    return "subnets/" + cidr.replace("/", "_")


def peer_key(network_id: str, endpoint_id: str) -> str:
    """The key of an endpoint's peer record."""
    return f"peers/{network_id}/{endpoint_id}"


def addr_key(network_id: str, cidr: str) -> str:
    """The key that reserves one address of a global network."""
    return f"addr/{network_id}/{cidr.split('/')[0]}"


def peer_record(ep: Endpoint, node: Node) -> dict:
    """What other hosts need to reach an endpoint and resolve its names."""
    return {"endpoint": ep.id, "network": ep.network_id, "ip": ep.ipv4, "ip6": ep.ipv6, "mac": ep.mac,
            "vtep": node.addr, "node": node.id, "name": ep.name, "aliases": list(ep.aliases),
            "container": ep.container_id}


class Cluster:
    """Global networks, VNIs, addresses and peers in etcd (see the module docstring)."""

    def __init__(self, store, node: Node, ttl: int = DEFAULT_TTL) -> None:
        self.store = store  # an EtcdStore
        self.node = node
        self.ttl = ttl
        self.url = store.url
        self._handler: ClusterHandler | None = None
        self._deliver: Callable[[Callable[[], Any]], None] = lambda fn: fn()
        self._peer_sink: PeerSink | None = None
        self._peer_deliver: Callable[[Callable[[], Any]], None] = lambda fn: fn()
        self._cancels: list[Callable[[], None]] = []
        self._task: asyncio.Future | None = None
        self._closed = False
        self.connected = False
        #: why this node may not join (another live node has its ID, name or address); final
        self.failure: IdentityClash | None = None
        self._failure_callbacks: list[Callable[[IdentityClash], None]] = []
        store.on_lease_lost = self._lease_replaced

    # -- connection --------------------------------------------------------------

    def start(self, handler: ClusterHandler, deliver: Callable[[Callable[[], Any]], None],
              peer_sink: PeerSink | None = None, peer_deliver: Callable[[Callable[[], Any]], None] | None = None,
              ) -> None:
        """Connect in the background (retrying while etcd is unreachable), then sync and watch.

        ``handler`` gets every change through ``deliver`` (the controller's worker
        thread); ``peer_sink`` also gets the peer changes through ``peer_deliver``
        (a thread of its own, so datapath programming never waits behind an operation).
        """
        self._handler, self._deliver = handler, deliver
        self._peer_sink = peer_sink
        if peer_deliver is not None:
            self._peer_deliver = peer_deliver
        self._task = asyncio.run_coroutine_threadsafe(self._connect_loop(), self.store._loop)

    async def _connect_loop(self) -> None:
        backoff, warned = _BACKOFF_MIN, False
        while not self._closed:
            try:
                await self._connect()
                return
            except IdentityClash as exc:
                log.error("cluster store %s: %s", self.url, exc)
                self._fail(exc)
                return
            except errors.NetmgrError as exc:
                (log.debug if warned else log.warning)("cluster store: %s; retrying", exc)
                warned = True
                for cancel in self._cancels:
                    cancel()
                self._cancels.clear()
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, _BACKOFF_MAX)

    async def _connect(self) -> None:
        store = self.store
        if store.lease_id is None:
            await store.agrant_lease(self.ttl)
        self.node = await claim(store, self.node, wait=self.ttl + 1)
        nets, net_rev = await store.alist_at("networks/")
        self._post("cluster_networks", [kv.value for kv in nets])
        self._cancels.append(await store.awatch("networks/", self._on_network, net_rev + 1,
                                                on_resync=self._on_networks_resync))
        peers, peer_rev = await store.alist_at("peers/")
        self._all_peers({kv.key: kv.value for kv in peers})
        self._cancels.append(await store.awatch("peers/", self._on_peer, peer_rev + 1,
                                                on_resync=self._on_peers_resync))
        self.connected = True
        self._post("cluster_connected")
        log.info("cluster store %s: node %s (%s) joined", self.url, self.node.name, self.node.addr)

    def _post(self, method: str, *args: Any) -> None:
        handler = self._handler
        self._deliver(lambda: getattr(handler, method)(*args))

    def _on_network(self, ev: Event) -> None:
        self._post("cluster_network", ev.key.split("/", 1)[1], ev.value)

    def _on_networks_resync(self, kvs: list[KV], _revision: int) -> None:
        self._post("cluster_networks", [kv.value for kv in kvs])

    def _mine(self, record: dict | None) -> bool:
        return record is not None and record.get("node") == self.node.id

    def _on_peer(self, ev: Event) -> None:
        if self._mine(ev.value if ev.value is not None else ev.prev):
            return  # this node's own endpoints: known from its local store
        sink = self._peer_sink
        if sink is not None:
            self._peer_deliver(lambda: sink.set_peer(ev.key, ev.value))
        self._post("cluster_peer", ev.key, ev.value)

    def _on_peers_resync(self, kvs: list[KV], _revision: int) -> None:
        self._all_peers({kv.key: kv.value for kv in kvs})

    def _all_peers(self, peers: dict[str, dict]) -> None:
        peers = {k: v for k, v in peers.items() if not self._mine(v)}
        sink = self._peer_sink
        if sink is not None:
            self._peer_deliver(lambda: sink.set_all_peers(peers))
        self._post("cluster_peers", peers)

    async def _lease_replaced(self, _lease_id: int) -> None:
        # our keys were re-put on a new lease; others may have taken an address meanwhile: check
        self._post("cluster_connected")

    def close(self, revoke: bool = False) -> None:
        """Stop watching; ``revoke`` also deletes this node's leased keys at once (clean leave)."""
        self._closed = True
        for cancel in self._cancels:
            cancel()
        self._cancels.clear()
        if self._task is not None:
            self._task.cancel()
        if revoke:
            try:
                self.store.revoke_lease()
            except (errors.NetmgrError, RuntimeError) as exc:
                log.warning("cluster store: revoking the lease: %s", exc)
        self.store.close()

    def on_failure(self, callback: Callable[[IdentityClash], None]) -> None:
        """Call ``callback(exc)`` (on the store's loop, or now) when this node is refused by the cluster."""
        if self.failure is not None:
            callback(self.failure)
        else:
            self._failure_callbacks.append(callback)

    def _fail(self, exc: IdentityClash) -> None:
        self.failure = exc
        for cancel in self._cancels:
            cancel()
        self._cancels.clear()
        for callback in self._failure_callbacks:
            callback(exc)

    def require(self) -> None:
        """Fail at once with a clear error while the cluster has never been reached."""
        if self.failure is not None:
            raise errors.Unavailable(f"cluster store {self.url}: this node may not join: {self.failure}")
        if not self.connected:
            raise errors.Unavailable(f"cluster store {self.url} is unreachable: not connected yet")

    # -- networks ------------------------------------------------------------------

    def create_network(self, net: Network) -> None:
        """Publish a global network: its name and exact subnets must be free cluster-wide."""
        self.require()
        taken = [Op(f"names/{net.name}", {"network": net.id})] + [
            Op(subnet_key(p.subnet), {"network": net.id}) for p in net.pools]
        compares = [Compare(op.key, 0) for op in taken] + [Compare(f"networks/{net.id}", 0)]
        if self.store.txn(compares, taken + [Op(f"networks/{net.id}", to_dict(net))]):
            return
        if self.store.get(f"names/{net.name}") is not None:
            raise errors.AlreadyExists(f"network with name {net.name} already exists")
        raise errors.AlreadyExists("Pool overlaps with other one on this address space")

    def delete_network(self, net: Network) -> None:
        """Remove a global network's records (the caller checked it has no endpoints)."""
        self.require()
        ops = [Op(f"networks/{net.id}"), Op(f"names/{net.name}")] + [Op(subnet_key(p.subnet)) for p in net.pools]
        vni = net.driver_data.get("vni")
        if vni:
            ops.append(Op(f"vni/{vni}"))
        self.store.txn([], ops)

    def has_endpoints(self, network_id: str) -> bool:
        """True when any host has an endpoint on the network."""
        self.require()
        return bool(self.store.list(f"peers/{network_id}/"))

    def subnets_in_use(self) -> list[str]:
        """Every subnet taken by a global network."""
        self.require()
        return [kv.key.split("/", 1)[1].replace("_", "/") for kv in self.store.list("subnets/")]

    def ula_prefix(self, make: Callable[[], str]) -> str:
        """The cluster's IPv6 ULA /48 for default overlay pools (made once by whoever asks first)."""
        self.require()
        self.store.cas("config/ula", {"prefix": make()}, 0)
        return self.store.get("config/ula").value["prefix"]

    # -- VNIs ----------------------------------------------------------------------

    def allocate_vni(self, network_id: str, wanted: int = 0) -> int:
        """The lowest free VNI (or ``wanted``), taken in a transaction."""
        self.require()
        if wanted:
            if self.store.cas(f"vni/{wanted}", {"network": network_id}, 0):
                return wanted
            raise errors.AlreadyExists(f"VXLAN ID {wanted} is already in use")
        used = {int(kv.key.split("/", 1)[1]) for kv in self.store.list("vni/")}
        candidate = VNI_FIRST
        for _ in range(_RETRIES):
            while candidate in used:
                candidate += 1
            if candidate > VNI_LAST:
                break
            if self.store.cas(f"vni/{candidate}", {"network": network_id}, 0):
                return candidate
            used.add(candidate)
        raise errors.Unavailable("no free VXLAN ID")

    def release_vni(self, vni: int, network_id: str) -> None:
        """Free a VNI if it is still this network's (idempotent)."""
        kv = self.store.get(f"vni/{vni}")
        if kv is not None and kv.value.get("network") == network_id:
            self.store.txn([Compare(kv.key, kv.mod_revision)], [Op(kv.key)])

    # -- endpoints -------------------------------------------------------------------

    def publish(self, ep: Endpoint, force: bool = False) -> list[str]:
        """Reserve the endpoint's addresses and publish its peer record, in one transaction.

        Returns [] on success, else the addresses some other endpoint holds
        (nothing was written). ``force`` re-puts keys that are already this
        endpoint's (after a restart: attach them to the new lease).
        """
        self.require()
        addrs = [a for a in (ep.ipv4, ep.ipv6) if a]
        ops = [Op(addr_key(ep.network_id, a), {"endpoint": ep.id, "node": self.node.id}) for a in addrs]
        ops.append(Op(peer_key(ep.network_id, ep.id), peer_record(ep, self.node)))
        compares = []
        for op in ops[:-1]:
            kv = self.store.get(op.key) if force else None
            mine = kv is not None and kv.value.get("endpoint") == ep.id
            compares.append(Compare(op.key, kv.mod_revision if mine else 0))
        if self.store.txn(compares, ops, lease=True):
            return []
        taken = []
        for op, addr in zip(ops, addrs):
            kv = self.store.get(op.key)
            if kv is not None and kv.value.get("endpoint") != ep.id:
                taken.append(addr)
        return taken or addrs  # a race on our own keys: report all, the caller retries

    def unpublish(self, ep: Endpoint) -> None:
        """Remove an endpoint's peer record and free its addresses (idempotent)."""
        self.require()
        ops = [Op(addr_key(ep.network_id, a)) for a in (ep.ipv4, ep.ipv6) if a]
        self.store.txn([], ops + [Op(peer_key(ep.network_id, ep.id))])

    def republish(self, endpoints: list[Endpoint]) -> list[Endpoint]:
        """Put every endpoint of this node on the current lease; delete this node's other records.

        After a restart (a new lease) or a lost lease. Two listings and one
        transaction per ~100 keys, whatever the number of endpoints. Returns the
        endpoints whose address another host holds now (taken while this one was away).
        """
        self.require()
        addrs = {kv.key: kv for kv in self.store.list("addr/")}
        peers = {kv.key: kv for kv in self.store.list("peers/")}
        conflicts, puts, compares = [], [], []
        for ep in endpoints:
            keys = [addr_key(ep.network_id, a) for a in (ep.ipv4, ep.ipv6) if a]
            held = [addrs.get(k) for k in keys]
            if any(kv is not None and kv.value.get("endpoint") != ep.id for kv in held):
                conflicts.append(ep)
                continue
            for key, kv in zip(keys, held):
                addrs.pop(key, None)
                puts.append(Op(key, {"endpoint": ep.id, "node": self.node.id}))
                compares.append(Compare(key, kv.mod_revision if kv is not None else 0))
            peers.pop(peer_key(ep.network_id, ep.id), None)
            puts.append(Op(peer_key(ep.network_id, ep.id), peer_record(ep, self.node)))
        for i in range(0, len(puts), 100):
            chunk = puts[i:i + 100]
            keys = {op.key for op in chunk}
            if not self.store.txn([c for c in compares if c.key in keys], chunk, lease=True):
                for ep in endpoints:  # a race with another host: one endpoint at a time
                    if ep not in conflicts and self.publish(ep, force=True):
                        conflicts.append(ep)
                break
        stale = [k for k, kv in (*addrs.items(), *peers.items()) if kv.value.get("node") == self.node.id]
        for i in range(0, len(stale), 100):
            self.store.txn([], [Op(k) for k in stale[i:i + 100]])
        if stale:
            log.info("cluster: removed %d records of this node that no endpoint owns", len(stale))
        return conflicts


def default_global_subnet(in_use: list[str], pools=GLOBAL_DEFAULT_POOLS, version: int = 4) -> str:
    """The first /24 (of the global default pools) overlapping no global network."""
    taken = [netaddr.IPNetwork(s) for s in in_use]
    for base, size in pools:
        base_net = netaddr.IPNetwork(base)
        if base_net.version != version:
            continue
        for candidate in base_net.subnet(size):
            if not any(candidate in t or t in candidate for t in taken if t.version == version):
                return str(candidate)
    raise errors.Unavailable("could not find an available, non-overlapping address pool among the defaults "
                             "to assign to the network")
