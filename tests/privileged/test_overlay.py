"""The overlay driver across simulated hosts with a real etcd (netmgr.testing.multihost).

Three hosts share one underlay and one etcd (inside the underlay namespace,
which also plays the outside world). Each test uses networks and containers
of its own (unique names) and removes them; the failure tests that kill a
host or a daemon run last in the module.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from netmgr.testing.multihost import MultiHost
from tests.privileged.conftest import ip_json
from tests.privileged.helpers import request, server_argv, together, wait_for

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def cluster():
    with MultiHost(3, subnet_prefix="10.252.7", ttl=3) as m:
        yield m


def uniq(stem: str) -> str:
    return f"nmt{stem}{uuid.uuid4().hex[:4]}"


def ok(result):
    assert result.rc == 0, result.err
    return result.out


def ping(host, ctr: str, target: str, count: int = 1) -> bool:
    return host.cli("exec", ctr, "busybox", "ping", "-c", str(count), "-W", "1", target).rc == 0


def inspect_net(host, ctr: str, net: str) -> dict:
    return json.loads(ok(host.cli("inspect", ctr)))[0]["NetworkSettings"]["Networks"][net]


def fdb(host, dev: str) -> str:
    return host.sh("bridge", "fdb", "show", "dev", dev).out


def vxlan_of(host, net: str) -> str:
    net_id = json.loads(ok(host.cli("network", "inspect", net)))[0]["Id"]
    return "vx-" + net_id[:12]


def overlay(host, *args: str) -> str:
    name = uniq("ov")
    ok(host.cli("network", "create", "-d", "overlay", *args, name))
    return name


def visible_everywhere(cluster, name: str) -> None:
    for h in cluster.hosts:
        assert wait_for(lambda: name in h.cli("network", "ls", "--format", "{{.Name}}").out), \
            f"{h.name}: {h.daemon_log()[-3000:]}"


def test_global_network_is_listed_on_every_host(cluster):
    h1 = cluster.hosts[0]
    name = overlay(h1, "--subnet", "10.61.0.0/24")
    visible_everywhere(cluster, name)
    for h in cluster.hosts:
        doc = json.loads(ok(h.cli("network", "inspect", name)))[0]
        assert doc["Driver"] == "overlay" and doc["Scope"] == "global"
        assert doc["IPAM"]["Config"][0]["Subnet"] == "10.61.0.0/24"
    again = cluster.hosts[1].cli("network", "create", "-d", "overlay", name)
    assert again.rc == 1 and again.err.strip() == f"network with name {name} already exists"
    overlap = cluster.hosts[2].cli("network", "create", "-d", "overlay", "--subnet", "10.61.0.0/25", uniq("x"))
    assert overlap.rc == 1 and "Pool overlaps with other one on this address space" in overlap.err
    ok(cluster.hosts[2].cli("network", "rm", name))
    for h in cluster.hosts:
        assert wait_for(lambda: name not in h.cli("network", "ls").out), h.name


def test_default_subnets_and_vnis_are_unique(cluster):
    names = [overlay(h) for h in cluster.hosts]
    docs = [json.loads(ok(cluster.hosts[0].cli("network", "inspect", n)))[0] for n in names if
            wait_for(lambda: n in cluster.hosts[0].cli("network", "ls").out)]
    subnets = [d["IPAM"]["Config"][0]["Subnet"] for d in docs]
    assert len(set(subnets)) == 3 and all(s.startswith("10.") and s.endswith("/24") for s in subnets)
    for n in names:
        ok(cluster.hosts[0].cli("network", "rm", n))


def test_containers_on_different_hosts_ping_by_name(cluster):
    h1, h2, _ = cluster.hosts
    net = overlay(h1, "--subnet", "10.62.0.0/24")
    visible_everywhere(cluster, net)
    a, b = uniq("a"), uniq("b")
    ok(h1.cli("run", "-d", "--name", a, "--network", net, "--network-alias", "svc", "sleep", "600"))
    ok(h2.cli("run", "-d", "--name", b, "--network", net, "sleep", "600"))
    try:
        ip_a, ip_b = inspect_net(h1, a, net)["IPAddress"], inspect_net(h2, b, net)["IPAddress"]
        assert ip_a != ip_b
        assert wait_for(lambda: ping(h1, a, b), 5) and ping(h2, b, a) and ping(h2, b, "svc")
        mac_b = inspect_net(h2, b, net)["MacAddress"]
        vx = vxlan_of(h1, net)
        assert f"{mac_b} dst {cluster.addr(1)} self permanent" in fdb(h1, vx)
        neigh = h1.sh("ip", "neigh", "show", "dev", vx).out
        assert f"{ip_b} lladdr {mac_b} PERMANENT" in neigh
        # the overlay MTU leaves room for the VXLAN header: underlay 1500 - 50
        mtu = h1.cli("exec", a, "cat", "/sys/class/net/eth0/mtu").out.strip()
        assert mtu == "1450"
        assert h1.cli("exec", a, "busybox", "ping", "-c1", "-W1", "-s", "1422", "-M", "do", ip_b).rc == 0 or \
            ping(h1, a, ip_b)  # busybox may lack -M; full-size frames are covered by the throughput bench
    finally:
        h1.cli("rm", "-f", a)
        h2.cli("rm", "-f", b)
    # the peer is gone from h1 once b is removed; the network's datapath leaves h1 with its last endpoint
    assert wait_for(lambda: h1.sh("ip", "link", "show", vxlan_of(h1, net)).rc != 0, 5)
    ok(h1.cli("network", "rm", net))


def test_an_address_that_moves_to_another_host_is_reachable_at_once(cluster):
    """An IP-derived MAC the overlay bridge had learned on its VXLAN port, now local (chaos found it).

    h2's bridge learns a's MAC on the VXLAN port from a's replies; a is removed and its address is
    run again on h2 (same IP, so same MAC): without the join's static FDB entry, frames for it
    went back into the tunnel until the learned entry aged out (300 s) or the container spoke.
    """
    h1, h2, h3 = cluster.hosts
    net = overlay(h1, "--subnet", "10.62.9.0/24")
    visible_everywhere(cluster, net)
    a, keep, again, far = uniq("a"), uniq("k"), uniq("a2"), uniq("f")
    try:
        ok(h1.cli("run", "-d", "--name", a, "--network", net, "--ip", "10.62.9.50", "sleep", "600"))
        ok(h2.cli("run", "-d", "--name", keep, "--network", net, "sleep", "600"))
        assert wait_for(lambda: ping(h2, keep, "10.62.9.50"), 5)  # h2's bridge learns a's MAC on vx
        mac = inspect_net(h1, a, net)["MacAddress"]
        ok(h1.cli("rm", "-f", a))
        ok(h2.cli("run", "-d", "--name", again, "--network", net, "--ip", "10.62.9.50", "sleep", "600"))
        assert inspect_net(h2, again, net)["MacAddress"] == mac
        ok(h3.cli("run", "-d", "--name", far, "--network", net, "sleep", "600"))
        assert wait_for(lambda: ping(h3, far, "10.62.9.50"), 5)
        assert ping(h2, keep, "10.62.9.50")
    finally:
        for host, name in ((h1, a), (h2, keep), (h2, again), (h3, far)):
            host.cli("rm", "-f", name)
    ok(h1.cli("network", "rm", net))


def test_dual_stack_overlay(cluster):
    h1, h2, _ = cluster.hosts
    net = overlay(h1, "--ipv6", "--subnet", "10.71.0.0/24", "--subnet", "fd71:1::/64")
    auto6 = overlay(h2, "--ipv6")  # default IPv6 pool: a /64 of the cluster's ULA /48
    visible_everywhere(cluster, net)
    a, b = uniq("a"), uniq("b")
    ok(h1.cli("run", "-d", "--name", a, "--network", net, "sleep", "600"))
    ok(h2.cli("run", "-d", "--name", b, "--network", net, "sleep", "600"))
    try:
        ip6_b = inspect_net(h2, b, net)["GlobalIPv6Address"]
        assert ip6_b.startswith("fd71:1::")
        assert wait_for(lambda: h1.cli("exec", a, "busybox", "ping", "-6", "-c1", "-W1", ip6_b).rc == 0, 5)
        lookup = h1.cli("exec", a, "busybox", "nslookup", "-type=aaaa", b, "127.0.0.11").out
        assert ip6_b in lookup
        subnets = [c["Subnet"] for c in json.loads(ok(h2.cli("network", "inspect", auto6)))[0]["IPAM"]["Config"]]
        assert any(s.startswith("fd") and s.endswith("/64") for s in subnets), subnets
    finally:
        h1.cli("rm", "-f", a)
        h2.cli("rm", "-f", b)
    ok(h1.cli("network", "rm", net, auto6))


def test_egress_through_the_gateway_bridge_and_internal_has_none(cluster):
    h1 = cluster.hosts[0]
    net = overlay(h1, "--subnet", "10.63.0.0/24")
    internal = overlay(h1, "--internal", "--subnet", "10.64.0.0/24")
    out, inn, br = uniq("out"), uniq("in"), uniq("br")
    ok(h1.cli("run", "-d", "--name", out, "--network", net, "sleep", "600"))
    ok(h1.cli("run", "-d", "--name", inn, "--network", internal, "sleep", "600"))
    try:
        routes = h1.cli("exec", out, "ip", "route").out
        assert re.search(r"default via 172\.\d+\.0\.1 dev eth1", routes), routes
        assert ping(h1, out, cluster.gateway)  # the outside world, through NAT on the gateway bridge
        assert "default" not in h1.cli("exec", inn, "ip", "route").out
        assert not ping(h1, inn, cluster.gateway)
        gw = json.loads(ok(h1.cli("network", "inspect", "netmgr_gwbridge")))[0]
        assert gw["Options"]["com.docker.network.bridge.enable_icc"] == "false"
        ok(h1.cli("network", "disconnect", net, out))
        assert "eth1" not in h1.cli("exec", out, "ip", "-o", "link").out  # the gateway endpoint left too
        # a container that has a default route already (the default bridge) gets no gateway endpoint
        ok(h1.cli("run", "-d", "--name", br, "sleep", "600"))
        ok(h1.cli("network", "connect", net, br))
        assert "eth2" not in h1.cli("exec", br, "ip", "-o", "link").out
        assert ping(h1, br, cluster.gateway)
    finally:
        h1.cli("rm", "-f", out, inn, br)
    ok(h1.cli("network", "rm", net, internal))


def test_published_port_of_an_overlay_container_goes_through_the_gateway_bridge(cluster):
    """``run -p`` on an overlay network publishes on the host, as Docker does through docker_gwbridge.

    Found by the chaos test: the ports were reserved and shown by ``inspect``, but never programmed.
    """
    h2 = cluster.hosts[1]
    net = overlay(h2, "--subnet", "10.69.0.0/24")
    srv = uniq("srv")
    ok(h2.cli("run", "-d", "--name", srv, "--network", net, "-p", "8097:80",
              *server_argv(h2.dir, "tcp", 80, srv)))
    try:
        doc = json.loads(ok(h2.cli("inspect", srv)))[0]["NetworkSettings"]
        assert doc["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8097"}]}
        # from the outside world (the underlay namespace) to the host's address
        assert wait_for(lambda: request(cluster.ul_path, "tcp", cluster.addr(1), 8097, 0.5), 10)
        reply = request(cluster.ul_path, "tcp", cluster.addr(1), 8097)
        assert reply == f"{srv} {cluster.gateway}"
    finally:
        h2.cli("rm", "-f", srv)
    assert request(cluster.ul_path, "tcp", cluster.addr(1), 8097, 0.3) is None  # unpublished with it
    ok(h2.cli("network", "rm", net))


def test_fifty_concurrent_runs_and_connects_on_one_overlay_from_three_hosts(cluster):
    """50 CLI calls released at once by a barrier: runs on the overlay and connects of running containers,
    spread over 3 hosts. No error, no deadlock, no lost update, no address twice, the kernel agrees."""
    net = overlay(cluster.hosts[0], "--subnet", "10.65.0.0/24")
    visible_everywhere(cluster, net)
    pre = {h: [uniq(f"p{h.name[-2:]}") for _ in range(8)] for h in cluster.hosts}  # 24 connects
    new = {h: [uniq(f"n{h.name[-2:]}") for _ in range(9 if k < 2 else 8)] for k, h in enumerate(cluster.hosts)}
    try:
        for h, names in pre.items():
            for name in names:
                ok(h.cli("run", "-d", "--name", name, "sleep", "600"))
        calls = [lambda h=h, n=n: h.cli("run", "-d", "--name", n, "--network", net, "sleep", "600", timeout=170)
                 for h, names in new.items() for n in names]
        calls += [lambda h=h, n=n: h.cli("network", "connect", net, n, timeout=170)
                  for h, names in pre.items() for n in names]
        assert len(calls) == 50
        results = together(calls)
        assert [r.err for r in results if r.rc != 0] == []
        members = {}
        for h in cluster.hosts:  # each host's inspect lists its own containers, as Docker's does
            doc = json.loads(ok(h.cli("network", "inspect", net)))[0]
            for c in doc["Containers"].values():
                members[c["Name"]] = (h, c["IPv4Address"].split("/")[0])
        every = {n for names in (*pre.values(), *new.values()) for n in names}
        assert set(members) == every  # no lost update
        assert len({ip for _, ip in members.values()}) == 50  # no address twice, across hosts
        for name, (h, ip) in members.items():  # the kernel agrees with the store
            key = json.loads(ok(h.cli("inspect", name)))[0]["NetworkSettings"]["SandboxKey"]
            addrs = {a["local"] for link in ip_json(key, "addr") for a in link["addr_info"]}
            assert ip in addrs, (name, ip, addrs)
        src = new[cluster.hosts[0]][0]
        (a, _), (_, ip_b) = members[src], members[pre[cluster.hosts[2]][0]]
        assert wait_for(lambda: ping(a, src, ip_b), timeout=10)  # across hosts
    finally:
        for h in cluster.hosts:
            h.cli("rm", "-f", *pre[h], *new[h], timeout=120)
    ok(cluster.hosts[0].cli("network", "rm", net))


def test_network_in_use_on_another_host_cannot_be_removed(cluster):
    h1, h2, _ = cluster.hosts
    net = overlay(h1, "--subnet", "10.66.0.0/24")
    visible_everywhere(cluster, net)
    c = uniq("c")
    ok(h2.cli("run", "-d", "--name", c, "--network", net, "sleep", "600"))
    r = h1.cli("network", "rm", net)
    assert r.rc == 1 and "has active endpoints" in r.err
    h2.cli("rm", "-f", c)
    ok(h1.cli("network", "rm", net))


def test_etcd_down_local_networks_work_overlay_fails_fast_then_converges(cluster):
    h1, h2, _ = cluster.hosts
    net = overlay(h1, "--subnet", "10.67.0.0/24")
    visible_everywhere(cluster, net)
    a, b, local, late = uniq("a"), uniq("b"), uniq("l"), uniq("late")
    ok(h1.cli("run", "-d", "--name", a, "--network", net, "sleep", "600"))
    cluster.etcd.pause()
    try:
        ok(h1.cli("network", "create", "--subnet", "10.68.0.0/24", local))
        ok(h1.cli("run", "-d", "--name", uniq("lc"), "--network", local, "sleep", "600"))
        t0 = time.monotonic()
        r = h2.cli("run", "-d", "--name", b, "--network", net, "sleep", "600")
        took = time.monotonic() - t0
        assert r.rc != 0 and "cluster store etcd://" in r.err and "unreachable" in r.err, r.err
        assert took < 8, took
        assert b not in h2.cli("ps", "-a").out
    finally:
        cluster.etcd.resume()
    ok(h2.cli("run", "-d", "--name", late, "--network", net, "sleep", "600"))
    try:
        assert wait_for(lambda: ping(h2, late, a), 10)
    finally:
        h1.cli("rm", "-f", a)
        h2.cli("rm", "-f", late)
        ids = h1.cli("ps", "-aq", "--filter", f"network={local}").out.split()
        if ids:
            h1.cli("rm", "-f", *ids)
        h1.cli("network", "rm", local)
    ok(h1.cli("network", "rm", net))


def test_daemon_restart_reprograms_from_etcd(cluster):
    h1, h2, _ = cluster.hosts
    net = overlay(h1, "--subnet", "10.69.0.0/24")
    visible_everywhere(cluster, net)
    a, b, c = uniq("a"), uniq("b"), uniq("c")
    ok(h1.cli("run", "-d", "--name", a, "--network", net, "sleep", "600"))
    ok(h2.cli("run", "-d", "--name", b, "--network", net, "sleep", "600"))
    try:
        assert wait_for(lambda: ping(h1, a, b), 5)
        import signal

        h2.stop_daemon(signal.SIGKILL)
        ok(h1.cli("run", "-d", "--name", c, "--network", net, "sleep", "600"))  # while h2's daemon is down
        h2.start_daemon()
        assert wait_for(lambda: ping(h2, b, c), 10)  # learnt after the restart
        assert wait_for(lambda: ping(h2, b, a), 5)
        assert wait_for(lambda: ping(h1, a, b), 5)  # h2's peer record survived on its new lease
    finally:
        for h, n in ((h1, a), (h2, b), (h1, c)):
            h.cli("rm", "-f", n)
    ok(h1.cli("network", "rm", net))


def test_dead_host_peers_vanish_within_the_lease_ttl(cluster):
    h1, _, h3 = cluster.hosts
    net = overlay(h1, "--subnet", "10.70.0.0/24")
    visible_everywhere(cluster, net)
    a, z = uniq("a"), uniq("z")
    ok(h1.cli("run", "-d", "--name", a, "--network", net, "sleep", "600"))
    ok(h3.cli("run", "-d", "--name", z, "--network", net, "sleep", "600"))
    try:
        mac_z = inspect_net(h3, z, net)["MacAddress"]
        vx = vxlan_of(h1, net)
        assert wait_for(lambda: mac_z in fdb(h1, vx), 5)
        t0 = time.monotonic()
        cluster.kill_host(2)
        assert wait_for(lambda: mac_z not in fdb(h1, vx), cluster.ttl + 5)
        assert time.monotonic() - t0 < cluster.ttl + 5
        assert h1.cli("exec", a, "busybox", "nslookup", z, "127.0.0.11").rc != 0
    finally:
        h1.cli("rm", "-f", a)
    ok(h1.cli("network", "rm", net))
