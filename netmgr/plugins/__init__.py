"""Remote plugins: discovery in the plugin directory, the registry, remote IPAM, and the SDK.

* :mod:`.discovery`: ``NAME.sock`` / ``NAME.spec`` / ``NAME.json`` in ``--plugin-dir``;
* :mod:`.registry`: :class:`PluginRegistry`, lazy activation, ``plugin ls``;
* :mod:`.ipam`: :class:`IpamRouter`, the controller's IPAM that sends the
  address requests of ``--ipam-driver NAME`` networks to a plugin;
* :mod:`.sdk`: write a plugin in Python in a few lines.

The gRPC client and the driver adapter are in :mod:`netmgr.drivers.remote`.
"""
