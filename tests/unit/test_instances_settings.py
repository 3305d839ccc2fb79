"""Instance settings: every key's syntax, normalization, and messages that say what to write."""

from __future__ import annotations

import pytest

from jaula.errors import ConfigError
from jaula.instances import settings
from jaula.instances.settings import SETTINGS, changed_keys, effective, is_live, validate

MiB, GiB = 1 << 20, 1 << 30


@pytest.mark.parametrize(("text", "want"), [
    ("512MiB", 512 * MiB), ("2GiB", 2 * GiB), ("1.5GiB", 3 * GiB // 2), ("100MB", 100_000_000),
    ("64 MiB", 64 * MiB), ("256M", 256 * MiB), ("1g", GiB), ("8388608", 8 * MiB), (8 * MiB, 8 * MiB),
])
def test_sizes_are_normalized_to_bytes(text: object, want: int) -> None:
    assert validate({"limits.memory": text}) == {"limits.memory": want}


def test_a_bad_size_says_how_to_write_one() -> None:
    with pytest.raises(ConfigError) as e:
        validate({"limits.memory": "12XB"})
    assert e.value.problems == [
        "limits.memory: '12XB' is not a size; use a number with KiB, MiB, GiB (or kB, MB, GB), e.g. 512MiB"]


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        validate({"limits.memory": "lots", "limits.cpu": "fast", "security.privileged": "maybe",
                  "limits.processes": "0", "limits.cpuset": "3-1", "limits.memry": "1GiB"})
    text = "\n".join(e.value.problems)
    assert len(e.value.problems) == 6
    assert "limits.cpu: 'fast' is not a number of cpus; use e.g. 1, 1.5 or 0.25" in text
    assert "security.privileged: 'maybe' is not a boolean; use true or false" in text
    assert "limits.processes: 0 is out of range; use a number of processes from 16 to 4194304" in text
    assert "limits.cpuset: '3-1': range '3-1' runs backwards" in text
    assert "limits.memry: unknown setting (did you mean limits.memory?)" in text


def test_unknown_keys_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as e:
        validate({"video.speed": "fast"})
    (msg,) = e.value.problems
    assert msg.startswith("video.speed: unknown setting; known settings: limits.memory, ")
    for key in list(SETTINGS) + ["user.*", "environment.*"]:
        assert key in msg


def test_free_keys() -> None:
    assert validate({"user.owner": "ana", "environment.LANG": "C.UTF-8", "user.a.b-c_d": "x"}) == {
        "user.owner": "ana", "environment.LANG": "C.UTF-8", "user.a.b-c_d": "x"}
    with pytest.raises(ConfigError) as e:
        validate({"environment.1BAD": "x", "environment.A-B": "x", "user.": "x", "user.x": 3, "environment.OK": "a\0b"})
    assert len(e.value.problems) == 5
    assert "environment.1BAD: use environment.NAME with a variable name" in e.value.problems[0]


def test_types_and_ranges() -> None:
    got = validate({"limits.cpu": "1.5", "limits.cpu.weight": "200", "limits.cpuset": "0, 2-3,5-5",
                    "limits.processes": 500, "security.privileged": "yes", "security.nesting": False,
                    "boot.autostart": "on", "limits.disk": "10GiB", "limits.memory": "1GiB",
                    "limits.memory.swap": "0"})
    assert got == {"limits.cpu": 1.5, "limits.cpu.weight": 200, "limits.cpuset": "0,2-3,5", "limits.processes": 500,
                   "security.privileged": True, "security.nesting": False, "boot.autostart": True,
                   "limits.disk": 10 * GiB, "limits.memory": GiB, "limits.memory.swap": 0}
    assert validate(got) == got  # normalized values check again unchanged
    for key, bad in (("limits.cpu", "0"), ("limits.cpu", "2000"), ("limits.cpu", True), ("limits.cpu.weight", "0"),
                     ("limits.cpu.weight", "1.5"), ("limits.memory", "1MiB"), ("limits.disk", "1MiB"),
                     ("limits.memory", True), ("limits.cpuset", "a-b"), ("boot.autostart", 2)):
        with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.") + ": "):
            validate({key: bad})


def test_swap_needs_a_memory_limit() -> None:
    with pytest.raises(ConfigError, match="limits.memory.swap: needs limits.memory"):
        validate({"limits.memory.swap": "1GiB"})


def test_empty_or_none_unsets() -> None:
    assert validate({"limits.memory": "", "limits.cpu": None, "user.x": "y"}) == {"user.x": "y"}


def test_refuses_what_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        validate(["limits.memory"])  # type: ignore[arg-type]


def test_table_is_complete() -> None:
    for key, s in SETTINGS.items():
        assert s.key == key and s.description and s.type in ("size", "cpus", "int", "bool", "cpuset", "string")
        if s.default is not None:
            assert s.parse(s.default) == s.default


def test_effective_changed_and_live() -> None:
    assert effective({})["limits.processes"] == settings.DEFAULT_PROCESSES
    assert effective({})["security.privileged"] is False
    assert changed_keys({"limits.memory": GiB}, {"limits.memory": GiB, "limits.processes": settings.DEFAULT_PROCESSES}) == []
    assert changed_keys({"limits.memory": GiB}, {"limits.cpu": 1.0}) == ["limits.cpu", "limits.memory"]
    assert is_live("limits.memory") and is_live("user.x") and is_live("environment.X")
    assert not is_live("security.privileged") and not is_live("security.nesting")


def test_show() -> None:
    assert settings.show("limits.memory", 512 * MiB) == "512MiB"
    assert settings.show("limits.memory.swap", 0) == "0"
    assert settings.show("limits.memory", 1000) == "1000B"
    assert settings.show("security.privileged", True) == "true"
    assert settings.show("limits.cpu", 1.5) == "1.5"
    assert settings.environment({"environment.A": "1", "user.b": "2"}) == ["A=1"]
