"""Kernel files (cgroupfs, procfs, sysfs): one write(2) each. No ctypes: cheap to import."""

from __future__ import annotations

import errno
import os

from jaula.errors import SyscallError


def write_kernel_file(path: str, value: str, flags: int = 0) -> None:
    """One write(2) of the whole value to a kernel file (cgroupfs, procfs, sysfs), which parses
    each write on its own; never creates. Errors name the call, the value and the path."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | flags)
    except OSError as e:
        raise SyscallError("open", e.errno or errno.EIO, repr(path)) from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise SyscallError("write", e.errno or errno.EIO, f"{value!r} to {path!r}") from None
    finally:
        os.close(fd)
