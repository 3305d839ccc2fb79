"""Idmapped bind mounts (the idmap and ridmap options), made by the runtime on the host.

mount_setattr(MOUNT_ATTR_IDMAP) needs privilege over the source's mount, which the container's
init lacks, so the runtime clones each source tree detached, maps its ids through the
container's user namespace (or a throwaway one made from the mount's own uidMappings), and
hands the fds to init, which attaches them with move_mount.
"""

from __future__ import annotations

import os

from jaula.linux import mount as m
from jaula.linux import ns as nsys
from jaula.oci.config import Spec


def make_idmapped_mounts(spec: Spec, init_pid: int) -> list[int]:
    fds: list[int] = []
    try:
        for mnt in spec.mounts:
            if not mnt.parsed.idmap:
                continue
            src = mnt.source if os.path.isabs(mnt.source) else os.path.join(spec.bundle, mnt.source)
            if mnt.uid_mappings:
                userns = _throwaway_userns(mnt.uid_mappings, mnt.gid_mappings)
            else:
                userns = os.open(f"/proc/{init_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            try:
                fds.append(m.idmap_tree(src, userns, recursive=mnt.parsed.recursive_idmap))
            finally:
                os.close(userns)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _throwaway_userns(uid_maps: list, gid_maps: list) -> int:
    """An fd of a new user namespace with these maps, held by no process once we return."""
    def text(maps: list) -> str:
        return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)

    return nsys.userns_with_maps(text(uid_maps), text(gid_maps))