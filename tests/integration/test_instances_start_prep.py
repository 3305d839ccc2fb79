"""The container driver's preparation of a start, for real: the root `create` leaves mounted is the
one the start uses (no second mount), one mounted otherwise is remounted, a failed start still
unmounts it; config.json, written while the init builds its root, is the spec as rendered; the
kept idmapped clone of the template serves several mounts of one id range."""

from __future__ import annotations

import json
import os

import pytest

from jaula.instances import render
from jaula.instances.model import Instance
from jaula.storage import overlay
from tests.integration.test_instances_container import Host, host, store  # noqa: F401 - fixtures
from tests.support.containers import wait_until

pytestmark = pytest.mark.root


def _mounts(h: Host) -> list[tuple]:
    calls: list[tuple] = []
    real = h.pool.mount

    def mount(name: str, target: str, idmap: object = None) -> None:
        calls.append((name, target, idmap))
        real(name, target, idmap=idmap)

    h.pool.mount = mount  # type: ignore[method-assign]
    return calls


def test_the_root_create_mounted_is_the_starts(host: Host) -> None:  # noqa: F811
    inst = host.new(mode="app", command=["/bin/sh", "-c", "cat /etc/hostname; sleep 30"])
    rootfs = os.path.join(host.driver.bundle(inst.name), "rootfs")
    assert host.pool.mounted_at(inst.name) == rootfs  # left by create
    calls = _mounts(host)
    host.start(inst)
    assert calls == []  # found there: not mounted again
    log = host.driver.console_log(inst.name)
    wait_until("the hostname printed", lambda: os.path.getsize(log) > 0, 5)
    with open(log) as f:
        assert f.read().strip() == inst.name
    assert host.driver.stop(inst, force=True) is False
    assert host.pool.mounted_at(inst.name) is None
    host.start(inst)  # a restart: mounted again
    assert [c[0] for c in calls] == [inst.name]
    host.driver.stop(inst, force=True)


def test_a_created_instance_is_not_running_and_its_root_goes_with_it(host: Host) -> None:  # noqa: F811
    inst = host.new()
    from jaula.errors import BadState

    with pytest.raises(BadState, match="not running"):
        host.driver.stop(inst)
    assert host.pool.mounted_at(inst.name) is not None  # a refused stop changes nothing
    assert host.driver.mount_root(inst) == os.path.join(host.driver.bundle(inst.name), "rootfs")
    host.driver.unmount_root(inst)
    assert host.pool.mounted_at(inst.name) is None and not os.path.exists(host.driver.bundle(inst.name))


def test_a_failed_start_unmounts_the_kept_root(host: Host) -> None:  # noqa: F811
    inst = host.new(config={"limits.cpuset": "1000"})  # refused by the kernel's cgroup write
    assert host.pool.mounted_at(inst.name) is not None
    with pytest.raises(Exception, match="cpuset"):
        host.driver.start(inst)
    assert host.pool.mounted_at(inst.name) is None and host.leaks() == []


def test_a_root_mounted_through_another_range_is_remounted(host: Host) -> None:  # noqa: F811
    inst = host.new()
    moved = Instance(**{**inst.as_dict(), "idmap_base": inst.idmap_base + 65536 * 100})
    host.instances[-1] = moved
    calls = _mounts(host)
    host.start(moved)
    assert calls[-1][2].uid_base == moved.idmap_base  # (the first try refused: mounted already)
    code, out = host.sh(moved, "stat -c %u /etc/hostname /bin")
    assert code == 0 and out.split() == ["0", "0"], out
    host.driver.stop(moved, force=True)


def test_config_json_is_the_rendered_spec(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    rendered: list[dict] = []
    real = render.render

    def keep(*a: object, **kw: object) -> dict:
        spec = real(*a, **kw)
        rendered.append(spec)
        return spec

    monkeypatch.setattr(render, "render", keep)
    inst = host.new(mode="app", command=["/bin/sleep", "30"])
    host.start(inst)
    with open(os.path.join(host.driver.bundle(inst.name), "config.json")) as f:
        assert json.load(f) == json.loads(json.dumps(rendered[0]))
    code, out = host.sh(inst, "echo in")  # exec reads it
    assert code == 0 and out == "in\n"
    host.driver.stop(inst, force=True)


def test_one_kept_idmapped_clone_per_template_and_range(host: Host) -> None:  # noqa: F811
    overlay.forget_lowers()
    a = host.new(idmap_base=4000000)
    b = host.new(idmap_base=4000000 + 65536)
    assert len(overlay._lower) == 2  # one per range (create's mounts)
    host.driver.unmount_root(a)
    host.driver.start(a)  # a's range again: the same clone
    assert len(overlay._lower) == 2
    host.driver.stop(a, force=True)
    host.driver.unmount_root(b)
    overlay.forget_lowers()
