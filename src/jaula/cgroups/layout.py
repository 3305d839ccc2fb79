"""Find how cgroups are mounted (v1, v2 or hybrid) and where the caller sits in each hierarchy.

Everything is read from mountinfo and /proc/self/cgroup, whose paths (and a prefix for the mount
points) can be overridden so that tests run the drivers on synthetic trees in a temporary folder.
"""

from __future__ import annotations

import os

from jaula.record import Record

# Super-block options of a v1 mount that are not controllers (mount(8) cgroup options).
_NOT_CONTROLLERS = {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "all", "none",
                    "favordynmods", "nsdelegate", "memory_recursiveprot", "memory_localevents"}

# The controllers a v1 driver knows what to do with (named hierarchies such as name=systemd are kept too).
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                  "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc")


def unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (proc(5))."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


class Hierarchy(Record, frozen=True):
    """One mounted hierarchy and the caller's cgroup in it."""

    version: int                   # 1 or 2
    mountpoint: str                # host directory of the mount (with the test prefix applied)
    root: str                      # the part of the hierarchy mounted there (mountinfo field 4)
    controllers: tuple[str, ...]   # v1: from the mount options; v2: the root's cgroup.controllers
    current: str                   # the caller's cgroup path in this hierarchy ("/" based)

    def dir_of(self, cgpath: str) -> str:
        """The host directory of cgroup path `cgpath` (a path as /proc/self/cgroup shows it)."""
        rel = cgpath
        if self.root != "/" and (cgpath == self.root or cgpath.startswith(self.root + "/")):
            rel = cgpath[len(self.root):]
        return os.path.normpath(self.mountpoint + "/" + rel.strip("/")) if rel.strip("/") else self.mountpoint

    @property
    def key(self) -> str:
        """The name used in `Cgroup.paths`: "unified" for v2, the joined controllers for v1."""
        return "unified" if self.version == 2 else ",".join(self.controllers)


class Layout(Record, frozen=True):
    """How this host mounts cgroups: mode is "v1", "v2" (pure unified) or "hybrid"."""

    mode: str
    v1: dict[str, Hierarchy] = {}   # controller (or name=X) -> its hierarchy
    unified: Hierarchy | None = None

    def hierarchies(self) -> list[Hierarchy]:
        """Each mounted hierarchy once (co-mounted v1 controllers share one)."""
        seen: dict[str, Hierarchy] = {}
        for h in self.v1.values():
            seen.setdefault(h.mountpoint, h)
        if self.unified is not None:
            seen.setdefault(self.unified.mountpoint, self.unified)
        return list(seen.values())

    def where(self, controller: str) -> Hierarchy | None:
        """The hierarchy that handles `controller`: v1 if it is bound there, else the unified one."""
        if controller in self.v1:
            return self.v1[controller]
        if self.unified is not None and controller in self.unified.controllers:
            return self.unified
        return None


def _parse_self_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """/proc/self/cgroup: "4:memory:/a/b" lines; "0::/x" is the unified hierarchy."""
    v1: dict[str, str] = {}
    unified = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        if ctrls == "":
            unified = path
        else:
            for c in ctrls.split(","):
                v1[c] = path
    return v1, unified


def probe(mountinfo: str = "/proc/self/mountinfo", self_cgroup: str = "/proc/self/cgroup",
          fs_root: str = "") -> Layout:
    """Read the cgroup layout; `fs_root` is prefixed to every mount point (tests use a temp dir)."""
    with open(self_cgroup) as f:
        current_v1, current_unified = _parse_self_cgroup(f.read())
    with open(mountinfo) as f:
        lines = f.read().splitlines()
    v1: dict[str, Hierarchy] = {}
    unified: Hierarchy | None = None
    for line in lines:
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, root, mnt = tail[0], unescape(fields[3]), fs_root + unescape(fields[4])
        if fstype == "cgroup2":
            if unified is not None and not (root == "/" and unified.root != "/"):
                continue   # keep the first mount, unless a later one shows the whole hierarchy
            ctl = os.path.join(mnt, "cgroup.controllers")
            ctrls = tuple(open(ctl).read().split()) if os.path.exists(ctl) else ()
            unified = Hierarchy(2, mnt, root, ctrls, current_unified or "/")
        elif fstype == "cgroup":
            opts = [o for o in tail[2].split(",") if o not in _NOT_CONTROLLERS
                    and ("=" not in o or o.startswith("name="))]
            if not opts:
                continue
            cur = current_v1.get(opts[0], "/")
            h = Hierarchy(1, mnt, root, tuple(opts), cur)
            for c in opts:
                old = v1.get(c)
                if old is None or (old.root != "/" and root == "/"):
                    v1[c] = h
    real_v1 = [c for c in v1 if not c.startswith("name=")]
    if unified is None and not v1:
        mode = "none"
    elif unified is None:
        mode = "v1"
    elif not real_v1:
        mode = "v2"
    else:
        mode = "hybrid"
    return Layout(mode, v1, unified)
