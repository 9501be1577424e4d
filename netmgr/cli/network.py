"""``netmgr network create/ls/inspect/rm/prune/connect/disconnect``."""

from __future__ import annotations

import sys

from netmgr import errors
from netmgr.cli import rows
from netmgr.cli.output import print_inspect, print_list
from netmgr.proto.gen import netmgr_v1_netmgr_pb2 as pb


def _kv(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise errors.InvalidConfig(f"invalid {flag} {item!r}: want key=value")
        out[key] = value
    return out


def _filters(values: list[str]) -> list:
    """``-f key=value`` flags as API filters (``label!=k=v`` arrives as key ``label!``)."""
    out = []
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            raise errors.InvalidConfig(
                f'invalid argument "{item}" for "-f, --filter" flag: bad format of filter (expected name=value)')
        out.append(pb.Filter(key=key, value=value))
    return out


def register(sub) -> None:
    """Add ``network`` and its subcommands."""
    net = sub.add_parser("network", help="manage networks")
    nsub = net.add_subparsers(dest="network_command")
    net.set_defaults(func=lambda a, c: (net.print_help(), 0)[1])

    c = nsub.add_parser("create", help="create a network")
    c.add_argument("name")
    c.add_argument("-d", "--driver", default="bridge")
    c.add_argument("--subnet", action="append", default=[])
    c.add_argument("--gateway", action="append", default=[])
    c.add_argument("--ip-range", action="append", default=[])
    c.add_argument("--aux-address", action="append", default=[])
    c.add_argument("--ipam-driver", default="default")
    c.add_argument("--ipam-opt", action="append", default=[])
    c.add_argument("-o", "--opt", action="append", default=[])
    c.add_argument("--label", action="append", default=[])
    c.add_argument("--internal", action="store_true")
    c.add_argument("--attachable", action="store_true")
    c.add_argument("--ipv6", action="store_true")
    c.set_defaults(func=create)

    ls = nsub.add_parser("ls", aliases=["list"], help="list networks")
    ls.add_argument("-q", "--quiet", action="store_true")
    ls.add_argument("--no-trunc", action="store_true")
    ls.add_argument("-f", "--filter", action="append", default=[])
    ls.add_argument("--format", default=None)
    ls.set_defaults(func=list_)

    i = nsub.add_parser("inspect", help="show networks as JSON")
    i.add_argument("networks", nargs="+")
    i.add_argument("-f", "--format", default=None)
    i.set_defaults(func=inspect)

    r = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    r.add_argument("networks", nargs="+")
    r.add_argument("-f", "--force", action="store_true", help="no error if a network does not exist")
    r.set_defaults(func=remove)

    p = nsub.add_parser("prune", help="remove unused networks")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
    p.set_defaults(func=prune)

    cn = nsub.add_parser("connect", help="connect a container to a network")
    cn.add_argument("network")
    cn.add_argument("container")
    cn.add_argument("--ip", default="")
    cn.add_argument("--ip6", default="")
    cn.add_argument("--alias", action="append", default=[])
    cn.set_defaults(func=connect)

    dc = nsub.add_parser("disconnect", help="disconnect a container from a network")
    dc.add_argument("network")
    dc.add_argument("container")
    dc.add_argument("-f", "--force", action="store_true")
    dc.set_defaults(func=disconnect)


def _pools(args) -> list:
    """Pair --gateway/--ip-range/--aux-address with the --subnet that contains them (Docker's rule)."""
    if not args.subnet and (args.gateway or args.ip_range):
        raise errors.InvalidConfig("every ip-range or gateway must have a corresponding subnet")
    import netaddr

    from netmgr.ipam import parse_cidr

    pools = [pb.IPAMPool(subnet=s) for s in args.subnet]
    nets = []
    for s in args.subnet:
        try:
            nets.append(parse_cidr(s))
        except errors.InvalidConfig:
            nets.append(None)

    def owner(text: str, what: str):
        for pool, net in zip(pools, nets):
            try:
                if net is not None and netaddr.IPNetwork(text) in net:
                    return pool
            except (ValueError, netaddr.AddrFormatError):
                break
        raise errors.InvalidConfig(f"no matching subnet for {what} {text}")

    for gw in args.gateway:
        owner(gw, "gateway").gateway = gw
    for rng in args.ip_range:
        try:
            parse_cidr(rng)
        except errors.InvalidConfig as exc:
            raise errors.InvalidConfig(str(exc)) from None
        owner(rng, "range").ip_range = rng
    for aux in args.aux_address:
        name, eq, addr = aux.partition("=")
        if not eq:
            raise errors.InvalidConfig("no matching subnet for aux-address ")
        owner(addr, "aux-address").aux_addresses[name] = addr
    return pools


def create(args, client) -> int:
    req = pb.NetworkCreateRequest(
        name=args.name, driver=args.driver, pools=_pools(args), ipam_driver=args.ipam_driver,
        ipam_options=_kv(args.ipam_opt, "--ipam-opt"), options=_kv(args.opt, "--opt"),
        labels=_kv(args.label, "--label"), internal=args.internal, attachable=args.attachable, ipv6=args.ipv6)
    print(client().call("NetworkCreate", req).id)
    return 0


def list_(args, client) -> int:
    docs = client().documents("NetworkList", pb.ListRequest(filters=_filters(args.filter)))
    table_rows = [rows.network_row(d, args.no_trunc) for d in docs]
    print_list(args.format, table_rows, rows.NETWORK_COLUMNS, rows.NETWORK_HEADERS, quiet=args.quiet)
    return 0


def inspect(args, client) -> int:
    docs, failures = client().inspect("NetworkInspect", args.networks)
    print_inspect(args.format, docs)
    for err in failures:
        print(err.message, file=sys.stderr)
    return 1 if failures else 0


def remove(args, client) -> int:
    done, failures = client().batch("NetworkRemove", pb.Refs(refs=args.networks))
    for ref in done:
        print(ref)
    failures = [f for f in failures if not (args.force and isinstance(f, errors.NotFound))]
    for err in failures:
        print(err.message, file=sys.stderr)
    return 1 if failures else 0


def prune(args, client) -> int:
    if not args.force:
        sys.stdout.write("WARNING! This will remove all custom networks not used by at least one container.\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    done, failures = client().batch("NetworkPrune", pb.ListRequest(filters=_filters(args.filter)))
    if done:
        print("Deleted Networks:")
        for name in done:
            print(name)
        print()
    for err in failures:
        print(err.message, file=sys.stderr)
    return 1 if failures else 0


def connect(args, client) -> int:
    client().call("NetworkConnect", pb.ConnectRequest(network=args.network, container=args.container, ip=args.ip,
                                                       ip6=args.ip6, aliases=args.alias))
    return 0


def disconnect(args, client) -> int:
    client().call("NetworkDisconnect", pb.DisconnectRequest(network=args.network, container=args.container,
                                                             force=args.force))
    return 0
