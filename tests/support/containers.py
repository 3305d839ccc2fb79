"""Helpers for integration tests that look at real containers from the host.

Polling instead of sleeping, the state file and cgroup directories of a container, the
cgroup directories a cgroupsPath would give, and a --console-socket receiver.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.runtime import Runtime

T = TypeVar("T")

PROBE = "/usr/bin/probe"
SLEEP = [PROBE, "sleep", "60"]  # a container's process that stays up until it is killed


def wait_until(what: str, check: Callable[[], T], timeout: float = 5.0, interval: float = 0.005) -> T:
    """Poll check() until it returns something truthy; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value {value!r})")
        time.sleep(interval)
        interval = min(interval * 2, 0.05)


def state_file(rt: Runtime, cid: str) -> dict[str, Any]:
    """The runtime's own state.json (runc layout: <root>/<id>/state.json), with cgroupPaths."""
    return json.loads((rt.root / cid / "state.json").read_text())


def cgroup_paths(rt: Runtime, cid: str) -> dict[str, str]:
    paths = state_file(rt, cid).get("cgroupPaths") or {}
    assert paths, f"state.json of {cid} has no cgroupPaths"
    return paths


def read_cgroup(rt: Runtime, cid: str, controller: str, name: str) -> str:
    return Path(cgroup_paths(rt, cid)[controller], name).read_text().strip()


def status(rt: Runtime, cid: str) -> str:
    return rt.state(cid)["status"]


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def hierarchies() -> list[tuple[str, str, str]]:
    """(mount point, mount root, this process's cgroup on it) for every cgroup hierarchy of the host."""
    ours: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        ours[ctrls] = path
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        sep = parts.index("-")
        fstype, super_opts = parts[sep + 1], parts[sep + 3].split(",")
        if fstype == "cgroup2":
            key = ""
        elif fstype == "cgroup":
            names = [o for o in super_opts if o not in ("rw", "ro")]
            key = next((k for k in ours if k and set(k.split(",")) <= set(names)), None)
            if key is None:
                continue
        else:
            continue
        if key in ours:
            out.append((parts[4], parts[3], ours[key]))
    return out


def cgroup_dirs(cgroups_path: str | None, cid: str) -> list[Path]:
    """The host directories a container gets for linux.cgroupsPath (None: the runtime's default,
    <our cgroup>/jaula/<id>; "/x": x from each hierarchy's root; "x": below our cgroup)."""
    dirs = []
    for mountpoint, mount_root, ours in hierarchies():
        if cgroups_path is None:
            cg = f"{ours.rstrip('/')}/jaula/{cid}"
        elif cgroups_path.startswith("/"):
            cg = cgroups_path
        else:
            cg = f"{ours.rstrip('/')}/{cgroups_path}"
        rel = os.path.relpath(cg, mount_root)
        if rel.startswith(".."):
            continue  # this hierarchy's mount does not show that cgroup
        dirs.append(Path(mountpoint, rel))
    return dirs


def assert_nothing_left(rt: Runtime, cid: str, cgroups_path: str | None = None) -> None:
    """No state directory and no cgroup directory of container cid."""
    assert not (rt.root / cid).exists(), f"state directory {rt.root / cid} left behind"
    left = [str(d) for d in cgroup_dirs(cgroups_path, cid) if d.exists()]
    assert not left, f"cgroup directories left behind: {left}"


def remove_cgroup_dirs(dirs: list[Path]) -> None:
    """Best-effort cleanup of cgroup directories a test made (deepest first; only empty ones go)."""
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


def mountinfo_of(lines: list[str]) -> dict[str, dict[str, Any]]:
    """probe's mountinfo lines -> {mount point: {fstype, source, options, super, optional}} (last wins)."""
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 10:
            continue
        sep = parts.index("-")
        out[parts[4]] = {
            "root": parts[3],
            "options": parts[5].split(","),
            "optional": parts[6:sep],
            "fstype": parts[sep + 1],
            "source": parts[sep + 2],
            "super": parts[sep + 3].split(","),
        }
    return out


class ConsoleSocket:
    """A --console-socket: a listening UNIX socket that receives the pty master by SCM_RIGHTS."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.master = -1

    def receive(self) -> int:
        """Accept the runtime's connection and take the pty master it sends."""
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            _, fds, _, _ = socket.recv_fds(conn, 4096, 4)
        assert len(fds) == 1, f"expected one fd on the console socket, got {fds}"
        self.master = fds[0]
        return self.master

    def read_all(self, timeout: float = 10.0) -> bytes:
        """Everything the container writes to its terminal, until the pty's slave side closes."""
        from tests.support.fdwait import readable

        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not readable(self.master, deadline - time.monotonic()):
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every slave fd is closed
                break
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
