#!/usr/bin/env python3
"""A macvlan network driver for netmgr, written as a third party would.

It uses only the published contract (``proto/netmgr/plugin/v1/driver.proto``
through netmgr's plugin SDK) and pyroute2; nothing of netmgr's daemon.

    sudo python3 labs/plugins/macvlan/plugin.py --plugin-dir /run/netmgr/plugins [--name macvlan]
    netmgr network create -d macvlan --subnet 192.168.50.0/24 -o parent=eth1 lan
    netmgr run -d --network lan --name web sleep 3600

Options (``-o`` of ``network create``, as Docker's macvlan driver):

``parent=IFACE``         the host interface the macvlan devices hang off (required)
``macvlan_mode=MODE``    bridge (default), private, vepa or passthru

The plugin is stateless: netmgr sends the network (options, gateways) with
every call. Join creates the endpoint's macvlan under the name netmgr
suggests (so netmgr can remove it should this plugin die mid-operation):
by default directly inside the container's namespace (``created_in_sandbox``:
netmgr only renames and configures it), or with ``--move`` in the host
namespace, libnetwork's way, for netmgr to move it (the kernel then waits
~15-20 ms for an RCU grace period). netmgr deletes the interface when the
endpoint leaves; DeleteEndpoint removes whatever is left in the host
namespace (already gone is success).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netmgr.plugins import sdk
from netmgr.plugins.sdk import dpb

MODES = ("bridge", "private", "vepa", "passthru")


class Macvlan(sdk.NetworkDriver):
    """One macvlan device per endpoint on the network's parent interface."""

    description = "macvlan: containers get their own MAC address on a host interface"

    def __init__(self, move: bool = False) -> None:
        self.move = move
        self.ipr = IPRoute()
        self.lock = threading.Lock()  # one IPRoute socket, used by the server's threads in turn

    @staticmethod
    def _options(network: dpb.Network) -> tuple[str, str]:
        parent = network.options.get("parent", "")
        mode = network.options.get("macvlan_mode", "bridge")
        if not parent:
            raise sdk.invalid("the macvlan driver needs -o parent=IFACE")
        if mode not in MODES:
            raise sdk.invalid(f"macvlan_mode {mode!r}: want one of {', '.join(MODES)}")
        return parent, mode

    def _index(self, name: str) -> int | None:
        with self.lock:
            found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def CreateNetwork(self, request, context):
        parent, _mode = self._options(request.network)
        if self._index(parent) is None:
            raise sdk.invalid(f"parent interface {parent} does not exist")
        return dpb.CreateNetworkResponse(driver_data={"parent": parent})

    def Join(self, request, context):
        parent, mode = self._options(request.network)
        index = self._index(parent)
        if index is None:
            raise sdk.unavailable(f"parent interface {parent} is gone")
        name = request.host_ifname or f"mv{request.endpoint_id[:10]}"
        in_sandbox = not self.move and bool(request.sandbox_key)
        where = {}
        try:
            if in_sandbox:
                where["net_ns_fd"] = os.open(request.sandbox_key, os.O_RDONLY | os.O_CLOEXEC)
            with self.lock:
                self.ipr.link("add", ifname=name, kind="macvlan", link=index, macvlan_mode=mode, **where)
        except (NetlinkError, OSError) as exc:
            raise sdk.PluginError(f"create macvlan {name} on {parent}: {exc.args[-1]}") from None
        finally:
            if where:
                os.close(where["net_ns_fd"])
        net = request.network
        gateway = "" if net.internal or not net.ipv4_data else net.ipv4_data[0].gateway.partition("/")[0]
        gateway6 = "" if net.internal or not net.ipv6_data else net.ipv6_data[0].gateway.partition("/")[0]
        return dpb.JoinResponse(interface_name=dpb.InterfaceName(src_name=name, dst_prefix="eth"),
                                gateway=gateway, gateway_ipv6=gateway6, created_in_sandbox=in_sandbox)

    def DeleteEndpoint(self, request, context):
        index = self._index(request.host_ifname) if request.host_ifname else None
        if index is not None:
            try:
                with self.lock:
                    self.ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV: already gone
                    raise sdk.PluginError(f"delete {request.host_ifname}: {exc.args[-1]}") from None
        return dpb.DeleteEndpointResponse()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin-dir", default=sdk.DEFAULT_PLUGIN_DIR)
    parser.add_argument("--name", default="macvlan", help="the driver name users give to -d")
    parser.add_argument("--move", action="store_true",
                        help="create interfaces in the host namespace for netmgr to move (libnetwork's way)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sdk.run(args.name, driver=Macvlan(move=args.move), plugin_dir=args.plugin_dir)


if __name__ == "__main__":
    main()
