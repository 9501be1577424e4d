"""A simulated host: a network namespace of our own with its own netmgrd.

Tests, labs and benchmarks all run netmgr this way, so nothing they do
touches the machine's own namespace: the bridges, the nftables table and
``ip_forward`` live in the simulated host's namespace and vanish with it.

The daemon is started with ``nsenter --net=…`` rather than ``ip netns
exec``: the latter also remounts /sys for the namespace, which hides the
cgroup hierarchies the container runtime needs.

:meth:`SimHost.down` removes everything the host made, also after a
failure: containers (through the daemon, then by killing any shim left
under its state dir), the daemon, the namespace and the directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from netmgr.runtime import netns

NETNS_DIR = "/run/netns"  # iproute2's, so `ip netns exec NAME` works for people debugging a lab


@dataclass
class Result:
    """What a CLI call printed and returned."""

    rc: int
    out: str
    err: str


class SimHost:
    """One simulated host: ``up()`` creates it, ``down()`` removes all of it."""

    def __init__(self, name: str, base_dir: str, daemon_args: tuple[str, ...] = ("--dns-upstream", "none"),
                 netns_name: str | None = None) -> None:
        self.name = name
        self.dir = os.path.join(base_dir, name)
        #: the namespace's name under /run/netns (default: the host's name; labs prefix it)
        self.netns_path = os.path.join(NETNS_DIR, netns_name or name)
        self.state_dir = os.path.join(self.dir, "state")
        self.run_dir = os.path.join(self.dir, "run")
        self.socket = os.path.join(self.run_dir, "netmgr.sock")
        #: by default the embedded DNS forwards nowhere: a lab never queries the machine's resolver
        self.daemon_args = daemon_args
        self.proc: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------

    def up(self, timeout: float = 15.0) -> "SimHost":
        """Create the namespace (loopback up) and start the daemon; wait for its socket."""
        os.makedirs(self.dir, exist_ok=True)
        netns.ensure_ns_dir(NETNS_DIR)
        netns.create(self.netns_path, sandbox=False).close()
        try:
            self.start_daemon(timeout)
        except BaseException:
            self.down()
            raise
        return self

    def start_daemon(self, timeout: float = 15.0) -> None:
        """Start (or restart) netmgrd inside the namespace."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)  # a killed daemon leaves its socket: wait for the new one
        log = open(os.path.join(self.dir, "netmgrd.log"), "ab")
        cmd = ["nsenter", f"--net={self.netns_path}", sys.executable, "-m", "netmgr.daemon.main",
               "--state-dir", self.state_dir, "--run-dir", self.run_dir, "--nft-table", "netmgr",
               *self.daemon_args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                raise RuntimeError(f"netmgrd on {self.name} exited: {self.daemon_log()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"netmgrd on {self.name} did not start: {self.daemon_log()[-2000:]}")
            time.sleep(0.02)

    def stop_daemon(self, sig: int = signal.SIGTERM) -> None:
        """Stop the daemon (SIGKILL to simulate a crash); containers keep running."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def down(self) -> None:
        """Remove every container, the daemon, the namespace and the directories."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.cli("ps", "-aq", "--no-trunc", timeout=20).out.split()
                if ids:
                    self.cli("rm", "-f", *ids, timeout=60)
        self.stop_daemon()
        kill_shims_under(self.state_dir)
        remove_cgroups_of(self.state_dir)
        with contextlib.suppress(OSError):
            subprocess.run(["umount", "-l", os.path.join(self.run_dir, "netns")], capture_output=True)
        for path in _netns_files(os.path.join(self.run_dir, "netns")):
            netns.remove(path)
        netns.remove(self.netns_path)
        shutil.rmtree(self.dir, ignore_errors=True)

    def daemon_log(self) -> str:
        """The daemon's output so far."""
        try:
            with open(os.path.join(self.dir, "netmgrd.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- using it ------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60, input: str | None = None) -> Result:
        """Run ``netmgr -H <this host> ARGS`` (the CLI needs no namespace: the socket is a file)."""
        cmd = [sys.executable, "-m", "netmgr.cli.main", "-H", f"unix://{self.socket}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def sh(self, *cmd: str, timeout: float = 30) -> Result:
        """Run a command in the host's namespace (not in a container)."""
        proc = subprocess.run(["nsenter", f"--net={self.netns_path}", *cmd], capture_output=True, text=True,
                              timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def client(self):
        """A gRPC client of this host's daemon."""
        from netmgr.client import Client

        return Client(f"unix://{self.socket}")


def fixed_mac() -> str:
    """A random locally administered unicast MAC, for a bridge that must keep its own.

    A bridge without one takes its lowest port's MAC, which changes as ports are
    added; hosts that resolved an address on it earlier keep sending to the old one.
    """
    return "02:4e:" + os.urandom(4).hex(":")


def make_underlay(nl, bridge: str, addresses: list[tuple[str, int]], mtu: int | None = None) -> int:
    """An underlay bridge (fixed MAC, ``addresses`` as (ip, prefixlen), up) in ``nl``'s namespace."""
    index = nl.add_bridge(bridge, mtu=mtu, mac=fixed_mac())
    for ip, plen in addresses:
        nl.add_addr(index, ip, plen)
    nl.set_link(index, up=True)
    return index


def plug_into_underlay(ul_nl, bridge_index: int, port: str, host_netns_path: str, address: str, plen: int,
                       gateway: str, mtu: int | None = None) -> None:
    """A host namespace's ``eth0`` on the underlay bridge: a veth made in place, address, default route."""
    from netmgr.runtime import sandbox

    handle = netns.open_handle(host_netns_path)
    try:
        ul_nl.add_veth(port, "eth0", handle.fd, mtu=mtu, master=bridge_index, up=True)
        sandbox.configure_interface(handle, "eth0", [f"{address}/{plen}"], gateway=gateway)
    finally:
        handle.close()


def _netns_files(directory: str) -> list[str]:
    try:
        return [os.path.join(directory, n) for n in os.listdir(directory)]
    except FileNotFoundError:
        return []


def kill_shims_under(state_dir: str) -> None:
    """SIGKILL every container shim (and its container) whose state lives under ``state_dir``."""
    marker = os.path.abspath(state_dir)
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        # the shim runs as ``python -I -S -c "…import shim…" DIR SPEC`` (runtime/container.py), SPEC under the state dir
        if ("import shim;" in cmdline or "netmgr.runtime.shim" in cmdline) and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
    containers = os.path.join(state_dir, "containers")
    for cid in os.listdir(containers) if os.path.isdir(containers) else []:
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(containers, cid, "pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)


def remove_cgroups_of(state_dir: str) -> None:
    """Remove the cgroup directories of containers recorded under ``state_dir`` (best effort)."""
    containers = os.path.join(state_dir, "containers")
    ids = os.listdir(containers) if os.path.isdir(containers) else []
    for root, dirs, _files in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d in ids:
                for _ in range(20):
                    try:
                        os.rmdir(os.path.join(root, d))
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)
        if root.count("/") > 6:
            dirs[:] = []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]
