"""The cgroups a systemd instance sees, for real without a debootstrap: busybox init run as
/lib/systemd/systemd (so jaula takes it for systemd), LXC's cgroup:mixed on this hybrid host.
/sys/fs/cgroup is a read-only tmpfs, the controllers' folders are bound read-only, and systemd's
own hierarchies (name=systemd and the cgroup2 one) read-write and given to the instance's root,
so it does what systemd does at boot (init.scope made, pid 1 moved there, a service's cgroup)
while its limits stay out of its reach: the limit files are the host root's and read-only, and no
sub-cgroup of a controller can be made. Other inits and app instances get none of it. What
systemd itself does with this: tests/e2e/test_jaulad_systemd.py (slow, debootstrap).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from jaula.storage import TemplateStore
from tests.integration.test_instances_container import Host, booted, host, store  # noqa: F401 (fixtures)

pytestmark = pytest.mark.root
MiB = 1 << 20

MOUNTS = "grep ' /sys/fs/cgroup' /proc/self/mountinfo"


@pytest.fixture(scope="module")
def systemd_like(store: TemplateStore) -> str:  # noqa: F811
    """A busybox template whose /sbin/init links to /lib/systemd/systemd (a copy of busybox):
    render.detect_init says systemd; argv[0] stays /sbin/init, so busybox runs its init."""
    if not store.exists("bbsd"):
        root = store.build("bbsd", "busybox").rootfs
        (root / "lib/systemd").mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "bin/busybox", root / "lib/systemd/systemd")
        (root / "sbin/init").unlink()
        (root / "sbin/init").symlink_to("/lib/systemd/systemd")
    return "bbsd"


def mounts(out: str) -> dict[str, tuple[str, str]]:
    """mountinfo lines -> {mount point: (mount options, fs type)}."""
    found = {}
    for line in out.splitlines():
        pre, _, post = line.partition(" - ")
        f = pre.split()
        found[f[4]] = (f[5], post.split()[0])
    return found


def test_systemd_instance_sees_its_init_hierarchies_writable_and_its_controllers_read_only(
        host: Host, systemd_like: str) -> None:  # noqa: F811
    inst = host.new(template=systemd_like, config={"limits.memory": "64MiB", "limits.processes": "100"})
    assert host.start(inst).init == "systemd"
    try:
        booted(host, inst)
        code, out = host.sh(inst, MOUNTS)
        seen = mounts(out)
        assert seen["/sys/fs/cgroup"][1] == "tmpfs" and seen["/sys/fs/cgroup"][0].startswith("ro,"), out
        assert seen["/sys/fs/cgroup/systemd"][0].startswith("rw,"), out
        writable = {mp for mp, (opts, _) in seen.items() if opts.startswith("rw,")}
        assert writable == {"/sys/fs/cgroup/systemd"} | ({"/sys/fs/cgroup/unified"} if "/sys/fs/cgroup/unified" in seen else set())
        assert {"/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"} <= set(seen) - writable

        # what systemd does at boot, in both of its hierarchies
        script = ("for h in systemd unified; do [ -d /sys/fs/cgroup/$h ] || continue; "
                  " mkdir /sys/fs/cgroup/$h/init.scope /sys/fs/cgroup/$h/system.slice && "
                  " echo 1 > /sys/fs/cgroup/$h/init.scope/cgroup.procs && "
                  " mkdir /sys/fs/cgroup/$h/system.slice/cron.service && echo made-$h; done; "
                  "grep -E ':name=systemd:|^0::' /proc/1/cgroup")
        code, out = host.sh(inst, script)
        assert code == 0 and "made-systemd" in out and ":name=systemd:/init.scope" in out, out
        if "/sys/fs/cgroup/unified" in seen:
            assert "made-unified" in out and "0::/init.scope" in out, out

        # its limits stay out of its reach
        attempts = {
            "memory": "echo 1073741824 > /sys/fs/cgroup/memory/memory.limit_in_bytes",
            "pids": "echo max > /sys/fs/cgroup/pids/pids.max",
            "sub-cgroup": "mkdir /sys/fs/cgroup/memory/escape",
            "tmpfs": "mkdir /sys/fs/cgroup/cpu2",
            "unified limit": "echo max > /sys/fs/cgroup/unified/cgroup.max.descendants",
            "systemd release agent": "echo /x > /sys/fs/cgroup/systemd/release_agent",
            "systemd notify": "echo 1 > /sys/fs/cgroup/systemd/notify_on_release",
        }
        for what, cmd in attempts.items():
            code, out = host.sh(inst, cmd)
            assert code != 0, f"{what}: {cmd}: {out}"
            assert "Read-only file system" in out or "Permission denied" in out or "No such file" in out, (what, out)
        assert int(host.cgroup_file(inst, "memory", "memory.limit_in_bytes")) == 64 * MiB
        assert host.cgroup_file(inst, "pids", "pids.max") == "100"

        # on the host: the init's folders are the instance root's, the limits the host root's
        paths = host.driver._container(inst.name).data["cgroupPaths"]
        for key in ("name=systemd", "unified"):
            if key in paths:
                assert os.stat(paths[key]).st_uid == inst.idmap_base, key
                assert os.stat(os.path.join(paths[key], "cgroup.procs")).st_uid == inst.idmap_base, key
                assert os.stat(os.path.join(paths[key], "init.scope")).st_uid == inst.idmap_base, key
        for key, f in (("memory", "memory.limit_in_bytes"), ("pids", "pids.max"), ("memory", "cgroup.procs")):
            assert os.stat(paths[key]).st_uid == 0 and os.stat(os.path.join(paths[key], f)).st_uid == 0, (key, f)
        if "unified" in paths:
            assert os.stat(os.path.join(paths["unified"], "cgroup.max.descendants")).st_uid == 0

        # an exec after the init moved still enters the instance: its limits count it
        code, out = host.sh(inst, "grep -E ':memory:|:pids:' /proc/self/cgroup")
        assert code == 0 and ":memory:/\n" in out + "\n" and ":pids:/" in out, out
    finally:
        host.driver.stop(inst, force=True)  # busybox init has no handler for systemd's SIGRTMIN+4
    # the sub-cgroups it made went with it (the fixture's leak check looks at the instance's own)
    assert not [p for p in paths.values() if os.path.exists(p)]


@pytest.mark.parametrize("mode", ["system", "app"])
def test_busybox_init_and_app_cgroups_stay_read_only_and_the_host_roots(host: Host, mode: str) -> None:  # noqa: F811
    inst = host.new(mode=mode, command=["/bin/sleep", "60"] if mode == "app" else None)
    assert host.start(inst).init == ("busybox" if mode == "system" else "app")
    try:
        code, out = host.sh(inst, MOUNTS)
        seen = mounts(out)
        assert seen and not [mp for mp, (opts, _) in seen.items() if opts.startswith("rw,")], out
        code, out = host.sh(inst, "mkdir /sys/fs/cgroup/systemd/init.scope")
        assert code != 0, out
        paths = host.driver._container(inst.name).data["cgroupPaths"]
        assert {os.stat(p).st_uid for p in paths.values()} == {0}
        # no limit of the hybrid's cgroup2 here: the init did not join it (a 1-13 ms write saved)
        if "unified" in paths:
            assert Path(paths["unified"], "cgroup.procs").read_text() == ""
    finally:
        host.driver.stop(inst, timeout=10)
