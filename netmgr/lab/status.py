"""``netmgr lab status`` and ``netmgr lab ls``: what a lab is made of and whether it is healthy.

Read from the lab's record plus live probes: each daemon's process (by its
recorded pid, checked against its command line), its API (networks and
containers, with a short deadline), and each etcd member's ``/health``
probed from inside the underlay namespace.
"""

from __future__ import annotations

import os
import time

from netmgr import errors
from netmgr.lab.state import LabRecord, list_names
from netmgr.testing.etcd import probe_health

__all__ = ["daemon_alive", "etcd_health", "lab_state", "ls_rows", "status_lines"]

PREDEFINED = {"bridge", "host", "none"}


def daemon_alive(rec: LabRecord, host: str) -> int | None:
    """The pid of ``host``'s netmgrd when it runs, else None."""
    role = f"netmgrd {host}"
    entry = next((p for p in rec.get("processes", []) if p["role"] == role), None)
    return _running(entry)


def _running(entry: dict | None) -> int | None:
    if not entry or not entry.get("pid"):
        return None
    pid = entry["pid"]
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return None
    return pid if entry["marker"] in cmdline and not zombie else None


def etcd_health(rec: LabRecord) -> list[tuple[str, str, bool]]:
    """(member, address, healthy) of each etcd member."""
    netns_path = rec.get("underlay", {}).get("netns")
    out = []
    for m in rec.get("etcd", {}).get("members", []):
        healthy = bool(netns_path) and os.path.exists(netns_path) and probe_health(m["client_url"], netns_path)
        out.append((m["name"], m["address"], healthy))
    return out


def lab_state(rec: LabRecord) -> str:
    """``up``, ``degraded`` (a daemon or etcd member is down), ``creating``, ``failed``, ``removing``."""
    status = rec.get("status", "failed")
    if status == "creating":
        pid = rec.get("tool_pid")
        return "creating" if pid and os.path.exists(f"/proc/{pid}") else "failed"
    if status != "up":
        return status
    dead = [h for h in rec.get("hosts", {}) if daemon_alive(rec, h) is None]
    dead += [p["role"] for p in rec.get("processes", []) if p["role"].startswith("etcd") and _running(p) is None]
    return "degraded" if dead else "up"


def ls_rows() -> list[dict]:
    """One row per lab: NAME STATE HOSTS ETCD CREATED TOPOLOGY."""
    rows = []
    for name in list_names():
        try:
            rec = LabRecord.open(name)
        except errors.NetmgrError:
            continue
        created = rec.get("created")
        rows.append({
            "NAME": name, "STATE": lab_state(rec), "HOSTS": str(len(rec.get("hosts", {}))),
            "ETCD": str(len(rec.get("etcd", {}).get("members", []))),
            "CREATED": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "-",
            "TOPOLOGY": rec.get("topology", "-"),
        })
    return rows


def status_lines(rec: LabRecord) -> list[str]:
    """The text ``netmgr lab status`` prints."""
    ul = rec.get("underlay", {})
    lines = [f"lab {rec.name}: {lab_state(rec)} (topology {rec.get('topology', '-')})"]
    if ul:
        lines.append(f"underlay: namespace {os.path.basename(ul['netns'])}, {ul['subnet']} gateway {ul['gateway']} "
                     f"MTU {ul['mtu']}, outside {ul['outside']}")
    members = etcd_health(rec)
    if members:
        lines.append("etcd: " + ", ".join(f"{n} {a}:2379 {'healthy' if ok else 'UNHEALTHY'}" for n, a, ok in members))
    rows = [_host_row(rec, name, h) for name, h in rec.get("hosts", {}).items()]
    if rows:
        from netmgr.cli.table import format_table

        lines.append("")
        cols = ["HOST", "NAMESPACE", "ADDRESS", "DAEMON", "NETWORKS", "CONTAINERS"]
        lines += format_table(cols, [[r[c] for c in cols] for r in rows]).rstrip("\n").splitlines()
    return lines


def _host_row(rec: LabRecord, name: str, host: dict) -> dict:
    pid = daemon_alive(rec, name)
    row = {"HOST": name, "NAMESPACE": os.path.basename(host["netns"]), "ADDRESS": host["address"],
           "DAEMON": f"running (pid {pid})" if pid else "DEAD", "NETWORKS": "-", "CONTAINERS": "-"}
    if pid is None:
        return row
    from netmgr.client import Client
    from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

    client = Client(f"unix://{host['socket']}", timeout=3)
    try:
        nets = client.documents("NetworkList", pb.ListRequest())
        ctrs = client.documents("ContainerList", pb.ListRequest(all=True))
    except errors.NetmgrError as exc:
        row["DAEMON"] += f", API: {exc.message}"
        return row
    finally:
        client.close()
    names = sorted(f"{n['Name']}({n['Driver']})" for n in nets if n["Name"] not in PREDEFINED)
    row["NETWORKS"] = ", ".join(names) or "-"
    row["CONTAINERS"] = ", ".join(sorted(f"{c['Name'].lstrip('/')}({c['State']['Status']})" for c in ctrs)) or "-"
    return row
