"""Profiles end to end: the `jaula` CLI against a real jaulad (private root) with real busybox
instances. A profile's live change reaches a running instance's cgroup at once, a non-live one
is said to wait for its next start, a change bad for one instance is refused with nothing
changed, delete and rename are refused while instances use the profile (naming them), and
profile add/remove change an instance's list. Nothing is left behind."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from jaula.errors import ExitCode
from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root


def run(d: Daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*JAULA, "--socket", str(d.socket), *args], check=False, capture_output=True,
                          text=True, timeout=60)


def memory_limit(d: Daemon, name: str) -> int:
    from jaula.oci import state

    paths = state.load(d.root / "instances" / "runtime", name).data["cgroupPaths"]
    mem = Path(paths["memory"])
    f = mem / "memory.limit_in_bytes" if (mem / "memory.limit_in_bytes").exists() else mem / "memory.max"
    return int(f.read_text())


@pytest.mark.timeout(600)
def test_profile_changes_reach_instances_and_in_use_profiles_stay(daemon: Daemon) -> None:  # noqa: F811
    d = daemon
    d.start()
    d.jaula("profile", "create", "small", "-c", "limits.memory=128MiB", "--description", "128 MiB")
    d.jaula("launch", "busybox", "p1", "-p", "small", "-c", "nic.eth0.type=none")
    d.note("p1")
    # p2 on the host's network (privileged, never started): a profile's NIC does not fit it
    d.jaula("create", "busybox", "p2", "-p", "small", "-c", "network.mode=host", "-c", "security.privileged=true")
    assert memory_limit(d, "p1") == 128 << 20

    # a live setting: the running instance's cgroup follows at once; the stopped one at its start
    out = d.jaula("profile", "set", "small", "limits.memory=192MiB")
    assert out == "Profile small: set limits.memory\n  p1: applied now: limits.memory\n", out
    assert memory_limit(d, "p1") == 192 << 20
    assert d.instances()["p2"]["expanded_config"]["limits.memory"] == "192MiB"

    # a setting that needs a restart: stored, and said so
    out = d.jaula("profile", "set", "small", "security.lxcfs=false")
    assert "p1: at its next start (running): security.lxcfs" in out, out

    # bad for each instance in its own way: refused with every problem, nothing changes
    r = run(d, "profile", "set", "small", "nic.eth1.network=nosuchnet", "limits.cpu=1")
    assert r.returncode == ExitCode.INVALID_CONFIG, r.stderr
    assert "'p1'" in r.stderr and "nosuchnet" in r.stderr, r.stderr
    assert "'p2'" in r.stderr and "host's network has no NICs" in r.stderr, r.stderr
    shown = yaml.safe_load(d.jaula("profile", "show", "small"))
    assert shown["config"] == {"limits.memory": "192MiB", "security.lxcfs": "false"}
    assert shown["used_by"] == ["p1", "p2"]
    assert memory_limit(d, "p1") == 192 << 20

    # in use: neither deleted nor renamed, the instances named
    for args in (("profile", "delete", "small"), ("profile", "rename", "small", "tiny")):
        r = run(d, *args)
        assert r.returncode == ExitCode.BAD_STATE and "used by p1, p2" in r.stderr, r.stderr
    assert d.jaula("profile", "remove", "p2", "small") == "Profile small removed from p2\n"
    d.jaula("profile", "copy", "small", "small2")
    d.jaula("profile", "add", "p2", "small2")
    assert d.instances()["p2"]["profiles"] == ["small2"]
    r = run(d, "profile", "delete", "small")
    assert r.returncode == ExitCode.BAD_STATE and "used by p1" in r.stderr and "p2" not in r.stderr

    # jaulad restarted: the links stay
    d.kill(signal.SIGTERM)
    d.start()
    assert yaml.safe_load(d.jaula("profile", "show", "small"))["used_by"] == ["p1"]

    d.jaula("stop", "p1")
    d.jaula("delete", "p1", "p2")
    assert d.jaula("profile", "rename", "small", "tiny") == "Profile small renamed to tiny\n"
    d.jaula("profile", "delete", "tiny", "small2")
    assert "tiny" not in d.jaula("profile", "list")
    d.kill(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while (left := d.leaks()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left behind: {left}"
