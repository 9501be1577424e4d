"""Plugins as separate processes on real sockets, for the remote-driver tests.

A plugin runs in the namespace that plays the host (``nsenter --net``), as it
would next to a real netmgrd, and is always stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import sys

from netmgr.testing.procs import PluginProc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MACVLAN = os.path.join(ROOT, "labs", "plugins", "macvlan", "plugin.py")
MISBEHAVE = os.path.join(ROOT, "tests", "privileged", "plugins", "misbehave.py")
NODE_IPAM = os.path.join(ROOT, "labs", "plugins", "node-ipam", "index.js")


def python_plugin(script: str, plugin_dir: str, name: str, netns_path: str | None, *extra: str) -> PluginProc:
    """A Python plugin (run with this interpreter, so it finds netmgr's SDK)."""
    argv = [sys.executable, script, "--plugin-dir", plugin_dir, "--name", name, *extra]
    return PluginProc(argv, netns_path, os.path.join(plugin_dir, f"{name}.sock"),
                      os.path.join(plugin_dir, f"{name}.log"), cwd=ROOT)


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
    return PluginProc(argv, None, os.path.join(plugin_dir, f"{name}.sock"), os.path.join(plugin_dir, f"{name}.log"),
                      cwd=ROOT)
