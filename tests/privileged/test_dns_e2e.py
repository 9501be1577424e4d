"""The embedded DNS through the daemon and the CLI: names follow run, connect, disconnect and rm."""

from __future__ import annotations

import json
import re

import pytest


def lookup(h, ctr: str, name: str) -> list[str]:
    """Addresses of ``name`` as seen from inside ``ctr`` (busybox nslookup at 127.0.0.11)."""
    r = h.cli("exec", ctr, "busybox", "nslookup", "-type=a", name, "127.0.0.11")
    answer = r.out.split("Name:", 1)[1] if "Name:" in r.out else ""
    return re.findall(r"Address: (\d+\.\d+\.\d+\.\d+)", answer)


def ip(h, ctr: str, net: str) -> str:
    return json.loads(h.cli("inspect", ctr).out)[0]["NetworkSettings"]["Networks"][net]["IPAddress"]


@pytest.fixture(scope="module")
def dns_world(sim_host):
    h = sim_host
    for net, subnet in (("nmt-d1", "10.90.0.0/24"), ("nmt-d2", "10.91.0.0/24")):
        assert h.cli("network", "create", "--subnet", subnet, net).rc == 0
    for name, net, extra in (("nmt-a", "nmt-d1", ["--network-alias", "svc"]), ("nmt-b", "nmt-d1", ["--network-alias", "svc"]),
                             ("nmt-c", "nmt-d2", [])):
        assert h.cli("run", "-d", "--name", name, "--network", net, *extra, "sleep", "600").rc == 0
    return h


def test_resolv_conf_points_at_the_embedded_dns(dns_world):
    out = dns_world.cli("exec", "nmt-a", "cat", "/etc/resolv.conf").out
    assert out.splitlines()[0] == "nameserver 127.0.0.11" and "options ndots:0" in out


def test_names_and_aliases_on_shared_networks_only(dns_world):
    h = dns_world
    assert lookup(h, "nmt-a", "nmt-b") == [ip(h, "nmt-b", "nmt-d1")]
    assert sorted(lookup(h, "nmt-a", "svc")) == sorted([ip(h, "nmt-a", "nmt-d1"), ip(h, "nmt-b", "nmt-d1")])
    assert lookup(h, "nmt-a", "nmt-b.nmt-d1") == [ip(h, "nmt-b", "nmt-d1")]
    assert lookup(h, "nmt-a", "nmt-c") == []  # on another network
    assert lookup(h, "nmt-c", "svc") == []


def test_records_follow_connect_disconnect_and_rm(dns_world):
    h = dns_world
    assert h.cli("network", "connect", "--alias", "db", "nmt-d2", "nmt-a").rc == 0
    assert lookup(h, "nmt-c", "nmt-a") == [ip(h, "nmt-a", "nmt-d2")]
    assert lookup(h, "nmt-c", "db") == [ip(h, "nmt-a", "nmt-d2")]
    assert lookup(h, "nmt-a", "nmt-c") == [ip(h, "nmt-c", "nmt-d2")]  # a now shares d2 with c
    assert h.cli("network", "disconnect", "nmt-d2", "nmt-a").rc == 0
    assert lookup(h, "nmt-c", "nmt-a") == []
    assert h.cli("run", "-d", "--name", "nmt-tmp", "--network", "nmt-d1", "sleep", "600").rc == 0
    assert lookup(h, "nmt-a", "nmt-tmp") == [ip(h, "nmt-tmp", "nmt-d1")]  # resolvable once run returned
    assert h.cli("rm", "-f", "nmt-tmp").rc == 0
    assert lookup(h, "nmt-a", "nmt-tmp") == []


def test_reverse_lookup_and_unknown_names(dns_world):
    h = dns_world
    b_ip = ip(h, "nmt-b", "nmt-d1")
    r = h.cli("exec", "nmt-a", "busybox", "nslookup", b_ip, "127.0.0.11")
    assert "nmt-b.nmt-d1" in r.out
    r = h.cli("exec", "nmt-a", "busybox", "nslookup", "-type=a", "nmt-nosuch", "127.0.0.11")
    assert "NXDOMAIN" in r.out


def test_default_bridge_has_no_embedded_dns(dns_world):
    h = dns_world
    assert h.cli("run", "-d", "--name", "nmt-plain", "sleep", "600").rc == 0
    assert "127.0.0.11" not in h.cli("exec", "nmt-plain", "cat", "/etc/resolv.conf").out
    h.cli("rm", "-f", "nmt-plain")


def test_connect_from_the_default_bridge_starts_the_embedded_dns(dns_world):
    """As libnetwork's sbJoin: the first network with discovery brings 127.0.0.11, and it stays.

    (Chaos seed 7 found it: a container run on the default bridge and connected to a user network
    could not resolve its new peers, since its resolv.conf still named the host's resolvers.)
    """
    h = dns_world
    assert h.cli("run", "-d", "--name", "nmt-late", "sleep", "600").rc == 0
    assert h.cli("network", "connect", "nmt-d1", "nmt-late").rc == 0
    conf = h.cli("exec", "nmt-late", "cat", "/etc/resolv.conf").out
    assert conf.splitlines()[0] == "nameserver 127.0.0.11" and "options ndots:0" in conf
    assert h.cli("exec", "nmt-late", "busybox", "ping", "-c1", "-W2", "nmt-b").rc == 0  # its own resolver
    assert lookup(h, "nmt-b", "nmt-late") == [ip(h, "nmt-late", "nmt-d1")]
    assert h.cli("network", "disconnect", "nmt-d1", "nmt-late").rc == 0
    assert h.cli("exec", "nmt-late", "cat", "/etc/resolv.conf").out == conf  # Docker keeps the resolver
    assert h.cli("network", "connect", "nmt-d2", "nmt-late").rc == 0
    assert lookup(h, "nmt-late", "nmt-c") == [ip(h, "nmt-c", "nmt-d2")]


def test_daemon_restart_keeps_serving(dns_world):
    import signal

    h = dns_world
    h.stop_daemon(signal.SIGKILL)
    h.start_daemon()
    assert lookup(h, "nmt-a", "nmt-b") == [ip(h, "nmt-b", "nmt-d1")]
    assert lookup(h, "nmt-late", "nmt-c") == [ip(h, "nmt-c", "nmt-d2")]  # connected later: kept too
    h.cli("rm", "-f", "nmt-late")


FAKE_RESOLVER = """
import socket, sys
from netmgr.dns import wire
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 5353))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(4096)
    q = wire.parse_query(data)
    if q.qname.lower() == "outside.example" and q.qtype == wire.A:
        s.sendto(wire.response(q, wire.NOERROR, [wire.rr_a("198.51.100.7", 60)]), addr)
    else:
        s.sendto(wire.response(q, wire.NXDOMAIN), addr)
"""


def test_forwarding_to_the_hosts_resolver_and_aaaa(tmp_path):
    """Names that are not containers go to the host's resolver: a fake one in the simulated host."""
    import subprocess
    import sys

    from netmgr.labhost import SimHost
    from tests.conftest import unique

    h = SimHost(unique(), str(tmp_path), daemon_args=("--dns-upstream", "127.0.0.1:5353"))
    h.up()
    resolver = subprocess.Popen(["nsenter", f"--net={h.netns_path}", sys.executable, "-c", FAKE_RESOLVER],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert resolver.stdout.readline().strip() == "ready"
        assert h.cli("network", "create", "--ipv6", "--subnet", "10.92.0.0/24", "--subnet", "fd42:92::/64",
                     "nmt-d6").rc == 0
        for name in ("nmt-x", "nmt-y"):
            assert h.cli("run", "-d", "--name", name, "--network", "nmt-d6", "sleep", "600").rc == 0
        assert lookup(h, "nmt-x", "outside.example") == ["198.51.100.7"]
        r = h.cli("exec", "nmt-x", "busybox", "nslookup", "-type=a", "nosuch.example", "127.0.0.11")
        assert "NXDOMAIN" in r.out
        y6 = json.loads(h.cli("inspect", "nmt-y").out)[0]["NetworkSettings"]["Networks"]["nmt-d6"]["GlobalIPv6Address"]
        r = h.cli("exec", "nmt-x", "busybox", "nslookup", "-type=aaaa", "nmt-y", "127.0.0.11")
        assert y6 and y6 in r.out
    finally:
        resolver.kill()
        resolver.wait()
        h.down()
