"""Lab topology files: parse and validate, with one clear line per mistake.

A topology (YAML) describes the simulated hosts of a lab, the underlay that
joins them, the etcd cluster store, the networks and containers to create,
and the checks ``netmgr lab validate`` runs::

    name: overlay-2host
    underlay: {subnet: 192.168.150.0/24, mtu: 1500, outside: 203.0.113.1/24}
    etcd: {members: 1}                      # 1 or 3
    hosts: [host1, host2]                   # or [{name: host1, address: 192.168.150.21}]
    networks:
      - {name: ov1, driver: overlay, subnet: 10.20.0.0/24}
      - {name: br1, driver: bridge, subnet: 10.30.0.0/24, hosts: [host1]}
    containers:
      - {name: c1, host: host1, networks: [ov1]}
      - {name: c2, host: host2, networks: [{name: ov1, ip: 10.20.0.50, aliases: [db]}]}
    validate:
      - ping: {from: c1, to: c2}            # by name, through the embedded DNS
      - reach: {from: c1, to: outside}
      - no_reach: {from: c3, to: outside}

Everything is checked before the lab touches the kernel (names, addresses,
references between sections, unknown keys), so a typo never leaves half a
lab behind. Errors are :class:`TopologyError`: ``FILE: WHERE: PROBLEM``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from netmgr import errors

__all__ = [
    "CHECKS",
    "DRIVERS",
    "OUTSIDE",
    "Attachment",
    "Check",
    "Container",
    "Host",
    "Network",
    "Topology",
    "TopologyError",
    "Underlay",
    "check_lab_name",
    "load",
    "parse",
]

DRIVERS = ("bridge", "overlay")
CHECKS = ("ping", "reach", "no_reach")
PREDEFINED = ("bridge", "host", "none")
#: the ``to`` of a check that means the underlay's "outside world" address
OUTSIDE = "outside"
RESERVED_NAMES = (OUTSIDE, "underlay")
DEFAULT_SUBNET = "192.168.150.0/24"
DEFAULT_OUTSIDE = "203.0.113.1/24"  # TEST-NET-3: never routed anywhere real
DEFAULT_COMMAND = ("sleep", "infinity")
HOST_OFFSET = 10  # hosts get .11, .12, … unless given an address; .1 is the gateway, .2-.4 etcd

_LAB_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_HOST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,12}")  # "v-" + name fits IFNAMSIZ
_OBJ_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # Docker's container/network names


class TopologyError(errors.InvalidConfig):
    """A topology file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Underlay:
    """The L2 segment joining the hosts, and the "outside world" address behind it."""

    subnet: ipaddress.IPv4Network
    mtu: int
    outside: ipaddress.IPv4Interface

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The underlay namespace's bridge address: every host's default route."""
        return self.subnet.network_address + 1


@dataclass(frozen=True)
class Host:
    """One simulated host: a namespace with its own netmgrd."""

    name: str
    address: ipaddress.IPv4Address


@dataclass(frozen=True)
class Network:
    """A network created through the daemon of each host in ``hosts`` (one host for overlay)."""

    name: str
    driver: str
    hosts: tuple[str, ...]
    subnet: str | None = None
    gateway: str | None = None
    internal: bool = False
    attachable: bool = False
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Attachment:
    """A container's membership of one network."""

    network: str
    ip: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Container:
    """A container started with ``netmgr run -d`` on ``host``."""

    name: str
    host: str
    networks: tuple[Attachment, ...]
    command: tuple[str, ...] = DEFAULT_COMMAND


@dataclass(frozen=True)
class Check:
    """One validation step: ``kind`` from container ``src`` to ``dst``."""

    kind: str
    src: str
    dst: str
    timeout: float

    def describe(self) -> str:
        """``ping c1 -> c2``."""
        return f"{self.kind} {self.src} -> {self.dst}"


@dataclass(frozen=True)
class Topology:
    """A whole lab, validated."""

    name: str
    source: str
    underlay: Underlay
    etcd_members: int
    hosts: tuple[Host, ...]
    networks: tuple[Network, ...] = ()
    containers: tuple[Container, ...] = ()
    checks: tuple[Check, ...] = ()
    etcd_addresses: tuple[ipaddress.IPv4Address, ...] = field(default=())

    def host(self, name: str) -> Host:
        """The host called ``name``."""
        return next(h for h in self.hosts if h.name == name)

    def container(self, name: str) -> Container:
        """The container called ``name``, or carrying the network alias ``name``."""
        return next(c for c in self.containers if c.name == name or any(name in a.aliases for a in c.networks))

    def is_container(self, name: str) -> bool:
        """``name`` is a container's name or one of its aliases."""
        return any(c.name == name or any(name in a.aliases for a in c.networks) for c in self.containers)


# -- entry points -------------------------------------------------------------


def load(path: str) -> Topology:
    """Read and validate the topology file at ``path``."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TopologyError(f"{path}: not valid YAML: {where}{problem}") from None
    return parse(data, path)


def parse(data: Any, source: str = "<topology>") -> Topology:
    """Validate an already-loaded document; ``source`` names it in errors."""
    ctx = _Ctx(source)
    doc = ctx.mapping(data, "", {"name", "underlay", "etcd", "hosts", "networks", "containers", "validate"})
    name = _lab_name(ctx, doc, source)
    underlay = _underlay(ctx, doc.get("underlay"))
    members = _etcd(ctx, doc.get("etcd"))
    etcd_addresses = tuple(underlay.gateway + 1 + i for i in range(members))
    hosts = _hosts(ctx, doc.get("hosts"), underlay, etcd_addresses)
    networks = _networks(ctx, doc.get("networks"), hosts, underlay)
    containers = _containers(ctx, doc.get("containers"), hosts, networks)
    checks = _checks(ctx, doc.get("validate"), hosts, containers)
    return Topology(name, source, underlay, members, hosts, networks, containers, checks, etcd_addresses)


def check_lab_name(name: str) -> str:
    """``name`` if it is a valid lab name, else :class:`TopologyError`."""
    if not isinstance(name, str) or not _LAB_NAME.fullmatch(name):
        raise TopologyError(f"invalid lab name {name!r}: use lowercase letters, digits, '-' and '_' "
                            "(at most 32 characters, starting with a letter or digit)")
    return name


# -- sections -----------------------------------------------------------------


class _Ctx:
    """Error helpers bound to the file name."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> TopologyError:
        """``FILE: WHERE: PROBLEM`` as an error to raise."""
        return TopologyError(f"{self.source}: {where}: {problem}" if where else f"{self.source}: {problem}")

    def mapping(self, value: Any, where: str, keys: set[str], required: tuple[str, ...] = ()) -> dict:
        """``value`` if it is a mapping with only ``keys`` and every ``required`` one."""
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        for key in value:
            if key not in keys:
                raise self.fail(where, f"unknown key {key!r} (known: {', '.join(sorted(keys))})")
        for key in required:
            if value.get(key) is None:
                raise self.fail(where, f"missing {key!r}")
        return value

    def seq(self, value: Any, where: str) -> list:
        """``value`` if it is a list (nothing: an empty list)."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {_kind(value)}")
        return value

    def string(self, value: Any, where: str, pattern: re.Pattern | None = None, hint: str = "") -> str:
        """``value`` if it is a string matching ``pattern``."""
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            shown = repr(value) if isinstance(value, str) else _kind(value)
            raise self.fail(where, f"invalid name {shown}" + (f" ({hint})" if hint else ""))
        return value

    def boolean(self, value: Any, where: str) -> bool:
        """``value`` if it is true or false (nothing: false)."""
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}"}.get(type(value), repr(value))


def _lab_name(ctx: _Ctx, doc: dict, source: str) -> str:
    name = doc.get("name")
    if name is None:  # the file's name, as docker compose names a project after its directory
        name = os.path.splitext(os.path.basename(source))[0]
        if not _LAB_NAME.fullmatch(name):
            raise ctx.fail("", f"missing 'name' (and the file name {name!r} is no valid lab name)")
    try:
        return check_lab_name(name)
    except TopologyError as exc:
        raise ctx.fail("name", exc.message) from None


def _underlay(ctx: _Ctx, value: Any) -> Underlay:
    doc = ctx.mapping(value or {}, "underlay", {"subnet", "mtu", "outside"})
    try:
        subnet = ipaddress.IPv4Network(str(doc.get("subnet", DEFAULT_SUBNET)), strict=True)
    except (ValueError, TypeError) as exc:
        raise ctx.fail("underlay.subnet", f"not an IPv4 subnet: {exc}") from None
    if subnet.prefixlen > 26:
        raise ctx.fail("underlay.subnet", f"{subnet} is too small (at most /26: room for the hosts)")
    mtu = doc.get("mtu", 1500)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 1280 <= mtu <= 9000:
        raise ctx.fail("underlay.mtu", f"expected an integer from 1280 to 9000, got {mtu!r}")
    try:
        outside = ipaddress.IPv4Interface(str(doc.get("outside", DEFAULT_OUTSIDE)))
    except (ValueError, TypeError) as exc:
        raise ctx.fail("underlay.outside", f"not an IPv4 address/prefix: {exc}") from None
    if outside.network.overlaps(subnet):
        raise ctx.fail("underlay.outside", f"{outside} overlaps the underlay subnet {subnet}")
    return Underlay(subnet, mtu, outside)


def _etcd(ctx: _Ctx, value: Any) -> int:
    if value is None:
        return 1
    members = value if isinstance(value, int) and not isinstance(value, bool) else None
    if members is None:
        members = ctx.mapping(value, "etcd", {"members"}).get("members", 1)
    if members not in (1, 3) or isinstance(members, bool):
        raise ctx.fail("etcd.members", f"expected 1 or 3, got {members!r}")
    return members


def _hosts(ctx: _Ctx, value: Any, underlay: Underlay, etcd: tuple) -> tuple[Host, ...]:
    items = ctx.seq(value, "hosts")
    if not items:
        raise ctx.fail("hosts", "a lab needs at least one host")
    reserved = {underlay.subnet.network_address, underlay.subnet.broadcast_address, underlay.gateway, *etcd}
    hosts: list[Host] = []
    for i, item in enumerate(items):
        where = f"hosts[{i}]"
        doc = {"name": item} if isinstance(item, str) else ctx.mapping(item, where, {"name", "address"}, ("name",))
        name = ctx.string(doc["name"], f"{where}.name", _HOST_NAME,
                          "lowercase letters, digits and '-', at most 13 characters")
        if name in RESERVED_NAMES:
            raise ctx.fail(f"{where}.name", f"{name!r} is reserved")
        if any(h.name == name for h in hosts):
            raise ctx.fail(f"{where}.name", f"duplicate host {name!r}")
        address = _host_address(ctx, doc.get("address"), f"{where}.address", underlay, i)
        if address in reserved or any(h.address == address for h in hosts):
            raise ctx.fail(f"{where}.address", f"{address} is already used (gateway, etcd or another host)")
        hosts.append(Host(name, address))
    return tuple(hosts)


def _host_address(ctx: _Ctx, value: Any, where: str, underlay: Underlay, index: int) -> ipaddress.IPv4Address:
    if value is None:
        address = underlay.subnet.network_address + HOST_OFFSET + 1 + index
        if address >= underlay.subnet.broadcast_address:
            raise ctx.fail(where, f"no room for host {index + 1} in {underlay.subnet}")
        return address
    try:
        address = ipaddress.IPv4Address(str(value))
    except (ValueError, TypeError):
        raise ctx.fail(where, f"not an IPv4 address: {value!r}") from None
    if address not in underlay.subnet:
        raise ctx.fail(where, f"{address} is not in the underlay subnet {underlay.subnet}")
    return address


_NETWORK_KEYS = {"name", "driver", "subnet", "gateway", "internal", "attachable", "options", "host", "hosts"}


def _networks(ctx: _Ctx, value: Any, hosts: tuple[Host, ...], underlay: Underlay) -> tuple[Network, ...]:
    networks: list[Network] = []
    for i, item in enumerate(ctx.seq(value, "networks")):
        doc = ctx.mapping(item, f"networks[{i}]", _NETWORK_KEYS, ("name",))
        name = ctx.string(doc["name"], f"networks[{i}].name", _OBJ_NAME)
        where = f"networks[{i}] ({name})"
        if name in PREDEFINED:
            raise ctx.fail(where, f"{name!r} is a predefined network: use it without defining it")
        if any(n.name == name for n in networks):
            raise ctx.fail(where, "duplicate network name")
        driver = doc.get("driver", "bridge")
        if driver not in DRIVERS:
            raise ctx.fail(where, f"unknown driver {driver!r} ({' or '.join(DRIVERS)})")
        subnet, gateway = _subnet(ctx, doc, where, underlay)
        networks.append(Network(
            name, driver, _network_hosts(ctx, doc, where, driver, hosts), subnet, gateway,
            ctx.boolean(doc.get("internal"), f"{where}.internal"),
            ctx.boolean(doc.get("attachable"), f"{where}.attachable"), _options(ctx, doc.get("options"), where)))
    return tuple(networks)


def _subnet(ctx: _Ctx, doc: dict, where: str, underlay: Underlay) -> tuple[str | None, str | None]:
    raw, gateway = doc.get("subnet"), doc.get("gateway")
    if raw is None:
        if gateway is not None:
            raise ctx.fail(where, "a gateway needs a subnet")
        return None, None
    try:
        subnet = ipaddress.IPv4Network(str(raw), strict=True)
    except (ValueError, TypeError) as exc:
        raise ctx.fail(f"{where}.subnet", f"not an IPv4 subnet: {exc}") from None
    for other, what in ((underlay.subnet, "the underlay subnet"), (underlay.outside.network, "the outside address")):
        if subnet.overlaps(other):
            raise ctx.fail(f"{where}.subnet", f"{subnet} overlaps {what} {other}")
    if gateway is not None:
        try:
            if ipaddress.IPv4Address(str(gateway)) not in subnet:
                raise ctx.fail(f"{where}.gateway", f"{gateway} is not in {subnet}")
        except ValueError:
            raise ctx.fail(f"{where}.gateway", f"not an IPv4 address: {gateway!r}") from None
    return str(subnet), gateway


def _network_hosts(ctx: _Ctx, doc: dict, where: str, driver: str, hosts: tuple[Host, ...]) -> tuple[str, ...]:
    names = [h.name for h in hosts]
    if driver == "overlay":
        if "hosts" in doc:
            raise ctx.fail(where, "an overlay network is global: give 'host' (whose daemon creates it), not 'hosts'")
        creator = doc.get("host", names[0])
        if creator not in names:
            raise ctx.fail(f"{where}.host", f"unknown host {creator!r}")
        return (creator,)
    if "host" in doc:
        raise ctx.fail(where, "a bridge network exists per host: give 'hosts' (a list), not 'host'")
    chosen = ctx.seq(doc.get("hosts", names), f"{where}.hosts")
    for h in chosen:
        if h not in names:
            raise ctx.fail(f"{where}.hosts", f"unknown host {h!r}")
    if not chosen:
        raise ctx.fail(f"{where}.hosts", "empty: a bridge network needs at least one host")
    return tuple(dict.fromkeys(chosen))


def _options(ctx: _Ctx, value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ctx.fail(f"{where}.options", f"expected a mapping of driver options, got {_kind(value)}")
    return tuple((str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items())


def _containers(ctx: _Ctx, value: Any, hosts: tuple[Host, ...], networks: tuple[Network, ...]) -> tuple:
    host_names = [h.name for h in hosts]
    by_name = {n.name: n for n in networks}
    containers: list[Container] = []
    for i, item in enumerate(ctx.seq(value, "containers")):
        doc = ctx.mapping(item, f"containers[{i}]", {"name", "host", "networks", "command"}, ("name",))
        name = ctx.string(doc["name"], f"containers[{i}].name", _OBJ_NAME)
        where = f"containers[{i}] ({name})"
        if name in RESERVED_NAMES or name in host_names:
            raise ctx.fail(where, f"{name!r} is reserved or names a host (checks refer to both by name)")
        if any(c.name == name for c in containers):
            raise ctx.fail(where, "duplicate container name")
        host = doc.get("host", host_names[0] if len(host_names) == 1 else None)
        if host is None:
            raise ctx.fail(where, "missing 'host' (the lab has several)")
        if host not in host_names:
            raise ctx.fail(f"{where}.host", f"unknown host {host!r}")
        attachments = _attachments(ctx, doc.get("networks"), where, host, by_name)
        containers.append(Container(name, host, attachments, _command(ctx, doc.get("command"), where)))
    return tuple(containers)


def _attachments(ctx: _Ctx, value: Any, where: str, host: str, networks: dict[str, Network]) -> tuple:
    items = ctx.seq(value, f"{where}.networks") or ["bridge"]
    out: list[Attachment] = []
    for j, item in enumerate(items):
        spot = f"{where}.networks[{j}]"
        doc = {"name": item} if isinstance(item, str) else ctx.mapping(item, spot, {"name", "ip", "aliases"}, ("name",))
        net = doc["name"]
        if net in PREDEFINED:
            if len(items) > 1 and net != "bridge":
                raise ctx.fail(spot, f"{net!r} cannot be combined with other networks")
        elif net not in networks:
            raise ctx.fail(spot, f"unknown network {net!r}")
        elif host not in networks[net].hosts and networks[net].driver == "bridge":
            raise ctx.fail(spot, f"bridge network {net!r} does not exist on host {host!r}")
        if any(a.network == net for a in out):
            raise ctx.fail(spot, f"network {net!r} listed twice")
        ip = doc.get("ip")
        if ip is not None:
            try:
                ipaddress.IPv4Address(str(ip))
            except ValueError:
                raise ctx.fail(f"{spot}.ip", f"not an IPv4 address: {ip!r}") from None
        aliases = tuple(ctx.string(a, f"{spot}.aliases", _OBJ_NAME) for a in ctx.seq(doc.get("aliases"), spot))
        out.append(Attachment(net, ip, aliases))
    return tuple(out)


def _command(ctx: _Ctx, value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_COMMAND
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ctx.fail(f"{where}.command", str(exc)) from None
    elif isinstance(value, list) and all(isinstance(a, (str, int, float)) for a in value):
        argv = [str(a) for a in value]
    else:
        raise ctx.fail(f"{where}.command", "expected a string or a list of strings")
    if not argv:
        raise ctx.fail(f"{where}.command", "empty command")
    return tuple(argv)


def _checks(ctx: _Ctx, value: Any, hosts: tuple[Host, ...], containers: tuple[Container, ...]) -> tuple:
    ctr_names = {c.name for c in containers}
    aliases = {alias for c in containers for a in c.networks for alias in a.aliases}
    targets = ctr_names | aliases | {h.name for h in hosts} | {OUTSIDE}
    checks: list[Check] = []
    for i, item in enumerate(ctx.seq(value, "validate")):
        where = f"validate[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise ctx.fail(where, f"expected one check such as {{ping: {{from: c1, to: c2}}}} ({', '.join(CHECKS)})")
        ((kind, body),) = item.items()
        if kind not in CHECKS:
            raise ctx.fail(where, f"unknown check {kind!r} ({', '.join(CHECKS)})")
        doc = ctx.mapping(body, f"{where}.{kind}", {"from", "to", "timeout"}, ("from", "to"))
        src, dst = doc["from"], doc["to"]
        if src not in ctr_names:
            raise ctx.fail(f"{where}.{kind}.from", f"unknown container {src!r}")
        if dst not in targets and not _is_ip(dst):
            raise ctx.fail(f"{where}.{kind}.to",
                           f"{dst!r} is no container, alias, host, IPv4 address or {OUTSIDE!r}")
        timeout = doc.get("timeout", 2.0 if kind == "no_reach" else 10.0)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 300:
            raise ctx.fail(f"{where}.{kind}.timeout", f"expected seconds (0-300], got {timeout!r}")
        checks.append(Check(kind, src, str(dst), float(timeout)))
    return tuple(checks)


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True
