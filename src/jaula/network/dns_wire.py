"""The DNS message format (RFC 1035 section 4), as much as jaulad's network DNS needs: a query
parsed, an answer built. Pure and bounded: no recursion, a name decoded in at most
MAX_POINTERS jumps (each strictly backwards) and MAX_NAME bytes, every length checked against
the message; whatever does not fit raises FormatError (the caller answers FORMERR or drops it).

Names are kept as tuples of labels (bytes, the case as received); compare them lowercased.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")     # id, flags, qdcount, ancount, nscount, arcount
MAX_NAME = 255                        # octets of a name in wire form (RFC 1035 2.3.4)
MAX_LABEL = 63
MAX_POINTERS = 16                     # compression jumps allowed while decoding one name
MAX_MESSAGE = 65535
UDP_PAYLOAD = 512                     # what a plain (non-EDNS) UDP answer may carry

# types and classes
A, NS, CNAME, SOA, PTR, AAAA, OPT, ANY = 1, 2, 5, 6, 12, 28, 41, 255
IN = 1
# rcodes
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
# flag bits
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_SHIFT, OPCODE_MASK = 11, 0xF


class FormatError(ValueError):
    """The bytes are not a DNS message we accept (the text says where and why)."""


@dataclass(frozen=True)
class Question:
    name: tuple[bytes, ...]   # labels, case as received
    qtype: int
    qclass: int

    @property
    def lower(self) -> tuple[bytes, ...]:
        return tuple(label.lower() for label in self.name)


@dataclass(frozen=True)
class Message:
    id: int
    flags: int
    question: Question | None  # None: qdcount was 0 (a response may say nothing back)
    counts: tuple[int, int, int, int]
    question_end: int          # offset just past the question section

    @property
    def opcode(self) -> int:
        return (self.flags >> OPCODE_SHIFT) & OPCODE_MASK

    @property
    def is_response(self) -> bool:
        return bool(self.flags & QR)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def read_name(data: bytes, offset: int) -> tuple[tuple[bytes, ...], int]:
    """The name at `offset` -> (labels, offset just past it where it sits). Pointers are followed
    at most MAX_POINTERS times and only backwards, so a loop cannot run forever."""
    labels: list[bytes] = []
    end: int | None = None
    size = 1                     # the final zero octet
    jumps = 0
    pos = offset
    while True:
        if pos >= len(data):
            raise FormatError(f"name at {offset}: runs past the end of the message")
        length = data[pos]
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= len(data):
                raise FormatError(f"name at {offset}: compression pointer cut short")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if end is None:
                end = pos + 2
            jumps += 1
            if jumps > MAX_POINTERS:
                raise FormatError(f"name at {offset}: more than {MAX_POINTERS} compression pointers")
            if target >= pos:
                raise FormatError(f"name at {offset}: compression pointer to {target} does not point backwards")
            pos = target
            continue
        if kind != 0:
            raise FormatError(f"name at {offset}: label type {kind >> 6:#x} is not supported")
        if length == 0:
            return tuple(labels), (end if end is not None else pos + 1)
        if pos + 1 + length > len(data):
            raise FormatError(f"name at {offset}: label runs past the end of the message")
        size += 1 + length
        if size > MAX_NAME:
            raise FormatError(f"name at {offset}: longer than {MAX_NAME} octets")
        labels.append(bytes(data[pos + 1:pos + 1 + length]))
        pos += 1 + length


def encode_name(labels: tuple[bytes, ...] | list[bytes]) -> bytes:
    out = bytearray()
    for label in labels:
        if not 0 < len(label) <= MAX_LABEL:
            raise FormatError(f"label {label!r}: 1 to {MAX_LABEL} octets")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > MAX_NAME:
        raise FormatError(f"name {b'.'.join(labels)!r}: longer than {MAX_NAME} octets")
    return bytes(out)


def _skip_records(data: bytes, pos: int, count: int) -> int:
    """Past `count` resource records from `pos`, each checked to fit in the message."""
    for _ in range(count):
        _, pos = read_name(data, pos)
        if pos + 10 > len(data):
            raise FormatError(f"record at {pos}: header cut short")
        rdlength = struct.unpack_from("!H", data, pos + 8)[0]
        pos += 10 + rdlength
        if pos > len(data):
            raise FormatError(f"record at {pos - rdlength - 10}: data runs past the end of the message")
    return pos


def parse(data: bytes) -> Message:
    """A whole message: header, at most one question, every record's bounds checked; trailing
    bytes refused. FormatError for anything else."""
    if len(data) < HEADER.size:
        raise FormatError(f"{len(data)} octets: shorter than a DNS header ({HEADER.size})")
    if len(data) > MAX_MESSAGE:
        raise FormatError(f"{len(data)} octets: longer than a DNS message may be")
    mid, flags, qd, an, ns, ar = HEADER.unpack_from(data, 0)
    if qd > 1:
        raise FormatError(f"{qd} questions: one per message is supported")
    pos = HEADER.size
    question = None
    if qd == 1:
        name, pos = read_name(data, pos)
        if pos + 4 > len(data):
            raise FormatError("question: type and class cut short")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        question = Question(name, qtype, qclass)
    question_end = pos
    pos = _skip_records(data, pos, an + ns + ar)
    if pos != len(data):
        raise FormatError(f"{len(data) - pos} octets after the last record")
    return Message(mid, flags, question, (qd, an, ns, ar), question_end)


def header_id(data: bytes) -> int | None:
    """The id of something that may be a message (to answer FORMERR to), None if too short."""
    return struct.unpack_from("!H", data, 0)[0] if len(data) >= 2 else None


def error_reply(mid: int, flags: int, rcode: int) -> bytes:
    """A header-only answer (FORMERR to what could not be parsed, NOTIMP, REFUSED)."""
    out_flags = QR | (flags & (OPCODE_MASK << OPCODE_SHIFT)) | (flags & RD) | RA | rcode
    return HEADER.pack(mid, out_flags, 0, 0, 0, 0)


@dataclass(frozen=True)
class Record:
    """One answer record; its owner is the question's name (a pointer to it)."""
    rtype: int
    ttl: int
    rdata: bytes


def a_record(address: str, ttl: int) -> Record:
    ip = ipaddress.ip_address(address)
    return Record(A if ip.version == 4 else AAAA, ttl, ip.packed)


def ptr_record(target: tuple[bytes, ...], ttl: int) -> Record:
    return Record(PTR, ttl, encode_name(target))


def reply(query: Message, rcode: int, answers: list[Record], *, authoritative: bool,
          limit: int = MAX_MESSAGE) -> bytes:
    """The answer to `query` (which has a question): its question echoed as received, then the
    answers, owner names compressed to the question's; past `limit` octets the answers that do
    not fit are left out and TC set (a UDP client then asks again over TCP)."""
    assert query.question is not None
    q = query.question
    flags = QR | (query.flags & (OPCODE_MASK << OPCODE_SHIFT)) | (query.flags & RD) | RA | rcode
    if authoritative:
        flags |= AA
    body = bytearray(encode_name(q.name) + struct.pack("!HH", q.qtype, q.qclass))
    count = 0
    for rr in answers:
        rec = struct.pack("!HHHIH", 0xC000 | HEADER.size, rr.rtype, IN, rr.ttl, len(rr.rdata)) + rr.rdata
        if HEADER.size + len(body) + len(rec) > limit:
            flags |= TC
            break
        body += rec
        count += 1
    return HEADER.pack(query.id, flags, 1, count, 0, 0) + bytes(body)


def query(mid: int, name: tuple[bytes, ...], qtype: int, *, rd: bool = True) -> bytes:
    """A query message (tests, and the forwarder's own checks)."""
    return HEADER.pack(mid, RD if rd else 0, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, IN)


def with_id(data: bytes, mid: int) -> bytes:
    return struct.pack("!H", mid) + data[2:]


def answers(data: bytes) -> list[tuple[int, bytes]]:
    """(type, rdata) of each answer record of a response (tests and tools); FormatError if malformed."""
    msg = parse(data)
    pos = msg.question_end
    out = []
    for _ in range(msg.counts[1]):
        _, pos = read_name(data, pos)
        rtype, _, _, rdlength = struct.unpack_from("!HHIH", data, pos)
        out.append((rtype, bytes(data[pos + 10:pos + 10 + rdlength])))
        pos += 10 + rdlength
    return out


def reverse_address(labels: tuple[bytes, ...]) -> str | None:
    """The address a complete reverse name (in-addr.arpa / ip6.arpa, lowercased labels) stands
    for, else None."""
    if labels[-2:] == (b"in-addr", b"arpa") and len(labels) == 6:
        parts = labels[:4]
        if all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
            return ".".join(p.decode() for p in reversed(parts))
        return None
    if labels[-2:] == (b"ip6", b"arpa") and len(labels) == 34:
        nibbles = labels[:32]
        if all(len(n) == 1 and n in b"0123456789abcdef" for n in nibbles):
            digits = "".join(n.decode() for n in reversed(nibbles))
            return str(ipaddress.IPv6Address(int(digits, 16)))
    return None
