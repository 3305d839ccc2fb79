"""Address management for jaulad's networks: pure (no kernel call, no database).

Checks of subnets and addresses with messages a user can act on; the next free address of a
subnet given the used ones (the gateway is the subnet's first host; the network and broadcast
addresses are never given); stable MACs and host-side interface names from hashes; and the
choice of a default IPv4 /24 and IPv6 ULA /64 that overlap none of the host's routes.

Names that must not clash between two jaulads on one host (test daemons over temporary roots)
take a `tag` from the daemon's root: "" for the default root, else a short hash (`root_tag`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable

from jaula.errors import ConfigError, JaulaError

DEFAULT_ROOT = "/var/lib/jaula"
IFNAME_MAX = 15
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Iface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# --- names from the daemon's root -------------------------------------------------------------------
def root_tag(root: str) -> str:
    """"" for the default root, else 6 hex characters of the root's path."""
    root = root.rstrip("/") or "/"
    return "" if root == DEFAULT_ROOT else _digest("root", root)[:6]


def table_name(tag: str) -> str:
    """The daemon's nftables table: "jaula", or "jaula_<tag>" for another root."""
    return f"jaula_{tag}" if tag else "jaula"


def default_bridge(tag: str, network: str = "default") -> str:
    """The bridge of a network created without one: "jaulabr0" for the default network of the
    default root, else "jb" + 10 hex characters of (tag, network)."""
    if not tag and network == "default":
        return "jaulabr0"
    return "jb" + _digest("bridge", tag, network)[:10]


def veth_name(tag: str, instance: str, nic: str) -> str:
    """The host side of an instance's veth: "jv" + 10 hex characters (12 <= IFNAME_MAX)."""
    return "jv" + _digest("veth", tag, instance, nic)[:10]


def stable_mac(tag: str, instance: str, nic: str) -> str:
    """A locally administered unicast MAC ("02:..."), the same at every start."""
    h = _digest("mac", tag, instance, nic)
    return "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))


# --- checks -------------------------------------------------------------------------------------------
def check_ifname(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > IFNAME_MAX or not _IFNAME.match(name):
        raise ValueError(f"{what} {name!r} is not an interface name: use 1 to {IFNAME_MAX} letters, "
                         "digits, '_' or '-', starting with a letter or digit")
    return name


def check_mac(value: object) -> str:
    """ "02:AB:..." -> "02:ab:...": six bytes, unicast (a multicast MAC cannot be a source)."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text is None or not _MAC.match(text):
        raise ValueError(f"{value!r} is not a MAC address; use six hex bytes such as 02:00:00:aa:bb:cc")
    if int(text[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast MAC; use a unicast one (even first byte), e.g. 02:...")
    if text == "00:00:00:00:00:00":
        raise ValueError("00:00:00:00:00:00 is not a usable MAC")
    return text


def parse_gateway(value: object, family: int) -> Iface:
    """A network's gateway address with its prefix ("10.71.3.1/24", "fd42::1/64"), checked: the
    right family, a prefix that leaves room for instances, a host address of its subnet."""
    name = f"IPv{family}"
    example = "10.71.3.1/24" if family == 4 else "fd42:71:3::1/64"
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{value!r} is not an {name} address with a prefix; use e.g. {example}, auto or none")
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an {name} address with a prefix; use e.g. {example}, "
                         "auto or none") from None
    if iface.version != family:
        raise ValueError(f"{value!r} is an IPv{iface.version} address; use an {name} one such as {example}")
    most = 30 if family == 4 else 126
    if iface.network.prefixlen > most:
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} leaves no room for instances; use /{most} or less")
    if iface.network.prefixlen < (8 if family == 4 else 48):
        raise ValueError(f"{value!r}: a /{iface.network.prefixlen} is too large; use from /"
                         f"{8 if family == 4 else 48} to /{most}")
    if iface.ip in (iface.network.network_address, _broadcast(iface.network)):
        raise ValueError(f"{value!r}: the gateway must be a host address of {iface.network}, "
                         f"not its network or broadcast address (e.g. {_first_host(iface.network)})")
    if iface.ip.is_multicast or iface.ip.is_loopback or iface.ip.is_link_local or iface.ip.is_unspecified:
        raise ValueError(f"{value!r} is a multicast, loopback or link-local address; use a private range "
                         f"such as {example}")
    return iface


def parse_address(value: object, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An instance's static address, without a prefix (the network gives it)."""
    name = f"IPv{family}"
    try:
        if not isinstance(value, str):
            raise ValueError  # noqa: TRY004 - the message completes "KEY: ..."
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        example = "10.71.3.7" if family == 4 else "fd42:71:3::7"
        raise ValueError(f"{value!r} is not an {name} address; use auto, none or an address such as {example} "
                         "(no prefix: the network gives it)") from None
    if ip.version != family:
        raise ValueError(f"{value!r} is an IPv{ip.version} address; this key takes an {name} one")
    return ip


def check_in_subnet(address: str, gateway: str) -> str:
    """A static address for a network with gateway `gateway`: inside its subnet, not the network,
    broadcast or gateway address. Returns it with the subnet's prefix."""
    gw = ipaddress.ip_interface(gateway)
    ip = ipaddress.ip_address(address)
    net = gw.network
    if ip.version != net.version or ip not in net:
        raise ConfigError(f"address {address} is outside the network's subnet {net}: pick one inside it, or auto")
    if ip in (net.network_address, _broadcast(net)):
        raise ConfigError(f"address {address} is the network or broadcast address of {net}: pick a host address")
    if ip == gw.ip:
        raise ConfigError(f"address {address} is the network's gateway: pick another one, or auto")
    return f"{ip}/{net.prefixlen}"


def overlaps(a: str, b: str) -> bool:
    na, nb = ipaddress.ip_network(a, strict=False), ipaddress.ip_network(b, strict=False)
    return na.version == nb.version and na.overlaps(nb)


# --- allocation ---------------------------------------------------------------------------------------
def next_free(gateway: str, used: Iterable[str]) -> str:
    """The lowest host address of the gateway's subnet that is neither the gateway nor in `used`
    (addresses without prefix), with the subnet's prefix; JaulaError when the subnet is full."""
    gw = ipaddress.ip_interface(gateway)
    net = gw.network
    taken = {ipaddress.ip_address(u.split("/")[0]) for u in used} | {gw.ip}
    first = int(net.network_address) + 1
    last = int(_broadcast(net)) - (1 if net.version == 4 else 0)
    n = first
    while n <= last:
        ip = ipaddress.ip_address(n)
        if ip not in taken:
            return f"{ip}/{net.prefixlen}"
        n += 1
    raise JaulaError(f"network subnet {net} is full ({len(taken)} addresses used): "
                     "delete instances, or give the network a larger subnet")


def pick_ipv4_subnet(avoid: Iterable[str], seed: str = "") -> str:
    """A gateway "10.X.Y.1/24" whose /24 overlaps none of `avoid` (host routes and addresses,
    other networks' subnets; default routes /0 ignored). X, Y start from a hash of `seed` so two
    daemons rarely try the same first."""
    nets = _nets(avoid, 4)
    start = int(_digest("v4", seed)[:4], 16)
    for i in range(256 * 256):
        k = (start + i) % (256 * 256)
        net = ipaddress.IPv4Network((10 << 24 | k << 8, 24))
        if not any(net.overlaps(n) for n in nets):
            return f"{net.network_address + 1}/24"
    raise JaulaError("no free IPv4 /24 in 10.0.0.0/8: give the network an ipv4.address")


def pick_ipv6_subnet(avoid: Iterable[str], seed: str = "") -> str:
    """A gateway "fdXX:XXXX:XXXX:YYYY::1/64" (a ULA, RFC 4193: a global id from a hash of `seed`)
    whose /64 overlaps none of `avoid`."""
    nets = _nets(avoid, 6)
    h = _digest("v6", seed)
    global_id = int(h[:10], 16)
    for i in range(1 << 16):
        subnet = (int(h[10:14], 16) + i) % (1 << 16)
        prefix = (0xFD << 120) | (global_id << 80) | (subnet << 64)
        net = ipaddress.IPv6Network((prefix, 64))
        if not any(net.overlaps(n) for n in nets):
            return f"{net.network_address + 1}/64"
    raise JaulaError("no free IPv6 /64 in the ULA range: give the network an ipv6.address")


def _nets(items: Iterable[str], family: int) -> list[Net]:
    out: list[Net] = []
    for item in items:
        try:
            n = ipaddress.ip_network(item, strict=False)
        except ValueError:
            continue
        if n.version == family and n.prefixlen > 0:
            out.append(n)
    return out


def _broadcast(net: Net) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return net.broadcast_address


def _first_host(net: Net) -> str:
    return f"{net.network_address + 1}/{net.prefixlen}"
