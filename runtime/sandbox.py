"""Interface configuration inside a sandbox namespace.

The driver's ``join`` leaves a down interface with its final name inside
the sandbox; :func:`configure_interface` gives it its addresses, brings it
up and installs the gateway and static routes in one netlink datagram.
"""

from __future__ import annotations

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE

from netmgr import errors
from netmgr.runtime import netns
from netmgr.runtime.netns import NetnsHandle

__all__ = ["configure_interface", "remove_interface"]


def configure_interface(
    handle: NetnsHandle,
    ifname: str,
    addresses: list[str],
    gateway: str = "",
    gateway6: str = "",
    routes: tuple[tuple[str, str], ...] = (),
) -> None:
    """Addresses (``addr/prefixlen``), link up, default route(s) and static routes for ``ifname``."""
    nl = handle.nl
    index = nl.link_index(ifname)
    if index is None:
        raise errors.KernelError(f"configure {ifname}: interface is not in the sandbox")
    if any(":" in a for a in addresses):
        # sandboxes create interfaces with IPv6 off (see netns._no_dad)
        netns.sysctl_write(handle.path, f"net.ipv6.conf.{ifname}.disable_ipv6", "0")
    steps = []
    for cidr in addresses:
        addr, _, plen = cidr.partition("/")
        steps.append((nl.addr_msg(index, addr, int(plen)), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
                      f"add address {cidr} to {ifname}"))
    steps.append((nl.set_link_msg(index, up=True), RTM_NEWLINK, 0, f"set {ifname} up"))
    for gw in (gateway, gateway6):
        if gw:
            steps.append((nl.route_msg("default", gw), RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL,
                          f"add default route via {gw}"))
    for dst, hop in routes:
        steps.append((nl.route_msg(dst, hop or None, None if hop else index), RTM_NEWROUTE,
                      NLM_F_CREATE | NLM_F_EXCL, f"add route {dst}"))
    nl.request(*steps)


def remove_interface(handle: NetnsHandle, ifname: str) -> bool:
    """Delete ``ifname`` from inside the sandbox (its veth peer goes with it); gone is success."""
    return handle.nl.del_link(name=ifname)
