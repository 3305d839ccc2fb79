"""The Instance and Profile models: names checked first and precisely, kinds, modes, id ranges, profiles."""

from __future__ import annotations

import pytest

from jaula.errors import ConfigError
from jaula.instances.model import Instance, Profile, validate_name

RULE = "use 1 to 63 lowercase letters (a-z), digits and '-', starting and ending with a letter or digit"


@pytest.mark.parametrize(("name", "why"), [
    ("../x", "would be a path ('/' and dots are not allowed)"),
    ("a/b", "would be a path ('/' and dots are not allowed)"),
    ("..", "would be a path ('/' and dots are not allowed)"),
    ("", "is empty"),
    ("a" * 64, "is 64 characters long (at most 63)"),
    ("web\x01", "contains a control character"),
    ("web\n1", "contains a control character"),
    ("wéb", "contains a character outside ASCII"),
    ("wеb", "contains a character outside ASCII"),  # a Cyrillic 'е': a homoglyph
    ("Web1", "contains uppercase letters"),
    ("-web", "starts or ends with '-'"),
    ("web-", "starts or ends with '-'"),
    ("web_1", "contains '_'"),
    ("web.1", "contains '.'"),
    ("a b", "contains ' '"),
])
def test_bad_names_say_why(name: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_name(name)
    assert e.value.problems == [f"Instance name {name!a} {why}: {RULE}"]


def test_good_names() -> None:
    for name in ("a", "web1", "0", "my-server-2", "a" * 63):
        assert validate_name(name) == name
    with pytest.raises(ConfigError, match="is not a string"):
        validate_name(3)


def test_the_name_is_checked_before_anything_else() -> None:
    with pytest.raises(ConfigError) as e:
        Instance.new("../etc", "bb", kind="vm", config={"limits.memory": "lots"})
    assert len(e.value.problems) == 1 and "Instance name '../etc'" in e.value.problems[0]


def test_new_instance() -> None:
    inst = Instance.new("web1", "bb", config={"limits.memory": "1GiB", "user.note": "hi"}, idmap_base=100000,
                        description="a web server")
    assert inst.kind == "container" and inst.mode == "system"
    assert inst.config == {"limits.memory": 1 << 30, "user.note": "hi"}
    assert inst.created.endswith("Z") and not inst.privileged
    assert Instance.from_json(inst.to_json()) == inst


def test_every_field_problem_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        Instance.new("web1", "Bad/Template", kind="vm", mode="daemon", config={"limits.cpu": "x"},
                     idmap_base=5, profiles=["ok", "Not OK"], description=7)  # type: ignore[arg-type]
    text = "\n".join(e.value.problems)
    assert "kind 'vm' is not supported yet: use 'container'" in text
    assert "mode 'daemon' is unknown" in text
    assert "Template name 'Bad/Template'" in text
    assert "Profile name 'Not OK'" in text
    assert "limits.cpu: 'x' is not a number of cpus" in text
    assert "idmap_base 5: give a host id from 65536" in text
    assert "description 7: give a string" in text


def test_kinds_modes_and_commands() -> None:
    with pytest.raises(ConfigError, match="kind 'qemu' is unknown"):
        Instance.new("a", "bb", kind="qemu")
    with pytest.raises(ConfigError, match="only app instances run a command"):
        Instance.new("a", "bb", command=["sleep", "1"])
    assert Instance.new("a", "bb", mode="app", command=["sleep", "1"]).command == ["sleep", "1"]
    with pytest.raises(ConfigError, match="give a list of strings"):
        Instance.new("a", "bb", mode="app", command=["sleep", 1])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="idmap_base"):
        Instance.new("a", "bb", idmap_base=2**32 - 65536)
    assert Instance.new("a", "bb", idmap_base=2**32 - 2 - 65535).idmap_base == 2**32 - 2 - 65535


def test_profiles_merge_in_order_under_the_instance() -> None:
    small = Profile.new("small", {"limits.memory": "512MiB", "limits.cpu": "1", "user.tier": "s"})
    batch = Profile.new("batch", {"limits.cpu": "0.5", "limits.processes": "100"})
    inst = Instance.new("job", "bb", config={"limits.processes": "200"}, profiles=["small", "batch"])
    assert inst.merged_config([small, batch]) == {
        "limits.memory": 512 << 20, "limits.cpu": 0.5, "limits.processes": 200, "user.tier": "s"}
    assert inst.merged_config() == {"limits.processes": 200}
    with pytest.raises(ConfigError, match="Profile name 'Big'"):
        Profile.new("Big")
    with pytest.raises(ConfigError, match="limits.memory: 'huge'"):
        Profile.new("big", {"limits.memory": "huge"})
