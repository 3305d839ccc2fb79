"""The C library through ctypes, raw syscall numbers, and errno checking.

Python 3.11 lacks os.unshare/os.setns and the new mount API, so they are reached here.
"""

from __future__ import annotations

import ctypes
import os

from jaula.errors import SyscallError

libc = ctypes.CDLL(None, use_errno=True)
_syscall = libc.syscall
_syscall.restype = ctypes.c_long

# Numbers from 424 on are the same on every architecture (the unified syscall table).
_ARCH_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "seccomp": 317, "keyctl": 250, "personality": 135},
    "aarch64": {"pivot_root": 41, "seccomp": 277, "keyctl": 219, "personality": 92},
}
NR: dict[str, int] = {
    "pidfd_send_signal": 424,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "pidfd_open": 434,
    "clone3": 435,
    "close_range": 436,
    "openat2": 437,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    **_ARCH_NUMBERS.get(os.uname().machine, _ARCH_NUMBERS["x86_64"]),
}


def fail(call: str, detail: str = "") -> SyscallError:
    """The error for the C call that just returned -1."""
    return SyscallError(call, ctypes.get_errno(), detail)


def check(ret: int, call: str, detail: str = "") -> int:
    if ret < 0:
        raise fail(call, detail)
    return ret


def syscall(name: str, *args: object, detail: str = "") -> int:
    """A raw syscall by name; raises SyscallError naming `name` and `detail`."""
    ret = _syscall(ctypes.c_long(NR[name]), *args)
    if ret < 0:
        raise fail(name, detail)
    return ret


def fsencode(path: str | bytes | None) -> bytes | None:
    return None if path is None else os.fsencode(path)
