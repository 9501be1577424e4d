"""Cluster identity (netmgr.nodeid) with real daemons in simulated hosts and a real etcd.

Three daemons started without ``--node-name`` (all with this machine's host name, as when each is started
in ``ip netns exec``) get three names and an overlay that works by name; an explicit name, a node ID (a
copied state dir) or an advertise address that a live node already holds is refused at start with one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import uuid

import pytest

from netmgr.labhost import SimHost, plug_into_underlay
from netmgr.runtime import netns
from netmgr.testing.multihost import MultiHost
from tests.privileged.helpers import wait_for

pytestmark = pytest.mark.privileged


class Unnamed(MultiHost):
    """A cluster whose daemons get no --node-name."""

    def daemon_args(self, i: int) -> tuple[str, ...]:
        args = list(super().daemon_args(i))
        at = args.index("--node-name")
        del args[at:at + 2]
        return tuple(args)


@pytest.fixture(scope="module")
def cluster():
    with Unnamed(3, subnet_prefix="10.252.8", ttl=3) as m:
        yield m


def ok(result):
    assert result.rc == 0, result.err
    return result.out


def info(host) -> dict:
    return json.loads(ok(host.cli("info", "-f", "{{json .Cluster}}")))


def test_default_names_are_unique_and_the_overlay_works_by_name(cluster):
    hosts = cluster.hosts
    assert all(wait_for(lambda h=h: info(h)["Connected"]) for h in hosts)
    names = [info(h)["NodeName"] for h in hosts]
    me = socket.gethostname()
    assert len(set(names)) == 3 and set(names) <= {me, *(f"{me}-{cluster.addr(i)}" for i in range(3))}
    net = "nmtid" + uuid.uuid4().hex[:4]
    ok(hosts[0].cli("network", "create", "-d", "overlay", net))
    ctrs = [f"nmtid{i}{uuid.uuid4().hex[:4]}" for i in range(3)]
    try:
        for h in hosts:
            assert wait_for(lambda h=h: net in h.cli("network", "ls", "--format", "{{.Name}}").out)
        for h, ctr in zip(hosts, ctrs):
            ok(h.cli("run", "-d", "--name", ctr, "--network", net, "sleep", "600"))
        for i, h in enumerate(hosts):
            for other in ctrs[:i] + ctrs[i + 1:]:
                assert wait_for(lambda h=h, other=other: h.cli(
                    "exec", ctrs[i], "busybox", "ping", "-c1", "-W1", other).rc == 0, 10), (h.name, other)
    finally:
        for h, ctr in zip(hosts, ctrs):
            h.cli("rm", "-f", ctr)
        hosts[0].cli("network", "rm", net)


def refused(cluster, args: tuple[str, ...], state_from: SimHost | None = None) -> str:
    """A fourth host (underlay .40) whose daemon gets ``args``: it must exit 1 with one line; that line."""
    name = "x" + uuid.uuid4().hex[:4]
    host = SimHost(name, cluster.base, args, netns_name=f"{cluster.prefix}-{name}")
    os.makedirs(host.dir, exist_ok=True)
    if state_from is not None:
        shutil.copytree(state_from.state_dir, host.state_dir)
    try:
        netns.create(host.netns_path, sandbox=False).close()
        plug_into_underlay(cluster.ul.nl, cluster.bridge, f"ul-{name}", host.netns_path, f"{cluster.net}.40", 24,
                           cluster.gateway, cluster.mtu)
        with contextlib.suppress(RuntimeError):  # it may exit before it serves
            host.start_daemon(timeout=cluster.ttl + 10)
        assert host.proc.wait(cluster.ttl + 10) == 1
        lines = [line for line in host.daemon_log().splitlines() if line.startswith("netmgrd: ")]
        assert len(lines) == 1, host.daemon_log()
        return lines[0]
    finally:
        host.down()


def base_args(cluster, addr: str) -> tuple[str, ...]:
    return ("--dns-upstream", "none", "--cluster-store", f"etcd://{cluster.gateway}:2379",
            "--advertise-addr", addr, "--cluster-ttl", str(cluster.ttl))


def test_an_explicit_name_held_by_a_live_node_is_refused(cluster):
    taken = info(cluster.hosts[1])["NodeName"]
    line = refused(cluster, (*base_args(cluster, f"{cluster.net}.40"), "--node-name", taken))
    assert line.startswith(f"netmgrd: node name {taken} is already taken in the cluster by node ")
    assert line.endswith(f"at {cluster.addr(1)}: start this daemon with a --node-name of its own")


def test_a_copied_state_dir_is_refused(cluster):
    src = cluster.hosts[2]
    line = refused(cluster, (*base_args(cluster, f"{cluster.net}.40"), "--node-name", "nmt-copy"), state_from=src)
    node_id = info(src)["NodeID"]
    assert line == (f"netmgrd: node ID {node_id[:12]} is already live in the cluster at {cluster.addr(2)} "
                    f"({info(src)['NodeName']}): this state dir was copied from another host; give this daemon "
                    "a --state-dir of its own")


def test_an_advertise_address_held_by_a_live_node_is_refused(cluster):
    holder = cluster.hosts[0]
    line = refused(cluster, (*base_args(cluster, cluster.addr(0)), "--node-name", "nmt-sameaddr"))
    assert line == (f"netmgrd: advertise address {cluster.addr(0)} is already used by node "
                    f"{info(holder)['NodeName']} ({info(holder)['NodeID'][:12]}): each host needs an "
                    "--advertise-addr of its own")
    # the holder was not disturbed
    assert info(holder)["Connected"]
