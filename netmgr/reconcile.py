"""Start-up reconciliation: make the kernel match the store.

After a restart, clean or SIGKILL, or a reboot, everything netmgr made is
rebuilt from its records: drivers restore their networks first (bridges,
the nftables table), then for every container the sandbox and each
endpoint are checked: what matches is adopted, what is missing is
re-created (same interface name, MAC and addresses), and what nobody owns
(sandbox namespaces here; veths on netmgr's bridges in the bridge driver's
``restore``) is removed.
"""

from __future__ import annotations

import logging
import os

from netmgr import errors
from netmgr.controller import Controller, driver_view, endpoint_view
from netmgr.drivers import resolve
from netmgr.drivers.base import SandboxInfo
from netmgr.model import Container, Endpoint
from netmgr.runtime import netns, sandbox

log = logging.getLogger("netmgr.reconcile")


def reconcile(ctl: Controller, containers: list[Container]) -> list[str]:
    """Repair the kernel after a restart; return what was done (for the log)."""
    done: list[str] = []
    owned = {c.sandbox_key for c in containers if c.sandbox_key}
    for name in sorted(os.listdir(ctl.ns_dir)):
        path = os.path.join(ctl.ns_dir, name)
        if path not in owned:
            netns.remove(path)
            done.append(f"removed orphan sandbox {name}")
    for ctr in containers:
        if not ctr.sandbox_key:
            continue
        if not os.path.exists(ctr.sandbox_key):
            done.append(_restore_sandbox(ctl, ctr))
        for ep in ctl.container_endpoints(ctr.id):
            try:
                if repair_endpoint(ctl, ctr, ep):
                    done.append(f"re-attached {ctr.name} ({ep.ifname})")
            except errors.NetmgrError as exc:
                log.warning("could not repair %s of %s: %s", ep.ifname, ctr.name, exc)
    for line in done:
        log.info("reconcile: %s", line)
    return done


def _restore_sandbox(ctl: Controller, ctr: Container) -> str:
    """A running container still holds its namespace: bind it again; otherwise make a new one."""
    if ctr.state.status == "running" and ctr.state.pid:
        try:
            ctl.handles[ctr.sandbox_key] = netns.attach(ctr.sandbox_key, ctr.state.pid)
            return f"re-attached the sandbox of {ctr.name} from pid {ctr.state.pid}"
        except errors.NetmgrError:
            pass  # the process is gone after all
    ctl.handles[ctr.sandbox_key] = netns.create(ctr.sandbox_key)
    return f"re-created the sandbox of {ctr.name}"


def repair_endpoint(ctl: Controller, ctr: Container, ep: Endpoint) -> bool:
    """Adopt an intact endpoint; re-join a broken one. True when it had to be re-joined."""
    net = ctl.networks.get(ep.network_id)
    if net is None or not ep.ifname:
        return False
    driver = resolve(ctl.drivers, net.driver)
    handle = ctl.handle(ctr.sandbox_key)
    in_sandbox = handle.nl.link_index(ep.ifname) is not None
    if in_sandbox and driver.restore_endpoint(driver_view(net), endpoint_view(ep)):
        return False
    sb = SandboxInfo(ctr.id, handle, ep.ifname)
    driver.leave(driver_view(net), endpoint_view(ep), sb)
    sandbox.remove_interface(handle, ep.ifname)
    join = driver.join(driver_view(net), endpoint_view(ep), sb)
    addrs = [a for a in (ep.ipv4, ep.ipv6) if a]
    sandbox.configure_interface(handle, ep.ifname, addrs, ep.gateway, ep.gateway6, join.static_routes)
    return True
