"""Entering a cgroup2 subtree that its container manages itself (a delegated subtree).

An init such as systemd moves itself out of its container's cgroup (into init.scope) and enables
controllers in that cgroup's cgroup.subtree_control; from then on the kernel refuses any process
there (cgroup v2's "no internal processes" rule: EBUSY on cgroup.procs, cgroups(7)). A process
that enters the container later (`exec`) therefore joins a leaf below it, EXEC_LEAF, made on first
use and owned by the host's root (the container cannot move processes into it, only out of it,
into its own cgroups); it goes with the container's cgroup (removed leaf first). LXC does the same
with `.lxc`. v1 hierarchies have no such rule: a process joins the container's cgroup itself.
"""

from __future__ import annotations

import errno
import os
from typing import Any

EXEC_LEAF = ".jaula-exec"


class _Os:
    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)


def join_file(procs: str, fs: Any = None) -> str:
    """The cgroup.procs to write to enter the cgroup whose cgroup.procs is `procs`: that one, or
    EXEC_LEAF's when the cgroup has controllers enabled for its children (a v2 subtree managed
    from inside). Anything else (v1's tasks) is returned as it is."""
    if os.path.basename(procs) != "cgroup.procs":
        return procs
    fs = fs or _Os()
    d = os.path.dirname(procs)
    try:
        enabled = fs.read(os.path.join(d, "cgroup.subtree_control")).split()
    except FileNotFoundError:
        return procs   # v1's cgroup.procs
    if not enabled:
        return procs
    leaf = os.path.join(d, EXEC_LEAF)
    try:
        fs.mkdir(leaf)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
    return os.path.join(leaf, "cgroup.procs")
