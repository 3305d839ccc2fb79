"""What an instance's /etc/resolv.conf and /etc/hosts say, and what a network's managed DNS
answers itself (pure: texts and decisions from settings).

dns.mode=host: the host's own resolvers are used unless they are loopback ones
(systemd-resolved's 127.0.0.53, a local dnsmasq): an instance has its own loopback, so those are
unreachable from it; then the network's dns.nameservers, else its gateway address.
dns.mode=managed: jaulad answers on the gateway's addresses (jaula.daemon.dns_service): the
names of the network's running instances, `web1` and `web1.<dns.domain>`, from its database,
and forwards every other name to the network's dns.nameservers, else to the host's resolvers
(loopback ones included: jaulad runs on the host). `classify` says which a question is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from jaula.network import dns_wire

RESOLV_CONF = "/etc/resolv.conf"


def host_nameservers(path: str = RESOLV_CONF) -> list[str]:
    """The host's resolvers from its resolv.conf, loopback ones left out (an instance cannot reach them)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                bits = line.split()
                if len(bits) >= 2 and bits[0] == "nameserver":
                    try:
                        if not ipaddress.ip_address(bits[1].split("%")[0]).is_loopback:
                            out.append(bits[1])
                    except ValueError:
                        continue
    except OSError:
        pass
    return out[:3]


def resolv_conf(host: list[str], configured: str | None, domain: str | None, gateway: str | None) -> str:
    """An instance's /etc/resolv.conf: the host's resolvers unless they are loopback ones, else the
    network's dns.nameservers, else the gateway (a resolver the host may run there)."""
    servers = host or (configured.split(",") if configured else []) or ([gateway.split("/")[0]] if gateway else [])
    lines = ["# written by jaula at each start (the network's DNS settings)"]
    if domain:
        lines.append(f"search {domain}")
    lines += [f"nameserver {s}" for s in servers]
    return "\n".join(lines) + "\n"


def hosts_file(name: str, addresses: list[str]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{a.split('/')[0]}\t{name}" for a in addresses]
    if not addresses:
        lines.append(f"127.0.1.1\t{name}")
    return "\n".join(lines) + "\n"


def managed_resolv_conf(domain: str, gateways: list[str]) -> str:
    """An instance's /etc/resolv.conf on a network whose DNS jaulad answers: the gateway's
    addresses, its domain searched (so `web1` and `web1.<domain>` both resolve)."""
    lines = ["# written by jaula at each start: jaulad answers on the network's gateway (dns.mode=managed)",
             f"search {domain}"]
    lines += [f"nameserver {g.split('/')[0]}" for g in gateways]
    return "\n".join(lines) + "\n"


def upstreams(configured: str | None, own: list[str], path: str = RESOLV_CONF) -> list[str]:
    """Where a managed network's DNS forwards what it does not answer: its dns.nameservers, else
    every resolver of the host's resolv.conf (loopback ones too: the forwarder runs on the host),
    never one of the network's own listening addresses (a loop)."""
    if configured:
        servers = [s.strip() for s in configured.split(",") if s.strip()]
    else:
        servers = []
        try:
            with open(path) as f:
                for line in f:
                    bits = line.split()
                    if len(bits) >= 2 and bits[0] == "nameserver":
                        servers.append(bits[1].split("%")[0])
        except OSError:
            pass
    out = []
    for s in servers:
        try:
            ip = str(ipaddress.ip_address(s))
        except ValueError:
            continue
        if ip not in own and ip not in out:
            out.append(ip)
    return out[:3]


@dataclass(frozen=True)
class Verdict:
    """What a network's DNS does with one question: `kind` is "name" (answer from the instance
    `instance`), "ptr" (the instance with `address`), "nxdomain", "nodata" (the name exists,
    not this type: the domain itself), or "forward"."""
    kind: str
    instance: str | None = None
    address: str | None = None


def classify(question: dns_wire.Question, domain: str, subnets: list[str]) -> Verdict:
    """Which names the network answers itself: one label (`web1`: never sent upstream), one label
    under the domain (`web1.jaula`), anything else under the domain (NXDOMAIN), and complete
    reverse names of addresses of its subnets; the rest is forwarded."""
    labels = question.lower
    dom = tuple(domain.lower().encode().split(b"."))
    if len(labels) == 0:
        return Verdict("forward")   # the root zone
    if labels == dom:
        return Verdict("nodata")    # the domain itself (an instance named so: NAME.<domain>)
    if len(labels) == 1:
        return _instance(labels[0])
    if labels[-len(dom):] == dom:
        if len(labels) == len(dom) + 1:
            return _instance(labels[0])
        return Verdict("nxdomain")
    address = dns_wire.reverse_address(labels)
    if address is not None and any(ipaddress.ip_address(address) in ipaddress.ip_interface(s).network
                                   for s in subnets):
        return Verdict("ptr", address=address)
    return Verdict("forward")


def _instance(label: bytes) -> Verdict:
    from jaula.names import is_name

    try:
        name = label.decode("ascii")
    except UnicodeDecodeError:
        return Verdict("nxdomain")
    return Verdict("name", instance=name) if is_name(name) else Verdict("nxdomain")
