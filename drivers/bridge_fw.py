"""The bridge driver's firewall: netmgr's own nftables tables.

Networks, endpoints and published ports only add set and map elements, so
the rule list never grows with them::

    table inet netmgr {
      set bridges  { type ifname }                # every netmgr bridge
      set same     { type ifname . ifname }       # (br, br): traffic inside one network
      set internal { type ifname }                # --internal bridges
      set masq4 / masq6  { flags interval }       # subnets leaving through NAT
      set hairpin4 / hairpin6 { addr . addr; interval }   # (subnet . subnet): reply via the host
      map dnat4  { proto . port : addr }  + dport4  { proto . port : port }   # -p HOSTPORT:CTRPORT
      map dnat4a { hostaddr . proto . port : addr } + dport4a  { … : port }   # -p IP:HOSTPORT:CTRPORT
      map dnat6 / dport6 / dnat6a / dport6a                                   # the same for IPv6
      chain prerouting   dnat from other hosts and containers; never to 127/8 or ::1
      chain output       dnat for the host itself, loopback bindings included
      chain forward      established, published ports, internal, isolation
      chain postrouting  hairpin and localhost masquerade, egress masquerade
    }
    table bridge netmgr {
      set noicc { type ifname }                   # ports of networks with enable_icc=false
      chain forward { iifname @noicc oifname @noicc drop }
    }

A port published on a loopback address only gets a DNAT in ``output``:
a packet that arrives from another host addressed to 127.0.0.1 is never
translated (the Docker bug where such ports were reachable from the LAN).

:meth:`BridgeFirewall.rebuild` writes both tables in one atomic batch
(delete + add), which is how the daemon starts and how it repairs a flushed
ruleset; the per-object calls add or delete elements only.
"""

from __future__ import annotations

from dataclasses import dataclass

from netmgr.runtime.nft import Nft, NftError

FAMILY = "inet"


@dataclass(frozen=True)
class FwNetwork:
    """What the firewall needs to know of one bridge network."""

    bridge: str
    subnets4: tuple[str, ...] = ()
    subnets6: tuple[str, ...] = ()
    masquerade: bool = True
    internal: bool = False


@dataclass(frozen=True)
class FwPort:
    """One published port: host side (address "" = every address) → container side."""

    proto: str
    host_ip: str
    host_port: int
    ctr_ip: str
    ctr_port: int

    @property
    def v6(self) -> bool:
        """True for an IPv6 mapping."""
        return ":" in self.ctr_ip


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _payload(proto: str, fld: str) -> dict:
    return {"payload": {"protocol": proto, "field": fld}}


def _match(left, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(cidr: str) -> dict:
    addr, _, plen = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(plen)}}


_LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
_L4 = [_meta("l4proto"), _payload("th", "dport")]
_FAM = {4: ("ip", "ipv4_addr", "127.0.0.0/8"), 6: ("ip6", "ipv6_addr", "::1/128")}


class BridgeFirewall:
    """netmgr's nftables tables for bridge networks."""

    def __init__(self, nft: Nft, table: str = "netmgr") -> None:
        self.nft = nft
        self.table = table

    def _obj(self, kind: str, family: str = FAMILY, **fields) -> dict:
        return {kind: {"family": family, "table": self.table, **fields}}

    # -- the skeleton ----------------------------------------------------------

    def _sets(self) -> list[dict]:
        out = [
            self._obj("set", name="bridges", type="ifname"),
            self._obj("set", name="same", type=["ifname", "ifname"]),
            self._obj("set", name="internal", type="ifname"),
        ]
        for v in (4, 6):
            _, addr_type, _ = _FAM[v]
            out += [
                self._obj("set", name=f"masq{v}", type=addr_type, flags=["interval"]),
                self._obj("set", name=f"hairpin{v}", type=[addr_type, addr_type], flags=["interval"]),
                # address and port in two maps: libnftables 1.0.6 crashes on JSON nat maps with
                # concatenated data (addr . port)
                self._obj("map", name=f"dnat{v}", type=["inet_proto", "inet_service"], map=addr_type),
                self._obj("map", name=f"dport{v}", type=["inet_proto", "inet_service"], map="inet_service"),
                self._obj("map", name=f"dnat{v}a", type=[addr_type, "inet_proto", "inet_service"], map=addr_type),
                self._obj("map", name=f"dport{v}a", type=[addr_type, "inet_proto", "inet_service"],
                          map="inet_service"),
            ]
        return out

    def _chains(self) -> list[dict]:
        return [
            self._obj("chain", name="prerouting", type="nat", hook="prerouting", prio=-100, policy="accept"),
            self._obj("chain", name="output", type="nat", hook="output", prio=-100, policy="accept"),
            self._obj("chain", name="forward", type="filter", hook="forward", prio=0, policy="accept"),
            self._obj("chain", name="postrouting", type="nat", hook="postrouting", prio=100, policy="accept"),
        ]

    def _dnat_rules(self, v: int) -> list[dict]:
        proto, _, loopback = _FAM[v]
        not_loopback = _match(_payload(proto, "daddr"), _prefix(loopback), "!=")
        key_one = {"concat": [_payload(proto, "daddr"), *_L4]}
        every = {"dnat": {"family": proto, "addr": {"map": {"key": {"concat": _L4}, "data": f"@dnat{v}"}},
                          "port": {"map": {"key": {"concat": _L4}, "data": f"@dport{v}"}}}}
        one = {"dnat": {"family": proto, "addr": {"map": {"key": key_one, "data": f"@dnat{v}a"}},
                        "port": {"map": {"key": key_one, "data": f"@dport{v}a"}}}}
        return [
            self._obj("rule", chain="prerouting", expr=[_LOCAL, not_loopback, every]),
            self._obj("rule", chain="prerouting", expr=[not_loopback, one]),
            self._obj("rule", chain="output", expr=[_LOCAL, every]),
            self._obj("rule", chain="output", expr=[one]),
        ]

    def _forward_rules(self) -> list[dict]:
        iif, oif = _meta("iifname"), _meta("oifname")
        pair = {"concat": [iif, oif]}
        return [self._obj("rule", chain="forward", expr=e) for e in (
            [_match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}],
            [_match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}],  # published ports
            [_match(iif, "@internal"), _match(pair, "@same", "!="), {"drop": None}],
            [_match(oif, "@internal"), _match(pair, "@same", "!="), {"drop": None}],
            [_match(iif, "@bridges"), _match(oif, "@bridges"), _match(pair, "@same", "!="), {"drop": None}],
        )]

    def _postrouting_rules(self) -> list[dict]:
        oif = _meta("oifname")
        rules = []
        for v in (4, 6):
            proto, _, loopback = _FAM[v]
            saddr, daddr = _payload(proto, "saddr"), _payload(proto, "daddr")
            rules += [
                # a container reaching a port published by its own network, through the host
                [_match({"ct": {"key": "status"}}, "dnat", "in"), _match({"concat": [saddr, daddr]}, f"@hairpin{v}"),
                 {"masquerade": None}],
                # the host reaching a published port on 127.0.0.1 / ::1
                [_match(saddr, _prefix(loopback)), _match(oif, "@bridges"), {"masquerade": None}],
                [_match(saddr, f"@masq{v}"), _match(oif, "@bridges", "!="), {"masquerade": None}],
            ]
        return [self._obj("rule", chain="postrouting", expr=e) for e in rules]

    def _bridge_table(self) -> list[dict]:
        iif, oif = _meta("iifname"), _meta("oifname")
        return [
            {"add": {"table": {"family": "bridge", "name": self.table}}},
            {"add": self._obj("set", family="bridge", name="noicc", type="ifname")},
            # before br_netfilter's hook (priority 0), which re-injects only into later chains
            {"add": self._obj("chain", family="bridge", name="forward", type="filter", hook="forward", prio=-100,
                              policy="accept")},
            {"add": self._obj("rule", family="bridge", chain="forward",
                              expr=[_match(iif, "@noicc"), _match(oif, "@noicc"), {"drop": None}])},
        ]

    def _skeleton(self) -> list[dict]:
        objs = self._sets() + self._chains() + self._dnat_rules(4) + self._dnat_rules(6)
        objs += self._forward_rules() + self._postrouting_rules()
        return [{"add": {"table": {"family": FAMILY, "name": self.table}}}] + [{"add": x} for x in objs] \
            + self._bridge_table()

    # -- elements ------------------------------------------------------------------

    def _elem(self, name: str, elem: list, family: str = FAMILY) -> dict:
        return self._obj("element", family=family, name=name, elem=elem)

    def _network_elements(self, net: FwNetwork) -> list[dict]:
        items = [self._elem("bridges", [net.bridge]), self._elem("same", [{"concat": [net.bridge, net.bridge]}])]
        if net.internal:
            items.append(self._elem("internal", [net.bridge]))
        for v, subnets in ((4, net.subnets4), (6, net.subnets6)):
            if subnets:
                items.append(self._elem(f"hairpin{v}", [{"concat": [_prefix(s), _prefix(s)]} for s in subnets]))
            if net.masquerade and not net.internal and subnets:
                items.append(self._elem(f"masq{v}", [_prefix(s) for s in subnets]))
        return items

    def _port_elements(self, ports: list[FwPort]) -> list[dict]:
        items = []
        for p in ports:
            v = 6 if p.v6 else 4
            suffix = "a" if p.host_ip else ""
            key = {"concat": [p.host_ip, p.proto, p.host_port] if p.host_ip else [p.proto, p.host_port]}
            items.append(self._elem(f"dnat{v}{suffix}", [[key, p.ctr_ip]]))
            items.append(self._elem(f"dport{v}{suffix}", [[key, p.ctr_port]]))
        return items

    def _icc_elements(self, ifnames: list[str]) -> list[dict]:
        return [self._elem("noicc", list(ifnames), family="bridge")] if ifnames else []

    # -- operations ----------------------------------------------------------------

    def rebuild(self, networks: list[FwNetwork], ports: list[FwPort] = (), noicc: list[str] = ()) -> None:
        """Replace both tables atomically with the rules and every element given."""
        batch = []
        for family in (FAMILY, "bridge"):
            batch += [{"add": {"table": {"family": family, "name": self.table}}},
                      {"delete": {"table": {"family": family, "name": self.table}}}]
        batch += self._skeleton()
        for net in networks:
            batch += [{"add": e} for e in self._network_elements(net)]
        batch += [{"add": e} for e in self._port_elements(list(ports)) + self._icc_elements(list(noicc))]
        self.nft.run(batch)

    def _add(self, elements: list[dict]) -> None:
        if elements:
            self.nft.run([{"add": e} for e in elements])

    def _delete(self, elements: list[dict]) -> None:
        """Delete elements; ones already gone are fine (one batch, then one by one)."""
        try:
            if elements:
                self.nft.run([{"delete": e} for e in elements])
        except NftError:
            for element in elements:
                try:
                    self.nft.run([{"delete": element}])
                except NftError:
                    pass

    def add_network(self, net: FwNetwork) -> None:
        """Add one network's elements (one atomic batch)."""
        self._add(self._network_elements(net))

    def remove_network(self, net: FwNetwork) -> None:
        """Delete one network's elements."""
        self._delete(self._network_elements(net))

    def add_ports(self, ports: list[FwPort]) -> None:
        """Publish ports (one atomic batch)."""
        self._add(self._port_elements(ports))

    def remove_ports(self, ports: list[FwPort]) -> None:
        """Unpublish ports."""
        self._delete(self._port_elements(ports))

    def add_noicc(self, ifname: str) -> None:
        """A port of a network with enable_icc=false."""
        self._add(self._icc_elements([ifname]))

    def remove_noicc(self, ifname: str) -> None:
        """Forget such a port."""
        self._delete(self._icc_elements([ifname]))

    def exists(self) -> bool:
        """True when both tables are present (False after ``nft flush ruleset``)."""
        return self.nft.list_table(FAMILY, self.table) is not None and \
            self.nft.list_table("bridge", self.table) is not None

    def intact(self) -> bool:
        """True when every chain holds exactly its rules (cheap: chains only, no set elements)."""
        expected: dict[tuple[str, str], int] = {}
        for item in self._skeleton():
            rule = item.get("add", {}).get("rule")
            if rule:
                key = (rule["family"], rule["chain"])
                expected[key] = expected.get(key, 0) + 1
        for (family, chain), count in expected.items():
            try:
                out = self.nft.run(f"list chain {family} {self.table} {chain}") or {}
            except NftError:
                return False
            if sum(1 for i in out.get("nftables", []) if "rule" in i) != count:
                return False
        return True

    def delete(self) -> None:
        """Remove both tables (tests, daemon cleanup)."""
        self.nft.delete_table(FAMILY, self.table)
        self.nft.delete_table("bridge", self.table)
