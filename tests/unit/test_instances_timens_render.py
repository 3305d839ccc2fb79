"""The time namespace of a system instance's config.json (render, security.timens): its boot
clock starts at 0, its monotonic clock stays the host's; apps and security.timens=false get none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaula.instances import render
from jaula.instances.model import Instance
from tests.unit.test_instances_render import rendered

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/ns/time"),
                                reason="the kernel has no time namespace (CONFIG_TIME_NS)")


def types(spec: dict) -> list[str]:
    return [n["type"] for n in spec["linux"]["namespaces"]]


def test_system_instance_boot_clock_starts_at_zero(tmp_path: Path) -> None:
    spec = rendered(tmp_path, Instance.new("t1", "bb", idmap_base=1 << 20), boottime_ns=14739_620000001)
    assert types(spec).count("time") == 1 and "user" in types(spec)
    # minus the boottime: a whole negative second and nanoseconds in 0..999999999, as the kernel wants
    assert spec["linux"]["timeOffsets"] == {"boottime": {"secs": -14740, "nanosecs": 379999999}}


def test_whole_seconds_and_the_clock_read_by_default() -> None:
    assert render.boot_clock_from_zero(5 * 10**9) == {"boottime": {"secs": -5, "nanosecs": 0}}
    before = float(Path("/proc/uptime").read_text().split()[0])
    off = render.boot_clock_from_zero()["boottime"]
    after = float(Path("/proc/uptime").read_text().split()[0])
    assert -after - 1 <= off["secs"] + off["nanosecs"] / 1e9 <= -before + 1


def test_privileged_system_instance_too(tmp_path: Path) -> None:
    inst = Instance.new("t2", "bb", config={"security.privileged": "true"})
    spec = rendered(tmp_path, inst, boottime_ns=10**12)
    assert "time" in types(spec) and "user" not in types(spec)
    assert spec["linux"]["timeOffsets"]["boottime"]["secs"] == -1000


def test_no_time_namespace_when_off_or_for_an_app(tmp_path: Path) -> None:
    off = Instance.new("t3", "bb", idmap_base=1 << 20, config={"security.timens": "false"})
    spec = rendered(tmp_path, off, boottime_ns=10**12)
    assert "time" not in types(spec) and "timeOffsets" not in spec["linux"]
    app = Instance.new("t4", "bb", mode="app", idmap_base=1 << 20, command=["/bin/true"])
    spec = rendered(tmp_path / "app", app, boottime_ns=10**12)
    assert "time" not in types(spec) and "timeOffsets" not in spec["linux"]


def test_security_timens_setting() -> None:
    assert render.settings.effective({})["security.timens"] is True
    assert render.settings.validate({"security.timens": "off"}) == {"security.timens": False}
    with pytest.raises(Exception, match="security.timens: 'maybe' is not a boolean"):
        render.settings.validate({"security.timens": "maybe"})
    assert not render.settings.is_live("security.timens")
