"""Docker-shaped JSON documents for ``inspect`` and the list commands.

Key order and empty-value conventions follow ``docker network inspect`` and
``docker inspect`` (20.10, recorded in docs/docker-reference.md), so scripts
and ``--format`` templates written for Docker work unchanged.
"""

from __future__ import annotations

from netmgr.model import Container, Endpoint, Network


def _ipam_config(net: Network) -> list[dict]:
    out = []
    for pool in net.pools:
        entry = {"Subnet": pool.subnet}
        if pool.ip_range:
            entry["IPRange"] = pool.ip_range
        if pool.gateway and not net.predefined:
            entry["Gateway"] = pool.gateway
        if pool.aux:
            entry["AuxiliaryAddresses"] = dict(sorted(pool.aux.items()))
        out.append(entry)
    return out


def network_doc(net: Network, endpoints: list[Endpoint]) -> dict:
    """``docker network inspect`` for one network."""
    containers = {}
    for ep in sorted(endpoints, key=lambda e: e.container_id):
        containers[ep.container_id] = {
            "Name": ep.name,
            "EndpointID": ep.id,
            "MacAddress": ep.mac,
            "IPv4Address": ep.ipv4,
            "IPv6Address": ep.ipv6,
        }
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": net.driver,
        "EnableIPv6": net.ipv6,
        "IPAM": {
            "Driver": net.ipam_driver,
            "Options": None if net.predefined else dict(net.ipam_options),
            "Config": _ipam_config(net),
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": dict(sorted(net.options.items())),
        "Labels": dict(sorted(net.labels.items())),
    }


def _endpoint_settings(ep: Endpoint, net: Network | None, at_run: bool) -> dict:
    addr, _, plen = ep.ipv4.partition("/")
    addr6, _, plen6 = ep.ipv6.partition("/")
    ipam: dict | None = {}
    if ep.static_ipv4 or ep.static_ipv6:
        ipam = {k: v for k, v in (("IPv4Address", ep.static_ipv4), ("IPv6Address", ep.static_ipv6)) if v}
    elif at_run:
        ipam = None
    return {
        "IPAMConfig": ipam,
        "Links": None,
        "Aliases": list(ep.aliases) + [ep.container_id[:12]] if net and not net.predefined else None,
        "NetworkID": ep.network_id,
        "EndpointID": ep.id,
        "Gateway": ep.gateway,
        "IPAddress": addr,
        "IPPrefixLen": int(plen or 0),
        "IPv6Gateway": ep.gateway6,
        "GlobalIPv6Address": addr6,
        "GlobalIPv6PrefixLen": int(plen6 or 0),
        "MacAddress": ep.mac,
        "DriverOpts": None if at_run else {},
    }


def network_settings(ctr: Container, endpoints: list[Endpoint], networks: dict[str, Network]) -> dict:
    """The ``NetworkSettings`` block of ``docker inspect``."""
    nets = {}
    default = None
    for ep in endpoints:
        net = networks.get(ep.network_id)
        name = net.name if net else ep.network_id
        at_run = ctr.config.network_mode in (name, ep.network_id)
        nets[name] = _endpoint_settings(ep, net, at_run)
        if name == "bridge":
            default = nets[name]
    top = default or {}
    ports: dict[str, list] = {}
    for ep in endpoints:
        for p in ep.ports:
            hosts = [p.host_ip] if p.host_ip else (["0.0.0.0", "::"] if ep.ipv6 else ["0.0.0.0"])
            for host in hosts:
                ports.setdefault(f"{p.container_port}/{p.protocol}", []).append(
                    {"HostIp": host, "HostPort": str(p.host_port)})
    return {
        "Bridge": "",
        "SandboxID": ctr.id if ctr.sandbox_key else "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports,
        "SandboxKey": ctr.sandbox_key,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": top.get("EndpointID", ""),
        "Gateway": top.get("Gateway", ""),
        "GlobalIPv6Address": top.get("GlobalIPv6Address", ""),
        "GlobalIPv6PrefixLen": top.get("GlobalIPv6PrefixLen", 0),
        "IPAddress": top.get("IPAddress", ""),
        "IPPrefixLen": top.get("IPPrefixLen", 0),
        "IPv6Gateway": top.get("IPv6Gateway", ""),
        "MacAddress": top.get("MacAddress", ""),
        "Networks": dict(sorted(nets.items())),
    }


def container_doc(ctr: Container, endpoints: list[Endpoint], networks: dict[str, Network]) -> dict:
    """``docker inspect`` for one container (the parts netmgr has)."""
    cfg = ctr.config
    st = ctr.state
    return {
        "Id": ctr.id,
        "Created": ctr.created,
        "Path": cfg.argv[0] if cfg.argv else "",
        "Args": list(cfg.argv[1:]),
        "State": {
            "Status": st.status,
            "Running": st.status == "running",
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": "",
            "StartedAt": st.started_at,
            "FinishedAt": st.finished_at,
        },
        "Name": "/" + ctr.name,
        "HostConfig": {
            "NetworkMode": cfg.network_mode,
            "AutoRemove": cfg.auto_remove,
            "PortBindings": {f"{p.container_port}/{p.protocol}": [{"HostIp": p.host_ip, "HostPort": str(p.host_port or "")}]
                             for p in cfg.ports},
            "Binds": [f"{s}:{d}" + (":ro" if ro else "") for s, d, ro in cfg.volumes] or None,
            "Memory": cfg.memory,
            "NanoCpus": int(cfg.cpus * 1e9),
            "PidsLimit": cfg.pids_limit or None,
        },
        "Config": {
            "Hostname": cfg.hostname,
            "Env": [f"{k}={v}" for k, v in cfg.env],
            "Cmd": list(cfg.argv),
            "WorkingDir": cfg.workdir,
            "Rootfs": cfg.rootfs,
        },
        "NetworkSettings": network_settings(ctr, endpoints, networks),
    }
