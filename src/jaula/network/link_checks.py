"""What `links` checks in a plan before any change (pure): interface names, MACs, MTUs,
addresses, gateways, routes and limits, every problem in words that say what is allowed."""

from __future__ import annotations

import ipaddress

from jaula.network.plan import BRIDGED, MACVLAN, NetworkPlan, NicPlan

IFNAMSIZ = 15           # longest interface name (IFNAMSIZ - 1)
MTU_MIN, MTU_MAX = 68, 65535
MTU_MIN_V6 = 1280       # RFC 8200: IPv6 needs at least this
_HEX = set("0123456789abcdefABCDEF")


def ifname_problem(name: str, what: str) -> str | None:
    """Why `name` cannot be a Linux interface name (dev_valid_name), or None."""
    if not name or len(name) > IFNAMSIZ:
        return f"{what} {name!r} must have 1 to {IFNAMSIZ} characters"
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return f"{what} {name!r} may not be '.' or '..' nor contain '/', ':' or white space"
    if not name.isascii() or not name.isprintable():
        return f"{what} {name!r} must be printable ASCII"
    return None


def mac_problem(mac: str, what: str = "mac") -> str | None:
    """Why `mac` is not a unicast Ethernet address written "xx:xx:xx:xx:xx:xx", or None."""
    parts = mac.split(":")
    if len(parts) != 6 or any(len(p) != 2 or not set(p) <= _HEX for p in parts):
        return f"{what} {mac!r} must be six hex pairs separated by ':' (e.g. '02:00:00:00:00:01')"
    first = int(parts[0], 16)
    if first & 1:
        return f"{what} {mac!r} is a multicast address: the first octet must be even"
    if mac.replace(":", "") == "000000000000":
        return f"{what} {mac!r} is all zeros"
    return None


def _interface_problem(value: str, family: int, what: str) -> str | None:
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        return f"{what} {value!r} is not an IPv{family} address with a prefix (e.g. {_example(family)})"
    if iface.version != family:
        return f"{what} {value!r} is not an IPv{family} address"
    if "/" not in value:
        return f"{what} {value!r} needs a prefix length (e.g. {_example(family)})"
    return None


def _example(family: int) -> str:
    return "'10.71.3.7/24'" if family == 4 else "'fd42:71:3::7/64'"


def _address_problem(value: str, what: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{what} {value!r} is not an IP address (no prefix)"
    return None


def network_problems(net: NetworkPlan) -> list[str]:
    """Everything wrong in a network plan, for `ensure_bridge` to refuse before any change."""
    problems = []
    if p := ifname_problem(net.bridge, "bridge name"):
        problems.append(p)
    if net.ipv4 is not None and (p := _interface_problem(net.ipv4, 4, "ipv4")):
        problems.append(p)
    if net.ipv6 is not None and (p := _interface_problem(net.ipv6, 6, "ipv6")):
        problems.append(p)
    low = MTU_MIN_V6 if net.ipv6 else MTU_MIN
    if not isinstance(net.mtu, int) or not low <= net.mtu <= MTU_MAX:
        problems.append(f"mtu {net.mtu!r} must be an integer from {low} to {MTU_MAX}")
    return problems


def nic_problems(nic: NicPlan) -> list[str]:
    """Everything wrong in a NIC plan, for `attach` to refuse before any change."""
    problems = []
    if nic.type not in (BRIDGED, MACVLAN):
        problems.append(f"type {nic.type!r} cannot be attached: {BRIDGED!r} or {MACVLAN!r}")
    for value, what in ((nic.name, "name"), (nic.host_name, "host_name"), (nic.parent, "parent")):
        if p := ifname_problem(value, what):
            problems.append(p)
    if nic.name == "lo":
        problems.append("name 'lo' is the instance's loopback: choose another (e.g. 'eth0')")
    if p := mac_problem(nic.mac):
        problems.append(p)
    low = MTU_MIN_V6 if nic.ipv6 else MTU_MIN
    if not isinstance(nic.mtu, int) or not low <= nic.mtu <= MTU_MAX:
        problems.append(f"mtu {nic.mtu!r} must be an integer from {low} to {MTU_MAX}")
    for family, values in ((4, nic.ipv4), (6, nic.ipv6)):
        for value in values:
            if p := _interface_problem(value, family, f"ipv{family} address"):
                problems.append(p)
    for family, gw in ((4, nic.gateway4), (6, nic.gateway6)):
        if gw is None:
            continue
        if (p := _address_problem(gw, f"gateway{family}")) is None and ipaddress.ip_address(gw).version != family:
            p = f"gateway{family} {gw!r} is not an IPv{family} address"
        if p:
            problems.append(p)
    for route in nic.routes:
        if not (isinstance(route, tuple) and len(route) == 2):
            problems.append(f"route {route!r} must be a (destination CIDR, via address) pair")
            continue
        dst, via = route
        try:
            dnet = ipaddress.ip_network(dst)
        except ValueError:
            problems.append(f"route destination {dst!r} is not a network in CIDR form (e.g. '192.168.5.0/24')")
            continue
        if p := _address_problem(via, "route via"):
            problems.append(p)
        elif ipaddress.ip_address(via).version != dnet.version:
            problems.append(f"route {dst!r} via {via!r}: the gateway's family differs from the destination's")
    for value, what in ((nic.ingress_kbit, "ingress_kbit"), (nic.egress_kbit, "egress_kbit")):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            problems.append(f"{what} {value!r} must be a positive integer (kbit/s) or None for no limit")
    return problems
