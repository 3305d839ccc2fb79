"""What a test's instances may leave on the host besides mounts, cgroups and processes (checked
by test_jaulad.Daemon.leaks): namespaces, loop devices, host interfaces and database rows.

- `namespaces(pid)`: a running instance's init's namespaces ("net:[4026532...]"), noted while it
  runs; `held_namespaces(noted, tree(jaulad's pid), top)`: those still referenced once the
  instances are gone, by jaulad or a process under it (ns links or open fds), or by an nsfs bind
  mount under the test's folder. The user namespace is left out: the
  spawner keeps one per id range for the next instance on it (docs/spawner.md), bounded, not one
  per instance.
- `loop_devices(top)`: loop devices whose backing file is under `top`.
- `interfaces(names)`: which of these host interfaces still exist.
- `rows_naming(db, names)`: rows of jaulad's database with a cell equal to one of `names`
  (an instance's own rows: config, profiles, snapshots, addresses, forwards); the operations'
  and events' history only mention names inside longer text, so are not counted.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

KINDS = ("net", "mnt", "pid", "uts", "ipc", "cgroup")


def namespaces(pid: int) -> set[str]:
    found = set()
    for kind in KINDS:
        try:
            found.add(os.readlink(f"/proc/{pid}/ns/{kind}"))
        except OSError:
            pass
    return found


def tree(root_pid: int) -> set[int]:
    """`root_pid` and all its descendants (jaulad: its spawner, console keeper, helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def held_namespaces(noted: set[str], holders: set[int], top: str | os.PathLike[str]) -> list[str]:
    """Of `noted`, those still held by one of the `holders` processes (its ns links or an open
    fd) or by an nsfs mount under `top`. Only these: a namespace's inode number is reused once it
    is gone, so another process on the host (another test's instance) may show the same one."""
    if not noted:
        return []
    held: list[str] = []
    for pid in sorted(holders):
        links = [f"/proc/{pid}/ns/{k}" for k in KINDS]
        try:
            links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target in noted:
                held.append(f"{target} held by {link}")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[3] in noted and fields[4].startswith(str(top)):  # an nsfs mount's root: net:[...]
                held.append(f"{fields[3]} bind-mounted at {fields[4]}")
    return held


def loop_devices(top: str | os.PathLike[str]) -> list[str]:
    top = str(top)
    found = []
    for dev in Path("/sys/block").glob("loop*"):
        try:
            backing = (dev / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(top):
            found.append(f"/dev/{dev.name} -> {backing}")
    return found


def interfaces(names: set[str]) -> list[str]:
    return sorted(n for n in names if os.path.exists(f"/sys/class/net/{n}"))


def rows_naming(db: str | os.PathLike[str], names: set[str]) -> list[str]:
    if not names:
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = []
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):  # the names come from sqlite_master
                if any(isinstance(v, str) and v in names for v in row):
                    found.append(f"{table}: {row}")
        return found
    finally:
        con.close()
