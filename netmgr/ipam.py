"""The default IPAM driver (netaddr).

Pools come from the request (``--subnet`` …) or from the default address
pools, Docker's by default: 172.17.0.0/16 … 172.31.0.0/16 as /16s, then
192.168.0.0/16 as /20s; ``--default-address-pool base=CIDR,size=N``
replaces them. IPv6 networks without a subnet get a /64 of the host's own
random unique local /48 (chosen once, kept in the store), unless an IPv6
default pool is given. An automatic pool is never one that overlaps another
network's pool or a route of the host (other than its default route and
netmgr's own bridges); a requested one that does fails with Docker's
wording.

Allocation state is derived, never stored on its own: the controller
rebuilds it on start from the network records (pools, gateways, aux
addresses) and the endpoint records (addresses), so removing a record is
what releases its address, on every removal path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import netaddr

from netmgr import errors
from netmgr.model import Network, PoolConfig

DEFAULT_POOLS: tuple[tuple[str, int], ...] = (("172.17.0.0/16", 16), ("172.18.0.0/15", 16),
                                               ("172.20.0.0/14", 16), ("172.24.0.0/13", 16),
                                               ("192.168.0.0/16", 20))

__all__ = ["IPAM", "DEFAULT_POOLS", "parse_default_pool", "parse_cidr"]


def unique_local_prefix() -> str:
    """A random RFC 4193 unique local /48 (fd + 40 random bits), for default IPv6 pools."""
    import os

    gid = os.urandom(5)
    words = [0xFD00 | gid[0], (gid[1] << 8) | gid[2], (gid[3] << 8) | gid[4]]
    return "{:x}:{:x}:{:x}::/48".format(*words)


def parse_default_pool(text: str) -> tuple[str, int]:
    """Parse ``base=CIDR,size=N`` as Docker's ``--default-address-pool``."""
    fields = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    if "base" not in fields or "size" not in fields:
        raise errors.InvalidConfig(f"invalid default address pool {text!r}: want base=CIDR,size=N")
    base = parse_cidr(fields["base"])
    try:
        size = int(fields["size"])
    except ValueError:
        raise errors.InvalidConfig(f"invalid default address pool size {fields['size']!r}") from None
    if not base.prefixlen <= size <= (32 if base.version == 4 else 128):
        raise errors.InvalidConfig(f"invalid default address pool {text!r}: size {size} is not within {base}")
    return str(base), size


def parse_cidr(text: str) -> netaddr.IPNetwork:
    """A strict CIDR (``a.b.c.d/n``); anything else is Docker's 'invalid CIDR address'."""
    try:
        if "/" not in text:
            raise ValueError
        addr, _, plen = text.partition("/")
        if not plen.isdigit():
            raise ValueError
        net = netaddr.IPNetwork(f"{netaddr.IPAddress(addr)}/{int(plen)}")
    except (ValueError, netaddr.AddrFormatError):
        raise errors.InvalidConfig(f"invalid CIDR address: {text}") from None
    return net


def _parse_ip(text: str, what: str) -> netaddr.IPAddress:
    try:
        return netaddr.IPAddress(text)
    except (ValueError, netaddr.AddrFormatError):
        raise errors.InvalidConfig(f"invalid {what} address: {text}") from None


@dataclass
class _Pool:
    subnet: netaddr.IPNetwork
    gateway: netaddr.IPAddress | None
    ip_range: netaddr.IPNetwork | None
    aux: dict[str, netaddr.IPAddress]
    allocated: set[int] = field(default_factory=set)
    #: every address of the span below this one is taken: the search for a free one starts here,
    #: so allocating stays O(1) as the network fills (lowest free address first, as before)
    hint: int = 0

    def reserved(self, ip: netaddr.IPAddress) -> bool:
        if ip.version == 4 and self.subnet.prefixlen < 31 and ip in (self.subnet.network, self.subnet.broadcast):
            return True
        if ip.version == 6 and ip == self.subnet.network:
            return True
        return int(ip) in self.allocated

    def cidr(self, ip: netaddr.IPAddress) -> str:
        return f"{ip}/{self.subnet.prefixlen}"


class IPAM:
    """Address pools and addresses of every local network, in memory."""

    def __init__(
        self,
        default_pools: Iterable[tuple[str, int]] = DEFAULT_POOLS,
        host_routes: Callable[[], list[str]] = lambda: [],
    ) -> None:
        self.default_pools = tuple(default_pools)
        self._host_routes = host_routes
        self._pools: dict[str, list[_Pool]] = {}  # network id -> pools

    # -- pools ---------------------------------------------------------------

    def validate_pool(self, cfg: PoolConfig) -> PoolConfig:
        """Check one requested pool (no side effect); return it normalised with its gateway."""
        try:
            subnet = parse_cidr(cfg.subnet)
        except errors.InvalidConfig as exc:
            raise errors.InvalidConfig(f"Invalid subnet {cfg.subnet} : {exc}") from None
        if subnet.network != subnet.ip:
            raise errors.InvalidConfig(f"Invalid subnet {cfg.subnet} : it should be {subnet.cidr}")
        ip_range = None
        if cfg.ip_range:
            try:
                ip_range = parse_cidr(cfg.ip_range)
            except errors.InvalidConfig as exc:
                raise errors.InvalidConfig(f"Invalid ip range {cfg.ip_range} : {exc}") from None
            if ip_range not in subnet or ip_range.version != subnet.version:
                raise errors.InvalidConfig(f"no matching subnet for range {cfg.ip_range}")
        gateway = self._gateway_for(cfg, subnet)
        if gateway is not None and subnet.version == 4 and subnet.prefixlen < 31 \
                and gateway in (subnet.network, subnet.broadcast):
            raise errors.AlreadyExists(f"failed to allocate gateway ({gateway}): Address already in use")
        for text in cfg.aux.values():
            try:
                inside = _parse_ip(text, "auxiliary") in subnet
            except errors.InvalidConfig:
                inside = False
            if not inside:
                raise errors.InvalidConfig(f"no matching subnet for aux-address {text}")
        return PoolConfig(str(subnet.cidr), str(gateway) if gateway else "",
                          str(ip_range.cidr) if ip_range else "", dict(cfg.aux))

    @staticmethod
    def _gateway_for(cfg: PoolConfig, subnet: netaddr.IPNetwork) -> netaddr.IPAddress | None:
        if cfg.gateway:
            try:
                gw = _parse_ip(cfg.gateway, "gateway")
            except errors.InvalidConfig:
                raise errors.InvalidConfig(f"no matching subnet for gateway {cfg.gateway}") from None
            if gw not in subnet or gw.version != subnet.version:
                raise errors.InvalidConfig(f"no matching subnet for gateway {cfg.gateway}")
            return gw
        if subnet.size <= 2:
            return None
        return subnet.network + 1

    def check_overlap(self, subnet: str, skip_network: str = "", own_ifaces: Iterable[str] = ()) -> None:
        """Fail with Docker's wording when ``subnet`` overlaps another pool or a host route."""
        net = netaddr.IPNetwork(subnet)
        for pools in (p for nid, p in self._pools.items() if nid != skip_network):
            for pool in pools:
                if pool.subnet.version == net.version and (net in pool.subnet or pool.subnet in net):
                    raise errors.AlreadyExists("Pool overlaps with other one on this address space")
        for route in self._host_routes():
            rnet = netaddr.IPNetwork(route)
            if rnet.prefixlen and rnet.version == net.version and (net in rnet or rnet in net):
                raise errors.AlreadyExists(f"Pool overlaps with other one on this address space (host route {route})")

    def allocate_default_subnet(self, version: int = 4) -> str:
        """The first default pool that overlaps nothing; Docker's error when none is left."""
        for base, size in self.default_pools:
            base_net = netaddr.IPNetwork(base)
            if base_net.version != version:
                continue
            for candidate in base_net.subnet(size):
                try:
                    self.check_overlap(str(candidate))
                except errors.AlreadyExists:
                    continue
                return str(candidate)
        kind = "IPv4" if version == 4 else "IPv6"
        raise errors.Unavailable(
            f"could not find an available, non-overlapping {kind} address pool among the defaults to assign to the network"
        )

    def add_network(self, network_id: str, pools: Iterable[PoolConfig]) -> None:
        """Track a network's pools; the gateway and aux addresses are taken at once."""
        tracked = []
        for cfg in pools:
            pool = _Pool(
                netaddr.IPNetwork(cfg.subnet),
                netaddr.IPAddress(cfg.gateway) if cfg.gateway else None,
                netaddr.IPNetwork(cfg.ip_range) if cfg.ip_range else None,
                {k: netaddr.IPAddress(v) for k, v in cfg.aux.items()},
            )
            pool.allocated.update(int(ip) for ip in pool.aux.values())
            if pool.gateway is not None:
                pool.allocated.add(int(pool.gateway))
            tracked.append(pool)
        self._pools[network_id] = tracked

    def open_network(self, net: Network) -> Network:
        """Reserve a new network's pools (the controller's create step); the record is unchanged."""
        self.add_network(net.id, net.pools)
        return net

    def load_network(self, net: Network) -> None:
        """Track a stored network's pools (start-up)."""
        self.add_network(net.id, net.pools)

    @staticmethod
    def is_default(driver: str) -> bool:
        """True for this IPAM's names (``--ipam-driver default``, or none)."""
        return driver in ("default", "")

    def check_driver(self, driver: str) -> None:
        """Only the built-in IPAM here (:class:`netmgr.plugins.ipam.IpamRouter` adds plugins)."""
        if not self.is_default(driver):
            raise errors.DriverNotFound(f'plugin "{driver}" not found')

    def remove_network(self, network_id: str) -> None:
        """Forget a network's pools (idempotent)."""
        self._pools.pop(network_id, None)

    def has_network(self, network_id: str) -> bool:
        """True when the network's pools are tracked."""
        return network_id in self._pools

    # -- addresses -------------------------------------------------------

    def request_address(self, network_id: str, version: int = 4, ip: str = "", label: str = "") -> str:
        """Allocate ``ip`` (or the lowest free one) and return it as ``addr/prefixlen``."""
        pools = [p for p in self._pools.get(network_id, []) if p.subnet.version == version]
        if not pools:
            if ip:
                raise errors.InvalidConfig(f"Invalid address {ip}: It does not belong to any of this network's subnets")
            return ""
        if ip:
            return self._request_static(pools, _parse_ip(ip, "IPv4" if version == 4 else "IPv6"))
        for pool in pools:
            found = self._first_free(pool)
            if found is not None:
                pool.allocated.add(int(found))
                return pool.cidr(found)
        kind = "IPv4" if version == 4 else "IPv6"
        raise errors.Unavailable(f"no available {kind} addresses on this network's address pools: {label}")

    @staticmethod
    def _request_static(pools: list[_Pool], addr: netaddr.IPAddress) -> str:
        for pool in pools:
            if addr in pool.subnet:
                if pool.reserved(addr):
                    raise errors.AlreadyExists("Address already in use")
                pool.allocated.add(int(addr))
                return pool.cidr(addr)
        raise errors.InvalidConfig(f"Invalid address {addr}: It does not belong to any of this network's subnets")

    @staticmethod
    def _first_free(pool: _Pool) -> netaddr.IPAddress | None:
        span = pool.ip_range or pool.subnet
        first, last = int(span.first), int(span.last)
        start = max(first, pool.hint)
        for value in range(start, min(last, first + (1 << 24)) + 1):
            if value not in pool.allocated:
                ip = netaddr.IPAddress(value, span.version)
                if not pool.reserved(ip):
                    pool.hint = value
                    return ip
        return None

    def mark_address(self, network_id: str, cidr: str) -> None:
        """Record an address that is already in use (restore from the store)."""
        if not cidr:
            return
        ip = netaddr.IPAddress(cidr.split("/")[0])
        for pool in self._pools.get(network_id, []):
            if ip in pool.subnet:
                pool.allocated.add(int(ip))

    def release_address(self, network_id: str, cidr: str) -> None:
        """Free an address (idempotent; the gateway and aux addresses stay taken)."""
        if not cidr:
            return
        ip = netaddr.IPAddress(cidr.split("/")[0])
        for pool in self._pools.get(network_id, []):
            if ip in pool.subnet and ip != pool.gateway and ip not in pool.aux.values():
                pool.allocated.discard(int(ip))
                pool.hint = min(pool.hint, int(ip))

    def in_use(self, network_id: str) -> int:
        """How many addresses are taken (gateway and aux included); for tests and stats."""
        return sum(len(p.allocated) for p in self._pools.get(network_id, []))
