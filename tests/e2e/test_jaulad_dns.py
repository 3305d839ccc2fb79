"""A network's managed DNS end to end (dns.mode=managed, jaula.daemon.dns_service): a real jaulad,
busybox instances on a real bridge, and real queries from inside them (busybox nslookup over UDP,
Python over TCP in their network namespace). One instance resolves another's name, with and
without the domain, A and AAAA and PTR; an unknown name goes upstream (a tiny resolver this test
runs on a loopback address: the host has no internet) and its answer comes back; an unknown name
in the domain is NXDOMAIN; a NIC added or removed live, a stopped or deleted instance show at
once; an instance of another network gets no answer from this network's listeners, not even
with host_access=all, nor does the host; the answers come back after a restart of jaulad."""

from __future__ import annotations

import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from jaula.network import dns_wire
from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)
from tests.support import network as netsupport

pytestmark = pytest.mark.root

BUSYBOX = "/usr/bin/busybox"
NAMES = ("w1", "w2", "o1")
UPSTREAM_NAME = "upstream.example"
UPSTREAM_ADDRESS = "192.0.2.77"


class Upstream:
    """A resolver on 127.x.y.z:53 (UDP and TCP) that knows one name: the network's upstream."""

    def __init__(self) -> None:
        self.address = f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.address, 53))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((self.address, 53))
        self.tcp.listen(8)
        self.asked: list[str] = []
        self.stop = False
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def answer(self, data: bytes) -> bytes:
        msg = dns_wire.parse(data)
        assert msg.question is not None
        name = b".".join(msg.question.lower).decode()
        self.asked.append(name)
        if name == UPSTREAM_NAME:
            recs = [dns_wire.a_record(UPSTREAM_ADDRESS, 60)] if msg.question.qtype == dns_wire.A else []
            return dns_wire.reply(msg, dns_wire.NOERROR, recs, authoritative=False)
        return dns_wire.reply(msg, dns_wire.NXDOMAIN, [], authoritative=True)

    def _serve_udp(self) -> None:
        while not self.stop:
            try:
                data, peer = self.udp.recvfrom(4096)
                self.udp.sendto(self.answer(data), peer)
            except (OSError, ValueError, AssertionError):
                if self.stop:
                    return

    def _serve_tcp(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.tcp.accept()
                with conn:
                    n = struct.unpack("!H", conn.recv(2))[0]
                    data = b""
                    while len(data) < n:
                        data += conn.recv(n - len(data))
                    out = self.answer(data)
                    conn.sendall(struct.pack("!H", len(out)) + out)
            except (OSError, ValueError, AssertionError, struct.error):
                if self.stop:
                    return

    def close(self) -> None:
        self.stop = True
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def dnsd(daemon: Daemon) -> Iterator[Daemon]:  # noqa: F811
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:   # a failure: delete what is left
            daemon.delete_all()
            daemon.proc.kill()
            daemon.proc.wait(10)
        for pid in daemon.pids:
            subprocess.run(["kill", "-9", str(pid)], check=False)
        time.sleep(0.2)
        netsupport.remove_daemon_network(daemon.root)


# what runs in an instance's network namespace (the host's Python, nsenter -n): one query to
# SERVER over UDP or TCP, prints the rcode and the answers' addresses (or "timeout")
ASK = r"""
import socket, struct, sys
sys.path.insert(0, sys.argv[1])
from jaula.network import dns_wire
server, proto, name, qtype = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
q = dns_wire.query(4242, tuple(name.encode().split(b".")), qtype)
try:
    if proto == "udp":
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q, (server, 53))
        data = s.recv(65535)
    else:
        s = socket.create_connection((server, 53), timeout=3); s.sendall(struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", s.recv(2))[0]; data = b""
        while len(data) < n:
            data += s.recv(n - len(data))
except OSError as e:
    print("timeout", type(e).__name__); sys.exit(0)
msg = dns_wire.parse(data)
out = []
for t, rdata in dns_wire.answers(data):
    if t in (dns_wire.A, dns_wire.AAAA):
        out.append(socket.inet_ntop(socket.AF_INET if t == dns_wire.A else socket.AF_INET6, rdata))
    elif t == dns_wire.PTR:
        out.append(b".".join(dns_wire.read_name(rdata, 0)[0]).decode())
print(msg.rcode, " ".join(out), "aa" if msg.flags & dns_wire.AA else "")
"""


def _ask(pid: int, server: str, name: str, qtype: int = dns_wire.A, proto: str = "udp") -> str:
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    r = subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", ASK, os.path.abspath(src), server,
                        proto, name, str(qtype)], check=True, capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def _nslookup(pid: int, name: str) -> tuple[int, str]:
    """busybox nslookup inside the instance (its root: its own resolv.conf and busybox)."""
    r = subprocess.run(["nsenter", "-t", str(pid), "-a", "nslookup", name], check=False, capture_output=True,
                       text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def _all_addresses(d: Daemon) -> list[dict]:
    from jaula.client import Client

    with Client(str(d.socket)) as c:
        return c.network_addresses()


def _addresses(d: Daemon) -> dict[tuple[str, int], str]:
    return {(a["instance"], a["family"]): a["address"] for a in _all_addresses(d) if a["nic"] == "eth0"}


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs the host's busybox")
def test_instances_resolve_each_other_and_the_rest_goes_upstream(dnsd: Daemon) -> None:
    d = dnsd
    up = Upstream()
    try:
        d.start()
        bridge = "jbd" + secrets.token_hex(4)
        d.jaula("network", "create", "dn", "-c", f"bridge={bridge}", "-c", f"dns.nameservers={up.address}")
        d.jaula("network", "create", "other", "-c", f"bridge=jbo{secrets.token_hex(4)}", "-c", "ipv6.address=none",
                "-c", "host_access=all", "-c", f"dns.nameservers={up.address}")
        nets = {n["name"]: n for n in json.loads(d.jaula("network", "list", "--format", "json"))}
        net = nets["dn"]
        gw4 = net["config"]["ipv4.address"].split("/")[0]
        gw6 = net["config"]["ipv6.address"].split("/")[0]
        for name, network in (("w1", "dn"), ("w2", "dn"), ("o1", "other")):
            d.jaula("launch", "busybox", name, "-c", f"nic.eth0.network={network}")
        pids = {n: d.note(n)["pid"] for n in NAMES}
        addr = _addresses(d)

        resolv = (d.root / "instances" / "bundles" / "w1" / "rootfs" / "etc" / "resolv.conf").read_text()
        assert f"nameserver {gw4}" in resolv and f"nameserver {gw6}" in resolv and "search jaula" in resolv

        # busybox nslookup inside w1 (UDP, its resolv.conf): w2 by its name and in the domain, A and AAAA
        for name in ("w2", "w2.jaula"):
            rc, out = _nslookup(pids["w1"], name)
            assert rc == 0 and addr[("w2", 4)] in out and addr[("w2", 6)] in out, out
        assert _ask(pids["w1"], gw4, "W2.Jaula") == f"0 {addr[('w2', 4)]} aa"          # case does not matter
        assert _ask(pids["w1"], gw6, "w2.jaula", dns_wire.AAAA) == f"0 {addr[('w2', 6)]} aa"   # over IPv6
        assert _ask(pids["w1"], gw4, "w2.jaula", proto="tcp") == f"0 {addr[('w2', 4)]} aa"      # over TCP
        rev = ".".join(reversed(addr[("w2", 4)].split("."))) + ".in-addr.arpa"
        assert _ask(pids["w1"], gw4, rev, dns_wire.PTR) == "0 w2.jaula aa"
        # unknown names: in the domain, NXDOMAIN here (never asked upstream); elsewhere, upstream's answer
        rc, out = _nslookup(pids["w1"], "nosuch.jaula")
        assert rc != 0 and "NXDOMAIN" in out, out
        assert _ask(pids["w1"], gw4, "nosuch.jaula").startswith("3 ")
        assert "nosuch.jaula" not in up.asked
        rc, out = _nslookup(pids["w1"], UPSTREAM_NAME)
        assert rc == 0 and UPSTREAM_ADDRESS in out, out
        assert _ask(pids["w1"], gw4, UPSTREAM_NAME, proto="tcp") == f"0 {UPSTREAM_ADDRESS}"   # forwarded over TCP
        assert _ask(pids["w1"], gw4, "gone.example").startswith("3 ")                        # upstream's NXDOMAIN
        assert UPSTREAM_NAME in up.asked and "gone.example" in up.asked

        # isolation between instances does not stop them asking the gateway
        d.jaula("network", "set", "dn", "isolation=isolate")
        assert _ask(pids["w1"], gw4, "w2.jaula") == f"0 {addr[('w2', 4)]} aa"
        d.jaula("network", "set", "dn", "isolation=allow")

        # another network's instance: nothing from dn's listeners (bound to dn's bridge), even with
        # host_access=all letting it reach the gateway's address; its own network does not know w2
        assert _ask(pids["o1"], gw4, "w2.jaula").startswith("timeout")
        assert _ask(pids["o1"], gw4, "w2.jaula", proto="tcp").startswith("timeout")
        other_gw = nets["other"]["config"]["ipv4.address"]
        assert _ask(pids["o1"], other_gw.split("/")[0], "w2.jaula").startswith("3 ")
        assert _ask(pids["o1"], other_gw.split("/")[0], "o1") == f"0 {addr[('o1', 4)]} aa"

        # nor the host (its question comes in through lo, not the bridge)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(dns_wire.query(9, (b"w2",), dns_wire.A), (gw4, 53))
            with pytest.raises(TimeoutError):
                s.recv(4096)

        # live: a NIC added on dn gives o1 a name there, removed takes it away
        d.jaula("nic", "add", "o1", "eth1", "network=dn")
        o1_dn = next(a for a in _all_addresses(d) if a["instance"] == "o1" and a["nic"] == "eth1"
                     and a["family"] == 4)["address"]
        assert _ask(pids["w1"], gw4, "o1.jaula") == f"0 {o1_dn} aa"
        d.jaula("nic", "remove", "o1", "eth1")
        assert _ask(pids["w1"], gw4, "o1.jaula").startswith("3 ")

        # live: a stopped instance's name goes, a started one's comes back
        d.jaula("stop", "--force", "w2")
        assert _ask(pids["w1"], gw4, "w2").startswith("3 ")
        d.jaula("start", "w2")
        pids["w2"] = d.note("w2")["pid"]
        assert _ask(pids["w1"], gw4, "w2") == f"0 {addr[('w2', 4)]} aa"

        # part of jaulad: after its restart the same answers (the instances kept running)
        d.kill(15)
        d.start()
        assert _ask(pids["w1"], gw4, "w2.jaula") == f"0 {addr[('w2', 4)]} aa"
        rc, out = _nslookup(pids["w2"], "w1")
        assert rc == 0 and addr[("w1", 4)] in out, out

        # dns.mode=host: no listener, the instances' resolv.conf names the resolvers themselves
        d.jaula("network", "set", "other", "dns.mode=host")
        assert _ask(pids["o1"], other_gw.split("/")[0], "o1").startswith("timeout")
        d.jaula("network", "set", "other", "dns.mode=managed")
        assert _ask(pids["o1"], other_gw.split("/")[0], "o1") == f"0 {addr[('o1', 4)]} aa"

        # deleted: its name goes at once
        d.jaula("delete", "--force", "w2")
        assert _ask(pids["w1"], gw4, "w2").startswith("3 ")
        rc, out = _nslookup(pids["w1"], "w2.jaula")
        assert rc != 0, out
        d.jaula("delete", "--force", "w1", "o1")
        d.jaula("network", "delete", "dn")
        d.jaula("network", "delete", "other")
        assert bridge not in netsupport.links()
        assert d.leaks() == []
    finally:
        up.close()
