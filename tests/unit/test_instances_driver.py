"""The container driver's bookkeeping without a kernel: what a failed start undoes, in which
order, and what it refuses before touching anything (fake pool and template store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaula.errors import BadState, ConfigError, JaulaError
from jaula.instances import container
from jaula.instances.model import Instance
from jaula.storage.templates import Template


class FakePool:
    kind, has_quota = "dir", False

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.mounted: dict[str, str] = {}

    def create_volume(self, name: str, template: str, size: int | None = None) -> None:
        self.calls.append(("create_volume", name, size))

    def mount(self, name: str, target: str, idmap: object = None) -> None:
        self.calls.append(("mount", name, idmap))
        self.mounted[name] = target

    def unmount(self, name: str) -> None:
        self.calls.append(("unmount", name))
        self.mounted.pop(name, None)

    def mounted_at(self, name: str) -> str | None:
        return self.mounted.get(name)

    def mounted_here(self, name: str, target: str, idmap: object = None) -> bool:
        return self.mounted.get(name) == target and ("mount", name, idmap) in self.calls

    def delete_volume(self, name: str) -> None:
        self.calls.append(("delete_volume", name))


class FakeStore:
    def __init__(self, root: Path) -> None:
        (root / "rootfs/sbin").mkdir(parents=True)
        (root / "rootfs/sbin/init").write_bytes(b"BusyBox v1.36")
        self.template = Template(name="bb", source="busybox", created="", size=0, os="busybox", cmd=["/sbin/init"],
                                 path=root)

    def get(self, name: str) -> Template:
        return self.template


@pytest.fixture
def driver(tmp_path: Path) -> container.ContainerDriver:
    return container.ContainerDriver(str(tmp_path / "run"), FakePool(), FakeStore(tmp_path / "tpl"))


def test_a_failed_create_undoes_the_mount_and_the_bundle(driver, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_create(*a: object, **kw: object) -> None:
        raise JaulaError("container init: mount: boom")

    monkeypatch.setattr("jaula.oci.create.create", failing_create)
    inst = Instance.new("web1", "bb", config={"security.privileged": "true"})
    with pytest.raises(JaulaError, match="boom"):
        driver.start(inst)
    assert driver.pool.calls == [("mount", "web1", None), ("unmount", "web1")]
    assert not Path(driver.bundle("web1")).exists()
    assert driver.state(inst).status == "stopped"


def test_refusals_come_before_any_change(driver) -> None:
    inst = Instance.new("web1", "bb")  # unprivileged without an id range
    with pytest.raises(ConfigError, match="has no id range"):
        driver.start(inst)
    with pytest.raises(BadState, match="not running"):
        driver.stop(inst)
    with pytest.raises(BadState, match="not running"):
        driver.exec(inst, ["true"])
    with pytest.raises(BadState, match="not running"):
        driver.freeze(inst)
    with pytest.raises(ConfigError, match="give the command"):
        driver.exec(inst, [])
    with pytest.raises(ConfigError, match="dir pool has no per-instance disk quota"):
        driver.create(Instance.new("web2", "bb", config={"limits.disk": "1GiB"}, idmap_base=100000))
    assert driver.pool.calls == []


def test_an_app_instance_without_an_init_is_fine_a_system_one_is_not(driver, tmp_path: Path) -> None:
    (tmp_path / "tpl/rootfs/sbin/init").unlink()
    with pytest.raises(ConfigError, match="has no /sbin/init: run it as an app instance"):
        driver.start(Instance.new("web1", "bb", idmap_base=100000))
    assert driver.pool.calls == []


def test_a_stopped_instance_takes_any_change(driver) -> None:
    inst = Instance.new("web1", "bb", idmap_base=100000)
    assert driver.update(inst, {"security.privileged": "yes", "limits.memory": "1GiB"}) == {
        "security.privileged": True, "limits.memory": 1 << 30}
    with pytest.raises(ConfigError, match="limits.disk: a disk quota cannot be removed"):
        driver.update(Instance.new("web1", "bb", config={"limits.disk": "1GiB"}), {})
