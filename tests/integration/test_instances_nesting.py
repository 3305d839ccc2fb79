"""security.nesting for real: inside a busybox system instance (its own user namespace), root
makes a nested user + pid + mount namespace with its own /proc (`unshare -Urpfm --mount-proc`,
the first step of any container runtime) and a nested network namespace's sysfs; without
nesting the kernel refuses both (mount_too_revealing: the instance's /proc carries masked paths
and lxcfs's files, its /sys lxcfs's cpu folder). With lxcfs running, as jaulad has it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from jaula.daemon.lxcfs import Lxcfs
from jaula.instances import render
from tests.integration.test_instances_container import Host, host, store  # noqa: F401 (fixtures)

pytestmark = pytest.mark.root

NESTED_PROC = ("unshare -Urpfm --mount-proc sh -c "
               "'echo pid=$$ uid=$(id -u) init=$(cat /proc/1/comm) procs=$(ls /proc | grep -c \"^[0-9]\")'")
NESTED_SYS = "unshare -Urmn sh -c 'mount -t sysfs -o ro sysfs /mnt && ls /mnt/class/net'"


@pytest.fixture
def lxcfs(host: Host) -> Iterator[Lxcfs | None]:  # noqa: F811
    if shutil.which("lxcfs") is None or not os.path.exists("/dev/fuse"):
        yield None  # the same refusal without lxcfs's files: the masked paths are enough
        return
    svc = Lxcfs(host.driver.root)
    try:
        svc.start(watch=False)
        yield svc
    finally:
        svc.close(stop=True)


def test_nesting_allows_a_nested_userns_pidns_and_its_own_proc(host: Host, lxcfs: Lxcfs | None) -> None:  # noqa: F811
    inst = host.new(config={"security.nesting": "true"})
    host.start(inst)
    try:
        code, out = host.sh(inst, NESTED_PROC)
        # pid 1 of the new pid namespace, root of the new user namespace, and its /proc shows
        # only its own processes (sh, a subshell, ls, grep), pid 1 being its sh
        words = out.split()
        assert code == 0 and words[:3] == ["pid=1", "uid=0", "init=sh"], out
        assert 2 <= int(words[3].removeprefix("procs=")) <= 5, out
        code, out = host.sh(inst, NESTED_SYS)
        assert code == 0 and out.split() == ["lo"], out
        code, out = host.sh(inst, f"grep -c ' {render.NESTING_PROC} .* - proc ' /proc/self/mountinfo")
        assert out.strip() == "1", out
    finally:
        host.driver.stop(inst, timeout=10)


def test_without_nesting_the_kernel_refuses(host: Host, lxcfs: Lxcfs | None) -> None:  # noqa: F811
    inst = host.new()
    host.start(inst)
    try:
        code, out = host.sh(inst, NESTED_PROC)
        assert code != 0 and "Operation not permitted" in out, out
        code, out = host.sh(inst, NESTED_SYS)
        assert code != 0 and "permission denied" in out, out
        code, out = host.sh(inst, "ls -d /dev/.jaula")
        assert code != 0, out
    finally:
        host.driver.stop(inst, timeout=10)


DELEGATED = (
    # a sub-cgroup with a pids limit of its own, a process moved in: its 4th process is refused
    "mkdir /sys/fs/cgroup/pids/sub && echo 3 > /sys/fs/cgroup/pids/sub/pids.max && "
    "sh -c 'echo $$ > /sys/fs/cgroup/pids/sub/cgroup.procs; grep :pids: /proc/self/cgroup; "
    "sleep 2 & sleep 2 & sleep 2 & wait' 2>&1; "
    # its own limits stay the host's, and a sub-cgroup cannot allow a device
    "for f in pids/pids.max memory/memory.limit_in_bytes devices/devices.allow; do "
    "  echo 1 > /sys/fs/cgroup/$f 2>/dev/null && echo WROTE $f; done; "
    "mkdir /sys/fs/cgroup/devices/d && (echo a > /sys/fs/cgroup/devices/d/devices.allow) 2>/dev/null || echo no-device; "
    "mkdir /sys/fs/cgroup/unified/u && echo unified-ok"
)


def test_nesting_delegates_its_cgroups(host: Host, lxcfs: Lxcfs | None) -> None:  # noqa: F811
    """The instance's root makes sub-cgroups and moves processes into them (the hierarchy's limit
    holds), but cannot write its own limits or allow a device; they go with the instance."""
    inst = host.new(config={"security.nesting": "true", "limits.memory": "256MiB"})
    host.start(inst)
    try:
        _, out = host.sh(inst, DELEGATED)
        assert "8:pids:/sub" in out or ":pids:/sub" in out, out
        assert "can't fork" in out, out
        assert "WROTE" not in out and "no-device" in out and "unified-ok" in out, out
        sub = os.path.join(host.driver._container(inst.name).data["cgroupPaths"]["pids"], "sub")
        assert os.path.isdir(sub)
    finally:
        host.driver.stop(inst, timeout=10)
    assert not os.path.exists(sub)


def test_without_nesting_no_delegation(host: Host, lxcfs: Lxcfs | None) -> None:  # noqa: F811
    inst = host.new()
    host.start(inst)
    try:
        code, out = host.sh(inst, "mkdir /sys/fs/cgroup/pids/sub")
        assert code != 0, out
        pids = host.driver._container(inst.name).data["cgroupPaths"]["pids"]
        assert os.stat(pids).st_uid == 0 and os.stat(os.path.join(pids, "cgroup.procs")).st_uid == 0
    finally:
        host.driver.stop(inst, timeout=10)
