"""Plugins as separate processes on real sockets, for the remote-driver tests.

A plugin runs in the namespace that plays the host (``nsenter --net``), as it
would next to a real netmgrd, and is always stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MACVLAN = os.path.join(ROOT, "labs", "plugins", "macvlan", "plugin.py")
MISBEHAVE = os.path.join(ROOT, "tests", "privileged", "plugins", "misbehave.py")
NODE_IPAM = os.path.join(ROOT, "labs", "plugins", "node-ipam", "index.js")


class PluginProc:
    """One plugin process: ``start()`` waits for its socket, ``stop()`` ends it by pid."""

    def __init__(self, argv: list[str], netns_path: str | None, socket: str, log_path: str) -> None:
        self.argv = argv
        self.netns_path = netns_path
        self.socket = socket
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> PluginProc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        cmd = (["nsenter", f"--net={self.netns_path}"] if self.netns_path else []) + self.argv
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=ROOT)
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
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def python_plugin(script: str, plugin_dir: str, name: str, netns_path: str | None, *extra: str) -> PluginProc:
    """A Python plugin (run with this interpreter, so it finds netmgr's SDK)."""
    argv = [sys.executable, script, "--plugin-dir", plugin_dir, "--name", name, *extra]
    return PluginProc(argv, netns_path, os.path.join(plugin_dir, f"{name}.sock"),
                      os.path.join(plugin_dir, f"{name}.log"))


def node_available() -> str | None:
    """Why the Node.js plugin cannot run here (node is absent), or None when it can.

    With node present but the plugin's packages missing the tests fail (not skip): setup.sh
    installs them.
    """
    if shutil.which("node") is None:
        return "node is not installed (scripts/setup.sh installs it)"
    modules = os.path.join(os.path.dirname(NODE_IPAM), "node_modules", "@grpc", "grpc-js")
    if not os.path.isdir(modules):
        raise RuntimeError("labs/plugins/node-ipam/node_modules is missing: run scripts/setup.sh "
                           "(or `npm ci` in labs/plugins/node-ipam)")
    return None


def node_ipam(plugin_dir: str, name: str, state_file: str, *extra: str) -> PluginProc:
    """The Node.js IPAM plugin (needs no namespace: it makes no kernel changes)."""
    argv = ["node", NODE_IPAM, "--plugin-dir", plugin_dir, "--name", name, "--state", state_file, *extra]
    return PluginProc(argv, None, os.path.join(plugin_dir, f"{name}.sock"), os.path.join(plugin_dir, f"{name}.log"))
