"""Small file-system helpers of the pools: atomic JSON files, the mount table, du, running tools."""

from __future__ import annotations

import json
import os
import re
import subprocess

from jaula.errors import JaulaError


def write_json(path: str, data: object, durable: bool = True) -> None:
    """Write `path` atomically: a crash leaves the old file or the new one, never half.

    durable=False skips the fsync: for a file that describes what a host crash ends anyway
    (a mount), where a process killed half-way is the only crash that matters."""
    tmp = f"{path}.tmp{os.getpid()}"
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


def run(argv: list[str]) -> str:
    """Run a tool; its failure becomes a JaulaError quoting the command and its message."""
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise JaulaError(f"{' '.join(argv)}: exit status {proc.returncode}{': ' + msg[-1] if msg else ''}")
    return proc.stdout


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
