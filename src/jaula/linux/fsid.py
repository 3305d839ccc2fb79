"""The calling thread's file-system ids (setfsuid(2), setfsgid(2)): files it creates are owned
by them. Per thread, unlike setuid: a worker thread of a threaded daemon can take an instance's
ids for a while without changing any other thread.

A file created on a file system an instance mounted in its user namespace (its tmpfs) must be
owned by an id mapped there, or the kernel refuses (EOVERFLOW): host root's fsuid 0 is not."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

from jaula.linux import caps
from jaula.linux.libc import libc

#: what the kernel clears from the effective set when the fsuid leaves 0 (CAP_FS_SET)
_FS_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
            "CAP_LINUX_IMMUTABLE", "CAP_MKNOD", "CAP_MAC_OVERRIDE")


def _set(fn: str, value: int) -> int:
    """setfsuid/setfsgid return the previous id (and never fail loudly): check by asking again."""
    call = getattr(libc, fn)
    call.argtypes = (ctypes.c_uint,)
    call.restype = ctypes.c_int
    previous = call(value)
    if call(value) != value:
        call(previous)
        raise PermissionError(f"{fn}({value}) was refused")
    return previous


@contextlib.contextmanager
def as_ids(uid: int, gid: int) -> Iterator[None]:
    """Create files as `uid`:`gid` in this thread, keeping the capabilities root had over files
    (the kernel drops them from the effective set when the fsuid leaves 0: raised again here)."""
    old_gid = _set("setfsgid", gid)
    try:
        old_uid = _set("setfsuid", uid)
        try:
            eff, perm, inh = caps.capget()
            caps.capset(eff | (caps.to_mask(list(_FS_CAPS)) & perm), perm, inh)
            yield
        finally:
            _set("setfsuid", old_uid)   # back to 0: the kernel gives the file capabilities back
    finally:
        _set("setfsgid", old_gid)
