"""The bridge driver's firewall: netmgr's own nftables table.

One ``inet`` table holds every rule; networks and endpoints only add set
elements, so the rule list never grows with them::

    table inet netmgr {
      set bridges  { type ifname; }               # every netmgr bridge
      set same     { type ifname . ifname; }      # (br, br): traffic inside one network
      set masq4    { type ipv4_addr; flags interval; }   # subnets leaving through NAT
      set masq6    { type ipv6_addr; flags interval; }
      chain forward { type filter hook forward priority filter; policy accept;
        iifname @bridges oifname @bridges iifname . oifname != @same drop   # isolation
      }
      chain postrouting { type nat hook postrouting priority srcnat; policy accept;
        ip  saddr @masq4 oifname != @bridges masquerade
        ip6 saddr @masq6 oifname != @bridges masquerade
      }
    }

:meth:`BridgeFirewall.rebuild` writes the whole table in one atomic batch
(delete + add), which is how the daemon starts and how it repairs a flushed
ruleset; the per-network calls add or delete elements only.
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


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _match(left, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


class BridgeFirewall:
    """netmgr's nftables table for bridge networks."""

    def __init__(self, nft: Nft, table: str = "netmgr") -> None:
        self.nft = nft
        self.table = table

    def _obj(self, kind: str, **fields) -> dict:
        return {kind: {"family": FAMILY, "table": self.table, **fields}}

    def _skeleton(self) -> list[dict]:
        sets = [
            self._obj("set", name="bridges", type="ifname"),
            self._obj("set", name="same", type=["ifname", "ifname"]),
            self._obj("set", name="masq4", type="ipv4_addr", flags=["interval"]),
            self._obj("set", name="masq6", type="ipv6_addr", flags=["interval"]),
        ]
        chains = [
            self._obj("chain", name="forward", type="filter", hook="forward", prio=0, policy="accept"),
            self._obj("chain", name="postrouting", type="nat", hook="postrouting", prio=100, policy="accept"),
        ]
        iif, oif = _meta("iifname"), _meta("oifname")
        rules = [
            self._obj("rule", chain="forward", expr=[
                _match(iif, "@bridges"), _match(oif, "@bridges"),
                _match({"concat": [iif, oif]}, "@same", "!="), {"drop": None}]),
        ]
        for fam, set_name in (("ip", "masq4"), ("ip6", "masq6")):
            rules.append(self._obj("rule", chain="postrouting", expr=[
                _match({"payload": {"protocol": fam, "field": "saddr"}}, "@" + set_name),
                _match(oif, "@bridges", "!="), {"masquerade": None}]))
        return [{"add": {"table": {"family": FAMILY, "name": self.table}}}] + [
            {"add": x} for x in sets + chains + rules
        ]

    def _elements(self, net: FwNetwork) -> list[dict]:
        items = [
            self._obj("element", name="bridges", elem=[net.bridge]),
            self._obj("element", name="same", elem=[{"concat": [net.bridge, net.bridge]}]),
        ]
        if net.masquerade and net.subnets4:
            items.append(self._obj("element", name="masq4", elem=[_prefix(s) for s in net.subnets4]))
        if net.masquerade and net.subnets6:
            items.append(self._obj("element", name="masq6", elem=[_prefix(s) for s in net.subnets6]))
        return items

    def rebuild(self, networks: list[FwNetwork]) -> None:
        """Replace the whole table atomically with the rules and these networks' elements."""
        batch = [{"add": {"table": {"family": FAMILY, "name": self.table}}},
                 {"delete": {"table": {"family": FAMILY, "name": self.table}}}]
        batch += self._skeleton()
        for net in networks:
            batch += [{"add": e} for e in self._elements(net)]
        self.nft.run(batch)

    def add_network(self, net: FwNetwork) -> None:
        """Add one network's elements (one atomic batch)."""
        self.nft.run([{"add": e} for e in self._elements(net)])

    def remove_network(self, net: FwNetwork) -> None:
        """Delete one network's elements; elements already gone are fine."""
        try:
            self.nft.run([{"delete": e} for e in self._elements(net)])
        except NftError:
            # some element was missing: delete them one by one, ignoring the absent ones
            for element in self._elements(net):
                try:
                    self.nft.run([{"delete": element}])
                except NftError:
                    pass

    def exists(self) -> bool:
        """True when the table is present (False after ``nft flush ruleset``)."""
        return self.nft.list_table(FAMILY, self.table) is not None

    def delete(self) -> None:
        """Remove the table (daemon shutdown with cleanup, tests)."""
        self.nft.delete_table(FAMILY, self.table)


def _prefix(cidr: str) -> dict:
    addr, _, plen = cidr.partition("/")
    return {"prefix": {"addr": addr, "len": int(plen)}}
