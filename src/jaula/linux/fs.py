"""Path resolution that a container's symlinks cannot trick: openat2(2) with RESOLVE_IN_ROOT."""

from __future__ import annotations

import errno
import os
import stat
import sys

from jaula.errors import SyscallError
from jaula.linux.libc import NR, call, fsencode, raw, u64s

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

O_PATH = os.O_PATH


def _openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): the fd, or -errno (no exception: make_in_root expects ENOENT often)."""
    how = u64s(flags | os.O_CLOEXEC, mode, resolve)  # struct open_how
    name = fsencode(path)
    while True:
        ret = raw(NR["openat2"], dirfd, name, how, len(how))
        if ret != -errno.EAGAIN:  # EAGAIN: a concurrent rename raced the lookup; try again
            return ret


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    ret = _openat2(dirfd, path, flags, resolve, mode)
    if ret < 0:
        raise SyscallError("openat2", -ret, repr(path))
    return ret


_IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS


def open_in_root(root_fd: int, path: str, flags: int = O_PATH, mode: int = 0) -> int:
    """Open `path` as if `root_fd` were "/": '..' and absolute symlinks cannot leave it."""
    return openat2(root_fd, path.lstrip("/") or ".", flags, _IN_ROOT, mode)


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def make_in_root(root_fd: int, path: str, directory: bool, mode: int = 0o755) -> int:
    """Create the parents of `path` and `path` itself (a directory or an empty file) inside the root.

    Every component is resolved inside the root, so a symlink the container planted cannot make us
    create or open anything outside it. Returns an O_PATH fd of the result.
    """
    parts = _split(path)
    if parts:  # most targets exist (/proc, /dev, /sys): one lookup instead of one per component
        full = "/".join(parts)
        fd = _openat2(root_fd, full, O_PATH, _IN_ROOT)
        if fd >= 0:
            return fd
        if fd != -errno.ENOENT:
            raise SyscallError("openat2", -fd, repr(full))
        # Next most often only the last one is missing (a device node in /dev, a hierarchy's
        # folder in a fresh tmpfs): made in its parent, resolved in the root as well.
        parent = root_fd if len(parts) == 1 else _openat2(root_fd, "/".join(parts[:-1]), O_PATH, _IN_ROOT)
        if parent >= 0:
            try:
                _make(parent, parts[-1], full, directory, mode)
                return open_in_root(root_fd, full, O_PATH)
            finally:
                if parent != root_fd:
                    os.close(parent)
        if parent != -errno.ENOENT:
            raise SyscallError("openat2", -parent, repr("/".join(parts[:-1])))
    cur = os.open(".", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            rel = "/".join(parts[: i + 1])
            nxt = _openat2(root_fd, rel, O_PATH, _IN_ROOT)
            if nxt == -errno.ENOENT:
                _make(cur, name, rel, directory or not last, mode)
                nxt = open_in_root(root_fd, rel, O_PATH)
            elif nxt < 0:
                raise SyscallError("openat2", -nxt, repr(rel))
            if not last and not stat.S_ISDIR(os.fstat(nxt).st_mode):
                os.close(nxt)
                raise SyscallError("mkdir", errno.ENOTDIR, repr(rel))
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def _make(dir_fd: int, name: str, rel: str, directory: bool, mode: int) -> None:
    """mkdir, or create an empty file, `name` in `dir_fd` (never through a symlink at `name`)."""
    try:
        if not directory:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=dir_fd))
        else:
            os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass  # made by someone else meanwhile, or a dangling symlink: the re-open decides
    except OSError as e:
        raise SyscallError("mkdir" if directory else "create", e.errno or errno.EIO, repr(rel)) from None


def fstatfs_type(fd: int) -> int:
    """The f_type magic of the filesystem `fd` is on (PROC_SUPER_MAGIC, SYSFS_MAGIC...)."""
    buf = bytearray(120)  # struct statfs; f_type (a long) comes first
    call("fstatfs", fd, buf, detail=f"fd {fd}")
    return int.from_bytes(buf[:8], sys.byteorder, signed=True)


PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572
TMPFS_MAGIC = 0x01021994
DEVPTS_SUPER_MAGIC = 0x1CD1
