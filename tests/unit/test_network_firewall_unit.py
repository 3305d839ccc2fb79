"""The firewall's JSON, built without the kernel: elements per call, the transaction diff, validation."""

from __future__ import annotations

import pytest

from jaula.errors import ConfigError, Exists
from jaula.network import firewall as fwmod
from jaula.network import nft
from jaula.network.firewall import (
    Firewall,
    element_commands,
    forward_elements,
    link_local,
    network_elements,
    nic_elements,
    owned_by_bridge,
    owned_by_port,
)
from jaula.network.firewall_rules import bridge_table, inet_table, nd_rules
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
    assert w[("bridge", "nd")] == {"jv1": ({"jump": {"target": "nd-jv1"}}, None)}
    assert ("bridge", "isolated") not in w
    assert set(nic_elements(NET.replace(isolation=ISOLATE), NIC)[("bridge", "isolated")]) == {"jv1"}


def test_nd_chain_checks_targets_against_the_nics_addresses() -> None:
    cmds = nd_rules("jaula", "jv1", ["fe80::1", "fd42::7"])
    assert cmds[0] == {"add": {"chain": {"family": "bridge", "table": "jaula", "name": "nd-jv1"}}}
    assert cmds[1]["flush"]["chain"]["name"] == "nd-jv1"
    na = cmds[2]["add"]["rule"]["expr"]
    assert na[1]["match"]["op"] == "!="
    assert na[1]["match"]["right"] == {"set": ["0xfd420000000000000000000000000007",
                                               "0xfe800000000000000000000000000001"]}


def test_forward_elements_any_or_one_host_address() -> None:
    assert forward_elements(FWD) == {("inet", "fwd4_to"): {("tcp", 8080): ("10.71.3.7", "web")},
                                     ("inet", "fwd4_port"): {("tcp", 8080): (80, None)}}
    six = PortForward(instance="web", proto="udp", host_port=53, address="FD42::7", port=5353,
                      host_address="fd00::1")
    assert forward_elements(six) == {("inet", "fwd6h_to"): {("fd00::1", "udp", 53): ("fd42::7", "web")},
                                     ("inet", "fwd6h_port"): {("fd00::1", "udp", 53): (5353, None)}}


def test_skeleton_rules() -> None:
    b, i = bridge_table("jaula"), inet_table("jaula", create=False)
    assert b[0] == {"create": {"table": {"family": "bridge", "name": "jaula"}}}
    assert i[0] == {"add": {"table": {"family": "inet", "name": "jaula"}}}
    rules = {c["add"]["rule"]["chain"]: c for c in b if "rule" in c.get("add", {})}
    assert rules["prerouting"]["add"]["rule"]["expr"][1] == {"jump": {"target": "spoof"}}
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in b + i if "chain" in c.get("add", {})}
    assert chains["prerouting"]["hook"] == "prerouting" and chains["input"]["policy"] == "accept"
    flushed = [c["flush"]["chain"]["name"] for c in b + i if "flush" in c]
    assert sorted(flushed) == sorted(["prerouting", "forward", "spoof", "input", "prerouting", "output",
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


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """Firewall calls against a fake: state read from `states`, batches recorded in `batches`."""
    batches: list = []
    states: list = [State(elements={}, comments={}, chains=set())]
    monkeypatch.setattr(fwmod, "read_state", lambda table, families=(): states[-1])
    monkeypatch.setattr(nft, "run", lambda cmds: batches.append(cmds) or {"nftables": []})
    return batches, states


def test_one_batch_per_call_with_the_skeleton_when_tables_are_missing(recorded: tuple[list, list]) -> None:
    batches, states = recorded
    Firewall("jaula").ensure_network(NET)
    assert len(batches) == 1
    made = [c["create"]["table"]["family"] for c in batches[0] if "create" in c]
    assert made == ["bridge", "inet"]
    Firewall("jaula").add_nic(NET, NIC)      # a NIC call reads and makes only the bridge table
    assert [c["create"]["table"]["family"] for c in batches[1] if "create" in c] == ["bridge"]
    Firewall("jaula").add_forward(FWD)
    assert [c["create"]["table"]["family"] for c in batches[2] if "create" in c] == ["inet"]
    states.append(_state())
    Firewall("jaula").add_nic(NET, NIC)
    assert len(batches) == 4 and not [c for c in batches[3] if "create" in c]


def test_macvlan_nic_needs_no_rule(recorded: tuple[list, list]) -> None:
    batches, _ = recorded
    Firewall("jaula").add_nic(NET, NIC.replace(type=MACVLAN, parent="eth0"))
    assert batches == []


def test_forward_of_a_port_held_by_another_instance_is_refused(recorded: tuple[list, list]) -> None:
    batches, states = recorded
    st = _state(inet__fwd4_to={("tcp", 8080): "10.71.3.8"}, inet__fwd4_port={("tcp", 8080): 80})
    st.comments[("inet", "fwd4_to", ("tcp", 8080))] = "db"
    states.append(st)
    with pytest.raises(Exists, match="already forwarded to instance 'db'"):
        Firewall("jaula").add_forward(FWD)
    Firewall("jaula").remove_forward(FWD)      # not ours: left alone
    assert batches == []


def test_bad_input_lists_every_problem_before_any_change(recorded: tuple[list, list]) -> None:
    batches, _ = recorded
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
    assert batches == []


def test_nft_document_forms() -> None:
    cmd = {"list": {"tables": None}}
    assert nft.document(cmd) == {"nftables": [cmd]}
    assert nft.document([cmd]) == {"nftables": [cmd]}
    assert nft.document({"nftables": [cmd]}) == {"nftables": [cmd]}
