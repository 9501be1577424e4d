"""netmgr.dns.wire against hand-built packets: parsing, answers, compression, malformed input."""

from __future__ import annotations

import random
import struct

import pytest

from netmgr.dns import wire

# What `dig @127.0.0.11 Example.COM A` sends (dig 9.18): id 0xabcd, RD+AD, one
# question, an OPT record (UDP 1232) carrying an 8-byte client COOKIE option.
DIG_QUERY = b"".join(
    [
        bytes.fromhex("abcd 0120 0001 0000 0000 0001"),  # id, RD+AD, 1 question, 1 additional
        b"\x07Example\x03COM\x00" + bytes.fromhex("0001 0001"),  # the question: A, IN
        bytes.fromhex("00 0029 04d0 00000000 000c"),  # OPT: root, UDP 1232, no flags, 12 bytes
        bytes.fromhex("000a 0008 0102030405060708"),  # the COOKIE option: an 8-byte client cookie
    ]
)


def header(data: bytes) -> tuple[int, ...]:
    return struct.unpack_from("!HHHHHH", data)


# ------------------------------------------------------------------ queries


def test_parse_dig_query():
    q = wire.parse_query(DIG_QUERY)
    assert (q.id, q.qname, q.qtype, q.qclass) == (0xABCD, "Example.COM", wire.A, wire.CLASS_IN)
    assert q.rd and q.opcode == 0
    assert q.edns and q.udp_size == 1232
    assert q.question == b"\x07Example\x03COM\x00\x00\x01\x00\x01"


def test_build_query_round_trip_and_trailing_dot():
    data = wire.build_query("web.cnet.", wire.AAAA, 7, rd=False)
    assert data == wire.build_query("web.cnet", wire.AAAA, 7, rd=False)
    q = wire.parse_query(data)
    assert (q.id, q.qname, q.qtype, q.rd, q.edns, q.udp_size) == (
        7,
        "web.cnet",
        wire.AAAA,
        False,
        False,
        512,
    )


def test_edns_size_below_512_counts_as_512():
    q = wire.parse_query(wire.build_query("a", udp_size=100))
    assert q.edns and q.udp_size == 512


def test_root_name_query():
    q = wire.parse_query(wire.build_query(".", wire.NS))
    assert q.qname == "" and q.qtype == wire.NS


def test_odd_bytes_in_labels_are_escaped():
    data = (
        bytes.fromhex("00010000000100000000 0000".replace(" ", ""))
        + b"\x03a.b\x02\xff\\\x00\x00\x01\x00\x01"
    )
    assert wire.parse_query(data).qname == "a\\046b.\\255\\092"


# ------------------------------------------------------------------ answers


def test_a_answer_bytes_with_compression_pointer():
    q = wire.parse_query(wire.build_query("web", wire.A, 0x0102))
    out = wire.response(q, wire.NOERROR, [wire.rr_a("10.0.0.5", 600)])
    expected = (
        bytes.fromhex("010281800001000100000000")
        + b"\x03web\x00\x00\x01\x00\x01"
        + bytes.fromhex("c00c000100010000025800040a000005")
    )
    assert out == expected


def test_aaaa_and_ptr_answers_decode():
    q = wire.parse_query(wire.build_query("Web", wire.AAAA, 9, udp_size=4096))
    msg = wire.decode_message(wire.response(q, answers=[wire.rr_aaaa("fd00::5", 600)]))
    assert msg.id == 9 and msg.rcode == wire.NOERROR
    assert msg.questions == [("Web", wire.AAAA, wire.CLASS_IN)]
    assert [(r.name, r.type, r.ttl, r.data) for r in msg.answers] == [
        ("Web", wire.AAAA, 600, "fd00::5")
    ]
    assert [(r.type, r.rclass) for r in msg.additional] == [(wire.OPT, wire.EDNS_UDP_SIZE)]

    rev = wire.ip_to_ptr("10.0.0.5")
    q = wire.parse_query(wire.build_query(rev, wire.PTR, 10))
    msg = wire.decode_message(wire.response(q, answers=[wire.rr_ptr("web.cnet.", 600)]))
    assert [(r.name, r.type, r.data) for r in msg.answers] == [
        ("5.0.0.10.in-addr.arpa", wire.PTR, "web.cnet")
    ]


def test_response_flags_and_rcodes():
    q = wire.parse_query(DIG_QUERY)
    for rcode in (wire.NXDOMAIN, wire.SERVFAIL, wire.NOERROR):
        out = wire.response(q, rcode)
        qid, flags, qd, an, ns, ar = header(out)
        assert qid == 0xABCD and (qd, an, ns, ar) == (1, 0, 0, 1)
        assert flags & wire.QR and flags & wire.RD and flags & wire.RA
        assert not flags & wire.AA and not flags & wire.TC
        assert flags & 0xF == rcode
    assert not header(wire.response(wire.parse_query(wire.build_query("x", rd=False))))[1] & wire.RD


def test_no_opt_in_response_without_edns():
    q = wire.parse_query(wire.build_query("web"))
    assert header(wire.response(q))[5] == 0


def test_truncation_sets_tc_and_keeps_what_fits():
    records = [wire.rr_a(f"10.0.{i // 256}.{i % 256}", 600) for i in range(100)]
    q = wire.parse_query(wire.build_query("many"))
    out = wire.response(q, answers=records, max_size=512)
    _, flags, _, an, _, _ = header(out)
    assert flags & wire.TC and len(out) <= 512
    assert an == (512 - 12 - len(q.question)) // 16
    assert len(wire.decode_message(out).answers) == an
    out = wire.response(q, answers=records, max_size=65535)
    assert not header(out)[1] & wire.TC and header(out)[3] == 100


def test_error_response_keeps_id_and_rd():
    out = wire.error_response(b"\x12\x34\x01\x00" + b"\x00" * 8, wire.FORMERR)
    assert header(out) == (0x1234, wire.QR | wire.RD | wire.RA | wire.FORMERR, 0, 0, 0, 0)
    assert wire.error_response(b"\x12\x34", wire.FORMERR) is None
    assert wire.error_response(b"\x12\x34\x80\x00" + b"\x00" * 8, wire.FORMERR) is None


def test_encode_name():
    assert wire.encode_name("a.bc.") == b"\x01a\x02bc\x00"
    assert wire.encode_name(".") == wire.encode_name("") == b"\x00"
    with pytest.raises(ValueError):
        wire.encode_name("x" * 64 + ".com")
    with pytest.raises(ValueError):
        wire.encode_name("a..b")
    with pytest.raises(ValueError):
        wire.encode_name(".".join(["abcdefgh"] * 30))


# ------------------------------------------------------------------ malformed


def rcode_of(data: bytes) -> int | None:
    with pytest.raises(wire.WireError) as info:
        wire.parse_query(data)
    return info.value.rcode


def test_malformed_queries():
    good = wire.build_query("web", wire.A, 5)
    assert rcode_of(good[:11]) is None  # no header: drop
    assert rcode_of(b"\x00\x05\x81\x80" + good[4:]) is None  # a response: drop
    assert rcode_of(b"\x00\x05\x10\x00" + good[4:]) == wire.NOTIMP  # opcode 2 (STATUS)
    assert rcode_of(good[:4] + b"\x00\x00" + good[6:]) == wire.FORMERR  # no question
    assert rcode_of(good[:4] + b"\x00\x02" + good[6:]) == wire.FORMERR  # two questions
    assert rcode_of(good[:-3]) == wire.FORMERR  # type/class cut
    assert rcode_of(good[:14]) == wire.FORMERR  # label cut
    assert rcode_of(good[:12] + b"\xc0\x0c\x00\x01\x00\x01") == wire.FORMERR  # pointer in question
    assert rcode_of(good[:12] + b"\x40abc\x00\x00\x01\x00\x01") == wire.FORMERR  # label type 01
    long_name = (b"\x3f" + b"a" * 63) * 4 + b"\x00"
    assert rcode_of(good[:12] + long_name + b"\x00\x01\x00\x01") == wire.FORMERR  # > 255 bytes
    assert rcode_of(DIG_QUERY[:-4]) == wire.FORMERR  # OPT rdata cut
    two_opts = bytearray(DIG_QUERY + DIG_QUERY[-23:])
    two_opts[11] = 2
    assert rcode_of(bytes(two_opts)) == wire.FORMERR


def test_decode_message_rejects_pointer_loops():
    question = b"\x01a\x00\x00\x01\x00\x01"
    loop = (
        bytes.fromhex("000181800001000100000000") + question + b"\xc0\x13" + b"\x00" * 10
    )  # points at itself
    with pytest.raises(wire.WireError):
        wire.decode_message(loop)


def test_random_garbage_never_raises_anything_but_wire_error():
    rng = random.Random(1234)
    seeds = [
        DIG_QUERY,
        wire.build_query("web.cnet", wire.AAAA, 3),
        wire.build_query(wire.ip_to_ptr("fd00::1"), 12),
    ]
    for _ in range(5000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data[: rng.randint(0, len(data))]) if rng.random() < 0.3 else bytes(data)
        for parse in (wire.parse_query, wire.decode_message):
            try:
                parse(data)
            except wire.WireError:
                pass


# ------------------------------------------------------------------ reverse names


def test_ptr_to_ip():
    assert wire.ptr_to_ip("5.0.0.10.in-addr.arpa") == "10.0.0.5"
    assert wire.ptr_to_ip("5.0.0.10.IN-ADDR.ARPA.") == "10.0.0.5"
    v6 = wire.ip_to_ptr("fd00::1:5")
    assert v6.endswith(".ip6.arpa") and wire.ptr_to_ip(v6.upper() + ".") == "fd00::1:5"
    for bad in (
        "0.10.in-addr.arpa",
        "256.0.0.10.in-addr.arpa",
        "05.0.0.10.in-addr.arpa",
        "a.0.0.10.in-addr.arpa",
        "1.0.0.0.ip6.arpa",
        "g" + v6[1:],
        "web.cnet",
        "5.0.0.10.in-addr.arpa.example",
        "in-addr.arpa",
    ):
        assert wire.ptr_to_ip(bad) is None, bad


def test_ip_to_ptr():
    assert wire.ip_to_ptr("10.0.0.5") == "5.0.0.10.in-addr.arpa"
    assert wire.ip_to_ptr("::1") == "1." + "0." * 31 + "ip6.arpa"
