"""podman from Debian runs containers with jaula-runtime as its OCI runtime (`--runtime`).

The image is a tarball of the busybox test root, imported with `podman import` into a store of
the session's own (tests/support/podman.py, fixture in conftest.py). Each test removes its containers; the session fixture fails
at teardown if containers, runtime state, mounts or cgroups were left behind.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.podman import IMAGE, PTY_COLS, PTY_ROWS, Podman

pytestmark = [pytest.mark.conformance, pytest.mark.root]

_names = itertools.count(1)

# Exits 0 on SIGTERM after saying so: `podman stop` must not need its SIGKILL fallback.
TERM_AWARE = 'echo started; trap "echo got-term; exit 0" TERM; while :; do sleep 0.1; done'
# Ignores SIGTERM: `podman stop -t 1` must fall back to SIGKILL after a second.
TERM_DEAF = 'trap "" TERM; echo started; while :; do sleep 0.1; done'


@pytest.fixture
def detached(podman: Podman) -> Iterator[Callable[..., str]]:
    """Factory: `detached("sh", "-c", "...", options=[...])` runs `podman run -d` and returns the name.

    Every container made is force-removed when the test ends."""
    made: list[str] = []

    def start(*command: str, options: tuple[str, ...] = ()) -> str:
        name = f"jc{os.getpid()}-{next(_names)}"
        made.append(name)
        podman.run("-d", "--name", name, *options, IMAGE, *command, check=True)
        return name

    yield start
    for name in made:
        podman("rm", "--force", "--time", "0", name, timeout=60)


def wait_for_log(podman: Podman, name: str, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = podman("logs", name).stdout
        if text in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.1)


def inspect(podman: Podman, name: str) -> dict:
    return json.loads(podman("inspect", name, check=True).stdout)[0]


# --- run in the foreground ------------------------------------------------------------------

def test_run_echo(podman: Podman) -> None:
    r = podman.run("--rm", IMAGE, "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr + podman.log_tail()


def test_run_exit_code_is_propagated(podman: Podman) -> None:
    r = podman.run("--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3, r.stderr + podman.log_tail()
    assert r.stdout == "out\n"
    assert "err" in r.stderr


def test_run_missing_command_is_127(podman: Podman) -> None:
    """podman maps the runtime's "executable file not found in $PATH" to 127, as with runc."""
    r = podman.run("--rm", IMAGE, "no-such-command")
    assert r.returncode == 127, r.stderr
    assert "executable file not found in $PATH" in r.stderr
    assert "no-such-command" in podman.runtime_log.read_text()  # --log-format json went to --log


def test_run_stdin(podman: Podman) -> None:
    r = podman.run("--rm", "-i", IMAGE, "sh", "-c", "cat; echo done", input="through stdin\n")
    assert (r.returncode, r.stdout) == (0, "through stdin\ndone\n"), r.stderr


def test_run_tty(podman: Podman) -> None:
    """`-t`: the runtime hands conmon a pty master over the console socket; its size reaches it."""
    rc, out = podman.with_tty("run", *podman.run_flags, "--rm", "-t", IMAGE,
                              "sh", "-c", "tty; stty size; ls -l /dev/console; exit 4")
    lines = out.replace("\r", "").splitlines()
    assert rc == 4, out
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), out
    assert lines[1] == f"{PTY_ROWS} {PTY_COLS}", out
    assert lines[2].startswith("c"), out  # /dev/console is the pty (a character device)


def test_run_not_a_tty_without_t(podman: Podman) -> None:
    r = podman.run("--rm", IMAGE, "tty")
    assert (r.returncode, r.stdout) == (1, "not a tty\n")


# --- a detached container: ps, logs, inspect, exec, stop, rm --------------------------------

def test_detached_lifecycle(podman: Podman, detached: Callable[..., str]) -> None:
    name = detached("sh", "-c", TERM_AWARE)
    assert "started" in wait_for_log(podman, name, "started")

    ps = podman("ps", "--filter", f"name={name}", "--format", "{{.Names}} {{.Status}}", check=True).stdout
    assert ps.startswith(f"{name} Up"), ps

    info = inspect(podman, name)
    assert info["State"]["Status"] == "running" and info["State"]["Running"]
    pid = info["State"]["Pid"]
    assert pid > 0 and Path(f"/proc/{pid}").is_dir()
    # podman's view and the runtime's agree
    state = json.loads(podman.runtime("state", info["Id"]).stdout)
    assert (state["status"], state["pid"], state["id"]) == ("running", pid, info["Id"])

    r = podman("exec", name, "echo", "from exec")
    assert (r.returncode, r.stdout) == (0, "from exec\n"), r.stderr + podman.log_tail()
    assert podman("exec", name, "sh", "-c", "exit 5").returncode == 5
    missing = podman("exec", name, "no-such-command")
    assert missing.returncode == 127, missing.stderr
    r = podman("exec", "--user", "1000:1000", "--workdir", "/tmp", "--env", "FOO=bar", name,
               "sh", "-c", 'echo "$(id -u):$(id -g) $(pwd) $FOO"')
    assert r.stdout == "1000:1000 /tmp bar\n", r.stderr
    # exec -d: the process runs on after podman returns
    podman("exec", "--detach", name, "sh", "-c", "echo bg > /tmp/bg", check=True)
    deadline = time.monotonic() + 10
    while podman("exec", name, "cat", "/tmp/bg").stdout != "bg\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert podman("exec", name, "cat", "/tmp/bg").stdout == "bg\n"

    rc, out = podman.with_tty("exec", "-t", name, "sh", "-c", "tty; exit 6")
    assert rc == 6, out
    assert re.match(r"/dev/pts/\d+", out.strip()), out
    # exec -t leaves the container's own console alone
    mounts = podman("exec", name, "cat", "/proc/self/mountinfo").stdout
    assert " /dev/console " not in mounts

    started = time.monotonic()
    podman("stop", "--time", "10", name, check=True)
    assert time.monotonic() - started < 5, "stop waited for its SIGKILL fallback though the process handles TERM"
    assert "got-term" in podman("logs", name).stdout
    info = inspect(podman, name)
    assert (info["State"]["Status"], info["State"]["ExitCode"]) == ("exited", 0)
    assert not (podman.runtime_root / info["Id"]).exists() or \
        json.loads(podman.runtime("state", info["Id"]).stdout or "{}").get("status") == "stopped"

    podman("rm", name, check=True)
    assert name not in podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not (podman.runtime_root / info["Id"]).exists()


def test_stop_falls_back_to_kill(podman: Podman, detached: Callable[..., str]) -> None:
    name = detached("sh", "-c", TERM_DEAF)
    wait_for_log(podman, name, "started")
    started = time.monotonic()
    podman("stop", "--time", "1", name, check=True)
    took = time.monotonic() - started
    assert 1 <= took < 10, took
    info = inspect(podman, name)
    assert (info["State"]["Status"], info["State"]["ExitCode"]) == ("exited", 137)


def test_detached_exit_code_and_start_again(podman: Podman, detached: Callable[..., str]) -> None:
    name = detached("sh", "-c", "echo ran; exit 7")
    assert podman("wait", name, check=True).stdout.strip() == "7"
    assert inspect(podman, name)["State"]["ExitCode"] == 7
    again = podman("start", "--attach", name)
    assert again.returncode == 7 and again.stdout == "ran\n", again.stderr
    assert podman("logs", name).stdout == "ran\nran\n"


def test_pause_unpause_kill_signal(podman: Podman, detached: Callable[..., str]) -> None:
    name = detached("sh", "-c", 'trap "echo usr1" USR1; echo started; while :; do sleep 0.1; done')
    wait_for_log(podman, name, "started")
    podman("pause", name, check=True)
    assert inspect(podman, name)["State"]["Status"] == "paused"
    podman("unpause", name, check=True)
    assert inspect(podman, name)["State"]["Status"] == "running"
    podman("kill", "--signal", "USR1", name, check=True)
    assert "usr1" in wait_for_log(podman, name, "usr1")
    podman("kill", name, check=True)  # SIGKILL by default
    assert podman("wait", name, check=True).stdout.strip() == "137"


# --- resources and other options ------------------------------------------------------------

def _cgroup_file(pid: int, controller: str, v1_name: str, v2_name: str) -> Path:
    """The host path of a pid's cgroup file for controller (v1 hierarchy, else the v2 one)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup", controller, path.lstrip("/"), v1_name)
    v2 = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
    return Path("/sys/fs/cgroup", v2.lstrip("/"), v2_name)


def test_memory_and_pids_limits(podman: Podman, detached: Callable[..., str]) -> None:
    inside = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; "
              "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max")
    r = podman.run("--rm", "--memory", "64m", "--pids-limit", "50", IMAGE, "sh", "-c", inside)
    assert (r.returncode, r.stdout.split()) == (0, [str(64 << 20), "50"]), r.stderr + podman.log_tail()

    name = detached("sleep", "600", options=("--memory", "32m", "--pids-limit", "20"))
    pid = inspect(podman, name)["State"]["Pid"]
    memory = _cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max")
    pids = _cgroup_file(pid, "pids", "pids.max", "pids.max")
    assert podman.cgroup_parent in str(memory)  # podman's --cgroup-parent reached cgroupsPath
    assert memory.read_text().strip() == str(32 << 20)
    assert pids.read_text().strip() == "20"
    podman("rm", "--force", "--time", "0", name, check=True)
    assert not memory.parent.exists()  # delete removed the container's cgroup


def test_pids_limit_enforced(podman: Podman) -> None:
    """With 5 pids the shell cannot start 8 children: fork fails with EAGAIN and the shell exits."""
    r = podman.run("--rm", "--pids-limit", "5", IMAGE, "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; echo never")
    assert r.returncode != 0 and "never" not in r.stdout, (r.stdout, r.stderr)
    assert "can't fork: Resource temporarily unavailable" in r.stderr


def test_read_only_root_and_volume(podman: Podman, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("from host\n")
    r = podman.run("--rm", "--read-only", "-v", f"{tmp_path}:/vol:ro", IMAGE, "sh", "-c",
                   "cat /vol/f; touch /x 2>/dev/null || echo ro-root; touch /vol/y 2>/dev/null || echo ro-vol; "
                   "touch /tmp/z && echo tmp-rw")
    assert r.stdout.split("\n") == ["from host", "ro-root", "ro-vol", "tmp-rw", ""], r.stderr
    assert not (tmp_path / "y").exists()


def test_user_namespace(podman: Podman) -> None:
    r = podman.run("--rm", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", IMAGE,
                   "sh", "-c", "cat /proc/self/uid_map; id -u")
    assert r.returncode == 0, r.stderr + podman.log_tail()
    assert r.stdout.split() == ["0", "100000", "65536", "0"]


def test_init_and_hostname(podman: Podman) -> None:
    """--init bind-mounts catatonit as pid 1; --hostname reaches the UTS namespace."""
    r = podman.run("--rm", "--init", "--hostname", "jaula-pm", IMAGE, "sh", "-c", "hostname; cat /proc/1/cmdline")
    assert r.returncode == 0, r.stderr
    hostname, cmdline = r.stdout.split("\n", 1)
    assert hostname == "jaula-pm"
    assert cmdline.startswith("/run/podman-init\0"), cmdline


def test_capabilities(podman: Podman) -> None:
    def cap_eff(*opts: str) -> int:
        out = podman.run("--rm", *opts, IMAGE, "grep", "CapEff", "/proc/self/status", check=True).stdout
        return int(out.split()[1], 16)

    default = cap_eff()
    assert not default & (1 << 12)  # CAP_NET_ADMIN is not in podman's default set
    assert default & (1 << 0)  # CAP_CHOWN is
    assert cap_eff("--cap-add", "NET_ADMIN") == default | (1 << 12)
    assert cap_eff("--cap-drop", "CHOWN") == default & ~1
