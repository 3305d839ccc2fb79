"""An exec into an instance whose init is in its cgroup2 folder (a systemd instance on this hybrid
host: cgroup:mixed) is born there (jaula.oci.execute: clone3 CLONE_INTO_CGROUP, as create's first
process, not a write of cgroup.procs): the same cgroup2 and v1 lines as its init; into a busybox
system or an app instance (whose init stays out of cgroup2 here) it stays out too."""

from __future__ import annotations

import pytest

from jaula.linux import libc
from tests.integration.test_instances_cgroup_mounts import systemd_like  # noqa: F401 (fixture)
from tests.integration.test_instances_container import Host, booted, host, store  # noqa: F401 (fixtures)

pytestmark = pytest.mark.root


def _lines(text: str) -> dict[str, str]:
    """/proc/PID/cgroup -> {hierarchy's controllers ('' for cgroup2): path}."""
    return {ln.split(":", 2)[1]: ln.split(":", 2)[2] for ln in text.strip().splitlines()}


@pytest.mark.parametrize("mode", ["systemd", "system", "app"])
def test_exec_joins_the_cgroups_of_its_init(host: Host, systemd_like: str, mode: str) -> None:  # noqa: F811
    if not libc.can_clone3():
        pytest.skip("jaula.linux._sys without clone3 (VERSION 3): run scripts/build-runtime-fast")
    if mode == "systemd":
        inst = host.new(mode="system", template=systemd_like)
    else:
        inst = host.new(mode=mode, command=["/bin/sleep", "60"] if mode == "app" else None)
    host.start(inst)
    try:
        code, out = host.sh(inst, "cat /proc/1/cgroup; echo ---; cat /proc/self/cgroup")
        assert code == 0, out
        init, mine = (_lines(part) for part in out.split("---\n"))
        assert mine == init, out
        c = host.driver._container(inst.name)
        with open(f"/proc/{c.pid}/cgroup") as f:  # as the host sees the init
            on_host = _lines(f.read())
        unified = c.data["cgroupPaths"].get("unified", "")
        if mode == "systemd" and unified:
            assert unified.endswith(on_host[""]), (unified, on_host)
        elif unified:
            assert not unified.endswith(on_host[""]), (unified, on_host)
    finally:
        host.driver.stop(inst, force=True)
