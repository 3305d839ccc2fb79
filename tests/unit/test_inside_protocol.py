"""The exec/console stream framing (jaula.frames), the exec request's checks, the waiter's
status line, the console log's cap, and path resolution for file push/pull on a real tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaula import frames
from jaula.daemon import console_log, exec_api, exec_process
from jaula.daemon import instance_files as files
from jaula.errors import BadState, ConfigError, JaulaError, NotFound


def test_frames_round_trip_and_refusals() -> None:
    assert frames.decode(frames.encode(frames.STDOUT, b"abc")) == (frames.STDOUT, b"abc")
    assert frames.decode(frames.encode(frames.STDIN)) == (frames.STDIN, b"")   # EOF of stdin
    ch, payload = frames.decode(frames.resize(80, 24))
    assert ch == frames.CONTROL and frames.parse_control(payload) == {"type": "resize", "width": 80, "height": 24}
    assert frames.parse_control(frames.decode(frames.signal(15))[1]) == {"type": "signal", "signal": 15}
    exit_msg = frames.decode(frames.control("exit", code=7))[1]
    assert frames.parse_control(exit_msg, from_client=False) == {"type": "exit", "code": 7}
    for bad in (b"", "text", b"\x09x"):
        with pytest.raises(frames.FrameError):
            frames.decode(bad)
    with pytest.raises(frames.FrameError, match="not one of resize, signal"):
        frames.parse_control(exit_msg)                      # a client may not say how it ended
    with pytest.raises(frames.FrameError, match="width must be an integer from 1 to 65535"):
        frames.parse_control(b'{"type": "resize", "width": 0, "height": 3}')
    with pytest.raises(frames.FrameError, match="signal must be"):
        frames.parse_control(b'{"type": "signal", "signal": true}')
    with pytest.raises(frames.FrameError, match="not JSON"):
        frames.parse_control(b"{")
    with pytest.raises(frames.FrameError, match="over"):
        frames.parse_control(b" " * (frames.MAX_CONTROL + 1))


def test_exec_request_lists_every_problem() -> None:
    exec_api.check(exec_api.ExecRequest(command=["id"], user=1000, cwd="/tmp"))
    with pytest.raises(ConfigError) as e:
        exec_api.check(exec_api.ExecRequest(command=[], environment={"A=B": "x"}, user=70000, cwd="tmp"))
    text = " | ".join(e.value.problems)
    assert len(e.value.problems) == 4, text
    assert "command" in text and "'A=B'" in text and "user: 70000" in text and "cwd: 'tmp'" in text


def test_waiter_status_line() -> None:
    assert exec_process.parse_status(b'{"exit": 3}\n') == (3, None)
    code, err = exec_process.parse_status(b'{"error": "it is frozen", "type": "BadState"}\n')
    assert code is None and isinstance(err, BadState) and str(err) == "it is frozen"
    _, err = exec_process.parse_status(b"")
    assert isinstance(err, JaulaError) and "unknown" in str(err)


def test_console_log_keeps_its_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for i in range(4000):
            os.write(fd, f"line {i:06d} {'x' * 80}\n".encode())
        size = os.fstat(fd).st_size
        assert console_log.cap(log, keep=64 * 1024) > 0
        st = os.stat(log)
        assert st.st_size == size and st.st_blocks * 512 <= 64 * 1024 + 2 * st.st_blksize   # blocks freed
        os.write(fd, b"after the cap\n")           # the writer's O_APPEND offset is untouched
    finally:
        os.close(fd)
    tail = console_log.tail(log, keep=64 * 1024)
    assert len(tail) == 64 * 1024 and b"\0" not in tail and tail.endswith(b"line 003999 " + b"x" * 80 + b"\nafter the cap\n")
    assert console_log.tail(tmp_path / "none") == b""


@pytest.fixture
def root(tmp_path: Path):
    top = tmp_path / "root"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "hostname").write_text("inst\n")
    fd = os.open(top, os.O_PATH | os.O_DIRECTORY)
    yield top, fd
    os.close(fd)


def test_paths_resolve_inside_the_root(root, tmp_path: Path) -> None:
    top, fd = root
    host = tmp_path / "host-secret"
    host.write_text("host\n")
    os.symlink(str(host), top / "abs")
    os.symlink("../../../../../../../.." + str(host), top / "etc" / "rel")
    for link in ("/abs", "/etc/rel"):
        with pytest.raises(NotFound):                       # resolved inside: no such file there
            files.pull(fd, link, 0)
    if os.geteuid() == 0:
        files.push_file(fd, "/abs", iter([b"new\n"]), uid=0, gid=0, mode=0o600, base=0)
        assert host.read_text() == "host\n" and not (top / "abs").is_symlink()
        assert (top / "abs").read_text() == "new\n"
    meta, got = files.pull(fd, "/etc/hostname", 0)
    assert isinstance(got, int) and os.read(got, 100) == b"inst\n" and meta.type == "file"
    os.close(got)
    meta, entries = files.pull(fd, "/etc/", 0)
    assert meta.type == "directory" and "hostname" in entries
    meta, target = files.pull(fd, "/etc/rel", 0, follow=False)      # the link itself, not followed
    assert meta.type == "symlink" and target == "../../../../../../../.." + str(host)
    meta, got = files.pull(fd, "/etc/hostname", 0, follow=False)   # not a link: as with follow
    assert meta.type == "file" and isinstance(got, int)
    os.close(got)
    with pytest.raises(ConfigError, match="absolute"):
        files.pull(fd, "etc/hostname", 0)
    with pytest.raises(ConfigError, match="not the root"):
        files.push_file(fd, "/", iter([]), uid=0, gid=0, mode=0o644, base=0)


def test_ids_map_to_the_instance_range() -> None:
    assert files.host_id(1000, 200000, "uid") == 201000
    assert files.inside_id(201000, 200000) == 1000
    assert files.inside_id(0, 200000) == files.OVERFLOW_ID      # a host id outside its range
    with pytest.raises(ConfigError, match="0 to 65535"):
        files.host_id(65536, 200000, "uid")
    assert files.parse_mode("0640", 0o644) == 0o640 and files.parse_mode(None, 0o644) == 0o644
    with pytest.raises(ConfigError, match="octal"):
        files.parse_mode("rw", 0o644)
