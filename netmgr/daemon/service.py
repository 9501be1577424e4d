"""The ``netmgr.v1.Netmgr`` gRPC servicer.

Every RPC is translated to a controller call that runs on the engine's one
worker thread (operations are serialised, the event loop never blocks on
netlink). This is the daemon's one error boundary: a :class:`NetmgrError`
becomes ``context.abort(e.grpc_code, message)`` with the class name in the
trailing metadata; anything else is logged with its traceback and becomes
"internal error".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import time
from typing import Any, Callable

import grpc

from netmgr import __version__, errors
from netmgr.containers import RunRequest
from netmgr.controller import AttachRequest, NetworkRequest
from netmgr.daemon import filters
from netmgr.engine import Engine
from netmgr.model import PoolConfig, PortMapping
from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb
from netmgr.proto.gen import netmgr_v1_netmgr_pb2_grpc as pb_grpc
from netmgr.views import container_doc, network_doc

log = logging.getLogger("netmgr.daemon")
API_VERSION = "1"
KIND_KEY = "netmgr-error-kind"


def _dumps(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"))


class EventBus:
    """Fan-out of daemon events to ``Events`` streams."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue] = set()

    def publish(self, type_: str, action: str, id_: str, **attrs: str) -> None:
        """Send one event to every subscriber."""
        event = pb.Event(type=type_, action=action, id=id_, attributes=attrs, time_nano=time.time_ns())
        for q in self.queues:
            q.put_nowait(event)


class NetmgrService(pb_grpc.NetmgrServicer):
    """Maps RPCs to engine operations."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ctl = engine.ctl
        self.ctrs = engine.containers
        self.worker = engine.worker  # one thread for every operation, shared with the cluster's changes
        self.events = EventBus()
        self.on_container_started: Callable[[str, int], None] = lambda cid, shim: None

    async def run(self, context, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the worker thread; the error boundary for every RPC."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.worker, fn, *args)
        except errors.NetmgrError as exc:
            context.set_trailing_metadata(((KIND_KEY, exc.kind),))
            await context.abort(grpc.StatusCode(_status(exc.grpc_code)), exc.message)
        except Exception:
            log.exception("internal error in %s", getattr(fn, "__name__", fn))
            context.set_trailing_metadata(((KIND_KEY, "InternalError"),))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    # -- networks --------------------------------------------------------------

    async def NetworkCreate(self, request, context):
        pools4, pools6 = [], []
        for p in request.pools:
            cfg = PoolConfig(p.subnet, p.gateway, p.ip_range, dict(p.aux_addresses))
            (pools6 if ":" in p.subnet else pools4).append(cfg)
        req = NetworkRequest(
            name=request.name, driver=request.driver or "bridge", pools=tuple(pools4), pools6=tuple(pools6),
            ipam_driver=request.ipam_driver or "default", ipam_options=dict(request.ipam_options),
            options=dict(request.options), labels=dict(request.labels), internal=request.internal,
            attachable=request.attachable, ipv6=request.ipv6)
        net = await self.run(context, self.ctl.create_network, req)
        self.events.publish("network", "create", net.id, name=net.name, type=net.driver)
        return pb.NetworkCreateResponse(id=net.id)

    def _network_docs(self, nets) -> list[str]:
        return [_dumps(network_doc(n, self.ctl.network_endpoints(n.id))) for n in nets]

    async def NetworkList(self, request, context):
        def op():
            nets = filters.networks(list(self.ctl.networks.values()), request.filters, self.ctl)
            return self._network_docs(filters.natural_sorted(nets, key=lambda n: n.name))
        return pb.Documents(json=await self.run(context, op))

    async def NetworkInspect(self, request, context):
        return await self._batch_docs(context, request.refs, lambda r: self._network_docs([self.ctl.network(r)])[0])

    async def _batch_docs(self, context, refs, fetch) -> pb.Documents:
        """Inspect several objects: found ones are returned, the first miss aborts after them."""
        def op():
            docs, failures = [], []
            for ref in refs:
                try:
                    docs.append(fetch(ref))
                except errors.NetmgrError as exc:
                    failures.append(pb.Failure(ref=ref, kind=exc.kind, message=exc.message))
            return docs, failures
        docs, failures = await self.run(context, op)
        if failures:
            first = failures[0]
            context.set_trailing_metadata(((KIND_KEY, first.kind), ("netmgr-partial-json", json.dumps(docs)),
                                           ("netmgr-failures", json.dumps([[f.kind, f.message] for f in failures]))))
            await context.abort(grpc.StatusCode(_status(errors.error_from_code(first.kind, "").grpc_code)),
                                first.message)
        return pb.Documents(json=docs)

    async def _batch(self, context, refs, fn) -> pb.BatchResponse:
        def op():
            resp = pb.BatchResponse()
            for ref in refs:
                try:
                    fn(ref)
                    resp.done.append(ref)
                except errors.NetmgrError as exc:
                    resp.failures.append(pb.Failure(ref=ref, kind=exc.kind, message=exc.message))
            return resp
        return await self.run(context, op)

    async def NetworkRemove(self, request, context):
        def remove(ref):
            net = self.ctl.remove_network(ref)
            self.events.publish("network", "destroy", net.id, name=net.name, type=net.driver)
        return await self._batch(context, request.refs, remove)

    async def NetworkPrune(self, request, context):
        def op():
            resp = pb.BatchResponse()
            for net in filters.networks(list(self.ctl.networks.values()), request.filters, self.ctl, prune=True):
                if net.predefined or self.ctl.network_endpoints(net.id):
                    continue
                try:
                    self.ctl.remove_network(net.id)
                    resp.done.append(net.name)
                except errors.NetmgrError as exc:
                    resp.failures.append(pb.Failure(ref=net.name, kind=exc.kind, message=exc.message))
            return resp
        return await self.run(context, op)

    async def NetworkConnect(self, request, context):
        def op():
            req = AttachRequest(request.ip, request.ip6, tuple(request.aliases))
            return self.ctrs.connect(request.network, request.container, req)
        ep = await self.run(context, op)
        self.events.publish("network", "connect", ep.network_id, container=ep.container_id)
        return pb.Empty()

    async def NetworkDisconnect(self, request, context):
        await self.run(context, self.ctrs.disconnect, request.network, request.container, request.force)
        self.events.publish("network", "disconnect", request.network, container=request.container)
        return pb.Empty()

    # -- containers ----------------------------------------------------------------

    async def ContainerRun(self, request, context):
        req = RunRequest(
            argv=tuple(request.argv), name=request.name, network=request.network or "bridge", ip=request.ip,
            ip6=request.ip6, aliases=tuple(request.aliases),
            ports=tuple(PortMapping(p.container_port, p.protocol or "tcp", p.host_ip, p.host_port) for p in request.ports),
            hostname=request.hostname, rootfs=request.rootfs,
            volumes=tuple((v.source, v.target, v.read_only) for v in request.volumes),
            env=tuple(tuple(e.split("=", 1)) if "=" in e else (e, os.environ.get(e, "")) for e in request.env),
            memory=request.memory, cpus=request.cpus, pids_limit=request.pids_limit,
            auto_remove=request.auto_remove, workdir=request.workdir or "/")
        ctr = await self.run(context, self.ctrs.run, req)
        self.events.publish("container", "start", ctr.id, name=ctr.name)
        self.on_container_started(ctr.id, ctr.state.shim_pid)
        return pb.RunResponse(id=ctr.id, name=ctr.name)

    def _container_doc(self, ref: str) -> str:
        ctr = self.ctrs.get(ref)
        return _dumps(container_doc(ctr, self.ctl.container_endpoints(ctr.id), self.ctl.networks))

    async def ContainerList(self, request, context):
        def op():
            ctrs = filters.containers(self.ctrs.list(all_=request.all or filters.wants_all(request.filters)),
                                      request.filters, self.ctl)
            return [self._container_doc(c.id) for c in ctrs]
        return pb.Documents(json=await self.run(context, op))

    async def ContainerInspect(self, request, context):
        return await self._batch_docs(context, request.refs, self._container_doc)

    async def ContainerStart(self, request, context):
        def start(ref):
            ctr = self.ctrs.start(ref)
            self.on_container_started(ctr.id, ctr.state.shim_pid)
        return await self._batch(context, request.refs, start)

    async def ContainerStop(self, request, context):
        timeout = request.timeout if request.timeout > 0 else 10.0
        return await self._batch(context, request.refs, lambda r: self.ctrs.stop(r, timeout))

    async def ContainerRemove(self, request, context):
        def remove(ref):
            ctr = self.ctrs.remove(ref, force=request.force)
            self.events.publish("container", "destroy", ctr.id, name=ctr.name)
        return await self._batch(context, request.refs, remove)

    async def ContainerStats(self, request, context):
        def op():
            refs = list(request.refs) or [c.id for c in self.ctrs.list(all_=False)]
            return [_dumps(self.ctrs.stats(r)) for r in refs]
        return pb.Documents(json=await self.run(context, op))

    async def ContainerExec(self, request, context):
        env = tuple(tuple(e.split("=", 1)) for e in request.env if "=" in e)
        argv = await self.run(context, self.ctrs.exec_argv, request.container, list(request.argv), env)
        return pb.ExecResponse(argv=argv)

    async def ContainerLogs(self, request, context):
        ctr = await self.run(context, self.ctrs.get, request.container)
        path = os.path.join(self.ctrs.state_dir(ctr), "log")
        offset = 0
        while True:
            data = await asyncio.to_thread(_read_from, path, offset)
            if data:
                offset += len(data)
                yield pb.LogChunk(data=data)
            if not request.follow:
                return
            current = await self.run(context, self.ctrs.get, ctr.id)
            if current.state.status != "running":
                tail = await asyncio.to_thread(_read_from, path, offset)
                if tail:
                    yield pb.LogChunk(data=tail)
                return
            await asyncio.sleep(0.05)

    async def ContainerWait(self, request, context):
        ctr = await self.run(context, self.ctrs.get, request.container)
        deadline = time.monotonic() + request.timeout if request.timeout > 0 else None
        while ctr.state.status == "running":
            if deadline and time.monotonic() > deadline:
                return pb.WaitResponse(exit_code=0, timed_out=True)
            await asyncio.sleep(0.02)
            ctr = await self.run(context, self.ctrs.get, ctr.id)
        return pb.WaitResponse(exit_code=ctr.state.exit_code)

    # -- system --------------------------------------------------------------------

    async def Events(self, request, context):
        queue: asyncio.Queue = asyncio.Queue()
        self.events.queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.events.queues.discard(queue)

    async def Version(self, request, context):
        return pb.VersionResponse(version=__version__, api_version=API_VERSION,
                                  python=platform.python_version(), kernel=platform.release())

    async def Info(self, request, context):
        def op():
            ctrs = self.ctrs.list(all_=True)
            return [_dumps({
                "Networks": len(self.ctl.networks),
                "Containers": len(ctrs),
                "ContainersRunning": sum(c.state.status == "running" for c in ctrs),
                "ContainersStopped": sum(c.state.status != "running" for c in ctrs),
                "Drivers": sorted(self.engine.drivers),
                "StateDir": self.engine.cfg.state_dir,
                "RunDir": self.engine.cfg.run_dir,
                "ClusterStore": self.engine.cfg.cluster_store,
                "Cluster": _cluster_info(self.engine.cluster, len(self.ctl.remote_peers)),
                "NftTable": f"inet {self.engine.cfg.nft_table}",
                "ServerVersion": __version__,
                "KernelVersion": platform.release(),
            })]
        return pb.Documents(json=await self.run(context, op))

    async def PluginList(self, request, context):
        def used():
            counts: dict[str, int] = {}
            for net in self.ctl.networks.values():
                for name in {net.driver, net.ipam_driver}:
                    counts[name] = counts.get(name, 0) + 1
            return {k: v for k, v in counts.items() if k not in self.engine.drivers and k not in ("default", "")}
        counts = await self.run(context, used)
        # health checks off the operation worker: a slow plugin never delays other calls
        docs = await asyncio.to_thread(self.engine.plugins.describe, counts)
        return pb.Documents(json=[_dumps(d) for d in docs])


def _cluster_info(cluster, remote_peers: int) -> dict | None:
    """This node as the cluster knows it (None without a cluster store)."""
    if cluster is None:
        return None
    node = cluster.node
    return {"NodeID": node.id, "NodeName": node.name, "AdvertiseAddr": node.addr, "Connected": cluster.connected,
            "RemoteEndpoints": remote_peers}


def _status(code: int) -> tuple:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.value
    return grpc.StatusCode.UNKNOWN.value


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""
