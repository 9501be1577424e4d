"""The remote driver: CNM driver calls served by a gRPC plugin (``proto/netmgr/plugin/v1``).

* :mod:`.client`: one plugin's channel, activation, health, deadlines, retries, error mapping;
* :mod:`.convert`: netmgr types ↔ protobuf messages, and the checks of every reply;
* :mod:`.driver`: :class:`RemoteDriver`, the :class:`~netmgr.drivers.base.NetworkDriver` adapter.

Discovery (which plugin is called NAME, and where) lives in :mod:`netmgr.plugins`.
"""

from netmgr.drivers.remote.client import DRIVER_SERVICE, IPAM_SERVICE, PluginClient
from netmgr.drivers.remote.driver import RemoteDriver

__all__ = ["DRIVER_SERVICE", "IPAM_SERVICE", "PluginClient", "RemoteDriver"]
