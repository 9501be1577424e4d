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
KNOWN_OPTIONS = {OPT_NAME, OPT_ICC, OPT_MASQ, OPT_HOST_IP, OPT_MTU,
                 "com.docker.network.bridge.default_bridge"}
IFNAMSIZ = 15


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


class BridgeDriver(PassiveDriver):
    """Linux bridge networks on one host."""

    name = "bridge"

    def __init__(self, env: HostEnv) -> None:
        self.env = env
        self.fw = BridgeFirewall(env.nft, env.table)
        self._index: dict[str, int] = {}  # bridge name -> ifindex (bridges we know are there)
        self._forwarding_on = False

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
        """Firewall elements, then the bridge; already gone is success."""
        name = bridge_name(net)
        self.fw.remove_network(self._fw_network(net))
        self._index.pop(name, None)
        with mapped(f"delete bridge {name}"):
            self.env.nl.del_link(name=name)

    def restore(self, nets: list[NetworkInfo], endpoints: list[EndpointInfo]) -> None:
        """After a restart: the firewall tables in one batch, any missing bridge, no orphan veth."""
        self.rebuild_firewall(nets, endpoints)
        for net in nets:
            name = bridge_name(net)
            index = self.env.nl.link_index(name)
            if index is None:
                self._make_bridge(net)
            else:
                self._index[name] = index
                with mapped(f"configure bridge {name}"):
                    self.env.nl.set_bridge(index, mcast_snooping=False)  # bridges made by older versions
        if nets:
            self._ensure_forwarding()
        self._remove_orphan_veths(endpoints)
        docker_compat.ensure([bridge_name(n) for n in nets], self.env.netns_path)

    def _remove_orphan_veths(self, endpoints: list[EndpointInfo]) -> None:
        # a crash between "veth created" and "endpoint stored" leaves a veth nobody owns
        ours = set(self._index.values())
        known = {ep.driver_data.get("veth") or veth_name(ep) for ep in endpoints}
        for link in self.env.nl.links():
            if link.kind == "veth" and link.master in ours and link.name not in known:
                self.env.nl.del_link(index=link.index)

    def restore_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> bool:
        """Re-enslave an endpoint's host side to its bridge; False when the veth is gone."""
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        index = self.env.nl.link_index(host_if)
        if index is None:
            return False
        with mapped(f"restore endpoint {ep.id[:12]}"):
            self.env.nl.set_link(index, master=self._bridge_index(net), up=True)
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
        self.fw.rebuild([self._fw_network(n) for n in nets], ports, noicc)

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
        """Name the host-side veth; the pair itself is made at join, peer in place."""
        return {"veth": veth_name(ep)}

    def join(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> JoinInfo:
        """One request: veth pair, peer in the sandbox as ``sb.ifname``, host side on the bridge, up."""
        if sb.handle is None:
            raise errors.InternalError("bridge join needs a sandbox namespace")
        master = self._bridge_index(net)
        mtu = int(net.options.get(OPT_MTU) or 0) or None
        host_if = ep.driver_data.get("veth") or veth_name(ep)
        try:
            with mapped(f"create endpoint {ep.id[:12]}"):
                self.env.nl.add_veth(host_if, sb.ifname, sb.handle.fd, ep.mac or None, mtu, master=master, up=True)
        except errors.KernelError as exc:
            if exc.errno == errno.EXFULL:
                raise errors.Conflict(f"network {net.name} is full: a Linux bridge holds at most 1023 endpoints") from exc
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
