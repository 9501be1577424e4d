"""IPv6 dual stack on bridge networks: default ULA pool, --ip6, masquerade, published ports."""

from __future__ import annotations

import subprocess

import netaddr

from netmgr.containers import RunRequest
from netmgr.controller import AttachRequest, NetworkRequest
from netmgr.model import PoolConfig, PortMapping
from tests.privileged.conftest import HOST_IP6, OUTSIDE_IP6, ip_json
from tests.privileged.helpers import request, server_argv


def ping6(netns_path, addr):
    return subprocess.run(["nsenter", f"--net={netns_path}", "busybox", "ping", "-6", "-c1", "-W2", addr],
                          capture_output=True).returncode


def test_default_ula_pool_and_dual_stack(engine, host_ns):
    net = engine.ctl.create_network(NetworkRequest("nmt-v6", ipv6=True))
    v6 = [p for p in net.pools if ":" in p.subnet][0]
    sub = netaddr.IPNetwork(v6.subnet)
    assert sub.prefixlen == 64 and sub in netaddr.IPNetwork("fc00::/7")
    a = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-6a", network="nmt-v6"))
    b = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-6b", network="nmt-v6"))
    (ep_b,) = engine.ctl.container_endpoints(b.id)
    assert ep_b.ipv6 and ep_b.ipv4
    assert ping6(a.sandbox_key, ep_b.ipv6.split("/")[0]) == 0
    routes = ip_json(a.sandbox_key, "-6", "route")
    assert any(r["dst"] == "default" and r["gateway"] == v6.gateway for r in routes)
    # the second IPv6 network of the same host takes the next /64 of the same /48
    other = engine.ctl.create_network(NetworkRequest("nmt-v6b", ipv6=True))
    assert netaddr.IPNetwork([p for p in other.pools if ":" in p.subnet][0].subnet).supernet(48)[0] == sub.supernet(48)[0]


def test_static_ip6_masquerade_and_published_port(engine, host_ns, outside):
    engine.ctl.create_network(NetworkRequest("nmt-v6p", pools=(PoolConfig("10.59.0.0/24"),),
                                             pools6=(PoolConfig("fd42:1::/64"),), ipv6=True))
    argv = server_argv(engine.cfg.state_dir, "tcp", 80, "nmt-6srv")
    srv = engine.containers.run(RunRequest(argv=argv, name="nmt-6srv", network="nmt-v6p", ip6="fd42:1::80",
                                           ports=(PortMapping(80, "tcp", "", 8086),)))
    (ep,) = engine.ctl.container_endpoints(srv.id)
    assert ep.ipv6 == "fd42:1::80/64"
    for _ in range(50):
        if request(srv.sandbox_key, "tcp", "::1", 80, 0.2):
            break
    # from another host over IPv6, to the host's IPv6 address
    assert request(outside.path, "tcp", HOST_IP6, 8086) == f"nmt-6srv {OUTSIDE_IP6}"
    # egress: the other host sees the fake host's address, not the container's ULA (masquerade)
    client = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-6cl", network="nmt-v6p"))
    echo = server_argv(engine.cfg.state_dir, "tcp", 9000, "outside")
    proc = subprocess.Popen(["nsenter", f"--net={outside.path}", *echo])
    try:
        for _ in range(50):
            reply = request(client.sandbox_key, "tcp", OUTSIDE_IP6, 9000, 0.3)
            if reply:
                break
        assert reply == f"outside {HOST_IP6}"
    finally:
        proc.kill()
        proc.wait()


def test_connect_with_ip6(engine):
    engine.ctl.create_network(NetworkRequest("nmt-v6c", pools=(PoolConfig("10.60.9.0/24"),),
                                             pools6=(PoolConfig("fd42:2::/64"),), ipv6=True))
    ctr = engine.containers.run(RunRequest(argv=("sleep", "300"), name="nmt-6c", network="bridge"))
    ep = engine.containers.connect("nmt-v6c", "nmt-6c", AttachRequest(ip6="fd42:2::99"))
    assert ep.ipv6 == "fd42:2::99/64"
    addrs = [a["local"] for l in ip_json(ctr.sandbox_key, "addr") if l["ifname"] == "eth1" for a in l["addr_info"]]
    assert "fd42:2::99" in addrs
