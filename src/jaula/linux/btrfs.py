"""btrfs subvolumes through their ioctls (linux/btrfs.h): create, snapshot, delete, read-only flag.

Quotas (qgroups) are rarer and wordier; the storage layer drives them with the `btrfs` tool.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from jaula.errors import SyscallError
from jaula.linux.libc import libc

BTRFS_SUPER_MAGIC = 0x9123683E
BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of every subvolume's root directory
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_SUBVOL_NAME_MAX = 4039
BTRFS_PATH_NAME_MAX = 4087


class VolArgs(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int64), ("name", ctypes.c_char * (BTRFS_PATH_NAME_MAX + 1))]


class VolArgsV2(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_int64),
        ("transid", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("unused", ctypes.c_uint64 * 4),
        ("name", ctypes.c_char * (BTRFS_SUBVOL_NAME_MAX + 1)),
    ]


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (0x94 << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (0x94 << 8) | nr


BTRFS_IOC_SNAP_DESTROY = _iow(15, ctypes.sizeof(VolArgs))
BTRFS_IOC_SNAP_CREATE_V2 = _iow(23, ctypes.sizeof(VolArgsV2))
BTRFS_IOC_SUBVOL_CREATE_V2 = _iow(24, ctypes.sizeof(VolArgsV2))
BTRFS_IOC_SUBVOL_GETFLAGS = _ior(25, 8)
BTRFS_IOC_SUBVOL_SETFLAGS = _iow(26, 8)


def _ioctl(fd: int, request: int, arg: object, call: str, detail: str) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise SyscallError(call, e.errno or errno.EIO, detail) from None


def _parent(path: str) -> tuple[int, bytes]:
    path = os.path.abspath(path)
    name = os.fsencode(os.path.basename(path))
    if not name or len(name) > BTRFS_SUBVOL_NAME_MAX:
        raise SyscallError("btrfs", errno.EINVAL, f"bad subvolume name in {path!r}")
    return os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), name


def is_btrfs(path: str) -> bool:
    buf = (ctypes.c_long * 16)()  # struct statfs (120 bytes on 64-bit): f_type first
    if libc.statfs(os.fsencode(path), buf) != 0:
        raise SyscallError("statfs", ctypes.get_errno(), repr(path))
    return (buf[0] & 0xFFFFFFFF) == BTRFS_SUPER_MAGIC


def is_subvolume(path: str) -> bool:
    st = os.lstat(path)
    return st.st_ino == BTRFS_FIRST_FREE_OBJECTID and is_btrfs(path)


def create_subvolume(path: str) -> None:
    parent, name = _parent(path)
    try:
        args = VolArgsV2()
        args.name = name
        _ioctl(parent, BTRFS_IOC_SUBVOL_CREATE_V2, args, "ioctl(BTRFS_IOC_SUBVOL_CREATE_V2)", repr(path))
    finally:
        os.close(parent)


def snapshot(source: str, dest: str, read_only: bool = False) -> None:
    """Snapshot subvolume `source` as new subvolume `dest` (an O(1) copy-on-write clone)."""
    src = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent, name = _parent(dest)
        try:
            args = VolArgsV2()
            args.fd = src
            args.flags = BTRFS_SUBVOL_RDONLY if read_only else 0
            args.name = name
            _ioctl(parent, BTRFS_IOC_SNAP_CREATE_V2, args, "ioctl(BTRFS_IOC_SNAP_CREATE_V2)", f"{source!r} -> {dest!r}")
        finally:
            os.close(parent)
    finally:
        os.close(src)


def delete_subvolume(path: str) -> None:
    """Delete subvolume `path` with everything in it (it must hold no nested subvolume)."""
    parent, name = _parent(path)
    try:
        args = VolArgs()
        args.name = name
        _ioctl(parent, BTRFS_IOC_SNAP_DESTROY, args, "ioctl(BTRFS_IOC_SNAP_DESTROY)", repr(path))
    finally:
        os.close(parent)


def set_read_only(path: str, read_only: bool) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = ctypes.c_uint64()
        _ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, flags, "ioctl(BTRFS_IOC_SUBVOL_GETFLAGS)", repr(path))
        value = (flags.value | BTRFS_SUBVOL_RDONLY) if read_only else (flags.value & ~BTRFS_SUBVOL_RDONLY)
        _ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, ctypes.c_uint64(value), "ioctl(BTRFS_IOC_SUBVOL_SETFLAGS)", repr(path))
    finally:
        os.close(fd)
