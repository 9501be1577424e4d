"""Watch nftables changes made by anyone (``nft flush ruleset``, dockerd, iptables).

The kernel multicasts every ruleset change to the NFNLGRP_NFTABLES group of
NETLINK_NETFILTER. :func:`open_socket` subscribes; :func:`parse` turns a
datagram into ``(message type, family, table)`` tuples, so the daemon can
react to what concerns it: its own tables or chains being deleted, or
another table called ``filter`` (iptables-nft, as dockerd uses) changing.
"""

from __future__ import annotations

import socket
import struct

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSET, NFT_MSG_DELSET = 9, 11
DELETIONS = {NFT_MSG_DELTABLE, NFT_MSG_DELCHAIN, NFT_MSG_DELRULE, NFT_MSG_DELSET}
STRUCTURE = {NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE} | DELETIONS
FAMILIES = {1: "inet", 2: "ip", 7: "bridge", 10: "ip6"}
_HDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")


def open_socket() -> socket.socket:
    """A non-blocking socket that receives every nftables change in this namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                         NETLINK_NETFILTER)
    sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
    return sock


def parse(data: bytes) -> list[tuple[int, str, str]]:
    """``(nft message type, family, table name)`` of each nftables message in a datagram."""
    out = []
    offset = 0
    while offset + 20 <= len(data):
        length, mtype, _flags, _seq, _pid = _HDR.unpack_from(data, offset)
        if length < 16:
            break
        if mtype >> 8 == NFNL_SUBSYS_NFTABLES:
            family = FAMILIES.get(data[offset + 16], str(data[offset + 16]))
            out.append((mtype & 0xFF, family, _table_attr(data, offset + 20, offset + length)))
        offset += length + (-length % 4)
    return out


def _table_attr(data: bytes, pos: int, end: int) -> str:
    # attribute 1 is the table name in table, chain, rule, set and element messages
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4:
            break
        if atype & 0x3FFF == 1:
            return data[pos + 4 : pos + alen].split(b"\0", 1)[0].decode(errors="replace")
        pos += alen + (-alen % 4)
    return ""


def concerns(events: list[tuple[int, str, str]], own_table: str) -> tuple[bool, bool]:
    """(our tables lost something, iptables' filter table changed) for a batch of events."""
    ours = any(t == own_table and m in DELETIONS for m, _f, t in events)
    filt = any(t == "filter" and f in ("ip", "ip6") and m in STRUCTURE for m, f, t in events)
    return ours, filt
