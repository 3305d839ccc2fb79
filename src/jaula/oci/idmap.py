"""Idmapped bind mounts (the idmap and ridmap options), made by the runtime on the host.

mount_setattr(MOUNT_ATTR_IDMAP) needs privilege over the source's mount, which the container's
init lacks, so the runtime clones each source tree detached, maps its ids through the
container's user namespace (or a throwaway one made from the mount's own uidMappings), and
hands the fds to init, which attaches them with move_mount.
"""

from __future__ import annotations

import os

from jaula.errors import JaulaError
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
    from jaula.oci.create import write_id_maps

    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.close(r2)
            nsys.unshare(nsys.CLONE_NEWUSER)
            os.write(w2, b"1")
            os.read(r, 1)  # hold the namespace until the runtime has its fd
        finally:
            os._exit(0)
    os.close(r)
    os.close(w2)
    try:
        if os.read(r2, 1) != b"1":
            raise JaulaError("idmapped mount: the helper process could not make a user namespace")
        write_id_maps(pid, uid_maps, gid_maps)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w)
        os.close(r2)
        os.waitpid(pid, 0)
