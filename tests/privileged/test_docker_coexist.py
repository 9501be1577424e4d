"""Next to dockerd: its FORWARD policy DROP must not stop netmgr's traffic.

dockerd's effect on the ruleset is reproduced in the fake host with the
iptables tools dockerd itself uses (policy DROP, a DOCKER-USER chain
jumped to from FORWARD), so the test needs no Docker engine.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from netmgr.containers import RunRequest
from netmgr.controller import NetworkRequest
from netmgr.model import PoolConfig, PortMapping
from tests.privileged.conftest import HOST_IP, OUTSIDE_IP
from tests.privileged.helpers import request, server_argv

pytestmark = pytest.mark.skipif(shutil.which("iptables") is None, reason="iptables not installed")


def as_dockerd(netns_path: str) -> None:
    """What dockerd does to the filter table when it starts."""
    for args in (("-P", "FORWARD", "DROP"), ("-N", "DOCKER-USER"), ("-A", "DOCKER-USER", "-j", "RETURN"),
                 ("-I", "FORWARD", "-j", "DOCKER-USER")):
        subprocess.run(["nsenter", f"--net={netns_path}", "iptables", "-t", "filter", *args], check=True)


def test_traffic_flows_with_forward_policy_drop(engine, host_ns, outside):
    engine.ctl.create_network(NetworkRequest("nmt-dk", pools=(PoolConfig("10.61.0.0/24"),)))
    argv = server_argv(engine.cfg.state_dir, "tcp", 80, "nmt-dksrv")
    srv = engine.containers.run(RunRequest(argv=argv, name="nmt-dksrv", network="nmt-dk",
                                           ports=(PortMapping(80, "tcp", "", 8090),)))
    for _ in range(50):
        if request(srv.sandbox_key, "tcp", "127.0.0.1", 80, 0.2):
            break
    as_dockerd(host_ns.path)
    assert request(outside.path, "tcp", HOST_IP, 8090, 0.5) is None  # dockerd's DROP bites
    engine.ctl.repair_host_state(firewall=False, docker=True)
    assert request(outside.path, "tcp", HOST_IP, 8090) == f"nmt-dksrv {OUTSIDE_IP}"
    rules = subprocess.run(["nsenter", f"--net={host_ns.path}", "iptables", "-S", "DOCKER-USER"],
                           capture_output=True, text=True).stdout
    assert "-A DOCKER-USER -i nm-+ -j ACCEPT" in rules and "-A DOCKER-USER -o nm-+ -j ACCEPT" in rules
    engine.ctl.repair_host_state(firewall=False, docker=True)  # idempotent: no duplicates
    again = subprocess.run(["nsenter", f"--net={host_ns.path}", "iptables", "-S", "DOCKER-USER"],
                           capture_output=True, text=True).stdout
    assert again == rules


def test_daemon_reacts_to_dockerd_starting(sim_host):
    h = sim_host
    as_dockerd(h.netns_path)
    for _ in range(100):
        rules = h.sh("iptables", "-S", "DOCKER-USER").out
        if "-i nm-+ -j ACCEPT" in rules and "-o netmgr0 -j ACCEPT" in rules:  # -o netmgr0 is inserted last
            break
        time.sleep(0.05)
    assert "-A DOCKER-USER -i nm-+ -j ACCEPT" in rules and "-A DOCKER-USER -o netmgr0 -j ACCEPT" in rules
