"""v1 device rules: the kernel's policy modelled, and updates that write only the difference (as runc)."""

from __future__ import annotations

import os

import pytest
from cgroupfs_fake import v1_host

from jaula.cgroups.base import open_cgroup
from jaula.cgroups.devices import Policy, matches, transition
from jaula.cgroups.resources import DeviceRule, Resources
from jaula.errors import ConfigError, JaulaError

NULL = DeviceRule(True, "c", 1, 3, "rwm")
ZERO = DeviceRule(True, "c", 1, 5, "rwm")
DENY_ALL = DeviceRule(False)


def test_devices_list_of_a_new_cgroup_is_a_blacklist():
    p = Policy.from_list("a *:* rwm\n")
    assert p.default_allow and p.exceptions == {}
    w = Policy.from_list("c 1:3 rwm\nc *:* m\nb 8:* r\n")
    assert not w.default_allow
    assert w.exceptions == {("c", 1, 3): "rwm", ("c", None, None): "m", ("b", 8, None): "r"}
    assert w.list_text() == "c 1:3 rwm\nc *:* m\nb 8:* r\n"
    assert Policy.from_list("").list_text() == ""          # a whitelist with no exception: nothing at all


def test_rules_apply_in_order_last_match_wins():
    p = Policy.from_rules([DENY_ALL, NULL, DeviceRule(True, "a", 136, None, "r"), DeviceRule(False, "c", 1, 3, "w")])
    assert p.list_text() == "c 1:3 rm\nc 136:* r\nb 136:* r\n"
    assert Policy.from_rules([NULL]) == Policy.from_rules([DENY_ALL, NULL])     # OCI: deny is the start
    allow_all = Policy.from_rules([NULL, DeviceRule(True)])
    assert allow_all.default_allow and allow_all.exceptions == {}
    bl = Policy.from_rules([DeviceRule(True), DeviceRule(False, "b", 8, 0, "w")])
    assert bl.default_allow and bl.exceptions == {("b", 8, 0): "w"}


def test_a_hole_in_a_wildcard_rule_is_refused():
    """v1 silently ignores "deny c 1:3 m" under "allow c *:* m": refuse it rather than pretend."""
    with pytest.raises(ValueError, match=r"cannot take it out of the wider rule c \*:\* m"):
        Policy.from_rules([DeviceRule(True, "c", None, None, "m"), DeviceRule(False, "c", 1, 3, "rm")])
    ok = Policy.from_rules([DeviceRule(True, "c", None, None, "m"), DeviceRule(False, "c", 1, 3, "rw")])
    assert ok.exceptions == {("c", None, None): "m"}   # no overlap: a no-op, as in the kernel


def test_transition_from_a_blacklist_starts_over():
    new = Policy.from_list("a *:* rwm\n")
    target = Policy.from_rules([NULL, ZERO])
    assert transition(new, target) == [(False, "a"), (True, "c 1:3 rwm"), (True, "c 1:5 rwm")]
    # blacklist -> blacklist: its denies cannot be read back, so it is reset and the denies written again
    bl = Policy.from_rules([DeviceRule(True), DeviceRule(False, "c", 10, 200, "rwm")])
    assert transition(new, bl) == [(True, "a"), (False, "c 10:200 rwm")]


def test_transition_between_whitelists_writes_only_the_difference():
    cur = Policy.from_list("c 1:3 rwm\nc 1:5 r\nc 136:* rw\n")
    target = Policy.from_rules([NULL, DeviceRule(True, "c", 1, 5, "rw"), DeviceRule(True, "c", 5, 2, "rwm")])
    assert transition(cur, target) == [(False, "c 136:* rw"), (True, "c 1:5 w"), (True, "c 5:2 rwm")]
    assert transition(cur, Policy.from_list(cur.list_text())) == []
    drop = Policy.from_rules([NULL, DeviceRule(True, "c", 136, None, "r")])
    assert transition(cur, drop) == [(False, "c 1:5 r"), (False, "c 136:* w")]
    # whitelist -> blacklist: the "a" rule, then the denies
    assert transition(cur, Policy.from_rules([DeviceRule(True)])) == [(True, "a")]


def test_transition_replayed_on_the_kernel_model_gives_the_target():
    cases = [Policy.from_list("a *:* rwm\n"), Policy.from_list("c 1:3 rwm\nc 1:5 r\n"), Policy.from_list("")]
    targets = [Policy.from_rules(r) for r in ([NULL], [NULL, ZERO], [], [DeviceRule(True, "b", None, None, "m")],
                                              [DeviceRule(True), DeviceRule(False, "c", 1, 9, "r")])]
    for cur in cases:
        for target in targets:
            p = Policy.from_list(cur.list_text())
            for allow, line in transition(cur, target):
                p.apply(allow, line)
            assert matches(p, target) and (target.default_allow or p == target), (cur, target)


# ---- the v1 driver ------------------------------------------------------------------------------

@pytest.fixture
def cg(tmp_path):
    k, layout = v1_host(str(tmp_path))
    cg = open_cgroup(None, "jaula-dev", layout=layout, fs=k)
    cg.create()
    k.writes.clear()
    cg.k = k
    return cg


def devices_writes(cg) -> list[tuple[str, str]]:
    return [(p.split("/")[-1], v) for p, v in cg.k.writes if "/devices/" in p]


def listing(cg) -> str:
    return open(os.path.join(cg.paths["devices"], "devices.list")).read()


def oci(*rules: dict) -> Resources:
    return Resources.from_oci({"devices": list(rules)})


def test_update_of_a_running_cgroup_never_denies_what_stays_allowed(cg):
    first = oci({"allow": False}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"})
    cg.update(first)
    assert devices_writes(cg) == [("devices.deny", "a"), ("devices.allow", "c 1:3 rwm"), ("devices.allow", "c 1:5 r")]
    cg.k.writes.clear()
    second = oci({"allow": False}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                 {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"},
                 {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "r"})
    cg.update(second)
    assert devices_writes(cg) == [("devices.allow", "c 1:5 w"), ("devices.allow", "c 1:9 r")]
    assert cg.k.device_resets == 1
    cg.k.writes.clear()
    cg.update(second)                       # already so: nothing written
    assert devices_writes(cg) == []
    cg.update(first)
    assert devices_writes(cg) == [("devices.deny", "c 1:5 w"), ("devices.deny", "c 1:9 r")]
    assert listing(cg) == "c 1:3 rwm\nc 1:5 r\n"


def test_apply_without_devices_leaves_them(cg):
    cg.update(oci({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}))
    cg.k.writes.clear()
    cg.apply(Resources())
    assert devices_writes(cg) == [] and listing(cg) == "c 1:3 rwm\n"


def test_a_hole_in_a_wildcard_is_a_config_error_before_any_write(cg):
    with pytest.raises(ConfigError, match=r"linux.resources.devices: device rule deny c 1:3 m: cgroup v1 cannot"):
        cg.update(Resources.from_oci({"pids": {"limit": 5}, "devices": [
            {"allow": True, "type": "c", "access": "m"}, {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "m"}]}))
    assert cg.k.writes == []


def test_a_policy_the_kernel_did_not_take_is_an_error(cg):
    real = cg.k.write

    def ignoring(path: str, value: str) -> None:    # a kernel that ignores one allow
        if not (path.endswith("devices.allow") and value == "c 1:5 r"):
            real(path, value)

    cg.k.write = ignoring
    with pytest.raises(JaulaError, match=r"devices.list' shows 'c 1:3 rwm' after the update, not the rules asked for"):
        cg.update(oci({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                      {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}))
