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
               "'echo pid=$$ uid=$(id -u) procs=$(ls /proc | grep -c \"^[0-9]\")'")
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
        # only its own processes (sh, ls, grep)
        assert code == 0 and out.split() == ["pid=1", "uid=0", "procs=3"], out
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
