"""Containers: a process plus the sandbox it joins.

``run`` = validate → state dir → sandbox (a new netns, or the host's) →
attach to the network → /etc files → start the process → store. Each step
registers its undo, so a failed ``run`` leaves nothing behind (no record,
no namespace, no link, no process). ``network connect``/``disconnect`` of a
running container go through here too, since they change a container.

A stopped container keeps its sandbox, interfaces and addresses until
``rm`` (Docker tears them down at stop and re-attaches at start). netmgr
keeps them so that ``start`` is cheap and addresses are stable; the price
is that ``network rm`` refuses while a stopped container is attached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Protocol

from netmgr import errors, etcfiles, names, statefiles
from netmgr.controller import AttachRequest, Controller
from netmgr.model import Container, ContainerConfig, ContainerState, Endpoint, PortMapping, from_dict, new_id, now_rfc3339, to_dict
from netmgr.runtime import container as rt
from netmgr.store import Op
from netmgr.undo import UndoStack

log = logging.getLogger("netmgr.containers")
EXIT_CODE_GRACE = 2.0  # seconds a shim gets to record the exit code after its container died


@dataclass(frozen=True)
class RunRequest:
    """``netmgr run`` as the API receives it."""

    argv: tuple[str, ...]
    name: str = ""
    network: str = "bridge"
    ip: str = ""
    ip6: str = ""
    aliases: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    hostname: str = ""
    rootfs: str = ""
    volumes: tuple[tuple[str, str, bool], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    memory: int = 0
    cpus: float = 0.0
    pids_limit: int = 0
    auto_remove: bool = False
    workdir: str = "/"
    labels: dict[str, str] = field(default_factory=dict)


class SandboxDNS(Protocol):
    """The embedded DNS server, as containers need it (the daemon provides one)."""

    def attach(self, sandbox_id: str, netns_path: str) -> None:
        """Serve 127.0.0.11 in this sandbox (returns once the sockets are open)."""

    def detach(self, sandbox_id: str) -> None:
        """Stop serving it (idempotent)."""


class NoDNS:
    """No embedded DNS (in-process engines without an event loop)."""

    def attach(self, sandbox_id: str, netns_path: str) -> None:
        """Nothing to open."""

    def detach(self, sandbox_id: str) -> None:
        """Nothing to close."""


class Containers:
    """Container lifecycle on top of the :class:`Controller`."""

    def __init__(self, ctl: Controller, state_dir: str, host_netns: str | None = None) -> None:
        self.ctl = ctl
        self.dns: SandboxDNS = NoDNS()
        self.host_netns = host_netns  # where host-network containers run (None: the daemon's own)
        self.dir = os.path.join(state_dir, "containers")
        self.items: dict[str, Container] = {}
        self._by_name: dict[str, str] = {}  # name -> id
        self._live = rt.Liveness()  # refresh() at one poll() per running container

    def load(self) -> None:
        """Read the container records and bring their state up to date."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        for kv in self.ctl.store.list("containers/"):
            ctr = from_dict(Container, kv.value)
            self.items[ctr.id] = ctr
            self._by_name[ctr.name] = ctr.id
            self.refresh(ctr)

    def state_dir(self, ctr: Container | str) -> str:
        """Where a container's files live (log, pid, exit, /etc files)."""
        return os.path.join(self.dir, ctr if isinstance(ctr, str) else ctr.id)

    # -- lookups --------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """A container by name, ID or unique ID prefix, with its state refreshed."""
        ctr = self.items.get(ref) or self.items.get(self._by_name.get(ref, ""))  # the common cases, O(1)
        if ctr is None:
            ctr = names.lookup(ref, self.items.values(), lambda c: c.name, lambda c: c.id,
                               lambda r: errors.ContainerNotFound(f"No such container: {r}"), "container")
        return self.refresh(ctr)

    def list(self, all_: bool = False) -> list[Container]:
        """Running containers (or all), newest first."""
        ctrs = [self.refresh(c) for c in list(self.items.values())]
        if not all_:
            ctrs = [c for c in ctrs if c.state.status == "running"]
        return sorted(ctrs, key=lambda c: c.created, reverse=True)

    def refresh(self, ctr: Container) -> Container:
        """Update a running container's state from the runtime (it may have exited)."""
        if ctr.state.status != "running":
            return ctr
        if self._live.is_running(self.state_dir(ctr), ctr.state.pid):
            return ctr
        code = rt.exit_code(self.state_dir(ctr))
        if code is None:
            # the process is gone but its shim may not have written the exit code yet
            try:
                code = rt.wait(self.state_dir(ctr), EXIT_CODE_GRACE)
            except errors.NetmgrError:
                code = None  # the shim was killed too: the code is lost
        state = dataclasses.replace(ctr.state, status="exited", exit_code=code if code is not None else 137,
                                    finished_at=now_rfc3339(), pid=0)
        self._release(ctr)
        return self._save(dataclasses.replace(ctr, state=state))

    def _release(self, ctr: Container) -> None:
        """An exited container's cgroups and leftover mounts go (as runc's delete); ``start`` makes new ones.

        Its sandbox, interfaces and addresses stay until ``rm`` (see the module docstring).
        """
        try:
            rt.cleanup(self._spec(ctr, self._files(ctr)))
        except errors.NetmgrError as exc:
            log.warning("release %s after exit: %s", ctr.name, exc)

    def _save(self, ctr: Container) -> Container:
        self.ctl.store.put(f"containers/{ctr.id}", to_dict(ctr))
        self.items[ctr.id] = ctr
        return ctr

    # -- run -------------------------------------------------------------------

    def run(self, req: RunRequest) -> Container:
        """Create, connect and start a container; all or nothing."""
        net, ctr = self._validate_run(req)
        with UndoStack() as undo:
            sdir = self._step_state_dir(undo, ctr)
            ctr = self._step_sandbox(undo, ctr, net)
            eps = self._step_attach(undo, ctr, net, req)
            files = etcfiles.write(sdir, ctr.config.hostname, [eps[0].ipv4, eps[0].ipv6], ctr.config.embedded_dns)
            self._step_dns(undo, ctr)
            ctr = self._step_start(undo, ctr, files)
            self.ctl.store.txn([], [Op(f"containers/{ctr.id}", to_dict(ctr))] + [self.ctl.put_endpoint_op(e) for e in eps])
            undo.commit()
        self.items[ctr.id] = ctr
        self._by_name[ctr.name] = ctr.id
        for ep in eps:
            self.ctl.commit_endpoint(ep)
        return ctr

    def _validate_run(self, req: RunRequest):
        if not req.argv:
            raise errors.InvalidConfig("No command specified")
        name = req.name
        if name:
            names.check_container_name(name)
            if name in self._by_name:
                existing = self.items[self._by_name[name]]
                raise errors.AlreadyExists(
                    f'Conflict. The container name "/{name}" is already in use by container "{existing.id}". '
                    "You have to remove (or rename) that container to be able to reuse that name.")
        else:
            name = names.random_name(lambda n: n in self._by_name)
        net = self.ctl.network(req.network or "bridge")
        cid = new_id()
        config = ContainerConfig(
            argv=tuple(req.argv), hostname=req.hostname or cid[:12], env=tuple(req.env), rootfs=req.rootfs,
            volumes=tuple(req.volumes), memory=req.memory, cpus=req.cpus, pids_limit=req.pids_limit,
            network_mode=net.name, auto_remove=req.auto_remove, ports=tuple(req.ports), workdir=req.workdir,
            embedded_dns=self.ctl.records.serves(net))
        ctr = Container(id=cid, name=name, created=now_rfc3339(), config=config)
        self.ctl.check_attach(net, ctr, AttachRequest(req.ip, req.ip6, tuple(req.aliases)))
        if req.ports and net.driver in ("host", "null"):
            log.info("published ports are discarded when using host or none network mode")
        return net, ctr

    def _step_state_dir(self, undo: UndoStack, ctr: Container) -> str:
        path = self.state_dir(ctr)
        with statefiles.guard(path, "create the container's state dir"):
            os.makedirs(path, mode=0o700)
        undo.push("remove state dir", shutil.rmtree, path, True)
        return path

    def _step_sandbox(self, undo: UndoStack, ctr: Container, net) -> Container:
        if net.driver == "host":
            return ctr  # the host's namespace: sandbox key ""
        return dataclasses.replace(ctr, sandbox_key=self.ctl.create_sandbox(undo, ctr.id))

    def _step_attach(self, undo: UndoStack, ctr: Container, net, req: RunRequest) -> list[Endpoint]:
        return self.ctl.attach_all(undo, net, ctr, AttachRequest(req.ip, req.ip6, tuple(req.aliases)))

    def _step_dns(self, undo: UndoStack, ctr: Container) -> None:
        # before the process starts, so its first lookup already has an answer
        if ctr.config.embedded_dns and ctr.sandbox_key:
            undo.push("stop DNS", self.dns.detach, ctr.id)
            self.dns.attach(ctr.id, ctr.sandbox_key)

    def _step_start(self, undo: UndoStack, ctr: Container, files: dict[str, str]) -> Container:
        spec = self._spec(ctr, files)
        try:
            proc = rt.start(spec)
        except errors.InvalidConfig as exc:
            if "executable file not found" in str(exc) or "no such file" in str(exc).lower():
                raise errors.CommandNotFound(str(exc)) from exc
            raise
        undo.push("stop process", self._kill_and_clean, spec, proc.pid)
        state = ContainerState(status="running", pid=proc.pid, shim_pid=proc.shim_pid, started_at=now_rfc3339())
        return dataclasses.replace(ctr, state=state)

    def _spec(self, ctr: Container, files: dict[str, str]) -> rt.ContainerSpec:
        cfg = ctr.config
        return rt.ContainerSpec(
            id=ctr.id, argv=tuple(cfg.argv), state_dir=self.state_dir(ctr), netns_path=ctr.sandbox_key or self.host_netns,
            hostname=cfg.hostname, hosts_file=files["hosts"], resolv_file=files["resolv"],
            hostname_file=files["hostname"], env=tuple(cfg.env), workdir=cfg.workdir or "/",
            rootfs=cfg.rootfs or None, volumes=tuple(cfg.volumes), memory=cfg.memory or None,
            cpus=cfg.cpus or None, pids_limit=cfg.pids_limit or None,
            hide_mounts=(self.ctl.ns_dir,),
        )

    def _files(self, ctr: Container) -> dict[str, str]:
        sdir = self.state_dir(ctr)
        return {"hosts": os.path.join(sdir, "hosts"), "resolv": os.path.join(sdir, "resolv.conf"),
                "hostname": os.path.join(sdir, "hostname")}

    def _kill_and_clean(self, spec: rt.ContainerSpec, pid: int) -> None:
        rt.stop(spec.state_dir, pid, timeout=0)
        rt.cleanup(spec)

    # -- start / stop / rm -------------------------------------------------------

    def start(self, ref: str) -> Container:
        """Start a stopped container again in its existing sandbox."""
        ctr = self.get(ref)
        if ctr.state.status == "running":
            return ctr
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.state_dir(ctr), "exit"))  # the last run's exit code
        with UndoStack() as undo:
            self._step_dns(undo, ctr)
            ctr = self._step_start(undo, ctr, self._files(ctr))
            ctr = self._save(ctr)
            undo.commit()
        return ctr

    def stop(self, ref: str, timeout: float = 10.0) -> Container:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (Docker's ``stop``)."""
        if not 0 <= timeout < 1e9:  # also NaN
            raise errors.InvalidConfig(f"invalid stop timeout {timeout}: want 0 or more seconds")
        ctr = self.get(ref)
        if ctr.state.status == "running":
            rt.stop(self.state_dir(ctr), ctr.state.pid, timeout=timeout)
        return self.refresh(ctr)

    def wait(self, ref: str, timeout: float | None = None) -> int | None:
        """Block until the container exits; its exit code (None on timeout)."""
        ctr = self.get(ref)
        if ctr.state.status == "running":
            if rt.wait(self.state_dir(ctr), timeout) is None:
                return None
        return self.refresh(self.items[ctr.id]).state.exit_code

    def remove(self, ref: str, force: bool = False) -> Container:
        """Remove a container: process (with ``force``), endpoints, sandbox, files, record."""
        ctr = self.get(ref)
        if ctr.state.status == "running":
            if not force:
                raise errors.Conflict(
                    f"You cannot remove a running container {ctr.id}. "
                    "Stop the container before attempting removal or force remove")
        self.ctl.store.check_writable()
        if ctr.state.status == "running":
            rt.stop(self.state_dir(ctr), ctr.state.pid, timeout=0)
        failures = []
        for ep in self.ctl.container_endpoints(ctr.id):
            failures += self.ctl.detach(ep, ctr)
        try:
            rt.cleanup(self._spec(ctr, self._files(ctr)))
        except errors.NetmgrError as exc:
            failures.append(f"cleanup: {exc}")
        self.dns.detach(ctr.id)
        self.ctl.remove_sandbox(ctr.sandbox_key)
        ops = [Op(self.ctl.endpoint_key(ep)) for ep in self.ctl.container_endpoints(ctr.id)]
        self.ctl.store.txn([], ops + [Op(f"containers/{ctr.id}")])
        for ep in self.ctl.container_endpoints(ctr.id):
            self.ctl.forget_endpoint(ep)
        self.items.pop(ctr.id, None)
        self._by_name.pop(ctr.name, None)
        self._live.forget(self.state_dir(ctr))
        shutil.rmtree(self.state_dir(ctr), ignore_errors=True)
        if failures:
            log.warning("remove %s: %s", ctr.name, "; ".join(failures))
        return ctr

    # -- connect / disconnect ----------------------------------------------------

    def connect(self, net_ref: str, ctr_ref: str, req: AttachRequest) -> Endpoint:
        """``network connect``: a new interface (eth1, eth2…) in the container's sandbox."""
        ctr = self.get(ctr_ref)  # Docker checks the container first
        net = self.ctl.network(net_ref)
        if not ctr.sandbox_key and self.ctl.container_endpoints(ctr.id) and net.driver != "host":
            raise errors.Conflict(
                "container sharing network namespace with another container or host cannot be connected to any "
                "other network")
        self.ctl.check_attach(net, ctr, req)
        with UndoStack() as undo:
            eps = self.ctl.attach_all(undo, net, ctr, req)
            changed = self._step_enable_dns(undo, ctr, net)
            ops = [self.ctl.put_endpoint_op(e) for e in eps]
            if changed is not ctr:
                ops.append(Op(f"containers/{ctr.id}", to_dict(changed)))
            self.ctl.store.txn([], ops)
            undo.commit()
        self.items[ctr.id] = changed
        for ep in eps:
            self.ctl.commit_endpoint(ep)
        return eps[0]

    def _step_enable_dns(self, undo: UndoStack, ctr: Container, net) -> Container:
        """The first user-defined network of a container started without one: the embedded DNS.

        As libnetwork's sbJoin (startResolver, then rebuildDNS): a container started on the default
        bridge gets 127.0.0.11 in its resolv.conf once it joins a network with discovery, and keeps
        it after that network is disconnected. The file is rewritten in place: the container's
        /etc/resolv.conf is a bind mount of that inode.
        """
        if ctr.config.embedded_dns or not ctr.sandbox_key or not self.ctl.records.serves(net):
            return ctr
        path = self._files(ctr)["resolv"]
        with statefiles.guard(path, "read"):
            with open(path) as f:
                before = f.read()
        undo.push("restore resolv.conf", etcfiles.rewrite_in_place, path, before)
        etcfiles.rewrite_in_place(path, etcfiles.resolv_conf(embedded_dns=True))
        undo.push("stop DNS", self.dns.detach, ctr.id)
        self.dns.attach(ctr.id, ctr.sandbox_key)
        return dataclasses.replace(ctr, config=dataclasses.replace(ctr.config, embedded_dns=True))

    def disconnect(self, net_ref: str, ctr_ref: str, force: bool = False) -> None:
        """``network disconnect``: remove the container's interface on that network."""
        net = self.ctl.network(net_ref)
        try:
            ctr = self.get(ctr_ref)
        except errors.ContainerNotFound:
            if force:
                return
            raise
        ep = next((e for e in self.ctl.container_endpoints(ctr.id) if e.network_id == net.id), None)
        if ep is None:
            raise errors.EndpointNotFound(f"container {ctr.id} is not connected to network {net.name}")
        if net.driver == "host" and not force:
            raise errors.Conflict("container cannot be disconnected from host network or connected to host network")
        self.ctl.store.check_writable()
        if net.scope == "global" and not force:
            self.ctl.unpublish(ep)  # fails fast while the cluster is unreachable, before anything changed
        gateway = self.ctl.unneeded_gateway(ctr.id, ep)
        failures = self.ctl.detach(ep, ctr, unpublished=not force)
        if gateway is not None:
            failures += self.ctl.detach(gateway, ctr)
        if failures and not force:
            raise errors.KernelError(f"disconnect {ctr.name} from {net.name}: " + "; ".join(failures))
        gone = [ep] + ([gateway] if gateway is not None else [])
        self.ctl.store.txn([], [Op(self.ctl.endpoint_key(e)) for e in gone])
        for e in gone:
            self.ctl.forget_endpoint(e)

    # -- inspection helpers --------------------------------------------------------

    def logs(self, ref: str) -> bytes:
        """Everything the container wrote to stdout and stderr."""
        return rt.read_logs(self.state_dir(self.get(ref)))

    def exec_argv(self, ref: str, argv: list[str], env: tuple[tuple[str, str], ...] = ()) -> list[str]:
        """The command line that runs ``argv`` inside a running container."""
        ctr = self.get(ref)
        if ctr.state.status != "running":
            raise errors.Conflict(f"Container {ctr.id} is not running")
        return rt.exec_argv(ctr.state.pid, list(argv), env=env)

    def stats(self, ref: str) -> dict:
        """One resource sample of a running container (``netmgr stats``)."""
        ctr = self.get(ref)
        if ctr.state.status != "running":
            raise errors.Conflict(f"Container {ctr.id} is not running")
        cg = rt.stats(self.state_dir(ctr))
        rx = tx = 0
        try:
            with open(f"/proc/{ctr.state.pid}/net/dev") as f:  # the container's own namespace
                for line in f.readlines()[2:]:
                    name, _, fields = line.partition(":")
                    if name.strip() != "lo":
                        nums = fields.split()
                        rx, tx = rx + int(nums[0]), tx + int(nums[8])
        except OSError:
            pass
        mem = (cg.memory_usage or 0) - (cg.memory_cache or 0)
        return {"Id": ctr.id, "Name": ctr.name, "CpuNs": cg.cpu_usage_ns or 0, "MemUsage": max(mem, 0),
                "MemLimit": cg.memory_limit or 0, "Pids": cg.pids_current or 0, "NetRx": rx, "NetTx": tx}

    def close(self) -> None:
        """Close the pidfds held on PID 1s (the containers survive the daemon)."""
        self._live.close()
