"""The few parts of the DNS wire format (RFC 1035) the embedded resolver needs.

Pure functions over ``bytes``; nothing here does I/O. The hot path is
:func:`parse_query` plus :func:`response` with records from :func:`rr_a` /
:func:`rr_aaaa` / :func:`rr_ptr`: about 15 µs of Python per query in all.

* A query must have exactly one question and opcode QUERY. Anything else is
  answered FORMERR / NOTIMP (:class:`WireError` carries the rcode), or dropped
  when not even the 12-byte header is there or the packet is a response.
* An EDNS OPT record (RFC 6891) in the additional section is honoured for its
  UDP payload size, and the response then carries an OPT record too.
* Answer owner names are a compression pointer to the question (offset 12),
  and the question is echoed byte for byte (so its letter case survives).
* Names come out as text without the trailing dot; bytes that are not plain
  printable ASCII, and ``.`` or ``\\`` inside a label, are escaped as
  ``\\DDD`` the way ``dig`` prints them, so such a name never matches a
  container name.

:func:`build_query` and :func:`decode_message` are the client side, for tests
and tools.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "AA",
    "AAAA",
    "ANY",
    "CLASS_IN",
    "CNAME",
    "FORMERR",
    "MX",
    "NOERROR",
    "NOTIMP",
    "NS",
    "NXDOMAIN",
    "OPT",
    "PTR",
    "QR",
    "RA",
    "RD",
    "REFUSED",
    "SERVFAIL",
    "SOA",
    "SRV",
    "TC",
    "TXT",
    "A",
    "Message",
    "Query",
    "Record",
    "WireError",
    "build_query",
    "decode_message",
    "encode_name",
    "error_response",
    "ip_to_ptr",
    "parse_query",
    "ptr_to_ip",
    "response",
    "rr_a",
    "rr_aaaa",
    "rr_ptr",
]

# Record types and class (RFC 1035 3.2.2, RFC 3596, RFC 2782, RFC 6891).
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 255
CLASS_IN = 1
# Response codes (RFC 1035 4.1.1).
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
# Header flag bits.
QR, AA, TC, RD, RA, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0010
OPCODE_MASK = 0x7800

CLASSIC_UDP_SIZE = 512  # without EDNS (RFC 1035 4.2.1)
EDNS_UDP_SIZE = 1232  # what we advertise (the DNS flag day 2020 value)
MAX_NAME = 255

_HEADER = struct.Struct("!HHHHHH")
_TYPE_CLASS = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_POINTER_TO_QUESTION = b"\xc0\x0c"
_OPT_RR = b"\x00" + _RR_FIXED.pack(OPT, EDNS_UDP_SIZE, 0, 0)
# Label bytes printed as-is; everything else is escaped (see _label_text).
_PLAIN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*/+=:~!#%&'<>?^`{|}[],"


class WireError(ValueError):
    """A malformed or unsupported message.

    ``rcode`` is what to answer (FORMERR, NOTIMP), or None when the packet
    must be dropped silently (shorter than a header, or a response).
    """

    def __init__(self, message: str, rcode: int | None = FORMERR) -> None:
        super().__init__(message)
        self.rcode = rcode


@dataclass(slots=True)
class Query:
    """One parsed query: header fields, its single question, and EDNS facts.

    Treat it as read-only (not frozen only because a frozen dataclass takes
    microseconds to build, and one is built per query).
    """

    id: int
    flags: int
    qname: str  # as sent (letter case kept), no trailing dot; "" is the root
    qtype: int
    qclass: int
    question: bytes  # the raw question section, echoed in responses
    edns: bool = False
    udp_size: int = CLASSIC_UDP_SIZE  # the largest UDP response the client accepts

    @property
    def rd(self) -> bool:
        """Recursion desired."""
        return bool(self.flags & RD)

    @property
    def opcode(self) -> int:
        """The opcode (0 = QUERY)."""
        return (self.flags & OPCODE_MASK) >> 11


@dataclass(frozen=True, slots=True)
class Record:
    """A decoded resource record; ``data`` is text for A/AAAA/PTR/CNAME/NS, raw bytes otherwise."""

    name: str
    type: int
    rclass: int
    ttl: int
    data: str | bytes


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message (the client side: tests and tools)."""

    id: int
    flags: int
    questions: list[tuple[str, int, int]] = field(default_factory=list)
    answers: list[Record] = field(default_factory=list)
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)

    @property
    def rcode(self) -> int:
        """The response code (low four bits of the header; no extended rcode)."""
        return self.flags & 0xF


# ---------------------------------------------------------------- names


def _label_text(label: bytes) -> str:
    if not label.translate(None, _PLAIN):  # every byte is plain (translate runs in C)
        return label.decode("ascii")
    return "".join(chr(b) if b in _PLAIN else f"\\{b:03d}" for b in label)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """Decode the name at ``offset``; return it and the offset just after it."""
    labels: list[str] = []
    end = -1  # where the name ends in the message, once a pointer was followed
    seen = 0
    wire_len = 1
    n = len(data)
    while True:
        if offset >= n:
            raise WireError("name runs past the end of the message")
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length & 0xC0 == 0xC0:
            if offset + 1 >= n:
                raise WireError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[offset + 1]
            if end < 0:
                end = offset + 2
            seen += 1
            if target >= offset or seen > 64:
                raise WireError("compression pointer loop")
            offset = target
            continue
        if length & 0xC0:
            raise WireError("unsupported label type")
        wire_len += length + 1
        if wire_len > MAX_NAME:
            raise WireError("name longer than 255 bytes")
        start = offset + 1
        offset = start + length
        if offset > n:
            raise WireError("label runs past the end of the message")
        labels.append(_label_text(data[start:offset]))
    return ".".join(labels), (end if end >= 0 else offset)


def encode_name(name: str) -> bytes:
    """The uncompressed wire form of a dotted name (trailing dot optional)."""
    name = name.removesuffix(".")
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in DNS name {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise ValueError(f"DNS name longer than 255 bytes: {name!r}")
    return bytes(out)


# ---------------------------------------------------------------- server side


def _question_name(data: bytes) -> tuple[str, int]:
    """The question's name (at offset 12, no compression allowed) and the offset after it."""
    labels = []
    offset = 12
    try:
        while length := data[offset]:
            if length > 63:
                raise WireError("compression or unsupported label type in the question")
            start = offset + 1
            offset = start + length
            labels.append(data[start:offset])
    except IndexError:
        raise WireError("question runs past the end of the message") from None
    offset += 1
    if offset > len(data):
        raise WireError("question runs past the end of the message")
    if offset - 12 > MAX_NAME:
        raise WireError("name longer than 255 bytes")
    raw = b".".join(labels)
    # Fast path: only plain bytes, and the only dots are the ones join added.
    if len(raw.translate(None, _PLAIN)) == len(labels) - 1 if labels else True:
        return raw.decode("ascii"), offset
    return ".".join(_label_text(label) for label in labels), offset


def parse_query(data: bytes) -> Query:
    """Parse a query; raise :class:`WireError` (with the rcode to answer) if unusable."""
    if len(data) < 12:
        raise WireError("shorter than a DNS header", None)
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        raise WireError("not a query", None)
    if flags & OPCODE_MASK:
        raise WireError("opcode not implemented", NOTIMP)
    if qdcount != 1:
        raise WireError("a query needs exactly one question")
    qname, offset = _question_name(data)
    end = offset + 4
    if end > len(data):
        raise WireError("truncated question")
    qtype, qclass = _TYPE_CLASS.unpack_from(data, offset)
    if ancount or nscount or arcount:
        edns, udp_size = _edns(data, end, ancount + nscount, arcount)
        return Query(qid, flags, qname, qtype, qclass, data[12:end], edns, udp_size)
    return Query(qid, flags, qname, qtype, qclass, data[12:end])


def _edns(data: bytes, offset: int, skip: int, arcount: int) -> tuple[bool, int]:
    """Walk the records after the question; an OPT record's presence and UDP size."""
    edns, udp_size = False, CLASSIC_UDP_SIZE
    for i in range(skip + arcount):
        _, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise WireError("truncated resource record")
        rtype, rclass, _, rdlength = _RR_FIXED.unpack_from(data, offset)
        offset += 10 + rdlength
        if offset > len(data):
            raise WireError("truncated rdata")
        if i >= skip and rtype == OPT:
            if edns:
                raise WireError("more than one OPT record")
            edns, udp_size = True, max(rclass, CLASSIC_UDP_SIZE)
    return edns, udp_size


def rr_a(address: str, ttl: int) -> bytes:
    """An A record owned by the question's name."""
    return (
        _POINTER_TO_QUESTION
        + _RR_FIXED.pack(A, CLASS_IN, ttl, 4)
        + socket.inet_pton(socket.AF_INET, address)
    )


def rr_aaaa(address: str, ttl: int) -> bytes:
    """An AAAA record owned by the question's name."""
    return (
        _POINTER_TO_QUESTION
        + _RR_FIXED.pack(AAAA, CLASS_IN, ttl, 16)
        + socket.inet_pton(socket.AF_INET6, address)
    )


def rr_ptr(target: str, ttl: int) -> bytes:
    """A PTR record owned by the question's name, pointing at ``target``."""
    rdata = encode_name(target)
    return _POINTER_TO_QUESTION + _RR_FIXED.pack(PTR, CLASS_IN, ttl, len(rdata)) + rdata


def response(
    query: Query,
    rcode: int = NOERROR,
    answers: Sequence[bytes] = (),
    *,
    max_size: int = 65535,
    ra: bool = True,
) -> bytes:
    """The response to ``query`` with pre-encoded answer records.

    Records that do not fit in ``max_size`` are left out and TC is set (the
    client then asks again over TCP).
    """
    flags = QR | (query.flags & (OPCODE_MASK | RD | CD)) | (RA if ra else 0) | rcode
    opt = _OPT_RR if query.edns else b""
    size = 12 + len(query.question) + len(opt)
    body = [query.question]
    count = 0
    for rr in answers:
        size += len(rr)
        if size > max_size:
            flags |= TC
            break
        body.append(rr)
        count += 1
    return _HEADER.pack(query.id, flags, 1, count, 0, 1 if opt else 0) + b"".join(body) + opt


def error_response(data: bytes, rcode: int) -> bytes | None:
    """A bare response (no question) with ``rcode`` to whatever ``data`` is; None if no header."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    if flags & QR:
        return None
    return _HEADER.pack(qid, QR | (flags & (OPCODE_MASK | RD | CD)) | RA | rcode, 0, 0, 0, 0)


# ---------------------------------------------------------------- client side


def build_query(
    qname: str,
    qtype: int = A,
    qid: int = 0,
    *,
    rd: bool = True,
    udp_size: int | None = None,
    qclass: int = CLASS_IN,
) -> bytes:
    """A query for ``qname``; with ``udp_size``, an EDNS OPT record advertising it."""
    header = _HEADER.pack(qid, RD if rd else 0, 1, 0, 0, 1 if udp_size else 0)
    opt = b"\x00" + _RR_FIXED.pack(OPT, udp_size, 0, 0) if udp_size else b""
    return header + encode_name(qname) + _TYPE_CLASS.pack(qtype, qclass) + opt


def _read_records(data: bytes, offset: int, count: int) -> tuple[list[Record], int]:
    records = []
    for _ in range(count):
        name, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise WireError("truncated resource record")
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, offset)
        start = offset + 10
        offset = start + rdlength
        if offset > len(data):
            raise WireError("truncated rdata")
        rdata: str | bytes = data[start:offset]
        if rtype == A and rdlength == 4:
            rdata = socket.inet_ntop(socket.AF_INET, rdata)
        elif rtype == AAAA and rdlength == 16:
            rdata = socket.inet_ntop(socket.AF_INET6, rdata)
        elif rtype in (PTR, CNAME, NS):
            rdata = _read_name(data, start)[0]
        records.append(Record(name, rtype, rclass, ttl, rdata))
    return records, offset


def decode_message(data: bytes) -> Message:
    """Decode any message (compression followed); raise :class:`WireError` if malformed."""
    if len(data) < 12:
        raise WireError("shorter than a DNS header", None)
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    offset = 12
    questions = []
    for _ in range(qdcount):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise WireError("truncated question")
        questions.append((name, *_TYPE_CLASS.unpack_from(data, offset)))
        offset += 4
    answers, offset = _read_records(data, offset, ancount)
    authority, offset = _read_records(data, offset, nscount)
    additional, offset = _read_records(data, offset, arcount)
    return Message(qid, flags, questions, answers, authority, additional)


# ---------------------------------------------------------------- reverse names


def ptr_to_ip(qname: str) -> str | None:
    """The address a reverse name stands for (``4.3.2.1.in-addr.arpa`` → ``1.2.3.4``); else None.

    IPv6 comes back in compressed form. Case and a trailing dot do not matter;
    partial reverse names (a whole subnet) are None.
    """
    name = qname.lower().rstrip(".")
    if name.endswith(".in-addr.arpa"):
        parts = name[:-13].split(".")
        if len(parts) != 4:
            return None
        for part in parts:
            if not (part.isdigit() and part.isascii() and len(part) <= 3 and int(part) <= 255):
                return None
            if len(part) > 1 and part[0] == "0":
                return None
        return ".".join(reversed(parts))
    if name.endswith(".ip6.arpa"):
        nibbles = name[:-9].split(".")
        if len(nibbles) != 32 or any(len(x) != 1 or x not in "0123456789abcdef" for x in nibbles):
            return None
        return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
    return None


def ip_to_ptr(address: str) -> str:
    """The reverse name of an address, no trailing dot: ``1.2.3.4`` → ``4.3.2.1.in-addr.arpa``."""
    return ipaddress.ip_address(address).reverse_pointer
