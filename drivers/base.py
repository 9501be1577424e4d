"""The driver interface, shaped like libnetwork's ``driverapi``.

The controller calls drivers in CNM order (create network → create
endpoint → join → program external connectivity, and the reverse) and
passes frozen dataclasses, never option dicts. Drivers never import the
controller; their kernel work goes through :mod:`netmgr.runtime` handles
they receive in :class:`HostEnv` and :class:`SandboxInfo`.

``validate`` must have no side effect: the controller validates before it
changes anything (two phases, as netavark's setup does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, runtime_checkable

from netmgr.runtime.netlink import Netlink
from netmgr.runtime.netns import NetnsHandle
from netmgr.runtime.nft import Nft

Scope = Literal["local", "global"]


@dataclass(frozen=True)
class Capability:
    """What the driver is: its data scope (local: embedded store; global: etcd)."""

    scope: Scope = "local"
    #: the driver's endpoints live in the host's own namespace (host driver)
    shares_host_netns: bool = False
    #: the driver gives endpoints no interface at all (null driver)
    no_interface: bool = False
    #: endpoints reach the outside through the host's gateway bridge (overlay, as docker_gwbridge)
    gateway_bridge: bool = False


@dataclass(frozen=True)
class HostEnv:
    """The host-side handles a driver may use (the daemon's own namespace)."""

    nl: Netlink
    nft: Nft
    table: str = "netmgr"  # netmgr's nftables table name (tests use a unique one)
    netns_path: str | None = None  # None: the process's own namespace


@dataclass(frozen=True)
class NetworkInfo:
    """A network as drivers see it."""

    id: str
    name: str
    options: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False
    ipv6: bool = False
    #: (subnet CIDR, gateway address) per pool, IPv4 first
    pools: tuple[tuple[str, str], ...] = ()
    #: what the driver returned from ``create_network`` (kept in the store)
    driver_data: Mapping[str, Any] = field(default_factory=dict)
    predefined: bool = False


@dataclass(frozen=True)
class PortBinding:
    """A published port, its host port already resolved (never 0)."""

    proto: str  # tcp | udp | sctp
    host_ip: str  # "" = every host address
    host_port: int
    container_port: int


@dataclass(frozen=True)
class EndpointInfo:
    """An endpoint as drivers see it."""

    id: str
    network_id: str
    ipv4: str = ""  # addr/prefixlen
    ipv6: str = ""
    mac: str = ""
    driver_data: Mapping[str, Any] = field(default_factory=dict)
    ports: tuple[PortBinding, ...] = ()


@dataclass(frozen=True)
class SandboxInfo:
    """The sandbox an endpoint joins: its namespace handle and the interface name to use."""

    id: str
    handle: NetnsHandle | None
    ifname: str  # eth0, eth1, ... inside the sandbox


@dataclass(frozen=True)
class JoinInfo:
    """What the sandbox must configure after ``join``: the interface, gateway, routes."""

    ifname: str = ""  # the interface now inside the sandbox ("" for host/null)
    gateway: str = ""
    gateway6: str = ""
    static_routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, next hop)
    disable_gateway: bool = False


@runtime_checkable
class NetworkDriver(Protocol):
    """Every network driver, built-in or remote, implements this."""

    name: str

    def capability(self) -> Capability:
        """Scope and special traits."""

    def validate(self, net: NetworkInfo) -> None:
        """Reject bad options (InvalidConfig) without changing anything."""

    def create_network(self, net: NetworkInfo) -> dict[str, Any]:
        """Make the network real; return driver data to keep with the network."""

    def delete_network(self, net: NetworkInfo) -> None:
        """Remove what create_network made; already gone is success."""

    def create_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> dict[str, Any]:
        """Prepare an endpoint (no sandbox yet); return driver data to keep with it."""

    def delete_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """Forget an endpoint; already gone is success."""

    def join(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> JoinInfo:
        """Put the endpoint's interface into the sandbox."""

    def leave(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> None:
        """Take the interface out of the sandbox; already gone is success."""

    def program_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """Published ports (``ep.ports``): what the endpoint needs beyond its network."""

    def revoke_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """Undo program_external_connectivity; already gone is success."""

    def restore(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """After a daemon restart: re-create host-side state of these networks, drop orphans."""

    def restore_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> bool:
        """After a restart: repair an endpoint's host side; False when it must be re-joined."""

    def repair(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo], firewall: bool = True,
               docker: bool = True) -> list[str]:
        """While running: re-apply host state someone else removed; return what was done."""


@runtime_checkable
class PeerAware(Protocol):
    """A global-scope driver that programs remote endpoints (peer records from the cluster)."""

    def set_peer(self, network_id: str, key: str, record: dict | None) -> None:
        """One remote endpoint appeared, changed (record) or left (None); any thread."""

    def set_all_peers(self, records: dict[str, dict]) -> None:
        """Every remote endpoint (after connecting or a compaction); any thread."""

    def close(self) -> None:
        """Release what peer programming holds (its netlink socket)."""


class PassiveDriver:
    """Shared no-op behaviour for drivers with nothing to do at some steps."""

    name = "passive"

    def capability(self) -> Capability:
        """Local scope by default."""
        return Capability()

    def validate(self, net: NetworkInfo) -> None:
        """Nothing to validate."""

    def create_network(self, net: NetworkInfo) -> dict[str, Any]:
        """No kernel object for the network."""
        return {}

    def delete_network(self, net: NetworkInfo) -> None:
        """Nothing to remove."""

    def create_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> dict[str, Any]:
        """No per-endpoint state."""
        return {}

    def delete_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """Nothing to remove."""

    def join(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> JoinInfo:
        """No interface."""
        return JoinInfo(disable_gateway=True)

    def leave(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> None:
        """Nothing to take out."""

    def program_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """No NAT."""

    def revoke_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """No NAT."""

    def restore(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """Nothing to restore."""

    def restore_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> bool:
        """Nothing on the host side."""
        return True

    def repair(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo], firewall: bool = True,
               docker: bool = True) -> list[str]:
        """Nothing to repair."""
        return []
