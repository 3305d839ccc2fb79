"""Inside an instance through a real jaulad and the real `jaula` CLI (issue 4, item 3): exec with
its exit code, stdin piped through and stdout/stderr apart; a pty (`tty` names /dev/pts/N, a
resize of the caller's terminal is seen by `stty size`); a login shell; file push and pull with
owners and modes as seen inside, folders both ways, a hostile symlink that leaves the host's file
untouched; the console and the output log; clear errors for a missing instance, path or a
stopped instance. One daemon and one busybox system instance serve the module."""

from __future__ import annotations

import fcntl
import os
import re
import select
import socket
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jaula.errors import JaulaError
from tests.e2e.test_jaulad import JAULA, Daemon
from tests.integration.pool_checks import mounts_under
from tests.support.containers import pid_alive

pytestmark = pytest.mark.root
NAME = "in1"


@pytest.fixture(scope="module")
def d() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    top = Path(tempfile.mkdtemp(prefix="jaulad-inside-"))
    top.chmod(0o711)
    dm = Daemon(top)
    with socket.socket() as probe:   # a free port for the TCP API (--listen, from the environment)
        probe.bind(("127.0.0.1", 0))
        dm.port = probe.getsockname()[1]  # type: ignore[attr-defined]
    os.environ["JAULA_LISTEN"] = f"127.0.0.1:{dm.port}"  # type: ignore[attr-defined]
    try:
        try:
            dm.start()
        finally:
            del os.environ["JAULA_LISTEN"]
        dm.jaula("launch", "busybox", NAME)
        dm.note(NAME)
        yield dm
        dm.jaula("delete", "--force", NAME)
        assert dm.leaks() == []
        assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("jaula-exec-")]
    finally:
        if dm.proc is not None and dm.proc.poll() is None:
            dm.proc.terminate()
            dm.proc.wait(20)
        for pid in dm.pids:
            if pid_alive(pid):
                os.kill(pid, 9)
        from tests.support.lxcfs import end_left_lxcfs
        end_left_lxcfs(dm.root)  # the lxcfs a killed jaulad leaves for its instances
        dm.log.close()
        from tests.support.network import remove_daemon_network
        remove_daemon_network(dm.root)  # its default network's bridge and nft table, if a failure left them
        if not mounts_under(str(top)):
            subprocess.run(["rm", "-rf", str(top)], check=False)


def run(d: Daemon, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*JAULA, "--socket", str(d.socket), *args], input=input, capture_output=True,
                          timeout=60, check=False)


def test_exec_exit_code_stdin_and_separate_streams(d: Daemon) -> None:
    r = run(d, "exec", NAME, "--", "sh", "-c", "tr a-z A-Z; echo to-err >&2; exit 7", input=b"piped in\n")
    assert r.returncode == 7, r
    assert r.stdout == b"PIPED IN\n"
    assert r.stderr == b"to-err\n"
    # stdin's end reaches the command: wc ends and counts what came
    r = run(d, "exec", NAME, "--", "wc", "-c", input=b"x" * 100000)
    assert r.returncode == 0 and r.stdout.split() == [b"100000"], r


def test_exec_output_is_binary_safe_and_whole(d: Daemon, tmp_path: Path) -> None:
    """Megabytes of binary output come out byte for byte (the same bytes a pull gives)."""
    r = run(d, "exec", NAME, "--", "cat", "/bin/busybox")
    assert r.returncode == 0 and len(r.stdout) > 1 << 20
    assert run(d, "file", "pull", f"{NAME}/bin/busybox", str(tmp_path / "bb")).returncode == 0
    assert (tmp_path / "bb").read_bytes() == r.stdout


def test_exec_environment_user_and_cwd(d: Daemon) -> None:
    r = run(d, "exec", NAME, "--env", "FOO=bar baz", "--user", "1000", "--group", "1001", "--cwd", "/tmp",
            "--", "sh", "-c", "echo \"$FOO\"; id -u; id -g; pwd")
    assert r.returncode == 0, r
    assert r.stdout.decode().split("\n")[:4] == ["bar baz", "1000", "1001", "/tmp"]


def _size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, want: bytes, seen: bytearray, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while want not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{want!r} never came; got {bytes(seen)!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            seen += chunk
    assert want in seen, bytes(seen)
    return bytes(seen)


def test_exec_pty_tty_and_resize(d: Daemon) -> None:
    """The CLI on a terminal of ours (its controlling tty): the command gets a pty inside, of
    the terminal's size, and a resize of our terminal reaches it."""
    master, slave = os.openpty()
    _size(slave, 33, 101)
    # setsid --ctty: a session of its own whose controlling terminal is ours (SIGWINCH reaches it)
    proc = subprocess.Popen(["setsid", "--ctty", "--wait", *JAULA, "--socket", str(d.socket), "exec", NAME, "--",
                             "sh", "-c", "tty; stty size; echo \"term=$TERM\"; echo ready; read x; stty size; exit 5"],
                            stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "TERM": "vt220"})
    os.close(slave)
    seen = bytearray()
    try:
        out = _read_until(master, b"ready", seen)
        assert b"/dev/pts/" in out and b"33 101" in out and b"term=vt220" in out, out
        _size(master, 40, 120)                 # SIGWINCH to the CLI: it sends the new size
        time.sleep(0.5)                        # (ordering only: the resize frame goes before the line)
        os.write(master, b"go\r")
        out = _read_until(master, b"40 120", seen)
        assert proc.wait(30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_exec_tty_forced_without_a_terminal(d: Daemon) -> None:
    r = run(d, "exec", "-t", NAME, "--", "sh", "-c", "tty; echo out; echo err >&2")
    assert r.returncode == 0, r
    lines = r.stdout.decode().replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/") and "out" in lines and "err" in lines  # the pty merges them
    r = run(d, "exec", "-T", NAME, "--", "tty")
    assert r.returncode == 1 and b"not a tty" in r.stdout


def test_the_command_has_the_init_s_confinement(d: Daemon) -> None:
    """Every namespace, the cgroup, the bounding set and the seccomp filter of the init."""
    script = ("for n in user mnt pid net uts ipc cgroup; do "
              "[ \"$(readlink /proc/self/ns/$n)\" = \"$(readlink /proc/1/ns/$n)\" ] && echo same-$n; done; "
              "[ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo same-cgroups; "
              "grep -E '^(Seccomp|CapBnd):' /proc/self/status; grep '^CapBnd:' /proc/1/status")
    for tty in ("-T", "-t"):
        r = run(d, "exec", tty, NAME, "--", "sh", "-c", script)
        out = r.stdout.decode().replace("\r", "").split("\n")
        assert r.returncode == 0, r
        assert [f"same-{n}" for n in ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup", "cgroups")] == \
            [x for x in out if x.startswith("same-")], out
        assert "Seccomp:\t2" in out, out                      # filtered, as the init
        bounding = [x for x in out if x.startswith("CapBnd:")]
        assert len(bounding) == 2 and bounding[0] == bounding[1], out


def test_no_host_fd_reaches_the_command(d: Daemon) -> None:
    for tty in ("-T", "-t"):
        r = run(d, "exec", tty, NAME, "--", "ls", "/proc/self/fd")
        assert r.returncode == 0, r
        assert sorted(r.stdout.decode().split()) == ["0", "1", "2", "3"], r.stdout   # 3: ls's own listing


def test_a_long_command_blocks_nothing_and_takes_signals(d: Daemon) -> None:
    """While one command runs, others run and the instance answers; SIGTERM of `jaula exec`
    reaches the command (exit 128+15)."""
    long = subprocess.Popen([*JAULA, "--socket", str(d.socket), "exec", NAME, "--", "sh", "-c",
                             "echo started; exec sleep 1000"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        _read_until(long.stdout.fileno(), b"started", bytearray())  # type: ignore[union-attr]
        r = run(d, "exec", NAME, "--", "sh", "-c", "ps; echo other")
        assert r.returncode == 0 and b"sleep 1000" in r.stdout and b"other" in r.stdout, r
        assert run(d, "list").returncode == 0
        long.terminate()
        assert long.wait(30) == 143
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
    assert b"sleep 1000" not in run(d, "exec", NAME, "--", "ps").stdout


def test_a_client_that_goes_away_hangs_the_command_up(d: Daemon) -> None:
    """kill -9 of `jaula exec`: jaulad sees the stream close and sends the command SIGHUP, as a
    closed terminal would; its operation ends with 128+1."""
    from jaula.client import Client

    with Client(str(d.socket)) as c:
        before = {o["id"] for o in c.operations()}
        cli = subprocess.Popen([*JAULA, "--socket", str(d.socket), "exec", NAME, "--", "sh", "-c",
                                "echo started; exec sleep 999"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            _read_until(cli.stdout.fileno(), b"started", bytearray())  # type: ignore[union-attr]
        finally:
            cli.kill()
            cli.wait()
        op = next(o for o in c.operations() if o["id"] not in before and o["class"] == "websocket")
        assert c.wait_operation(op["id"], timeout=30)["metadata"] == {"return": 129}
    assert b"sleep 999" not in run(d, "exec", NAME, "--", "ps").stdout


def test_exec_and_console_over_tcp_with_the_token(d: Daemon, tmp_path: Path) -> None:
    """`jaula --remote`: the streams go over the TCP API too, with the bearer token; without it
    (or with a wrong one) jaulad refuses before anything runs."""
    url = f"http://127.0.0.1:{d.port}"  # type: ignore[attr-defined]
    token = tmp_path / "token"
    token.write_text((d.root / "api.token").read_text())
    r = run(d, "--remote", url, "--token-file", str(token), "exec", NAME, "--", "sh", "-c",
            "cat; echo err >&2; exit 4", input=b"over tcp\n")
    assert (r.returncode, r.stdout, r.stderr) == (4, b"over tcp\n", b"err\n"), r
    assert run(d, "--remote", url, "--token-file", str(token), "logs", NAME).returncode == 0
    from jaula.client.stream import Stream

    with pytest.raises(JaulaError, match="rejected WebSocket connection: HTTP 403"):
        Stream(url, f"/1.0/instances/{NAME}/console", headers={"Authorization": "Bearer wrong"})
    Stream(url, f"/1.0/instances/{NAME}/console", headers={"Authorization": f"Bearer {token.read_text().strip()}"}).close()
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    r = run(d, "--remote", url, "--token-file", str(wrong), "exec", NAME, "--", "touch", "/tmp/should-not")
    assert r.returncode != 0
    assert _inside(d, "[ -e /tmp/should-not ] && echo yes || echo no") == "no\n"


def test_shell_is_a_login_shell_as_root(d: Daemon) -> None:
    r = run(d, "shell", NAME, input=b"echo \"shell:$0:$(id -u):$HOME\"; exit 3\n")
    assert r.returncode == 3, r
    assert b"shell:-" in r.stdout and b":0:/root" in r.stdout, r.stdout


def _inside(d: Daemon, script: str) -> str:
    r = run(d, "exec", NAME, "--", "sh", "-c", script)
    assert r.returncode == 0, r
    return r.stdout.decode()


def test_file_push_pull_round_trip(d: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "conf"
    src.write_bytes(b"line one\n\x00\xffbinary\n")
    assert run(d, "file", "push", "--uid", "1000", "--gid", "1001", "--mode", "0640", str(src),
               f"{NAME}/etc/app.conf").returncode == 0
    assert _inside(d, "stat -c '%u %g %a' /etc/app.conf; md5sum < /etc/app.conf").split("\n")[0] == "1000 1001 640"
    back = tmp_path / "back"
    r = run(d, "file", "pull", f"{NAME}/etc/app.conf", str(back))
    assert r.returncode == 0, r
    assert back.read_bytes() == src.read_bytes() and (back.stat().st_mode & 0o777) == 0o640
    # into the instance's own tmpfs (mounted in its user namespace) too, with the local mode
    src.chmod(0o700)
    assert run(d, "file", "push", str(src), f"{NAME}/tmp/").returncode == 0
    assert _inside(d, "stat -c '%u %g %a' /tmp/conf").strip() == "0 0 700"

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_text("A\n")
    (tree / "sub" / "b").write_text("B\n")
    (tree / "sub").chmod(0o750)
    assert run(d, "file", "push", str(tree), f"{NAME}/root/").returncode == 2   # a folder needs -r
    assert run(d, "file", "push", "-r", "--uid", "33", "--gid", "33", str(tree), f"{NAME}/root/").returncode == 0
    assert _inside(d, "cat /root/tree/a /root/tree/sub/b; stat -c '%u %g %a' /root/tree/sub") == "A\nB\n33 33 750\n"
    _inside(d, "ln -s /root/tree /root/tree/sub/loop")          # a link to a folder above it
    out = tmp_path / "out"
    r = run(d, "file", "pull", "-r", f"{NAME}/root/tree", str(out))
    assert r.returncode == 0 and b"Skipped in1/root/tree/sub/loop: a symlink to /root/tree" in r.stderr, r
    assert (out / "a").read_text() == "A\n" and (out / "sub" / "b").read_text() == "B\n"
    assert not os.path.lexists(out / "sub" / "loop")


def test_symlinks_inside_cannot_reach_the_host(d: Daemon, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    canary.write_text("host file\n")
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    hops = "../" * 12
    _inside(d, f"ln -sf {canary} /tmp/abs; ln -sf {hops}{str(canary).lstrip('/')} /tmp/rel; "
               f"ln -sfn {host_dir} /tmp/dir")
    evil = tmp_path / "evil"
    evil.write_text("evil\n")
    for link in ("/tmp/abs", "/tmp/rel"):
        assert run(d, "file", "push", str(evil), f"{NAME}{link}").returncode == 0
        assert canary.read_text() == "host file\n"
        assert _inside(d, f"[ -L {link} ] && echo link || cat {link}") == "evil\n"  # the link was replaced
    r = run(d, "file", "push", str(evil), f"{NAME}/tmp/dir/planted")
    assert r.returncode == 4 and b"not found inside the instance" in r.stderr, r   # /tmp/dir -> nothing inside
    assert os.listdir(host_dir) == []
    _inside(d, f"ln -sf {canary} /tmp/pull-me")
    r = run(d, "file", "pull", f"{NAME}/tmp/pull-me", str(tmp_path / "got"))
    assert r.returncode == 4 and not (tmp_path / "got").exists(), r


def test_console_and_logs(d: Daemon, tmp_path: Path) -> None:
    ticker = tmp_path / "S50tick"
    ticker.write_text("#!/bin/sh\n[ \"$1\" = start ] || exit 0\n"
                      "i=0; while [ $i -lt 3000 ]; do echo \"burst $i $(printf '%080d' 0)\"; i=$((i+1)); done\n"
                      "(i=0; while :; do echo \"tick $i\"; i=$((i+1)); sleep 0.3; done) &\n")
    assert run(d, "file", "push", "--mode", "0755", str(ticker), f"{NAME}/etc/init.d/S50tick").returncode == 0
    d.jaula("restart", "--force", NAME)
    d.note(NAME)
    proc = subprocess.Popen([*JAULA, "--socket", str(d.socket), "console", NAME], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        _read_until(fd, b"tick", bytearray())
        proc.stdin.write(b"\x01q")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # on a terminal: lines stay lines (the console's pty ends them with \r\n), ctrl-a q detaches
    master, slave = os.openpty()
    term = subprocess.Popen(["setsid", "--ctty", "--wait", *JAULA, "--socket", str(d.socket), "console", NAME],
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        seen = _read_until(master, b"tick", bytearray())
        assert b"ctrl-a q detaches" in seen
        seen = _read_until(master, b"\n", bytearray(seen[seen.index(b"tick"):]))
        assert seen.split(b"\n")[0].endswith(b"\r"), seen   # a console line ends as a line
        os.write(master, b"\x01q")
        assert term.wait(20) == 0
    finally:
        if term.poll() is None:
            term.kill()
            term.wait()
        os.close(master)
    assert b"tick 1" in run(d, "console", NAME, "--show-log").stdout
    logs = run(d, "logs", NAME).stdout
    assert b"tick 1" in logs and b"burst 2999" in logs and b"burst 0 " not in logs   # ~280 KiB written
    assert len(logs) <= 128 * 1024 and not logs.startswith(b"\0")
    st = os.stat(d.root / "instances" / "logs" / NAME / "console.log")
    assert st.st_size > 256 * 1024 and st.st_blocks * 512 <= 128 * 1024 + 4 * st.st_blksize  # the head freed
    # logs -f: the kept output first, then what comes
    follow = subprocess.Popen([*JAULA, "--socket", str(d.socket), "logs", "-f", NAME], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        seen = _read_until(follow.stdout.fileno(), b"burst 2999", bytearray())  # type: ignore[union-attr]
        last = max(int(n) for n in re.findall(rb"tick (\d+)\r?\n", seen))  # a system instance's console: a pty's \r\n
        _read_until(follow.stdout.fileno(), f"tick {last + 2}\r\n".encode(), seen)  # type: ignore[union-attr]
    finally:
        follow.terminate()
        follow.wait(20)
    _inside(d, "rm /etc/init.d/S50tick")


def test_errors_are_clear(d: Daemon, tmp_path: Path) -> None:
    r = run(d, "exec", "nosuch", "--", "true")
    assert r.returncode == 4 and b"Instance 'nosuch' not found" in r.stderr, r
    r = run(d, "file", "pull", f"{NAME}/no/such/file", str(tmp_path / "x"))
    assert r.returncode == 4 and b"'/no/such/file' not found inside the instance" in r.stderr, r
    r = run(d, "exec", NAME, "--", "/no/such/program")
    assert r.returncode == 127 and b"/no/such/program" in r.stderr, r   # as a shell says it
    r = run(d, "exec", NAME, "--", "/etc/hostname")
    assert r.returncode == 126 and b"permission denied" in r.stderr, r
    r = run(d, "file", "pull", f"{NAME}/proc/1/environ", str(tmp_path / "x"))
    assert r.returncode == 3 and b"/proc or /sys" in r.stderr, r
    r = run(d, "logs", "nosuch")
    assert r.returncode == 4, r
    d.jaula("create", "busybox", "in2")
    try:
        r = run(d, "exec", "in2", "--", "true")
        assert r.returncode == 6 and b"is stopped" in r.stderr, r
    finally:
        d.jaula("delete", "in2")


def test_files_of_a_stopped_instance(d: Daemon, tmp_path: Path) -> None:
    """Its volume is mounted for the transfer (idmapped as at start) and unmounted after."""
    d.jaula("create", "busybox", "in3")
    try:
        src = tmp_path / "motd"
        src.write_bytes(b"pushed while stopped\n" * 1000)
        assert run(d, "file", "push", "--uid", "7", "--gid", "8", "--mode", "0604", str(src),
                   "in3/etc/motd").returncode == 0
        assert run(d, "file", "pull", "in3/etc/motd", str(tmp_path / "back")).returncode == 0
        assert (tmp_path / "back").read_bytes() == src.read_bytes()
        assert run(d, "file", "pull", "in3/etc/hostname", str(tmp_path / "hn")).returncode == 0
        assert (tmp_path / "hn").read_text() == "in3\n"
        r = run(d, "file", "pull", "in3/no/such", str(tmp_path / "x"))
        assert r.returncode == 4 and b"not found inside the instance" in r.stderr, r
        assert not any("in3" in m for m in mounts_under(str(d.top)))   # mounted for each transfer only
        d.jaula("start", "in3")
        d.note("in3")
        r = run(d, "exec", "in3", "--", "stat", "-c", "%u %g %a %s", "/etc/motd")
        assert r.stdout.decode().split() == ["7", "8", "604", str(len(src.read_bytes()))], r
    finally:
        d.jaula("delete", "--force", "in3")
    assert not any("in3" in m for m in mounts_under(str(d.top)))
