"""``netmgrd`` / ``netmgr daemon``: the asyncio daemon.

Start-up: take the run-dir lock (a second daemon on the same run dir
refuses to start), open the engine (store → reconcile drivers with the
kernel → predefined networks → containers), serve gRPC on a root-only unix
socket, watch running containers' shims with pidfds so an exit is noticed
at once (and ``--rm`` containers are removed). SIGTERM/SIGINT stop serving;
kernel objects and containers stay, as with dockerd's live-restore.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import resource
import signal
import sys

import grpc

from netmgr import errors
from netmgr.daemon.dnsbridge import LoopDNS, make_server, parse_upstreams
from netmgr.daemon.flags import build_parser
from netmgr.daemon.service import NetmgrService
from netmgr.daemon.watch import RulesetWatcher
from netmgr.engine import Config, Engine, open_engine
from netmgr.ipam import DEFAULT_POOLS, parse_default_pool
from netmgr.proto.gen import netmgr_v1_netmgr_pb2_grpc as pb_grpc

log = logging.getLogger("netmgr.daemon")
DEFAULT_SOCKET = "/run/netmgr/netmgr.sock"


def config_from(args: argparse.Namespace) -> Config:
    """The engine configuration from parsed flags."""
    pools = tuple(parse_default_pool(p) for p in args.default_address_pool) or DEFAULT_POOLS
    return Config(state_dir=args.state_dir, run_dir=args.run_dir, nft_table=args.nft_table, default_pools=pools,
                  cluster_store=args.cluster_store, advertise_addr=args.advertise_addr, plugin_dir=args.plugin_dir,
                  node_name=args.node_name, cluster_ttl=args.cluster_ttl, cluster_prefix=args.cluster_prefix,
                  dns_upstreams=parse_upstreams(args.dns_upstream))


def take_lock(run_dir: str) -> int:
    """Hold ``RUN_DIR/netmgrd.lock`` for the daemon's life; refuse if another daemon has it."""
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    path = os.path.join(run_dir, "netmgrd.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode().strip() or "?"
        os.close(fd)
        raise errors.Conflict(f"another netmgrd (pid {other}) is already running on {run_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


class ExitWatcher:
    """Notices container exits through pidfds on their shims."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service: NetmgrService) -> None:
        self.loop = loop
        self.service = service
        self.fds: dict[str, int] = {}

    def watch(self, container_id: str, shim_pid: int) -> None:
        """Start watching (called from the worker thread or the loop)."""
        self.loop.call_soon_threadsafe(self._add, container_id, shim_pid)

    def _add(self, container_id: str, shim_pid: int) -> None:
        if container_id in self.fds or shim_pid <= 0:
            return
        try:
            fd = os.pidfd_open(shim_pid)
        except ProcessLookupError:
            self.loop.create_task(self._exited(container_id))
            return
        self.fds[container_id] = fd
        self.loop.add_reader(fd, lambda: self.loop.create_task(self._exited(container_id)))

    async def _exited(self, container_id: str) -> None:
        fd = self.fds.pop(container_id, None)
        if fd is not None:
            self.loop.remove_reader(fd)
            os.close(fd)
        svc = self.service
        loop = asyncio.get_running_loop()
        try:
            ctr = await loop.run_in_executor(svc.worker, svc.ctrs.get, container_id)
        except errors.NotFound:
            return
        svc.events.publish("container", "die", ctr.id, name=ctr.name, exitCode=str(ctr.state.exit_code))
        if ctr.config.auto_remove and ctr.state.status != "running":
            with contextlib.suppress(errors.NetmgrError):
                await loop.run_in_executor(svc.worker, svc.ctrs.remove, ctr.id, True)
                svc.events.publish("container", "destroy", ctr.id, name=ctr.name)

    def close(self) -> None:
        """Stop watching everything."""
        for fd in self.fds.values():
            self.loop.remove_reader(fd)
            os.close(fd)
        self.fds.clear()


async def serve(engine: Engine, socket_path: str, ready: asyncio.Event | None = None) -> None:
    """Serve the API until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    service = NetmgrService(engine)
    dns = make_server(engine.ctl, engine.cfg.dns_upstreams, loop)
    engine.containers.dns = LoopDNS(dns, loop)
    for ctr in engine.containers.items.values():
        if ctr.config.embedded_dns and ctr.sandbox_key and ctr.state.status == "running":
            await dns.add_sandbox(ctr.id, ctr.sandbox_key)
    watcher = ExitWatcher(loop, service)

    async def repair(firewall: bool, docker: bool) -> None:
        await loop.run_in_executor(service.worker, engine.ctl.repair_host_state, firewall, docker)

    rules = RulesetWatcher(loop, engine.cfg.nft_table, repair)
    service.on_container_started = watcher.watch
    for ctr in engine.containers.list(all_=False):
        watcher.watch(ctr.id, ctr.state.shim_pid)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_NetmgrServicer_to_server(service, server)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    old_umask = os.umask(0o177)  # the socket is created 0600: root only
    try:
        server.add_insecure_port(f"unix:{socket_path}")
        await server.start()
    finally:
        os.umask(old_umask)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    refused: list[errors.NetmgrError] = []
    if engine.cluster is not None:
        def refuse(exc: errors.NetmgrError) -> None:  # another live node has this one's ID, name or address
            refused.append(exc)
            loop.call_soon_threadsafe(stop.set)
        engine.cluster.on_failure(refuse)
    log.info("netmgrd listening on %s", socket_path)
    collect_and_freeze()
    refreeze = loop.create_task(refreeze_periodically(loop, service.worker))
    if ready:
        ready.set()
    await stop.wait()
    log.info("netmgrd stopping")
    refreeze.cancel()
    await server.stop(grace=1)
    watcher.close()
    rules.close()
    service.worker.shutdown(wait=True)
    await dns.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    if refused:
        raise refused[0]


GC_REFREEZE_S = 60.0


def collect_and_freeze() -> None:
    """Collect garbage, then hide every surviving object from later collections.

    After start-up that is ~44 000 objects (modules, gRPC, protobuf
    descriptors, the loaded state), and a container adds ~50 that live as
    long as it does. Python's occasional full collection walks all of them
    on whichever request triggers it: 20-30 ms at start, 56-122 ms with 1000
    containers (labs/bench/README.md, scale benchmark); 0.4-3.5 ms with this.
    Frozen objects are skipped but still freed by reference counting when
    dropped; only one that later ends up in a garbage reference cycle is
    never collected (the daemon's long-lived records are plain data).
    """
    gc.collect()
    gc.freeze()


async def refreeze_periodically(loop: asyncio.AbstractEventLoop, worker) -> None:
    """Every minute, on the worker thread between two operations: :func:`collect_and_freeze`.

    Each pass only walks what was created since the previous one.
    """
    while True:
        await asyncio.sleep(GC_REFREEZE_S)
        try:
            await loop.run_in_executor(worker, collect_and_freeze)
        except RuntimeError:  # the worker is shutting down
            return


def raise_fd_limit() -> None:
    """Every container holds ~6 descriptors in the daemon (netns, netlink, DNS, shim and PID 1 pidfds): take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_daemon(args: argparse.Namespace) -> int:
    """Entry point body shared by ``netmgrd`` and ``netmgr daemon``; the daemon's error boundary."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_fd_limit()
    try:
        cfg = config_from(args)
        lock_fd = take_lock(cfg.run_dir)
        engine = open_engine(cfg)
    except errors.NetmgrError as exc:
        print(f"netmgrd: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        asyncio.run(serve(engine, args.socket or os.path.join(cfg.run_dir, "netmgr.sock")))
    except errors.NetmgrError as exc:  # refused by the cluster (netmgr.nodeid)
        print(f"netmgrd: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        engine.close()
        os.close(lock_fd)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``netmgrd``."""
    return run_daemon(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
