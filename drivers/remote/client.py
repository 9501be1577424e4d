"""The gRPC client of one plugin: channel, activation, health, deadlines, retries, errors.

Every call carries a deadline (the plugin's ``timeout``). A call that is
idempotent is retried (3 attempts, 50/100 ms apart) when the plugin is
UNAVAILABLE, on a fresh channel each time, so a plugin that restarted (or
whose socket was replaced) is used again at once. A call that is not
idempotent is never retried: the plugin may have acted on it before it
failed; the controller's undo stack cleans up instead.

gRPC failures become :mod:`netmgr.errors` classes with the plugin's name in
the message, so they reach the user as one clear line:
``plugin "macvlan": Join did not answer within 2.0 s``.

Activation (lazy, at the first call): the standard health service must say
SERVING for "" and tells which of ``netmgr.plugin.v1.NetworkDriver`` and
``netmgr.plugin.v1.Ipam`` the plugin implements.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from netmgr.proto.gen import netmgr_plugin_v1_driver_pb2_grpc as driver_grpc
from netmgr.proto.gen import netmgr_plugin_v1_ipam_pb2_grpc as ipam_grpc

from netmgr import errors

log = logging.getLogger("netmgr.plugins")

DRIVER_SERVICE = "netmgr.plugin.v1.NetworkDriver"
IPAM_SERVICE = "netmgr.plugin.v1.Ipam"
RETRIES = 3
RETRY_PAUSE = 0.05
# short reconnect backoff: a restarted plugin is reachable again within a second
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]

_CODE_CLASS = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidConfig,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
}


class Unimplemented(errors.NetmgrError):
    """The plugin does not implement a call (optional calls treat it as 'nothing to do')."""


def map_rpc_error(plugin: str, method: str, exc: grpc.RpcError, timeout: float, address: str) -> errors.NetmgrError:
    """The netmgr error for a failed plugin call."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.Unavailable(f'plugin "{plugin}": {method} did not answer within {timeout:g} s')
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(f'plugin "{plugin}" is not available at {address}: {method}: {_short(details)}')
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unimplemented(f'plugin "{plugin}" does not implement {method}')
    cls = _CODE_CLASS.get(code, errors.NetmgrError)
    return cls(f'plugin "{plugin}": {method}: {_short(details) or code.name}')


def _short(text: str) -> str:
    # gRPC's connection errors are long ("failed to connect to all addresses; last error: ...:
    # Connection refused"); the last clause says it
    if not text:
        return ""
    line = text.splitlines()[0]
    if "failed to connect" in line:
        line = "connection failed: " + line.rsplit(": ", 1)[-1].removeprefix("error: ")
    return line[:300]


class PluginClient:
    """One plugin's channel and stubs; thread-safe (the daemon worker and ``plugin ls`` share it)."""

    def __init__(self, name: str, locate: Callable[[], Any]) -> None:
        """``locate()`` returns the plugin's current spec (target, address, tls, timeout) or raises."""
        self.name = name
        self._locate = locate
        self._lock = threading.RLock()
        self._channel: grpc.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._socket_id: tuple[int, int] | None = None
        self.spec: Any = None
        self.implements: frozenset[str] | None = None
        self.on_activate: list[Callable[[PluginClient], None]] = []

    # -- channel -----------------------------------------------------------------

    def _open(self) -> grpc.Channel:
        with self._lock:
            if self._channel is not None and self._socket_id == _socket_id(self.spec):
                return self._channel
            self._close_locked()  # new, or its socket was removed or replaced (the plugin restarted)
            spec = self._locate()
            if spec.tls is not None:
                creds = grpc.ssl_channel_credentials(*_read_tls(spec.tls))
                channel = grpc.secure_channel(spec.target, creds, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.insecure_channel(spec.target, options=_CHANNEL_OPTIONS)
            self._channel, self.spec, self._socket_id = channel, spec, _socket_id(spec)
            return channel

    def _stub(self, service: str) -> Any:
        with self._lock:
            channel = self._open()
            stub = self._stubs.get(service)
            if stub is None:
                stub = self._stubs[service] = _stub(service, channel)
            return stub

    def reset(self) -> None:
        """Drop the channel: the next call re-reads the plugin directory and reconnects."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel, self.implements = None, None
        self._stubs = {}

    def close(self) -> None:
        """Close the channel for good (daemon shutdown)."""
        self.reset()

    @property
    def timeout(self) -> float:
        """The deadline of each call, seconds."""
        return self.spec.timeout if self.spec is not None else 10.0

    @property
    def address(self) -> str:
        """The plugin's address as users read it."""
        return self.spec.address if self.spec is not None else "?"

    # -- calls -----------------------------------------------------------------

    def call(self, service: str, method: str, request: Any, idempotent: bool = False,
             optional: bool = False, activate: bool = True) -> Any:
        """Call ``service.method(request)`` with the deadline; retries idempotent calls on UNAVAILABLE.

        ``optional``: UNIMPLEMENTED answers None instead of failing.
        """
        if activate:
            self.activate()
        attempts = RETRIES if idempotent else 1
        for attempt in range(attempts):
            stub = self._stub(service)
            timeout = self.timeout
            try:
                return getattr(stub, method)(request, timeout=timeout)
            except grpc.RpcError as exc:
                err = map_rpc_error(self.name, method, exc, timeout, self.address)
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    self.reset()
                    if attempt + 1 < attempts:
                        time.sleep(RETRY_PAUSE * (attempt + 1))
                        continue
                if optional and isinstance(err, Unimplemented):
                    return None
                raise err from None
        raise AssertionError("unreachable")

    def health(self, service: str = "") -> str:
        """The health status name of ``service`` ("" = the plugin): SERVING, NOT_SERVING, ... ."""
        resp = self.call("health", "Check", health_pb2.HealthCheckRequest(service=service), idempotent=True,
                         activate=False)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def activate(self) -> frozenset[str]:
        """Check the plugin's health and learn what it implements (once per channel)."""
        with self._lock:
            self._open()  # a replaced socket (a restarted plugin) resets the channel and this cache
            if self.implements is not None:
                return self.implements
            try:
                status = self.health("")
            except Unimplemented:
                raise errors.Unavailable(
                    f'plugin "{self.name}" at {self.address} does not serve grpc.health.v1.Health') from None
            if status != "SERVING":
                raise errors.Unavailable(f'plugin "{self.name}" at {self.address} is {status}')
            found = set()
            for service in (DRIVER_SERVICE, IPAM_SERVICE):
                try:
                    if self.health(service) == "SERVING":
                        found.add(service)
                except errors.NotFound:
                    pass
            self.implements = frozenset(found)
            log.info('activated plugin "%s" at %s: %s', self.name, self.address, ", ".join(sorted(found)) or "nothing")
        for hook in list(self.on_activate):
            hook(self)
        return self.implements

    def require(self, service: str) -> None:
        """DriverNotFound unless the plugin implements ``service``."""
        if service not in self.activate():
            kind = "a network driver" if service == DRIVER_SERVICE else "an IPAM driver"
            raise errors.DriverNotFound(f'plugin "{self.name}" not found: it is not {kind} ({service})')


def _socket_id(spec: Any) -> tuple[int, int] | None:
    """(device, inode) of a unix socket target, None for TCP or a missing file (one stat: ~2 µs)."""
    if spec is None or not spec.target.startswith("unix:"):
        return None
    try:
        st = os.stat(spec.target[len("unix:"):])
    except OSError:
        return (0, 0)
    return st.st_dev, st.st_ino


def _stub(service: str, channel: grpc.Channel) -> Any:
    if service == "driver":
        return driver_grpc.NetworkDriverStub(channel)
    if service == "ipam":
        return ipam_grpc.IpamStub(channel)
    return health_pb2_grpc.HealthStub(channel)


def _read_tls(tls) -> tuple[bytes | None, bytes | None, bytes | None]:
    def read(path: str) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise errors.InvalidConfig(f"plugin TLS file {path}: {exc.strerror}") from None
    return read(tls.ca_file), read(tls.key_file), read(tls.cert_file)
