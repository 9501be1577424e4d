"""Published ports on the real kernel: from another host, from the host itself, hairpin.

"Another host" is a namespace of our own wired to the fake host by a veth
(10.199.0.2 → 10.199.0.1); nothing leaves the namespaces the test made.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from netmgr import errors
from netmgr.containers import RunRequest
from netmgr.controller import NetworkRequest
from netmgr.model import PoolConfig, PortMapping
from tests.privileged.conftest import ip_json, nft_json
from tests.privileged.helpers import request, server_argv

from tests.privileged.conftest import HOST_IP, OUTSIDE_IP


def serve(engine, name, net, ports, proto="tcp", port=80, **kw):
    argv = server_argv(engine.cfg.state_dir, proto, port, name)
    ctr = engine.containers.run(RunRequest(argv=argv, name=name, network=net, ports=tuple(ports), **kw))
    for _ in range(100):  # wait until the server listens
        if request(ctr.sandbox_key, proto, "127.0.0.1", port, 0.2):
            return ctr
        time.sleep(0.05)
    raise AssertionError(f"server {name} did not start")


@pytest.fixture
def web(engine, outside):
    engine.ctl.create_network(NetworkRequest("nmt-pub", pools=(PoolConfig("10.57.0.0/24"),)))
    return serve(engine, "nmt-web", "nmt-pub", [PortMapping(80, "tcp", "", 8080), PortMapping(80, "tcp", "127.0.0.1", 8081),
                                                PortMapping(80, "tcp", "", 0)])


def test_reachable_from_another_host_and_the_host(engine, host_ns, outside, web):
    assert request(outside.path, "tcp", HOST_IP, 8080) == f"nmt-web {OUTSIDE_IP}"
    assert request(host_ns.path, "tcp", HOST_IP, 8080).startswith("nmt-web")
    assert request(host_ns.path, "tcp", "127.0.0.1", 8080).startswith("nmt-web")


def test_ephemeral_port_is_reported(engine, outside, web):
    (ep,) = engine.ctl.container_endpoints(web.id)
    ephemeral = [p.host_port for p in ep.ports if p.container_port == 80 and p.host_port not in (8080, 8081)][0]
    assert 32768 <= ephemeral <= 60999
    assert request(outside.path, "tcp", HOST_IP, ephemeral) == f"nmt-web {OUTSIDE_IP}"


SYN_PROBE = """
import sys
from scapy.all import IP, TCP, Ether, conf, srp1
conf.verb = 0
mac, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
reply = srp1(Ether(dst=mac) / IP(src="{outside}", dst=dst) / TCP(sport=40000 + port % 1000, dport=port, flags="S"),
             iface="eth0", timeout=1)
print("SYNACK" if reply is not None and reply.haslayer(TCP) and reply[TCP].flags & 0x12 == 0x12 else "NONE")
""".replace("{outside}", OUTSIDE_IP)


def syn_probe(outside, mac: str, dst: str, port: int) -> str:
    proc = subprocess.run(["nsenter", f"--net={outside.path}", sys.executable, "-c", SYN_PROBE, mac, dst, str(port)],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


def test_loopback_binding_not_reachable_from_another_host(engine, host_ns, outside, web):
    """-p 127.0.0.1:8081:80 answers the host only, even to a crafted packet for 127.0.0.1 (CVE-2020-8558)."""
    assert request(host_ns.path, "tcp", "127.0.0.1", 8081).startswith("nmt-web")
    assert request(outside.path, "tcp", HOST_IP, 8081, 0.5) is None
    mac = [l for l in ip_json(host_ns.path, "link") if l["ifname"] == "nmt-up0"][0]["address"]
    assert syn_probe(outside, mac, HOST_IP, 8080) == "SYNACK"  # the probe itself works
    assert syn_probe(outside, mac, "127.0.0.1", 8081) == "NONE"


def test_hairpin_from_a_container_on_the_same_bridge(engine, host_ns, outside, web):
    client = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-cl", network="nmt-pub"))
    reply = request(client.sandbox_key, "tcp", HOST_IP, 8080)
    assert reply is not None and reply.startswith("nmt-web")
    # the reply comes from the host (masqueraded), not straight from the server's address
    assert reply.split()[1] == "10.57.0.1"
    own = request(web.sandbox_key, "tcp", HOST_IP, 8080)
    assert own is not None and own.startswith("nmt-web")


def test_port_conflict_and_release(engine, outside, web):
    with pytest.raises(errors.AlreadyExists, match="Bind for 0.0.0.0:8080 failed: port is already allocated"):
        serve(engine, "nmt-web2", "nmt-pub", [PortMapping(80, "tcp", "", 8080)])
    engine.containers.remove("nmt-web", force=True)
    assert request(outside.path, "tcp", HOST_IP, 8080, 0.5) is None
    serve(engine, "nmt-web3", "nmt-pub", [PortMapping(80, "tcp", "", 8080)])
    assert request(outside.path, "tcp", HOST_IP, 8080) == f"nmt-web3 {OUTSIDE_IP}"


def test_udp(engine, outside):
    engine.ctl.create_network(NetworkRequest("nmt-udp", pools=(PoolConfig("10.58.0.0/24"),)))
    serve(engine, "nmt-dns", "nmt-udp", [PortMapping(53, "udp", "", 5353)], proto="udp", port=53)
    assert request(outside.path, "udp", HOST_IP, 5353) == f"nmt-dns {OUTSIDE_IP}"


def test_thousand_ports_add_elements_not_rules(engine, host_ns, web):
    rules = lambda: len([i for i in nft_json(host_ns.path, "list", "table", "inet", "netmgr")["nftables"]  # noqa: E731
                         if "rule" in i])
    before = rules()
    serve(engine, "nmt-many", "nmt-pub", [PortMapping(80, "tcp", "", 20000 + i) for i in range(200)])
    assert rules() == before
