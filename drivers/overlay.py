"""The ``overlay`` driver: VXLAN across hosts, its peers programmed from etcd.

Per overlay network, on each host that has endpoints on it (made at the
first join, removed after the last leave):

* a bridge ``ov-<id12>`` with **no address** (pure L2: the host does not
  route into the overlay, so overlays are isolated from each other and from
  the host's own networks without any firewall rule);
* a VXLAN device ``vx-<id12>`` on it: the network's VNI (allocated in etcd),
  local address = this host's advertise address, learning off, ARP proxy on.

Nothing is flooded between hosts: for every remote endpoint (a peer record
in etcd, see :mod:`netmgr.cluster`) the driver programs a static FDB entry
(MAC → remote VTEP) and neighbour entries (IP → MAC) on the VXLAN device; the
device answers ARP/ND itself. The controller hands each peer change to
:meth:`OverlayDriver.set_peer`, for every overlay network; the driver keeps
them and programs those of networks present on this host.

MTU: the underlay interface's MTU − 50 (VXLAN over IPv4), or
``com.docker.network.driver.mtu``. Containers reach the outside through the
per-host gateway bridge (the controller attaches it, as Docker's
docker_gwbridge): join returns no gateway of its own.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import Any

from netmgr import errors
from netmgr.drivers.base import Capability, EndpointInfo, HostEnv, JoinInfo, NetworkInfo, PassiveDriver, SandboxInfo
from netmgr.runtime import netns
from netmgr.runtime.netlink import Netlink, mapped

log = logging.getLogger("netmgr.drivers.overlay")

OPT_MTU = "com.docker.network.driver.mtu"
OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"
KNOWN_OPTIONS = {OPT_MTU, OPT_VNI}
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
VXLAN_PORT = 4789


def _locked(method):
    """Run a driver method under its lock: peers arrive on their own thread (see set_peer)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def bridge_name(net_id: str) -> str:
    """The overlay network's bridge on this host."""
    return "ov-" + net_id[:12]


def vxlan_name(net_id: str) -> str:
    """The overlay network's VXLAN device on this host."""
    return "vx-" + net_id[:12]


def veth_name(ep: EndpointInfo) -> str:
    """The host side of an endpoint's veth (as the bridge driver's)."""
    return "veth" + ep.id[:7]


class OverlayDriver(PassiveDriver):
    """Multi-host networks over VXLAN (global scope)."""

    name = "overlay"

    def __init__(self, env: HostEnv, cluster=None, advertise_addr: str = "") -> None:
        self.env = env
        self.cluster = cluster  # netmgr.cluster.Cluster, or None without --cluster-store
        self.advertise_addr = advertise_addr
        self._local: dict[str, tuple[int, int]] = {}  # network id -> (bridge index, vxlan index)
        self._eps: dict[str, set[str]] = {}  # network id -> local endpoint ids
        self._peers: dict[str, dict[str, dict]] = {}  # network id -> peer key -> record (remote only)
        self._underlay_mtu: int | None = None
        #: peers are programmed on a thread of their own (not behind the daemon's operations), with a
        #: netlink socket of their own; the lock keeps them and join/leave/restore apart
        self._lock = threading.RLock()
        self._peer_nl: Netlink | None = None

    def capability(self) -> Capability:
        """Global scope: its networks, VNIs and peers live in the cluster store."""
        return Capability(scope="global", gateway_bridge=True)

    # -- networks ----------------------------------------------------------------

    def validate(self, net: NetworkInfo) -> None:
        """MTU, VNI and unknown options; an advertise address is needed. No side effect."""
        if not self.advertise_addr:
            raise errors.InvalidConfig("overlay networks need this host's underlay address: "
                                       "start netmgrd with --advertise-addr IP")
        mtu = net.options.get(OPT_MTU)
        if mtu and (not mtu.isdigit() or not 68 <= int(mtu) <= 65535):
            raise errors.InvalidConfig(f"invalid MTU {mtu!r}: want a number from 68 to 65535")
        vni = net.options.get(OPT_VNI)
        if vni and (not vni.isdigit() or not 1 <= int(vni) < 1 << 24):
            raise errors.InvalidConfig(f"invalid VXLAN ID {vni!r}: want a number from 1 to 16777215")
        if not net.pools:
            raise errors.InvalidConfig("overlay network needs an IPv4 pool")

    def create_network(self, net: NetworkInfo) -> dict[str, Any]:
        """Take a VNI in the cluster; the kernel objects come at the first join on each host."""
        vni = self.cluster.allocate_vni(net.id, int(net.options.get(OPT_VNI) or 0))
        return {"vni": vni}

    @_locked
    def delete_network(self, net: NetworkInfo) -> None:
        """Remove this host's bridge and VXLAN device; free the VNI if still held."""
        self._teardown(net.id)
        self._peers.pop(net.id, None)
        self._eps.pop(net.id, None)
        vni = net.driver_data.get("vni")
        if vni and self.cluster is not None and self.cluster.connected:
            with contextlib.suppress(errors.NetmgrError):
                self.cluster.release_vni(int(vni), net.id)

    def _mtu(self, net: NetworkInfo) -> int:
        if net.options.get(OPT_MTU):
            return int(net.options[OPT_MTU])
        if self._underlay_mtu is None:
            self._underlay_mtu = self._find_underlay_mtu()
        return self._underlay_mtu - VXLAN_OVERHEAD

    def _find_underlay_mtu(self) -> int:
        nl = self.env.nl
        index = next((i for i, addr, _plen in nl.addresses() if addr == self.advertise_addr), None)
        link = next((l for l in nl.links() if l.index == index), None)
        if link is None:
            raise errors.InvalidConfig(f"advertise address {self.advertise_addr} is not an address of this host")
        return link.mtu

    def _ensure_local(self, net: NetworkInfo) -> tuple[int, int]:
        """The bridge and VXLAN device of ``net`` on this host, with every known peer programmed."""
        have = self._local.get(net.id)
        if have is not None:
            return have
        mtu, vni = self._mtu(net), int(net.driver_data["vni"])
        br_name, vx_name = bridge_name(net.id), vxlan_name(net.id)
        self.env.nl.del_link(name=vx_name)  # a leftover (crash) would hold stale entries
        bridge = self.env.nl.link_index(br_name)
        made_bridge = bridge is None
        try:
            if made_bridge:
                with mapped(f"create overlay bridge {br_name}"):
                    bridge = self.env.nl.add_bridge(br_name, mtu=mtu)
                netns.sysctl_write(self.env.netns_path, f"net.ipv6.conf.{br_name}.disable_ipv6", "1")
                self.env.nl.set_link(bridge, up=True)
            with mapped(f"create VXLAN device {vx_name} (VNI {vni})"):
                vxlan = self.env.nl.add_vxlan(vx_name, vni, self.advertise_addr, VXLAN_PORT, mtu, master=bridge)
        except BaseException:
            if made_bridge and bridge is not None:
                self.env.nl.del_link(index=bridge)
            raise
        self._local[net.id] = (bridge, vxlan)
        for record in self._peers.get(net.id, {}).values():
            self._program(self.env.nl, vxlan, record)
        return bridge, vxlan

    def _teardown(self, net_id: str) -> None:
        self._local.pop(net_id, None)
        self.env.nl.del_link(name=vxlan_name(net_id))
        self.env.nl.del_link(name=bridge_name(net_id))

    # -- peers ---------------------------------------------------------------------

    def _nl_for_peers(self) -> Netlink:
        if self._peer_nl is None:
            path = self.env.netns_path
            self._peer_nl = netns.run_in(path, Netlink) if path else Netlink()
        return self._peer_nl

    @_locked
    def set_peer(self, network_id: str, key: str, record: dict | None) -> None:
        """A remote endpoint appeared (record), changed, or left (None): program this host.

        Called for every overlay network, known here or not yet: the record is
        kept and programmed when the network's datapath exists on this host.
        """
        peers = self._peers.setdefault(network_id, {})
        old = peers.pop(key, None)
        if record is not None:
            peers[key] = record
        local = self._local.get(network_id)
        if local is None:
            return
        nl = self._nl_for_peers()
        if old is not None and (record is None or _datapath(old) != _datapath(record)):
            self._unprogram(nl, local[1], old, keep_mac=record is not None and record["mac"] == old["mac"])
        if record is not None and (old is None or _datapath(old) != _datapath(record)):
            self._program(nl, local[1], record)

    @_locked
    def set_all_peers(self, records: dict[str, dict]) -> None:
        """Every remote peer (after connecting or a compaction): program the difference."""
        current = {k for peers in self._peers.values() for k in peers}
        for key in current - records.keys():
            self.set_peer(key.split("/")[1], key, None)
        for key, record in records.items():
            if self._peers.get(key.split("/")[1], {}).get(key) != record:
                self.set_peer(key.split("/")[1], key, record)

    def close(self) -> None:
        """Close the peer thread's netlink socket."""
        if self._peer_nl is not None:
            self._peer_nl.close()
            self._peer_nl = None

    @staticmethod
    def _program(nl: Netlink, vxlan: int, peer: dict) -> None:
        try:
            ips = [ip.split("/")[0] for ip in (peer.get("ip"), peer.get("ip6")) if ip]
            nl.peer_add(vxlan, peer["mac"], peer["vtep"], ips)
        except errors.NetmgrError as exc:
            log.error("overlay: programming peer %s (%s): %s", peer.get("name"), peer.get("ip"), exc)

    @staticmethod
    def _unprogram(nl: Netlink, vxlan: int, peer: dict, keep_mac: bool = False) -> None:
        with contextlib.suppress(errors.NetmgrError):
            for ip in (peer.get("ip"), peer.get("ip6")):
                if ip:
                    nl.neigh_del(vxlan, ip.split("/")[0])
            if not keep_mac:
                nl.fdb_del(vxlan, peer["mac"], peer["vtep"])

    # -- endpoints -------------------------------------------------------------------

    def create_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> dict[str, Any]:
        """Name the host-side veth (made at join, its peer created in the sandbox)."""
        return {"veth": veth_name(ep)}

    @_locked
    def join(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> JoinInfo:
        """The network's datapath on this host (first join), then a veth onto its bridge."""
        if sb.handle is None:
            raise errors.InternalError("overlay join needs a sandbox namespace")
        first = not self._eps.get(net.id)
        bridge, _vxlan = self._ensure_local(net)
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        try:
            with mapped(f"create endpoint {ep.id[:12]}"):
                self.env.nl.add_veth(host_if, sb.ifname, sb.handle.fd, ep.mac or None, self._mtu(net),
                                     master=bridge, up=True)
            if ep.mac:
                try:
                    self._pin_local_mac(host_if, ep.mac)
                except BaseException:
                    with contextlib.suppress(errors.NetmgrError):
                        self.env.nl.del_link(name=host_if)
                    raise
        except BaseException:
            if first:
                self._teardown(net.id)
            raise
        with contextlib.suppress(errors.NetmgrError):
            netns.sysctl_write(self.env.netns_path, f"net.ipv6.conf.{host_if}.disable_ipv6", "1")
        self._eps.setdefault(net.id, set()).add(ep.id)
        return JoinInfo(ifname=sb.ifname, disable_gateway=True)

    def _pin_local_mac(self, host_if: str, mac: str) -> None:
        """A static bridge FDB entry: ``mac`` is behind this endpoint's veth, not behind the VXLAN port.

        The bridge learns source MACs on the VXLAN port from remote traffic. When an address (and
        so its IP-derived MAC) moves from another host to this one, that learned entry stays for
        the ageing time (300 s) and sends the new local container's frames back into the tunnel:
        the container is unreachable until it speaks first. Pinning the MAC at join replaces it.
        """
        index = self.env.nl.link_index(host_if)
        if index is None:
            raise errors.KernelError(f"link {host_if} vanished right after creation")
        self.env.nl.fdb_pin(index, mac)

    @_locked
    def leave(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> None:
        """Delete the veth; the last endpoint on this host takes the bridge and VXLAN device along."""
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        with mapped(f"delete endpoint {ep.id[:12]}"):
            self.env.nl.del_link(name=host_if)
        eps = self._eps.get(net.id, set())
        eps.discard(ep.id)
        if not eps:
            self._eps.pop(net.id, None)
            self._teardown(net.id)

    # -- restart -------------------------------------------------------------------------

    @_locked
    def restore(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """After a restart: the datapath of networks with local endpoints, nothing else of ours.

        The VXLAN device is re-created empty: peers are programmed again from
        etcd once the cluster is reached, so no stale entry survives.
        """
        by_net: dict[str, set[str]] = {}
        for ep in endpoints:
            by_net.setdefault(ep.network_id, set()).add(ep.id)
        wanted = set()
        for net in nets:
            if by_net.get(net.id) and net.driver_data.get("vni"):
                self._local.pop(net.id, None)
                self._ensure_local(net)
                self._eps[net.id] = by_net[net.id]
                wanted |= {bridge_name(net.id), vxlan_name(net.id)}
        known = {ep.driver_data.get("veth") or veth_name(ep) for ep in endpoints}
        ours = {idx for pair in self._local.values() for idx in pair}
        for link in self.env.nl.links():
            if link.name.startswith(("ov-", "vx-")) and link.name not in wanted:
                self.env.nl.del_link(index=link.index)
            elif link.kind == "veth" and link.master in ours and link.name not in known:
                self.env.nl.del_link(index=link.index)

    @_locked
    def restore_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> bool:
        """Re-enslave an endpoint's veth to the bridge; False when the veth is gone."""
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        index = self.env.nl.link_index(host_if)
        local = self._local.get(net.id)
        if index is None or local is None:
            return False
        with mapped(f"restore endpoint {ep.id[:12]}"):
            self.env.nl.set_link(index, master=local[0], up=True)
            if ep.mac:
                self.env.nl.fdb_pin(index, ep.mac)
        return True


def _datapath(peer: dict) -> tuple:
    return peer.get("mac"), peer.get("vtep"), peer.get("ip"), peer.get("ip6")
