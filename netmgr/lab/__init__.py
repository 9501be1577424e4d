"""Multi-host labs on one machine: ``netmgr lab up|down|ls|status|exec|validate``.

* :mod:`netmgr.lab.topology` — the YAML topology: parsing and validation;
* :mod:`netmgr.lab.state` — the lab's record under ``/run/netmgr-labs/NAME/``;
* :mod:`netmgr.lab.runner` — ``up``: underlay, etcd, hosts, networks, containers;
* :mod:`netmgr.lab.teardown` — ``down``: removes everything, also after a crash;
* :mod:`netmgr.lab.status` — ``status`` and ``ls``;
* :mod:`netmgr.lab.checks` — ``validate``: ping / reach / no_reach from containers.
"""
