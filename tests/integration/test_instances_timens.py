"""A system instance's own uptime, through the container driver: its time namespace's boot clock
starts at 0 at each start (security.timens, docs/honest-proc.md), so busybox's `uptime`
(sysinfo(2)) and the kernel's /proc/uptime (no lxcfs here) are the instance's, not the host's;
security.timens=false gives the host's. Uptimes are compared with the host's, never with a clock.

Nothing is left: the driver tests' own leak check (Host)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.integration.test_instances_container import Host, host, store  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not os.path.exists("/proc/self/ns/time"),
                                 reason="the kernel has no time namespace (CONFIG_TIME_NS)")]


def host_uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def busybox_uptime_seconds(out: str) -> int:
    """Seconds from busybox uptime's "up [N day(s), ]{H:MM|N min}," (it shows no seconds)."""
    m = re.search(r"up\s+(?:(\d+) days?,\s+)?(?:(\d+):(\d+)|(\d+) min)", out)
    if m is None:
        raise AssertionError(f"not busybox uptime's output: {out!r}")
    days, hours, minutes, only_minutes = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes + only_minutes) * 60


def test_busybox_uptime_parser() -> None:
    assert busybox_uptime_seconds(" 08:04:59 up  4:05,  0 users,  load average: 0.22") == 4 * 3600 + 5 * 60
    assert busybox_uptime_seconds(" 08:04:59 up 3 min,  load average: 0.00") == 180
    assert busybox_uptime_seconds(" 08:04:59 up 2 days,  1:00,  load average: 0.00") == 49 * 3600


def test_system_instance_uptime_is_its_own(host: Host) -> None:  # noqa: F811
    inst = host.new()
    st = host.start(inst)
    try:
        code, out = host.sh(inst, "cat /proc/uptime; busybox uptime")
        host_up = host_uptime()
        assert code == 0, out
        proc_uptime, busybox = out.splitlines()[0], out.splitlines()[1]
        inside = float(proc_uptime.split()[0])
        assert 0 <= inside < host_up - 60, f"/proc/uptime inside {inside}, host {host_up}"
        assert busybox_uptime_seconds(busybox) < host_up - 60, f"busybox uptime inside {busybox!r}, host {host_up}"
        # its init is in a time namespace of its own, which exec'd processes join
        assert os.readlink(f"/proc/{st.pid}/ns/time") != os.readlink("/proc/self/ns/time")
        code, out = host.sh(inst, "readlink /proc/self/ns/time; readlink /proc/1/ns/time")
        mine, init = out.split()
        assert code == 0 and mine == init == os.readlink(f"/proc/{st.pid}/ns/time"), out
    finally:
        host.driver.stop(inst, timeout=10)


def test_a_restart_starts_the_clock_again(host: Host) -> None:  # noqa: F811
    """The offset is taken at each start, not kept from the first: after a restart the uptime
    inside is at most the host's time since the restart began (a kept offset would add the first
    run's second and more)."""
    inst = host.new()
    host.start(inst)
    try:
        host.sh(inst, "sleep 1")
        host.driver.stop(inst, timeout=10)
        since = host_uptime()
        host.start(inst)
        code, out = host.sh(inst, "cat /proc/uptime")
        bound = host_uptime() - since + 0.02  # /proc/uptime shows hundredths, cut
        assert code == 0 and 0 <= float(out.split()[0]) <= bound, (out, bound)
    finally:
        host.driver.stop(inst, timeout=10)


def test_security_timens_false_shows_the_hosts_uptime(host: Host) -> None:  # noqa: F811
    inst = host.new(config={"security.timens": "false"})
    st = host.start(inst)
    try:
        before = host_uptime()
        code, out = host.sh(inst, "cat /proc/uptime")
        assert code == 0 and float(out.split()[0]) >= before, (before, out)
        assert os.readlink(f"/proc/{st.pid}/ns/time") == os.readlink("/proc/self/ns/time")
    finally:
        host.driver.stop(inst, timeout=10)


def test_app_instance_keeps_the_hosts_clocks(host: Host) -> None:  # noqa: F811
    inst = host.new(mode="app", command=["/bin/sleep", "60"])
    st = host.start(inst)
    try:
        assert os.readlink(f"/proc/{st.pid}/ns/time") == os.readlink("/proc/self/ns/time")
    finally:
        host.driver.stop(inst, timeout=10)
