"""netmgr.cluster against a real etcd: the global allocations and the peer table, without daemons.

Several :class:`Cluster` objects on one etcd play several hosts (each with its
own store connection and lease). Every test works under its own key prefix.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from netmgr import errors
from netmgr.cluster import Cluster, Node, default_global_subnet, peer_key
from netmgr.model import Endpoint, Network, PoolConfig, new_id
from netmgr.store.etcd import EtcdStore
from netmgr.testing.etcd import ETCD_BINARY, EtcdServer
from tests.privileged.helpers import wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(ETCD_BINARY), reason=f"{ETCD_BINARY} not installed")


class Recorder:
    """A ClusterHandler that keeps what it was told."""

    def __init__(self) -> None:
        self.networks: dict[str, dict] = {}
        self.peers: dict[str, dict] = {}
        self.connected = threading.Event()

    def cluster_networks(self, values):
        self.networks = {v["id"]: v for v in values}

    def cluster_network(self, network_id, value):
        if value is None:
            self.networks.pop(network_id, None)
        else:
            self.networks[network_id] = value

    def cluster_peers(self, peers):
        self.peers = dict(peers)

    def cluster_peer(self, key, value):
        if value is None:
            self.peers.pop(key, None)
        else:
            self.peers[key] = value

    def cluster_connected(self):
        self.connected.set()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdServer(str(tmp_path_factory.mktemp("etcd"))) as server:
        yield server


@pytest.fixture
def hosts(etcd):
    """Make n started clusters ("hosts") under one fresh prefix; all closed afterwards."""
    prefix, made = f"/nmt-{uuid.uuid4().hex[:8]}/", []

    def make(n: int, ttl: int = 10):
        for i in range(n):
            cl = Cluster(EtcdStore(etcd.url, prefix=prefix, timeout=5), Node(new_id(), f"h{i}", f"10.9.0.{i + 1}"),
                         ttl)
            rec = Recorder()
            cl.start(rec, lambda fn: fn())
            assert rec.connected.wait(10)
            made.append((cl, rec))
        return made[-n:]

    yield make
    for cl, _ in made:
        cl.close(revoke=True)


def network(name: str, subnet: str) -> Network:
    return Network(id=new_id(), name=name, driver="overlay", scope="global",
                   pools=(PoolConfig(subnet, subnet.rsplit(".", 1)[0] + ".1"),))


def endpoint(net: Network, ip: str, name: str = "c") -> Endpoint:
    return Endpoint(id=new_id(), network_id=net.id, container_id=new_id(), name=name, ifname="eth0",
                    mac="02:42:00:00:00:01", ipv4=ip)


def test_names_and_subnets_are_taken_once(hosts):
    (a, ra), (b, rb) = hosts(2)
    net = network("nmt-n", "10.70.0.0/24")
    a.create_network(net)
    assert wait_for(lambda: net.id in rb.networks)
    with pytest.raises(errors.AlreadyExists, match="network with name nmt-n already exists"):
        b.create_network(network("nmt-n", "10.71.0.0/24"))
    with pytest.raises(errors.AlreadyExists, match="Pool overlaps"):
        b.create_network(network("nmt-other", "10.70.0.0/24"))
    assert b.subnets_in_use() == ["10.70.0.0/24"]
    assert default_global_subnet(b.subnets_in_use()) == "10.0.0.0/24"
    assert default_global_subnet(["10.0.0.0/24", "10.0.1.0/25"]) == "10.0.2.0/24"
    with pytest.raises(errors.Unavailable, match="non-overlapping"):
        default_global_subnet(["10.0.0.0/8"])
    b.delete_network(net)
    assert wait_for(lambda: net.id not in ra.networks)
    b.create_network(network("nmt-n", "10.70.0.0/24"))  # both free again


def test_vnis_are_unique_under_concurrency(hosts):
    clusters = [c for c, _ in hosts(3)]
    got: list[int] = []
    lock = threading.Lock()

    def take(cl):
        for _ in range(10):
            vni = cl.allocate_vni(new_id())
            with lock:
                got.append(vni)

    threads = [threading.Thread(target=take, args=(c,)) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 30 and len(set(got)) == 30 and min(got) >= 4096
    with pytest.raises(errors.AlreadyExists, match="VXLAN ID"):
        clusters[0].allocate_vni(new_id(), got[0])


def test_publish_reserves_addresses_once_and_peers_reach_every_host(hosts):
    (a, _ra), (b, rb), (c, rc) = hosts(3)
    net = network("nmt-p", "10.72.0.0/24")
    a.create_network(net)
    ep = endpoint(net, "10.72.0.2/24", "web")
    assert a.publish(ep) == []
    assert b.publish(endpoint(net, "10.72.0.2/24")) == ["10.72.0.2/24"]  # taken: nothing written
    key = peer_key(net.id, ep.id)
    for rec in (rb, rc):
        assert wait_for(lambda: key in rec.peers)
        assert rec.peers[key]["vtep"] == "10.9.0.1" and rec.peers[key]["name"] == "web"
    assert a.publish(ep, force=True) == []  # our own keys: re-put (restart on a new lease)
    a.unpublish(ep)
    assert wait_for(lambda: key not in rb.peers)
    assert b.publish(endpoint(net, "10.72.0.2/24")) == []  # free again


def test_concurrent_publishes_from_three_hosts_get_distinct_addresses(hosts):
    clusters = [c for c, _ in hosts(3)]
    net = network("nmt-q", "10.73.0.0/24")
    clusters[0].create_network(net)
    won: dict[str, str] = {}
    lock = threading.Lock()

    def connect(cl, n):
        for _ in range(n):
            for last in range(2, 254):  # naive sequential guesses: maximal contention
                ep = endpoint(net, f"10.73.0.{last}/24")
                if not cl.publish(ep):
                    with lock:
                        assert ep.ipv4 not in won
                        won[ep.ipv4] = ep.id
                    break

    threads = [threading.Thread(target=connect, args=(c, 10)) for c in clusters for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 60


def test_a_dead_hosts_peers_vanish_with_its_lease(hosts):
    (a, _), (b, rb) = hosts(2, ttl=2)
    net = network("nmt-d", "10.74.0.0/24")
    b.create_network(net)
    ep = endpoint(net, "10.74.0.2/24")
    assert a.publish(ep) == []
    key = peer_key(net.id, ep.id)
    assert wait_for(lambda: key in rb.peers)
    t0 = time.monotonic()
    a.close()  # dies: no revoke, the keepalive stops
    assert wait_for(lambda: key not in rb.peers, 8)
    assert time.monotonic() - t0 < 6
    assert b.publish(endpoint(net, "10.74.0.2/24")) == []  # its address is free again


def test_restart_republishes_on_the_new_lease_and_drops_what_nobody_owns(etcd, hosts):
    (old, _), (other, rother) = hosts(2)
    net = network("nmt-r", "10.75.0.0/24")
    other.create_network(net)
    kept = [endpoint(net, f"10.75.0.{i}/24", f"k{i}") for i in (2, 3)]
    gone = endpoint(net, "10.75.0.4/24", "gone")
    for ep in (*kept, gone):
        assert old.publish(ep) == []
    assert other.publish(endpoint(net, "10.75.0.9/24")) == []
    # the daemon restarts: same node, new connection and lease; "gone" was removed while it was down
    new = Cluster(EtcdStore(etcd.url, prefix=old.store.prefix, timeout=5), old.node, 10)
    rec = Recorder()
    new.start(rec, lambda fn: fn())
    try:
        assert rec.connected.wait(10)
        taken_meanwhile = endpoint(net, "10.75.0.9/24", "dup")
        assert new.republish([*kept, taken_meanwhile]) == [taken_meanwhile]
        old.store.revoke_lease()  # the old lease ends: the re-put keys must survive it
        assert wait_for(lambda: peer_key(net.id, gone.id) not in rother.peers)
        # a key written after the revoke: once the watch delivers it, it has delivered every deletion before
        sentinel = endpoint(net, "10.75.0.250/24", "sentinel")
        assert new.publish(sentinel) == []
        assert wait_for(lambda: peer_key(net.id, sentinel.id) in rother.peers)
        assert all(peer_key(net.id, ep.id) in rother.peers for ep in kept)
        assert other.publish(endpoint(net, "10.75.0.4/24")) == []  # the stale address is free
        assert other.publish(endpoint(net, "10.75.0.2/24")) == ["10.75.0.2/24"]
    finally:
        new.close(revoke=True)
