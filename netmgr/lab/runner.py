"""``netmgr lab up``: build a lab from a validated topology, one recorded step at a time.

Order (each step prints one progress line)::

    underlay   namespace nml-LAB-ul: bridge br0 (gateway + etcd addresses), bridge
               "outside" with the outside address
    etcd       1 or 3 members inside the underlay namespace, data under the lab dir
    hosts      per host: namespace nml-LAB-HOST, veth eth0 <-> v-HOST on br0,
               address + default route via the gateway, then its netmgrd
               (--cluster-store, --advertise-addr, --node-name); daemons start in parallel
    networks   ``netmgr network create`` through the creating host's daemon
    containers ``netmgr run -d`` (+ ``network connect`` for further networks)

Every object is entered into the lab's record (:mod:`netmgr.lab.state`)
before it is created; any failure (or Ctrl-C, or SIGTERM) removes
everything made so far with the same code as ``down``. Nothing is created
in the machine's own network namespace: the underlay, the hosts and etcd
live in the lab's namespaces, and the only route out of a host leads to the
underlay namespace, which routes nowhere.

The netmgr commands run in-process (``netmgr.cli.main.main`` with
``-H unix://SOCKET``): the same code as the ``netmgr`` command, without a
Python start-up per command.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from netmgr import errors
from netmgr.lab import names
from netmgr.lab.state import LabRecord
from netmgr.lab.topology import Container, Network, Topology
from netmgr.labhost import NETNS_DIR, SimHost, make_underlay, plug_into_underlay
from netmgr.runtime import netns
from netmgr.testing.etcd import EtcdServer

__all__ = ["LabError", "Result", "cli", "up"]

ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380


class LabError(errors.NetmgrError):
    """A step of ``up`` failed (the message names the step)."""


@dataclass
class Result:
    """What an in-process netmgr command printed and returned."""

    rc: int
    out: str
    err: str


def cli(socket: str, *args: str) -> Result:
    """Run ``netmgr -H unix://SOCKET ARGS`` in this process and capture its output."""
    from netmgr.cli.main import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["-H", f"unix://{socket}", *args])
    return Result(rc, out.getvalue(), err.getvalue())


class _Progress:
    """``[k/N] what`` lines."""

    def __init__(self, total: int, out: Callable[[str], None]) -> None:
        self.total, self.done, self.out = total, 0, out

    def __call__(self, text: str) -> None:
        self.done += 1
        self.out(f"[{self.done}/{self.total}] {text}")


def up(topo: Topology, name: str, out: Callable[[str], None] = print) -> LabRecord:
    """Create lab ``name`` from ``topo``; on any failure remove all of it and re-raise."""
    from netmgr.lab import teardown

    start = time.monotonic()
    rec = LabRecord.create(name, topo.source)
    total = 2 + len(topo.hosts) + sum(len(n.hosts) for n in topo.networks) + len(topo.containers)
    step = _Progress(total, out)
    try:
        # validate reads this copy: the file may change while the lab lives
        shutil.copyfile(topo.source, os.path.join(rec.dir, "topology.yaml"))
        _underlay(rec, topo, step)
        _etcd(rec, topo, step)
        _hosts(rec, topo, step)
        for net in topo.networks:
            _network(rec, topo, net, step)
        for ctr in topo.containers:
            _container(rec, ctr, step)
    except BaseException as exc:
        out(f"up failed ({_one_line(exc)}); removing everything lab {name} made")
        _ignore_interrupts()  # a second Ctrl-C must not cut the removal short
        rec.set("status", "failed")
        failures = teardown.remove(rec, out=out)
        for failure in failures:
            out(f"  cleanup: {failure}")
        raise
    rec.data.update(status="up", tool_pid=None, up_seconds=round(time.monotonic() - start, 2))
    rec.save()
    rec.unlock()
    out(f"lab {name} up in {time.monotonic() - start:.1f} s "
        f"(netmgr lab status {name}; netmgr lab exec {name} {topo.hosts[0].name} netmgr ps)")
    return rec


def _ignore_interrupts() -> None:
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- underlay ---------------------------------------------------------------------------


def _underlay(rec: LabRecord, topo: Topology, step: _Progress) -> None:
    ul = topo.underlay
    path = os.path.join(NETNS_DIR, names.underlay_netns(rec.name))
    plen = ul.subnet.prefixlen
    rec.set("underlay", {"netns": path, "subnet": str(ul.subnet), "gateway": str(ul.gateway),
                         "outside": str(ul.outside.ip), "mtu": ul.mtu})
    netns.ensure_ns_dir(NETNS_DIR)
    rec.add("namespaces", path)
    handle = netns.create(path, sandbox=False)
    try:
        make_underlay(handle.nl, names.UNDERLAY_BRIDGE, [(str(a), plen) for a in (ul.gateway, *topo.etcd_addresses)],
                      ul.mtu)
        make_underlay(handle.nl, names.OUTSIDE_BRIDGE, [(str(ul.outside.ip), ul.outside.network.prefixlen)])
    finally:
        handle.close()
    step(f"underlay {names.underlay_netns(rec.name)}: bridge {names.UNDERLAY_BRIDGE} {ul.gateway}/{plen} "
         f"(MTU {ul.mtu}), outside {ul.outside}")


# -- etcd -------------------------------------------------------------------------------


def _etcd(rec: LabRecord, topo: Topology, step: _Progress) -> None:
    t0 = time.monotonic()
    ul_ns = rec.get("underlay")["netns"]
    members = [(f"etcd{i}", str(a)) for i, a in enumerate(topo.etcd_addresses)]
    initial = ",".join(f"{n}=http://{a}:{ETCD_PEER_PORT}" for n, a in members)
    servers = []
    for member, address in members:
        data_dir = os.path.join(rec.dir, "etcd", member)
        servers.append(EtcdServer(data_dir, name=member, host=address, client_port=ETCD_CLIENT_PORT,
                                  peer_port=ETCD_PEER_PORT, initial_cluster=initial,
                                  cluster_token=f"nml-{rec.name}", netns=ul_ns, detach=True))
    url = "etcd://" + ",".join(s.endpoint for s in servers)
    rec.set("etcd", {"url": url, "members": [
        {"name": s.name, "address": s.host, "client_url": s.client_url, "data_dir": s.data_dir} for s in servers]})
    for s in servers:  # all at once: none is healthy before a quorum runs
        entry = {"role": f"etcd {s.name}", "pid": None, "marker": s.data_dir}
        rec.add("processes", entry)
        s.start(wait=False)
        entry["pid"] = s.proc.pid
        rec.save()
    for s in servers:
        s.wait_ready()
        s._close_log()  # the member outlives us; its log file stays open in etcd only
    step(f"etcd: {len(servers)} member{'s' if len(servers) > 1 else ''} at "
         f"{', '.join(s.endpoint for s in servers)} healthy ({time.monotonic() - t0:.1f} s)")


# -- hosts ------------------------------------------------------------------------------


def _daemon_args(rec: LabRecord, address: str, host: str) -> tuple[str, ...]:
    return ("--dns-upstream", "none", "--cluster-store", rec.get("etcd")["url"], "--advertise-addr", address,
            "--node-name", host)


def _hosts(rec: LabRecord, topo: Topology, step: _Progress) -> None:
    ul = rec.get("underlay")
    sims = []
    ul_handle = netns.open_handle(ul["netns"])
    try:
        bridge = ul_handle.nl.link_index(names.UNDERLAY_BRIDGE)
        for host in topo.hosts:
            sim = SimHost(host.name, os.path.join(rec.dir, "hosts"), _daemon_args(rec, str(host.address), host.name),
                          netns_name=names.host_netns(rec.name, host.name))
            _plumb_host(rec, topo, sim, str(host.address), ul_handle, bridge)
            sims.append(sim)
    finally:
        ul_handle.close()
    for sim in sims:
        rec.add("processes", {"role": f"netmgrd {sim.name}", "pid": None, "marker": sim.state_dir})
    with ThreadPoolExecutor(len(sims)) as pool:  # a daemon's start is mostly Python imports
        futures = {sim.name: pool.submit(_start_daemon, sim) for sim in sims}
        for sim in sims:
            t0 = futures[sim.name].result()
            _record_pid(rec, f"netmgrd {sim.name}", sim.proc.pid)
            step(f"host {sim.name}: namespace {os.path.basename(sim.netns_path)}, eth0 "
                 f"{rec.get('hosts')[sim.name]['address']}, netmgrd pid {sim.proc.pid} ({t0:.1f} s)")


def _plumb_host(rec: LabRecord, topo: Topology, sim: SimHost, address: str, ul_handle, bridge: int) -> None:
    """The host's namespace and its underlay link: eth0 with an address and a default route."""
    rec.data["hosts"][sim.name] = {"netns": sim.netns_path, "dir": sim.dir, "socket": sim.socket,
                                   "address": address, "state_dir": sim.state_dir, "run_dir": sim.run_dir}
    rec.add("state_dirs", sim.state_dir)
    rec.add("namespaces", sim.netns_path)
    os.makedirs(sim.dir, exist_ok=True)
    netns.create(sim.netns_path, sandbox=False).close()
    plug_into_underlay(ul_handle.nl, bridge, names.underlay_port(sim.name), sim.netns_path, address,
                       topo.underlay.subnet.prefixlen, str(topo.underlay.gateway), topo.underlay.mtu)


def _start_daemon(sim: SimHost) -> float:
    t0 = time.monotonic()
    sim.start_daemon(timeout=30)
    return time.monotonic() - t0


def _record_pid(rec: LabRecord, role: str, pid: int) -> None:
    for entry in rec.get("processes"):
        if entry["role"] == role:
            entry["pid"] = pid
    rec.save()


# -- networks and containers ----------------------------------------------------------------


def _checked(rec: LabRecord, host: str, *args: str) -> str:
    r = cli(rec.get("hosts")[host]["socket"], *args)
    if r.rc == 130:  # the CLI's answer to Ctrl-C (or our SIGTERM) while it waited for the daemon
        raise KeyboardInterrupt
    if r.rc != 0:
        msg = (r.err.strip() or r.out.strip() or f"exit {r.rc}").splitlines()[-1]
        raise LabError(f"{host}: netmgr {' '.join(args)}: {msg}")
    return r.out.strip()


def _network(rec: LabRecord, topo: Topology, net: Network, step: _Progress) -> None:
    args = ["network", "create", "-d", net.driver]
    if net.subnet:
        args += ["--subnet", net.subnet]
    if net.gateway:
        args += ["--gateway", net.gateway]
    if net.internal:
        args.append("--internal")
    if net.attachable:
        args.append("--attachable")
    for key, value in net.options:
        args += ["-o", f"{key}={value}"]
    for host in net.hosts:
        rec.add("networks", {"name": net.name, "host": host, "driver": net.driver})
        net_id = _checked(rec, host, *args, net.name)
        flags = " internal" if net.internal else ""
        users = sorted({c.host for c in topo.containers if any(a.network == net.name for a in c.networks)})
        where = f"on {host}" if net.driver == "bridge" else f"via {host}, visible on {', '.join(users or [host])}"
        if net.driver != "bridge":
            _wait_visible(rec, net.name, [h for h in users if h != host], host)
        step(f"network {net.name} ({net.driver}{flags}, {net.subnet or 'default pool'}) {where}: {net_id[:12]}")


def _wait_visible(rec: LabRecord, network: str, hosts: list[str], creator: str, timeout: float = 10.0) -> None:
    """Wait until a global network made through ``creator`` is known to the daemon of each of ``hosts``.

    Other daemons learn of it through etcd, asynchronously: a container started
    on them at once could otherwise find no such network.
    """
    from netmgr.client import Client

    deadline = time.monotonic() + timeout
    for host in hosts:
        client = Client(f"unix://{rec.get('hosts')[host]['socket']}", timeout=5)
        try:
            while True:
                docs, failures = client.inspect("NetworkInspect", [network])
                if docs:
                    break
                if failures and not isinstance(failures[0], errors.NotFound):
                    raise LabError(f"{host}: network inspect {network}: {failures[0].message}")
                if time.monotonic() > deadline:
                    raise LabError(f"network {network} created through {creator} is not visible on {host} "
                                   f"after {timeout:g} s (is the cluster store working?)")
                time.sleep(0.05)
        finally:
            client.close()


def _container(rec: LabRecord, ctr: Container, step: _Progress) -> None:
    first, *more = ctr.networks
    args = ["run", "-d", "--name", ctr.name, "--hostname", ctr.name, "--network", first.network]
    if first.ip:
        args += ["--ip", first.ip]
    for alias in first.aliases:
        args += ["--network-alias", alias]
    rec.add("containers", {"name": ctr.name, "host": ctr.host})
    ctr_id = _checked(rec, ctr.host, *args, *ctr.command)
    for att in more:
        extra = ["network", "connect"] + (["--ip", att.ip] if att.ip else [])
        for alias in att.aliases:
            extra += ["--alias", alias]
        _checked(rec, ctr.host, *extra, att.network, ctr.name)
    nets = ", ".join(a.network for a in ctr.networks)
    step(f"container {ctr.name} on {ctr.host} ({nets}): {ctr_id[:12]}")
