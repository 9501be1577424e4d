"""The plugin SDK: a netmgr network driver or IPAM plugin in Python, in a few lines.

::

    from netmgr.plugins import sdk
    from netmgr.plugins.sdk import dpb   # the NetworkDriver messages

    class Wire(sdk.NetworkDriver):
        description = "a veth pair per endpoint, host end left alone"

        def Join(self, request, context):
            name = request.host_ifname                       # netmgr's suggestion
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", "w" + name[1:]],
                           check=True)
            return dpb.JoinResponse(interface_name=dpb.InterfaceName(src_name=name, dst_prefix="eth"))

        def DeleteEndpoint(self, request, context):
            subprocess.run(["ip", "link", "del", request.host_ifname], capture_output=True)
            return dpb.DeleteEndpointResponse()

    sdk.run("wire", driver=Wire())   # serves /run/netmgr/plugins/wire.sock until SIGTERM

What the SDK does for you:

* base classes whose optional calls answer "nothing to do" (a driver needs
  only ``Join``; an IPAM needs the pool and address calls);
* the standard gRPC health service, reporting each service you pass as
  SERVING (that is how netmgr discovers what a plugin implements);
* serving on ``PLUGIN_DIR/NAME.sock``: bound under a temporary name and
  renamed when the server is ready, so netmgr never sees a socket nobody
  answers; removed on exit;
* errors: raise :class:`PluginError` (or :func:`invalid`, :func:`not_found`,
  :func:`conflict`, :func:`unavailable`) and the caller gets that gRPC status
  with your message; any other exception becomes INTERNAL with its text.

Nothing here imports netmgr's daemon: a plugin needs only this module, the
generated messages (``netmgr.proto.gen``) and grpcio.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from netmgr.proto.gen import netmgr_plugin_v1_driver_pb2 as dpb
from netmgr.proto.gen import netmgr_plugin_v1_driver_pb2_grpc as dgrpc
from netmgr.proto.gen import netmgr_plugin_v1_ipam_pb2 as ipb
from netmgr.proto.gen import netmgr_plugin_v1_ipam_pb2_grpc as igrpc

__all__ = [
    "DEFAULT_PLUGIN_DIR",
    "DRIVER_SERVICE",
    "IPAM_SERVICE",
    "Ipam",
    "NetworkDriver",
    "Plugin",
    "PluginError",
    "conflict",
    "dpb",
    "invalid",
    "ipb",
    "not_found",
    "run",
    "serve",
    "unavailable",
]

log = logging.getLogger("netmgr.plugin")

DEFAULT_PLUGIN_DIR = "/run/netmgr/plugins"
DRIVER_SERVICE = "netmgr.plugin.v1.NetworkDriver"
IPAM_SERVICE = "netmgr.plugin.v1.Ipam"


class PluginError(Exception):
    """Fail the current call with ``code`` and a one-line message netmgr shows to the user."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def invalid(message: str) -> PluginError:
    """Bad options or request (INVALID_ARGUMENT)."""
    return PluginError(message, grpc.StatusCode.INVALID_ARGUMENT)


def not_found(message: str) -> PluginError:
    """An unknown object (NOT_FOUND)."""
    return PluginError(message, grpc.StatusCode.NOT_FOUND)


def conflict(message: str) -> PluginError:
    """Already taken / already exists (ALREADY_EXISTS)."""
    return PluginError(message, grpc.StatusCode.ALREADY_EXISTS)


def unavailable(message: str) -> PluginError:
    """Try again later (UNAVAILABLE)."""
    return PluginError(message, grpc.StatusCode.UNAVAILABLE)


class NetworkDriver(dgrpc.NetworkDriverServicer):
    """Base of a network driver: override what you need (at least ``Join``).

    Every other call succeeds doing nothing. Class attributes set the
    capabilities: ``scope`` ("local" or "global") and ``description``.
    """

    scope = "local"
    description = ""

    def GetCapabilities(self, request, context):
        """Scope and description from the class attributes."""
        scope = dpb.SCOPE_GLOBAL if self.scope == "global" else dpb.SCOPE_LOCAL
        return dpb.GetCapabilitiesResponse(scope=scope, connectivity_scope=scope, description=self.description)

    def CreateNetwork(self, request, context):
        """Accept the network."""
        return dpb.CreateNetworkResponse()

    def DeleteNetwork(self, request, context):
        """Nothing to remove."""
        return dpb.DeleteNetworkResponse()

    def CreateEndpoint(self, request, context):
        """Accept the endpoint as netmgr described it."""
        return dpb.CreateEndpointResponse()

    def DeleteEndpoint(self, request, context):
        """Nothing to remove."""
        return dpb.DeleteEndpointResponse()

    def EndpointInfo(self, request, context):
        """No operational data."""
        return dpb.EndpointInfoResponse()

    def Leave(self, request, context):
        """Nothing to do."""
        return dpb.LeaveResponse()

    def ProgramExternalConnectivity(self, request, context):
        """No published ports."""
        return dpb.ProgramExternalConnectivityResponse()

    def RevokeExternalConnectivity(self, request, context):
        """Nothing to revoke."""
        return dpb.RevokeExternalConnectivityResponse()

    def DiscoverNew(self, request, context):
        """Ignore node discovery."""
        return dpb.DiscoveryResponse()

    def DiscoverDelete(self, request, context):
        """Ignore node discovery."""
        return dpb.DiscoveryResponse()


class Ipam(igrpc.IpamServicer):
    """Base of an IPAM driver: implement RequestPool, ReleasePool, RequestAddress, ReleaseAddress."""

    local_address_space = "LocalDefault"
    global_address_space = "GlobalDefault"
    description = ""

    def GetCapabilities(self, request, context):
        """No MAC address needed."""
        return ipb.GetIpamCapabilitiesResponse(description=self.description)

    def GetDefaultAddressSpaces(self, request, context):
        """The class attributes."""
        return ipb.GetDefaultAddressSpacesResponse(local_default_address_space=self.local_address_space,
                                                   global_default_address_space=self.global_address_space)


class _Errors(grpc.ServerInterceptor):
    """Turn PluginError (and anything else) into a gRPC status with a readable message."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method = handler.unary_unary, handler_call_details.method

        def guarded(request, context):
            try:
                return inner(request, context)
            except PluginError as exc:
                context.abort(exc.code, exc.message)
            except NotImplementedError:  # the generated base class: a call the plugin does not serve
                context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
            except Exception as exc:
                if type(exc) is Exception and not exc.args:
                    raise  # grpc's own context.abort() from the handler: the status is already set
                log.exception("%s failed", method)
                context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return handler._replace(unary_unary=guarded)


class Plugin:
    """A running plugin server: ``socket`` (its path), ``stop()``, ``wait()``."""

    def __init__(self, server: grpc.Server, socket: str, health_servicer: health.HealthServicer,
                 port: int = 0) -> None:
        self.server = server
        self.socket = socket
        self.health = health_servicer
        #: the TCP port (``address`` with port 0 picks a free one)
        self.port = port

    def stop(self, grace: float = 1.0) -> None:
        """Report NOT_SERVING, stop serving, remove the socket."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket)

    def wait(self) -> None:
        """Block until the server stops."""
        self.server.wait_for_termination()


def serve(name: str, driver: NetworkDriver | None = None, ipam: Ipam | None = None,
          plugin_dir: str = DEFAULT_PLUGIN_DIR, address: str = "", workers: int = 8,
          credentials: grpc.ServerCredentials | None = None) -> Plugin:
    """Start serving ``driver`` and/or ``ipam`` with health; return at once.

    By default the plugin listens on ``PLUGIN_DIR/NAME.sock``. With
    ``address`` (``HOST:PORT``) it listens on TCP instead (TLS with
    ``credentials``) and writes nothing: put a ``NAME.spec``/``NAME.json`` in
    the plugin directory yourself.
    """
    if driver is None and ipam is None:
        raise ValueError("serve: give a driver, an ipam, or both")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"plugin-{name}"),
                         interceptors=[_Errors()])
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    if driver is not None:
        dgrpc.add_NetworkDriverServicer_to_server(driver, server)
        checker.set(DRIVER_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    if ipam is not None:
        igrpc.add_IpamServicer_to_server(ipam, server)
        checker.set(IPAM_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    if address:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
        server.start()
        return Plugin(server, "", checker, port)
    os.makedirs(plugin_dir, mode=0o700, exist_ok=True)
    final = os.path.join(plugin_dir, f"{name}.sock")
    temp = os.path.join(plugin_dir, f".{name}.sock.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    server.add_insecure_port(f"unix:{temp}")
    server.start()
    os.replace(temp, final)  # the socket appears only once it is served
    log.info("plugin %s serving on %s", name, final)
    return Plugin(server, final, checker)


def run(name: str, driver: NetworkDriver | None = None, ipam: Ipam | None = None,
        plugin_dir: str = DEFAULT_PLUGIN_DIR, **kw: Any) -> None:
    """:func:`serve` until SIGTERM or SIGINT, then stop and remove the socket."""
    plugin = serve(name, driver, ipam, plugin_dir, **kw)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    plugin.stop()
