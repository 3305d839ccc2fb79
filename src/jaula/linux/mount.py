"""mount(2), umount2(2), pivot_root(2) and the new mount API (open_tree, move_mount, mount_setattr)."""

from __future__ import annotations

import os

from jaula.errors import SyscallError
from jaula.linux.libc import NR, call, fsencode, raw, u64s

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000
MS_PROPAGATION = MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE

_NR_MOUNT = NR["mount"]
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    # raw, its message formatted only on failure: an init makes ~50 mounts
    ret = raw(_NR_MOUNT, fsencode(source), fsencode(target), fsencode(fstype), flags, fsencode(data))
    if ret < 0:
        raise SyscallError("mount", -ret, f"{source!r} on {target!r} (type {fstype}, flags {flags:#x}{', ' + data if data else ''})")


def umount2(target: str, flags: int = 0) -> None:
    call("umount2", fsencode(target), flags, detail=repr(target))


def pivot_root(new_root: str, put_old: str) -> None:
    call("pivot_root", fsencode(new_root), fsencode(put_old), detail=f"{new_root!r} {put_old!r}")


def open_tree(path: str, flags: int, dirfd: int = AT_FDCWD) -> int:
    return call("open_tree", dirfd, fsencode(path), flags, detail=repr(path))


def move_mount(from_fd: int, to_path: str, to_dirfd: int = AT_FDCWD, flags: int = MOVE_MOUNT_F_EMPTY_PATH) -> None:
    call("move_mount", from_fd, b"", to_dirfd, fsencode(to_path), flags, detail=f"to {to_path!r}")


def move_mount_to_fd(from_fd: int, to_fd: int) -> None:
    """Attach the detached mount `from_fd` on the object `to_fd` (an O_PATH fd).

    move_mount(2) refuses /proc/self/fd/N magic links as its target (EINVAL), so the target goes
    by fd with MOVE_MOUNT_T_EMPTY_PATH.
    """
    call("move_mount", from_fd, b"", to_fd, b"", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
         detail=f"to fd {to_fd}")


def mount_setattr(
    dirfd: int,
    path: str,
    flags: int,
    attr_set: int = 0,
    attr_clr: int = 0,
    propagation: int = 0,
    userns_fd: int = 0,
) -> None:
    attr = u64s(attr_set, attr_clr, propagation, userns_fd)  # struct mount_attr
    call("mount_setattr", dirfd, fsencode(path), flags, attr, len(attr), detail=repr(path) if path else f"fd {dirfd}")


def idmap_tree(path: str, userns_fd: int, recursive: bool = True) -> int:
    """A detached clone of the tree at `path` whose ids are mapped through user namespace `userns_fd`."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    fd = open_tree(path, flags)
    try:
        mount_setattr(fd, "", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0), attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> str:
    """The magic link through which a syscall taking a path reaches the object `fd` refers to."""
    return f"/proc/self/fd/{fd}"
