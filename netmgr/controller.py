"""The CNM controller: networks, endpoints and sandboxes, with their lifecycle.

Every multi-step operation runs under an :class:`~netmgr.undo.UndoStack`:
each step registers its undo as soon as it succeeded, so a failure at step
k leaves no kernel object and no record of steps 1..k-1. The store write
comes last; memory is updated only after it.

The controller is synchronous and not thread-safe: the daemon runs every
operation on one worker thread, in order (see :mod:`netmgr.daemon.server`).
It never issues netlink calls itself: drivers and :mod:`netmgr.runtime` do.
Container processes are handled by :class:`netmgr.containers.Containers`,
which uses :meth:`attach`/:meth:`detach` for the network side.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import netaddr
from dataclasses import dataclass, field

from netmgr import errors, names
from netmgr.cluster import default_global_subnet
from netmgr.drivers import resolve
from netmgr.drivers.base import EndpointInfo, NetworkDriver, NetworkInfo, PortBinding, SandboxInfo
from netmgr.discovery import ServiceRecords
from netmgr.ipam import IPAM, unique_local_prefix
from netmgr.ports import PortAllocator
from netmgr.model import (GATEWAY_BRIDGE, GATEWAY_NETWORK, Container, Endpoint, Network, PoolConfig, from_dict,
                          new_id, now_rfc3339, to_dict)
from netmgr.runtime import netns, sandbox
from netmgr.store import Op, Store
from netmgr.undo import UndoStack

log = logging.getLogger("netmgr.controller")

PREDEFINED = ("bridge", "host", "none")
DEFAULT_BRIDGE = "netmgr0"


@dataclass(frozen=True)
class NetworkRequest:
    """``network create`` as the API receives it."""

    name: str
    driver: str = "bridge"
    pools: tuple[PoolConfig, ...] = ()
    pools6: tuple[PoolConfig, ...] = ()
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    ipv6: bool = False


@dataclass(frozen=True)
class AttachRequest:
    """Connect a container's sandbox to a network."""

    ip: str = ""
    ip6: str = ""
    aliases: tuple[str, ...] = ()


def driver_view(net: Network) -> NetworkInfo:
    """The network as drivers see it."""
    return NetworkInfo(
        id=net.id, name=net.name, options=dict(net.options), internal=net.internal, ipv6=net.ipv6,
        pools=tuple((p.subnet, p.gateway) for p in net.pools), driver_data=dict(net.driver_data),
        predefined=net.predefined,
    )


def endpoint_view(ep: Endpoint) -> EndpointInfo:
    """The endpoint as drivers see it."""
    ports = tuple(PortBinding(p.protocol, p.host_ip, p.host_port, p.container_port) for p in ep.ports)
    return EndpointInfo(ep.id, ep.network_id, ep.ipv4, ep.ipv6, ep.mac, dict(ep.driver_data), ports)


def mac_for(ipv4: str) -> str:
    """Docker's classic MAC: 02:42 followed by the IPv4 address bytes (random without one)."""
    if ipv4:
        octets = [int(x) for x in ipv4.split("/")[0].split(".")]
    else:
        octets = list(os.urandom(4))
    return "02:42:" + ":".join(f"{o:02x}" for o in octets)


class Controller:
    """Networks and endpoints, their IPAM, drivers and store records."""

    def __init__(self, store: Store, drivers: dict[str, NetworkDriver], ipam: IPAM, run_dir: str) -> None:
        self.store = store
        self.drivers = drivers
        self.ipam = ipam
        self.run_dir = run_dir
        self.ns_dir = os.path.join(run_dir, "netns")
        self.networks: dict[str, Network] = {}
        self.endpoints: dict[str, Endpoint] = {}
        # indexes, so lookups on the attach path cost the same at 10 and 1000 endpoints
        self._by_network: dict[str, dict[str, Endpoint]] = {}
        self._by_container: dict[str, dict[str, Endpoint]] = {}
        self.handles: dict[str, netns.NetnsHandle] = {}  # sandbox key -> open handle
        self.ports = PortAllocator()
        self.records = ServiceRecords()
        #: the cluster store (netmgr.cluster.Cluster) for global-scope networks, None without one
        self.cluster = None
        #: peer records of endpoints on other hosts (cluster key -> record)
        self.remote_peers: dict[str, dict] = {}

    # -- start-up --------------------------------------------------------------

    def load(self) -> None:
        """Read networks and endpoints from the store and rebuild IPAM state."""
        netns.ensure_ns_dir(self.ns_dir)
        for kv in self.store.list("networks/"):
            net = from_dict(Network, kv.value)
            self.networks[net.id] = net
            self.ipam.load_network(net)
        for kv in self.store.list("endpoints/"):
            ep = from_dict(Endpoint, kv.value)
            self._index(ep)
            self.ipam.mark_address(ep.network_id, ep.ipv4)
            self.ipam.mark_address(ep.network_id, ep.ipv6)
            self.ports.mark(ep.id, ep.ports)
            if ep.network_id in self.networks:
                self.records.add_endpoint(ep, self.networks[ep.network_id])

    def _by_driver(self) -> tuple[dict[str, list[NetworkInfo]], dict[str, list[EndpointInfo]]]:
        nets: dict[str, list[NetworkInfo]] = {}
        eps: dict[str, list[EndpointInfo]] = {}
        for net in self.networks.values():
            nets.setdefault(net.driver, []).append(driver_view(net))
        for ep in self.endpoints.values():
            net = self.networks.get(ep.network_id)
            if net is not None:
                eps.setdefault(net.driver, []).append(endpoint_view(ep))
        return nets, eps

    def restore_drivers(self) -> None:
        """Let each driver re-create its host-side state for the stored networks."""
        nets, eps = self._by_driver()
        for name, driver in self.drivers.items():
            driver.restore(nets.get(name, []), eps.get(name, []))

    def repair_host_state(self, firewall: bool = True, docker: bool = True) -> list[str]:
        """Re-apply what something outside netmgr removed (a flushed ruleset, dockerd's policy)."""
        nets, eps = self._by_driver()
        done = []
        for name, driver in self.drivers.items():
            done += driver.repair(nets.get(name, []), eps.get(name, []), firewall, docker)
        for line in done:
            log.info("repair: %s", line)
        return done

    def ensure_predefined(self) -> None:
        """Create ``bridge``, ``host`` and ``none`` if they are missing (first start)."""
        have = {n.name for n in self.networks.values()}
        if "bridge" not in have:
            self.create_network(NetworkRequest("bridge", "bridge", options={
                "com.docker.network.bridge.name": DEFAULT_BRIDGE,
                "com.docker.network.bridge.default_bridge": "true",
                "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                "com.docker.network.driver.mtu": "1500",
            }), predefined=True)
        for name, driver in (("host", "host"), ("none", "null")):
            if name not in have:
                self.create_network(NetworkRequest(name, driver), predefined=True)

    # -- lookups ---------------------------------------------------------------

    def network(self, ref: str) -> Network:
        """A network by name, ID or unique ID prefix."""
        return names.lookup(ref, self.networks.values(), lambda n: n.name, lambda n: n.id,
                            lambda r: errors.NetworkNotFound(f"network {r} not found"), "network")

    def network_endpoints(self, network_id: str) -> list[Endpoint]:
        """Endpoints on a network."""
        return list(self._by_network.get(network_id, {}).values())

    def container_endpoints(self, container_id: str) -> list[Endpoint]:
        """Endpoints of a container, in interface order."""
        eps = list(self._by_container.get(container_id, {}).values())
        return sorted(eps, key=lambda e: (len(e.ifname), e.ifname))

    # -- networks ----------------------------------------------------------------

    def create_network(self, req: NetworkRequest, predefined: bool = False) -> Network:
        """Validate, allocate pools, let the driver make it real, store it."""
        net = self._validate_network(req, predefined)
        driver = resolve(self.drivers, net.driver)
        driver.validate(driver_view(net))
        with UndoStack() as undo:
            net = self.ipam.open_network(net)  # a remote IPAM fills in the pools it chose
            undo.push("release pools", self.ipam.remove_network, net.id)
            data = driver.create_network(driver_view(net))
            net = dataclasses.replace(net, driver_data=data)
            undo.push("delete network", driver.delete_network, driver_view(net))
            if net.scope == "global":
                self.cluster.create_network(net)
                undo.push("unpublish network", self.cluster.delete_network, net)
            self.store.put(f"networks/{net.id}", to_dict(net))
            undo.commit()
        self.networks[net.id] = net
        return net

    def _validate_network(self, req: NetworkRequest, predefined: bool) -> Network:
        names.check_network_name(req.name)
        if any(n.name == req.name for n in self.networks.values()):
            raise errors.AlreadyExists(f"network with name {req.name} already exists")
        self.ipam.check_driver(req.ipam_driver)
        driver = resolve(self.drivers, req.driver)
        scope = driver.capability().scope
        pools: tuple[PoolConfig, ...] = ()
        if scope == "global":
            self._require_cluster(req.driver)
            pools = self._validate_global_pools(req)
        elif not driver.capability().no_interface:
            pools = self._validate_pools(req) if self.ipam.is_default(req.ipam_driver) \
                else self.ipam.requested_pools(req.pools + req.pools6, req.ipv6)
        return Network(
            id=new_id(), name=req.name, driver=req.driver, scope=scope,
            created=now_rfc3339(), internal=req.internal, attachable=req.attachable, ipv6=req.ipv6,
            options=dict(req.options), labels=dict(req.labels), ipam_driver=req.ipam_driver or "default",
            ipam_options=dict(req.ipam_options), pools=pools, user_subnet=bool(req.pools or req.pools6),
            predefined=predefined,
        )

    def _validate_pools(self, req: NetworkRequest) -> tuple[PoolConfig, ...]:
        v4 = [self.ipam.validate_pool(p) for p in req.pools]
        v6 = [self.ipam.validate_pool(p) for p in req.pools6]
        if len(v4) > 1 and req.driver == "bridge":
            raise errors.InvalidConfig("bridge driver doesn't support multiple subnets")
        for pool in v4 + v6:
            self.ipam.check_overlap(pool.subnet)
        if not v4:
            v4 = [self.ipam.validate_pool(PoolConfig(self.ipam.allocate_default_subnet(4)))]
        if req.ipv6 and not v6:
            v6 = [self.ipam.validate_pool(PoolConfig(self.ipam.allocate_default_subnet(6)))]
        if v6 and not req.ipv6:
            raise errors.InvalidConfig("an IPv6 subnet needs --ipv6")
        return tuple(v4 + v6)

    def _require_cluster(self, driver: str) -> None:
        if self.cluster is None:
            raise errors.InvalidConfig(
                f"the {driver} driver is global-scope and needs a cluster store: start netmgrd with "
                "--cluster-store etcd://HOST:PORT[,HOST:PORT] --advertise-addr IP")
        self.cluster.require()

    def _validate_global_pools(self, req: NetworkRequest) -> tuple[PoolConfig, ...]:
        """Pools of a global network: no overlap with another global network, defaults from 10.0.0.0/8."""
        v4 = [self.ipam.validate_pool(p) for p in req.pools]
        v6 = [self.ipam.validate_pool(p) for p in req.pools6]
        in_use = self.cluster.subnets_in_use()
        for pool in v4 + v6:
            subnet = netaddr.IPNetwork(pool.subnet)
            for other in map(netaddr.IPNetwork, in_use):
                if other.version == subnet.version and (subnet in other or other in subnet):
                    raise errors.AlreadyExists("Pool overlaps with other one on this address space")
        if not v4:
            v4 = [self.ipam.validate_pool(PoolConfig(default_global_subnet(in_use)))]
        if req.ipv6 and not v6:
            ula = self.cluster.ula_prefix(unique_local_prefix)
            v6 = [self.ipam.validate_pool(PoolConfig(default_global_subnet(in_use, ((ula, 64),), 6)))]
        if v6 and not req.ipv6:
            raise errors.InvalidConfig("an IPv6 subnet needs --ipv6")
        return tuple(v4 + v6)

    def remove_network(self, ref: str) -> Network:
        """Remove a network that has no endpoints (predefined ones cannot be removed)."""
        net = self.network(ref)
        if net.predefined:
            raise errors.PermissionDenied(f"{net.name} is a pre-defined network and cannot be removed")
        in_use = errors.InUse(f"error while removing network: network {net.name} id {net.id} has active endpoints")
        if self.network_endpoints(net.id):
            raise in_use
        self.store.check_writable()
        if net.scope == "global":
            self._require_cluster(net.driver)
            if self.cluster.has_endpoints(net.id):
                raise in_use  # on another host
            self.cluster.delete_network(net)
        self._forget_network(net)
        return net

    def _forget_network(self, net: Network) -> None:
        """This host's part of removing a network: driver state, local record, IPAM, names."""
        resolve(self.drivers, net.driver).delete_network(driver_view(net))
        self.store.delete(f"networks/{net.id}")
        self.ipam.remove_network(net.id)
        self.records.remove_network(net)
        for key in [k for k, p in self.remote_peers.items() if p.get("network") == net.id]:
            del self.remote_peers[key]
        del self.networks[net.id]

    # -- endpoints: the attach path --------------------------------------------

    def next_ifname(self, container_id: str, pending: tuple[Endpoint, ...] = ()) -> str:
        """The lowest free ``ethN`` in a container's sandbox (``pending``: attached, not yet committed)."""
        used = {ep.ifname for ep in (*self.container_endpoints(container_id), *pending)}
        n = 0
        while f"eth{n}" in used:
            n += 1
        return f"eth{n}"

    def handle(self, key: str) -> netns.NetnsHandle:
        """The open handle of a sandbox namespace (re-opened after a restart)."""
        h = self.handles.get(key)
        if h is None:
            h = self.handles[key] = netns.open_handle(key)
        return h

    def check_attach(self, net: Network, ctr: Container, req: AttachRequest) -> None:
        """Everything that can be refused before touching anything."""
        eps = self.container_endpoints(ctr.id)
        if any(ep.network_id == net.id for ep in eps):
            raise errors.AlreadyExists(f"endpoint with name {ctr.name} already exists in network {net.name}")
        drivers_in_use = {net.driver} | {self.networks[e.network_id].driver for e in eps if e.network_id in self.networks}
        if eps and "host" in drivers_in_use:
            raise errors.Conflict("container cannot be disconnected from host network or connected to host network")
        if eps and "null" in drivers_in_use:
            raise errors.Conflict(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode")
        if (req.ip or req.ip6) and net.predefined:
            raise errors.InvalidConfig("user specified IP address is supported on user defined networks only")
        if (req.ip or req.ip6) and not net.user_subnet:
            raise errors.InvalidConfig(
                "user specified IP address is supported only when connecting to networks with user configured subnets")

    def attach_all(self, undo: UndoStack, net: Network, ctr: Container, req: AttachRequest) -> list[Endpoint]:
        """:meth:`attach`, plus the gateway bridge endpoint an overlay endpoint needs to reach out.

        As Docker's docker_gwbridge: a container on a non-internal overlay
        network gets a second interface on the host's ``netmgr_gwbridge``
        (a local bridge network, ICC off, NAT on) that carries its default route,
        unless another of its networks gives it one already (libnetwork's needDefaultGW).
        """
        eps = [self.attach(undo, net, ctr, req)]
        if self._needs_gateway(net) and not any(e.gateway for e in self.container_endpoints(ctr.id)) \
                and self.gateway_endpoint(ctr.id) is None:  # no default route yet (e.g. from a bridge network)
            eps.append(self.attach(undo, self.gateway_network(), ctr, AttachRequest(), pending=tuple(eps)))
        return eps

    def _needs_gateway(self, net: Network) -> bool:
        return not net.internal and resolve(self.drivers, net.driver).capability().gateway_bridge

    def gateway_network(self) -> Network:
        """The host's gateway bridge network, made on first use."""
        net = next((n for n in self.networks.values() if n.name == GATEWAY_NETWORK), None)
        if net is not None:
            return net
        return self.create_network(NetworkRequest(GATEWAY_NETWORK, "bridge", options={
            "com.docker.network.bridge.name": GATEWAY_BRIDGE,
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.enable_ip_masquerade": "true",
        }))

    def gateway_endpoint(self, container_id: str) -> Endpoint | None:
        """The container's endpoint on the gateway bridge network, if any."""
        gw = next((n for n in self.networks.values() if n.name == GATEWAY_NETWORK), None)
        if gw is None:
            return None
        return next((e for e in self.container_endpoints(container_id) if e.network_id == gw.id), None)

    def unneeded_gateway(self, container_id: str, leaving: Endpoint) -> Endpoint | None:
        """The gateway endpoint, once ``leaving`` goes and no other endpoint needs it."""
        gw_ep = self.gateway_endpoint(container_id)
        if gw_ep is None or gw_ep.id == leaving.id:
            return None
        for ep in self.container_endpoints(container_id):
            net = self.networks.get(ep.network_id)
            if ep.id != leaving.id and net is not None and self._needs_gateway(net):
                return None
        return gw_ep

    def attach(self, undo: UndoStack, net: Network, ctr: Container, req: AttachRequest,
               pending: tuple[Endpoint, ...] = ()) -> Endpoint:
        """Connect ``ctr``'s sandbox to ``net``; every step registers its undo on ``undo``.

        Steps: allocate address → reserve host ports → create endpoint → join →
        configure interface → program external connectivity. The caller writes
        the store. ``pending``: endpoints of the same operation not yet committed.
        """
        driver = resolve(self.drivers, net.driver)
        ep = self._step_allocate(undo, net, ctr, req, pending)
        ep = self._step_ports(undo, net, ctr, ep)
        ep = self._step_create_endpoint(undo, driver, net, ep)
        if driver.capability().no_interface:
            return ep
        join = self._step_join(undo, driver, net, ep, ctr)
        ep = self._step_configure(ep, join, ctr, pending)
        self._step_external(undo, driver, net, ep, ctr)
        return ep

    def _step_allocate(self, undo: UndoStack, net: Network, ctr: Container, req: AttachRequest,
                       pending: tuple[Endpoint, ...] = ()) -> Endpoint:
        cap = resolve(self.drivers, net.driver).capability()
        ifname = "" if cap.no_interface else self.next_ifname(ctr.id, pending)
        if net.scope == "global":
            return self._allocate_global(undo, net, ctr, req, ifname)
        label = f"{net.name} ({net.id[:12]})"
        ipv4 = self.ipam.request_address(net.id, 4, req.ip, label)
        undo.push("release address", self.ipam.release_address, net.id, ipv4)
        ipv6 = self.ipam.request_address(net.id, 6, req.ip6, label) if net.ipv6 else ""
        undo.push("release address6", self.ipam.release_address, net.id, ipv6)
        return _new_endpoint(new_id(), net, ctr, req, ifname, ipv4, ipv6)

    def _allocate_global(self, undo: UndoStack, net: Network, ctr: Container, req: AttachRequest,
                         ifname: str) -> Endpoint:
        """Addresses of a global network: a local guess, made sure by one etcd transaction.

        The guess comes from this host's view (its own endpoints and every peer
        it has heard of); if another host took one of the addresses meanwhile,
        the transaction fails, that address stays marked taken, and the next
        guess is tried. The same transaction publishes the peer record.
        """
        self._require_cluster(net.driver)
        label, ep_id = f"{net.name} ({net.id[:12]})", new_id()
        for _ in range(32):
            ipv4 = self.ipam.request_address(net.id, 4, req.ip, label)
            ipv6 = self.ipam.request_address(net.id, 6, req.ip6, label) if net.ipv6 else ""
            ep = _new_endpoint(ep_id, net, ctr, req, ifname, ipv4, ipv6)
            try:
                taken = self.cluster.publish(ep)
            except BaseException:
                self.ipam.release_address(net.id, ipv4)
                self.ipam.release_address(net.id, ipv6)
                raise
            if not taken:
                undo.push("release address", self.ipam.release_address, net.id, ipv4)
                undo.push("release address6", self.ipam.release_address, net.id, ipv6)
                undo.push("unpublish endpoint", self.cluster.unpublish, ep)
                return ep
            for addr in (ipv4, ipv6):
                if addr not in taken:
                    self.ipam.release_address(net.id, addr)  # free after all: only ``taken`` stay marked
            if req.ip or req.ip6:
                raise errors.AlreadyExists("Address already in use")
        raise errors.Unavailable(f"could not allocate an address on {net.name}: too many concurrent allocations")

    def _step_ports(self, undo: UndoStack, net: Network, ctr: Container, ep: Endpoint) -> Endpoint:
        if not ep.ifname or not ctr.config.ports or not self._publishes_on(net, ctr):
            return ep
        ports = self.ports.allocate(ep.id, ctr.config.ports)
        undo.push("release ports", self.ports.release, ports)
        return dataclasses.replace(ep, ports=ports)

    def _publishes_on(self, net: Network, ctr: Container) -> bool:
        """Ports are published on the endpoint of the network the container was started on; when that is
        an overlay (a network that reaches out through the gateway bridge), on its gateway bridge endpoint,
        as Docker publishes through docker_gwbridge."""
        started_on = ctr.config.network_mode
        if started_on in (net.name, net.id):
            return not self._needs_gateway(net)
        if net.name != GATEWAY_NETWORK:
            return False
        first = next((n for n in self.networks.values() if started_on in (n.name, n.id)), None)
        return first is not None and self._needs_gateway(first)

    def _step_create_endpoint(self, undo: UndoStack, driver: NetworkDriver, net: Network, ep: Endpoint) -> Endpoint:
        data = driver.create_endpoint(driver_view(net), endpoint_view(ep))
        ep = dataclasses.replace(ep, driver_data=data)
        undo.push("delete endpoint", driver.delete_endpoint, driver_view(net), endpoint_view(ep))
        return ep

    def _step_join(self, undo: UndoStack, driver: NetworkDriver, net: Network, ep: Endpoint, ctr: Container):
        sb = SandboxInfo(ctr.id, self.handle(ctr.sandbox_key), ep.ifname)
        undo.push("leave", driver.leave, driver_view(net), endpoint_view(ep), sb)
        return driver.join(driver_view(net), endpoint_view(ep), sb)

    def _step_configure(self, ep: Endpoint, join, ctr: Container, pending: tuple[Endpoint, ...] = ()) -> Endpoint:
        # the interface goes away with the 'leave' undo, so this step registers none;
        # only the first network with a gateway gives the sandbox its default route (Docker's rule)
        addrs = [a for a in (ep.ipv4, ep.ipv6) if a]
        has_default = any(e.gateway for e in (*self.container_endpoints(ctr.id), *pending))
        gateway = "" if join.disable_gateway or has_default else join.gateway
        gateway6 = "" if join.disable_gateway or has_default else join.gateway6
        sandbox.configure_interface(self.handle(ctr.sandbox_key), join.ifname, addrs, gateway, gateway6,
                                    join.static_routes)
        return dataclasses.replace(ep, gateway=gateway, gateway6=gateway6)

    def _step_external(self, undo: UndoStack, driver: NetworkDriver, net: Network, ep: Endpoint, ctr: Container):
        undo.push("revoke external", driver.revoke_external_connectivity, driver_view(net), endpoint_view(ep))
        driver.program_external_connectivity(driver_view(net), endpoint_view(ep))

    def unpublish(self, ep: Endpoint) -> None:
        """Take a global endpoint's peer record and addresses out of the cluster (fails while unreachable)."""
        net = self.networks.get(ep.network_id)
        if net is not None and net.scope == "global":
            self._require_cluster(net.driver)
            self.cluster.unpublish(ep)

    def detach(self, ep: Endpoint, ctr: Container, unpublished: bool = False) -> list[str]:
        """Reverse of :meth:`attach`; keeps going on failure and returns what failed."""
        net = self.networks.get(ep.network_id)
        failures: list[str] = []
        if net is None:
            return failures
        driver = resolve(self.drivers, net.driver)
        sb = SandboxInfo(ctr.id, self.handles.get(ctr.sandbox_key), ep.ifname)
        steps = [] if unpublished or net.scope != "global" else [("unpublish", lambda: self.unpublish(ep))]
        steps += [
            ("revoke external", lambda: driver.revoke_external_connectivity(driver_view(net), endpoint_view(ep))),
            ("leave", lambda: driver.leave(driver_view(net), endpoint_view(ep), sb)),
            ("delete endpoint", lambda: driver.delete_endpoint(driver_view(net), endpoint_view(ep))),
        ]
        for name, step in steps:
            try:
                step()
            except errors.NetmgrError as exc:
                log.warning("detach %s: %s failed: %s", ep.id[:12], name, exc)
                failures.append(f"{name}: {exc}")
        return failures

    def commit_endpoint(self, ep: Endpoint) -> None:
        """Record an attached endpoint in memory (after the store write); its names resolve now."""
        self._index(ep)
        self.records.add_endpoint(ep, self.networks[ep.network_id])

    def forget_endpoint(self, ep: Endpoint) -> None:
        """Drop an endpoint from memory and release its addresses."""
        self.endpoints.pop(ep.id, None)
        self._by_network.get(ep.network_id, {}).pop(ep.id, None)
        self._by_container.get(ep.container_id, {}).pop(ep.id, None)
        self.records.remove_endpoint(ep, self.networks.get(ep.network_id))
        self.ports.release(ep.ports)
        self.ipam.release_address(ep.network_id, ep.ipv4)
        self.ipam.release_address(ep.network_id, ep.ipv6)

    def _index(self, ep: Endpoint) -> None:
        self.endpoints[ep.id] = ep
        self._by_network.setdefault(ep.network_id, {})[ep.id] = ep
        self._by_container.setdefault(ep.container_id, {})[ep.id] = ep

    # -- the cluster's changes (global networks, remote peers), on the worker thread --------

    def cluster_networks(self, values: list[dict]) -> None:
        """Every global network as the cluster has it: add the new, forget the removed."""
        seen = set()
        for value in values:
            seen.add(value["id"])
            self.cluster_network(value["id"], value)
        for net in [n for n in self.networks.values() if n.scope == "global" and n.id not in seen]:
            self.cluster_network(net.id, None)

    def cluster_network(self, network_id: str, value: dict | None) -> None:
        """A global network appeared in (or left) the cluster."""
        try:
            if value is None:
                net = self.networks.get(network_id)
                if net is None or net.scope != "global":
                    return
                if self.network_endpoints(net.id):
                    log.warning("cluster: network %s was removed but has endpoints here; keeping it", net.name)
                    return
                self._forget_network(net)
                return
            if network_id in self.networks:
                return
            net = from_dict(Network, value)
            self.store.put(f"networks/{net.id}", to_dict(net))  # a local copy: known while etcd is down
            self.ipam.load_network(net)
            self.networks[net.id] = net
            for key, peer in list(self.remote_peers.items()):
                if peer.get("network") == net.id:
                    self._peer_changed(net, key, None, peer)
        except errors.NetmgrError as exc:
            log.error("cluster: applying network %s: %s", network_id[:12], exc)

    def cluster_peers(self, peers: dict[str, dict]) -> None:
        """Every other node's peer record (after connecting or a compaction): apply the difference."""
        for key in [k for k in self.remote_peers if k not in peers]:
            self.cluster_peer(key, None)
        for key, value in peers.items():
            if self.remote_peers.get(key) != value:
                self.cluster_peer(key, value)

    def cluster_peer(self, key: str, value: dict | None) -> None:
        """A remote endpoint appeared, changed or left: names, IPAM view, driver datapath."""
        old = self.remote_peers.pop(key, None)
        if value is not None:
            self.remote_peers[key] = value
        if old is None and value is None:
            return
        net = self.networks.get(key.split("/")[1])
        if net is not None:
            try:
                self._peer_changed(net, key, old, value)
            except errors.NetmgrError as exc:
                log.error("cluster: applying peer %s: %s", key, exc)

    def _peer_changed(self, net: Network, key: str, old: dict | None, new: dict | None) -> None:
        if old is not None:
            self.records.remove_endpoint(_peer_endpoint(old), net)
            self.ipam.release_address(net.id, old.get("ip", ""))
            self.ipam.release_address(net.id, old.get("ip6", ""))
        if new is not None:
            self.ipam.mark_address(net.id, new.get("ip", ""))
            self.ipam.mark_address(net.id, new.get("ip6", ""))
            self.records.add_endpoint(_peer_endpoint(new), net)
        # the datapath (PeerAware drivers) gets the same changes on a thread of its own: Engine.peer_sink

    def cluster_connected(self) -> None:
        """(Re)connected with a fresh lease: put our endpoints on it, delete our records nobody owns."""
        eps = [ep for ep in self.endpoints.values()
               if ep.network_id in self.networks and self.networks[ep.network_id].scope == "global"]
        try:
            for ep in self.cluster.republish(eps):
                log.error("cluster: an address of %s on network %s was taken by another host while this one "
                          "was away", ep.name, self.networks[ep.network_id].name)
        except errors.NetmgrError as exc:
            log.error("cluster: republishing this host's endpoints: %s", exc)

    @staticmethod
    def endpoint_key(ep: Endpoint) -> str:
        """The store key of an endpoint."""
        return f"endpoints/{ep.network_id}/{ep.id}"

    def put_endpoint_op(self, ep: Endpoint) -> Op:
        """The store write for an endpoint."""
        return Op(self.endpoint_key(ep), to_dict(ep))

    # -- sandboxes ---------------------------------------------------------------

    def create_sandbox(self, undo: UndoStack, container_id: str) -> str:
        """A new namespace for a container; returns its key (path)."""
        key = os.path.join(self.ns_dir, container_id[:12])
        handle = netns.create(key)
        self.handles[key] = handle
        undo.push("remove sandbox", self.remove_sandbox, key)
        return key

    def remove_sandbox(self, key: str) -> None:
        """Close the handle and remove the namespace; already gone is success."""
        if not key:
            return
        handle = self.handles.pop(key, None)
        if handle is not None:
            handle.close()
        netns.remove(key)

    def close(self) -> None:
        """Close every sandbox handle (namespaces stay)."""
        for handle in self.handles.values():
            handle.close()
        self.handles.clear()


def _new_endpoint(ep_id: str, net: Network, ctr: Container, req: AttachRequest, ifname: str, ipv4: str,
                  ipv6: str) -> Endpoint:
    """The record of an endpoint being attached (its MAC from its IPv4 address, none without an interface)."""
    return Endpoint(id=ep_id, network_id=net.id, container_id=ctr.id, name=ctr.name, ifname=ifname,
                    mac=mac_for(ipv4) if ifname else "", ipv4=ipv4, ipv6=ipv6, aliases=tuple(req.aliases),
                    static_ipv4=req.ip, static_ipv6=req.ip6)


def _peer_endpoint(peer: dict) -> Endpoint:
    """A remote endpoint as the records and IPAM see it, from its peer record."""
    return Endpoint(id=peer.get("endpoint", ""), network_id=peer.get("network", ""),
                    container_id=peer.get("container", ""), name=peer.get("name", ""), mac=peer.get("mac", ""),
                    ipv4=peer.get("ip", ""), ipv6=peer.get("ip6", ""), aliases=tuple(peer.get("aliases", ())))
