"""Small file-system helpers of the pools: atomic JSON files, the mount table, du, running tools."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jaula.errors import JaulaError

#: how often (s) `run` asks the thread's stop check while its tool runs
STOP_POLL_S = 0.1
_stop = threading.local()


def replace_file(path: str, raw: bytes, mode: int, tmp: str) -> None:
    """`path` replaced whole by `raw`: written to `tmp` (created with `mode`), then renamed over
    it; no fsync (a crash of the process leaves the old file or the new one)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.rename(tmp, path)


def write_json(path: str, data: object, durable: bool = True) -> None:
    """Write `path` atomically: a crash leaves the old file or the new one, never half.

    durable=False skips the fsync: for a file that describes what a host crash ends anyway
    (a mount), where a process killed half-way is the only crash that matters; such a file
    (mount.json, at every start) is written compact by the C encoder in one write(2)."""
    tmp = f"{path}.tmp{os.getpid()}"
    if not durable:
        replace_file(path, (json.dumps(data, sort_keys=True) + "\n").encode(), 0o666, tmp)  # 0o666: as open(), less umask
        return
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def mount_points() -> dict[str, tuple[str, str]]:
    """Mount point -> (filesystem type, source), for this mount namespace (the top mount wins)."""
    out: dict[str, tuple[str, str]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out[unescape(parts[4])] = (parts[sep + 1], unescape(parts[sep + 2]))
    return out


def unescape(s: str) -> str:
    """A mountinfo field as a path: octal escapes (\\040 for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda mt: chr(int(mt.group(1), 8)), s)


@contextmanager
def stoppable(check: Callable[[], None]) -> Iterator[None]:
    """Within the block, this thread's long storage work can be stopped: `check()` raises (a
    daemon operation's cancel) and is asked between steps (`stop_point`) and while a tool runs
    (`run`: the tool and its children are killed, then the exception goes up through the undo
    of whatever the caller made)."""
    before = getattr(_stop, "check", None)
    _stop.check = check
    try:
        yield
    finally:
        _stop.check = before


def stop_point() -> None:
    """Raise if this thread's work was asked to stop (`stoppable`); nothing otherwise."""
    check = getattr(_stop, "check", None)
    if check is not None:
        check()


def run(argv: list[str]) -> str:
    """Run a tool; its failure becomes a JaulaError quoting the command and its message. Under
    `stoppable`, the tool runs in a session of its own and is killed with it (tar's compressor
    too) when the check raises."""
    check = getattr(_stop, "check", None)
    if check is None:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    else:
        check()
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) as p:
            while True:
                try:
                    out, err = p.communicate(timeout=STOP_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                try:
                    check()
                except BaseException:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.communicate()
                    raise
            code = p.returncode
    if code != 0:
        msg = (err or out).strip().splitlines()
        raise JaulaError(f"{' '.join(argv)}: exit status {code}{': ' + msg[-1] if msg else ''}")
    return out


def disk_usage(path: str) -> int:
    """Bytes of disk held by the tree at `path` (st_blocks, each inode counted once), as `du -s`."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [path]
    while stack:
        top = stack.pop()
        st = os.lstat(top)
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        if os.path.isdir(top) and not os.path.islink(top):
            with os.scandir(top) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    else:
                        st = e.stat(follow_symlinks=False)
                        if (st.st_dev, st.st_ino) not in seen:
                            seen.add((st.st_dev, st.st_ino))
                            total += st.st_blocks * 512
    return total
