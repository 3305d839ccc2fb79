"""The host's firewall for jaula networks: one nftables table in family `inet` and one in `bridge`.

Rules are fixed (`jaula.network.firewall_rules`); networks, NICs and port forwards are set
elements keyed by interface name. Every call is ONE nft transaction: atomic (all or nothing) and
idempotent (a second call changes nothing). A NIC call reads nothing: its elements follow from
its plan, added (`add` of what exists is a no-op) or removed blind (added then deleted in the same
transaction: libnftables 1.0.6 has no `destroy`), so it costs the same with 1 or 1000 NICs. Network
and forward calls read the inet table (networks and forwards, never NICs) to compute their
difference. The fixed part of the tables is made when a call finds it missing (the kernel
refuses a batch naming an absent table or set) and re-made once per Firewall by
`ensure_network`. Other tables, such as the host's own `ip nat`, are never read nor touched.
"""

from __future__ import annotations

import ipaddress
import logging

from jaula.errors import Exists
from jaula.network import localnet, nft
from jaula.network.firewall_checks import (
    TABLE,
    check,
    forward_problems,
    ifname_problem,
    network_problems,
    nic_problems,
)
from jaula.network.firewall_rules import (
    BRIDGE,
    BRIDGE_SETS,
    INET,
    INET_SETS,
    ND_TARGETS,
    bridge_table,
    inet_table,
    nd_target,
    typed_sets,
)
from jaula.network.firewall_state import State, elem_json, read_sets, read_state
from jaula.network.plan import (
    BRIDGED,
    HOST_ALL,
    HOST_DNS,
    ISOLATE,
    NetworkPlan,
    NicPlan,
    PortForward,
)

log = logging.getLogger("jaula.network")

Wanted = dict[tuple[str, str], dict[object, tuple[object, str | None]]]   # (family, set) -> key -> (data, comment)


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
    """The bridge-table elements of one bridged NIC, keyed by its host-side port: all follow from the plan."""
    port, mac = nic.host_name, nic.mac.lower()
    w: Wanted = {(BRIDGE, "ports"): {port: (None, nic.instance)},
                 (BRIDGE, "macs"): {(port, mac): (None, None)},
                 (BRIDGE, "members"): {(port, nic.parent): (None, None)}}
    if nic.ipv4:
        w[(BRIDGE, "addr4")] = {(port, _ip(a)): (None, None) for a in nic.ipv4}
    addrs6 = nic_addresses6(nic)
    w[(BRIDGE, "addr6")] = {(port, a): (None, None) for a in addrs6}
    w[(BRIDGE, ND_TARGETS)] = {(port, nd_target(a)): (None, None) for a in addrs6}
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
def _is_map(family: str, name: str) -> bool:
    sets = BRIDGE_SETS if family == BRIDGE else INET_SETS
    return name in sets and sets[name][1] is not None


def _elements(verb: str, table: str, fs: tuple[str, str], elems: list) -> dict:
    return {verb: {"element": {"family": fs[0], "table": table, "name": fs[1], "elem": elems}}}


def element_commands(table: str, state: State, owned: dict[tuple[str, str], set], wanted: Wanted) -> list[dict]:
    """Delete what `owned` holds and `wanted` lacks (or maps elsewhere), then add what is missing."""
    dels: list[dict] = []
    adds: list[dict] = []
    for fs in sorted(set(owned) | set(wanted)):
        is_map = _is_map(*fs)
        have = state.elements.get(fs, {})
        want = wanted.get(fs, {})
        gone = [k for k in owned.get(fs, set()) if k in have and (k not in want or have[k] != want[k][0])]
        new = [k for k in want if k not in have or have[k] != want[k][0] or k in gone]
        if gone:
            dels.append(_elements("delete", table, fs, [elem_json(k) for k in sorted(gone, key=repr)]))
        if new:
            adds.append(_elements("add", table, fs, [elem_json(k, want[k][0], want[k][1], is_map)
                                                     for k in sorted(new, key=repr)]))
    return dels + adds


def add_commands(table: str, wanted: Wanted) -> list[dict]:
    """Add every element of `wanted` without reading: an element that is there stays as it is."""
    return [_elements("add", table, fs, [elem_json(k, d, c, _is_map(*fs)) for k, (d, c) in sorted(want.items(), key=repr)])
            for fs, want in sorted(wanted.items()) if want]


def blind_removal(table: str, wanted: Wanted) -> list[dict]:
    """Delete every element of `wanted` whether it is there or not: each is added (nothing happens
    when it is there) then deleted in the same transaction, since deleting an absent element is
    refused and libnftables 1.0.6 has no `destroy`."""
    adds = add_commands(table, {fs: {k: (d, None) for k, (d, _) in want.items()} for fs, want in wanted.items()})
    dels = [_elements("delete", table, fs, [elem_json(k) for k in sorted(want, key=repr)])
            for fs, want in sorted(wanted.items()) if want]
    return adds + dels


def owned_by_port(state: State, port: str) -> dict[tuple[str, str], set]:
    out: dict[tuple[str, str], set] = {}
    for name in [*BRIDGE_SETS, ND_TARGETS]:
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


LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")


def localnet_bridges(state: State) -> dict[str, bool]:
    """Every network bridge of `state`, and whether a forward reached from the host's 127.0.0.0/8
    (one on every host address, or on a loopback address) leads into its IPv4 subnet."""
    targets = list(state.elements.get((INET, "fwd4_to"), {}).values())
    targets += [to for key, to in state.elements.get((INET, "fwd4h_to"), {}).items()
                if ipaddress.ip_address(key[0]) in LOOPBACK4]
    addrs = [ipaddress.ip_address(t) for t in targets if isinstance(t, str)]
    out = {b: False for b in state.elements.get((INET, "bridges"), {})}
    for bridge, subnet in state.elements.get((INET, "own4"), {}):
        net = ipaddress.ip_network(subnet)
        out[bridge] = out.get(bridge, False) or any(a in net for a in addrs)
    return out


def _set_localnet(bridge: str, on: bool) -> None:
    try:
        localnet.set_(bridge, on)
    except OSError as e:    # a read-only /proc/sys: forwards do not answer on loopback, the rest works
        log.warning("route_localnet of %s: %s", bridge, e)


def _missing(e: nft.NftError) -> bool:
    """The kernel's answer to a batch naming a table or set that is not there."""
    return "No such file or directory" in str(e)


class Firewall:
    """jaula's nftables tables `inet <table>` and `bridge <table>`; every call is one transaction."""

    def __init__(self, table: str = "jaula") -> None:
        check([] if isinstance(table, str) and TABLE.fullmatch(table) else
               [f"firewall table {table!r} is not a name of 1 to 32 letters, digits or '_' starting with a letter"])
        self.table = table
        self._made: set[str] = set()    # families whose fixed part this object made or re-made

    # -- networks
    def ensure_network(self, net: NetworkPlan) -> None:
        """Make the network's policy (host access, NAT, isolation) exactly what `net` says.

        Reads the inet table (networks and forwards) and the bridge table's `isolated` set; the
        ports on the bridge (`members`, as many as its NICs) only when some port is or is to be
        isolated: isolation is a set of ports, since this kernel has no `meta ibrname`
        (CONFIG_NFT_BRIDGE_META) and nft 1.0.6 cannot look a map's answer up in a set. The first
        call of a Firewall also re-makes the fixed part of both tables, in the same transaction,
        so the rules of an older jaula are replaced.
        """
        check(network_problems(net))
        state = read_sets(self.table, BRIDGE, ["isolated"], read_state(self.table, (INET,)))
        cmds = element_commands(self.table, state, owned_by_bridge(state, net.bridge), network_elements(net))
        iso = state.elements.get((BRIDGE, "isolated"), {})
        if state.bridge and (iso or net.isolation == ISOLATE):
            read_sets(self.table, BRIDGE, ["members"], state)
        ports = ports_of(state, net.bridge)
        want = {p: (None, None) for p in ports} if net.isolation == ISOLATE else {}
        owned = {(BRIDGE, "isolated"): {p for p in ports if p in iso}}
        cmds += element_commands(self.table, state, owned, {(BRIDGE, "isolated"): want})
        if state.inet and state.bridge and self._made >= {INET, BRIDGE}:
            self._run((INET, BRIDGE), cmds)
        else:
            self._with_skeleton((INET, BRIDGE), cmds)
        self._sync_localnet(state, only=net.bridge, own4=network_elements(net).get((INET, "own4"), {}))

    update_network = ensure_network

    def remove_network(self, net: NetworkPlan) -> None:
        """Remove the network's elements, and those of any NIC still on its bridge (forwards stay: they
        name an address, not a network; remove_forward removes them). Reads both tables."""
        check([x for x in [ifname_problem("network bridge", net.bridge)] if x])
        state = read_state(self.table)
        cmds = element_commands(self.table, state, owned_by_bridge(state, net.bridge), {})
        for port in ports_of(state, net.bridge):
            cmds += element_commands(self.table, state, owned_by_port(state, port), {})
        nft.run(cmds)
        _set_localnet(net.bridge, False)    # its guard elements went: no loopback through it either

    # -- NICs
    def add_nic(self, net: NetworkPlan, nic: NicPlan) -> None:
        """Police a bridged NIC's port: only its MAC and addresses may leave it. Other NIC types pass.

        Reads nothing: adds the elements of the plan (what is there stays: remove_nic with the old
        plan before adding a changed one, as the container driver does). A macvlan NIC's frames
        never cross the host's bridge or its netfilter hooks: nothing to do.
        """
        check(nic_problems(net, nic))
        if nic.type != BRIDGED:
            return
        cmds = add_commands(self.table, nic_elements(net, nic))
        if net.isolation != ISOLATE:    # the port may have been added before, to an isolating network
            cmds += blind_removal(self.table, {(BRIDGE, "isolated"): {nic.host_name: (None, None)}})
        self._run((BRIDGE,), cmds)

    def remove_nic(self, nic: NicPlan) -> None:
        """Remove the elements of the plan given to add_nic, whether they are there or not; reads nothing."""
        check([x for x in [ifname_problem("nic host_name", nic.host_name)] if x])
        if nic.type != BRIDGED:
            return
        # the network as far as the NIC's elements go: its bridge, and isolation so that the port's
        # `isolated` element goes too
        net = NetworkPlan(name=nic.network or "-", bridge=nic.parent, isolation=ISOLATE)
        check(nic_problems(net, nic))
        cmds = blind_removal(self.table, nic_elements(net, nic))
        try:
            nft.run(cmds)
        except nft.NftError as e:
            if not _missing(e):
                raise
            try:            # is the table there (its typed set added again), or gone with everything?
                nft.run(typed_sets(self.table, make=None))
            except nft.NftError as e2:
                if _missing(e2):
                    return
                raise
            self._with_skeleton((BRIDGE,), cmds)

    # -- port forwards
    def add_forward(self, fwd: PortForward) -> None:
        """DNAT host port to instance address:port; refused when another instance holds that host port."""
        check(forward_problems(fwd))
        state = read_state(self.table, (INET,))
        maps, key = forward_key(fwd)
        owner = state.comments.get((INET, f"{maps}_to", key))
        if key in state.elements.get((INET, f"{maps}_to"), {}) and owner != fwd.instance:
            where = fwd.host_address or "every host address"
            raise Exists(f"Host port {fwd.proto}/{fwd.host_port} on {where} is already forwarded to "
                         f"instance {owner!r}: remove that forward first or choose another port")
        owned = {fs: {key} for fs in forward_elements(fwd)}
        cmds = element_commands(self.table, state, owned, forward_elements(fwd))
        if cmds and state.inet:
            self._run((INET,), cmds)
        elif cmds:
            self._with_skeleton((INET,), cmds)
        state.elements.setdefault((INET, f"{maps}_to"), {})[key] = str(ipaddress.ip_address(fwd.address))
        self._sync_localnet(state)

    def remove_forward(self, fwd: PortForward) -> None:
        check(forward_problems(fwd))
        state = read_state(self.table, (INET,))
        maps, key = forward_key(fwd)
        if state.comments.get((INET, f"{maps}_to", key), fwd.instance) != fwd.instance:
            return    # the port now belongs to another instance's forward: not ours to remove
        cmds = element_commands(self.table, state, {fs: {key} for fs in forward_elements(fwd)}, {})
        nft.run(cmds)
        state.elements.get((INET, f"{maps}_to"), {}).pop(key, None)
        self._sync_localnet(state)

    @staticmethod
    def _sync_localnet(state: State, only: str | None = None, own4: dict | None = None) -> None:
        """route_localnet on exactly the bridges that a forward from the host's loopback leads to
        (`localnet_bridges` of `state` as the call left it; `own4`: the subnet of `only` when it
        just changed); the kernel's default, off, on the others. The `guard` chain drops what an
        instance sends to or from 127.0.0.0/8 through them."""
        if own4 is not None and only is not None:
            state.elements[(INET, "own4")] = {k: v for k, v in state.elements.get((INET, "own4"), {}).items()
                                              if k[0] != only} | {k: d for k, (d, _) in own4.items()}
            state.elements.setdefault((INET, "bridges"), {})[only] = None
        for bridge, on in localnet_bridges(state).items():
            if only is None or bridge == only:
                _set_localnet(bridge, on)

    # -- whole tables
    def destroy(self) -> None:
        """Remove both tables (add-then-delete: no error when they are already gone), and
        route_localnet from their bridges first (the guard chain goes with the table)."""
        self._made.clear()
        for bridge in read_state(self.table, (INET,)).elements.get((INET, "bridges"), {}):
            _set_localnet(bridge, False)
        nft.run([{verb: {"table": {"family": f, "name": self.table}}}
                 for f in (INET, BRIDGE) for verb in ("add", "delete")])

    def exists(self) -> bool:
        return read_state(self.table).exists

    def rules_for(self, instance: str) -> list[str]:
        """What our tables hold for one instance (its ports' elements, its forwards), readable."""
        state = read_state(self.table)
        ports = [k for k in state.elements.get((BRIDGE, "ports"), {})
                 if state.comments.get((BRIDGE, "ports", k)) == instance]
        out = []
        for port in ports:
            for (family, name), keys in sorted(owned_by_port(state, port).items()):
                out += [f"{family} {name} {_show(k)}" for k in sorted(keys, key=repr)]
        for (family, name, key), who in sorted(state.comments.items(), key=repr):
            if who == instance and name.startswith("fwd"):
                for suffix in ("_to", "_port"):
                    base = name.rsplit("_", 1)[0] + suffix
                    if key in state.elements.get((family, base), {}):
                        out.append(f"{family} {base} {_show(key)} : {state.elements[(family, base)][key]}")
        return out

    # -- running
    def _run(self, families: tuple[str, ...], cmds: list[dict]) -> None:
        """Run the batch; when the kernel says a table or set is missing, run it again with the fixed part."""
        try:
            nft.run(cmds)
        except nft.NftError as e:
            if not _missing(e):
                raise
            self._with_skeleton(families, cmds)

    def _with_skeleton(self, families: tuple[str, ...], cmds: list[dict]) -> None:
        """The fixed part of `families`' tables (made, or re-made over what is there) and `cmds`, one batch.

        The bridge table's `typeof` set can only be declared in nft's syntax, so it comes first in
        a batch of its own; when that batch made the table and the next one fails, the table goes.
        """
        made = False
        if BRIDGE in families:
            try:
                nft.run(typed_sets(self.table, make="create"))
                made = True
            except nft.NftError as e:
                if "File exists" not in str(e):
                    raise
                nft.run(typed_sets(self.table, make=None))
        skeleton = (bridge_table(self.table) if BRIDGE in families else []) + \
                   (inet_table(self.table) if INET in families else [])
        try:
            nft.run(skeleton + cmds)
        except nft.NftError:
            if made:
                nft.run([{verb: {"table": {"family": BRIDGE, "name": self.table}}} for verb in ("add", "delete")])
            raise
        self._made.update(families)


def _show(key: object) -> str:
    return " . ".join(map(str, key)) if isinstance(key, tuple) else str(key)
