"""The cgroup mount a systemd instance sees, planned against the recording fake (no root):
LXC's cgroup:mixed. Under a read-only /sys/fs/cgroup the controllers' folders are bound read-only
and systemd's own hierarchies (name=systemd and the cgroup2 one) read-write; on a pure v2 host
the instance's cgroup2 (its cgroup namespace's root) is mounted read-write. Which hierarchies:
jaula.instances.cgroup_delegation, rendered as the runtime annotation org.jaula.cgroup.writable.
The real mounts, their writability and the files' owners: tests/integration/test_instances_cgroup_mounts.py.
"""

from __future__ import annotations

from typing import Any

from jaula.instances import cgroup_delegation
from jaula.linux import mount as m
from jaula.linux.fake import Recording
from jaula.oci import config, create, rootfs

ROOTFS = "/bundle/rootfs"
BASE = m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC
RO_BIND = m.MS_REMOUNT | m.MS_BIND | m.MS_RDONLY | BASE
CG = "/sys/fs/cgroup"
PATHS = {  # the runtime's state (Cgroup.paths) of an instance on this hybrid host
    "cpu": f"{CG}/cpu/jaula/web1", "memory": f"{CG}/memory/jaula/web1", "pids": f"{CG}/pids/jaula/web1",
    "name=systemd": f"{CG}/systemd/jaula/web1", "unified": f"{CG}/unified/jaula/web1",
}
MOUNTS = {f"{CG}/cpu": "cgroup", f"{CG}/memory": "cgroup", f"{CG}/pids": "cgroup",
          f"{CG}/systemd": "cgroup", f"{CG}/unified": "cgroup2"}


def spec_of(options: list[str]) -> config.Spec:
    doc = {"ociVersion": "1.0.2", "root": {"path": ROOTFS}, "process": {"args": ["/sbin/init"], "cwd": "/"},
           "mounts": [{"destination": CG, "type": "cgroup", "source": "cgroup", "options": options}],
           "linux": {"namespaces": [{"type": "mount"}, {"type": "cgroup"}, {"type": "user"}]}}
    return config.parse(doc, "/bundle")


def plan(options: list[str], writable_keys: list[str], paths: dict[str, str] = PATHS,
         mounts: dict[str, str] = MOUNTS) -> list[tuple[Any, ...]]:
    binds, v2_only = create.cgroup_binds(paths, mounts)
    writable = [paths[k] for k in writable_keys if k in paths]
    ctx = rootfs.Context(rootfs=ROOTFS, userns=True, cgroup_ns=True, cgroup_binds=binds,
                         cgroup2_only=v2_only, cgroup_writable=writable)
    sys_ = Recording()
    rootfs.prepare(spec_of(options), ctx, sys_)
    first = sys_.calls.index(("make", CG, "dir"))
    # the fake names a folder made below an fd by its path from that fd: "fd:/cpu" is /sys/fs/cgroup/cpu
    return [c for c in sys_.calls[first:] if c[0] == "mount_setattr" or c[0] == "mount" and not str(c[1]).startswith("/dev/")]


def test_a_systemd_instance_gets_its_init_hierarchies_read_write_the_controllers_read_only() -> None:
    keys = cgroup_delegation.writable("systemd")
    assert keys == ["name=systemd", "unified"]
    calls = plan(["nosuid", "noexec", "nodev", "ro"], keys)
    binds = {c[2]: c[1] for c in calls if c[4] == m.MS_BIND | m.MS_REC}
    assert binds == {f"fd:/{sub}": PATHS[k] for sub, k in
                     [("cpu", "cpu"), ("memory", "memory"), ("pids", "pids"), ("systemd", "name=systemd"),
                      ("unified", "unified")]}
    read_only = {c[2] for c in calls if c[4] == RO_BIND}
    assert read_only == {"fd:/cpu", "fd:/memory", "fd:/pids"}
    # the tmpfs above them is read-only too: no new folder or file at /sys/fs/cgroup
    assert calls[0] == ("mount", "tmpfs", f"fd:{CG}", "tmpfs", BASE, "mode=755")
    assert calls[-1] == ("mount", None, f"fd:{CG}", None, m.MS_REMOUNT | m.MS_RDONLY | BASE, "mode=755")


def test_other_inits_and_apps_keep_everything_read_only() -> None:
    assert cgroup_delegation.writable("busybox") == cgroup_delegation.writable("sysvinit") == []
    assert cgroup_delegation.writable("app") == cgroup_delegation.writable("unknown") == []
    calls = plan(["nosuid", "noexec", "nodev", "ro"], cgroup_delegation.writable("busybox"))
    assert {c[2] for c in calls if c[0] == "mount" and c[4] == m.MS_BIND | m.MS_REC} == {
        f"fd:/{s}" for s in ("cpu", "memory", "pids", "systemd", "unified")}
    # then the tmpfs and every bind below it read-only in one mount_setattr
    assert calls[-1] == ("mount_setattr", CG, "", m.AT_EMPTY_PATH | m.AT_RECURSIVE,
                         m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOSUID | m.MOUNT_ATTR_NODEV | m.MOUNT_ATTR_NOEXEC, 0, 0)


def test_nesting_mounts_all_read_write() -> None:
    calls = plan(["nosuid", "noexec", "nodev", "rw"], cgroup_delegation.writable("systemd"))
    assert not [c for c in calls if c[4] & m.MS_RDONLY]


def test_pure_v2_the_cgroup_namespace_root_is_mounted_read_write_for_systemd() -> None:
    paths = {"unified": f"{CG}/jaula/web1"}
    mounts = {CG: "cgroup2"}
    calls = plan(["nosuid", "noexec", "nodev", "ro"], cgroup_delegation.writable("systemd"), paths, mounts)
    assert calls == [("mount", "cgroup", f"fd:{CG}", "cgroup2", BASE, None)]
    calls = plan(["nosuid", "noexec", "nodev", "ro"], cgroup_delegation.writable("busybox"), paths, mounts)
    assert calls == [("mount", "cgroup", f"fd:{CG}", "cgroup2", BASE | m.MS_RDONLY, None)]


def test_what_is_delegated_to_an_unprivileged_instance() -> None:
    assert cgroup_delegation.to_delegate(PATHS, "systemd", nesting=False) == {
        "name=systemd": PATHS["name=systemd"], "unified": PATHS["unified"]}
    assert cgroup_delegation.to_delegate(PATHS, "systemd", nesting=True) == PATHS
    assert cgroup_delegation.to_delegate(PATHS, "busybox", nesting=False) == {}
    assert cgroup_delegation.to_delegate(PATHS, "app", nesting=False) == {}
    v2 = {"unified": f"{CG}/jaula/web1"}
    assert cgroup_delegation.to_delegate(v2, "systemd", nesting=False) == v2


def test_render_annotates_a_systemd_instance_only(tmp_path) -> None:
    from test_instances_render import rendered

    from jaula.instances import render
    from jaula.instances.model import Instance

    inst = Instance.new("web1", "deb12", idmap_base=1_000_000)
    spec = rendered(tmp_path, inst, init=render.INITS["systemd"])
    assert spec["annotations"][cgroup_delegation.WRITABLE] == "name=systemd,unified"
    cg = next(mt for mt in spec["mounts"] if mt["destination"] == CG)
    assert "ro" in cg["options"]  # the rest stays read-only
    for init in ("busybox", "sysvinit", "unknown"):
        assert cgroup_delegation.WRITABLE not in rendered(tmp_path, inst, init=render.INITS[init])["annotations"]
