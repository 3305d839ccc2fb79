"""A network's managed DNS without sockets: which questions it answers itself (jaula.network.dns),
the dns.* settings (checked, defaults), instances' resolv.conf, and the answers DnsService gives
from a real database (running instances only, this network's only, case-insensitive)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaula.daemon.db import Database
from jaula.daemon.dns_service import DnsService, Listener, Zone, zone_of
from jaula.daemon.models import InstanceRow
from jaula.daemon.network_tables import AddressRow, NetworkRow
from jaula.errors import ConfigError
from jaula.network import config, dns
from jaula.network import dns_wire as w


def _question(name: str, qtype: int = w.A) -> w.Question:
    return w.Question(tuple(name.encode().split(b".")) if name else (), qtype, w.IN)


@pytest.mark.parametrize(("name", "kind", "instance"), [
    ("web1", "name", "web1"),
    ("WEB1.Lab", "name", "web1"),
    ("lab", "nodata", None),
    ("a.web1.lab", "nxdomain", None),
    ("bad_name", "nxdomain", None),          # not an instance name: never forwarded either
    ("deb.debian.org", "forward", None),
    ("web1.other", "forward", None),
    ("", "forward", None),
])
def test_which_names_the_network_answers(name: str, kind: str, instance: str | None) -> None:
    v = dns.classify(_question(name), "lab", ["10.5.5.1/24", "fd42::1/64"])
    assert (v.kind, v.instance) == (kind, instance)


def test_reverse_names_of_the_subnets_only() -> None:
    subnets = ["10.5.5.1/24", "fd42::1/64"]
    assert dns.classify(_question("7.5.5.10.in-addr.arpa", w.PTR), "lab", subnets) == dns.Verdict("ptr", address="10.5.5.7")
    assert dns.classify(_question("7.6.5.10.in-addr.arpa", w.PTR), "lab", subnets).kind == "forward"
    six = ".".join(reversed("fd42" + "0" * 27 + "9")) + ".ip6.arpa"
    assert dns.classify(_question(six, w.PTR), "lab", subnets) == dns.Verdict("ptr", address="fd42::9")


def test_upstreams(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\nnameserver 10.5.5.1\nnameserver fe80::1%eth0\nnameserver x\n")
    # the host's, loopback included (jaulad asks them from the host), never the network's own address
    assert dns.upstreams(None, ["10.5.5.1"], str(conf)) == ["127.0.0.53", "fe80::1"]
    assert dns.upstreams("1.1.1.1,9.9.9.9", ["10.5.5.1"], str(conf)) == ["1.1.1.1", "9.9.9.9"]
    assert dns.upstreams(None, [], str(tmp_path / "none")) == []


def test_managed_resolv_conf() -> None:
    text = dns.managed_resolv_conf("lab", ["10.5.5.1/24", "fd42::1/64"])
    assert "search lab\nnameserver 10.5.5.1\nnameserver fd42::1\n" in text


def test_dns_settings_checked_with_their_defaults() -> None:
    assert config.validate_network({"dns.mode": "managed"}) == {"dns.mode": "managed"}
    with pytest.raises(ConfigError, match="is not one of: managed, host"):
        config.validate_network({"dns.mode": "dnsmasq"})
    with pytest.raises(ConfigError, match="host_access=none closes"):
        config.validate_network({"dns.mode": "managed", "host_access": "none"})
    assert config.dns_mode({}) == "managed" and config.dns_domain({}) == "jaula"
    assert config.dns_mode({"host_access": "none"}) == "host" and config.dns_domain({"host_access": "none"}) is None
    assert config.dns_domain({"dns.domain": "lab.example"}) == "lab.example"
    assert zone_of("n", {"ipv4.address": "10.5.5.1/24", "ipv6.address": "none", "bridge": "jb1"}) == \
        Zone("n", "jb1", ("10.5.5.1/24",), "jaula", None)
    assert zone_of("n", {"ipv4.address": "10.5.5.1/24", "bridge": "jb1", "dns.mode": "host"}) is None


@pytest.fixture
def stored(tmp_path: Path) -> Database:
    db = Database(tmp_path / "jaula.db")
    db.create_network(NetworkRow(name="lab", config={"ipv4.address": "10.5.5.1/24", "ipv6.address": "fd42::1/64",
                                                     "bridge": "jb1", "dns.domain": "lab"}))
    db.create_network(NetworkRow(name="other", config={"ipv4.address": "10.6.6.1/24", "bridge": "jb2"}))
    for name in ("web1", "web2", "off1", "x1"):
        db.create_instance(InstanceRow(name=name, template="busybox"))
    db.set_addresses("web1", [AddressRow("lab", "web1", "eth0", 4, "10.5.5.2"),
                              AddressRow("lab", "web1", "eth0", 6, "fd42::2")])
    db.set_addresses("web2", [AddressRow("lab", "web2", "eth0", 4, "10.5.5.3")])
    db.set_addresses("off1", [AddressRow("lab", "off1", "eth0", 4, "10.5.5.4")])
    db.set_addresses("x1", [AddressRow("other", "x1", "eth0", 4, "10.6.6.2")])
    for name in ("web1", "web2", "x1"):
        db.update_instance(name, status="running")
    return db


def _ask(stored: Database, name: str, qtype: int = w.A, source: str = "10.5.5.9") -> tuple[int, list, bool] | None:
    async def run() -> bytes | None:
        svc = DnsService(stored.path, asyncio.get_running_loop())
        try:
            lst = Listener(Zone("lab", "jb1", ("10.5.5.1/24", "fd42::1/64"), "lab", None))
            return await svc.answer(lst, w.query(77, tuple(name.encode().split(b".")), qtype), source, tcp=False)
        finally:
            svc.close()
    out = asyncio.run(run())
    if out is None:
        return None
    msg = w.parse(out)
    assert msg.id == 77
    return msg.rcode, w.answers(out), bool(msg.flags & w.AA)


def test_answers_from_the_database(stored: Database) -> None:
    assert _ask(stored, "web1") == (w.NOERROR, [(w.A, bytes([10, 5, 5, 2]))], True)
    assert _ask(stored, "WEB1.lab", w.AAAA) == (w.NOERROR, [(w.AAAA, bytes.fromhex("fd42" + "00" * 13 + "02"))], True)
    assert _ask(stored, "web2", w.AAAA) == (w.NOERROR, [], True)            # no IPv6 address: no data
    assert _ask(stored, "off1")[0] == w.NXDOMAIN                             # stopped: not answered
    assert _ask(stored, "x1")[0] == w.NXDOMAIN                               # another network's instance
    assert _ask(stored, "nosuch.lab")[0] == w.NXDOMAIN
    rcode, [(rtype, rdata)], _ = _ask(stored, "3.5.5.10.in-addr.arpa", w.PTR)
    assert (rcode, rtype, w.read_name(rdata, 0)[0]) == (w.NOERROR, w.PTR, (b"web2", b"lab"))
    assert _ask(stored, "4.5.5.10.in-addr.arpa", w.PTR)[0] == w.NXDOMAIN    # off1 is stopped
    stored.update_instance("off1", status="running")                        # live: no cache
    assert _ask(stored, "off1")[1] == [(w.A, bytes([10, 5, 5, 4]))]
    stored.delete_instance("web2")
    assert _ask(stored, "web2")[0] == w.NXDOMAIN


def test_questions_from_outside_the_network_and_malformed_ones(stored: Database) -> None:
    assert _ask(stored, "web1", source="10.6.6.2") is None                   # not of this network's subnets
    assert _ask(stored, "web1", source="fe80::1") is not None                # link-local, through the bridge

    async def raw(data: bytes) -> bytes | None:
        svc = DnsService(stored.path, asyncio.get_running_loop())
        try:
            lst = Listener(Zone("lab", "jb1", ("10.5.5.1/24",), "lab", None))
            return await svc.answer(lst, data, "10.5.5.9", tcp=False)
        finally:
            svc.close()
    assert w.parse(asyncio.run(raw(b"\x00\x05\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c"))).rcode == w.FORMERR
    assert asyncio.run(raw(b"\x00\x05")) is None                            # not even a header: dropped
    answer = w.reply(w.parse(w.query(5, (b"web1",), w.A)), w.NOERROR, [], authoritative=True)
    assert asyncio.run(raw(answer)) is None                                  # a response is never answered
    notify = bytearray(w.query(5, (b"web1",), w.A))
    notify[2] |= 4 << 3                                                       # opcode NOTIFY
    assert w.parse(asyncio.run(raw(bytes(notify)))).rcode == w.NOTIMP


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=1, max_size=20), max_size=4), st.integers(0, 65535), st.integers(0, 65535),
       st.binary(max_size=30))
def test_any_question_gets_a_well_formed_answer_or_none(stored: Database, labels: list[bytes], qtype: int,
                                                         flags: int, tail: bytes) -> None:
    """Random names, types, header flags and trailing bytes: answer() never raises, and what it
    sends parses (forwarded ones go to a loopback address where nothing listens: SERVFAIL)."""
    try:
        q = w.query(3, tuple(labels), qtype)
    except w.FormatError:
        return
    for data in (q, q[:2] + flags.to_bytes(2, "big") + q[4:], q + tail, tail):
        async def run(data: bytes = data) -> bytes | None:
            svc = DnsService(stored.path, asyncio.get_running_loop())
            try:
                lst = Listener(Zone("lab", "jb1", ("10.5.5.1/24",), "lab", "127.255.255.254"))
                return await svc.answer(lst, data, "10.5.5.9", tcp=False)
            finally:
                svc.close()
        out = asyncio.run(run())
        if out is not None:
            assert w.parse(out).is_response
