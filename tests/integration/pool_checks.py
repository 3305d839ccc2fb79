"""Shared by the pool integration modules: templates, leak checks, a child in a user namespace.

Every test works under its own tmp_path; the `area` fixture asserts that no mount and no loop
device under it is left when the test ends, and removes any it finds so a failure leaks nothing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from jaula.linux import loop
from jaula.linux import mount as m
from jaula.storage.fsutil import unescape

MiB = 1 << 20


def skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def mounts_under(root: str) -> list[str]:
    """Mount points at or below `root`, in mount order."""
    root = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = unescape(line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found


def loops_under(root: str) -> list[str]:
    root = os.path.realpath(root)
    return [f"{dev} ({path})" for dev, path in loop.bound().items() if path.startswith(root + "/")]


def leaks(root: str, grace: float = 2.0) -> list[str]:
    """Mounts and loop devices left under `root`. A loop device gets `grace` seconds to go: the
    kernel may release an autoclear device from a worker after the unmount returns (btrfs does)."""
    mounts = [f"mount {p}" for p in mounts_under(root)]
    deadline = time.monotonic() + grace
    while (loops := loops_under(root)) and not mounts and time.monotonic() < deadline:
        time.sleep(0.01)
    return mounts + [f"loop {d}" for d in loops]


def clean(root: str) -> None:
    """Unmount everything under `root` (last mounted first) and free its loop devices."""
    for point in reversed(mounts_under(root)):
        try:
            m.umount2(point, m.MNT_DETACH)
        except OSError:
            pass
    for dev, path in loop.bound().items():
        if path.startswith(os.path.realpath(root) + "/"):
            try:
                loop.detach(dev)
            except OSError:
                pass


@pytest.fixture
def area(tmp_path) -> Iterator:
    """tmp_path, checked for leaked mounts and loop devices (then cleaned) when the test ends."""
    skip_unless_root()
    yield tmp_path
    left = leaks(str(tmp_path))
    clean(str(tmp_path))
    assert not left, f"the test left behind: {left}"


def make_template(path: str) -> str:
    """A small root tree owned by host root: files, a folder to delete, a setuid file, a symlink."""
    for d in ("etc", "bin", "var/lib/app", "opt/gone/deep"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    files = {"etc/hostname": "template\n", "etc/passwd": "root:x:0:0::/root:/bin/sh\n",
             "var/lib/app/data": "v1\n", "opt/gone/deep/file": "bye\n", "bin/tool": "#!/bin/sh\n"}
    for rel, text in files.items():
        with open(os.path.join(path, rel), "w") as f:
            f.write(text)
    os.chmod(os.path.join(path, "bin/tool"), 0o4755)
    os.symlink("hostname", os.path.join(path, "etc/name"))
    os.chmod(path, 0o755)
    return path


def tree(path: str) -> dict[str, tuple]:
    """What a tree holds, comparable between trees: type, mode, owner, content or link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, path)
            if stat.S_ISLNK(st.st_mode):
                body: object = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    body = f.read()
            else:
                body = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, body)
    return out


def read(path: object) -> str:
    with open(path) as f:  # type: ignore[call-overload]
        return f.read()


def du(path: str) -> int:
    """`du -s --block-size=1` of `path`."""
    return int(subprocess.run(["du", "-s", "--block-size=1", path], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def in_userns(uid_base: int, gid_base: int, cwd: str, fn: Callable[[], object], size: int = 65536) -> object:
    """Run `fn` as root of a new user namespace mapping 0..size-1 to host base.. (maps written by
    this process, as the runtime does), with `cwd` as its folder; return what it returns (JSON)."""
    r_ready, w_ready = os.pipe()
    r_go, w_go = os.pipe()
    r_out, w_out = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(r_ready)
            os.close(w_go)
            os.close(r_out)
            os.chdir(cwd)  # the folders above may be closed to the mapped ids
            from jaula.linux import ns as nsys

            nsys.unshare(nsys.CLONE_NEWUSER)
            os.write(w_ready, b"1")
            os.read(r_go, 1)
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            result = fn()
            os.write(w_out, json.dumps({"ok": result}).encode())
            status = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            try:
                os.write(w_out, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
            except BaseException:  # noqa: BLE001, S110 - the pipe is gone: nothing to tell
                pass
        finally:
            os._exit(status)
    os.close(w_ready)
    os.close(r_go)
    os.close(w_out)
    try:
        assert os.read(r_ready, 1) == b"1", "the child could not unshare a user namespace"
        for name, base in (("uid_map", uid_base), ("gid_map", gid_base)):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {base} {size}\n")
        os.write(w_go, b"1")
        data = b""
        while chunk := os.read(r_out, 65536):
            data += chunk
    finally:
        os.close(w_go)
        os.close(r_ready)
        os.close(r_out)
        os.waitpid(pid, 0)
    reply = json.loads(data or b'{"error": "the child died without a word"}')
    if "error" in reply:
        raise AssertionError(f"in the user namespace: {reply['error']}")
    return reply["ok"]
