"""Remote IPAM: :class:`RemoteIpam` (one plugin) and :class:`IpamRouter` (the controller's IPAM).

The controller keeps calling one IPAM object; :class:`IpamRouter` has the
methods of :class:`netmgr.ipam.IPAM` it uses and dispatches per network:
networks created with ``--ipam-driver NAME`` get their pools and addresses
from plugin NAME (libnetwork's remote IPAM flow, see
``proto/netmgr/plugin/v1/ipam.proto``), all others from the built-in IPAM.

A remote network's pool IDs and the addresses netmgr requested for it
(gateway, aux) are kept in the network record (``Network.ipam_data``), so
they are released on ``network rm`` also after a restart, without asking
the plugin to replay anything. Releases never fail an operation: a plugin
that is gone is logged, so its networks and containers can still be removed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from dataclasses import dataclass

from netmgr import errors
from netmgr.drivers.remote import IPAM_SERVICE, PluginClient
from netmgr.drivers.remote.convert import MalformedReply
from netmgr.ipam import IPAM
from netmgr.model import Network, PoolConfig
from netmgr.proto.gen import netmgr_plugin_v1_ipam_pb2 as ipb

log = logging.getLogger("netmgr.plugins.ipam")

#: "a pool of the plugin's choice" until RequestPool answers (a /0 is never a real network's pool)
ANY_V4, ANY_V6 = PoolConfig("0.0.0.0/0"), PoolConfig("::/0")
GATEWAY_OPTS = {"RequestAddressType": "com.docker.network.gateway"}
GATEWAY_DATA_KEY = "com.docker.network.gateway"


class RemoteIpam:
    """The ``netmgr.plugin.v1.Ipam`` calls of one plugin, with their replies checked."""

    def __init__(self, name: str, client: PluginClient) -> None:
        self.name = name
        self.client = client
        self._spaces: ipb.GetDefaultAddressSpacesResponse | None = None
        client.on_activate.append(lambda _c: setattr(self, "_spaces", None))

    def _call(self, method: str, request, idempotent: bool = False, optional: bool = False):
        self.client.require(IPAM_SERVICE)
        return self.client.call("ipam", method, request, idempotent=idempotent, optional=optional)

    def check(self) -> None:
        """The plugin exists, answers, implements Ipam and does not require MAC addresses."""
        caps = self._call("GetCapabilities", ipb.GetIpamCapabilitiesRequest(), idempotent=True, optional=True)
        if caps is not None and caps.requires_mac_address:
            raise errors.InvalidConfig(f'plugin "{self.name}" requires MAC addresses in RequestAddress, '
                                       "which netmgr cannot supply (MACs derive from the IPv4 address)")

    def address_space(self, scope: str) -> str:
        """The plugin's default address space for a network of ``scope``."""
        if self._spaces is None:
            self._spaces = self._call("GetDefaultAddressSpaces", ipb.GetDefaultAddressSpacesRequest(),
                                      idempotent=True)
        return self._spaces.global_default_address_space if scope == "global" \
            else self._spaces.local_default_address_space

    def request_pool(self, space: str, pool: str, sub_pool: str, options: dict, v6: bool):
        """RequestPool → (pool id, subnet as ipaddress network, data)."""
        resp = self._call("RequestPool", ipb.RequestPoolRequest(address_space=space, pool=pool, sub_pool=sub_pool,
                                                                options=options, v6=v6))
        try:
            subnet = ipaddress.ip_network(resp.pool)
        except ValueError:
            subnet = None
        if not resp.pool_id or subnet is None or subnet.version != (6 if v6 or ":" in pool else 4):
            self.release_pool(resp.pool_id)
            raise MalformedReply(f'plugin "{self.name}": malformed RequestPool reply: pool {resp.pool!r}, '
                                 f"pool id {resp.pool_id!r}")
        return resp.pool_id, subnet, dict(resp.data)

    def release_pool(self, pool_id: str) -> None:
        """ReleasePool (logged, never raised)."""
        if pool_id:
            self._release("ReleasePool", ipb.ReleasePoolRequest(pool_id=pool_id))

    def request_address(self, pool_id: str, subnet, address: str = "", options: dict | None = None) -> str:
        """RequestAddress → the address (no prefix length), checked to be in ``subnet`` (and = ``address``)."""
        resp = self._call("RequestAddress", ipb.RequestAddressRequest(pool_id=pool_id, address=address,
                                                                      options=options or {}))
        try:
            got = ipaddress.ip_interface(resp.address).ip if "/" in resp.address else None
        except ValueError:
            got = None
        if got is None or got not in subnet or (address and got != ipaddress.ip_address(address)):
            if got is not None:
                self.release_address(pool_id, str(got))
            raise MalformedReply(f'plugin "{self.name}": malformed RequestAddress reply: {resp.address!r} '
                                 f"(want an address/prefixlen in {subnet}" + (f" equal to {address})" if address else ")"))
        return str(got)

    def release_address(self, pool_id: str, address: str) -> None:
        """ReleaseAddress (logged, never raised)."""
        self._release("ReleaseAddress", ipb.ReleaseAddressRequest(pool_id=pool_id, address=address))

    def _release(self, method: str, request) -> None:
        try:
            self._call(method, request, idempotent=True)
        except errors.NetmgrError as exc:
            log.warning("%s", exc)


@dataclass
class _RemoteNet:
    driver: str
    #: per pool: {"pool_id", "subnet", "gateway" (requested by netmgr, released with the pool), "aux": [...]}
    pools: list[dict]


class IpamRouter:
    """The controller's IPAM: built-in for most networks, a plugin for ``--ipam-driver NAME`` ones."""

    def __init__(self, default: IPAM, plugins) -> None:
        self.default = default
        self.plugins = plugins
        self._remote: dict[str, _RemoteNet] = {}

    # -- the built-in IPAM's pool helpers (used for default-IPAM networks) --------------

    def validate_pool(self, cfg: PoolConfig) -> PoolConfig:
        """See :meth:`IPAM.validate_pool`."""
        return self.default.validate_pool(cfg)

    def check_overlap(self, subnet: str, *args, **kw) -> None:
        """See :meth:`IPAM.check_overlap`."""
        self.default.check_overlap(subnet, *args, **kw)

    def allocate_default_subnet(self, version: int = 4) -> str:
        """See :meth:`IPAM.allocate_default_subnet`."""
        return self.default.allocate_default_subnet(version)

    # -- drivers ---------------------------------------------------------------------------

    @staticmethod
    def is_default(driver: str) -> bool:
        """True for the built-in IPAM's names."""
        return IPAM.is_default(driver)

    def check_driver(self, driver: str) -> None:
        """The IPAM driver exists (a plugin is activated and checked); Docker's wording otherwise."""
        if not self.is_default(driver):
            if self.plugins is None:
                raise errors.DriverNotFound(f'plugin "{driver}" not found')
            self.plugins.ipam(driver).check()

    def requested_pools(self, pools: tuple[PoolConfig, ...], ipv6: bool) -> tuple[PoolConfig, ...]:
        """Syntax checks of the --subnet/--gateway/... of a remote-IPAM network (nothing reserved yet)."""
        out = []
        for cfg in pools:
            checked = self.default.validate_pool(cfg)
            out.append(dataclasses.replace(checked, gateway=cfg.gateway and checked.gateway))
        if any(":" in p.subnet for p in out) and not ipv6:
            raise errors.InvalidConfig("an IPv6 subnet needs --ipv6")
        # placeholders for "a pool of the plugin's choice", so drivers validate a network with pools
        if not any(":" not in p.subnet for p in out):
            out.insert(0, ANY_V4)
        if ipv6 and not any(":" in p.subnet for p in out):
            out.append(ANY_V6)
        return tuple(out)

    # -- networks -----------------------------------------------------------------------------

    def open_network(self, net: Network) -> Network:
        """Reserve the network's pools; a remote IPAM's choices come back in the returned record."""
        if self.is_default(net.ipam_driver):
            return self.default.open_network(net)
        if net.scope == "global":
            raise errors.InvalidConfig(f'IPAM plugin "{net.ipam_driver}": remote IPAM serves local-scope networks '
                                       "only (global networks take their pools from the cluster)")
        ipam = self.plugins.ipam(net.ipam_driver)
        space = ipam.address_space(net.scope)
        wanted = [(PoolConfig("") if p in (ANY_V4, ANY_V6) else p, ":" in p.subnet) for p in net.pools]
        if not any(not v6 for _, v6 in wanted):
            wanted.insert(0, (PoolConfig(""), False))
        if net.ipv6 and not any(v6 for _, v6 in wanted):
            wanted.append((PoolConfig(""), True))
        state = _RemoteNet(net.ipam_driver, [])
        pools = []
        try:
            for cfg, v6 in wanted:
                pools.append(self._open_pool(ipam, space, cfg, v6, net.ipam_options, state))
        except BaseException:
            self._release_all(ipam, state)
            raise
        self._remote[net.id] = state
        return dataclasses.replace(net, pools=tuple(pools), ipam_data={"pools": state.pools})

    @staticmethod
    def _open_pool(ipam: RemoteIpam, space: str, cfg: PoolConfig, v6: bool, options: dict,
                   state: _RemoteNet) -> PoolConfig:
        pool_id, subnet, data = ipam.request_pool(space, cfg.subnet, cfg.ip_range, dict(options), v6)
        entry = {"pool_id": pool_id, "subnet": str(subnet), "gateway": "", "aux": []}
        state.pools.append(entry)
        if cfg.subnet and str(subnet) != cfg.subnet:
            raise MalformedReply(f'plugin "{ipam.name}": RequestPool for {cfg.subnet} returned {subnet}')
        if not cfg.gateway and data.get(GATEWAY_DATA_KEY):
            gateway = str(ipaddress.ip_interface(data[GATEWAY_DATA_KEY]).ip)
        else:
            gateway = entry["gateway"] = ipam.request_address(pool_id, subnet, cfg.gateway, GATEWAY_OPTS)
        for address in cfg.aux.values():
            entry["aux"].append(ipam.request_address(pool_id, subnet, address))
        return PoolConfig(str(subnet), gateway, cfg.ip_range, dict(cfg.aux))

    @staticmethod
    def _release_all(ipam: RemoteIpam, state: _RemoteNet) -> None:
        for entry in reversed(state.pools):
            for address in [entry.get("gateway", "")] + list(entry.get("aux", ())):
                if address:
                    ipam.release_address(entry["pool_id"], address)
            ipam.release_pool(entry["pool_id"])

    def add_network(self, network_id: str, pools) -> None:
        """See :meth:`IPAM.add_network` (built-in IPAM networks only)."""
        self.default.add_network(network_id, pools)

    def load_network(self, net: Network) -> None:
        """Track a stored network (start-up): no plugin is contacted."""
        if self.is_default(net.ipam_driver):
            self.default.load_network(net)
        else:
            self._remote[net.id] = _RemoteNet(net.ipam_driver, list(net.ipam_data.get("pools", [])))

    def remove_network(self, network_id: str) -> None:
        """Release a network's pools (idempotent; a plugin that is gone is logged)."""
        state = self._remote.pop(network_id, None)
        if state is None:
            self.default.remove_network(network_id)
            return
        try:
            ipam = self.plugins.ipam(state.driver)
        except errors.NetmgrError as exc:
            log.warning("releasing the pools of network %s: %s", network_id[:12], exc)
            return
        self._release_all(ipam, state)

    def has_network(self, network_id: str) -> bool:
        """True when the network's pools are tracked."""
        return network_id in self._remote or self.default.has_network(network_id)

    def in_use(self, network_id: str) -> int:
        """Addresses taken in the built-in IPAM (0 for remote networks: the plugin counts)."""
        return self.default.in_use(network_id)

    # -- addresses ---------------------------------------------------------------------------

    def _pool_for(self, state: _RemoteNet, version: int, ip: str = "") -> dict | None:
        for entry in state.pools:
            subnet = ipaddress.ip_network(entry["subnet"])
            if subnet.version == version and (not ip or ipaddress.ip_address(ip) in subnet):
                return entry
        return None

    def request_address(self, network_id: str, version: int = 4, ip: str = "", label: str = "") -> str:
        """An address (``addr/prefixlen``) from the network's IPAM."""
        state = self._remote.get(network_id)
        if state is None:
            return self.default.request_address(network_id, version, ip, label)
        try:
            entry = self._pool_for(state, version, ip)
        except ValueError:
            raise errors.InvalidConfig(f"invalid IPv{version} address: {ip}") from None
        if entry is None:
            if ip:
                raise errors.InvalidConfig(f"Invalid address {ip}: It does not belong to any of this network's subnets")
            return ""
        subnet = ipaddress.ip_network(entry["subnet"])
        address = self.plugins.ipam(state.driver).request_address(entry["pool_id"], subnet, ip)
        return f"{address}/{subnet.prefixlen}"

    def release_address(self, network_id: str, cidr: str) -> None:
        """Give an address back (idempotent; never raises for a plugin that is gone)."""
        state = self._remote.get(network_id)
        if state is None:
            self.default.release_address(network_id, cidr)
            return
        if not cidr:
            return
        ip = cidr.partition("/")[0]
        entry = self._pool_for(state, ipaddress.ip_address(ip).version, ip)
        if entry is None:
            return
        try:
            self.plugins.ipam(state.driver).release_address(entry["pool_id"], ip)
        except errors.NetmgrError as exc:
            log.warning("release %s on network %s: %s", ip, network_id[:12], exc)

    def mark_address(self, network_id: str, cidr: str) -> None:
        """Record an address in use (start-up); a remote IPAM keeps its own records."""
        if network_id not in self._remote:
            self.default.mark_address(network_id, cidr)
