"""The console log's cap: an instance's init writes its stdout and stderr straight into its
console log (O_APPEND, no process of ours in between), so jaulad keeps the file to its last
KEEP bytes by punching a hole over the older part (the blocks are freed; the file's size, and
so the init's append offset, stay). Readers read only the last KEEP bytes.

Why not a pty or pipe read by jaulad (a ring buffer in memory): the init would then depend on
jaulad to drain its output, and a `kill -9` of jaulad (live restore keeps instances running)
would block or hang up every init; the file needs no reader.
"""

from __future__ import annotations

import contextlib
import errno
import os

KEEP = 128 * 1024        # bytes of console output kept
CAP_INTERVAL_S = 5.0     # how often jaulad caps the logs of running instances


def cap(path: str | os.PathLike[str], keep: int = KEEP) -> int:
    """Free what lies before the last `keep` bytes (whole blocks); the bytes freed now. A file
    system without hole punching (EOPNOTSUPP) is truncated instead once over 8x `keep`."""
    from jaula.linux.falloc import punch_hole

    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        st = os.fstat(fd)
        block = st.st_blksize or 4096
        end = (st.st_size - keep) // block * block
        allocated = st.st_blocks * 512
        if end <= 0 or allocated <= keep + block:
            return 0
        try:
            punch_hole(fd, 0, end)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            if st.st_size > 8 * keep:
                os.ftruncate(fd, 0)
                return st.st_size
            return 0
        return max(0, allocated - os.fstat(fd).st_blocks * 512)
    finally:
        os.close(fd)


def tail(path: str | os.PathLike[str], keep: int = KEEP) -> bytes:
    """The last `keep` bytes of the log (b"" when there is none)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    with contextlib.closing(os.fdopen(fd, "rb")) as f:
        size = os.fstat(fd).st_size
        f.seek(max(0, size - keep))
        return f.read(keep)
