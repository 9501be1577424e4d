"""A small multi-host cluster for tests and benchmarks: underlay, etcd, N simulated hosts.

* an underlay namespace ``<prefix>-ul`` with a bridge ``ul0`` at ``.1`` of
  the underlay subnet; it also plays "the outside world" (containers with
  NAT reach ``.1``; nothing else is ever addressed);
* one etcd member inside the underlay namespace, on ``.1:2379``;
* hosts ``<prefix>-h1`` … (:class:`~netmgr.labhost.SimHost`), each with a veth
  ``eth0`` on the underlay bridge at ``.11``, ``.12`` …, a default route via
  ``.1``, and a netmgrd started with ``--cluster-store``, ``--advertise-addr``
  and ``--node-name``.

:meth:`MultiHost.down` removes all of it, also after a failure. ``netmgr
lab`` (:mod:`netmgr.lab`) builds the same thing from a topology file for
people; this class is the lean version tests start many times.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid

from netmgr.labhost import NETNS_DIR, SimHost, make_underlay, plug_into_underlay
from netmgr.runtime import netns
from netmgr.testing.etcd import EtcdServer


class MultiHost:
    """``up()`` builds the cluster, ``down()`` removes it; a context manager."""

    def __init__(self, n: int = 2, subnet_prefix: str = "10.252.0", ttl: int = 3, prefix: str | None = None,
                 mtu: int = 1500) -> None:
        self.prefix = prefix or "nmm" + uuid.uuid4().hex[:5]
        self.base = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.net = subnet_prefix  # "10.252.0" → underlay 10.252.0.0/24
        self.gateway = f"{subnet_prefix}.1"
        self.n, self.ttl, self.mtu = n, ttl, mtu
        self.ul_path = os.path.join(NETNS_DIR, f"{self.prefix}-ul")
        self.ul = None  # the underlay namespace's handle
        self.bridge = 0  # the underlay bridge's index in it
        self.etcd: EtcdServer | None = None
        self.hosts: list[SimHost] = []

    def addr(self, i: int) -> str:
        """The underlay address of host ``i`` (0-based)."""
        return f"{self.net}.{11 + i}"

    def up(self) -> "MultiHost":
        """Underlay, etcd, hosts with their daemons; everything removed again on failure."""
        try:
            netns.ensure_ns_dir(NETNS_DIR)
            self.ul = netns.create(self.ul_path, sandbox=False)
            self.bridge = make_underlay(self.ul.nl, "ul0", [(self.gateway, 24)], self.mtu)
            self.etcd = EtcdServer(os.path.join(self.base, "etcd"), host=self.gateway, client_port=2379,
                                   peer_port=2380, netns=self.ul_path).start()
            for i in range(self.n):
                self.hosts.append(self.add_host(i))
        except BaseException:
            self.down()
            raise
        return self

    def daemon_args(self, i: int) -> tuple[str, ...]:
        """Flags of host ``i``'s netmgrd."""
        return ("--dns-upstream", "none", "--cluster-store", f"etcd://{self.gateway}:2379",
                "--advertise-addr", self.addr(i), "--node-name", f"h{i + 1}", "--cluster-ttl", str(self.ttl))

    def add_host(self, i: int) -> SimHost:
        """Host ``i``: namespace, underlay veth, daemon."""
        host = SimHost(f"h{i + 1}", self.base, self.daemon_args(i), netns_name=f"{self.prefix}-h{i + 1}")
        os.makedirs(host.dir, exist_ok=True)
        netns.create(host.netns_path, sandbox=False).close()
        try:
            plug_into_underlay(self.ul.nl, self.bridge, f"ul-h{i + 1}", host.netns_path, self.addr(i), 24,
                               self.gateway, self.mtu)
            host.start_daemon()
        except BaseException:
            host.down()
            raise
        return host

    def kill_host(self, i: int) -> None:
        """A host dies: its daemon is SIGKILLed and its namespace (with its containers' links) removed."""
        host = self.hosts[i]
        host.stop_daemon(signal.SIGKILL)
        host.down()

    def down(self) -> None:
        """Remove every host, etcd and the underlay (idempotent)."""
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.down()
        if self.etcd is not None:
            with contextlib.suppress(Exception):
                self.etcd.stop()
        if self.ul is not None:
            self.ul.close()
            self.ul = None
        netns.remove(self.ul_path)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "MultiHost":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()
