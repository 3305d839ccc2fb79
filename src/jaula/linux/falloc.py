"""fallocate(2) modes Python's os.posix_fallocate does not reach: punching a hole."""

from __future__ import annotations

import ctypes

from jaula.linux.libc import check, libc

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
libc.fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the blocks of [offset, offset+length) (they read as zeros after); the size stays.
    Supported by ext4, xfs, btrfs and tmpfs; EOPNOTSUPP elsewhere."""
    check(libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length),
          "fallocate(PUNCH_HOLE)", f"fd {fd}")
