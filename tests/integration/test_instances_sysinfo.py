"""security.syscalls.intercept.sysinfo for real: busybox system instances under the container driver
with a real console keeper (its seccomp agent). busybox `free` (sysinfo(2) for its totals) shows
limits.memory and a used figure near the cgroup's usage, the swap of the host capped by the limit;
`uptime` is the instance's (its time namespace); `jaula exec` processes are answered too (their
listener is handed over as the init's); with the setting off the host's total shows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.daemon.console_keeper_service import KeeperService
from jaula.instances import console_pty
from tests.integration.test_instances_container import Host, host, store  # noqa: F401 - fixtures
from tests.integration.test_instances_lxcfs import lxcfs  # noqa: F401 - fixture

pytestmark = pytest.mark.root
MiB = 1 << 20


@pytest.fixture
def keeper(host: Host) -> Iterator[KeeperService]:  # noqa: F811
    root = host.top / "keeper"
    root.mkdir()
    svc = KeeperService(root)
    assert svc.start(watch=False)
    host.driver.console_keeper = svc.path
    try:
        yield svc
    finally:
        host.driver.console_keeper = None
        svc.close()


def free_kib(out: str) -> dict[str, list[int]]:
    """busybox free's rows (KiB): {"Mem": [total, used, free, shared, buff/cache, available], "Swap": [...]}.
    (Without lxcfs an instance's used figure would go negative and run into its total: these
    tests give instances with a limit lxcfs.)"""
    return {ln.split(":")[0]: [int(x) for x in ln.split(":")[1].split()] for ln in out.splitlines() if ":" in ln}


def _meminfo_host(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


def test_free_and_uptime_show_the_instances_own(host: Host, keeper: KeeperService, lxcfs) -> None:  # noqa: F811
    """With lxcfs as under jaulad: busybox free takes its cache column from /proc/meminfo (lxcfs's)
    and computes used = total - free - buff/cache, so both halves must be the instance's."""
    inst = host.new(config={"limits.memory": "256MiB"})
    st = host.start(inst)
    try:
        spec = host.driver._container(inst.name)
        code, out = host.sh(inst, "free")
        assert code == 0, out
        rows = free_kib(out)
        assert rows["Mem"][0] == 256 * 1024, out
        memdir = next(p for k, p in spec.data["cgroupPaths"].items() if k == "memory")
        usage_kib = int(Path(memdir, "memory.usage_in_bytes").read_text()) // 1024
        # used = total - free - buff/cache: near the cgroup's usage less its cache (a few MiB for busybox)
        used, cache = rows["Mem"][1], rows["Mem"][4]
        assert 0 <= used + cache <= usage_kib + 4096 and used + cache >= usage_kib - 4096, (out, usage_kib)
        # no swap limit set: the host's swap, as the kernel's (capped by the host's: a host without swap shows 0)
        assert rows["Swap"][0] == _meminfo_host("SwapTotal"), out
        # uptime from its own time namespace: a just started instance, not the host's days
        host_up = float(Path("/proc/uptime").read_text().split()[0])
        code, out = host.sh(inst, "uptime; cat /proc/1/stat >/dev/null")
        assert code == 0 and "up " in out, out
        up = out.split("up ")[1].split(",")[0].strip()
        assert ":" in up or "min" in up, f"the instance's uptime {up!r} (host up {host_up:.0f} s)"
        if ":" in up and "day" not in up:
            h, m = up.split(":")
            assert int(h) * 3600 + int(m) * 60 < min(host_up - 1, 600), out
        verb, payload, _ = console_pty.request(keeper.path, "AGENT")
        assert verb == "AGENT" and int(payload.split()[1]) >= 2, payload  # the keeper answered both
        assert st.pid
    finally:
        host.driver.stop(inst, force=True)


def test_the_setting_off_and_an_unlimited_instance_show_the_hosts(host: Host, keeper: KeeperService) -> None:  # noqa: F811
    off = host.new(config={"limits.memory": "256MiB", "security.syscalls.intercept.sysinfo": False})
    unlimited = host.new()
    host.start(off)
    try:
        spec = Path(host.driver.bundle(off.name), "config.json").read_text()
        assert "SCMP_ACT_NOTIFY" not in spec and "listenerPath" not in spec
        code, out = host.sh(off, "free")
        assert code == 0 and free_kib(out)["Mem"][0] == _meminfo_host("MemTotal"), out
    finally:
        host.driver.stop(off, force=True)
    host.start(unlimited)
    try:
        assert "listenerPath" in Path(host.driver.bundle(unlimited.name), "config.json").read_text()
        code, out = host.sh(unlimited, "free")  # no limit: the keeper leaves the answer to the kernel (CONTINUE)
        assert code == 0 and free_kib(out)["Mem"][0] == _meminfo_host("MemTotal"), out
    finally:
        host.driver.stop(unlimited, force=True)


def test_an_app_instance_is_answered_too(host: Host, keeper: KeeperService, lxcfs) -> None:  # noqa: F811
    app = host.new(mode="app", command=["/bin/sleep", "600"], config={"limits.memory": "128MiB"})
    host.start(app)
    try:
        code, out = host.sh(app, "free")
        assert code == 0 and free_kib(out)["Mem"][0] == 128 * 1024, out
    finally:
        host.driver.stop(app, force=True)
    assert os.path.exists(Path(keeper.path).parent / console_pty.AGENT_SOCKET)


def test_swap_follows_the_limit_capped_by_the_hosts(host: Host, keeper: KeeperService, lxcfs) -> None:  # noqa: F811
    """limits.memory.swap=64MiB: memsw is 320 MiB; free's swap total is 64 MiB at most the host's
    swap (a host without swap: 0, as the kernel would say), its used at most its total."""
    inst = host.new(config={"limits.memory": "256MiB", "limits.memory.swap": "64MiB"})
    host.start(inst)
    try:
        memsw = host.cgroup_file(inst, "memory", "memory.memsw.limit_in_bytes")
        assert int(memsw) == 320 * MiB, memsw
        code, out = host.sh(inst, "free")
        rows = free_kib(out)
        assert code == 0 and rows["Mem"][0] == 256 * 1024, out
        assert rows["Swap"][0] == min(64 * 1024, _meminfo_host("SwapTotal")) and rows["Swap"][1] <= rows["Swap"][0], out
    finally:
        host.driver.stop(inst, force=True)
