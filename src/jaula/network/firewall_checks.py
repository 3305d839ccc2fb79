"""What the firewall refuses, every problem at once, before any change (`ConfigError` lists them)."""

from __future__ import annotations

import ipaddress
import re

from jaula.errors import ConfigError
from jaula.network.plan import (
    ALLOW,
    BRIDGED,
    HOST_ALL,
    HOST_DNS,
    HOST_NONE,
    ISOLATE,
    NIC_TYPES,
    NetworkPlan,
    NicPlan,
    PortForward,
)

TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
PROTOS = ("tcp", "udp")


def ifname_problem(what: str, name: object) -> str | None:
    bad = not isinstance(name, str) or not 1 <= len(name) <= 15 or name in (".", "..")
    if bad or any(c in str(name) for c in "/: \t\n"):
        return f"{what} {name!r} is not an interface name (1 to 15 characters, no '/', ':' or spaces)"
    return None


def _addr_problems(what: str, values: object, version: int, prefix: bool) -> list[str]:
    out = []
    for v in values if isinstance(values, (list, tuple)) else [values]:
        try:
            a = ipaddress.ip_interface(v) if prefix else ipaddress.ip_address(v)
            if a.version != version or (prefix and "/" not in str(v)):
                raise ValueError
        except (TypeError, ValueError):
            form = "address/prefix" if prefix else "address without prefix"
            out.append(f"{what} {v!r} is not an IPv{version} {form}")
    return out


def network_problems(net: NetworkPlan) -> list[str]:
    p = [x for x in [ifname_problem("network bridge", net.bridge)] if x]
    if not isinstance(net.name, str) or not 1 <= len(net.name) <= 128:
        p.append(f"network name {net.name!r} is not a name of 1 to 128 characters")
    if net.ipv4 is not None:
        p += _addr_problems("network ipv4", net.ipv4, 4, True)
    if net.ipv6 is not None:
        p += _addr_problems("network ipv6", net.ipv6, 6, True)
    if net.isolation not in (ALLOW, ISOLATE):
        p.append(f"network isolation {net.isolation!r} is not one of {ALLOW!r}, {ISOLATE!r}")
    if net.host_access not in (HOST_NONE, HOST_DNS, HOST_ALL):
        p.append(f"network host_access {net.host_access!r} is not one of {HOST_NONE!r}, {HOST_DNS!r}, {HOST_ALL!r}")
    if not isinstance(net.nat, bool):
        p.append(f"network nat {net.nat!r} is not true or false")
    return p


def nic_problems(net: NetworkPlan, nic: NicPlan) -> list[str]:
    p = network_problems(net)
    if nic.type not in NIC_TYPES:
        p.append(f"nic type {nic.type!r} is not one of {', '.join(map(repr, NIC_TYPES))}")
    if nic.type != BRIDGED:
        return p
    if not isinstance(nic.instance, str) or not 1 <= len(nic.instance) <= 128:
        p.append(f"nic instance {nic.instance!r} is not a name of 1 to 128 characters")
    p += [x for x in [ifname_problem("nic host_name", nic.host_name)] if x]
    if nic.parent != net.bridge:
        p.append(f"nic parent {nic.parent!r} is not the network's bridge {net.bridge!r}")
    if nic.network is not None and nic.network != net.name:
        p.append(f"nic network {nic.network!r} is not the network {net.name!r}")
    mac = nic.mac.lower() if isinstance(nic.mac, str) else ""
    if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1:
        p.append(f"nic mac {nic.mac!r} is not a unicast MAC address (six hex pairs, first octet even)")
    p += _addr_problems("nic ipv4", nic.ipv4, 4, True) + _addr_problems("nic ipv6", nic.ipv6, 6, True)
    return p


def forward_problems(fwd: PortForward) -> list[str]:
    p = []
    if not isinstance(fwd.instance, str) or not 1 <= len(fwd.instance) <= 128:
        p.append(f"forward instance {fwd.instance!r} is not a name of 1 to 128 characters")
    if fwd.proto not in PROTOS:
        p.append(f"forward proto {fwd.proto!r} is not one of 'tcp', 'udp'")
    for what, port in (("host_port", fwd.host_port), ("port", fwd.port)):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            p.append(f"forward {what} {port!r} is not a port number (1 to 65535)")
    try:
        version = ipaddress.ip_address(fwd.address).version
    except (TypeError, ValueError):
        return p + [f"forward address {fwd.address!r} is not an IPv4 or IPv6 address without prefix"]
    if fwd.host_address is not None:
        p += _addr_problems("forward host_address", fwd.host_address, version, False)
        if str(fwd.host_address) == "::1":
            p.append("forward host_address '::1': IPv6's loopback cannot reach an instance (the kernel keeps ::1 "
                     "on `lo`); use 127.0.0.1, or no host_address for every host address")
    return p


def check(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems)
