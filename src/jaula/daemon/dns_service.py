"""A network's managed DNS (dns.mode=managed), inside jaulad's event loop: one UDP and one TCP
listener on each gateway address of each such network, port 53, and nothing else.

- Bound to the gateway's address and to the bridge (SO_BINDTODEVICE): only what comes in through
  that network's bridge is answered (an instance of another network, even with host_access=all,
  reaches none of its listeners), and the source must be an address of the network's subnets.
- Answers the names of the network's running (or frozen) instances, `web1` and `web1.<domain>`,
  A and AAAA, and PTR for their addresses, read from jaulad's database at each question (its own
  read-only connection in a worker thread: WAL readers never wait for the daemon's writes), so a
  NIC added or removed, a start, stop or delete shows at once. Only this network's instances:
  an instance's name can be answered by no other network's DNS.
- Forwards every other name to the network's dns.nameservers, else the host's resolvers, from a
  new socket (random port, new random id) per question, over UDP for UDP and TCP for TCP; the
  answer is checked (id, question) before it is relayed. Bounded: MAX_PENDING questions at once,
  MAX_TCP connections, each closed after TCP_IDLE_S idle seconds.
- `refresh()` (thread-safe) makes the listeners match the stored networks: called at jaulad's
  start and after a network is made, changed or deleted (jaula.daemon.networks); a listener
  whose bridge is now another device (deleted and made again meanwhile) is made again too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import sqlite3
import struct
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaula.network import config as netconfig
from jaula.network import dns, dns_wire

log = logging.getLogger("jaula.dns")

PORT = 53
TTL = 0                  # the answer is live: an instance stopped now is gone now
MAX_PENDING = 256        # questions being answered or forwarded at once, per network
MAX_TCP = 64             # TCP connections at once, per network
TCP_IDLE_S = 10.0
UPSTREAM_TIMEOUT_S = 2.0
MAX_UDP_QUERY = 4096
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)   # the v6 gateway may still be tentative (DAD)
LIVE = ("running", "frozen")


@dataclass(frozen=True)
class Zone:
    """What one network's DNS serves, from its stored config."""
    network: str
    bridge: str
    gateways: tuple[str, ...]     # with prefix
    domain: str
    nameservers: str | None

    @property
    def subnets(self) -> list[str]:
        return list(self.gateways)

    def allowed(self, source: str) -> bool:
        ip = ipaddress.ip_address(source.split("%")[0])
        if ip.version == 6 and ip.is_link_local:
            return True     # came in through the bridge (the socket is bound to it)
        return any(ip in ipaddress.ip_interface(g).network for g in self.gateways)


def zone_of(name: str, config: dict[str, str]) -> Zone | None:
    """The zone of a stored network, None when its DNS is not managed."""
    cfg = netconfig.effective_network(config)
    if netconfig.dns_mode(cfg) != netconfig.DNS_MANAGED or not cfg.get("bridge"):
        return None
    gws = tuple(cfg[k] for k in ("ipv4.address", "ipv6.address") if "/" in cfg.get(k, ""))
    if not gws:
        return None
    return Zone(name, cfg["bridge"], gws, netconfig.dns_domain(cfg) or netconfig.DEFAULT_DOMAIN,
                cfg.get("dns.nameservers"))


class Names:
    """The database read for answers: its own read-only connection, used by one worker thread."""

    # the tables of jaula.daemon.network_tables (network_addresses, networks, instances)
    _BY_NAME = ("SELECT a.address FROM network_addresses a JOIN networks n ON n.id = a.network_id "
                "JOIN instances i ON i.id = a.instance_id WHERE n.name = ? AND i.name = ? AND i.status IN (?, ?) "
                "ORDER BY a.nic, a.address")
    _BY_ADDRESS = ("SELECT i.name FROM network_addresses a JOIN networks n ON n.id = a.network_id "
                   "JOIN instances i ON i.id = a.instance_id WHERE n.name = ? AND a.address = ? "
                   "AND i.status IN (?, ?) LIMIT 1")
    _NETWORKS = ("SELECT n.name, c.key, c.value FROM networks n LEFT JOIN network_config c "
                 "ON c.network_id = n.id ORDER BY n.name")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="jaula-dns")
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path))}?mode=ro", uri=True, timeout=5.0,
                                         check_same_thread=False)
        return self._conn

    def addresses(self, network: str, instance: str) -> list[str]:
        return [r[0] for r in self._db().execute(self._BY_NAME, (network, instance, *LIVE))]

    def instance_at(self, network: str, address: str) -> str | None:
        row = self._db().execute(self._BY_ADDRESS, (network, address, *LIVE)).fetchone()
        return row[0] if row else None

    def networks(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, key, value in self._db().execute(self._NETWORKS):
            cfg = out.setdefault(name, {})
            if key is not None:
                cfg[key] = value
        return out

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with contextlib.suppress(RuntimeError):
            self.pool.submit(shut).result(5)
        self.pool.shutdown(wait=False)


@dataclass
class Listener:
    zone: Zone
    closers: list[Any] = field(default_factory=list)
    pending: int = 0
    tcp_open: int = 0
    ifindex: int | None = None   # the bridge bound to (a bridge made again is another device)


class DnsService:
    def __init__(self, db_path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.names = Names(db_path)
        self.loop = loop
        self.listeners: dict[str, Listener] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    # -- listeners ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Listeners made to match the stored networks (from any thread; done in the loop)."""
        if self._closed:
            return
        if _in_loop(self.loop):
            self.loop.create_task(self.reconcile())
        else:
            asyncio.run_coroutine_threadsafe(self.reconcile(), self.loop)

    async def reconcile(self) -> None:
        async with self._lock:
            try:
                stored = await self.names.run(self.names.networks)
            except sqlite3.Error as exc:
                log.error("networks' DNS: reading the networks: %s", exc)
                return
            zones = {n: z for n, cfg in stored.items() if (z := zone_of(n, cfg)) is not None}
            for name in list(self.listeners):
                lst = self.listeners[name]
                if zones.get(name) != lst.zone or _ifindex(lst.zone.bridge) != lst.ifindex:
                    self._stop(name)
            for name, zone in zones.items():
                if name not in self.listeners:
                    await self._start(zone)

    async def _start(self, zone: Zone) -> None:
        lst = Listener(zone, ifindex=_ifindex(zone.bridge))
        try:
            for gw in zone.gateways:
                ip = ipaddress.ip_interface(gw).ip
                fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
                udp = _bound(fam, socket.SOCK_DGRAM, str(ip), zone.bridge)
                try:
                    transport, _ = await self.loop.create_datagram_endpoint(lambda: _Udp(self, lst), sock=udp)
                except BaseException:
                    udp.close()
                    raise
                lst.closers.append(transport)
                tcp = _bound(fam, socket.SOCK_STREAM, str(ip), zone.bridge)
                try:
                    tcp.listen(64)
                    server = await asyncio.start_server(lambda r, w: self._tcp_client(lst, r, w), sock=tcp)
                except BaseException:
                    tcp.close()
                    raise
                lst.closers.append(server)
        except OSError as exc:
            log.error("network %s: DNS on %s (%s) port %d: %s; its instances' names are not answered",
                      zone.network, ", ".join(zone.gateways), zone.bridge, PORT, exc)
            _close_all(lst)
            return
        self.listeners[zone.network] = lst
        log.info("network %s: DNS on %s port %d (domain %s)", zone.network,
                 ", ".join(g.split("/")[0] for g in zone.gateways), PORT, zone.domain)

    def _stop(self, name: str) -> None:
        lst = self.listeners.pop(name)
        _close_all(lst)
        log.info("network %s: DNS stopped", name)

    def close(self) -> None:
        self._closed = True
        for name in list(self.listeners):
            self._stop(name)
        self.names.close()

    # -- answers -----------------------------------------------------------------------------------
    async def answer(self, lst: Listener, data: bytes, source: str, tcp: bool) -> bytes | None:
        """The reply to one message from `source`, None to say nothing."""
        zone = lst.zone
        if not zone.allowed(source):
            return None
        try:
            msg = dns_wire.parse(data)
        except dns_wire.FormatError as exc:
            mid = dns_wire.header_id(data)
            log.debug("network %s: malformed question from %s: %s", zone.network, source, exc)
            if mid is None or len(data) < dns_wire.HEADER.size:
                return None
            flags = struct.unpack_from("!H", data, 2)[0]
            return None if flags & dns_wire.QR else dns_wire.error_reply(mid, flags, dns_wire.FORMERR)
        if msg.is_response:
            return None
        if msg.opcode != 0:
            return dns_wire.error_reply(msg.id, msg.flags, dns_wire.NOTIMP)
        if msg.question is None:
            return dns_wire.error_reply(msg.id, msg.flags, dns_wire.FORMERR)
        q = msg.question
        limit = dns_wire.MAX_MESSAGE if tcp else dns_wire.UDP_PAYLOAD
        verdict = dns.classify(q, zone.domain, zone.subnets)
        if verdict.kind == "forward":
            return await self._forward(zone, data, msg, tcp)
        if q.qclass not in (dns_wire.IN, dns_wire.ANY):
            return dns_wire.reply(msg, dns_wire.REFUSED, [], authoritative=False, limit=limit)
        try:
            if verdict.kind == "name":
                addrs = await self.names.run(self.names.addresses, zone.network, verdict.instance)
                if not addrs:
                    return dns_wire.reply(msg, dns_wire.NXDOMAIN, [], authoritative=True, limit=limit)
                want = {dns_wire.A: 4, dns_wire.AAAA: 6}.get(q.qtype)
                records = [dns_wire.a_record(a, TTL) for a in addrs
                           if q.qtype == dns_wire.ANY or ipaddress.ip_address(a).version == want]
                return dns_wire.reply(msg, dns_wire.NOERROR, records, authoritative=True, limit=limit)
            if verdict.kind == "ptr":
                owner = await self.names.run(self.names.instance_at, zone.network, verdict.address)
                if owner is None:
                    return dns_wire.reply(msg, dns_wire.NXDOMAIN, [], authoritative=True, limit=limit)
                records = []
                if q.qtype in (dns_wire.PTR, dns_wire.ANY):
                    target = (owner.encode(), *zone.domain.encode().split(b"."))
                    records.append(dns_wire.ptr_record(target, TTL))
                return dns_wire.reply(msg, dns_wire.NOERROR, records, authoritative=True, limit=limit)
        except sqlite3.Error as exc:
            log.warning("network %s: DNS read: %s", zone.network, exc)
            return dns_wire.reply(msg, dns_wire.SERVFAIL, [], authoritative=False, limit=limit)
        rcode = dns_wire.NXDOMAIN if verdict.kind == "nxdomain" else dns_wire.NOERROR
        return dns_wire.reply(msg, rcode, [], authoritative=True, limit=limit)

    async def _forward(self, zone: Zone, data: bytes, msg: dns_wire.Message, tcp: bool) -> bytes:
        own = [g.split("/")[0] for g in zone.gateways]
        servers = dns.upstreams(zone.nameservers, own)
        mid = secrets.randbits(16)
        out = dns_wire.with_id(data, mid)
        for server in servers:
            try:
                got = await asyncio.wait_for(
                    (_exchange_tcp if tcp else _exchange_udp)(server, out, mid, msg), UPSTREAM_TIMEOUT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, dns_wire.FormatError) as exc:
                log.debug("network %s: upstream %s: %s", zone.network, server, exc or type(exc).__name__)
                continue
            return dns_wire.with_id(got, msg.id)
        return dns_wire.reply(msg, dns_wire.SERVFAIL, [], authoritative=False)

    async def _tcp_client(self, lst: Listener, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            if lst.tcp_open >= MAX_TCP or not peer:
                return
            lst.tcp_open += 1
            try:
                while True:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                    data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE_S)
                    if lst.pending >= MAX_PENDING:
                        return
                    lst.pending += 1
                    try:
                        out = await self.answer(lst, data, peer[0], tcp=True)
                    finally:
                        lst.pending -= 1
                    if out is None:
                        return
                    writer.write(struct.pack("!H", len(out)) + out)
                    await asyncio.wait_for(writer.drain(), TCP_IDLE_S)
            finally:
                lst.tcp_open -= 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("network %s: DNS over TCP", lst.zone.network)
        finally:
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, svc: DnsService, lst: Listener) -> None:
        self.svc, self.lst = svc, lst
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > MAX_UDP_QUERY or self.lst.pending >= MAX_PENDING:
            return
        self.lst.pending += 1
        self.svc.loop.create_task(self._one(data, addr))

    async def _one(self, data: bytes, addr: Any) -> None:
        try:
            out = await self.svc.answer(self.lst, data, addr[0], tcp=False)
            if out is not None and not self.transport.is_closing():
                self.transport.sendto(out, addr)
        except Exception:
            log.exception("network %s: DNS over UDP", self.lst.zone.network)
        finally:
            self.lst.pending -= 1

    def error_received(self, exc: Exception) -> None:
        log.debug("network %s: DNS over UDP: %s", self.lst.zone.network, exc)


def _check(resp: bytes, mid: int, msg: dns_wire.Message) -> bool:
    """Whether `resp` answers the question we forwarded (its id and its question)."""
    got = dns_wire.parse(resp)
    return (got.id == mid and got.is_response and got.question is not None and msg.question is not None
            and got.question.lower == msg.question.lower and got.question.qtype == msg.question.qtype
            and got.question.qclass == msg.question.qclass)


async def _exchange_udp(server: str, out: bytes, mid: int, msg: dns_wire.Message) -> bytes:
    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ipaddress.ip_address(server).version == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.setblocking(False)
        s.connect((server, PORT))   # only the server's answers reach this socket
        await loop.sock_sendall(s, out)
        while True:
            resp = await loop.sock_recv(s, dns_wire.MAX_MESSAGE)
            try:
                if _check(resp, mid, msg):
                    return resp
            except dns_wire.FormatError:
                continue       # not an answer to us: wait for the real one (or the timeout)


async def _exchange_tcp(server: str, out: bytes, mid: int, msg: dns_wire.Message) -> bytes:
    reader, writer = await asyncio.open_connection(server, PORT)
    try:
        writer.write(struct.pack("!H", len(out)) + out)
        await writer.drain()
        n = struct.unpack("!H", await reader.readexactly(2))[0]
        resp = await reader.readexactly(n)
        if not _check(resp, mid, msg):
            raise dns_wire.FormatError("the upstream's answer is not to our question")
        return resp
    finally:
        writer.close()


def _bound(family: int, kind: int, address: str, bridge: str) -> socket.socket:
    s = socket.socket(family, kind | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, bridge.encode())
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)   # at the IP level for IPv6 sockets too
        s.bind((address, PORT))
        return s
    except OSError:
        s.close()
        raise


def _close_all(lst: Listener) -> None:
    for c in lst.closers:
        c.close()
    lst.closers.clear()


def _ifindex(bridge: str) -> int | None:
    try:
        return socket.if_nametoindex(bridge)
    except OSError:
        return None


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
