"""A real etcd for tests and labs: :class:`EtcdServer` (one member) and :class:`EtcdCluster` (n).

Each member is ``/usr/bin/etcd`` (Debian's etcd-server) listening on free
127.0.0.1 client and peer ports, with its data and log under ``data_dir``::

    with EtcdServer(tmp_dir) as etcd:
        store = EtcdStore(etcd.url)          # "etcd://127.0.0.1:PORT"

``pause()``/``resume()`` send SIGSTOP/SIGCONT: the member keeps its sockets
open but answers nothing, which is what an unreachable etcd looks like to a
client (requests time out rather than being refused). ``kill()`` simulates a
crash and keeps the data, so ``start()`` brings the same member back on the
same ports. ``stop()`` ends the process and removes ``data_dir``.

etcd is started through util-linux ``setpriv --pdeathsig KILL`` (when
present), so it never outlives the test process that started it, even when
that process is killed. (The kernel sends that signal when the *thread* that
started etcd exits: start it from a thread that lives as long as you need it.)
A ``preexec_fn`` doing the prctl would be unsafe in a process with threads,
and the store's gRPC threads are there.

Labs run etcd inside a network namespace of their own and let it outlive the
tool that started it: ``netns=PATH`` starts the member through ``nsenter
--net=PATH`` (and probes its health from inside that namespace), and
``detach=True`` drops the parent-death signal and starts a new session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

__all__ = ["ETCD_BINARY", "EtcdServer", "EtcdCluster", "free_port", "probe_health"]

ETCD_BINARY = "/usr/bin/etcd"
SETPRIV = "/usr/bin/setpriv"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def probe_health(client_url: str, netns_path: str | None = None, timeout: float = 1.0) -> bool:
    """``GET CLIENT_URL/health`` says healthy; from inside the namespace at ``netns_path`` if given."""

    def probe() -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{client_url}/health", timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}").get("health") == "true"
        except (OSError, ValueError):
            return False

    if netns_path is None:
        return probe()
    from netmgr.runtime import netns  # the socket is opened on a thread inside the namespace

    try:
        return netns.run_in(netns_path, probe)
    except OSError:
        return False


class EtcdServer:
    """One etcd member on 127.0.0.1; a context manager that starts and stops it.

    For a member of a larger cluster pass ``name``, ``peer_port`` and the
    shared ``initial_cluster`` (``"n0=http://127.0.0.1:P0,n1=…"``) and
    ``cluster_token``; :class:`EtcdCluster` does that for you.
    """

    def __init__(
        self,
        data_dir: str,
        *,
        name: str = "default",
        host: str = "127.0.0.1",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        binary: str = ETCD_BINARY,
        start_timeout: float = 30.0,
        netns: str | None = None,
        detach: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token or f"nmt-{uuid.uuid4().hex[:12]}"
        self.binary = binary
        self.start_timeout = start_timeout
        #: a network namespace (bind-mounted file) to run in; None: the caller's
        self.netns = netns
        #: True: no parent-death signal and a session of its own (outlives its starter)
        self.detach = detach
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- addresses ---------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"``: the client address."""
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        """``"etcd://127.0.0.1:PORT"``: what ``--cluster-store`` and :class:`EtcdStore` accept."""
        return f"etcd://{self.endpoint}"

    @property
    def client_url(self) -> str:
        """``"http://127.0.0.1:PORT"``: the client URL etcd listens on."""
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        """``"http://127.0.0.1:PEERPORT"``: the raft peer URL."""
        return f"http://{self.host}:{self.peer_port}"

    @property
    def log_path(self) -> str:
        """etcd's stdout and stderr (kept until :meth:`stop` removes ``data_dir``)."""
        return os.path.join(self.data_dir, "etcd.log")

    # -- lifecycle ---------------------------------------------------------------

    def command(self) -> list[str]:
        """The etcd command line."""
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", os.path.join(self.data_dir, "data"),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.cluster_token,
            "--initial-cluster-state", "new",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]

    def start(self, wait: bool = True) -> "EtcdServer":
        """Start the member (again, after :meth:`kill`); with ``wait``, return once it answers."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not os.path.exists(self.binary):
            raise FileNotFoundError(f"{self.binary} not found (Debian package etcd-server)")
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self._log = open(self.log_path, "ab")
        # ETCD_* variables from the caller's environment would override our flags
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        wrapper = [SETPRIV, "--pdeathsig", "KILL", "--"] if os.path.exists(SETPRIV) and not self.detach else []
        if self.netns:
            wrapper = ["nsenter", f"--net={self.netns}", *wrapper]
        self.proc = subprocess.Popen(  # nsenter and setpriv exec etcd: the pid is etcd's
            wrapper + self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=self.detach,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until ``GET /health`` says healthy (a leader exists); raise with the log tail if not."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"etcd {self.name} exited during start:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.05)
        raise TimeoutError(f"etcd {self.name} at {self.endpoint} not healthy after start:\n{self.log_tail()}")

    def healthy(self) -> bool:
        """One health probe: ``GET http://HOST:PORT/health`` (no proxy; inside ``netns`` if set)."""
        return probe_health(self.client_url, self.netns)

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP: the member stays connected but answers nothing (an unreachable etcd).

        Returns once every thread of etcd is stopped, so no request sent afterwards is served
        before :meth:`resume` (requests are then served: a write that timed out may still apply).
        """
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not self._all_threads_stopped():
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd {self.name} did not stop after SIGSTOP")
            time.sleep(0.005)

    def _all_threads_stopped(self) -> bool:
        task_dir = f"/proc/{self.proc.pid}/task"
        try:
            for tid in os.listdir(task_dir):
                with open(f"{task_dir}/{tid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                        return False
        except FileNotFoundError:
            return False  # a thread came or went: look again
        return True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (a crash); the data stays, :meth:`start` restarts the member on the same ports."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; then remove ``data_dir``."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.proc = None
        self._close_log()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines etcd printed (for error messages)."""
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"etcd {self.name} is not running")
        self.proc.send_signal(sig)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "EtcdServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EtcdServer({self.name!r}, {self.endpoint})"


class EtcdCluster:
    """``n`` etcd members on 127.0.0.1 forming one cluster; a context manager.

    ``members[i]`` is an :class:`EtcdServer` (pause or kill one to test
    quorum loss); :attr:`url` lists every client endpoint.
    """

    def __init__(self, base_dir: str, n: int = 3, start_timeout: float = 30.0) -> None:
        token = f"nmt-{uuid.uuid4().hex[:12]}"
        peers = [(f"n{i}", free_port()) for i in range(n)]
        initial = ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in peers)
        self.members = [
            EtcdServer(os.path.join(base_dir, name), name=name, peer_port=port, initial_cluster=initial,
                       cluster_token=token, start_timeout=start_timeout)
            for name, port in peers
        ]

    @property
    def endpoints(self) -> list[str]:
        """Every member's ``"127.0.0.1:PORT"``."""
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """``"etcd://127.0.0.1:P0,127.0.0.1:P1,…"``."""
        return "etcd://" + ",".join(self.endpoints)

    def start(self) -> "EtcdCluster":
        """Start every member, then wait until each reports a leader."""
        try:
            for m in self.members:  # all at once: none becomes healthy before a quorum is up
                m.start(wait=False)
            for m in self.members:
                m.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every member and remove their data."""
        for m in self.members:
            m.stop()

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
