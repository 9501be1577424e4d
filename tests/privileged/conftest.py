"""Fixtures for the real-kernel tests: fake host namespaces, in-process engines, simulated hosts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from netmgr.engine import Config, open_engine
from netmgr.labhost import SimHost, kill_shims_under, remove_cgroups_of
from netmgr.runtime import netns
from tests.conftest import unique


@pytest.fixture
def host_ns():
    """A fresh namespace playing the host (loopback up); removed afterwards."""
    base = tempfile.mkdtemp(prefix="nmt-")
    path = os.path.join(base, unique())
    handle = netns.create(path, sandbox=False)
    try:
        yield handle
    finally:
        handle.close()
        netns.remove(path)
        shutil.rmtree(base, ignore_errors=True)


HOST_IP, OUTSIDE_IP = "10.199.0.1", "10.199.0.2"
HOST_IP6, OUTSIDE_IP6 = "fd99::1", "fd99::2"


@pytest.fixture
def outside(host_ns):
    """Another host: a namespace with a veth to the fake host (IPv4 and IPv6) and default routes through it."""
    from netmgr.runtime import sandbox

    path = os.path.join(tempfile.mkdtemp(prefix="nmt-"), "nmt-outside")
    handle = netns.create(path, sandbox=False)
    try:
        host_ns.nl.add_veth("nmt-up0", "eth0", handle.fd, up=True)
        up = host_ns.nl.link_index("nmt-up0")
        host_ns.nl.add_addr(up, HOST_IP, 24)
        host_ns.nl.add_addr(up, HOST_IP6, 64)
        sandbox.configure_interface(handle, "eth0", [f"{OUTSIDE_IP}/24", f"{OUTSIDE_IP6}/64"], gateway=HOST_IP,
                                    gateway6=HOST_IP6)
        yield handle
    finally:
        handle.close()
        netns.remove(path)
        os.rmdir(os.path.dirname(path))


@pytest.fixture
def engine(host_ns):
    """An in-process engine whose host is ``host_ns`` (state and run dirs in a tmp dir)."""
    base = tempfile.mkdtemp(prefix="nmt-eng-")
    cfg = Config(state_dir=os.path.join(base, "state"), run_dir=os.path.join(base, "run"),
                 nft_table="netmgr", host_netns=host_ns.path)
    eng = open_engine(cfg)
    try:
        yield eng
    finally:
        close_engine(eng)
        shutil.rmtree(base, ignore_errors=True)


def close_engine(eng) -> None:
    """Remove every container, close the engine, then whatever a failure could leave: shims, cgroups, sandboxes."""
    cfg = eng.cfg
    for ctr in list(eng.containers.items.values()):
        try:
            eng.containers.remove(ctr.id, force=True)
        except Exception:
            pass
    eng.close()
    kill_shims_under(cfg.state_dir)
    remove_cgroups_of(cfg.state_dir)
    ns_dir = os.path.join(cfg.run_dir, "netns")
    for name in os.listdir(ns_dir) if os.path.isdir(ns_dir) else []:
        netns.remove(os.path.join(ns_dir, name))
    subprocess.run(["umount", "-l", ns_dir], capture_output=True)


def reopen_engine(engine, between=None):
    """Close ``engine`` and open it again on the same state, as a daemon restart would.

    ``between`` runs while it is closed. The fixture's object takes the new
    engine's state, so its teardown cleans up the reopened one.
    """
    engine.close()
    if between is not None:
        between()
    engine.__dict__.update(open_engine(engine.cfg).__dict__)
    return engine


@pytest.fixture(scope="module")
def sim_host():
    """A simulated host with its own netmgrd, shared by a test module."""
    base = tempfile.mkdtemp(prefix="nmt-sim-")
    host = SimHost(unique(), base)
    host.up()
    try:
        yield host
    finally:
        host.down()
        shutil.rmtree(base, ignore_errors=True)


def ip_json(netns_path: str | None, *args: str):
    """``ip -j ARGS`` in a namespace: the independent view of kernel state."""
    cmd = (["nsenter", f"--net={netns_path}"] if netns_path else []) + ["ip", "-j", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def nft_json(netns_path: str | None, *args: str):
    """``nft -j ARGS`` in a namespace."""
    cmd = (["nsenter", f"--net={netns_path}"] if netns_path else []) + ["nft", "-j", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout or "{}")
