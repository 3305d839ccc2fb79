"""jaula.network.dns_wire: the DNS message parser refuses malformed input with FormatError (never
another exception, never a loop), bounded on compression pointers and name length; what it builds
it parses back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaula.network import dns_wire as w

HDR = struct.Struct("!HHHHHH")


def _q(name: bytes, qtype: int = w.A) -> bytes:
    return HDR.pack(7, w.RD, 1, 0, 0, 0) + name + struct.pack("!HH", qtype, w.IN)


def test_a_query_parses_and_its_reply_parses_back() -> None:
    data = w.query(0x1234, (b"Web1", b"jaula"), w.A)
    msg = w.parse(data)
    assert (msg.id, msg.opcode, msg.is_response) == (0x1234, 0, False)
    assert msg.question == w.Question((b"Web1", b"jaula"), w.A, w.IN)
    assert msg.question.lower == (b"web1", b"jaula")
    out = w.reply(msg, w.NOERROR, [w.a_record("10.1.2.3", 0), w.a_record("fd00::5", 0)], authoritative=True)
    back = w.parse(out)
    assert back.is_response and back.flags & w.AA and back.flags & w.RD and back.rcode == w.NOERROR
    assert back.question == msg.question                      # echoed as asked, case kept
    assert w.answers(out) == [(w.A, bytes([10, 1, 2, 3])), (w.AAAA, bytes.fromhex("fd00" + "00" * 13 + "05"))]


def test_compressed_names_and_ptr_records() -> None:
    msg = w.parse(w.query(1, (b"4", b"3", b"2", b"10", b"in-addr", b"arpa"), w.PTR))
    out = w.reply(msg, w.NOERROR, [w.ptr_record((b"web1", b"jaula"), 0)], authoritative=True)
    [(rtype, rdata)] = w.answers(out)
    assert rtype == w.PTR and w.read_name(rdata, 0)[0] == (b"web1", b"jaula")
    # an answer's owner is a pointer to the question's name (offset 12)
    assert out[len(out) - len(rdata) - 12:][:2] == b"\xc0\x0c"


@pytest.mark.parametrize(("data", "why"), [
    (b"\x00" * 11, "shorter than a DNS header"),
    (HDR.pack(1, 0, 2, 0, 0, 0), "2 questions"),
    (HDR.pack(1, 0, 1, 0, 0, 0) + b"\x03ww", "past the end"),           # a label cut short
    (_q(b"\xc0\x0c"), "does not point backwards"),                       # a pointer to itself
    (_q(b"\x40abc\x00"), "label type"),                                  # the reserved 01 label type
    (_q(b"\x3f" + b"a" * 63) [:-10], "past the end"),
    (_q(b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"), "longer than 255"),
    (HDR.pack(1, 0, 1, 0, 0, 0) + b"\x00\x00", "cut short"),             # qtype without qclass
    (_q(b"\x00") + b"junk", "after the last record"),
    (HDR.pack(1, 0, 1, 1, 0, 0) + b"\x00" + struct.pack("!HH", 1, 1), "runs past the end"),   # a missing answer
    (HDR.pack(1, 0, 1, 1, 0, 0) + b"\x00" + struct.pack("!HH", 1, 1) + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 9)
     + b"\x01", "data runs past"),
])
def test_malformed_messages_are_refused_saying_why(data: bytes, why: str) -> None:
    with pytest.raises(w.FormatError, match=why):
        w.parse(data)


def test_a_pointer_chain_is_bounded() -> None:
    # each label is followed by a pointer to the label before it: a chain of backwards jumps
    body = bytearray(b"\x01a\x00")
    prev = HDR.size
    for _ in range(40):
        off = HDR.size + len(body)
        body += b"\x01b" + struct.pack("!H", 0xC000 | prev)
        prev = off
    data = HDR.pack(1, 0, 0, 0, 0, 0) + bytes(body)
    with pytest.raises(w.FormatError, match="more than 16 compression pointers"):
        w.read_name(data, len(data) - 4)


def test_a_pointer_loop_ends() -> None:
    # "\x01a" then a pointer back to it: a forward read comes back to the pointer again and again
    data = HDR.pack(1, 0, 0, 0, 0, 0) + b"\x01a\xc0\x0c"
    with pytest.raises(w.FormatError, match="compression pointer"):
        w.read_name(data, HDR.size)


def test_error_reply_keeps_the_id_and_opcode() -> None:
    out = w.error_reply(99, (2 << w.OPCODE_SHIFT) | w.RD, w.NOTIMP)
    msg = w.parse(out)
    assert (msg.id, msg.opcode, msg.rcode, msg.question) == (99, 2, w.NOTIMP, None)


def test_a_reply_past_its_limit_is_truncated_with_tc() -> None:
    msg = w.parse(w.query(5, (b"many",), w.A))
    out = w.reply(msg, w.NOERROR, [w.a_record(f"10.0.{i // 250}.{i % 250}", 0) for i in range(100)],
                  authoritative=True, limit=w.UDP_PAYLOAD)
    assert len(out) <= w.UDP_PAYLOAD and w.parse(out).flags & w.TC and 0 < len(w.answers(out)) < 100


def test_reverse_names() -> None:
    assert w.reverse_address((b"4", b"3", b"2", b"10", b"in-addr", b"arpa")) == "10.2.3.4"
    assert w.reverse_address((b"300", b"3", b"2", b"10", b"in-addr", b"arpa")) is None
    assert w.reverse_address((b"3", b"2", b"10", b"in-addr", b"arpa")) is None        # not a whole address
    six = (b"5",) + tuple([b"0"] * 27) + (b"0", b"0", b"d", b"f") + (b"ip6", b"arpa")
    assert w.reverse_address(six) == "fd00::5"
    assert w.reverse_address((b"x",) * 32 + (b"ip6", b"arpa")) is None


def test_names_too_long_to_encode() -> None:
    with pytest.raises(w.FormatError):
        w.encode_name((b"a" * 64,))
    with pytest.raises(w.FormatError):
        w.encode_name((b"a" * 63,) * 5)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_parse_or_raise_format_error(data: bytes) -> None:
    try:
        msg = w.parse(data)
    except w.FormatError:
        return
    assert msg.question is None or len(w.encode_name(msg.question.name)) <= w.MAX_NAME


@settings(max_examples=600, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=63), min_size=0, max_size=6), st.integers(0, 65535),
       st.binary(max_size=40), st.integers(12, 80))
def test_mutated_queries_parse_or_raise_format_error(labels: list[bytes], qtype: int, tail: bytes,
                                                     cut: int) -> None:
    """Well-formed queries, then cut, extended or given random counts: FormatError or a message."""
    try:
        good = w.query(1, tuple(labels), qtype)
    except w.FormatError:
        return
    assert w.parse(good).question == w.Question(tuple(labels), qtype, w.IN)
    for data in (good[:cut], good + tail, good[:4] + tail[:8].ljust(8, b"\xff") + good[12:],
                 good[:12] + b"\xc0" + bytes([cut]) + good[12:]):
        try:
            w.parse(data)
        except w.FormatError:
            pass
