"""Attacks that need more than one call of the escape helper: reboot(2), TIOCSTI on a terminal
jaula gave and on a host's terminal, the exec helper's /proc/PID/exe while `exec` enters the
instance (CVE-2019-5736's class), symlinks planted on the instance's mount targets before its
next start, and an exec's cwd flipped between a folder and a symlink to the host's tree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jaula.errors import JaulaError
from tests.integration.pool_checks import mounts_under
from tests.security.lab import Lab
from tests.support.containers import wait_until

pytestmark = [pytest.mark.root, pytest.mark.attempt]


def _lines(out: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in out.replace("\r", "").splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            found[parts[0]] = (parts[1], parts[2])
    return found


def test_reboot_does_not_reach_the_host(lab: Lab) -> None:
    """reboot(2) from the instance: the helper refuses to try unless its pid namespace is not the
    host's, where the kernel only ends the namespace's init (and the caller): the instance stops,
    the host keeps running (its boot_id)."""
    inst = lab.new()
    init = lab.start(inst)
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text()
    host_pidns = os.stat("/proc/self/ns/pid").st_ino
    assert os.stat(f"/proc/{init}/ns/pid").st_ino != host_pidns
    code, out = lab.run(inst, ["/usr/bin/escape", "reboot", str(host_pidns)])
    assert "skip" not in out, out
    assert "reboot_restart" not in out, f"reboot returned (it ends the caller): {out}"
    assert code in (0, 128 + 9), (code, out)  # its own exit(0), or killed with the namespace's init
    wait_until("the instance's init to end", lambda: lab.driver.state(inst).status == "stopped", timeout=20)
    assert Path("/proc/sys/kernel/random/boot_id").read_text() == boot_id
    lab.remove(inst)


def test_tiocsti_on_an_exec_terminal_is_refused(lab: Lab) -> None:
    inst = lab.new()
    lab.start(inst)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:  # the results go to a file inside: only its stdin is the terminal under attack
        code, shown = lab.run(inst, ["/bin/sh", "-c", "tty > /tmp/t.out; /usr/bin/escape tiocsti >> /tmp/t.out"],
                              tty=True, stdin=null)
    finally:
        os.close(null)
    out = lab.sh(inst, "cat /tmp/t.out")[1]
    assert code == 0 and out.startswith("/dev/pts/"), (out, shown)  # the control: it has a terminal
    assert _lines(out)["tiocsti_own_terminal"] == ("blocked", "EPERM"), out
    lab.remove(inst)


def test_tiocsti_into_a_host_terminal_is_refused(lab: Lab) -> None:
    """`exec` with a terminal of the host as its stdin (a pty the host opened, as a shell's would
    be): TIOCSTI on it would push input the host's side reads. Refused by the seccomp profile; the
    host reads nothing from the terminal's input queue."""
    inst = lab.new()
    lab.start(inst)
    master, slave = os.openpty()
    try:
        code, out = lab.run(inst, ["/usr/bin/escape", "tiocsti"], stdin=slave)
        assert code == 0 and _lines(out)["tiocsti_own_terminal"] == ("blocked", "EPERM"), out
        os.set_blocking(slave, False)
        try:
            pushed = os.read(slave, 64)
        except BlockingIOError:
            pushed = b""
        assert pushed == b"", f"input pushed into the host's terminal: {pushed!r}"
    finally:
        os.close(master)
        os.close(slave)
        lab.remove(inst)


def test_exec_cwd_symlink_race_stays_inside(lab: Lab) -> None:
    """Root inside flips /tmp/race between a folder and a symlink to a host folder (holding a
    marker) as fast as it can while the host runs `exec` with cwd /tmp/race: the exec's cwd is
    resolved inside the instance's root, never on the host's tree (runc's CVE-2024-21626 class)."""
    inst = lab.new()
    lab.start(inst)
    target = lab.top / "race-target"
    target.mkdir()
    (target / "host-marker").write_text("the host's")
    flip = (f"(while [ ! -e /tmp/race-stop ]; do rm -rf /tmp/race; mkdir /tmp/race; rm -rf /tmp/race; "
            f"ln -s {target} /tmp/race; done > /dev/null 2>&1 &)")
    assert lab.sh(inst, flip)[0] == 0
    seen: dict[str, int] = {}
    try:
        for _ in range(60):
            try:
                code, out = lab.run(inst, ["/bin/sh", "-c", "test -e host-marker && echo ESCAPE || echo inside"],
                                    cwd="/tmp/race")
                key = out.strip() if code == 0 else f"exit {code}"
            except JaulaError as e:
                key = type(e).__name__
            seen[key] = seen.get(key, 0) + 1
    finally:
        lab.sh(inst, "touch /tmp/race-stop")
    assert "ESCAPE" not in seen, f"an exec's cwd was the host's folder: {seen}"
    assert seen.get("inside", 0) > 0, f"no exec ran in /tmp/race (the control): {seen}"
    assert mounts_under(str(target)) == []
    print(f"exec cwd race: {seen}")
    lab.remove(inst)


def test_exec_helper_is_unreachable_from_inside(lab: Lab) -> None:
    """While `exec` runs the host's Python in the instance's namespaces (its program lookup made
    slow by a PATH of 40000 missing folders), root inside scans /proc and, for every other pid,
    opens /proc/PID/exe for reading and writing and reads environ, maps and mem (`probe prowl`).
    Everything of the helper must be refused; the control: the exec'd program's environ is read."""
    inst = lab.new()
    lab.start(inst)
    assert lab.sh(inst, "mkdir -p /tmp/prowl; (probe prowl /tmp/prowl python > /dev/null 2>&1 &)")[0] == 0
    wait_until("the prowler to start", lambda: lab.sh(inst, "test -e /tmp/prowl/ready")[0] == 0, timeout=10)
    slow_path = ":".join(["/x"] * 40000) + ":/usr/bin"
    for _ in range(3):
        assert lab.run(inst, ["probe", "sleep", "0.05"], env={"PATH": slow_path})[0] == 0
    lab.sh(inst, "touch /tmp/prowl/stop")
    text = wait_until("the prowler's report", lambda: (r := lab.sh(inst, "cat /tmp/prowl/prowl.json"))[0] == 0 and r[1])
    report = json.loads(text)
    own = {"init", "sh", "sleep", "probe", "ps", "cat", "touch", "test", "busybox", "getty", "syslogd", "klogd", "crond"}
    # the exec trampoline (a sealed memfd, not the host's interpreter) may be read, never written
    trampolines = [e for e in report if e["name"].startswith("memfd:")]
    assert all("ok" not in e["exe_w"] for e in trampolines), trampolines
    helpers = [e for e in report if e["name"] not in own and e not in trampolines]
    assert helpers, f"the prowler never saw an exec helper: {report}"
    for e in helpers:
        for kind in ("exe", "exe_w", "environ", "maps", "mem"):
            assert set(e[kind]) <= {"EACCES", "EPERM", "ENOENT", "ESRCH"}, (kind, e)
    leaks = [e for e in report if any("LEAK" in e[k] for k in ("exe", "exe_w", "environ", "maps"))]
    assert not leaks, leaks
    assert any("ok" in e["environ"] for e in report if e["name"] == "probe"), f"control failed: {report}"
    lab.remove(inst)


def test_symlinks_on_mount_targets_stay_inside(lab: Lab) -> None:
    """Root inside replaces its /proc, /sys, /dev, /etc/hostname and /sys/fs/cgroup's parent by
    symlinks to a host folder, then the instance is started again: every mount and every write
    of the start must land inside the instance's tree (resolved in its root), never in the host's
    folder; a start that refuses is fine too, as long as it leaves nothing behind."""
    inst = lab.new()
    lab.start(inst)
    target = lab.top / "host-target"
    target.mkdir()
    script = (f"rm -f /etc/hostname && ln -s {target}/hostname /etc/hostname; "
              f"mkdir -p /tmp/keep; ln -s {target}/sys /tmp/keep/sys; "
              f"for d in proc sys dev; do mv /$d /old-$d 2>/dev/null || true; done; "
              f"ln -s {target} /proc; ln -s {target}/sys /sys; ln -s {target}/dev /dev; echo planted")
    out = lab.sh(inst, script)[1]
    assert "planted" in out, out
    lab.driver.stop(inst, force=True)
    try:
        lab.start(inst)
        started = True
    except (JaulaError, AssertionError):
        started = False
    assert mounts_under(str(target)) == [], "a mount of the start landed in the host's folder"
    assert sorted(p.name for p in target.iterdir()) == [], "the start wrote into the host's folder"
    if started:
        assert lab.sh(inst, "cat /proc/1/comm")[1].strip() == "init"
    print(f"symlinked mount targets: the start {'went on inside the tree' if started else 'refused'}")
    lab.remove(inst)
    assert mounts_under(str(target)) == []
