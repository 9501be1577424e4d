"""Network drivers and their registry.

``BUILTIN`` is the one explicit registry (no entry points, no registration
as a side effect of import). :func:`make_drivers` builds the driver objects
a controller uses; a name that is not built in resolves to a remote plugin
(:class:`DriverTable` carries the plugin registry, :mod:`netmgr.plugins`) or
raises :class:`~netmgr.errors.DriverNotFound`.
"""

from __future__ import annotations

from netmgr import errors
from netmgr.drivers.base import HostEnv, NetworkDriver
from netmgr.drivers.bridge import BridgeDriver
from netmgr.drivers.host import HostDriver
from netmgr.drivers.null import NullDriver
from netmgr.drivers.overlay import OverlayDriver

BUILTIN = {
    "bridge": BridgeDriver,
    "host": HostDriver,
    "null": NullDriver,
    "overlay": OverlayDriver,
}


def make_drivers(env: HostEnv, cluster=None, advertise_addr: str = "") -> dict[str, NetworkDriver]:
    """One instance of each built-in driver bound to the host's handles (and the cluster, if any)."""
    return {
        "bridge": BridgeDriver(env),
        "host": HostDriver(),
        "null": NullDriver(),
        "overlay": OverlayDriver(env, cluster, advertise_addr),
    }


class DriverTable(dict):
    """The built-in drivers by name, plus the plugin registry (:mod:`netmgr.plugins`) for other names."""

    def __init__(self, builtin: dict[str, NetworkDriver], plugins=None) -> None:
        super().__init__(builtin)
        self.plugins = plugins


def resolve(drivers: dict[str, NetworkDriver], name: str) -> NetworkDriver:
    """The driver called ``name``: built in, else a remote plugin; Docker's wording when there is none."""
    driver = drivers.get(name)
    if driver is None:
        plugins = getattr(drivers, "plugins", None)
        if plugins is not None:
            return plugins.network_driver(name)  # DriverNotFound when no plugin has that name
        raise errors.DriverNotFound(f'plugin "{name}" not found')
    return driver
