"""A real test network for the firewall: a host bridge, instance netns on veths, an "outside" netns.

    outside netns (o)  eth0 .130, :1::2 ── veth <P>vo (.129, :1::1 on the host) ── host ── bridge <P>br (.1, fd..::1)
                                                                              ├─ veth <P>va ── netns a: eth0 .2
                                                                              ├─ veth <P>vb ── netns b: eth0 .3
                                                                              └─ veth <P>vc ── netns c: eth0 .4

Names start with a per-process prefix and addresses come from a per-process 10.x.y.0/24, so runs side
by side do not meet. Probes are small Python programs run in a netns with `ip netns exec`: a server
answers each TCP connection or UDP datagram with the peer address it saw, a client prints the answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from jaula.network import links
from jaula.network.plan import BRIDGED, NetworkPlan, NicPlan

PID = os.getpid()
PREFIX = f"jt{PID % 100000}"
_O2, _O3 = 200 + PID % 50, (PID // 50) % 250
NET4 = f"10.{_O2}.{_O3}"
NET6 = f"fd42:{_O2:x}:{_O3:x}"

SERVER = r"""
import socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
while True:
    if proto == "tcp":
        c, peer = s.accept()
        c.sendall(peer[0].encode())
        c.close()
    else:
        data, peer = s.recvfrom(100)
        s.sendto(peer[0].encode(), peer)
"""

CLIENT = r"""
import socket, sys
proto, addr, port, sport = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(1.5)
if sport:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", sport))
try:
    if proto == "tcp":
        s.connect((addr, port))
        print(s.recv(100).decode())
    else:
        s.sendto(b"?", (addr, port))
        print(s.recvfrom(100)[0].decode())
except OSError as e:
    print("FAIL", e)
"""


ND = r"""
import socket, struct, sys
def csum(data):
    data += b"\0" * (len(data) % 2)
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
kind, src_mac, src_ip, target = sys.argv[1:5]
mac = bytes.fromhex(src_mac.replace(":", ""))
src, dst = socket.inet_pton(socket.AF_INET6, src_ip), socket.inet_pton(socket.AF_INET6, "ff02::1")
if kind == "na":   # unsolicited, override flag, target link-layer address option: our MAC
    body = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + socket.inet_pton(socket.AF_INET6, target) + bytes([2, 1]) + mac
else:              # router advertisement: lifetime 1800 s, source link-layer address option
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + bytes([1, 1]) + mac
c = csum(src + dst + struct.pack("!I", len(body)) + b"\0\0\0" + bytes([58]) + body)
body = body[:2] + struct.pack("!H", c) + body[4:]
frame = bytes.fromhex("333300000001") + mac + struct.pack("!H", 0x86DD)
frame += struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + src + dst + body
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    s.send(frame)
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def in_ns(ns: str | None, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args] if ns else list(args)


class Topology:
    """Builds the network above; `close()` removes every netns and link it made (idempotent)."""

    def __init__(self, instances: str = "abc") -> None:
        self.prefix = PREFIX
        self.bridge = f"{PREFIX}br"
        self.gw4, self.gw6 = f"{NET4}.1", f"{NET6}::1"
        self.host_out, self.outside_ip = f"{NET4}.129", f"{NET4}.130"
        self.host_out6, self.outside_ip6 = f"{NET6}:1::1", f"{NET6}:1::2"
        self.nets: list[str] = []
        self.links: list[str] = []
        self.servers: list[subprocess.Popen] = []
        self.nics: dict[str, NicPlan] = {}
        try:
            self._build(instances)
        except BaseException:
            self.close()
            raise

    def ns(self, name: str) -> str:
        return f"{PREFIX}{name}"

    def _netns(self, name: str) -> str:
        ns = self.ns(name)
        sh("ip", "netns", "add", ns)
        self.nets.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for key in ("all", "default"):
            sh(*in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0"))
        return ns

    def _build(self, instances: str) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        sh("ip", "addr", "add", f"{self.gw4}/25", "dev", self.bridge)
        sh("ip", "addr", "add", f"{self.gw6}/64", "dev", self.bridge, "nodad")
        sh("ip", "link", "set", self.bridge, "up")
        for i, name in enumerate(instances):
            ns = self._netns(name)
            host, mac = f"{PREFIX}v{name}", f"02:{_O2:02x}:{_O3:02x}:00:00:{i + 2:02x}"
            ip4, ip6 = f"{NET4}.{i + 2}", f"{NET6}::{i + 2}"
            self.nics[name] = NicPlan(instance=f"{PREFIX}-{name}", name="eth0", type=BRIDGED, host_name=host,
                                      parent=self.bridge, mac=mac, network="test", ipv4=(f"{ip4}/25",),
                                      ipv6=(f"{ip6}/64",), gateway4=self.gw4, gateway6=self.gw6)
            # plugged as jaulad plugs an instance's NIC (veth into the bridge, hairpin on its port,
            # addresses nodad, default routes), into the netns of a process held there
            holder = subprocess.Popen(in_ns(ns, "sleep", "infinity"))
            self.servers.append(holder)
            self.links.append(host)
            for _ in range(200):   # `ip netns exec` has entered the netns once it runs sleep
                if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net") and \
                        os.readlink(f"/proc/{holder.pid}/exe").endswith("sleep"):
                    break
                time.sleep(0.01)
            links.attach(self.nics[name], holder.pid)
        out = self._netns("o")
        host = f"{PREFIX}vo"
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", out)
        self.links.append(host)
        sh("ip", "addr", "add", f"{self.host_out}/30", "dev", host)
        sh("ip", "link", "set", host, "up")
        sh("ip", "addr", "add", f"{self.host_out6}/64", "dev", host, "nodad")
        sh("ip", "-n", out, "addr", "add", f"{self.outside_ip}/30", "dev", "eth0")
        sh("ip", "-n", out, "addr", "add", f"{self.outside_ip6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", out, "link", "set", "eth0", "up")

    def network(self, **kw: object) -> NetworkPlan:
        return NetworkPlan(name="test", bridge=self.bridge, ipv4=f"{self.gw4}/25", ipv6=f"{self.gw6}/64",
                           **kw)  # type: ignore[arg-type]

    def ip4(self, name: str) -> str:
        return self.nics[name].ipv4[0].split("/")[0]

    def ip6(self, name: str) -> str:
        return self.nics[name].ipv6[0].split("/")[0]

    # -- probes
    def serve(self, ns: str | None, proto: str, addr: str, port: int) -> None:
        """A server in netns `ns` (None: the host) that answers with the peer address; stopped by close()."""
        p = subprocess.Popen(in_ns(ns and self.ns(ns), sys.executable, "-c", SERVER, proto, addr, str(port)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.servers.append(p)
        line = p.stdout.readline() if p.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"server {proto} {addr}:{port} in {ns}: {p.stderr.read() if p.stderr else ''}")

    def ask(self, ns: str | None, proto: str, addr: str, port: int, sport: int = 0, tries: int = 3) -> str | None:
        """The peer address the server saw, or None when nothing answered `tries` times (a loaded
        machine may lose a first try to neighbour resolution: checks that expect silence pass tries=1)."""
        for _ in range(tries):
            r = sh(*in_ns(ns and self.ns(ns), sys.executable, "-c", CLIENT, proto, addr, str(port), str(sport)))
            out = r.stdout.strip()
            if out and not out.startswith("FAIL"):
                return out
        return None

    def ping(self, ns: str, addr: str, source: str | None = None, tries: int = 3) -> bool:
        """One echo answered within `tries` one-second tries (checks that expect silence pass tries=1)."""
        args = ["busybox", "ping", "-c1", "-W1"] + (["-I", source] if source else []) + [addr]
        return any(sh(*in_ns(self.ns(ns), *args), check=False).returncode == 0 for _ in range(tries))

    def send_nd(self, ns: str, kind: str, target: str = "::") -> None:
        """Send a hand-made ICMPv6 "na" (for `target`) or "ra" from `ns`'s eth0, from its MAC and link-local."""
        from jaula.network.firewall import link_local
        mac = self.nics[ns].mac
        sh(*in_ns(self.ns(ns), sys.executable, "-c", ND, kind, mac, link_local(mac), target))

    def run(self, ns: str, *args: str) -> subprocess.CompletedProcess:
        return sh(*in_ns(self.ns(ns), *args))

    def flush_neighbours(self) -> None:
        for ns in self.nets:
            sh("ip", "-n", ns, "neigh", "flush", "all", check=False)
        sh("ip", "neigh", "flush", "dev", self.bridge, check=False)

    def close(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()
        self.servers.clear()
        for ns in reversed(self.nets):
            sh("ip", "netns", "del", ns, check=False)
        for link in reversed(self.links):
            if sh("ip", "link", "show", link, check=False).returncode == 0:
                sh("ip", "link", "del", link, check=False)
        self.nets.clear()
        self.links.clear()


def leftovers(prefix: str = PREFIX, table: str | None = None) -> list[str]:
    """Netns, links and nft tables of this process still present (for the no-leak check)."""
    out = [f"netns {n.split()[0]}" for n in sh("ip", "netns", "list").stdout.splitlines() if n.startswith(prefix)]
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(prefix):
            out.append(f"link {name}")
    if table:
        out += [t for t in sh("nft", "list", "tables").stdout.splitlines() if t.split()[-1] == table]
    return out


def wait_for(check, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll `check()` until true (neighbour tables settle asynchronously); no timing is asserted."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())
