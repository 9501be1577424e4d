"""``netmgr run/exec/ps/start/stop/rm/inspect/logs/port``."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from netmgr import errors
from netmgr.cli import rows
from netmgr.cli.argv import command
from netmgr.cli.output import print_inspect, print_list
from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# go-units sizeRegex: digits, an optional space, an optional unit, an optional "i", an optional "b"
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?", re.ASCII)


_INT64_MAX = (1 << 63) - 1


def parse_int64(text: str) -> int:
    """An argparse type: a signed 64-bit integer, in Go's strconv.ParseInt words when it is not one."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": strconv.ParseInt: parsing "{text}": '
                                         "invalid syntax") from None
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": strconv.ParseInt: parsing "{text}": '
                                         "value out of range")
    return value


def parse_pids_limit(text: str) -> int:
    """``--pids-limit``: as Docker, -1 (any negative value) means unlimited, which is also the default (0)."""
    return max(parse_int64(text), 0)


def parse_bytes(text: str) -> int:
    """``512m``, ``1g``, ``1048576`` → bytes (Docker's RAMInBytes); at most 2^63-1."""
    match = _SIZE_RE.fullmatch(text)
    try:
        value = float(match.group(1)) if match else None
    except ValueError:  # "1.2.3" passes the regex, as in Go, and fails here
        value = None
    if value is None:
        raise errors.InvalidConfig(f"invalid size: '{text}'")
    size = value * _UNITS[(match.group(2) or "").lower()]
    if size > _INT64_MAX:
        raise errors.InvalidConfig(f"invalid size: '{text}': value out of range")
    return int(size)


def parse_publish(spec: str) -> list[pb.PortMapping]:
    """``[IP:][HOST:]CTR[/proto]`` and ranges ``8000-8001:80-81``."""
    spec, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise errors.InvalidConfig(f"invalid proto: {proto}")
    parts = spec.rsplit(":", 2)
    ip, host, ctr = ("", "", parts[0]) if len(parts) == 1 else (("", *parts) if len(parts) == 2 else parts)
    ctr_range, host_range = _port_range(ctr, spec), _port_range(host, spec) if host else None
    if host_range and len(host_range) != len(ctr_range):
        raise errors.InvalidConfig(f"invalid ranges specified for container and host Ports: {spec}")
    out = []
    for i, port in enumerate(ctr_range):
        out.append(pb.PortMapping(container_port=port, protocol=proto, host_ip=ip.strip("[]"),
                                  host_port=host_range[i] if host_range else 0))
    return out


def _port_range(text: str, spec: str) -> list[int]:
    match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", text)  # not int(): it takes " 80", "+80", "8_0"
    if not match:
        raise errors.InvalidConfig(f"invalid port specification: \"{spec}\"")
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if not (0 < first <= last <= 65535):
        raise errors.InvalidConfig(f"invalid port specification: \"{spec}\"")
    return list(range(first, last + 1))


def parse_volume(spec: str) -> pb.Volume:
    """``SRC:DST[:ro|rw]``."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise errors.InvalidConfig(f"invalid volume specification: '{spec}'")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise errors.InvalidConfig(f"invalid mode: {mode}")
    return pb.Volume(source=parts[0], target=parts[1], read_only=mode == "ro")


def register(sub) -> None:
    """Add the container commands."""
    r = sub.add_parser("run", help="run a command in a new container", add_help=False)
    r.add_argument("--help", action="help", help="show this help message and exit")
    r.add_argument("-d", "--detach", action="store_true")
    r.add_argument("--rm", action="store_true")
    r.add_argument("--name", default="")
    r.add_argument("--network", "--net", default="")
    r.add_argument("--ip", default="")
    r.add_argument("--ip6", default="")
    r.add_argument("--network-alias", action="append", default=[])
    r.add_argument("-p", "--publish", action="append", default=[])
    r.add_argument("-h", "--hostname", default="")
    r.add_argument("--rootfs", default="")
    r.add_argument("-v", "--volume", action="append", default=[])
    r.add_argument("-e", "--env", action="append", default=[])
    r.add_argument("-w", "--workdir", default="")
    r.add_argument("-m", "--memory", default="")
    r.add_argument("--cpus", type=float, default=0.0)
    r.add_argument("--pids-limit", type=parse_pids_limit, default=0, help="-1 for unlimited")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    r.set_defaults(func=run)

    e = sub.add_parser("exec", help="run a command in a running container")
    e.add_argument("-i", "--interactive", action="store_true")
    e.add_argument("-t", "--tty", action="store_true")
    e.add_argument("-e", "--env", action="append", default=[])
    e.add_argument("container")
    e.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    e.set_defaults(func=exec_)

    ps = sub.add_parser("ps", help="list containers")
    ps.add_argument("-a", "--all", action="store_true")
    ps.add_argument("-q", "--quiet", action="store_true")
    ps.add_argument("--no-trunc", action="store_true")
    ps.add_argument("--format", default=None)
    ps.add_argument("-f", "--filter", action="append", default=[])
    ps.set_defaults(func=ps_)

    for name, fn, helptext in (("start", start, "start stopped containers"), ("stop", stop, "stop containers")):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("containers", nargs="+")
        if name == "stop":
            c.add_argument("-t", "--time", type=parse_int64, default=10, help="seconds to wait before SIGKILL")
        c.set_defaults(func=fn)

    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("-f", "--force", action="store_true")
    rm.add_argument("containers", nargs="+")
    rm.set_defaults(func=rm_)

    i = sub.add_parser("inspect", help="show containers or networks as JSON")
    i.add_argument("-f", "--format", default=None)
    i.add_argument("objects", nargs="+")
    i.set_defaults(func=inspect)

    lg = sub.add_parser("logs", help="show a container's output")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("container")
    lg.set_defaults(func=logs)

    st = sub.add_parser("stats", help="CPU, memory, network and pids of running containers")
    st.add_argument("--no-stream", action="store_true", help="one sample, then exit")
    st.add_argument("--format", default=None)
    st.add_argument("containers", nargs="*")
    st.set_defaults(func=stats)

    ev = sub.add_parser("events", help="stream the daemon's events")
    ev.add_argument("--format", default=None)
    ev.set_defaults(func=events)

    pt = sub.add_parser("port", help="list a container's published ports")
    pt.add_argument("container")
    pt.add_argument("port", nargs="?")
    pt.set_defaults(func=port)


def _run_request(args) -> pb.RunRequest:
    ports = [m for spec in args.publish for m in parse_publish(spec)]
    return pb.RunRequest(
        argv=args.argv, name=args.name, network=args.network, ip=args.ip, ip6=args.ip6,
        aliases=args.network_alias, ports=ports, hostname=args.hostname,
        rootfs=os.path.abspath(args.rootfs) if args.rootfs else "",
        volumes=[parse_volume(v) for v in args.volume], env=args.env,
        memory=parse_bytes(args.memory) if args.memory else 0, cpus=args.cpus, pids_limit=args.pids_limit,
        auto_remove=args.rm and args.detach, workdir=args.workdir)


def run(args, client) -> int:
    """Create and start; attached runs stream the output and return the command's exit code."""
    args.argv = command(args.argv)
    if not args.argv:
        raise errors.InvalidConfig('"netmgr run" requires at least 1 argument.')
    try:
        req = _run_request(args)
        resp = client().call("ContainerRun", req)
    except errors.NetmgrError as exc:
        if exc.exit_code == 1:
            exc.cli_exit_code = 125  # type: ignore[attr-defined]
        raise
    if args.detach:
        print(resp.id)
        return 0
    for chunk in client().stream("ContainerLogs", pb.LogsRequest(container=resp.id, follow=True)):
        sys.stdout.buffer.write(chunk.data)
        sys.stdout.flush()
    code = client().call("ContainerWait", pb.WaitRequest(container=resp.id)).exit_code
    if args.rm:
        client().batch("ContainerRemove", pb.Refs(refs=[resp.id], force=True))
    return code


def exec_(args, client) -> int:
    """Run a command in a running container's namespaces (``--`` may end the options)."""
    args.argv = command(args.argv)
    if not args.argv:
        raise errors.InvalidConfig('"netmgr exec" requires at least 2 arguments.')
    argv = client().call("ContainerExec", pb.ExecRequest(container=args.container, argv=args.argv, env=args.env)).argv
    stdin = None if args.interactive else subprocess.DEVNULL
    return subprocess.call(list(argv), stdin=stdin)


def ps_(args, client) -> int:
    filters = []
    for item in args.filter:
        key, eq, value = item.partition("=")
        if not eq:
            raise errors.InvalidConfig(
                f'invalid argument "{item}" for "-f, --filter" flag: bad format of filter (expected name=value)')
        filters.append(pb.Filter(key=key, value=value))
    docs = client().documents("ContainerList", pb.ListRequest(all=args.all, filters=filters))
    table_rows = [rows.container_row(d, args.no_trunc) for d in docs]
    print_list(args.format, table_rows, rows.PS_COLUMNS, rows.PS_HEADERS, quiet=args.quiet)
    return 0


def _batch(client, method: str, refs: list[str], **kw) -> int:
    done, failures = client().batch(method, pb.Refs(refs=refs, **kw))
    for ref in done:
        print(ref)
    for err in failures:
        print(err.message, file=sys.stderr)
    return 1 if failures else 0


def start(args, client) -> int:
    return _batch(client, "ContainerStart", args.containers)


def stop(args, client) -> int:
    return _batch(client, "ContainerStop", args.containers, timeout=args.time)


def rm_(args, client) -> int:
    done, failures = client().batch("ContainerRemove", pb.Refs(refs=args.containers, force=args.force))
    for ref in done:
        print(ref)
    for err in failures:
        print(err.message, file=sys.stderr)
    # Docker: rm -f of a missing container reports it but exits 0
    real = [f for f in failures if not (args.force and isinstance(f, errors.NotFound))]
    return 1 if real else 0


def inspect(args, client) -> int:
    """Containers first, then networks (Docker's ``inspect`` fallback)."""
    docs, missing = [], []
    for ref in args.objects:
        found, fails = client().inspect("ContainerInspect", [ref])
        if not found:
            found, fails = client().inspect("NetworkInspect", [ref])
        if found:
            docs += found
        else:
            missing.append(ref)
    print_inspect(args.format, docs)
    for ref in missing:
        print(f"Error: No such object: {ref}", file=sys.stderr)
    return 1 if missing else 0


def logs(args, client) -> int:
    for chunk in client().stream("ContainerLogs", pb.LogsRequest(container=args.container, follow=args.follow)):
        sys.stdout.buffer.write(chunk.data)
        sys.stdout.flush()
    return 0


def port(args, client) -> int:
    docs, failures = client().inspect("ContainerInspect", [args.container])
    if failures:
        raise failures[0]
    ports = docs[0]["NetworkSettings"].get("Ports") or {}
    if args.port:
        key = args.port if "/" in args.port else args.port + "/tcp"
        if key not in ports:
            raise errors.NotFound(f"Error: No public port '{key}' published for {args.container}")
        for b in ports[key]:
            print(f"{b['HostIp']}:{b['HostPort']}")
        return 0
    for key, bindings in ports.items():
        for b in bindings or []:
            print(f"{key} -> {b['HostIp']}:{b['HostPort']}")
    return 0


def events(args, client) -> int:
    """Docker's event lines: ``TIME TYPE ACTION ID (k=v, ...)``, until Ctrl-C."""
    from netmgr.cli.gotemplate import render

    for ev in client().stream("Events", pb.EventsRequest()):
        attrs = dict(sorted(ev.attributes.items()))
        if args.format:
            doc = {"Type": ev.type, "Action": ev.action, "ID": ev.id, "Actor": {"ID": ev.id, "Attributes": attrs},
                   "TimeNano": ev.time_nano}
            sys.stdout.write(render(args.format, doc) + "\n")
        else:
            secs, nanos = divmod(ev.time_nano, 1_000_000_000)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"
            extra = ", ".join(f"{k}={v}" for k, v in attrs.items())
            sys.stdout.write(f"{stamp} {ev.type} {ev.action} {ev.id} ({extra})\n")
        sys.stdout.flush()
    return 0


def _human(n: float) -> str:
    """Docker's binary sizes: 1.5MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n}B"


def _decimal(n: float) -> str:
    """Docker's decimal sizes for network I/O: 1.2kB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}B"


STATS_COLUMNS = [("CONTAINER ID", "{{.ID}}"), ("NAME", "{{.Name}}"), ("CPU %", "{{.CPUPerc}}"),
                 ("MEM USAGE / LIMIT", "{{.MemUsage}}"), ("MEM %", "{{.MemPerc}}"), ("NET I/O", "{{.NetIO}}"),
                 ("PIDS", "{{.PIDs}}")]


def stats(args, client) -> int:
    """Two samples half a second apart give the CPU rate, as ``docker stats --no-stream``."""
    ncpu = os.cpu_count() or 1
    while True:
        first = {d["Id"]: d for d in client().documents("ContainerStats", pb.Refs(refs=args.containers))}
        t0 = time.monotonic()
        time.sleep(0.5)
        second = client().documents("ContainerStats", pb.Refs(refs=args.containers))
        elapsed = time.monotonic() - t0
        table_rows = []
        for d in second:
            before = first.get(d["Id"], d)
            cpu = (d["CpuNs"] - before["CpuNs"]) / (elapsed * 1e9) * 100
            limit = d["MemLimit"] if 0 < d["MemLimit"] < 1 << 62 else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            table_rows.append({
                "ID": d["Id"][:12], "Name": d["Name"], "CPUPerc": f"{min(cpu, 100 * ncpu):.2f}%",
                "MemUsage": f"{_human(d['MemUsage'])} / {_human(limit)}",
                "MemPerc": f"{d['MemUsage'] / limit * 100:.2f}%" if limit else "0.00%",
                "NetIO": f"{_decimal(d['NetRx'])} / {_decimal(d['NetTx'])}", "PIDs": str(d["Pids"])})
        print_list(args.format, table_rows, STATS_COLUMNS, {})
        if args.no_stream:
            return 0
