"""Row objects for the list commands: the fields Docker's ``--format`` offers.

``network ls`` rows have ``.ID .Name .Driver .Scope .IPv6 .Internal
.Labels .CreatedAt``; ``ps`` rows have ``.ID .Image .Command .CreatedAt
.RunningFor .Status .State .Ports .Names .Networks``. Values are strings,
as in Docker's ``{{json .}}`` of a row.
"""

from __future__ import annotations

import datetime as dt

NETWORK_COLUMNS = [("NETWORK ID", "{{.ID}}"), ("NAME", "{{.Name}}"), ("DRIVER", "{{.Driver}}"), ("SCOPE", "{{.Scope}}")]
NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
                   "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}
PS_COLUMNS = [("CONTAINER ID", "{{.ID}}"), ("IMAGE", "{{.Image}}"), ("COMMAND", "{{.Command}}"),
              ("CREATED", "{{.RunningFor}}"), ("STATUS", "{{.Status}}"), ("PORTS", "{{.Ports}}"),
              ("NAMES", "{{.Names}}")]
PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Status": "STATUS", "State": "STATE", "Ports": "PORTS", "Names": "NAMES",
              "Networks": "NETWORKS"}


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC3339 timestamp with up to nanoseconds."""
    base, _, frac = text.rstrip("Z").partition(".")
    stamp = dt.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return stamp + dt.timedelta(microseconds=int((frac + "000000")[:6])) if frac else stamp


def go_time(text: str) -> str:
    """``2026-11-28 06:24:54.094667103 +0000 UTC``, as Go prints a time.Time."""
    base, _, frac = text.rstrip("Z").partition(".")
    frac = frac.rstrip("0")  # Go's layout .999999999 drops trailing zeros
    return f"{base.replace('T', ' ')}.{frac} +0000 UTC" if frac else f"{base.replace('T', ' ')} +0000 UTC"


def human_duration(seconds: float) -> str:
    """Docker's go-units ``HumanDuration``."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)  # Go: int(d.Hours() + 0.5), not banker's rounding
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _ago(text: str, now: dt.datetime) -> float:
    return (now - parse_time(text)).total_seconds()


def network_row(doc: dict, no_trunc: bool = False) -> dict:
    """One ``network ls`` row."""
    return {
        "ID": doc["Id"] if no_trunc else doc["Id"][:12],
        "Name": doc["Name"],
        "Driver": doc["Driver"],
        "Scope": doc["Scope"],
        "IPv6": str(doc["EnableIPv6"]).lower(),
        "Internal": str(doc["Internal"]).lower(),
        "Labels": ",".join(f"{k}={v}" for k, v in (doc.get("Labels") or {}).items()),
        "CreatedAt": go_time(doc["Created"]),
    }


def ports_text(doc: dict) -> str:
    """``0.0.0.0:8080->80/tcp, 127.0.0.1:32768->81/udp``."""
    parts = []
    for key, bindings in (doc["NetworkSettings"].get("Ports") or {}).items():
        for b in bindings or []:
            parts.append(f"{b['HostIp']}:{b['HostPort']}->{key}")
    return ", ".join(parts)


def status_text(doc: dict, now: dt.datetime) -> str:
    """``Up 2 seconds``, ``Exited (7) 2 seconds ago`` or ``Created``."""
    st = doc["State"]
    if st["Status"] == "running":
        return "Up " + human_duration(_ago(st["StartedAt"], now))
    if st["Status"] == "exited":
        return f"Exited ({st['ExitCode']}) {human_duration(_ago(st['FinishedAt'], now))} ago"
    return st["Status"].capitalize()


def container_row(doc: dict, no_trunc: bool = False, now: dt.datetime | None = None) -> dict:
    """One ``ps`` row."""
    now = now or dt.datetime.now(dt.timezone.utc)
    argv = doc["Config"]["Cmd"]
    # the daemon's rule (container/view.go): only arguments with a space get single quotes
    cmd = " ".join(list(argv[:1]) + [f"'{a}'" if " " in a else a for a in argv[1:]])
    if not no_trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    rootfs = doc["Config"].get("Rootfs") or ""
    return {
        "ID": doc["Id"] if no_trunc else doc["Id"][:12],
        "Image": rootfs or "-",
        "Command": f'"{cmd}"',
        "CreatedAt": go_time(doc["Created"]),
        "RunningFor": human_duration(_ago(doc["Created"], now)) + " ago",
        "Status": status_text(doc, now),
        "State": doc["State"]["Status"],
        "Ports": ports_text(doc),
        "Names": doc["Name"].lstrip("/"),
        "Networks": ",".join(sorted(doc["NetworkSettings"]["Networks"])),
    }
