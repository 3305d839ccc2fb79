"""The fixed part of jaula's nftables tables, as libnftables JSON: sets, chains and rules.

Rules never name an instance, a network or an address: they look packets up in sets keyed by
interface name (concatenations such as `iifname . ip saddr`), so adding a NIC, a network or a port
forward only adds set elements (`jaula.network.firewall` fills them), and no chain is made per NIC
(libnftables fetches every chain of the host before each batch: per-NIC chains would make every
call cost in proportion to the NICs). The neighbour-discovery target is checked against a set
keyed by `iifname . @th,64,128`, which only nft's own syntax can declare (`typeof`; libnftables
1.0.6's JSON has neither `typeof` nor `icmpv6 taddr`): `typed_sets` is that one declaration.
"""

from __future__ import annotations

import ipaddress

BRIDGE, INET = "bridge", "inet"

# name: (key type, map data type or None, flags)
BRIDGE_SETS: dict[str, tuple[str | list[str], str | None, list[str]]] = {
    "ports": ("ifname", None, []),                       # bridged NICs we police
    "macs": (["ifname", "ether_addr"], None, []),        # port . its MAC
    "addr4": (["ifname", "ipv4_addr"], None, []),        # port . its IPv4 addresses
    "addr6": (["ifname", "ipv6_addr"], None, []),        # port . its IPv6 addresses and link-local
    "isolated": ("ifname", None, []),                    # ports of networks with isolation=isolate
    "members": (["ifname", "ifname"], None, []),         # port . bridge (bookkeeping, no rule reads it)
}
# port . neighbour-discovery target it may claim (its IPv6 addresses as 128-bit integers), declared
# by typed_sets: key type ["ifname", "integer"] in JSON listings
ND_TARGETS = "ndtarget"
INET_SETS: dict[str, tuple[str | list[str], str | None, list[str]]] = {
    "bridges": ("ifname", None, []),                     # bridges of jaula networks
    "host_all": ("ifname", None, []),                    # bridges with host_access=all
    "dns4": (["ifname", "ipv4_addr"], None, []),         # bridge . gateway, host_access=dns
    "dns6": (["ifname", "ipv6_addr"], None, []),
    "own4": (["ifname", "ipv4_addr"], None, ["interval"]),  # bridge . its subnet
    "own6": (["ifname", "ipv6_addr"], None, ["interval"]),
    "nat4": ("ipv4_addr", None, ["interval"]),           # subnets of networks with nat
    "nat6": ("ipv6_addr", None, ["interval"]),
    # port forwards: proto . port (every host address) or host address . proto . port; libnftables
    # 1.0.6's JSON cannot declare a map to a concatenation, so address and port are two maps.
    "fwd4_to": (["inet_proto", "inet_service"], "ipv4_addr", []),
    "fwd4_port": (["inet_proto", "inet_service"], "inet_service", []),
    "fwd4h_to": (["ipv4_addr", "inet_proto", "inet_service"], "ipv4_addr", []),
    "fwd4h_port": (["ipv4_addr", "inet_proto", "inet_service"], "inet_service", []),
    "fwd6_to": (["inet_proto", "inet_service"], "ipv6_addr", []),
    "fwd6_port": (["inet_proto", "inet_service"], "inet_service", []),
    "fwd6h_to": (["ipv6_addr", "inet_proto", "inet_service"], "ipv6_addr", []),
    "fwd6h_port": (["ipv6_addr", "inet_proto", "inet_service"], "inet_service", []),
}
ND_TYPES = ["nd-neighbor-solicit", "nd-neighbor-advert"]
HOST_ICMPV6 = ["nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-solicit",
               "mld-listener-report", "mld2-listener-report", "mld-listener-done"]


# --- expression helpers -------------------------------------------------------------------------
def meta(key: str) -> dict:
    return {"meta": {"key": key}}


def field(proto: str, name: str) -> dict:
    return {"payload": {"protocol": proto, "field": name}}


def match(left: object, right: object, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def concat(*parts: object) -> dict:
    return {"concat": list(parts)}


ACCEPT, DROP = {"accept": None}, {"drop": None}
ND_TARGET = {"payload": {"base": "th", "offset": 64, "len": 128}}   # NS/NA target address


# --- the skeleton -------------------------------------------------------------------------------
def _sets(family: str, table: str, sets: dict) -> list[dict]:
    cmds = []
    for name, (key, data, flags) in sets.items():
        obj: dict = {"family": family, "table": table, "name": name, "type": key}
        if flags:
            obj["flags"] = flags
        if data:
            obj["map"] = data
        cmds.append({"add": {"map" if data else "set": obj}})
    return cmds


def _chain(family: str, table: str, name: str, kind: str | None = None, hook: str | None = None,
           prio: int = 0) -> dict:
    obj: dict = {"family": family, "table": table, "name": name}
    if hook:
        obj.update(type=kind, hook=hook, prio=prio, policy="accept")
    return {"add": {"chain": obj}}


def _rules(family: str, table: str, chain: str, rules: list[list[dict]]) -> list[dict]:
    return [{"add": {"rule": {"family": family, "table": table, "chain": chain, "expr": r}}} for r in rules]


def typed_sets(table: str, make: str | None = "add") -> str:
    """The bridge table's `typeof` set in nft's syntax, after the table itself with `make` ("add";
    "create": refused when it exists; None: not made, so the batch is refused when it is missing)."""
    text = f"{make} table bridge {table}\n" if make else ""
    return text + f"add set bridge {table} {ND_TARGETS} {{ typeof iifname . @th,64,128; }}\n"


def nd_target(address: str) -> str:
    """An IPv6 address as the 128-bit integer the `ndtarget` set holds."""
    return f"0x{int(ipaddress.IPv6Address(address)):032x}"


def bridge_table(table: str) -> list[dict]:
    """The bridge-family table: anti-spoofing per port (prerouting) and isolation (forward).

    Idempotent (`add`, and the fixed chains flushed before their rules are added again, in the same
    transaction: no packet sees them empty). Needs `typed_sets` first.
    """
    b = BRIDGE
    cmds = [{"add": {"table": {"family": b, "name": table}}}]
    cmds += _sets(b, table, BRIDGE_SETS)
    cmds += [_chain(b, table, "prerouting", "filter", "prerouting", -200),
             _chain(b, table, "forward", "filter", "forward", -200),
             _chain(b, table, "spoof")]
    cmds += [{"flush": {"chain": {"family": b, "table": table, "name": c}}}
             for c in ("prerouting", "forward", "spoof")]
    iif, etype = meta("iifname"), field("ether", "type")
    icmp6 = field("icmpv6", "type")
    cmds += _rules(b, table, "prerouting", [[match(iif, "@ports"), {"jump": {"target": "spoof"}}]])
    cmds += _rules(b, table, "forward", [
        [match(iif, "@isolated"), match(meta("oifname"), "@isolated"), DROP]])
    cmds += _rules(b, table, "spoof", [
        [match(concat(iif, field("ether", "saddr")), "@macs", "!="), DROP],
        # IPv4 first, done in three more rules (most frames are IPv4): accept ends this table's
        # prerouting as its policy would, without the ARP and IPv6 rules below
        [match(etype, "ip"), match(concat(iif, field("ip", "saddr")), "@addr4", "!="), DROP],
        [match(etype, "ip"), match(field("udp", "sport"), 67), match(field("udp", "dport"), 68), DROP],
        [match(etype, "ip"), ACCEPT],
        # then only IPv6 and ARP: a VLAN tag or another protocol would hide addresses from the checks
        [match(etype, {"set": ["ip6", "arp"]}, "!="), DROP],
        # arp: Ethernet/IPv4 only (other lengths move the address fields the checks below read)
        [match(etype, "arp"), match(field("arp", "htype"), 1, "!="), DROP],
        [match(etype, "arp"), match(field("arp", "ptype"), "ip", "!="), DROP],
        [match(etype, "arp"), match(field("arp", "hlen"), 6, "!="), DROP],
        [match(etype, "arp"), match(field("arp", "plen"), 4, "!="), DROP],
        [match(etype, "arp"), match(concat(iif, field("arp", "saddr ether")), "@macs", "!="), DROP],
        [match(etype, "arp"), match(concat(iif, field("arp", "saddr ip")), "@addr4", "!="), DROP],
        # neighbour discovery: no extension headers (they would move the target); an advertisement,
        # or a solicitation from :: (duplicate address detection), only for the port's own addresses
        [match(etype, "ip6"), match(icmp6, {"set": ND_TYPES}),
         match(field("ip6", "nexthdr"), "ipv6-icmp", "!="), DROP],
        [match(etype, "ip6"), match(icmp6, "nd-neighbor-advert"),
         match(concat(iif, ND_TARGET), f"@{ND_TARGETS}", "!="), DROP],
        [match(etype, "ip6"), match(icmp6, "nd-neighbor-solicit"), match(field("ip6", "saddr"), "::"),
         match(concat(iif, ND_TARGET), f"@{ND_TARGETS}", "!="), DROP],
        # duplicate address detection and MLD reports are sent from :: before the address is valid
        [match(etype, "ip6"), match(field("ip6", "saddr"), "::"),
         match(icmp6, {"set": ["nd-neighbor-solicit", "mld-listener-report", "mld2-listener-report"]}), ACCEPT],
        [match(etype, "ip6"), match(concat(iif, field("ip6", "saddr")), "@addr6", "!="), DROP],
        [match(etype, "ip6"), match(icmp6, {"set": ["nd-router-advert", "nd-redirect"]}), DROP],
        [match(etype, "ip6"), match(field("udp", "sport"), 547), match(field("udp", "dport"), 546), DROP],
    ])
    return cmds


def inet_table(table: str) -> list[dict]:
    """The inet-family table: host protection (input), port forwards (DNAT), masquerade; idempotent."""
    f = INET
    cmds = [{"add": {"table": {"family": f, "name": table}}}]
    cmds += _sets(f, table, INET_SETS)
    cmds += [_chain(f, table, "guard", "filter", "prerouting", -300),
             _chain(f, table, "input", "filter", "input", 0),
             _chain(f, table, "prerouting", "nat", "prerouting", -100),
             _chain(f, table, "output", "nat", "output", -100),
             _chain(f, table, "postrouting", "nat", "postrouting", 100)]
    cmds += [{"flush": {"chain": {"family": f, "table": table, "name": c}}}
             for c in ("guard", "input", "prerouting", "output", "postrouting")]
    iif, oif, l4 = meta("iifname"), meta("oifname"), meta("l4proto")
    v4, v6 = match(meta("nfproto"), "ipv4"), match(meta("nfproto"), "ipv6")
    lo4 = _prefix("127.0.0.0/8")
    # before conntrack and NAT: nothing from a bridge to or from 127.0.0.0/8. The kernel drops such
    # martians itself, but not on a bridge with route_localnet, which a forward reached from the
    # host's loopback needs (firewall.py); replies to those are still the bridge's address here.
    cmds += _rules(f, table, "guard", [     # (every packet of the host passes here: the compares first)
        [v4, match(field("ip", "daddr"), lo4), match(iif, "@bridges"), DROP],
        [v4, match(field("ip", "saddr"), lo4), match(iif, "@bridges"), DROP],
    ])
    dns = [match(l4, {"set": ["tcp", "udp"]}), match(field("th", "dport"), 53)]
    cmds += _rules(f, table, "input", [
        [match(iif, "@bridges", "!="), ACCEPT],
        [match({"ct": {"key": "state"}}, ["established", "related"], "in"), ACCEPT],
        [v6, match(field("icmpv6", "type"), {"set": HOST_ICMPV6}), ACCEPT],
        [match(iif, "@host_all"), ACCEPT],
        [v4, *dns, match(concat(iif, field("ip", "daddr")), "@dns4"), ACCEPT],
        [v6, *dns, match(concat(iif, field("ip6", "daddr")), "@dns6"), ACCEPT],
        [v4, match(field("icmp", "type"), "echo-request"), match(concat(iif, field("ip", "daddr")), "@dns4"), ACCEPT],
        [v6, match(field("icmpv6", "type"), "echo-request"), match(concat(iif, field("ip6", "daddr")), "@dns6"),
         ACCEPT],
        [DROP],
    ])
    for chain, local_only in (("prerouting", []), ("output", [None])):
        rules = []
        for fam, ver, addr, loop in (("ip", v4, "ip", "127.0.0.0/8"), ("ip6", v6, "ip6", "::1")):
            n = fam[-1] if fam == "ip6" else "4"
            # from the host itself: its own addresses, and IPv4's loopback (127.0.0.0/8: masqueraded
            # below, the bridge given route_localnet); IPv6's ::1 cannot leave `lo` (no such switch)
            guard = [ver] + ([match(field(addr, "daddr"), _prefix(loop), "!=")] if local_only and fam == "ip6"
                             else [])
            hkey = concat(field(addr, "daddr"), l4, field("th", "dport"))
            akey = concat(l4, field("th", "dport"))
            rules.append(guard + [_dnat(fam, hkey, f"fwd{n}h")])
            rules.append(guard + [match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
                                  _dnat(fam, akey, f"fwd{n}")])
        cmds += _rules(f, table, chain, rules)
    cmds += _rules(f, table, "postrouting", [
        # the host's loopback to a forward: the instance must answer the bridge's address, not 127.0.0.1
        [v4, match({"ct": {"key": "status"}}, "dnat", "in"), match(field("ip", "saddr"), lo4),
         match(oif, "@bridges"), {"masquerade": None}],
        # hairpin: an instance reaching a forward to a neighbour on its own bridge
        [v4, match({"ct": {"key": "status"}}, "dnat", "in"), match(concat(oif, field("ip", "saddr")), "@own4"),
         {"masquerade": None}],
        [v6, match({"ct": {"key": "status"}}, "dnat", "in"), match(concat(oif, field("ip6", "saddr")), "@own6"),
         {"masquerade": None}],
        # outbound NAT: a subnet leaving by any interface but its own bridge
        [v4, match(field("ip", "saddr"), "@nat4"), match(concat(oif, field("ip", "saddr")), "@own4", "!="),
         {"masquerade": None}],
        [v6, match(field("ip6", "saddr"), "@nat6"), match(concat(oif, field("ip6", "saddr")), "@own6", "!="),
         {"masquerade": None}],
    ])
    return cmds


def _prefix(cidr: str) -> dict | str:
    net = ipaddress.ip_network(cidr)
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _dnat(family: str, key: dict, maps: str) -> dict:
    return {"dnat": {"family": family, "addr": {"map": {"key": key, "data": f"@{maps}_to"}},
                     "port": {"map": {"key": key, "data": f"@{maps}_port"}}}}
