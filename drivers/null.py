"""The ``null`` driver: a sandbox with loopback only.

A real driver with nothing to do, like netavark's ``fwnone``: the core has
no special case for it. Docker allows one endpoint of the ``none`` network
per container and no other network beside it; the controller enforces that
through :attr:`Capability.no_interface`.
"""

from __future__ import annotations

from netmgr import errors
from netmgr.drivers.base import Capability, NetworkInfo, PassiveDriver


class NullDriver(PassiveDriver):
    """Endpoints get no interface; the sandbox keeps only ``lo``."""

    name = "null"

    def capability(self) -> Capability:
        """Local scope, no interface."""
        return Capability(scope="local", no_interface=True)

    def validate(self, net: NetworkInfo) -> None:
        """Only the predefined ``none`` network may use this driver (as in Docker)."""
        if not net.predefined:
            raise errors.Conflict("only one instance of \"null\" network is allowed")
