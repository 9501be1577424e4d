"""Wiring: build a working controller from a configuration.

Both the daemon and in-process tests use :func:`open_engine`, so there is
one place that decides which store, drivers and IPAM a netmgr instance has.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from netmgr import errors
from netmgr.cluster import DEFAULT_TTL, Cluster
from netmgr.nodeid import make_node
from netmgr.containers import Containers
from netmgr.controller import Controller
from netmgr.drivers import DriverTable, make_drivers
from netmgr.drivers.base import HostEnv, PeerAware
from netmgr.ipam import DEFAULT_POOLS, IPAM, unique_local_prefix
from netmgr.plugins.ipam import IpamRouter
from netmgr.plugins.registry import PluginRegistry
from netmgr.reconcile import reconcile
from netmgr.runtime import netns
from netmgr.runtime.netlink import AF_INET, AF_INET6, Netlink
from netmgr.runtime.nft import Nft
from netmgr.model import new_id
from netmgr.store import SQLiteStore

log = logging.getLogger("netmgr.engine")


@dataclass(frozen=True)
class Config:
    """Where a netmgr instance keeps its state and what it is allowed to use."""

    state_dir: str = "/var/lib/netmgr"
    run_dir: str = "/run/netmgr"
    nft_table: str = "netmgr"
    default_pools: tuple[tuple[str, int], ...] = DEFAULT_POOLS
    cluster_store: str = ""
    advertise_addr: str = ""
    #: this host's name in the cluster ("" = the host name)
    node_name: str = ""
    #: the node lease's TTL: a dead host's peers vanish from the others within it
    cluster_ttl: int = DEFAULT_TTL
    #: the key prefix in etcd (several clusters can share one etcd)
    cluster_prefix: str = "/netmgr/"
    plugin_dir: str = "/run/netmgr/plugins"
    #: the namespace that plays "the host" (None: the process's own); tests pass a fake host's
    host_netns: str | None = None
    #: where the embedded DNS forwards other names (None: the nameservers of /etc/resolv.conf)
    dns_upstreams: list[tuple[str, int]] | None = None
    extra: dict = field(default_factory=dict)


class PeerFanout:
    """The cluster's peer changes (other nodes' endpoints) to every PeerAware driver."""

    def __init__(self, drivers: list) -> None:
        self.drivers = drivers

    def set_peer(self, key: str, value: dict | None) -> None:
        """One peer record changed (None: deleted)."""
        for driver in self.drivers:
            driver.set_peer(key.split("/")[1], key, value)

    def set_all_peers(self, peers: dict[str, dict]) -> None:
        """Every peer record."""
        for driver in self.drivers:
            driver.set_all_peers(peers)


class Engine:
    """A controller with its store, drivers and containers, ready to serve."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        os.makedirs(cfg.run_dir, mode=0o700, exist_ok=True)
        self.store = SQLiteStore(os.path.join(cfg.state_dir, "netmgr.db"))
        self._host_handle = netns.open_handle(cfg.host_netns) if cfg.host_netns else None
        self.host_nl = self._host_handle.nl if self._host_handle else Netlink()
        self.nft = Nft(cfg.host_netns)
        env = HostEnv(nl=self.host_nl, nft=self.nft, table=cfg.nft_table, netns_path=cfg.host_netns)
        #: the one thread that runs controller operations (API calls and cluster changes), in order
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netmgr-op")
        #: the thread that programs remote peers into the datapath, in the cluster's order
        self.peer_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netmgr-peers")
        self.cluster = self._open_cluster(cfg)
        self.plugins = PluginRegistry(
            cfg.plugin_dir, env, known=self._plugin_names, timeout=float(cfg.extra.get("plugin_timeout", 10.0)),
            cluster_store=bool(cfg.cluster_store), advertise_addr=cfg.advertise_addr)
        self.drivers = DriverTable(make_drivers(env, self.cluster, cfg.advertise_addr), self.plugins)
        bridges = lambda: {n.driver_data.get("bridge") for n in self.ctl.networks.values()}  # noqa: E731
        self.ipam = IPAM(cfg.default_pools, host_routes=lambda: self._host_routes(bridges()))
        self.ctl = Controller(self.store, self.drivers, IpamRouter(self.ipam, self.plugins), cfg.run_dir)
        self.ctl.cluster = self.cluster
        self.containers = Containers(self.ctl, cfg.state_dir, cfg.host_netns)

    def _open_cluster(self, cfg: Config) -> Cluster | None:
        """The cluster store client (no I/O yet: :meth:`start` connects in the background)."""
        if not cfg.cluster_store:
            return None
        if not cfg.advertise_addr:
            raise errors.InvalidConfig("--cluster-store needs --advertise-addr: this host's underlay address")
        from netmgr.store.etcd import EtcdStore

        kv = self.store.get("config/node")
        if kv is None:
            self.store.put("config/node", {"id": new_id()})
            kv = self.store.get("config/node")
        store = EtcdStore(cfg.cluster_store, prefix=cfg.cluster_prefix, timeout=3.0)
        return Cluster(store, make_node(kv.value["id"], cfg.node_name, cfg.advertise_addr), cfg.cluster_ttl)

    def submit(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` on the worker thread (the cluster's changes); errors are logged."""
        self._submit_to(self.worker, fn)

    @staticmethod
    def _submit_to(executor: ThreadPoolExecutor, fn: Callable[[], Any]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception:
                log.exception("cluster change failed")
        try:
            executor.submit(guarded)
        except RuntimeError:
            pass  # shutting down

    def _plugin_names(self) -> set[str]:
        """Driver and IPAM names used by existing networks (their plugins resolve even when gone)."""
        nets = list(self.ctl.networks.values())
        return {n.driver for n in nets} | {n.ipam_driver for n in nets}

    def _host_routes(self, own_bridges: set) -> list[str]:
        """Routes of the host, except the default ones and those on netmgr's bridges."""
        own = {link.index for link in self.host_nl.links() if link.name in own_bridges}
        out = []
        for family in (AF_INET, AF_INET6):
            for route in self.host_nl.routes(family):
                if route.dst.endswith("/0") or route.oif in own or route.dst.startswith("fe80:"):
                    continue
                out.append(route.dst)
        return out

    def start(self) -> None:
        """Load the store, reconcile drivers with the kernel, create predefined networks."""
        self._default_ipv6_pool()
        self.ctl.load()
        self.ctl.restore_drivers()
        self.ctl.ensure_predefined()
        self.containers.load()
        reconcile(self.ctl, list(self.containers.items.values()))
        if self.cluster is not None:
            sink = PeerFanout([d for d in self.drivers.values() if isinstance(d, PeerAware)])
            self.cluster.start(self.ctl, self.submit, sink, lambda fn: self._submit_to(self.peer_worker, fn))

    def _default_ipv6_pool(self) -> None:
        """Without an IPv6 default pool, this host's ULA /48 (made once, kept in the store)."""
        if any(":" in base for base, _ in self.ipam.default_pools):
            return
        kv = self.store.get("config/ula")
        if kv is None:
            self.store.put("config/ula", {"prefix": unique_local_prefix()})
            kv = self.store.get("config/ula")
        self.ipam.default_pools = self.ipam.default_pools + ((kv.value["prefix"], 64),)

    def close(self) -> None:
        """Release sockets and the store (kernel objects and containers stay)."""
        if self.cluster is not None:
            self.cluster.close()
        self.worker.shutdown(wait=True)
        self.peer_worker.shutdown(wait=True)
        self.containers.close()
        for driver in self.drivers.values():
            if isinstance(driver, PeerAware):
                driver.close()
        self.ctl.close()
        self.plugins.close()
        self.nft.close()
        if self._host_handle:
            self._host_handle.close()
        else:
            self.host_nl.close()
        self.store.close()


def open_engine(cfg: Config) -> Engine:
    """Build and start an engine."""
    engine = Engine(cfg)
    try:
        engine.start()
    except BaseException:
        engine.close()
        raise
    return engine
