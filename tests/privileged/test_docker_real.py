"""Next to a real dockerd: its FORWARD policy DROP must not stop netmgr's traffic.

test_docker_coexist.py reproduces dockerd's iptables changes by hand; this
module starts Debian's real ``dockerd`` (package docker.io, installed by
scripts/setup.sh) inside a simulated host that already runs netmgrd with a
published port, and checks from a namespace playing another machine that
traffic still flows both ways once dockerd has set FORWARD to DROP.

dockerd only sets that policy when it is the one that turns IPv4 forwarding on
(libnetwork's setupIPForwarding), as on a machine where dockerd starts first.
The test reproduces that order by switching forwarding off in the simulated
host just before dockerd starts. dockerd's state (data root on the vfs driver,
exec root, socket, its own containerd) lives in a temporary directory, and its
bridge and rules live in the simulated host's namespace: all of it is gone
after the test.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from netmgr.labhost import SimHost
from netmgr.runtime import netns, sandbox
from netmgr.testing.procs import stop_group
from tests.conftest import unique
from tests.privileged.helpers import SERVER, request, server_argv, wait_for

pytestmark = pytest.mark.skipif(shutil.which("dockerd") is None, reason="dockerd (Debian's docker.io) not installed")

HOST_IP, OUTSIDE_IP = "10.198.7.1", "10.198.7.2"
PUBLISHED, OUTSIDE_PORT = 8093, 9093


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=2)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2)
        self.sock.connect(self.path)


def _docker_ping(sock_path: str) -> bool:
    conn = _UnixHTTP(sock_path)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture
def host_and_outside():
    """A simulated host with netmgrd, wired by a veth to a namespace playing another machine."""
    base = tempfile.mkdtemp(prefix="nmt-dkr-")
    host = SimHost(unique(), base).up()
    out_path = os.path.join(base, "nmt-dkr-outside")
    outside = netns.create(out_path, sandbox=False)
    handle = netns.open_handle(host.netns_path)
    try:
        handle.nl.add_veth("nmt-dkr-up", "eth0", outside.fd, up=True)
        handle.nl.add_addr(handle.nl.link_index("nmt-dkr-up"), HOST_IP, 24)
        sandbox.configure_interface(outside, "eth0", [f"{OUTSIDE_IP}/24"], gateway=HOST_IP)
        yield host, out_path
    finally:
        handle.close()
        outside.close()
        host.down()  # the namespace goes, with the veth and whatever dockerd made in it
        netns.remove(out_path)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def start_dockerd():
    """Start real dockerds in given namespaces; stop them (and their containerd) afterwards."""
    started: list[tuple[subprocess.Popen, str]] = []

    def start(netns_path: str) -> str:
        root = tempfile.mkdtemp(prefix="nmt-dockerd-")
        sock = os.path.join(root, "docker.sock")
        log = open(os.path.join(root, "dockerd.log"), "wb")
        proc = subprocess.Popen(
            ["nsenter", f"--net={netns_path}", "dockerd", "--host", f"unix://{sock}",
             "--data-root", os.path.join(root, "data"), "--exec-root", os.path.join(root, "exec"),
             "--pidfile", os.path.join(root, "docker.pid"), "--storage-driver", "vfs"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        started.append((proc, root))
        deadline = time.monotonic() + 60
        while not _docker_ping(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(root, "dockerd.log"), errors="replace") as f:
                    tail = f.read()[-3000:]
                pytest.fail(f"dockerd did not come up (exit {proc.poll()}):\n{tail}")
            time.sleep(0.2)
        return sock

    yield start
    for proc, root in started:
        stop_group(proc, 30)  # dockerd stops its own containerd
        subprocess.run(["umount", "-R", "-l", root], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _iptables(host: SimHost, *args: str) -> str:
    res = host.sh("iptables", *args)
    assert res.rc == 0, res.err
    return res.out


def test_traffic_flows_next_to_a_real_dockerd(host_and_outside, start_dockerd):
    host, outside = host_and_outside
    assert host.cli("network", "create", "--subnet", "10.62.0.0/24", "nmt-dkr").rc == 0
    argv = server_argv(host.dir, "tcp", 80, "nmt-dkrsrv")
    res = host.cli("run", "-d", "--name", "nmt-dkrsrv", "--network", "nmt-dkr", "-p", f"{PUBLISHED}:80", *argv)
    assert res.rc == 0, res.err
    sandbox_key = json.loads(host.cli("inspect", "nmt-dkrsrv").out)[0]["NetworkSettings"]["SandboxKey"]
    assert wait_for(lambda: request(outside, "tcp", HOST_IP, PUBLISHED, 0.5) == f"nmt-dkrsrv {OUTSIDE_IP}")

    # a server on the other machine, for the container's way out
    script = os.path.join(host.dir, "nmt-outside-server.py")
    with open(script, "w") as f:
        f.write(SERVER)
    server = subprocess.Popen(["nsenter", f"--net={outside}", sys.executable, script, "tcp", str(OUTSIDE_PORT),
                               "nmt-outside"])
    try:
        assert wait_for(lambda: request(outside, "tcp", OUTSIDE_IP, OUTSIDE_PORT, 0.5) is not None)
        # the way out is masqueraded: the outside sees the host's address
        assert request(sandbox_key, "tcp", OUTSIDE_IP, OUTSIDE_PORT) == f"nmt-outside {HOST_IP}"

        # dockerd starts where forwarding is off, turns it on and sets FORWARD to DROP
        assert host.sh("sysctl", "-qw", "net.ipv4.ip_forward=0").rc == 0
        start_dockerd(host.netns_path)
        assert "-P FORWARD DROP" in _iptables(host, "-S", "FORWARD")
        assert host.sh("sysctl", "-n", "net.ipv4.ip_forward").out.strip() == "1"
        assert "DOCKER-USER" in _iptables(host, "-S")

        # netmgrd noticed and let its bridges' traffic through DOCKER-USER, without a restart
        assert wait_for(lambda: "-i nm-+ -j ACCEPT" in _iptables(host, "-S", "DOCKER-USER")), \
            _iptables(host, "-S", "DOCKER-USER")
        assert request(outside, "tcp", HOST_IP, PUBLISHED) == f"nmt-dkrsrv {OUTSIDE_IP}"
        assert request(sandbox_key, "tcp", OUTSIDE_IP, OUTSIDE_PORT) == f"nmt-outside {HOST_IP}"
        # and a container started after dockerd works the same
        res = host.cli("run", "-d", "--name", "nmt-dkrsrv2", "--network", "nmt-dkr", "-p", f"{PUBLISHED + 1}:80",
                       *server_argv(host.dir, "tcp", 80, "nmt-dkrsrv2"))
        assert res.rc == 0, res.err
        assert wait_for(lambda: request(outside, "tcp", HOST_IP, PUBLISHED + 1, 0.5) == f"nmt-dkrsrv2 {OUTSIDE_IP}")
    finally:
        server.kill()
        server.wait()
