"""Idmapped roots: one template, owned by host uid 0, serves instances with any uid range.

An instance's user namespace maps its ids 0..size-1 to host ids base..base+size-1. The
template's layer is mounted through an idmapped mount (mount_setattr MOUNT_ATTR_IDMAP) made
with a throwaway user namespace holding those maps, so its files, owned by 0 on disk, show as
owned by `base` on the host and so by 0 inside; nothing of the template is chowned.
The instance's own layer is stored shifted (a file made by root inside is owned by `base` on
disk): `shift_tree` moves a layer from one range to another when a volume changes hands.
"""

from __future__ import annotations

import os
import stat

from jaula.errors import ConfigError
from jaula.linux import mount as m
from jaula.linux import ns as nsys
from jaula.record import Record

ID_MAX = 2**32 - 1


class IdMap(Record, frozen=True):
    """Container ids 0..size-1 are host uids uid_base.. and gids gid_base.."""

    uid_base: int
    gid_base: int
    size: int = 65536

    def validate(self) -> IdMap:
        problems = []
        for field in ("uid_base", "gid_base", "size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"idmap.{field} must be a non-negative integer, not {value!r}")
        if not problems:
            if self.size < 1:
                problems.append("idmap.size must be at least 1")
            if max(self.uid_base, self.gid_base) + self.size - 1 > ID_MAX - 1:
                problems.append(f"idmap {self} runs past the largest id {ID_MAX - 1}")
        if problems:
            raise ConfigError(problems)
        return self

    def to_host(self, cid: int, gid: bool = False) -> int:
        """Host id of container id `cid`; ids outside the range stay as they are."""
        return (self.gid_base if gid else self.uid_base) + cid if 0 <= cid < self.size else cid

    def to_container(self, hid: int, gid: bool = False) -> int:
        """Container id of host id `hid`; ids outside the range stay as they are."""
        base = self.gid_base if gid else self.uid_base
        return hid - base if base <= hid < base + self.size else hid

    def as_json(self) -> list[int]:
        return [self.uid_base, self.gid_base, self.size]

    @classmethod
    def from_json(cls, value: object) -> IdMap | None:
        if value is None:
            return None
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return cls(*value).validate()
        raise ConfigError(f"bad idmap {value!r}: expected [uid_base, gid_base, size]")


def userns_fd(idmap: IdMap) -> int:
    """An fd of a new user namespace with `idmap`'s maps, held by no process once we return."""
    return nsys.userns_with_maps(f"0 {idmap.uid_base} {idmap.size}\n", f"0 {idmap.gid_base} {idmap.size}\n")


# User namespaces made for idmapped mounts, by range, the most recently used last. Making one forks
# a helper (4-5 ms in jaulad's 20 MiB spawner, most of a root's mount); a namespace that no process
# is in holds only its maps (a few hundred bytes of kernel memory) and lives while its fd is open.
# mount_setattr reads only its maps, so one namespace serves every mount of that range, and a range
# freed by a deleted instance and given to the next one maps the same ids. Bounded: an fd each.
_userns: dict[IdMap, int] = {}
USERNS_KEPT = 64


def shared_userns_fd(idmap: IdMap) -> int:
    """An fd of a user namespace with `idmap`'s maps, kept by this module (do not close it)."""
    return kept_fd(_userns, idmap, lambda: userns_fd(idmap), USERNS_KEPT)


def kept_fd(kept: dict, key: object, make, limit: int) -> int:
    """The fd `kept` holds for `key`, else `make()`'s, kept there: at most `limit` fds, the least
    recently used closed first (`kept`'s order is that of use)."""
    fd = kept.pop(key, -1)
    if fd < 0:
        fd = make()
        while len(kept) >= limit:
            os.close(kept.pop(next(iter(kept))))
    kept[key] = fd
    return fd


def forget_usernses() -> None:
    """Close every kept user namespace fd (a test's or a process's cleanup)."""
    while _userns:
        os.close(_userns.popitem()[1])


def idmapped_tree(path: str, idmap: IdMap, recursive: bool = False) -> int:
    """A detached clone of the mount tree at `path`, its ids shown through `idmap` (an fd)."""
    return m.idmap_tree(path, shared_userns_fd(idmap), recursive=recursive)


def shift_tree(root: str, old: IdMap | None, new: IdMap | None) -> int:
    """Move every owner in the tree at `root` from range `old` to range `new` (None: unshifted).

    Ids outside `old`'s range are kept. chown clears setuid/setgid, so modes are set again.
    ACL entries and the root id of v3 file capabilities are not rewritten. Returns the number
    of entries changed.
    """
    if old == new:
        return 0
    changed = 0

    def shift(path: str, st: os.stat_result) -> None:
        nonlocal changed
        uid, gid = st.st_uid, st.st_gid
        if old is not None:
            uid, gid = old.to_container(uid), old.to_container(gid, gid=True)
        if new is not None:
            uid, gid = new.to_host(uid), new.to_host(gid, gid=True)
        if (uid, gid) == (st.st_uid, st.st_gid):
            return
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))
        changed += 1

    seen: set[tuple[int, int]] = set()
    shift(root, os.lstat(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            shift(path, st)
    return changed


def owners(root: str) -> tuple[set[int], set[int]]:
    """Every uid and gid that owns something in the tree at `root`."""
    uids, gids = set(), set()
    st = os.lstat(root)
    uids.add(st.st_uid)
    gids.add(st.st_gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            uids.add(st.st_uid)
            gids.add(st.st_gid)
    return uids, gids
