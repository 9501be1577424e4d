"""The ``host`` driver: the endpoint shares the host's network namespace.

No interface is created; a container on ``host`` runs in the daemon's own
network namespace (in a lab, the simulated host's).
"""

from __future__ import annotations

from netmgr import errors
from netmgr.drivers.base import Capability, NetworkInfo, PassiveDriver


class HostDriver(PassiveDriver):
    """Endpoints live in the host's namespace."""

    name = "host"

    def capability(self) -> Capability:
        """Local scope, the host's own namespace."""
        return Capability(scope="local", shares_host_netns=True, no_interface=True)

    def validate(self, net: NetworkInfo) -> None:
        """Only the predefined ``host`` network may use this driver (as in Docker)."""
        if not net.predefined:
            raise errors.Conflict("only one instance of \"host\" network is allowed")
