"""cgroup delegation for a nesting instance: its root may make sub-cgroups of its own cgroup and
move its processes between them, so a runtime inside (crun, podman, systemd) can use cgroups.

What LXC does for an unprivileged container (cgfsng's chown_cgroup_wrapper): the instance's
folder on every hierarchy, and the files that move processes, are given to the host uid and gid
of the instance's root. Its limit files stay the host root's: root inside cannot raise its own
limits. Limits it sets on sub-cgroups are bounded by its own (memory, pids, cpu quota and cpuset
are hierarchical); v1 device rules need CAP_SYS_ADMIN in the host's namespace (devcgroup), so a
sub-cgroup cannot allow a device its parent denies. The runtime's removal is leaf first: sub-
cgroups go with the instance's.
"""

from __future__ import annotations

import errno
import os

# v1: tasks, cgroup.procs, cgroup.clone_children; v2 (the hybrid's unified hierarchy):
# cgroup.procs, cgroup.threads, cgroup.subtree_control (cgroups(7), "Delegation").
FILES = ("cgroup.procs", "tasks", "cgroup.clone_children", "cgroup.threads", "cgroup.subtree_control")


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
