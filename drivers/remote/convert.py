"""Conversions between netmgr's driver types and the ``netmgr.plugin.v1`` messages.

The one place that knows both sides (as netavark's ``From``/``TryFrom``
impls around its generated gRPC module). Replies from a plugin are checked
here: anything malformed raises :class:`MalformedReply` (a NetmgrError), so
the operation fails with a clear message and rolls back.
"""

from __future__ import annotations

import ipaddress
import re

from netmgr.drivers.base import Capability, EndpointInfo, JoinInfo, NetworkInfo
from netmgr.proto.gen import netmgr_plugin_v1_driver_pb2 as dpb

from netmgr import errors

IFNAMSIZ = 15
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class MalformedReply(errors.NetmgrError):
    """A plugin answered something that does not follow the protocol."""


def host_ifname(endpoint_id: str) -> str:
    """The host-side interface name netmgr suggests to plugins for an endpoint (14 characters)."""
    return "nmp" + endpoint_id[:11]


def _ipam_data(pools: tuple[tuple[str, str], ...], v6: bool, scope: str) -> list[dpb.IpamData]:
    space = "GlobalDefault" if scope == "global" else "LocalDefault"
    out = []
    for subnet, gateway in pools:
        if (":" in subnet) != v6:
            continue
        plen = subnet.partition("/")[2]
        out.append(dpb.IpamData(address_space=space, pool=subnet, gateway=f"{gateway}/{plen}" if gateway else ""))
    return out


def network(net: NetworkInfo, scope: str = "local") -> dpb.Network:
    """A network as plugins see it (sent with every call)."""
    data = {str(k): str(v) for k, v in net.driver_data.items()}
    return dpb.Network(id=net.id, name=net.name, options=dict(net.options),
                       ipv4_data=_ipam_data(net.pools, False, scope), ipv6_data=_ipam_data(net.pools, True, scope),
                       internal=net.internal, enable_ipv6=net.ipv6, driver_data=data)


def interface(ep: EndpointInfo) -> dpb.EndpointInterface:
    """An endpoint's addresses and MAC."""
    return dpb.EndpointInterface(address=ep.ipv4, address_ipv6=ep.ipv6, mac_address=ep.mac)


def port_bindings(ep: EndpointInfo) -> list[dpb.PortBinding]:
    """Published ports of an endpoint."""
    ip = ep.ipv4.partition("/")[0]
    return [dpb.PortBinding(protocol=p.proto, container_ip=ip, container_port=p.container_port, host_ip=p.host_ip,
                            host_port=p.host_port) for p in ep.ports]


def capability(resp: dpb.GetCapabilitiesResponse) -> Capability:
    """GetCapabilities → Capability."""
    return Capability(scope="global" if resp.scope == dpb.SCOPE_GLOBAL else "local")


def check_created_endpoint(plugin: str, ep: EndpointInfo, resp: dpb.CreateEndpointResponse) -> dict[str, str]:
    """The driver data of a CreateEndpoint reply; MalformedReply if it changes what netmgr supplied."""
    got = resp.interface
    for field, mine in (("address", ep.ipv4), ("address_ipv6", ep.ipv6), ("mac_address", ep.mac)):
        theirs = getattr(got, field)
        if theirs and theirs.lower() != mine.lower():
            raise MalformedReply(f'plugin "{plugin}": CreateEndpoint returned {field} {theirs!r}, '
                                 f'but netmgr supplied {mine!r} (a plugin may only fill in what is empty)')
    return dict(resp.driver_data)


def _ip(plugin: str, text: str, version: int, what: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise MalformedReply(f'plugin "{plugin}": malformed Join reply: {what} {text!r} is not an IPv{version} address')
    return str(addr)


def _route(plugin: str, route: dpb.StaticRoute) -> tuple[str, str]:
    try:
        dst = ipaddress.ip_network(route.destination, strict=False)
    except ValueError:
        raise MalformedReply(f'plugin "{plugin}": malformed Join reply: route destination {route.destination!r} '
                             "is not a CIDR") from None
    if route.route_type == 1:
        return str(dst), ""
    if route.route_type != 0:
        raise MalformedReply(f'plugin "{plugin}": malformed Join reply: route type {route.route_type} (want 0 or 1)')
    return str(dst), _ip(plugin, route.next_hop, dst.version, f"next hop of {dst}")


def join_reply(plugin: str, resp: dpb.JoinResponse) -> tuple[str, str, JoinInfo]:
    """(source interface name, destination prefix, JoinInfo without ifname) of a Join reply, checked."""
    src = resp.interface_name.src_name
    if not src:
        raise MalformedReply(f'plugin "{plugin}": malformed Join reply: no interface name (InterfaceName.src_name)')
    if not _IFNAME.match(src) or src in (".", ".."):
        raise MalformedReply(f'plugin "{plugin}": malformed Join reply: {src!r} is not an interface name '
                             f"(1-{IFNAMSIZ} characters, no '/', ':' or spaces)")
    gw = _ip(plugin, resp.gateway, 4, "gateway") if resp.gateway else ""
    gw6 = _ip(plugin, resp.gateway_ipv6, 6, "gateway_ipv6") if resp.gateway_ipv6 else ""
    routes = tuple(_route(plugin, r) for r in resp.static_routes)
    return src, resp.interface_name.dst_prefix, JoinInfo(gateway=gw, gateway6=gw6, static_routes=routes,
                                                         disable_gateway=resp.disable_gateway_service)


def check_mac(mac: str) -> bool:
    """True for ``aa:bb:cc:dd:ee:ff``."""
    return bool(_MAC.match(mac))
