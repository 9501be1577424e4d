"""The plugin registry: names → plugin clients, remote drivers and remote IPAMs.

Plugins are activated lazily: nothing is contacted until a network uses
one. A name resolves when the plugin directory offers it, or when an
existing network already uses it (so the networks of a plugin that is gone
can still be inspected and removed); otherwise it is Docker's
``plugin "NAME" not found``. The spec is read again whenever a channel is
(re)opened, so a plugin that moved its socket or restarted is picked up
without restarting netmgrd.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from netmgr import errors
from netmgr.drivers.base import HostEnv
from netmgr.drivers.remote import DRIVER_SERVICE, IPAM_SERVICE, PluginClient, RemoteDriver
from netmgr.plugins import discovery
from netmgr.plugins.discovery import PluginSpec

log = logging.getLogger("netmgr.plugins")

#: health checks of ``plugin ls`` get at most this long per plugin
LS_TIMEOUT = 2.0


class PluginRegistry:
    """Every plugin netmgr talks to, by name; thread-safe."""

    def __init__(self, plugin_dir: str, env: HostEnv | None, known: Callable[[], set[str]] = set,
                 timeout: float = discovery.DEFAULT_TIMEOUT, cluster_store: bool = False,
                 advertise_addr: str = "") -> None:
        self.plugin_dir = plugin_dir
        self.env = env
        self.known = known
        self.timeout = timeout
        self.cluster_store = cluster_store
        self.advertise_addr = advertise_addr
        self._lock = threading.Lock()
        self._clients: dict[str, PluginClient] = {}
        self._drivers: dict[str, RemoteDriver] = {}
        self._ipams: dict = {}

    # -- lookups -----------------------------------------------------------------------

    def spec(self, name: str) -> PluginSpec:
        """The current spec of ``name``; DriverNotFound when the directory has none."""
        found = discovery.find(self.plugin_dir, name, self.timeout)
        if found is None:
            raise errors.DriverNotFound(f'plugin "{name}" not found')
        return found

    def exists(self, name: str) -> bool:
        """True when the plugin directory offers ``name`` now."""
        try:
            return discovery.find(self.plugin_dir, name, self.timeout) is not None
        except errors.InvalidConfig:
            return True  # a broken spec: report it when the plugin is used

    def client(self, name: str) -> PluginClient:
        """The client of plugin ``name`` (not yet contacted); DriverNotFound for an unknown name."""
        with self._lock:
            client = self._clients.get(name)
            if client is not None:
                return client
        if not discovery.valid_name(name) or not (self.exists(name) or name in self.known()):
            raise errors.DriverNotFound(f'plugin "{name}" not found')
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = PluginClient(name, lambda: self.spec(name))
            return client

    def network_driver(self, name: str) -> RemoteDriver:
        """The remote network driver ``name``."""
        client = self.client(name)
        with self._lock:
            driver = self._drivers.get(name)
            if driver is None:
                if self.env is None:
                    raise errors.InternalError("remote drivers need the host environment")
                driver = self._drivers[name] = RemoteDriver(name, client, self.env, self.cluster_store)
                client.on_activate.append(self._discover_self)
            return driver

    def ipam(self, name: str):
        """The remote IPAM driver ``name``."""
        from netmgr.plugins.ipam import RemoteIpam

        client = self.client(name)
        with self._lock:
            ipam = self._ipams.get(name)
            if ipam is None:
                ipam = self._ipams[name] = RemoteIpam(name, client)
            return ipam

    def _discover_self(self, client: PluginClient) -> None:
        """Node discovery for global-scope drivers: tell the plugin which node it is on."""
        if not self.advertise_addr or DRIVER_SERVICE not in (client.implements or ()):
            return
        from netmgr.proto.gen import netmgr_plugin_v1_driver_pb2 as dpb

        try:
            caps = client.call("driver", "GetCapabilities", dpb.GetCapabilitiesRequest(), idempotent=True,
                               activate=False)
            if caps.scope == dpb.SCOPE_GLOBAL:
                note = dpb.DiscoveryNotification(type=dpb.DISCOVERY_TYPE_NODE,
                                                 node=dpb.NodeDiscoveryData(address=self.advertise_addr, self=True))
                client.call("driver", "DiscoverNew", note, idempotent=True, optional=True, activate=False)
        except errors.NetmgrError as exc:
            log.warning('plugin "%s": node discovery failed: %s', client.name, exc)

    # -- plugin ls -----------------------------------------------------------------------

    def describe(self, networks: dict[str, int] | None = None) -> list[dict]:
        """One document per plugin (in the directory or used by a network), with a fresh health check."""
        networks = networks or {}
        names = sorted(set(discovery.names(self.plugin_dir)) | set(networks))
        return [self._describe(name, networks.get(name, 0)) for name in names]

    def _describe(self, name: str, used: int) -> dict:
        doc = {"Name": name, "Address": "", "Implements": [], "Scope": "", "Description": "", "Health": "",
               "Error": "", "Networks": used}
        try:
            spec = self.spec(name)
        except errors.NetmgrError as exc:
            doc.update(Health="NOT_FOUND" if isinstance(exc, errors.NotFound) else "BROKEN_SPEC", Error=str(exc))
            return doc
        doc["Address"] = spec.address
        probe = PluginClient(name, lambda: _with_timeout(spec, min(spec.timeout, LS_TIMEOUT)))
        try:
            doc["Health"] = probe.health("")
            implements = probe.activate()
            doc["Implements"] = [s.rsplit(".", 1)[1] for s in sorted(implements)]
            doc.update(self._capabilities(probe, implements))
        except errors.NetmgrError as exc:
            doc["Health"] = doc["Health"] if doc["Health"] and doc["Health"] != "SERVING" else "UNREACHABLE"
            doc["Error"] = str(exc)
        finally:
            probe.close()
        return doc

    @staticmethod
    def _capabilities(probe: PluginClient, implements: frozenset[str]) -> dict:
        from netmgr.proto.gen import netmgr_plugin_v1_driver_pb2 as dpb
        from netmgr.proto.gen import netmgr_plugin_v1_ipam_pb2 as ipb

        out: dict = {}
        descriptions = []
        if DRIVER_SERVICE in implements:
            caps = probe.call("driver", "GetCapabilities", dpb.GetCapabilitiesRequest(), idempotent=True)
            out["Scope"] = "global" if caps.scope == dpb.SCOPE_GLOBAL else "local"
            descriptions.append(caps.description)
        if IPAM_SERVICE in implements:
            caps = probe.call("ipam", "GetCapabilities", ipb.GetIpamCapabilitiesRequest(), idempotent=True,
                              optional=True)
            if caps is not None:
                descriptions.append(caps.description)
                out["RequiresMACAddress"] = caps.requires_mac_address
        out["Description"] = "; ".join(d for d in descriptions if d)
        return out

    def close(self) -> None:
        """Close every channel."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            for driver in self._drivers.values():
                driver.close()


def _with_timeout(spec: PluginSpec, timeout: float) -> PluginSpec:
    from dataclasses import replace

    return replace(spec, timeout=timeout)
