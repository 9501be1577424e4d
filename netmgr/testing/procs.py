"""Helper processes for tests, labs and benchmarks: plugins on sockets, stopped by process group.

Each process is started in a session of its own (``start_new_session``), so
stopping it reaches everything it started (``nsenter`` and the program under
it, dockerd and its containerd).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the process group of ``proc`` (its own session), then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class PluginProc:
    """One plugin process: ``start()`` waits for its socket, ``stop()`` ends it by pid."""

    def __init__(self, argv: list[str], netns_path: str | None, socket: str, log_path: str,
                 cwd: str | None = None) -> None:
        self.argv = argv
        self.netns_path = netns_path  # run under ``nsenter --net`` (None: this namespace)
        self.socket = socket
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> PluginProc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        cmd = (["nsenter", f"--net={self.netns_path}"] if self.netns_path else []) + self.argv
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=self.cwd)
        log.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin {self.argv} exited {self.proc.returncode}: {self.log()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"plugin {self.argv} did not create {self.socket}: {self.log()[-2000:]}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL (a crash): the socket file stays behind, as it would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL), and remove the socket."""
        if self.proc:
            stop_group(self.proc)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""
