"""jaula-runtime's verbs on real containers: runc's command line, state, exit codes and errors.

Every test drives the launcher as a client would (podman, containerd) and checks what the host
and the container see. Error cases check the exit code of jaula/errors.py, a message that names
the problem, and that a refused create leaves no state directory and no cgroup behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jaula.errors import ExitCode
from tests.support.bundle import read_config, write_config
from tests.support.containers import (
    PROBE,
    SLEEP,
    assert_nothing_left,
    cgroup_dirs,
    cgroup_paths,
    pid_alive,
    read_cgroup,
    remove_cgroup_dirs,
    status,
    wait_until,
)
from tests.support.runtime import Runtime

pytestmark = pytest.mark.root

Bundle = Callable[..., Path]
# A shell loop that bumps a counter in /tmp/n (the root is writable in the bundles that use it).
COUNTER = ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; usleep 5000; done"]


def created(rt: Runtime, bundle: Path, *args: str) -> str:
    cid = rt.new_id()
    rt("create", "--bundle", bundle, *args, cid, check=True)
    return cid


def started(rt: Runtime, bundle: Path, *args: str) -> str:
    cid = rt.new_id()
    rt("run", "--detach", "--bundle", bundle, *args, cid, check=True)
    return cid


def fails(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The command failed with exit code `code` and a message on stderr holding every word."""
    assert result.returncode == code, f"exit {result.returncode}, wanted {code}\nstderr: {result.stderr}"
    for word in words:
        assert word in result.stderr, f"{word!r} not in the message: {result.stderr!r}"


def in_container_ns(pid: int, ns: str, init_pid: int) -> bool:
    return os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init_pid}/ns/{ns}")


# -- create, start, state, kill, delete ------------------------------------------------------------

def test_create_start_state_delete(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    b = bundle(SLEEP, annotations={"org.example.key": "value"})
    pid_file = tmp_path / "init.pid"
    cid = created(runtime, b, "--pid-file", pid_file)

    st = runtime.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid
    assert st["ociVersion"] == "1.0.2"
    assert st["bundle"] == str(b)
    assert st["annotations"] == {"org.example.key": "value"}
    pid = st["pid"]
    assert pid > 0 and pid_alive(pid)
    assert int(pid_file.read_text()) == pid
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    # created: the init waits, it has not exec'd the process yet
    assert "probe" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")

    runtime("start", cid, check=True)
    st = runtime.state(cid)
    assert st["status"] == "running" and st["pid"] == pid
    wait_until("the container's process to run", lambda: b"probe" in Path(f"/proc/{pid}/cmdline").read_bytes())

    runtime("kill", cid, "KILL", check=True)
    wait_until("the container to stop", lambda: status(runtime, cid) == "stopped")
    assert runtime.state(cid)["pid"] == 0
    dirs = list(cgroup_paths(runtime, cid).values())

    runtime("delete", cid, check=True)
    assert not (runtime.root / cid).exists()
    assert not [d for d in dirs if os.path.exists(d)], "cgroup directories left after delete"
    fails(runtime("state", cid), ExitCode.NOT_FOUND, cid, "does not exist")


def test_delete_a_created_container_kills_its_init(runtime: Runtime, bundle: Bundle) -> None:
    cid = created(runtime, bundle(SLEEP))
    pid = runtime.state(cid)["pid"]
    runtime("delete", cid, check=True)
    assert not pid_alive(pid)
    assert_nothing_left(runtime, cid)


@pytest.mark.parametrize("sig,name", [("TERM", "TERM"), ("SIGUSR1", "USR1"), ("12", "USR2"), ("sighup", "HUP")])
def test_kill_by_name_or_number(runtime: Runtime, bundle: Bundle, sig: str, name: str) -> None:
    script = (f"trap 'echo got-{name} > /tmp/sig; exit 0' {name}; "
              "echo ready > /tmp/ready; while :; do usleep 5000; done")
    b = bundle(["/bin/sh", "-c", script], root={"readonly": False})
    cid = started(runtime, b)
    wait_until("the trap to be set", (b / "rootfs/tmp/ready").exists)
    runtime("kill", cid, sig, check=True)
    wait_until(f"SIG{name} to reach the container", lambda: status(runtime, cid) == "stopped")
    assert (b / "rootfs/tmp/sig").read_text().strip() == f"got-{name}"


def test_kill_default_signal_is_term(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(["/bin/sh", "-c", "trap 'exit 0' TERM; echo > /tmp/ready; while :; do usleep 5000; done"],
               root={"readonly": False})
    cid = started(runtime, b)
    wait_until("the trap to be set", (b / "rootfs/tmp/ready").exists)
    runtime("kill", cid, check=True)
    wait_until("SIGTERM to stop the container", lambda: status(runtime, cid) == "stopped")


def test_kill_all_signals_every_process(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(["/bin/sh", "-c", f"{PROBE} sleep 60 & {PROBE} sleep 60 & wait"])
    cid = started(runtime, b)
    def three() -> list[int] | None:
        pids = json.loads(runtime("ps", "--format", "json", cid, check=True).stdout)
        return pids if len(pids) == 3 else None

    pids = wait_until("three processes", three)
    runtime("kill", "--all", cid, "9", check=True)
    wait_until("every process to die", lambda: not any(pid_alive(p) for p in pids))
    assert status(runtime, cid) == "stopped"


def test_kill_errors(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP))
    fails(runtime("kill", cid, "NOSUCHSIG"), ExitCode.INVALID_CONFIG, "NOSUCHSIG")
    fails(runtime("kill", cid, "99"), ExitCode.INVALID_CONFIG, "99")
    assert status(runtime, cid) == "running"
    runtime("kill", cid, "SIGKILL", check=True)
    wait_until("the container to stop", lambda: status(runtime, cid) == "stopped")
    fails(runtime("kill", cid, "KILL"), ExitCode.BAD_STATE, cid, "not running")
    fails(runtime("kill", "nosuchcontainer", "KILL"), ExitCode.NOT_FOUND, "nosuchcontainer")


def test_delete_running_needs_force(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP))
    pid = runtime.state(cid)["pid"]
    dirs = list(cgroup_paths(runtime, cid).values())
    fails(runtime("delete", cid), ExitCode.BAD_STATE, cid, "running", "--force")
    assert status(runtime, cid) == "running" and pid_alive(pid)

    runtime("delete", "--force", cid, check=True)
    assert not pid_alive(pid)
    assert not (runtime.root / cid).exists()
    assert not [d for d in dirs if os.path.exists(d)]
    # runc: delete --force of a container that does not exist succeeds; without --force it does not
    runtime("delete", "--force", cid, check=True)
    fails(runtime("delete", cid), ExitCode.NOT_FOUND, cid)


def test_delete_force_of_a_paused_container(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP))
    pid = runtime.state(cid)["pid"]
    runtime("pause", cid, check=True)
    runtime("delete", "-f", cid, check=True)
    assert not pid_alive(pid)
    assert_nothing_left(runtime, cid)


def test_start_twice_is_refused(runtime: Runtime, bundle: Bundle) -> None:
    cid = created(runtime, bundle(SLEEP))
    runtime("start", cid, check=True)
    fails(runtime("start", cid), ExitCode.BAD_STATE, cid, "running", "created")
    assert status(runtime, cid) == "running"
    fails(runtime("start", "nosuchcontainer"), ExitCode.NOT_FOUND, "nosuchcontainer")


# -- list and ps -------------------------------------------------------------------------------------

def test_list_quiet_json_and_table(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(SLEEP)
    a = created(runtime, b)
    c = started(runtime, b)

    assert runtime("list", "-q", check=True).stdout.split() == sorted([a, c])
    items = {i["id"]: i for i in json.loads(runtime("list", "--format", "json", check=True).stdout)}
    assert set(items) == {a, c}
    assert items[a]["status"] == "created" and items[c]["status"] == "running"
    assert items[c]["pid"] == runtime.state(c)["pid"]
    assert items[a]["bundle"] == str(b)

    table = runtime("list", check=True).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "PID", "STATUS", "BUNDLE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows[a][2] == "created" and rows[c][2] == "running"
    assert rows[c][1] == str(runtime.state(c)["pid"])


def test_list_of_an_empty_root(runtime: Runtime) -> None:
    assert runtime("list", "-q", check=True).stdout == ""
    assert json.loads(runtime("list", "--format", "json", check=True).stdout) == []
    fails(runtime("list", "--format", "yaml"), ExitCode.USAGE, "yaml")


def test_ps_json_and_table(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    cid = started(runtime, bundle(SLEEP))
    init = runtime.state(cid)["pid"]
    assert json.loads(runtime("ps", "--format", "json", cid, check=True).stdout) == [init]

    pid_file = tmp_path / "exec.pid"
    runtime("exec", "-d", "--pid-file", pid_file, cid, PROBE, "sleep", "60", check=True)
    extra = int(pid_file.read_text())
    assert sorted(json.loads(runtime("ps", "--format", "json", cid, check=True).stdout)) == sorted([init, extra])

    table = runtime("ps", cid, check=True).stdout.splitlines()
    assert "PID" in table[0].split()
    col = table[0].split().index("PID")
    assert sorted(int(line.split()[col]) for line in table[1:]) == sorted([init, extra])
    assert all("probe sleep 60" in line for line in table[1:])
    fails(runtime("ps", "--format", "xml", cid), ExitCode.USAGE, "xml")


# -- run ----------------------------------------------------------------------------------------------

def test_run_foreground_gives_output_and_removes_the_container(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    info = json.loads(runtime.run(bundle(hostname="fg"), container_id=cid, check=True).stdout)
    assert info["pid"] == 1 and info["hostname"] == "fg"
    assert_nothing_left(runtime, cid)


@pytest.mark.parametrize("code", [0, 3, 42])
def test_run_propagates_the_exit_code(runtime: Runtime, bundle: Bundle, code: int) -> None:
    cid = runtime.new_id()
    assert runtime.run(bundle([PROBE, "exit", str(code)]), container_id=cid).returncode == code
    assert_nothing_left(runtime, cid)


def test_run_killed_by_a_signal_exits_128_plus_n(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    proc = subprocess.Popen(runtime.argv("run", "--bundle", bundle(SLEEP), cid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=runtime.env)
    try:
        wait_until("the container to run", lambda: (runtime.root / cid).exists() and status(runtime, cid) == "running")
        runtime("kill", cid, "KILL", check=True)
        assert proc.wait(timeout=10) == 128 + 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_nothing_left(runtime, cid)


def test_run_keep_leaves_a_stopped_container(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    assert runtime.run(bundle([PROBE, "exit", "4"]), "--keep", container_id=cid).returncode == 4
    assert status(runtime, cid) == "stopped"
    runtime("delete", cid, check=True)
    assert_nothing_left(runtime, cid)


def test_run_detach(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    cid = started(runtime, bundle(SLEEP), "--pid-file", pid_file)
    assert time.monotonic() - t0 < 30  # returned while the container sleeps 60 s
    st = runtime.state(cid)
    assert st["status"] == "running"
    assert int(pid_file.read_text()) == st["pid"] and pid_alive(st["pid"])


def with_fds(argv: list[str], files: list[Path]) -> subprocess.CompletedProcess[str]:
    """Run argv with files opened read-only as fds 3, 4, ... (opened by a shell: the test process's
    own fds, pytest's capture among them, are never touched)."""
    opens = " ".join(f'{3 + i}<"${i + 1}"' for i in range(len(files)))
    script = f'exec {opens}; shift {len(files)}; exec "$@"'
    return subprocess.run(["/bin/sh", "-c", script, "sh", *map(str, files), *argv], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30, check=False)


def test_run_and_create_with_preserve_fds(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    extra = tmp_path / "passed"
    extra.write_text("x")
    result = with_fds(runtime.argv("run", "--preserve-fds", "1", "--bundle", bundle(), runtime.new_id()), [extra])
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["fds"].get("3") == str(extra)
    assert set(info["fds"]) == {"0", "1", "2", "3"}
    # without the flag an inherited fd stays out
    result = with_fds(runtime.argv("run", "--bundle", bundle(), runtime.new_id()), [extra])
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["fds"]) == {"0", "1", "2"}


# -- exec -----------------------------------------------------------------------------------------------

def test_exec_env_cwd_user(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP, process={"env": ["PATH=/bin:/usr/bin", "KEEP=1", "FOO=old"]}))
    out = runtime("exec", "--env", "FOO=bar", "-e", "NEW=x", "--cwd", "/tmp", "--user", "1000:1001",
                  cid, PROBE, "info", check=True).stdout
    info = json.loads(out)
    assert (info["uid"], info["gid"], info["euid"], info["egid"]) == (1000, 1001, 1000, 1001)
    assert info["cwd"] == "/tmp"
    assert "FOO=bar" in info["env"] and "FOO=old" not in info["env"]
    assert "NEW=x" in info["env"] and "KEEP=1" in info["env"]
    init = runtime.state(cid)["pid"]
    for ns in ("pid", "mnt", "net", "ipc", "uts"):
        assert info["ns"][ns] == os.readlink(f"/proc/{init}/ns/{ns}"), ns
    assert info["pid"] != 1  # a new process beside the init, in its pid namespace


def test_exec_process_file(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    cid = started(runtime, bundle(SLEEP))
    process = {"terminal": False, "args": [PROBE, "info"], "env": ["A=1", "B=2"], "cwd": "/usr",
               "user": {"uid": 5, "gid": 6, "additionalGids": [7, 8]},
               "capabilities": {"bounding": ["CAP_KILL"]}, "noNewPrivileges": True}
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps(process))
    info = json.loads(runtime("exec", "--process", pf, cid, check=True).stdout)
    assert info["env"] == ["A=1", "B=2"]
    assert info["cwd"] == "/usr"
    assert (info["uid"], info["gid"]) == (5, 6) and sorted(info["groups"]) == [7, 8]
    assert int(info["status"]["CapBnd"], 16) == 1 << 5  # CAP_KILL only
    assert info["status"]["NoNewPrivs"] == "1"

    pf.write_text(json.dumps({"args": [PROBE, "info"], "env": ["BROKEN"], "cwd": "/",
                              "rlimits": [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]}))
    fails(runtime("exec", "--process", pf, cid), ExitCode.INVALID_CONFIG, "env[0]", "RLIMIT_NOPE")


def test_exec_detach_and_pid_file(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    cid = started(runtime, bundle(SLEEP))
    init = runtime.state(cid)["pid"]
    pid_file = tmp_path / "exec.pid"
    t0 = time.monotonic()
    runtime("exec", "--detach", "--pid-file", pid_file, cid, PROBE, "sleep", "60", check=True)
    assert time.monotonic() - t0 < 30
    pid = int(pid_file.read_text())
    assert pid_alive(pid)
    for ns in ("pid", "mnt", "net"):
        assert in_container_ns(pid, ns, init), ns
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3] == [PROBE.encode(), b"sleep", b"60"]
    # it is in the container's cgroup: ps lists it
    assert pid in json.loads(runtime("ps", "--format", "json", cid, check=True).stdout)


def test_exec_preserve_fds(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    cid = started(runtime, bundle(SLEEP))
    files = [tmp_path / "f3", tmp_path / "f4"]
    for f in files:
        f.write_text("x")
    result = with_fds(runtime.argv("exec", "--preserve-fds", "2", cid, PROBE, "fds"), files)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen.get("3") == str(files[0]) and seen.get("4") == str(files[1])
    assert set(seen) == {"0", "1", "2", "3", "4"}
    # without --preserve-fds nothing beyond stdio gets in
    result = with_fds(runtime.argv("exec", cid, PROBE, "fds"), files)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"0", "1", "2"}


@pytest.mark.parametrize("code", [0, 5, 77])
def test_exec_propagates_the_exit_code(runtime: Runtime, bundle: Bundle, code: int) -> None:
    cid = started(runtime, bundle(SLEEP))
    assert runtime("exec", cid, PROBE, "exit", str(code)).returncode == code
    assert status(runtime, cid) == "running"


def test_exec_errors(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP))
    result = runtime("exec", cid, "/no/such/program")
    assert result.returncode != 0 and "/no/such/program" in result.stderr
    fails(runtime("exec", cid), ExitCode.USAGE, "command")
    fails(runtime("exec", "--env", "NOEQUALS", cid, PROBE, "exit", "0"), ExitCode.USAGE, "NOEQUALS")
    fails(runtime("exec", "nosuchcontainer", PROBE, "exit", "0"), ExitCode.NOT_FOUND, "nosuchcontainer")
    runtime("kill", cid, "KILL", check=True)
    wait_until("the container to stop", lambda: status(runtime, cid) == "stopped")
    fails(runtime("exec", cid, PROBE, "exit", "0"), ExitCode.BAD_STATE, cid, "stopped")


# -- pause and resume ---------------------------------------------------------------------------------

def test_pause_freezes_and_resume_thaws(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(COUNTER, root={"readonly": False})
    counter = b / "rootfs/tmp/n"
    cid = started(runtime, b)
    wait_until("the counter to run", lambda: counter.exists() and counter.read_text().strip() not in ("", "1"))

    runtime("pause", cid, check=True)
    assert status(runtime, cid) == "paused"
    assert read_cgroup(runtime, cid, "freezer", "freezer.state") == "FROZEN"
    frozen = counter.read_text()
    time.sleep(0.2)  # the loop bumps it every 5 ms when it runs
    assert counter.read_text() == frozen, "the counter moved while paused"
    fails(runtime("exec", cid, PROBE, "exit", "0"), ExitCode.BAD_STATE, "paused")
    fails(runtime("pause", cid), ExitCode.BAD_STATE, "paused")

    runtime("resume", cid, check=True)
    assert status(runtime, cid) == "running"
    assert read_cgroup(runtime, cid, "freezer", "freezer.state") == "THAWED"
    wait_until("the counter to move again", lambda: counter.read_text() != frozen)
    fails(runtime("resume", cid), ExitCode.BAD_STATE, "not paused")


def test_pause_a_created_container_is_refused(runtime: Runtime, bundle: Bundle) -> None:
    cid = created(runtime, bundle(SLEEP))
    fails(runtime("pause", cid), ExitCode.BAD_STATE, cid, "created")


# -- update -------------------------------------------------------------------------------------------

def test_update_with_flags(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP))
    runtime("update", "--memory", str(96 << 20), "--pids-limit", "77", "--cpu-shares", "333",
            "--cpu-period", "100000", "--cpu-quota", "25000", "--cpuset-cpus", "0", cid, check=True)
    assert read_cgroup(runtime, cid, "memory", "memory.limit_in_bytes") == str(96 << 20)
    assert read_cgroup(runtime, cid, "pids", "pids.max") == "77"
    assert read_cgroup(runtime, cid, "cpu", "cpu.shares") == "333"
    assert read_cgroup(runtime, cid, "cpu", "cpu.cfs_period_us") == "100000"
    assert read_cgroup(runtime, cid, "cpu", "cpu.cfs_quota_us") == "25000"
    assert read_cgroup(runtime, cid, "cpuset", "cpuset.cpus") == "0"
    # the container sees its own limit in its cgroup mount
    out = runtime("exec", cid, "/bin/cat", "/sys/fs/cgroup/pids/pids.max", check=True).stdout
    assert out.strip() == "77"


def test_update_from_a_resources_file(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    cid = started(runtime, bundle(SLEEP))
    res = tmp_path / "resources.json"
    res.write_text(json.dumps({"memory": {"limit": 80 << 20}, "pids": {"limit": 55},
                               "cpu": {"shares": 700}}))
    runtime("update", "-r", res, cid, check=True)
    assert read_cgroup(runtime, cid, "memory", "memory.limit_in_bytes") == str(80 << 20)
    assert read_cgroup(runtime, cid, "pids", "pids.max") == "55"
    assert read_cgroup(runtime, cid, "cpu", "cpu.shares") == "700"
    # a flag beside the file wins over it
    runtime("update", "--resources", res, "--pids-limit", "44", cid, check=True)
    assert read_cgroup(runtime, cid, "pids", "pids.max") == "44"


def test_update_errors(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    cid = started(runtime, bundle(SLEEP))
    fails(runtime("update", cid), ExitCode.USAGE, "--resources")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    fails(runtime("update", "-r", bad, cid), ExitCode.INVALID_CONFIG, "JSON")
    fails(runtime("update", "--pids-limit", "many", cid), ExitCode.USAGE, "many")
    assert read_cgroup(runtime, cid, "pids", "pids.max") == "max"
    fails(runtime("update", "--pids-limit", "5", "nosuchcontainer"), ExitCode.NOT_FOUND, "nosuchcontainer")


# -- events, features, spec ---------------------------------------------------------------------------

def test_events_stats(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP, linux={"resources": {"pids": {"limit": 64},
                                                              "memory": {"limit": 128 << 20}}}))
    out = runtime("events", "--stats", cid, check=True, timeout=10).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    ev = json.loads(lines[0])
    assert ev["type"] == "stats" and ev["id"] == cid
    rows = {r["resource"]: r for r in ev["data"]["rows"]} if "rows" in ev["data"] else {}
    if rows:  # beancounter form: held/maxheld/limit/failcnt per resource
        assert rows["pids"]["held"] >= 1 and rows["pids"]["limit"] == 64
        assert rows["memory"]["limit"] == 128 << 20 and rows["memory"]["held"] > 0
    else:  # runc's form
        assert ev["data"]["pids"]["current"] >= 1 and ev["data"]["pids"]["limit"] == 64


def test_events_of_a_stopped_container(runtime: Runtime, bundle: Bundle) -> None:
    cid = started(runtime, bundle(SLEEP))
    runtime("kill", cid, "KILL", check=True)
    wait_until("the container to stop", lambda: status(runtime, cid) == "stopped")
    result = runtime("events", "--stats", cid, timeout=10)
    assert result.returncode != 0 and "stopped" in result.stderr


def test_features(runtime: Runtime) -> None:
    f = json.loads(runtime("features", check=True).stdout)
    assert f["ociVersionMin"].startswith("1.0.")
    assert f["ociVersionMax"].startswith("1.2.")
    assert set(f["hooks"]) == {"prestart", "createRuntime", "createContainer", "startContainer",
                               "poststart", "poststop"}
    assert {"bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "private", "rslave",
            "shared"} <= set(f["mountOptions"])
    lx = f["linux"]
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} <= set(lx["namespaces"])
    assert "CAP_SYS_ADMIN" in lx["capabilities"] and "CAP_CHOWN" in lx["capabilities"]
    assert lx["cgroup"]["v1"] is True and lx["cgroup"]["systemd"] is False
    assert lx["apparmor"]["enabled"] == os.path.exists("/sys/module/apparmor")
    assert isinstance(lx["seccomp"]["enabled"], bool)


def test_spec_writes_a_default_config(runtime: Runtime, tmp_path: Path) -> None:
    runtime("spec", "--bundle", tmp_path, check=True)
    cfg = read_config(tmp_path)
    assert cfg["ociVersion"].startswith("1.")
    assert cfg["root"]["path"] == "rootfs"
    assert cfg["process"]["args"] and cfg["process"]["terminal"] is True
    assert {ns["type"] for ns in cfg["linux"]["namespaces"]} >= {"pid", "mount", "network", "ipc", "uts"}
    assert "user" not in {ns["type"] for ns in cfg["linux"]["namespaces"]}
    fails(runtime("spec", "--bundle", tmp_path), ExitCode.EXISTS, "config.json", "exists")
    # spec in the current directory, as `runc spec` is usually called
    here = tmp_path / "cwd"
    here.mkdir()
    runtime("spec", check=True, cwd=here)
    assert read_config(here) == cfg


def _run_spec(runtime: Runtime, tmp_path: Path, rootfs_dir: Path, *spec_args: str) -> dict:
    b = tmp_path / "spec-bundle"
    b.mkdir()
    runtime("spec", *spec_args, "--bundle", b, check=True)
    root = tmp_path / "spec-rootfs"
    shutil.copytree(rootfs_dir, root, symlinks=True)
    cfg = read_config(b)
    cfg["root"]["path"] = str(root)  # the fix: our root is elsewhere
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = [PROBE, "info"]
    write_config(b, cfg)
    return json.loads(runtime.run(b, check=True).stdout)


def test_spec_runs(runtime: Runtime, tmp_path: Path, rootfs_dir: Path) -> None:
    info = _run_spec(runtime, tmp_path, rootfs_dir)
    assert info["pid"] == 1 and info["uid"] == 0 and info["hostname"] == "jaula"
    assert [line.split() for line in info["uid_map"]] == [["0", "0", "4294967295"]]  # the host's


def test_spec_rootless_runs(runtime: Runtime, tmp_path: Path, rootfs_dir: Path) -> None:
    runtime("spec", "--rootless", "--bundle", tmp_path, check=True)
    cfg = read_config(tmp_path)
    assert "user" in {ns["type"] for ns in cfg["linux"]["namespaces"]}
    assert "network" not in {ns["type"] for ns in cfg["linux"]["namespaces"]}
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
    assert cfg["linux"]["gidMappings"] == [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
    assert "resources" not in cfg["linux"]

    info = _run_spec(runtime, tmp_path, rootfs_dir, "--rootless")
    assert info["pid"] == 1 and info["uid"] == 0
    assert [line.split() for line in info["uid_map"]] == [["0", str(os.getuid()), "1"]]
    assert [line.split() for line in info["gid_map"]] == [["0", str(os.getgid()), "1"]]
    assert info["ns"]["user"] != os.readlink("/proc/self/ns/user")
    assert info["ns"]["net"] == os.readlink("/proc/self/ns/net")  # rootless: the host's network


# -- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_id", ["a/b", "..", "with space", "x" * 1025, ""])
def test_bad_id_is_refused(runtime: Runtime, bundle: Bundle, bad_id: str) -> None:
    result = runtime("create", "--bundle", bundle(SLEEP), bad_id)
    if bad_id == "":
        assert result.returncode in (ExitCode.USAGE, ExitCode.INVALID_CONFIG), result.stderr
    else:
        fails(result, ExitCode.INVALID_CONFIG, "container id")
    assert runtime.container_ids() == []
    assert runtime("list", "-q", check=True).stdout == ""


def test_duplicate_id_is_refused(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(SLEEP)
    cid = created(runtime, b)
    pid = runtime.state(cid)["pid"]
    fails(runtime("create", "--bundle", b, cid), ExitCode.EXISTS, cid, "already exists")
    fails(runtime("run", "-d", "--bundle", b, cid), ExitCode.EXISTS, cid, "already exists")
    # the first container is untouched
    st = runtime.state(cid)
    assert st["status"] == "created" and st["pid"] == pid and pid_alive(pid)
    assert all(os.path.isdir(d) for d in cgroup_paths(runtime, cid).values())


def test_missing_bundle(runtime: Runtime, tmp_path: Path) -> None:
    cid = runtime.new_id()
    missing = tmp_path / "no-such-bundle"
    fails(runtime("create", "--bundle", missing, cid), ExitCode.INVALID_CONFIG, str(missing / "config.json"))
    assert_nothing_left(runtime, cid)
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(runtime("run", "--bundle", empty, cid), ExitCode.INVALID_CONFIG, "config.json")
    assert_nothing_left(runtime, cid)


@pytest.mark.parametrize("text", ['{"ociVersion": ', "{not json", "[1, 2]"])
def test_config_not_json(runtime: Runtime, bundle: Bundle, text: str) -> None:
    b = bundle()
    (b / "config.json").write_text(text)
    cid = runtime.new_id()
    fails(runtime("create", "--bundle", b, cid), ExitCode.INVALID_CONFIG, "config.json")
    assert "Traceback" not in runtime("create", "--bundle", b, cid).stderr
    assert_nothing_left(runtime, cid)


def test_invalid_config_lists_every_problem(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(
        ociVersion="0.9.0",
        process={"env": ["NOEQUALS"], "rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}],
                 "capabilities": {"bounding": ["CAP_MADE_UP"]}, "oomScoreAdj": 5000},
        mounts=[{"destination": "relative/path", "type": "tmpfs", "source": "tmpfs"}],
        linux={"namespaces": [{"type": "pid"}, {"type": "bogusns"}, {"type": "mount"}],
               "personality": {"domain": "PDP11"}},
        hooks={"prestart": [{"path": "relative-hook"}], "whenever": []},
    )
    cid = runtime.new_id()
    result = runtime("create", "--bundle", b, cid)
    fails(result, ExitCode.INVALID_CONFIG, "ociVersion", "0.9.0", "process.env[0]", "RLIMIT_BOGUS",
          "CAP_MADE_UP", "oomScoreAdj", "mounts[0].destination", "bogusns", "PDP11", "relative-hook",
          "hooks.whenever")
    assert_nothing_left(runtime, cid)


def test_invalid_config_cross_field_problems(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle([], hostname="needs-uts", process={"cwd": "relative"},
               linux={"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "pid"}],
                      "sysctl": {"kernel.panic": "1", "net.ipv4.ip_forward": "1"},
                      "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]})
    cid = runtime.new_id()
    fails(runtime("create", "--bundle", b, cid), ExitCode.INVALID_CONFIG, "process.args", "process.cwd",
          "pid is given 2 times", "hostname", "kernel.panic", "net.ipv4.ip_forward", "uidMappings")
    assert_nothing_left(runtime, cid)


def test_failed_create_leaves_nothing_behind(runtime: Runtime, bundle: Bundle) -> None:
    cid = runtime.new_id()
    result = runtime("create", "--bundle", bundle(["/no/such/program"]), cid)
    assert result.returncode != 0
    assert "/no/such/program" in result.stderr
    assert_nothing_left(runtime, cid)
    # ... with a cgroupsPath of its own too, and a failing mount
    cg = f"/jaula-test-{cid}"
    b = bundle(SLEEP, linux={"cgroupsPath": cg},
               mounts=[{"destination": "/mnt", "type": "bind", "source": "/no/such/source"}])
    try:
        result = runtime("create", "--bundle", b, cid)
        assert result.returncode != 0 and "/no/such/source" in result.stderr, result.stderr
        assert_nothing_left(runtime, cid, cg)
    finally:
        runtime.cleanup()
        remove_cgroup_dirs(cgroup_dirs(cg, cid))


def test_unknown_verb_and_flags(runtime: Runtime, bundle: Bundle) -> None:
    fails(runtime("frobnicate"), ExitCode.USAGE, "frobnicate")
    fails(runtime("create", "--no-such-flag", "x"), ExitCode.USAGE, "--no-such-flag")
    fails(runtime("--no-such-global", "list"), ExitCode.USAGE, "--no-such-global")
    fails(runtime("--systemd-cgroup", "list"), ExitCode.USAGE, "systemd")
    fails(runtime("create", "--bundle"), ExitCode.USAGE, "--bundle")
    fails(runtime("state"), ExitCode.USAGE, "id")
    cid = runtime.new_id()
    fails(runtime("create", "--no-pivot", "--bundle", bundle(SLEEP), cid), ExitCode.INVALID_CONFIG, "pivot")
    assert_nothing_left(runtime, cid)
    assert runtime("--help").returncode == 0 and "create" in runtime("--help").stdout
    assert runtime("--version", check=True).stdout.startswith("jaula-runtime version")


def test_log_json(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    log = tmp_path / "runtime.log"
    runtime.global_args = ["--log", str(log), "--log-format", "json"]
    fails(runtime("state", "nosuchcontainer"), ExitCode.NOT_FOUND, "nosuchcontainer")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("nosuchcontainer" in json.dumps(e) for e in entries)
    runtime.global_args = ["--log-format", "xml"]
    fails(runtime("list"), ExitCode.USAGE, "xml")
    runtime.global_args = []


def test_create_with_console_socket_but_no_terminal(runtime: Runtime, bundle: Bundle, tmp_path: Path) -> None:
    cid = runtime.new_id()
    fails(runtime("create", "--console-socket", tmp_path / "none.sock", "--bundle", bundle(SLEEP), cid),
          ExitCode.INVALID_CONFIG, "terminal")
    assert_nothing_left(runtime, cid)
    fails(runtime("create", "--bundle", bundle(SLEEP, process={"terminal": True}), cid),
          ExitCode.INVALID_CONFIG, "--console-socket")
    assert_nothing_left(runtime, cid)


def test_signal_to_run_is_forwarded(runtime: Runtime, bundle: Bundle) -> None:
    b = bundle(["/bin/sh", "-c", "trap 'exit 9' TERM; echo > /tmp/ready; while :; do usleep 5000; done"],
               root={"readonly": False})
    cid = runtime.new_id()
    proc = subprocess.Popen(runtime.argv("run", "--bundle", b, cid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=runtime.env)
    try:
        wait_until("the trap to be set", (b / "rootfs/tmp/ready").exists)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_nothing_left(runtime, cid)
