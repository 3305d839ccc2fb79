"""The console log's cap: an instance's console output is appended to its console log (O_APPEND:
an app's init writes there itself; a system instance's pty is drained there by the console
keeper, console_keeper.py), so the file is kept to its last KEEP bytes by punching a hole over the
older part (the blocks are freed; the file's size, and so the writers' append offset, stay).
Readers read only the last KEEP bytes. jaulad caps running instances' logs every CAP_INTERVAL_S;
the keeper caps the logs it writes every KEEPER_CAP_BYTES, so they stay small while jaulad is down.

Why a file and not a ring buffer in jaulad's memory: the output must outlive a `kill -9` of
jaulad (live restore keeps instances running), and nothing may block the init meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os

KEEP = 128 * 1024        # bytes of console output kept
CAP_INTERVAL_S = 5.0     # how often jaulad caps the logs of running instances
KEEPER_CAP_BYTES = 4 * KEEP  # the console keeper caps a log each time it appended this much


def cap(path: str | os.PathLike[str], keep: int = KEEP) -> int:
    """Free what lies before the last `keep` bytes (whole blocks); the bytes freed now. A file
    system without hole punching (EOPNOTSUPP) is truncated instead once over 8x `keep`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return cap_fd(fd, keep)
    finally:
        os.close(fd)


def cap_fd(fd: int, keep: int = KEEP) -> int:
    """`cap` on an fd open for writing (the console keeper's own O_APPEND fd of the log)."""
    from jaula.linux.falloc import punch_hole

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
