"""The ``bridge`` driver: a Linux bridge per network, a veth per endpoint.

* network: a bridge (``nm-<id12>``, or ``com.docker.network.bridge.name``;
  not Docker's ``br-`` prefix, so rules for one never match the other's)
  holding the gateway address of each pool, plus set elements in netmgr's
  nftables table (isolation from other bridge networks, masquerade);
* join: one netlink request creates the veth with its peer already in the
  sandbox under its final name (eth0, eth1…), the host side already
  enslaved to the bridge and up; the controller then configures the peer;
* leave: deleting the host side removes both ends.

Bridges have multicast snooping off. With snooping on, every port that
comes up or goes down makes the kernel restart two multicast query timers on
*every* port of the bridge (``br_port_state_selection`` →
``br_multicast_enable_port``): each attach and detach did O(ports) timer
work, 0.2 ms of an attach and 7 ms of a detach at 1000 ports, the largest
part of the kernel's growth that a bridge option removes
(labs/bench/README.md). Nothing visible changes: snooping only restricts
multicast once some port hears a multicast querier; the bridge's own querier
is off by default and containers rarely run one, and without a querier the
kernel floods multicast to every port whether snooping is on or off. With a
querier in a container, snooping off means its group's traffic also reaches
ports that did not join (still only inside the network), as on a plain
switch.

Shard bridges (``-o com.netmgr.bridge.ports_per_bridge=N``, off by default):
the network's bridge takes its first N endpoints; later ones go to shard
bridges ``nm-s<id8><k>`` of at most N ports each, every shard joined to the
network's bridge by a veth trunk (``nmt…`` on the network's bridge, ``nmu…``
on the shard). Adding a port to a Linux bridge walks all its ports several
times (``br_add_if``, the adjacency list, STP port selection, the FDB), so on
one bridge an attach costs 2.2x more at 1000 ports than at 10; with 64-port
shards 1.25x (labs/bench/README.md, "Shard bridges"). The price is in the data
path: a frame between two shards crosses two more bridges and two veths (one
TCP stream at 0.85x of same-bridge speed, 0.92x between the network's bridge
and a shard; 66 / 50 µs round trips against 43), which is why it is an option. Shards carry no address (routing,
NAT and the firewall's inet rules stay on the network's bridge); with ICC off
the trunks' network-side ends join the no-ICC set, so frames between shards
are dropped like frames between ports, while traffic to the gateway (local
delivery) passes. A shard is made at the first join that needs it and removed
when its last endpoint leaves (and with the network). It also lifts a network's 1023-endpoint limit.
"""

from __future__ import annotations

import contextlib
import errno
from typing import Any

from netmgr import errors
from netmgr.drivers.base import (
    Capability,
    EndpointInfo,
    HostEnv,
    JoinInfo,
    NetworkInfo,
    PassiveDriver,
    SandboxInfo,
)
from netmgr.drivers import docker_compat
from netmgr.drivers.bridge_fw import BridgeFirewall, FwNetwork, FwPort
from netmgr.runtime import netns
from netmgr.runtime.netlink import mapped

OPT_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_IP = "com.docker.network.bridge.host_binding_ipv4"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_PORTS = "com.netmgr.bridge.ports_per_bridge"
KNOWN_OPTIONS = {OPT_NAME, OPT_ICC, OPT_MASQ, OPT_HOST_IP, OPT_MTU, OPT_PORTS,
                 "com.docker.network.bridge.default_bridge"}
IFNAMSIZ = 15
MAX_SHARDS = 999  # shard numbers are 3 digits of the shard and trunk names


def _bool_opt(net: NetworkInfo, key: str, default: bool = True) -> bool:
    value = net.options.get(key)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise errors.InvalidConfig(f"invalid value {value!r} for option {key}: want true or false")


def bridge_name(net: NetworkInfo) -> str:
    """The bridge's interface name for this network."""
    return net.options.get(OPT_NAME) or "nm-" + net.id[:12]


def veth_name(ep: EndpointInfo) -> str:
    """The host-side veth name of an endpoint (Docker's ``veth`` + 7 hex)."""
    return "veth" + ep.id[:7]


def ports_per_bridge(net: NetworkInfo) -> int:
    """``com.netmgr.bridge.ports_per_bridge``: endpoint ports per bridge before sharding; 0 = one bridge."""
    value = (net.options.get(OPT_PORTS) or "").strip()
    if not value or value == "0":
        return 0
    if not value.isdigit() or not 2 <= int(value) <= 1000:
        raise errors.InvalidConfig(f"invalid value {value!r} for option {OPT_PORTS}: want 0 (one bridge) "
                                   "or a number of ports from 2 to 1000")
    return int(value)


def _fw_shard(name: str) -> FwNetwork:
    """A shard in netmgr's inet table: only a bridge of its own network (no subnet, no NAT).

    That matters where br_netfilter is loaded (dockerd loads it): bridged
    frames then pass the inet hooks too, with the shard as their device, and
    must meet the same-bridge exemptions, not the masquerade or isolation rules.
    """
    return FwNetwork(name, (), (), False, False)


def shard_name(network_id: str, k: int) -> str:
    """Shard bridge ``k`` (1, 2, …) of a network: ``nm-s`` + 8 hex of the network ID + 3 digits."""
    return f"nm-s{network_id[:8]}{k:03d}"


def trunk_names(network_id: str, k: int) -> tuple[str, str]:
    """The veth trunk of shard ``k``: its end on the network's bridge, its end on the shard."""
    return f"nmt{network_id[:9]}{k:03d}", f"nmu{network_id[:9]}{k:03d}"


class BridgeDriver(PassiveDriver):
    """Linux bridge networks on one host."""

    name = "bridge"

    def __init__(self, env: HostEnv) -> None:
        self.env = env
        self.fw = BridgeFirewall(env.nft, env.table)
        self._index: dict[str, int] = {}  # bridge name -> ifindex (bridges we know are there)
        self._forwarding_on = False
        self._occupancy: dict[str, dict[int, int]] = {}  # sharded network ID -> shard (0: its bridge) -> endpoints
        self._shards: dict[str, set[int]] = {}  # sharded network ID -> shards that exist

    def capability(self) -> Capability:
        """Local scope."""
        return Capability(scope="local")

    # -- networks ------------------------------------------------------------

    def validate(self, net: NetworkInfo) -> None:
        """Check options: bridge name length, MTU, booleans. No side effect."""
        name = bridge_name(net)
        if len(name) > IFNAMSIZ or "/" in name or " " in name or not name:
            raise errors.InvalidConfig(f"invalid bridge name {name!r}: at most {IFNAMSIZ} characters, no '/' or space")
        mtu = net.options.get(OPT_MTU)
        if mtu:
            if not mtu.isdigit() or not 68 <= int(mtu) <= 65535:
                raise errors.InvalidConfig(f"invalid MTU {mtu!r}: want a number from 68 to 65535")
        _bool_opt(net, OPT_ICC)
        _bool_opt(net, OPT_MASQ)
        ports_per_bridge(net)
        if not net.pools:
            raise errors.InvalidConfig("bridge network needs an IPv4 pool")

    def _fw_network(self, net: NetworkInfo) -> FwNetwork:
        v4 = tuple(s for s, _ in net.pools if ":" not in s)
        v6 = tuple(s for s, _ in net.pools if ":" in s)
        return FwNetwork(bridge_name(net), v4, v6, _bool_opt(net, OPT_MASQ), net.internal)

    @staticmethod
    def _fw_ports(net: NetworkInfo, ep: EndpointInfo) -> list[FwPort]:
        """DNAT entries of an endpoint: IPv4 always, IPv6 when it has an address (not on internal networks)."""
        if net.internal:
            return []
        out = []
        host_ip_default = net.options.get(OPT_HOST_IP, "")
        for p in ep.ports:
            host_ip = p.host_ip or ("" if host_ip_default in ("", "0.0.0.0") else host_ip_default)
            for ctr in (ep.ipv4, ep.ipv6):
                if not ctr or (host_ip and (":" in host_ip) != (":" in ctr)):
                    continue
                out.append(FwPort(p.proto, host_ip, p.host_port, ctr.split("/")[0], p.container_port))
        return out

    def create_network(self, net: NetworkInfo) -> dict[str, Any]:
        """Bridge, gateway addresses, up, firewall elements; rolls its own steps back on failure."""
        index = self._make_bridge(net)
        try:
            self.fw.add_network(self._fw_network(net))
        except BaseException:
            self.env.nl.del_link(index=index)
            self._index.pop(bridge_name(net), None)
            raise
        return {"bridge": bridge_name(net)}

    def _make_bridge(self, net: NetworkInfo) -> int:
        name = bridge_name(net)
        mtu = int(net.options.get(OPT_MTU) or 0) or None
        self._ensure_forwarding()
        with mapped(f"create bridge {name}"):
            index = self.env.nl.add_bridge(name, mtu=mtu, mcast_snooping=False)
        try:
            self._configure_bridge(index, net)
            # DNAT from 127.0.0.1 to a container needs loopback sources routable on the bridge
            netns.sysctl_write(self.env.netns_path, f"net.ipv4.conf.{name}.route_localnet", "1")
        except BaseException:
            self.env.nl.del_link(index=index)
            raise
        self._index[name] = index
        return index

    def _configure_bridge(self, index: int, net: NetworkInfo) -> None:
        for subnet, gateway in net.pools:
            if gateway:
                plen = int(subnet.split("/")[1])
                with mapped(f"add gateway {gateway}"):
                    self.env.nl.add_addr(index, gateway, plen)
        with mapped("bring bridge up"):
            self.env.nl.set_link(index, up=True)

    def _ensure_forwarding(self) -> None:
        # Docker turns forwarding on at start; we do it when the first bridge is made.
        if not self._forwarding_on:
            netns.sysctl_write(self.env.netns_path, "net.ipv4.ip_forward", "1")
            netns.sysctl_write(self.env.netns_path, "net.ipv6.conf.all.forwarding", "1")
            self._forwarding_on = True

    def delete_network(self, net: NetworkInfo) -> None:
        """Firewall elements, then the shards and the bridge; already gone is success."""
        name = bridge_name(net)
        self.fw.remove_network(self._fw_network(net))
        if ports_per_bridge(net):
            self._delete_shards(net)
        self._index.pop(name, None)
        with mapped(f"delete bridge {name}"):
            self.env.nl.del_link(name=name)

    def _delete_shards(self, net: NetworkInfo) -> None:
        """Every shard bridge and trunk of the network that the kernel has (found by name)."""
        shard_prefix, trunk_prefix = shard_name(net.id, 0)[:-3], trunk_names(net.id, 0)[0][:-3]
        icc = _bool_opt(net, OPT_ICC)
        links = self.env.nl.links()
        for link in links:  # trunks first: a shard bridge is then empty when it goes
            if link.name.startswith(trunk_prefix):
                if not icc:
                    self.fw.remove_noicc(link.name)
                with mapped(f"delete trunk {link.name}"):
                    self.env.nl.del_link(index=link.index)  # its other end goes with it
        for link in links:
            if link.name.startswith(shard_prefix):
                self.fw.remove_network(_fw_shard(link.name))
                self._index.pop(link.name, None)
                with mapped(f"delete shard bridge {link.name}"):
                    self.env.nl.del_link(index=link.index)
        self._shards.pop(net.id, None)
        self._occupancy.pop(net.id, None)

    def restore(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """After a restart: the firewall tables in one batch, any missing bridge, no orphan veth."""
        self._find_shards(nets, endpoints)
        self.rebuild_firewall(nets, endpoints)
        for net in nets:
            name = bridge_name(net)
            index = self.env.nl.link_index(name)
            if index is None:
                self._make_bridge(net)
                self._shards.pop(net.id, None)  # trunks of the old bridge are loose: make the shards again
            else:
                self._index[name] = index
                with mapped(f"configure bridge {name}"):
                    self.env.nl.set_bridge(index, mcast_snooping=False)  # bridges made by older versions
        if nets:
            self._ensure_forwarding()
        self._restore_shards(nets, endpoints)
        self._remove_orphan_veths(endpoints)
        docker_compat.ensure([bridge_name(n) for n in nets], self.env.netns_path)

    def _find_shards(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """After a restart: the shards the kernel has and how many endpoints each holds."""
        sharded = {net.id for net in nets if ports_per_bridge(net)}
        self._occupancy = {net_id: {} for net_id in sharded}
        for ep in endpoints:
            if ep.network_id in sharded:
                k = int(ep.driver_data.get("shard", 0))
                self._occupancy[ep.network_id][k] = self._occupancy[ep.network_id].get(k, 0) + 1
        self._shards = {net_id: set() for net_id in sharded}
        if not sharded:
            return
        names = {link.name: link.index for link in self.env.nl.links()}
        by_prefix = {shard_name(net_id, 0)[:-3]: net_id for net_id in sharded}
        for name, index in names.items():
            net_id = by_prefix.get(name[:-3])
            if net_id is not None and name[-3:].isdigit() and trunk_names(net_id, int(name[-3:]))[0] in names:
                self._shards[net_id].add(int(name[-3:]))
                self._index[name] = index

    def _restore_shards(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """Re-make the shards that endpoints are on and that are gone (or lost their trunk)."""
        by_id = {net.id: net for net in nets}
        wanted = {(ep.network_id, int(ep.driver_data["shard"])) for ep in endpoints
                  if ep.network_id in by_id and int(ep.driver_data.get("shard", 0))}
        for net_id, k in sorted(wanted):
            if k not in self._shards.get(net_id, set()):
                net = by_id[net_id]
                self._remove_shard(net, k)  # half of one (a bridge without its trunk) goes first
                self._make_shard(net, k)

    def _remove_orphan_veths(self, endpoints: list[EndpointInfo]) -> None:
        # a crash between "veth created" and "endpoint stored" leaves a veth nobody owns
        ours = set(self._index.values())
        known = {ep.driver_data.get("veth") or veth_name(ep) for ep in endpoints}
        known |= set(self._trunk_ends())
        for link in self.env.nl.links():
            if link.kind == "veth" and link.master in ours and link.name not in known:
                self.env.nl.del_link(index=link.index)

    def restore_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> bool:
        """Re-enslave an endpoint's host side to its bridge (or shard); False when the veth is gone."""
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        index = self.env.nl.link_index(host_if)
        if index is None:
            return False
        master = self._master(net, ep)
        with mapped(f"restore endpoint {ep.id[:12]}"):
            self.env.nl.set_link(index, master=master, up=True)
            if ep.ports:
                self.env.nl.set_hairpin(index)
        return True

    def rebuild_firewall(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """Write netmgr's tables from scratch: networks, published ports, no-ICC ports."""
        by_id = {n.id: n for n in nets}
        ports, noicc = [], []
        for ep in endpoints:
            net = by_id.get(ep.network_id)
            if net is None:
                continue
            ports += self._fw_ports(net, ep)
            if not _bool_opt(net, OPT_ICC):
                noicc.append(ep.driver_data.get("veth") or veth_name(ep))
        shards = []
        for net in nets:
            known = sorted(self._shards.get(net.id, ()))
            shards += [_fw_shard(shard_name(net.id, k)) for k in known]
            if not _bool_opt(net, OPT_ICC):
                noicc += [trunk_names(net.id, k)[0] for k in known]
        self.fw.rebuild([self._fw_network(n) for n in nets] + shards, ports, noicc)

    def repair(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo], firewall: bool = True,
               docker: bool = True) -> list[str]:
        """Re-apply what someone else removed or overrode; return what was done.

        ``firewall``: netmgr's tables may have been flushed or edited;
        ``docker``: iptables' filter table changed (dockerd started), so
        DOCKER-USER may need netmgr's accepts.
        """
        done = []
        if firewall and not self.fw.intact():
            self.rebuild_firewall(nets, endpoints)
            done.append("rebuilt the nftables tables")
        if docker:
            done += docker_compat.ensure([bridge_name(n) for n in nets], self.env.netns_path)
        return done

    def _bridge_index(self, net: NetworkInfo) -> int:
        name = bridge_name(net)
        index = self._index.get(name)
        if index is None:
            index = self.env.nl.link_index(name)
            if index is None:
                raise errors.KernelError(f"bridge {name} of network {net.name} is missing")
            self._index[name] = index
        return index

    # -- endpoints -------------------------------------------------------

    def create_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> dict[str, Any]:
        """Name the host-side veth (and, when sharded, pick its bridge); the pair itself is made at join."""
        data: dict[str, Any] = {"veth": veth_name(ep)}
        per_bridge = ports_per_bridge(net)
        if per_bridge:
            counts = self._occupancy.setdefault(net.id, {})
            k = 0
            while counts.get(k, 0) >= per_bridge:
                k += 1
            if k > MAX_SHARDS:
                raise errors.Conflict(f"network {net.name} is full: {MAX_SHARDS} shards of {per_bridge} ports")
            counts[k] = counts.get(k, 0) + 1
            data["shard"] = k
        return data

    def delete_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """Give the endpoint's place on its shard back; a shard left empty goes (also on a rolled-back join)."""
        k = ep.driver_data.get("shard")
        counts = self._occupancy.get(net.id)
        if k is None or not counts or counts.get(int(k), 0) <= 0:
            return
        k = int(k)
        counts[k] -= 1
        if k and not counts[k] and k in self._shards.get(net.id, set()):
            self._remove_shard(net, k)

    def _master(self, net: NetworkInfo, ep: EndpointInfo) -> int:
        """The ifindex of the bridge this endpoint's veth joins (a shard is made when missing)."""
        k = int(ep.driver_data.get("shard", 0))
        if not k:
            return self._bridge_index(net)
        index = self._index.get(shard_name(net.id, k))
        if index is not None and k in self._shards.get(net.id, set()):
            return index
        return self._make_shard(net, k)

    def _make_shard(self, net: NetworkInfo, k: int) -> int:
        """Shard bridge ``k``: no address, no IPv6, snooping off, joined to the network's bridge by a trunk, up."""
        name = shard_name(net.id, k)
        outer, inner = trunk_names(net.id, k)
        mtu = int(net.options.get(OPT_MTU) or 0) or None
        root = self._bridge_index(net)
        with mapped(f"create shard bridge {name}"):
            index = self.env.nl.add_bridge(name, mtu=mtu, mcast_snooping=False)
        try:
            with mapped(f"create trunk {outer}"):
                self.env.nl.add_veth(outer, inner, None, None, mtu, master=root, up=False)
            for dev in (name, outer, inner):  # no link-local addresses, routes or ND on pure L2 devices
                netns.sysctl_write(self.env.netns_path, f"net.ipv6.conf.{dev}.disable_ipv6", "1")
            # and no ARP answers from the shard bridge: with arp_ignore 0 it would answer for the
            # gateway address (any local address) with its own MAC, racing the network's bridge, and
            # containers that took its answer would send their traffic out through the shard device
            netns.sysctl_write(self.env.netns_path, f"net.ipv4.conf.{name}.arp_ignore", "8")
            with mapped(f"bring shard {name} up"):
                self.env.nl.set_link(self.env.nl.link_index(inner), master=index, up=True)
                self.env.nl.set_link(self.env.nl.link_index(outer), up=True)
                self.env.nl.set_link(index, up=True)
            self.fw.add_network(_fw_shard(name))
            if not _bool_opt(net, OPT_ICC):
                self.fw.add_noicc(outer)
        except BaseException:
            self.fw.remove_network(_fw_shard(name))
            self.env.nl.del_link(name=outer)
            self.env.nl.del_link(index=index)
            raise
        self._index[name] = index
        self._shards.setdefault(net.id, set()).add(k)
        return index

    def _remove_shard(self, net: NetworkInfo, k: int) -> None:
        """Shard ``k`` and its trunk; already gone is fine."""
        name = shard_name(net.id, k)
        outer, _ = trunk_names(net.id, k)
        if not _bool_opt(net, OPT_ICC):
            self.fw.remove_noicc(outer)
        self.fw.remove_network(_fw_shard(name))
        self.env.nl.del_link(name=outer)
        self.env.nl.del_link(name=name)
        self._index.pop(name, None)
        self._shards.get(net.id, set()).discard(k)

    def _trunk_ends(self) -> list[str]:
        """Both ends of every known trunk (veths on netmgr's bridges that are not endpoints)."""
        return [end for net_id, shards in self._shards.items() for k in shards for end in trunk_names(net_id, k)]

    def join(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> JoinInfo:
        """One request: veth pair, peer in the sandbox as ``sb.ifname``, host side on the bridge, up."""
        if sb.handle is None:
            raise errors.InternalError("bridge join needs a sandbox namespace")
        master = self._master(net, ep)  # a shard made here goes again in delete_endpoint if this fails
        mtu = int(net.options.get(OPT_MTU) or 0) or None
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        try:
            with mapped(f"create endpoint {ep.id[:12]}"):
                self.env.nl.add_veth(host_if, sb.ifname, sb.handle.fd, ep.mac or None, mtu, master=master, up=True)
        except errors.KernelError as exc:
            if exc.errno == errno.EXFULL:
                raise errors.Conflict(f"network {net.name} is full: a Linux bridge holds at most 1023 endpoints "
                                      f"(-o {OPT_PORTS}=64 spreads them over shard bridges)") from exc
            raise
        # a bridge port needs no IPv6 of its own: otherwise each one adds a link-local address,
        # fe80::/64 and ff00::/8 routes to the host's tables, which every later link deletion
        # walks (fib6_ifdown), and sends DAD/RS/MLD to its container
        with contextlib.suppress(errors.NetmgrError):
            netns.sysctl_write(self.env.netns_path, f"net.ipv6.conf.{host_if}.disable_ipv6", "1")
        if not _bool_opt(net, OPT_ICC):
            try:
                self.fw.add_noicc(host_if)
            except BaseException:
                self.env.nl.del_link(name=host_if)
                raise
        gw4 = next((g for s, g in net.pools if ":" not in s), "")
        gw6 = next((g for s, g in net.pools if ":" in s), "")
        if net.internal:
            return JoinInfo(ifname=sb.ifname, disable_gateway=True)
        return JoinInfo(ifname=sb.ifname, gateway=gw4, gateway6=gw6)

    def leave(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> None:
        """Delete the host side (the kernel removes the peer with it)."""
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        if not _bool_opt(net, OPT_ICC):
            self.fw.remove_noicc(host_if)
        with mapped(f"delete endpoint {ep.id[:12]}"):
            self.env.nl.del_link(name=host_if)

    def program_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """Published ports: DNAT map elements, and hairpin on the port (a container may use its own)."""
        ports = self._fw_ports(net, ep)
        if not ports:
            return
        self.fw.add_ports(ports)
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        index = self.env.nl.link_index(host_if)
        if index is not None:
            with mapped(f"hairpin on {host_if}"):
                self.env.nl.set_hairpin(index)

    def revoke_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """Remove the endpoint's DNAT elements; already gone is fine."""
        ports = self._fw_ports(net, ep)
        if ports:
            self.fw.remove_ports(ports)
