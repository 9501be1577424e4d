"""A small synchronous client of the daemon's ``netmgr.v1`` API.

gRPC errors come back as the :mod:`netmgr.errors` class the daemon raised
(named in the ``netmgr-error-kind`` trailing metadata), with the same
message, so the CLI prints exactly what the controller said.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import grpc

from netmgr import errors
from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb
from netmgr.proto.gen import netmgr_v1_netmgr_pb2_grpc as pb_grpc

DEFAULT_HOST = "unix:///run/netmgr/netmgr.sock"
KIND_KEY = "netmgr-error-kind"


def resolve_host(host: str | None) -> str:
    """``-H`` / ``NETMGR_HOST`` / the default socket, as a gRPC target."""
    host = host or os.environ.get("NETMGR_HOST") or DEFAULT_HOST
    if host.startswith("unix://"):
        return "unix:" + host[len("unix://"):]
    if host.startswith("/"):
        return "unix:" + host
    return host


def _metadata(exc: grpc.RpcError) -> dict[str, str]:
    try:
        return {k: v for k, v in (exc.trailing_metadata() or ())}
    except Exception:  # a channel-level failure has no trailing metadata
        return {}


class Client:
    """One channel to one daemon; every method returns plain Python values."""

    def __init__(self, host: str | None = None, timeout: float = 120.0) -> None:
        self.target = resolve_host(host)
        self.channel = grpc.insecure_channel(self.target)
        self.stub = pb_grpc.NetmgrStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def map_error(self, exc: grpc.RpcError) -> errors.NetmgrError:
        """The netmgr error an RPC failure stands for."""
        meta = _metadata(exc)
        kind = meta.get(KIND_KEY)
        if kind:
            err = errors.error_from_code(kind, exc.details() or "")
            err.partial = meta  # type: ignore[attr-defined]
            return err
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            where = self.target.replace("unix:", "unix://", 1) if self.target.startswith("unix:/") else self.target
            return errors.Unavailable(f"Cannot connect to the netmgr daemon at {where}. Is the netmgr daemon running?")
        return errors.InternalError(f"{exc.code().name}: {exc.details()}")

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """Call a unary RPC, mapping errors."""
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self.timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise self.map_error(exc) from None

    def stream(self, method: str, request: Any) -> Iterator[Any]:
        """Call a server-streaming RPC, mapping errors."""
        try:
            yield from getattr(self.stub, method)(request)
        except grpc.RpcError as exc:
            raise self.map_error(exc) from None

    def documents(self, method: str, request: Any) -> list[dict]:
        """Call an RPC that answers with JSON documents."""
        return [json.loads(doc) for doc in self.call(method, request).json]

    def inspect(self, method: str, refs: list[str]) -> tuple[list[dict], list[errors.NetmgrError]]:
        """Inspect several objects: what was found, and one error per miss."""
        try:
            return self.documents(method, pb.Refs(refs=refs)), []
        except errors.NetmgrError as exc:
            meta = getattr(exc, "partial", {})
            found = [json.loads(d) for d in json.loads(meta.get("netmgr-partial-json", "[]"))]
            failures = [errors.error_from_code(k, m) for k, m in json.loads(meta.get("netmgr-failures", "[]"))]
            return found, failures or [exc]

    def batch(self, method: str, request: Any) -> tuple[list[str], list[errors.NetmgrError]]:
        """Call a batch RPC: the refs done, and one error per failure."""
        resp = self.call(method, request)
        return list(resp.done), [errors.error_from_code(f.kind, f.message) for f in resp.failures]
