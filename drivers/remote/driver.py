"""``RemoteDriver``: the CNM driver interface implemented by calling a gRPC plugin.

An adapter, not a special case: the controller calls it like any built-in
driver. What it adds to the plugin's answers is the kernel work libnetwork's
sandbox does for remote drivers: on ``join`` it moves the interface the
plugin created in the host namespace into the sandbox, renamed to the
endpoint's ``ethN`` and given the endpoint's MAC (or only renames it, when
the plugin created it in the sandbox itself); on ``leave`` it deletes it
there (a device that cannot be deleted goes back to the host).

Failure handling (the controller's undo stack does the rest):

* every reply is checked (:mod:`.convert`); a malformed one raises, after
  undoing what this call itself started (CreateEndpoint → DeleteEndpoint);
* a plugin that is gone or unreachable cannot clean up, so when
  ``DeleteEndpoint`` fails netmgr deletes the endpoint's host-side interface
  itself: the one the plugin named in Join, and the name netmgr suggested
  (``host_ifname``), which a plugin that died before answering Join used;
* ``delete_network`` of a plugin that is gone only logs a warning, so the
  network can still be removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from netmgr.drivers.base import (
    Capability,
    EndpointInfo,
    HostEnv,
    JoinInfo,
    NetworkInfo,
    PassiveDriver,
    SandboxInfo,
)
from netmgr.drivers.remote import convert
from netmgr.drivers.remote.client import DRIVER_SERVICE, PluginClient
from netmgr.proto.gen import netmgr_plugin_v1_driver_pb2 as dpb

from netmgr import errors

log = logging.getLogger("netmgr.drivers.remote")

_GONE = (errors.Unavailable, errors.DriverNotFound)


class RemoteDriver(PassiveDriver):
    """A network driver served by a plugin process.

    Restore, restore_endpoint and repair are PassiveDriver's: the plugin keeps its
    own state, and an interface still in its sandbox is intact.
    """

    def __init__(self, name: str, client: PluginClient, env: HostEnv, cluster_store: bool = False) -> None:
        self.name = name
        self.client = client
        self.env = env
        self.cluster_store = cluster_store
        self._cap: Capability | None = None
        self._host_fd = -1
        #: endpoint id -> the plugin's name for its interface (to move it back on leave)
        self._src: dict[str, str] = {}
        client.on_activate.append(lambda _c: setattr(self, "_cap", None))

    # -- plumbing ------------------------------------------------------------------

    def _call(self, method: str, request: Any, idempotent: bool = False, optional: bool = False) -> Any:
        self.client.require(DRIVER_SERVICE)
        return self.client.call("driver", method, request, idempotent=idempotent, optional=optional)

    def _net(self, net: NetworkInfo) -> dpb.Network:
        return convert.network(net, self.capability().scope if self._cap else "local")

    def host_fd(self) -> int:
        """An fd of the host namespace (to move interfaces back out of sandboxes)."""
        if self._host_fd < 0:
            self._host_fd = os.open(self.env.netns_path or "/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        return self._host_fd

    def close(self) -> None:
        """Release the host namespace fd."""
        if self._host_fd >= 0:
            os.close(self._host_fd)
            self._host_fd = -1

    # -- capability and validation -------------------------------------------------

    def capability(self) -> Capability:
        """The plugin's scope (asked once per activation)."""
        if self._cap is None:
            resp = self._call("GetCapabilities", dpb.GetCapabilitiesRequest(), idempotent=True)
            self._cap = convert.capability(resp)
        return self._cap

    def validate(self, net: NetworkInfo) -> None:
        """Nothing to check locally (the plugin checks options in CreateNetwork; the controller
        refuses global-scope networks without a cluster store)."""
        self.capability()

    # -- networks --------------------------------------------------------------------

    def create_network(self, net: NetworkInfo) -> dict[str, Any]:
        """CreateNetwork; the plugin's driver data is kept with the network."""
        resp = self._call("CreateNetwork", dpb.CreateNetworkRequest(network=self._net(net)))
        return dict(resp.driver_data)

    def delete_network(self, net: NetworkInfo) -> None:
        """DeleteNetwork; a plugin that is gone is logged, so the network can still be removed."""
        try:
            self._call("DeleteNetwork", dpb.DeleteNetworkRequest(network=self._net(net)), idempotent=True)
        except _GONE as exc:
            log.warning("network %s: %s (removed anyway)", net.name, exc)

    # -- endpoints -------------------------------------------------------------------

    def create_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> dict[str, Any]:
        """CreateEndpoint with the endpoint's addresses and MAC; a reply that changes them is refused."""
        req = dpb.CreateEndpointRequest(network=self._net(net), endpoint_id=ep.id, interface=convert.interface(ep),
                                        host_ifname=convert.host_ifname(ep.id))
        resp = self._call("CreateEndpoint", req)
        try:
            return convert.check_created_endpoint(self.name, ep, resp)
        except convert.MalformedReply:
            with contextlib.suppress(errors.NetmgrError):
                self.delete_endpoint(net, ep)
            raise

    def delete_endpoint(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """DeleteEndpoint; when the plugin cannot do it, netmgr removes the host-side interface itself."""
        req = dpb.DeleteEndpointRequest(network=self._net(net), endpoint_id=ep.id,
                                        host_ifname=convert.host_ifname(ep.id))
        try:
            self._call("DeleteEndpoint", req, idempotent=True)
        except errors.NetmgrError:
            self._remove_host_side(ep)
            raise
        self._src.pop(ep.id, None)

    def _remove_host_side(self, ep: EndpointInfo) -> None:
        for name in {self._src.pop(ep.id, ""), convert.host_ifname(ep.id)} - {""}:
            try:
                if self.env.nl.del_link(name=name):
                    log.warning("removed %s of endpoint %s: its plugin could not", name, ep.id[:12])
            except errors.NetmgrError as exc:
                log.warning("could not remove %s of endpoint %s: %s", name, ep.id[:12], exc)

    # -- sandbox -----------------------------------------------------------------------

    def join(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> JoinInfo:
        """Join, then put the plugin's interface into the sandbox as ``sb.ifname`` with the endpoint's MAC."""
        if sb.handle is None:
            raise errors.InternalError(f"join {ep.id[:12]}: the sandbox is not open")
        req = dpb.JoinRequest(network=self._net(net), endpoint_id=ep.id, sandbox_key=sb.handle.path,
                              interface=convert.interface(ep), host_ifname=convert.host_ifname(ep.id))
        resp = self._call("Join", req)
        src, prefix, info = convert.join_reply(self.name, resp)
        self._src[ep.id] = src
        if prefix and prefix != "eth":
            log.info('plugin "%s" asked for interface prefix %r: netmgr names interfaces ethN', self.name, prefix)
        where = sb.handle.nl if resp.created_in_sandbox else self.env.nl
        index = where.link_index(src)
        if index is None:
            place = "sandbox" if resp.created_in_sandbox else "host namespace"
            raise convert.MalformedReply(f'plugin "{self.name}": Join returned interface "{src}", '
                                         f"which is not in the {place}")
        if resp.created_in_sandbox:
            sb.handle.nl.set_link(index, name=sb.ifname, mac=ep.mac or None)
        else:
            self.env.nl.move_link(index, sb.handle.fd, sb.ifname, ep.mac or None)
        return JoinInfo(ifname=sb.ifname, gateway=info.gateway, gateway6=info.gateway6,
                        static_routes=info.static_routes, disable_gateway=info.disable_gateway)

    def leave(self, net: NetworkInfo, ep: EndpointInfo, sb: SandboxInfo) -> None:
        """Delete the interface inside the sandbox (or move it back to the host if it cannot be), then Leave."""
        if sb.handle is not None:
            # by name, no lookup first; the plugin's name too: a plugin that created the
            # interface in the sandbox and died before answering Join left it under that name
            for name in dict.fromkeys(n for n in (sb.ifname, self._src.get(ep.id), convert.host_ifname(ep.id)) if n):
                self._remove_in_sandbox(sb, ep, name)
        req = dpb.LeaveRequest(network=self._net(net), endpoint_id=ep.id, host_ifname=convert.host_ifname(ep.id))
        self._call("Leave", req, idempotent=True)

    def _remove_in_sandbox(self, sb: SandboxInfo, ep: EndpointInfo, name: str) -> None:
        try:
            sb.handle.nl.del_link(name=name)
        except errors.NetmgrError as exc:  # e.g. a physical device: it goes back to the host
            index = sb.handle.nl.link_index(name)
            if index is None:
                return
            src = self._src.get(ep.id) or convert.host_ifname(ep.id)
            log.info("leave %s: cannot delete %s (%s): moving it back to the host as %s", ep.id[:12], name, exc, src)
            sb.handle.nl.move_link(index, self.host_fd(), src)

    def program_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """ProgramExternalConnectivity with the endpoint's published ports (optional for plugins)."""
        req = dpb.ProgramExternalConnectivityRequest(network=self._net(net), endpoint_id=ep.id,
                                                     port_bindings=convert.port_bindings(ep),
                                                     interface=convert.interface(ep))
        self._call("ProgramExternalConnectivity", req, optional=True)

    def revoke_external_connectivity(self, net: NetworkInfo, ep: EndpointInfo) -> None:
        """RevokeExternalConnectivity (optional for plugins)."""
        req = dpb.RevokeExternalConnectivityRequest(network=self._net(net), endpoint_id=ep.id)
        self._call("RevokeExternalConnectivity", req, idempotent=True, optional=True)
