"""What an instance's /etc/resolv.conf and /etc/hosts say (pure: texts from settings).

The host's own resolvers are used unless they are loopback ones (systemd-resolved's 127.0.0.53,
a local dnsmasq): an instance has its own loopback, so those are unreachable from it; then the
network's dns.nameservers, else its gateway address (where a resolver on the host may listen).
"""

from __future__ import annotations

import ipaddress

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
