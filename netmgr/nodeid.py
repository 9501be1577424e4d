"""A node's identity in the cluster: one ID, one name, one advertise address per live daemon.

Keys (under the cluster prefix), both on the node's lease::

    nodes/<node id>          {name, addr}
    node-names/<name>        {node}          a name is held by one node at a time

Three clashes break an overlay silently, so each is refused with one line that names the flag that fixes
it (:class:`IdentityClash`):

* the **same node ID** live at another address: a state dir copied from another host (a cloned VM image,
  a lab's template), whose daemons would each take the other's peers for their own;
* the **same advertise address** held by another node: both hosts would be the VTEP of each other's
  endpoints;
* the **same node name**, given with ``--node-name``. A name that was not given (the host name, which every
  simulated host on one machine shares, e.g. daemons started in ``ip netns exec`` without the flag) falls
  back to ``<host name>-<advertise address>`` instead, so such a setup just works.

A record that clashes may belong to a daemon that was just killed and whose lease has not expired yet:
the claim waits up to ``wait`` seconds (the lease TTL) for it to go before refusing. The claim itself is one
transaction that compares both keys' revisions, so two daemons starting at once cannot both win a name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import time
from dataclasses import dataclass

from netmgr import errors
from netmgr.store.base import Compare, Op

__all__ = ["Node", "IdentityClash", "make_node", "claim"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,252}")
_POLL = 0.25


@dataclass(frozen=True)
class Node:
    """This host as the cluster knows it."""

    id: str
    name: str
    addr: str  # the advertise address: the VTEP of its overlay networks
    #: the name to take when ``name`` (the host name, not given by the user) is held by another node; ""
    #: when the user gave the name (a clash is then refused)
    fallback_name: str = ""


class IdentityClash(errors.Conflict):
    """Another live node has this node's ID, name or advertise address: the daemon must not join."""


def make_node(node_id: str, name: str, addr: str) -> Node:
    """This host's node record: ``name`` as given (checked), or the host name with a unique fallback."""
    if name:
        if not _NAME.fullmatch(name):
            raise errors.InvalidConfig(f"invalid --node-name {name!r}: use letters, digits and '_.:@-' "
                                       "(at most 253, starting with a letter or digit)")
        return Node(node_id, name, addr)
    host = socket.gethostname() or "node"
    return Node(node_id, host, addr, fallback_name=f"{host}-{addr}")


async def claim(store, node: Node, wait: float) -> Node:
    """Put ``node``'s records on the store's lease; the node as claimed (maybe its fallback name)."""
    deadline = time.monotonic() + wait
    while True:
        clash, node = await _try_claim(store, node)
        if clash is None:
            return node
        if clash == "":
            continue  # another daemon wrote between our read and our transaction: read again
        if time.monotonic() >= deadline:
            raise IdentityClash(clash)
        await asyncio.sleep(_POLL)


async def _try_claim(store, node: Node) -> tuple[str | None, Node]:
    """One attempt: (None, node) when claimed, else (what clashes, node); takes the fallback name at once."""
    nodes = {kv.key.split("/", 1)[1]: kv for kv in await store.alist("nodes/")}
    clash = _id_or_addr_clash(node, nodes)
    if clash:
        return clash, node
    held = await store.aget(f"node-names/{node.name}")
    if held is not None and held.value.get("node") != node.id:
        if node.fallback_name:
            return await _try_claim(store, dataclasses.replace(node, name=node.fallback_name, fallback_name=""))
        other = nodes.get(held.value.get("node"))
        where = f" at {other.value.get('addr')}" if other else ""
        return (f"node name {node.name} is already taken in the cluster by node {held.value.get('node', '?')[:12]}"
                f"{where}: start this daemon with a --node-name of its own"), node
    mine = nodes.get(node.id)
    compares = [Compare(f"nodes/{node.id}", mine.mod_revision if mine else 0),
                Compare(f"node-names/{node.name}", held.mod_revision if held else 0)]
    ops = [Op(f"nodes/{node.id}", {"name": node.name, "addr": node.addr}),
           Op(f"node-names/{node.name}", {"node": node.id})]
    if mine is not None and mine.value.get("name") not in (None, node.name):
        old = await store.aget(f"node-names/{mine.value['name']}")  # renamed since its last start
        if old is not None and old.value.get("node") == node.id:
            compares.append(Compare(old.key, old.mod_revision))
            ops.append(Op(old.key))
    if await store.atxn(compares, ops, lease=True):
        return None, node
    return "", node  # another daemon wrote meanwhile: look again


def _id_or_addr_clash(node: Node, nodes: dict) -> str | None:
    mine = nodes.get(node.id)
    if mine is not None and mine.value.get("addr") != node.addr:
        return (f"node ID {node.id[:12]} is already live in the cluster at {mine.value.get('addr')} "
                f"({mine.value.get('name')}): this state dir was copied from another host; give this daemon "
                "a --state-dir of its own")
    for other_id, kv in nodes.items():
        if other_id != node.id and kv.value.get("addr") == node.addr:
            return (f"advertise address {node.addr} is already used by node {kv.value.get('name')} "
                    f"({other_id[:12]}): each host needs an --advertise-addr of its own")
    return None
