"""Living next to dockerd: accept netmgr's traffic in Docker's DOCKER-USER chain.

dockerd sets the iptables FORWARD policy to DROP. Every base chain on a
hook must accept a packet, so netmgr's own accept is not enough: when the
``DOCKER-USER`` chain exists (dockerd made it), netmgr inserts accepts for
its bridges there, with the ``iptables`` tools (so iptables keeps being
able to list the table). The rule count is constant: ``nm-+`` covers every
bridge netmgr names; only bridges named with
``com.docker.network.bridge.name`` get rules of their own.
"""

from __future__ import annotations

import shutil
import subprocess

CHAIN = "DOCKER-USER"
PATTERN = "nm-+"


def _run(netns_path: str | None, tool: str, *args: str) -> bool:
    prefix = ["nsenter", f"--net={netns_path}"] if netns_path else []
    try:
        return subprocess.run([*prefix, tool, "-w", "5", *args], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure(bridges: list[str], netns_path: str | None = None) -> list[str]:
    """Make sure DOCKER-USER (if any) accepts traffic of ``bridges``; return the rules added.

    ``netns_path``: the host's namespace when it is not the daemon's own (tests).
    """
    added = []
    patterns = [PATTERN] + [b for b in bridges if not b.startswith("nm-")]
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None or not _run(netns_path, tool, "-t", "filter", "-S", CHAIN):
            continue
        for name in patterns:
            for direction in ("-i", "-o"):
                rule = (direction, name, "-j", "ACCEPT")
                if not _run(netns_path, tool, "-t", "filter", "-C", CHAIN, *rule):
                    if _run(netns_path, tool, "-t", "filter", "-I", CHAIN, *rule):
                        added.append(f"{tool} -I {CHAIN} {' '.join(rule)}")
    return added


def remove(bridges: list[str], netns_path: str | None = None) -> None:
    """Take netmgr's rules out of DOCKER-USER again (daemon cleanup, tests)."""
    patterns = [PATTERN] + [b for b in bridges if not b.startswith("nm-")]
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for name in patterns:
            for direction in ("-i", "-o"):
                while _run(netns_path, tool, "-t", "filter", "-D", CHAIN, direction, name, "-j", "ACCEPT"):
                    pass
