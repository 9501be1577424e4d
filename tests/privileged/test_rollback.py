"""Fault injection: make each step of connect and run fail in turn, then compare
links, addresses, namespaces, nftables elements, IPAM, processes and the store
with a snapshot taken before (CNI bridge_test "checks ip release in case of
error"; pyroute2's ChaoticIPRoute)."""

from __future__ import annotations

import os
import subprocess

import pytest

from netmgr import errors
from netmgr.containers import Containers, RunRequest
from netmgr.controller import AttachRequest, Controller, NetworkRequest
from netmgr.model import PoolConfig
from netmgr.runtime import sandbox
from tests.privileged.conftest import ip_json, nft_json

CONNECT_STEPS = [
    (Controller, "_step_allocate"),
    (Controller, "_step_create_endpoint"),
    (Controller, "_step_join"),
    (Controller, "_step_configure"),
    (Controller, "_step_external"),
]
RUN_STEPS = [
    (Containers, "_step_state_dir"),
    (Containers, "_step_sandbox"),
    (Containers, "_step_attach"),
    (Containers, "_step_start"),
] + CONNECT_STEPS


class Injected(errors.KernelError):
    """The fault we inject."""


def _boom(*_a, **_k):
    raise Injected("injected fault")


def _after(orig):
    """Run the real step, then fail: the step's own work must be undone too."""
    def wrapper(*a, **k):
        orig(*a, **k)
        raise Injected("injected fault after the step")
    return wrapper


def snapshot(engine, host_ns, sandbox_key: str | None = None) -> dict:
    """Everything a failed operation could leave behind."""
    nft = nft_json(host_ns.path, "list", "table", "inet", "netmgr")
    snap = {
        "host_links": sorted((l["ifname"], l.get("master", "")) for l in ip_json(host_ns.path, "link")),
        "host_addrs": sorted((l["ifname"], a["local"]) for l in ip_json(host_ns.path, "addr") for a in l["addr_info"]),
        "nft": sorted(str(i) for i in nft["nftables"] if "set" in i or "rule" in i or "map" in i),
        "ipam": {nid: engine.ipam.in_use(nid) for nid in engine.ctl.networks},
        "store": sorted((kv.key, str(kv.value)) for kv in engine.store.list("")),
        "endpoints": sorted(engine.ctl.endpoints),
        "containers": sorted(engine.containers.items),
        "netns": sorted(os.listdir(engine.ctl.ns_dir)),
        "state_dirs": sorted(os.listdir(engine.containers.dir)),
        "shims": _shims(engine),
    }
    if sandbox_key:
        snap["sandbox"] = sorted((l["ifname"], tuple(a["local"] for a in l["addr_info"]))
                                 for l in ip_json(sandbox_key, "addr"))
        snap["sandbox_routes"] = sorted(str(r) for r in ip_json(sandbox_key, "route"))
    return snap


def _shims(engine) -> int:
    out = subprocess.run(["pgrep", "-f", f"netmgr.runtime.shim.*{engine.cfg.state_dir}"], capture_output=True, text=True)
    return len(out.stdout.split())


@pytest.fixture
def nets(engine):
    engine.ctl.create_network(NetworkRequest("nmt-rb1", pools=(PoolConfig("10.60.0.0/24"),)))
    engine.ctl.create_network(NetworkRequest("nmt-rb2", pools=(PoolConfig("10.61.0.0/24"),)))
    return engine


@pytest.mark.parametrize("mode", ["before", "after"])
@pytest.mark.parametrize("cls,step", CONNECT_STEPS, ids=[s for _, s in CONNECT_STEPS])
def test_connect_step_failure_rolls_back(nets, host_ns, monkeypatch, cls, step, mode):
    engine = nets
    ctr = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-rbc", network="nmt-rb1"))
    before = snapshot(engine, host_ns, ctr.sandbox_key)
    monkeypatch.setattr(cls, step, _boom if mode == "before" else _after(getattr(cls, step)))
    with pytest.raises(Injected):
        engine.containers.connect("nmt-rb2", "nmt-rbc", AttachRequest(ip="10.61.0.9"))
    assert snapshot(engine, host_ns, ctr.sandbox_key) == before
    monkeypatch.undo()
    ep = engine.containers.connect("nmt-rb2", "nmt-rbc", AttachRequest(ip="10.61.0.9"))
    assert ep.ipv4 == "10.61.0.9/24"  # the address was really released


def test_connect_store_failure_rolls_back(nets, host_ns, monkeypatch):
    engine = nets
    ctr = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-rbs", network="nmt-rb1"))
    before = snapshot(engine, host_ns, ctr.sandbox_key)
    monkeypatch.setattr(engine.store, "txn", _boom)
    with pytest.raises(Injected):
        engine.containers.connect("nmt-rb2", "nmt-rbs", AttachRequest())
    assert snapshot(engine, host_ns, ctr.sandbox_key) == before


def test_connect_configure_kernel_failure_rolls_back(nets, host_ns, monkeypatch):
    """A real kernel error halfway through (the sandbox already holds the address)."""
    engine = nets
    ctr = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-rbk", network="nmt-rb1"))
    before = snapshot(engine, host_ns, ctr.sandbox_key)
    real = sandbox.configure_interface

    def twice(handle, ifname, addresses, *a, **k):
        real(handle, ifname, addresses, *a, **k)
        real(handle, ifname, addresses, *a, **k)  # EEXIST from the kernel

    monkeypatch.setattr(sandbox, "configure_interface", twice)
    with pytest.raises(errors.AlreadyExists):
        engine.containers.connect("nmt-rb2", "nmt-rbk", AttachRequest())
    assert snapshot(engine, host_ns, ctr.sandbox_key) == before


@pytest.mark.parametrize("mode", ["before", "after"])
@pytest.mark.parametrize("cls,step", RUN_STEPS, ids=[s for _, s in RUN_STEPS])
def test_run_step_failure_rolls_back(nets, host_ns, monkeypatch, cls, step, mode):
    engine = nets
    before = snapshot(engine, host_ns)
    monkeypatch.setattr(cls, step, _boom if mode == "before" else _after(getattr(cls, step)))
    with pytest.raises(Injected):
        engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-rbr", network="nmt-rb1", ip="10.60.0.7"))
    assert snapshot(engine, host_ns) == before


def test_run_store_failure_rolls_back(nets, host_ns, monkeypatch):
    engine = nets
    before = snapshot(engine, host_ns)
    monkeypatch.setattr(engine.store, "txn", _boom)
    with pytest.raises(Injected):
        engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-rbt", network="nmt-rb1"))
    assert snapshot(engine, host_ns) == before


def test_run_unknown_command_rolls_back(nets, host_ns):
    engine = nets
    before = snapshot(engine, host_ns)
    with pytest.raises(errors.CommandNotFound, match='exec: "nmt-nosuchcmd": executable file not found in \\$PATH'):
        engine.containers.run(RunRequest(argv=("nmt-nosuchcmd",), name="nmt-rbu", network="nmt-rb1"))
    assert snapshot(engine, host_ns) == before


def test_network_create_failure_rolls_back(engine, host_ns, monkeypatch):
    before = snapshot(engine, host_ns)
    bridge = engine.drivers["bridge"]
    monkeypatch.setattr(bridge.fw, "add_network", _boom)
    with pytest.raises(Injected):
        engine.ctl.create_network(NetworkRequest("nmt-rbn", pools=(PoolConfig("10.62.0.0/24"),)))
    assert snapshot(engine, host_ns) == before
    monkeypatch.undo()
    monkeypatch.setattr(engine.store, "put", _boom)
    with pytest.raises(Injected):
        engine.ctl.create_network(NetworkRequest("nmt-rbn", pools=(PoolConfig("10.62.0.0/24"),)))
    assert snapshot(engine, host_ns) == before


def test_snapshot_sees_a_connect(nets, host_ns):
    """Guard against a blind snapshot: a successful connect must change it."""
    engine = nets
    ctr = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-rbg", network="nmt-rb1"))
    before = snapshot(engine, host_ns, ctr.sandbox_key)
    engine.containers.connect("nmt-rb2", "nmt-rbg", AttachRequest())
    after = snapshot(engine, host_ns, ctr.sandbox_key)
    assert {k for k in before if before[k] != after[k]} >= {"host_links", "sandbox", "store", "endpoints", "ipam"}


def test_rm_leaves_nothing(nets, host_ns):
    engine = nets
    before = snapshot(engine, host_ns)
    engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-rbm", network="nmt-rb1"))
    engine.containers.connect("nmt-rb2", "nmt-rbm", AttachRequest())
    engine.containers.remove("nmt-rbm", force=True)
    assert snapshot(engine, host_ns) == before
