"""Names of the kernel objects a lab makes.

Everything outside the lab's own namespaces carries the lab's name:
namespaces are ``nml-LAB-ul`` (the underlay) and ``nml-LAB-HOST``; files
live under ``/run/netmgr-labs/LAB/``. Interfaces live inside the lab's
namespaces only, so their short names never clash between labs.
"""

from __future__ import annotations

PREFIX = "nml"
UNDERLAY_BRIDGE = "br0"
OUTSIDE_BRIDGE = "outside"


def underlay_netns(lab: str) -> str:
    """The underlay namespace's name (under /run/netns)."""
    return f"{PREFIX}-{lab}-ul"


def host_netns(lab: str, host: str) -> str:
    """A simulated host's namespace name (under /run/netns)."""
    return f"{PREFIX}-{lab}-{host}"


def underlay_port(host: str) -> str:
    """The underlay-side end of a host's veth (its eth0), a port of the underlay bridge."""
    return f"v-{host}"
