"""Service discovery records: which names each sandbox resolves at 127.0.0.11.

A container on a user-defined network is known there by its name, its
12-character ID and its aliases (``--network-alias``, ``connect --alias``),
also as ``NAME.NETWORK``. A sandbox resolves only names of the networks it
is on itself, so no answer crosses to a network the asker is not on.

The controller updates the records on its worker thread as endpoints come
and go; the DNS server reads them on the event loop for every query. Each
update replaces whole tuples in dicts (atomic under the GIL), so a reader
never sees half an update and no lock is needed on the query path.
"""

from __future__ import annotations

from netmgr.dns import Answer, ptr_to_ip
from netmgr.dns.wire import PTR
from netmgr.model import GATEWAY_NETWORK, Endpoint, Network


def _names_of(ep: Endpoint) -> list[str]:
    return [n.lower() for n in (ep.name, ep.container_id[:12], *ep.aliases) if n]


class ServiceRecords:
    """Names and reverse names per network, and the networks of each sandbox.

    Updates cost O(names of one endpoint), whatever the size of the network.
    """

    def __init__(self) -> None:
        self._owners: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {}  # net -> name -> ep id -> addrs
        self._names: dict[str, dict[str, tuple[str, ...]]] = {}  # net -> name -> addrs (what queries read)
        self._ptr: dict[str, dict[str, str]] = {}  # net -> address -> "name.network"
        self._net_names: dict[str, str] = {}  # network name -> id
        self._members: dict[str, tuple[str, ...]] = {}  # container id -> DNS-enabled network ids

    @staticmethod
    def serves(net: Network) -> bool:
        """Only user-defined networks with interfaces have discovery (as Docker); not the gateway bridge."""
        return not net.predefined and bool(net.pools) and net.name != GATEWAY_NETWORK

    def add_endpoint(self, ep: Endpoint, net: Network) -> None:
        """An endpoint was stored: its names resolve on its network from now on."""
        if not self.serves(net):
            return
        self._net_names[net.name.lower()] = net.id
        addrs = tuple(a.split("/")[0] for a in (ep.ipv4, ep.ipv6) if a)
        owners = self._owners.setdefault(net.id, {})
        names = self._names.setdefault(net.id, {})
        for name in _names_of(ep):
            owners.setdefault(name, {})[ep.id] = addrs
            names[name] = tuple(a for group in owners[name].values() for a in group)
        ptr = self._ptr.setdefault(net.id, {})
        for addr in addrs:
            ptr[addr] = f"{ep.name}.{net.name}"
        self._members[ep.container_id] = tuple({*self._members.get(ep.container_id, ()), net.id})

    def remove_endpoint(self, ep: Endpoint, net: Network | None) -> None:
        """An endpoint is gone: its names stop resolving at once."""
        if net is None or net.id not in self._owners:
            return
        owners, names, ptr = self._owners[net.id], self._names[net.id], self._ptr[net.id]
        for name in _names_of(ep):
            group = owners.get(name, {})
            group.pop(ep.id, None)
            if group:
                names[name] = tuple(a for g in group.values() for a in g)
            else:
                owners.pop(name, None)
                names.pop(name, None)
        for addr in (a.split("/")[0] for a in (ep.ipv4, ep.ipv6) if a):
            ptr.pop(addr, None)
        remaining = tuple(n for n in self._members.get(ep.container_id, ()) if n != net.id)
        if remaining:
            self._members[ep.container_id] = remaining
        else:
            self._members.pop(ep.container_id, None)

    def remove_network(self, net: Network) -> None:
        """A network was removed."""
        for table in (self._names, self._ptr, self._owners):
            table.pop(net.id, None)
        self._net_names.pop(net.name.lower(), None)

    def resolve(self, sandbox_id: str, qname: str, qtype: int) -> Answer | None:
        """The DNS server's resolver: an Answer for our names, None to forward the query."""
        networks = self._members.get(sandbox_id, ())
        if not networks:
            return None
        if qtype == PTR:
            return self._reverse(networks, qname)
        found: list[str] = []
        for nid in networks:
            found += self._names.get(nid, {}).get(qname, ())
        if not found and "." in qname:
            name, _, network = qname.partition(".")
            nid = self._net_names.get(network)
            if nid in networks:
                found += self._names.get(nid, {}).get(name, ())
        if found:
            return Answer(addresses=tuple(dict.fromkeys(found)))
        if "." not in qname:
            return Answer(nxdomain=True)  # a bare name that is not a container: no upstream knows it
        return None

    def _reverse(self, networks: tuple[str, ...], qname: str) -> Answer | None:
        ip = ptr_to_ip(qname)
        if ip is None:
            return None
        for nid in networks:
            name = self._ptr.get(nid, {}).get(ip)
            if name:
                return Answer(names=(name,))
        return None
