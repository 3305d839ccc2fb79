"""The lxcfs and nesting mounts of an instance's config.json (render), and the instance side of
lxcfs (lxcfs_view): which files, where, and what a start does when lxcfs is missing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jaula.instances import lxcfs_view, render
from jaula.instances.model import Instance
from tests.unit.test_instances_render import rendered


def dests(spec: dict) -> list[str]:
    return [m["destination"] for m in spec["mounts"]]


def test_lxcfs_files_bound_over_proc_and_sys_after_them(tmp_path: Path) -> None:
    inst = Instance.new("l1", "bb", idmap_base=1 << 20)
    spec = rendered(tmp_path, inst, lxcfs="/run/jaula/instances/lxcfs")
    d = dests(spec)
    want = [f"/proc/{n}" for n in ("cpuinfo", "meminfo", "stat", "uptime", "loadavg", "diskstats", "swaps")]
    assert [x for x in d if x in want] == want
    assert d.index("/proc/meminfo") > d.index("/proc") and d.index("/sys/devices/system/cpu") > d.index("/sys")
    mem = next(m for m in spec["mounts"] if m["destination"] == "/proc/meminfo")
    assert mem["source"] == "/run/jaula/instances/lxcfs/proc/meminfo" and mem["type"] == "bind"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(mem["options"])


def test_no_lxcfs_no_mounts(tmp_path: Path) -> None:
    spec = rendered(tmp_path, Instance.new("l2", "bb", idmap_base=1 << 20))
    assert not [m for m in spec["mounts"] if "lxcfs" in m.get("source", "")]
    assert render.NESTING_PROC not in dests(spec)


def test_nesting_gets_a_spare_proc_and_sysfs(tmp_path: Path) -> None:
    inst = Instance.new("n1", "bb", idmap_base=1 << 20, config={"security.nesting": "true"})
    spec = rendered(tmp_path, inst, lxcfs="/x/lxcfs")
    spare = {m["destination"]: m for m in spec["mounts"] if m["destination"].startswith("/dev/.jaula/")}
    assert spare[render.NESTING_PROC]["type"] == "proc" and spare[render.NESTING_SYS]["type"] == "sysfs"
    assert dests(spec).index(render.NESTING_PROC) > dests(spec).index("/dev")


def test_security_lxcfs_setting() -> None:
    assert render.settings.effective({})["security.lxcfs"] is True
    assert render.settings.validate({"security.lxcfs": "off"}) == {"security.lxcfs": False}
    with pytest.raises(Exception, match="security.lxcfs: 'maybe' is not a boolean"):
        render.settings.validate({"security.lxcfs": "maybe"})
    assert not render.settings.is_live("security.lxcfs")


def test_for_instance_without_a_live_lxcfs_warns_and_gives_none(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    assert lxcfs_view.mountpoint(str(tmp_path)).startswith(lxcfs_view.RUN_DIR + "/")  # not mounted there
    with caplog.at_level(logging.WARNING):
        assert lxcfs_view.for_instance(str(tmp_path), "a1", {"security.lxcfs": True}) is None
    assert "a1 starts without lxcfs" in caplog.text
    caplog.clear()
    assert lxcfs_view.for_instance(str(tmp_path), "a1", {"security.lxcfs": False}) is None
    assert not caplog.text
