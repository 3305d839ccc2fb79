"""The firewall's JSON, built without the kernel: elements per call, the transaction diff, the batches
each call sends (a recording fake of nft.run), validation."""

from __future__ import annotations

import pytest

from jaula.errors import ConfigError, Exists
from jaula.network import firewall as fwmod
from jaula.network import nft
from jaula.network.firewall import (
    Firewall,
    add_commands,
    blind_removal,
    element_commands,
    forward_elements,
    link_local,
    network_elements,
    nic_elements,
    owned_by_bridge,
    owned_by_port,
)
from jaula.network.firewall_rules import bridge_table, inet_table, nd_target, typed_sets
from jaula.network.firewall_state import State, elem_json, parse_elements
from jaula.network.plan import (
    BRIDGED,
    HOST_ALL,
    HOST_NONE,
    ISOLATE,
    MACVLAN,
    NetworkPlan,
    NicPlan,
    PortForward,
)

NET = NetworkPlan(name="default", bridge="jaulabr0", ipv4="10.71.3.1/24", ipv6="fd42:71:3::1/64")
NIC = NicPlan(instance="web", name="eth0", type=BRIDGED, host_name="jv1", parent="jaulabr0",
              mac="02:AA:00:00:00:07", network="default", ipv4=("10.71.3.7/24",), ipv6=("fd42:71:3::7/64",))
FWD = PortForward(instance="web", proto="tcp", host_port=8080, address="10.71.3.7", port=80)


def test_link_local_is_the_kernels_eui64() -> None:
    assert link_local("02:aa:00:00:00:07") == "fe80::aa:ff:fe00:7"
    assert link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"


def test_network_elements_follow_policy() -> None:
    w = network_elements(NET)
    assert w[("inet", "bridges")] == {"jaulabr0": (None, "default")}
    assert w[("inet", "dns4")] == {("jaulabr0", "10.71.3.1"): (None, None)}
    assert w[("inet", "dns6")] == {("jaulabr0", "fd42:71:3::1"): (None, None)}
    assert w[("inet", "own4")] == {("jaulabr0", "10.71.3.0/24"): (None, None)}
    assert set(w[("inet", "nat4")]) == {"10.71.3.0/24"} and set(w[("inet", "nat6")]) == {"fd42:71:3::/64"}
    assert ("inet", "host_all") not in w
    w = network_elements(NET.replace(nat=False, host_access=HOST_ALL, ipv6=None))
    assert ("inet", "nat4") not in w and ("inet", "dns4") not in w and ("inet", "own6") not in w
    assert w[("inet", "host_all")] == {"jaulabr0": (None, None)}
    assert ("inet", "dns4") not in network_elements(NET.replace(host_access=HOST_NONE))


def test_nic_elements_key_everything_by_port() -> None:
    w = nic_elements(NET, NIC)
    assert w[("bridge", "ports")] == {"jv1": (None, "web")}
    assert set(w[("bridge", "macs")]) == {("jv1", "02:aa:00:00:00:07")}
    assert set(w[("bridge", "addr4")]) == {("jv1", "10.71.3.7")}
    assert set(w[("bridge", "addr6")]) == {("jv1", "fd42:71:3::7"), ("jv1", "fe80::aa:ff:fe00:7")}
    assert set(w[("bridge", "members")]) == {("jv1", "jaulabr0")}
    assert set(w[("bridge", "ndtarget")]) == {("jv1", "0xfd420071000300000000000000000007"),
                                              ("jv1", "0xfe8000000000000000aa00fffe000007")}
    assert ("bridge", "isolated") not in w
    assert set(nic_elements(NET.replace(isolation=ISOLATE), NIC)[("bridge", "isolated")]) == {"jv1"}


def test_nd_targets_are_checked_against_the_ports_addresses() -> None:
    assert nd_target("fe80::1") == "0xfe800000000000000000000000000001"
    assert typed_sets("jaula", make=None) == "add set bridge jaula ndtarget { typeof iifname . @th,64,128; }\n"
    assert typed_sets("jaula", make="create").startswith("create table bridge jaula\n")
    spoof = [c["add"]["rule"]["expr"] for c in bridge_table("jaula") if c.get("add", {}).get("rule", {}).get("chain")
             == "spoof"]
    nd = [r for r in spoof if any(m.get("match", {}).get("right") == "@ndtarget" for m in r)]
    assert [r[1]["match"]["right"] for r in nd] == ["nd-neighbor-advert", "nd-neighbor-solicit"]
    assert nd[0][2]["match"] == {"op": "!=", "right": "@ndtarget", "left": {"concat": [
        {"meta": {"key": "iifname"}}, {"payload": {"base": "th", "offset": 64, "len": 128}}]}}


def test_forward_elements_any_or_one_host_address() -> None:
    assert forward_elements(FWD) == {("inet", "fwd4_to"): {("tcp", 8080): ("10.71.3.7", "web")},
                                     ("inet", "fwd4_port"): {("tcp", 8080): (80, None)}}
    six = PortForward(instance="web", proto="udp", host_port=53, address="FD42::7", port=5353,
                      host_address="fd00::1")
    assert forward_elements(six) == {("inet", "fwd6h_to"): {("fd00::1", "udp", 53): ("fd42::7", "web")},
                                     ("inet", "fwd6h_port"): {("fd00::1", "udp", 53): (5353, None)}}


def test_skeleton_rules() -> None:
    b, i = bridge_table("jaula"), inet_table("jaula")
    assert b[0] == {"add": {"table": {"family": "bridge", "name": "jaula"}}}
    assert i[0] == {"add": {"table": {"family": "inet", "name": "jaula"}}}
    rules = {c["add"]["rule"]["chain"]: c for c in b if "rule" in c.get("add", {})}
    assert rules["prerouting"]["add"]["rule"]["expr"][1] == {"jump": {"target": "spoof"}}
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in b + i if "chain" in c.get("add", {})}
    assert chains["prerouting"]["hook"] == "prerouting" and chains["input"]["policy"] == "accept"
    flushed = [c["flush"]["chain"]["name"] for c in b + i if "flush" in c]
    assert sorted(flushed) == sorted(["prerouting", "forward", "spoof", "guard", "input", "prerouting", "output",
                                      "postrouting"])
    # every table and chain lives in the firewall's own tables only
    assert {obj.get("table", obj.get("name")) for c in b + i for obj in
            [next(iter(next(iter(c.values())).values()))]} == {"jaula"}


def test_state_elements_round_trip() -> None:
    listed = [{"concat": ["jaulabr0", {"prefix": {"addr": "10.71.3.0", "len": 24}}]},
              {"elem": {"val": {"concat": ["jv1", "02:aa:00:00:00:07"]}, "comment": "web"}},
              [{"concat": ["tcp", 8080]}, "10.71.3.7"], "10.9.9.9"]
    elems, comments = parse_elements(listed)
    assert elems == {("jaulabr0", "10.71.3.0/24"): None, ("jv1", "02:aa:00:00:00:07"): None,
                     ("tcp", 8080): "10.71.3.7", "10.9.9.9": None}
    assert comments == {("jv1", "02:aa:00:00:00:07"): "web"}
    assert elem_json(("jaulabr0", "10.71.3.0/24")) == listed[0]
    assert elem_json(("jv1", "02:aa:00:00:00:07"), None, "web") == listed[1]
    assert elem_json(("tcp", 8080), "10.71.3.7", None, True) == listed[2]


def _state(**elements: dict) -> State:
    st = State(inet=True, bridge=True, elements={}, comments={}, chains=set())
    for name, elems in elements.items():
        family, set_name = name.split("__")
        st.elements[(family, set_name)] = elems
    return st


def test_diff_deletes_stale_adds_missing_and_is_empty_when_equal() -> None:
    st = _state(bridge__addr4={("jv1", "10.71.3.7"): None, ("jv1", "10.71.3.99"): None,
                               ("jv2", "10.71.3.8"): None})
    want = {("bridge", "addr4"): {("jv1", "10.71.3.7"): (None, None), ("jv1", "10.71.3.10"): (None, None)}}
    cmds = element_commands("jaula", st, owned_by_port(st, "jv1"), want)
    assert cmds == [
        {"delete": {"element": {"family": "bridge", "table": "jaula", "name": "addr4",
                                "elem": [{"concat": ["jv1", "10.71.3.99"]}]}}},
        {"add": {"element": {"family": "bridge", "table": "jaula", "name": "addr4",
                             "elem": [{"concat": ["jv1", "10.71.3.10"]}]}}}]
    st.elements[("bridge", "addr4")] = {("jv1", "10.71.3.7"): None, ("jv1", "10.71.3.10"): None}
    assert element_commands("jaula", st, owned_by_port(st, "jv1"), want) == []


def test_diff_replaces_a_map_element_whose_data_changed() -> None:
    st = _state(inet__fwd4_port={("tcp", 8080): 81})
    want = {("inet", "fwd4_port"): {("tcp", 8080): (80, None)}}
    cmds = element_commands("jaula", st, {("inet", "fwd4_port"): {("tcp", 8080)}}, want)
    assert [next(iter(c)) for c in cmds] == ["delete", "add"]
    assert cmds[1]["add"]["element"]["elem"] == [[{"concat": ["tcp", 8080]}, 80]]


def test_owned_by_bridge_includes_its_nat_subnets_only() -> None:
    st = _state(inet__own4={("jaulabr0", "10.71.3.0/24"): None, ("jaulabr1", "10.72.0.0/24"): None},
                inet__nat4={"10.71.3.0/24": None, "10.72.0.0/24": None}, inet__bridges={"jaulabr0": None})
    assert owned_by_bridge(st, "jaulabr0") == {("inet", "own4"): {("jaulabr0", "10.71.3.0/24")},
                                               ("inet", "nat4"): {"10.71.3.0/24"},
                                               ("inet", "bridges"): {"jaulabr0"}}


class FakeNft:
    """nft.run recorded; a batch is refused with ENOENT while `missing` (the table is not there)."""

    def __init__(self) -> None:
        self.batches: list = []
        self.missing = False
        self.reads: list = []
        self.state = State(elements={}, comments={}, chains=set())

    def run(self, cmds: object) -> dict:
        self.batches.append(cmds)
        if self.missing and not (isinstance(cmds, str) and cmds.startswith("create table")):
            if isinstance(cmds, list) and any("add" in c and "table" in c["add"] for c in cmds):
                self.missing = False          # the batch with the fixed part makes it
                return {"nftables": []}
            raise nft.NftError("nft refused the batch: Error: No such file or directory")
        return {"nftables": []}

    def read_state(self, table: str, families: tuple = ("inet", "bridge")) -> State:
        self.reads.append(families)
        return self.state

    def read_sets(self, table: str, family: str, names: list[str], state: State | None = None) -> State:
        self.reads.append((family, *names))
        state = self.state if state is None else state
        state.elements.update({fs: e for fs, e in self.state.elements.items() if fs[0] == family and fs[1] in names})
        setattr(state, family, getattr(self.state, family))
        return state


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    f = FakeNft()
    monkeypatch.setattr(fwmod, "read_state", f.read_state)
    monkeypatch.setattr(fwmod, "read_sets", f.read_sets)
    monkeypatch.setattr(nft, "run", f.run)
    return f


def _verbs(batch: list) -> list[str]:
    return [next(iter(c)) for c in batch]


def _elements(batch: list, verb: str) -> dict[str, list]:
    return {c[verb]["element"]["name"]: c[verb]["element"]["elem"] for c in batch if verb in c}


def test_add_nic_reads_nothing_and_adds_its_elements_in_one_batch(fake: FakeNft) -> None:
    fw = Firewall("jaula")
    fw.add_nic(NET, NIC)
    fw.add_nic(NET, NIC)        # idempotent: the same adds, which change nothing in the kernel
    assert fake.reads == [] and len(fake.batches) == 2 and fake.batches[0] == fake.batches[1]
    batch = fake.batches[0]
    assert not [c for c in batch if "list" in c], "no list command"
    assert all("element" in next(iter(c.values())) for c in batch)
    assert _elements(batch, "delete") == {"isolated": ["jv1"]}, "not isolated: taken out blind"
    assert _elements(batch, "add") == {"isolated": ["jv1"],
        "addr4": [{"concat": ["jv1", "10.71.3.7"]}],
        "addr6": [{"concat": ["jv1", "fd42:71:3::7"]}, {"concat": ["jv1", "fe80::aa:ff:fe00:7"]}],
        "macs": [{"concat": ["jv1", "02:aa:00:00:00:07"]}],
        "members": [{"concat": ["jv1", "jaulabr0"]}],
        "ndtarget": [{"concat": ["jv1", "0xfd420071000300000000000000000007"]},
                     {"concat": ["jv1", "0xfe8000000000000000aa00fffe000007"]}],
        "ports": [{"elem": {"val": "jv1", "comment": "web"}}]}
    fw.add_nic(NET.replace(isolation=ISOLATE), NIC)
    assert _elements(fake.batches[-1], "add")["isolated"] == ["jv1"] and "delete" not in _verbs(fake.batches[-1])


def test_remove_nic_reads_nothing_and_deletes_blind(fake: FakeNft) -> None:
    Firewall("jaula").remove_nic(NIC)
    assert fake.reads == [] and len(fake.batches) == 1
    batch = fake.batches[0]
    adds, dels = _elements(batch, "add"), _elements(batch, "delete")
    assert set(adds) == set(dels) == {"ports", "macs", "members", "addr4", "addr6", "ndtarget", "isolated"}
    assert dels["ports"] == ["jv1"] and adds["ports"] == ["jv1"]
    assert dels["ndtarget"] == adds["ndtarget"]
    first_delete = _verbs(batch).index("delete")
    assert set(_verbs(batch)[:first_delete]) == {"add"} and set(_verbs(batch)[first_delete:]) == {"delete"}


def test_a_missing_table_is_made_with_the_batch(fake: FakeNft) -> None:
    fake.missing = True
    Firewall("jaula").add_nic(NET, NIC)
    nic_batch, typed, rest = fake.batches
    assert typed == typed_sets("jaula", make="create")
    assert rest[-len(nic_batch):] == nic_batch, "the NIC's elements in the batch that makes the table"
    assert rest[0] == {"add": {"table": {"family": "bridge", "name": "jaula"}}}
    assert not [c for c in rest if "table" in c.get("add", {}) and c["add"]["table"]["family"] == "inet"]


def test_remove_nic_of_a_missing_table_makes_nothing(fake: FakeNft) -> None:
    fake.missing = True
    Firewall("jaula").remove_nic(NIC)
    assert len(fake.batches) == 2
    assert fake.batches[1] == typed_sets("jaula", make=None), "asks whether the table is there, without making it"


def test_ensure_network_remakes_the_fixed_part_once_per_firewall(fake: FakeNft) -> None:
    fw = Firewall("jaula")
    fw.ensure_network(NET)
    assert fake.reads == [("inet",), ("bridge", "isolated")], "no NIC's elements read: nothing is isolated"
    assert fake.batches[0] == typed_sets("jaula", make="create")
    made = [c["add"]["table"]["family"] for c in fake.batches[1] if "table" in c.get("add", {})]
    assert made == ["bridge", "inet"]
    fake.state = _state(bridge__members={("jv1", "jaulabr0"): None, ("jv2", "jaulabr9"): None})
    fw.ensure_network(NET.replace(isolation=ISOLATE))
    assert fake.reads[-1] == ("bridge", "members"), "to isolate, the ports on the bridge"
    assert len(fake.batches) == 3
    assert not [c for c in fake.batches[2] if "table" in c.get("add", {}) or "rule" in c.get("add", {})]
    assert _elements(fake.batches[2], "add")["isolated"] == ["jv1"], "the ports on its bridge only"
    fake.state.elements[("bridge", "isolated")] = {"jv1": None, "jv2": None}
    fw.update_network(NET)          # isolation back to allow
    assert _elements(fake.batches[3], "delete")["isolated"] == ["jv1"]


def test_forward_calls_read_the_inet_table_only(fake: FakeNft) -> None:
    fake.state = _state()
    Firewall("jaula").add_forward(FWD)
    assert fake.reads == [("inet",)] and len(fake.batches) == 1
    assert _elements(fake.batches[0], "add") == {"fwd4_port": [[{"concat": ["tcp", 8080]}, 80]],
                                                 "fwd4_to": [[{"elem": {"val": {"concat": ["tcp", 8080]},
                                                                        "comment": "web"}}, "10.71.3.7"]]}


def test_add_and_blind_removal_commands() -> None:
    w = {("bridge", "ports"): {"jv1": (None, "web")}, ("inet", "fwd4_port"): {("tcp", 1): (80, None)}}
    assert add_commands("t", w)[0]["add"]["element"]["elem"] == [{"elem": {"val": "jv1", "comment": "web"}}]
    cmds = blind_removal("t", w)
    assert _verbs(cmds) == ["add", "add", "delete", "delete"]
    assert cmds[1]["add"]["element"]["elem"] == [[{"concat": ["tcp", 1]}, 80]], "a map element keeps its data"
    assert cmds[3]["delete"]["element"]["elem"] == [{"concat": ["tcp", 1]}]


def test_macvlan_nic_needs_no_rule(fake: FakeNft) -> None:
    Firewall("jaula").add_nic(NET, NIC.replace(type=MACVLAN, parent="eth0"))
    Firewall("jaula").remove_nic(NIC.replace(type=MACVLAN, parent="eth0"))
    assert fake.batches == []


def test_forward_of_a_port_held_by_another_instance_is_refused(fake: FakeNft) -> None:
    st = _state(inet__fwd4_to={("tcp", 8080): "10.71.3.8"}, inet__fwd4_port={("tcp", 8080): 80})
    st.comments[("inet", "fwd4_to", ("tcp", 8080))] = "db"
    fake.state = st
    with pytest.raises(Exists, match="already forwarded to instance 'db'"):
        Firewall("jaula").add_forward(FWD)
    Firewall("jaula").remove_forward(FWD)      # not ours: left alone
    assert fake.batches == []


def test_bad_input_lists_every_problem_before_any_change(fake: FakeNft) -> None:
    bad_net = NET.replace(bridge="a/b", ipv4="10.71.3.1", isolation="open", host_access="some")
    with pytest.raises(ConfigError) as err:
        Firewall("jaula").ensure_network(bad_net)
    assert len(err.value.problems) == 4
    assert "isolation 'open' is not one of 'allow', 'isolate'" in str(err.value)
    bad_nic = NIC.replace(mac="03:00:00:00:00:01", ipv4=("10.71.3.7",), ipv6=("10.0.0.1/24",), parent="br9",
                          host_name="x" * 16)
    with pytest.raises(ConfigError) as err:
        Firewall("jaula").add_nic(NET, bad_nic)
    assert len(err.value.problems) == 5 and "unicast MAC" in str(err.value)
    bad_fwd = PortForward(instance="", proto="sctp", host_port=0, address="10.0.0.1/24", port=70000)
    with pytest.raises(ConfigError) as err:
        Firewall("jaula").add_forward(bad_fwd)
    assert "proto 'sctp' is not one of 'tcp', 'udp'" in str(err.value) and len(err.value.problems) == 5
    with pytest.raises(ConfigError, match="host_address '10.0.0.1' is not an IPv6"):
        Firewall("jaula").add_forward(FWD.replace(address="fd42::7", host_address="10.0.0.1"))
    with pytest.raises(ConfigError, match="firewall table"):
        Firewall("jaula nat")
    with pytest.raises(ConfigError, match="unicast MAC"):
        Firewall("jaula").remove_nic(NIC.replace(mac="zz"))
    assert fake.batches == []


def test_nft_document_forms() -> None:
    cmd = {"list": {"tables": None}}
    assert nft.document(cmd) == {"nftables": [cmd]}
    assert nft.document([cmd]) == {"nftables": [cmd]}
    assert nft.document({"nftables": [cmd]}) == {"nftables": [cmd]}


def test_localnet_bridges_are_those_a_loopback_reachable_forward_leads_to() -> None:
    st = _state(inet__bridges={"jb1": None, "jb2": None, "jb3": None},
                inet__own4={("jb1", "10.71.3.0/24"): None, ("jb2", "10.71.4.0/24"): None,
                            ("jb3", "10.71.5.0/24"): None},
                inet__fwd4_to={("tcp", 80): "10.71.3.7"},                          # every host address
                inet__fwd4h_to={("127.0.0.1", "udp", 53): "10.71.4.2",             # loopback only
                                ("192.0.2.1", "tcp", 81): "10.71.5.2"})            # another address
    assert fwmod.localnet_bridges(st) == {"jb1": True, "jb2": True, "jb3": False}
    assert fwmod.localnet_bridges(_state()) == {}


def test_forward_on_ipv6_loopback_refused_with_why() -> None:
    with pytest.raises(ConfigError, match="IPv6's loopback cannot reach an instance"):
        Firewall("jaula").add_forward(PortForward(instance="x", proto="tcp", host_port=1, address="fd00::2", port=2,
                                                  host_address="::1"))


def test_localnet_refuses_a_path_for_a_name_and_misses_quietly() -> None:
    from jaula.network import localnet
    for bad in ("", "..", "a/b", "x" * 16):
        with pytest.raises(ConfigError, match="interface name"):
            localnet.get(bad)
    assert localnet.get("jnosuchif0") is None
    assert localnet.set_("jnosuchif0", True) is False     # nothing to write: no error
