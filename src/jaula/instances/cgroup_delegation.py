"""cgroup delegation: which of an instance's cgroups its root may write, and giving them to it.

systemd, as a system instance's init, manages cgroups of its own: it makes `init.scope` and one
cgroup per service in its name=systemd hierarchy (cgroup v1) and in its cgroup2 subtree (the
hybrid's `unified` mount, or the whole tree on a pure v2 host). So a system instance whose init is
systemd gets those two hierarchies bound read-write under its otherwise read-only /sys/fs/cgroup
(LXC's `cgroup:mixed`, through the runtime annotation WRITABLE), and, when unprivileged, its
folder there given to its root. Other inits (busybox, sysvinit) manage no cgroups: they get
neither, and their start skips joining the hybrid's cgroup2 (1-13 ms on this host, the kernel's
threadgroup lock). A nesting instance (`security.nesting`) gets every hierarchy, for the
runtimes it runs.

What LXC does for an unprivileged container (cgfsng's chown_cgroup_wrapper): the instance's
folder on every hierarchy, and the files that move processes, are given to the host uid and gid
of the instance's root. Its limit files stay the host root's: root inside cannot raise its own
limits, even where the limits sit in the folder it owns (v1's controllers when nesting, v2's
memory.max...): a cgroup file's owner is who may write it, and a folder's owner cannot chmod or
chown a file it does not own. Limits it sets on sub-cgroups are bounded by its own (memory,
pids, cpu quota and cpuset are hierarchical); v1 device rules need CAP_SYS_ADMIN in the host's
namespace (devcgroup), so a sub-cgroup cannot allow a device its parent denies. The runtime's
removal is leaf first: sub-cgroups go with the instance's.
"""

from __future__ import annotations

import errno
import os

# v1: tasks, cgroup.procs, cgroup.clone_children; v2 (the hybrid's unified hierarchy):
# cgroup.procs, cgroup.threads, cgroup.subtree_control (cgroups(7), "Delegation").
FILES = ("cgroup.procs", "tasks", "cgroup.clone_children", "cgroup.threads", "cgroup.subtree_control")

# The runtime annotation (read by jaula.oci.create): hierarchies, as Cgroup.paths names them
# ("name=systemd", "unified", a v1 controller), bound read-write under a read-only cgroup mount.
WRITABLE = "org.jaula.cgroup.writable"
# What systemd needs: its own v1 hierarchy, and the cgroup2 one (hybrid or pure v2).
INIT_HIERARCHIES = ("name=systemd", "unified")
CGROUP_INITS = ("systemd",)   # jaula.instances.render.INITS names of the inits that manage cgroups


def writable(init: str) -> list[str]:
    """The hierarchies bound read-write for an instance whose pid 1 is `init` (an INITS name;
    "app" for an app instance)."""
    return list(INIT_HIERARCHIES) if init in CGROUP_INITS else []


def to_delegate(cgroup_paths: dict[str, str], init: str, nesting: bool) -> dict[str, str]:
    """Of `cgroup_paths` (the runtime's state: hierarchy -> host folder), those an unprivileged
    instance's root gets: all when nesting, systemd's own under systemd, else none."""
    if nesting:
        return dict(cgroup_paths)
    keep = writable(init)
    return {k: v for k, v in cgroup_paths.items() if k in keep}


def delegate(cgroup_paths: dict[str, str], uid: int, gid: int) -> list[str]:
    """Give each folder of `cgroup_paths` (controller -> host folder, the runtime's state) and
    its FILES to uid:gid; the paths changed. A file a hierarchy lacks is skipped."""
    done: list[str] = []
    for path in dict.fromkeys(cgroup_paths.values()):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.chown(fd, uid, gid)
            done.append(path)
            for name in FILES:
                try:
                    os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
                    continue
                done.append(os.path.join(path, name))
        finally:
            os.close(fd)
    return done
