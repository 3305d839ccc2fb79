"""The host's firewall for jaula networks: one nftables table in family `inet` and one in `bridge`.

Rules are fixed (`jaula.network.firewall_rules`); networks, NICs and port forwards are set
elements keyed by interface name. Every method reads the table(s) it touches, computes the
elements to delete and to add, and applies them in ONE nft transaction: it is idempotent (a
second call changes nothing) and atomic (all or nothing). Other tables, such as the host's own `ip nat`, are
never read nor touched.
"""

from __future__ import annotations

import ipaddress
import re

from jaula.errors import ConfigError, Exists
from jaula.network import nft
from jaula.network.firewall_rules import (
    BRIDGE,
    BRIDGE_SETS,
    INET,
    INET_SETS,
    bridge_table,
    inet_table,
    nd_chain,
    nd_rules,
)
from jaula.network.firewall_state import State, elem_json, read_state
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

_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
PROTOS = ("tcp", "udp")
Wanted = dict[tuple[str, str], dict[object, tuple[object, str | None]]]   # (family, set) -> key -> (data, comment)


# --- validation: every problem at once, before any change -------------------------------------------
def _ifname_problem(what: str, name: object) -> str | None:
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
    p = [x for x in [_ifname_problem("network bridge", net.bridge)] if x]
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
    p += [x for x in [_ifname_problem("nic host_name", nic.host_name)] if x]
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
    return p


def _check(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems)


# --- what each object puts in the sets --------------------------------------------------------------
def link_local(mac: str) -> str:
    """The EUI-64 link-local address the kernel gives an interface with this MAC (addr_gen_mode eui64)."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


def _subnet(cidr: str) -> str:
    net = ipaddress.ip_interface(cidr).network
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _ip(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr).ip)


def network_elements(net: NetworkPlan) -> Wanted:
    """The inet-table elements of one network (its NICs' elements come with add_nic)."""
    br = net.bridge
    w: Wanted = {(INET, "bridges"): {br: (None, net.name)}}
    if net.host_access == HOST_ALL:
        w[(INET, "host_all")] = {br: (None, None)}
    for gw, n in ((net.ipv4, "4"), (net.ipv6, "6")):
        if gw is None:
            continue
        w[(INET, f"own{n}")] = {(br, _subnet(gw)): (None, None)}
        if net.host_access == HOST_DNS:
            w[(INET, f"dns{n}")] = {(br, _ip(gw)): (None, None)}
        if net.nat:
            w[(INET, f"nat{n}")] = {_subnet(gw): (None, net.name)}
    return w


def nic_elements(net: NetworkPlan, nic: NicPlan) -> Wanted:
    """The bridge-table elements of one bridged NIC, keyed by its host-side port."""
    port, mac, who = nic.host_name, nic.mac.lower(), nic.instance
    w: Wanted = {(BRIDGE, "ports"): {port: (None, who)},
                 (BRIDGE, "macs"): {(port, mac): (None, None)},
                 (BRIDGE, "members"): {(port, net.bridge): (None, None)},
                 (BRIDGE, "nd"): {port: ({"jump": {"target": nd_chain(port)}}, None)}}
    if nic.ipv4:
        w[(BRIDGE, "addr4")] = {(port, _ip(a)): (None, None) for a in nic.ipv4}
    w[(BRIDGE, "addr6")] = {(port, a): (None, None) for a in nic_addresses6(nic)}
    if net.isolation == ISOLATE:
        w[(BRIDGE, "isolated")] = {port: (None, None)}
    return w


def nic_addresses6(nic: NicPlan) -> list[str]:
    return sorted({_ip(a) for a in nic.ipv6} | {link_local(nic.mac.lower())})


def forward_key(fwd: PortForward) -> tuple[str, object]:
    """(map prefix, key) of a forward: fwd4/fwd6 for every host address, fwd4h/fwd6h for one."""
    n = str(ipaddress.ip_address(fwd.address).version)
    if fwd.host_address is None:
        return f"fwd{n}", (fwd.proto, fwd.host_port)
    return f"fwd{n}h", (str(ipaddress.ip_address(fwd.host_address)), fwd.proto, fwd.host_port)


def forward_elements(fwd: PortForward) -> Wanted:
    maps, key = forward_key(fwd)
    return {(INET, f"{maps}_to"): {key: (str(ipaddress.ip_address(fwd.address)), fwd.instance)},
            (INET, f"{maps}_port"): {key: (fwd.port, None)}}


# --- turning wanted elements into one transaction ---------------------------------------------------
def element_commands(table: str, state: State, owned: dict[tuple[str, str], set], wanted: Wanted) -> list[dict]:
    """Delete what `owned` holds and `wanted` lacks (or maps elsewhere), then add what is missing."""
    dels: list[dict] = []
    adds: list[dict] = []
    for fs in sorted(set(owned) | set(wanted)):
        family, name = fs
        is_map = (BRIDGE_SETS if family == BRIDGE else INET_SETS)[name][1] is not None
        have = state.elements.get(fs, {})
        want = wanted.get(fs, {})
        gone = [k for k in owned.get(fs, set()) if k in have and (k not in want or have[k] != want[k][0])]
        new = [k for k in want if k not in have or have[k] != want[k][0] or k in gone]
        obj = {"family": family, "table": table, "name": name}
        if gone:
            dels.append({"delete": {"element": dict(obj, elem=[elem_json(k) for k in sorted(gone, key=repr)])}})
        if new:
            adds.append({"add": {"element": dict(obj, elem=[
                elem_json(k, want[k][0], want[k][1], is_map) for k in sorted(new, key=repr)])}})
    return dels + adds


def owned_by_port(state: State, port: str) -> dict[tuple[str, str], set]:
    out: dict[tuple[str, str], set] = {}
    for name in BRIDGE_SETS:
        keys = {k for k in state.elements.get((BRIDGE, name), {}) if (k[0] if isinstance(k, tuple) else k) == port}
        if keys:
            out[(BRIDGE, name)] = keys
    return out


def owned_by_bridge(state: State, bridge: str) -> dict[tuple[str, str], set]:
    out: dict[tuple[str, str], set] = {}
    for name in ("bridges", "host_all", "dns4", "dns6", "own4", "own6"):
        keys = {k for k in state.elements.get((INET, name), {}) if (k[0] if isinstance(k, tuple) else k) == bridge}
        if keys:
            out[(INET, name)] = keys
    for n in "46":   # the nat subnets are those of the network's own subnets
        subnets = {k[1] for k in out.get((INET, f"own{n}"), set())}
        keys = subnets & set(state.elements.get((INET, f"nat{n}"), {}))
        if keys:
            out[(INET, f"nat{n}")] = keys
    return out


def ports_of(state: State, bridge: str) -> list[str]:
    return sorted(k[0] for k in state.elements.get((BRIDGE, "members"), {}) if k[1] == bridge)


class Firewall:
    """jaula's nftables tables `inet <table>` and `bridge <table>`; every call is one transaction."""

    def __init__(self, table: str = "jaula") -> None:
        _check([] if isinstance(table, str) and _TABLE.fullmatch(table) else
               [f"firewall table {table!r} is not a name of 1 to 32 letters, digits or '_' starting with a letter"])
        self.table = table

    # -- networks
    def ensure_network(self, net: NetworkPlan) -> None:
        """Make the network's policy (host access, NAT, isolation) exactly what `net` says."""
        _check(network_problems(net))

        def build(state: State) -> list[dict]:
            cmds = element_commands(self.table, state, owned_by_bridge(state, net.bridge), network_elements(net))
            iso = state.elements.get((BRIDGE, "isolated"), {})
            ports = ports_of(state, net.bridge)
            want = {p: (None, None) for p in ports} if net.isolation == ISOLATE else {}
            owned = {(BRIDGE, "isolated"): {p for p in ports if p in iso}}
            return cmds + element_commands(self.table, state, owned, {(BRIDGE, "isolated"): want})
        self._apply(build)

    update_network = ensure_network

    def remove_network(self, net: NetworkPlan) -> None:
        """Remove the network's elements, and those of any NIC still on its bridge (forwards stay: they
        name an address, not a network; remove_forward removes them)."""
        _check([x for x in [_ifname_problem("network bridge", net.bridge)] if x])

        def build(state: State) -> list[dict]:
            cmds = element_commands(self.table, state, owned_by_bridge(state, net.bridge), {})
            for port in ports_of(state, net.bridge):
                cmds += self._port_removal(state, port)
            return cmds
        self._apply(build)

    # -- NICs
    def add_nic(self, net: NetworkPlan, nic: NicPlan) -> None:
        """Police a bridged NIC's port: only its MAC and addresses may leave it. Other NIC types pass.

        A macvlan NIC's frames never cross the host's bridge or its netfilter hooks: nothing to do.
        """
        _check(nic_problems(net, nic))
        if nic.type != BRIDGED:
            return

        def build(state: State) -> list[dict]:
            port = nic.host_name
            cmds = nd_rules(self.table, port, nic_addresses6(nic))
            return cmds + element_commands(self.table, state, owned_by_port(state, port), nic_elements(net, nic))
        self._apply(build, (BRIDGE,))

    def remove_nic(self, nic: NicPlan) -> None:
        _check([x for x in [_ifname_problem("nic host_name", nic.host_name)] if x])
        if nic.type != BRIDGED:
            return
        self._apply(lambda state: self._port_removal(state, nic.host_name), (BRIDGE,))

    def _port_removal(self, state: State, port: str) -> list[dict]:
        """Commands deleting a port's elements, then its neighbour-discovery chain (no longer jumped to)."""
        cmds = element_commands(self.table, state, owned_by_port(state, port), {})
        if nd_chain(port) in state.chains:
            ref = {"family": BRIDGE, "table": self.table, "name": nd_chain(port)}
            cmds += [{"flush": {"chain": ref}}, {"delete": {"chain": ref}}]
        return cmds

    # -- port forwards
    def add_forward(self, fwd: PortForward) -> None:
        """DNAT host port to instance address:port; refused when another instance holds that host port."""
        _check(forward_problems(fwd))

        def build(state: State) -> list[dict]:
            maps, key = forward_key(fwd)
            owner = state.comments.get((INET, f"{maps}_to", key))
            if key in state.elements.get((INET, f"{maps}_to"), {}) and owner != fwd.instance:
                where = fwd.host_address or "every host address"
                raise Exists(f"Host port {fwd.proto}/{fwd.host_port} on {where} is already forwarded to "
                             f"instance {owner!r}: remove that forward first or choose another port")
            owned = {fs: {key} for fs in forward_elements(fwd)}
            return element_commands(self.table, state, owned, forward_elements(fwd))
        self._apply(build, (INET,))

    def remove_forward(self, fwd: PortForward) -> None:
        _check(forward_problems(fwd))

        def build(state: State) -> list[dict]:
            maps, key = forward_key(fwd)
            if state.comments.get((INET, f"{maps}_to", key), fwd.instance) != fwd.instance:
                return []    # the port now belongs to another instance's forward: not ours to remove
            return element_commands(self.table, state, {fs: {key} for fs in forward_elements(fwd)}, {})
        self._apply(build, (INET,))

    # -- whole tables
    def destroy(self) -> None:
        """Remove both tables (add-then-delete: no error when they are already gone)."""
        nft.run([{verb: {"table": {"family": f, "name": self.table}}}
                 for f in (INET, BRIDGE) for verb in ("add", "delete")])

    def exists(self) -> bool:
        return read_state(self.table).exists

    def rules_for(self, instance: str) -> list[str]:
        """What our tables hold for one instance (its ports' elements and chains, its forwards), readable."""
        state = read_state(self.table)
        ports = [k for k in state.elements.get((BRIDGE, "ports"), {})
                 if state.comments.get((BRIDGE, "ports", k)) == instance]
        out = []
        for port in ports:
            for (family, name), keys in sorted(owned_by_port(state, port).items()):
                out += [f"{family} {name} {_show(k)}" for k in sorted(keys, key=repr)]
            if nd_chain(port) in state.chains:
                out.append(f"bridge chain {nd_chain(port)}")
        for (family, name, key), who in sorted(state.comments.items(), key=repr):
            if who == instance and name.startswith("fwd"):
                for suffix in ("_to", "_port"):
                    base = name.rsplit("_", 1)[0] + suffix
                    if key in state.elements.get((family, base), {}):
                        out.append(f"{family} {base} {_show(key)} : {state.elements[(family, base)][key]}")
        return out

    def _apply(self, build, families: tuple[str, ...] = (INET, BRIDGE)) -> None:  # type: ignore[no-untyped-def]
        """Read the tables the call touches, build the batch (with the skeleton of a missing one), run it once.

        Listing a table costs in proportion to its elements, so a NIC call reads only the bridge
        table and a forward call only the inet one. A missing table is made with `create`, which
        fails if another caller made it meanwhile: then the state is read again and the batch
        rebuilt, once.
        """
        for attempt in (0, 1):
            state = read_state(self.table, families)
            cmds = build(state)
            fresh = []
            if BRIDGE in families and not state.bridge:
                fresh += bridge_table(self.table)
            if INET in families and not state.inet:
                fresh += inet_table(self.table)
            if not cmds and not fresh:
                return
            try:
                nft.run(fresh + cmds)
                return
            except nft.NftError:
                if attempt or not fresh:
                    raise


def _show(key: object) -> str:
    return " . ".join(map(str, key)) if isinstance(key, tuple) else str(key)
