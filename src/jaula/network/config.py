"""Settings of jaulad's networks and of instances' NICs: declared, checked all at once, pure.

A network's config (`validate_network`):
  ipv4.address   gateway with prefix "10.71.3.1/24", "auto" (a free /24 picked at create) or "none"
  ipv6.address   the same for IPv6 ("fd42:71:3::1/64"; "auto" picks a ULA /64)
  ipv4.nat       masquerade traffic leaving the subnet (true); ipv6.nat the same for IPv6
  isolation      allow (instances of the network reach each other) or isolate
  host_access    none, dns (udp/tcp 53 to the gateway) or all: what of the host instances reach
  dns.mode       managed (jaulad answers on the gateway: instances' names, the rest forwarded;
                 the default unless host_access=none) or host (the resolvers themselves written in
                 instances' /etc/resolv.conf)
  dns.nameservers  comma-separated addresses: managed, where names jaulad does not know are
                 forwarded (default: the host's resolvers); host, written in instances'
                 /etc/resolv.conf when the host's own are loopback ones (unreachable from an instance)
  dns.domain     the domain of instances' names (managed: default jaula) and the search domain
                 of their /etc/resolv.conf
  mtu            68 to 65535 (1500)
  bridge         the host bridge's name (<= 15 characters; chosen at create when unset)

An instance's NIC `eth0` is the keys `nic.eth0.*` of its settings (`check_nic_key`):
  type (bridged, macvlan or none), network (bridged; "default" when unset), parent (macvlan:
  the host interface), ipv4 / ipv6 ("auto", "none" or a static address of the network's subnet),
  mac (stable when unset), mtu, limits.ingress / limits.egress ("10Mbit"), routes
  ("10.9.0.0/16 via 10.71.3.254, ...").
Values are normalized to the strings a person writes, so a normalized value validates unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from jaula.errors import ConfigError
from jaula.network import ipam
from jaula.network.plan import (
    ALLOW,
    BRIDGED,
    HOST_ALL,
    HOST_DNS,
    HOST_NONE,
    ISOLATE,
    MACVLAN,
    NIC_TYPES,
    NONE,
    NetworkPlan,
)

AUTO, OFF = "auto", "none"
DNS_MANAGED, DNS_HOST = "managed", "host"   # dns.mode
DEFAULT_DOMAIN = "jaula"
DEFAULT_NETWORK = "default"
DEFAULT_MTU = 1500
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_RATE = re.compile(r"\s*([0-9]+)\s*([kKmMgG]?)(bit|bps)?\s*\Z")
_RATE_UNITS = {"": 1, "k": 1, "m": 1000, "g": 1000 * 1000}   # in kbit/s; "10Mbit", "500kbit"


# --- value checks -------------------------------------------------------------------------------------
def _bool(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return "true" if value.strip().lower() in _TRUE else "false"
    raise ValueError(f"{value!r} is not a boolean; use true or false")


def _choice(*choices: str):  # type: ignore[no-untyped-def]
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of: {', '.join(choices)}")
        return value
    return check


def _mtu(value: Any) -> str:
    try:
        n = int(value.strip()) if isinstance(value, str) else int(value)
        if isinstance(value, (bool, float)):
            raise ValueError  # noqa: TRY004 - the message completes "KEY: ..."
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"{value!r} is not a whole number; use an MTU from 68 to 65535 (e.g. 1500)") from None
    if not 68 <= n <= 65535:
        raise ValueError(f"{n} is out of range; use an MTU from 68 to 65535")
    return str(n)


def _gateway(family: int):  # type: ignore[no-untyped-def]
    def check(value: Any) -> str:
        if value in (AUTO, OFF):
            return value
        return str(ipam.parse_gateway(value, family))
    return check


def _nameservers(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: give comma-separated addresses, e.g. 1.1.1.1,9.9.9.9")  # noqa: TRY004 - the message completes "KEY: ..."
    out = []
    for part in (p.strip() for p in value.split(",")):
        try:
            out.append(str(ipaddress.ip_address(part)))
        except ValueError:
            raise ValueError(f"{part!r} is not an address; give comma-separated addresses, e.g. 1.1.1.1,9.9.9.9") from None
    if len(out) > 3:
        raise ValueError("at most 3 nameservers (resolv.conf reads no more)")
    return ",".join(out)


def _domain(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _DOMAIN.match(value):
        raise ValueError(f"{value!r} is not a domain name; use labels of letters, digits and '-' joined by dots")
    return value.lower()


def _bridge(value: Any) -> str:
    return ipam.check_ifname(value, "bridge name")


NETWORK_KEYS: dict[str, tuple[Any, str, Any]] = {  # key: (default, description, check)
    "ipv4.address": (AUTO, "gateway address with prefix (10.71.3.1/24), auto or none", _gateway(4)),
    "ipv6.address": (AUTO, "gateway address with prefix (fd42:71:3::1/64), auto or none", _gateway(6)),
    "ipv4.nat": ("true", "masquerade IPv4 traffic leaving the subnet", _bool),
    "ipv6.nat": ("true", "masquerade IPv6 traffic leaving the subnet", _bool),
    "isolation": (ALLOW, "allow: instances of the network reach each other; isolate: they do not",
                  _choice(ALLOW, ISOLATE)),
    "host_access": (HOST_DNS, "what of the host instances reach: none, dns (port 53 of the gateway) or all",
                    _choice(HOST_NONE, HOST_DNS, HOST_ALL)),
    "dns.mode": (None, ("managed: jaulad answers on the gateway (instances' names, the rest forwarded; the "
                        "default unless host_access=none); host: instances use the resolvers themselves"),
                 _choice(DNS_MANAGED, DNS_HOST)),
    "dns.nameservers": (None, ("managed: where other names are forwarded (default: the host's resolvers); host: "
                               "resolvers for instances when the host's are loopback ones, e.g. 1.1.1.1,9.9.9.9"),
                        _nameservers),
    "dns.domain": (None, (f"domain of instances' names (managed: default {DEFAULT_DOMAIN}) and search domain of "
                          "their /etc/resolv.conf"), _domain),
    "mtu": (str(DEFAULT_MTU), "MTU of the bridge and of its NICs (68 to 65535)", _mtu),
    "bridge": (None, "host bridge name, at most 15 characters (chosen at create when unset)", _bridge),
}
#: keys a network with instances on it cannot change (its addresses and its bridge)
FIXED_WHILE_USED = ("ipv4.address", "ipv6.address", "bridge")


def validate_network(config: Any, what: str = "Network") -> dict[str, str]:
    """Every key checked; the normalized config (unset keys left out), or ConfigError listing all."""
    if not isinstance(config, dict):
        raise ConfigError(f"{what} config must be a mapping of key to value, not {type(config).__name__}")
    problems: list[str] = []
    out: dict[str, str] = {}
    for key in sorted(config, key=str):
        value = config[key]
        if value is None or value == "":
            continue
        entry = NETWORK_KEYS.get(key) if isinstance(key, str) else None
        if entry is None:
            problems.append(f"{what}: {key}: unknown key; known keys: {', '.join(NETWORK_KEYS)}")
            continue
        try:
            out[key] = entry[2](value)
        except ValueError as e:
            problems.append(f"{what}: {key}: {e}")
    nat = (out.get("ipv4.nat", "true"), out.get("ipv6.nat", "true"))
    if nat[0] != nat[1] and not problems:
        problems.append(f"{what}: ipv4.nat and ipv6.nat differ: the firewall has one NAT switch for both "
                        "families for now; set them alike")
    if out.get("dns.mode") == DNS_MANAGED and out.get("host_access") == HOST_NONE:
        problems.append(f"{what}: dns.mode=managed answers on port 53 of the gateway, which host_access=none "
                        "closes to instances: set host_access=dns (or all), or dns.mode=host")
    if out.get("ipv4.address") == OFF and out.get("ipv6.address") == OFF:
        problems.append(f"{what}: ipv4.address and ipv6.address are both none: give the network at least one subnet")
    if problems:
        raise ConfigError(problems)
    return out


def effective_network(config: dict[str, str]) -> dict[str, str]:
    out = {k: d for k, (d, _, _) in NETWORK_KEYS.items() if d is not None}
    out.update(config)
    return out


def dns_mode(config: dict[str, str]) -> str:
    """A network's dns.mode: as set, else managed unless host_access=none (which closes the
    gateway's port 53 to instances)."""
    mode = config.get("dns.mode")
    if mode:
        return mode
    return DNS_HOST if config.get("host_access") == HOST_NONE else DNS_MANAGED


def dns_domain(config: dict[str, str]) -> str | None:
    """The domain of a network's instances' names: dns.domain, else jaula when managed."""
    return config.get("dns.domain") or (DEFAULT_DOMAIN if dns_mode(config) == DNS_MANAGED else None)


def network_plan(name: str, config: dict[str, str]) -> NetworkPlan:
    """The plan of a stored network (its addresses and bridge already resolved at create)."""
    cfg = effective_network(config)

    def gw(key: str) -> str | None:
        v = cfg.get(key)
        return None if v in (None, AUTO, OFF) else v
    return NetworkPlan(name=name, bridge=cfg["bridge"], ipv4=gw("ipv4.address"), ipv6=gw("ipv6.address"),
                       nat=cfg["ipv4.nat"] == "true", isolation=cfg["isolation"], host_access=cfg["host_access"],
                       mtu=int(cfg["mtu"]))


# --- NICs of instances ----------------------------------------------------------------------------------
def rate_kbit(value: Any) -> int:
    """ "10Mbit", "500kbit", "1Gbit" or a bare number of kbit -> kbit/s."""
    m = _RATE.match(value) if isinstance(value, str) else None
    if m is None or m.group(3) == "bps" or (m.group(3) and not m.group(2)):
        raise ValueError(f"{value!r} is not a rate; use a number with kbit, Mbit or Gbit, e.g. 10Mbit")
    kbit = int(m.group(1)) * _RATE_UNITS[m.group(2).lower()]
    if not 8 <= kbit <= 100 * 1000 * 1000:
        raise ValueError(f"{value!r} is out of range; use from 8kbit to 100Gbit")
    return kbit


def parse_rate(value: Any) -> str:
    """A rate in its shortest exact unit: "10000kbit" -> "10Mbit"."""
    return show_rate(rate_kbit(value))


def show_rate(kbit: int) -> str:
    for unit, factor in (("Gbit", 1000 * 1000), ("Mbit", 1000)):
        if kbit % factor == 0:
            return f"{kbit // factor}{unit}"
    return f"{kbit}kbit"


def _nic_address(family: int):  # type: ignore[no-untyped-def]
    def check(value: Any) -> str:
        if value in (AUTO, OFF):
            return value
        return str(ipam.parse_address(value, family))
    return check


def _routes(value: Any) -> str:
    help_ = "use DEST via GATEWAY, comma-separated, e.g. 10.9.0.0/16 via 10.71.3.254"
    if not isinstance(value, str):
        raise ValueError(f"{value!r}: {help_}")  # noqa: TRY004 - the message completes "KEY: ..."
    out = []
    for part in (p.strip() for p in value.split(",")):
        bits = part.split()
        if len(bits) != 3 or bits[1] != "via":
            raise ValueError(f"{part!r}: {help_}")
        try:
            dest = ipaddress.ip_network(bits[0], strict=False)
            via = ipaddress.ip_address(bits[2])
        except ValueError:
            raise ValueError(f"{part!r}: {help_}") from None
        if dest.version != via.version:
            raise ValueError(f"{part!r}: the destination and the gateway are of different families")
        out.append(f"{dest} via {via}")
    return ", ".join(out)


def parse_routes(value: str | None) -> tuple[tuple[str, str], ...]:
    if not value:
        return ()
    return tuple((d, v) for d, _, v in (p.split() for p in _routes(value).split(", ")))


NIC_FIELDS: dict[str, tuple[str, Any]] = {  # field: (description, check)
    "type": ("bridged (a veth into a network's bridge), macvlan (on a host interface) or none",
             _choice(*NIC_TYPES)),
    "network": ("the network of a bridged NIC (default: default)",
                lambda v: _network_name(v)),
    "parent": ("the host interface of a macvlan NIC", lambda v: ipam.check_ifname(v, "parent interface")),
    "ipv4": ("auto (allocated), none, or a static address of the network's subnet", _nic_address(4)),
    "ipv6": ("auto (allocated), none, or a static address of the network's subnet", _nic_address(6)),
    "mac": ("MAC address (stable when unset)", ipam.check_mac),
    "mtu": ("MTU (68 to 65535; the network's when unset)", _mtu),
    "limits.ingress": ("rate limit of traffic into the instance, e.g. 10Mbit", parse_rate),
    "limits.egress": ("rate limit of traffic out of the instance, e.g. 10Mbit", parse_rate),
    "routes": ("extra routes: DEST via GATEWAY, comma-separated", _routes),
}
#: NIC fields a running instance takes at once (the others: stop it, or use `jaula nic`)
LIVE_FIELDS = ("limits.ingress", "limits.egress")


def _network_name(value: Any) -> str:
    from jaula.names import validate_name

    try:
        return validate_name(value, "Network")
    except ConfigError as e:
        raise ValueError("; ".join(e.problems)) from None


def split_nic_key(key: str) -> tuple[str, str]:
    """"nic.eth0.limits.ingress" -> ("eth0", "limits.ingress"); ValueError when malformed."""
    _, _, rest = key.partition(".")
    name, _, field = rest.partition(".")
    ipam.check_ifname(name, "NIC name")
    if name == "lo":
        raise ValueError("'lo' is the loopback interface: name the NIC otherwise, e.g. eth0")
    return name, field


def check_nic_key(key: str, value: Any) -> str:
    """One nic.<name>.<field> setting -> its normalized value; ValueError completing "KEY: ..."."""
    name, field = split_nic_key(key)
    entry = NIC_FIELDS.get(field)
    if entry is None:
        raise ValueError(f"unknown NIC field {field!r}; use nic.{name}.FIELD with FIELD one of: {', '.join(NIC_FIELDS)}")
    return entry[1](value)


def nics(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The NICs of a validated config: name -> {field: value} (type filled in: bridged)."""
    out: dict[str, dict[str, str]] = {}
    for key, value in config.items():
        if key.startswith("nic."):
            name, field = split_nic_key(key)
            out.setdefault(name, {})[field] = value
    for fields in out.values():
        fields.setdefault("type", BRIDGED)
        if fields["type"] == BRIDGED:
            fields.setdefault("network", DEFAULT_NETWORK)
    return dict(sorted(out.items()))


def nic_problems(config: dict[str, Any]) -> list[str]:
    """What the NIC keys of a validated config say that does not fit together."""
    problems = []
    for name, f in nics(config).items():
        if f["type"] == MACVLAN and "parent" not in f:
            problems.append(f"nic.{name}.parent: a macvlan NIC needs its host interface, e.g. nic.{name}.parent=eth0")
        if f["type"] != MACVLAN and "parent" in f:
            problems.append(f"nic.{name}.parent: only a macvlan NIC has a parent (this one is {f['type']})")
        if f["type"] != BRIDGED and "network" in f:
            problems.append(f"nic.{name}.network: only a bridged NIC is on a network (this one is {f['type']})")
        if f["type"] == MACVLAN and any(f.get(k) == AUTO for k in ("ipv4", "ipv6")):
            problems.append(f"nic.{name}: a macvlan NIC has no allocated address: give static ones, or none")
        if f["type"] == MACVLAN and ("limits.ingress" in f or "limits.egress" in f):
            problems.append(f"nic.{name}.limits: a macvlan NIC has no host device to shape: limit a bridged NIC")
        if f["type"] == NONE and set(f) - {"type"}:
            problems.append(f"nic.{name}: a NIC of type none takes no other key ({', '.join(sorted(set(f) - {'type'}))})")
    return problems


def in_use(fields: dict[str, str]) -> bool:
    """Whether a NIC gets an interface (its type is not none)."""
    return fields.get("type", BRIDGED) != NONE
