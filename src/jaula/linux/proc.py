"""Process attributes: prctl(2), pidfds, close_range, hostname, keyrings, personality."""

from __future__ import annotations

import ctypes
import os

from jaula.linux.libc import check, fsencode, libc, syscall

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 1 << 2

KEYCTL_JOIN_SESSION_KEYRING = 1
KEY_SPEC_SESSION_KEYRING = -3


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    return check(ret, "prctl", str(option))


def set_dumpable(on: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if on else 0)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_name(name: str) -> None:
    libc.prctl(PR_SET_NAME, fsencode(name[:15]), 0, 0, 0)


def pidfd_open(pid: int) -> int:
    return syscall("pidfd_open", pid, 0, detail=f"pid {pid}")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    syscall("pidfd_send_signal", pidfd, sig, None, 0, detail=f"signal {sig}")


def close_range_cloexec(first: int) -> None:
    """Mark every fd from `first` up close-on-exec: nothing of the host passes an execve."""
    syscall("close_range", ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(CLOSE_RANGE_CLOEXEC), detail=f"{first}..")


def sethostname(name: str) -> None:
    b = name.encode()
    check(libc.sethostname(b, len(b)), "sethostname", repr(name))


def setdomainname(name: str) -> None:
    b = name.encode()
    check(libc.setdomainname(b, len(b)), "setdomainname", repr(name))


def join_session_keyring(name: str | None = None) -> int:
    """A fresh session keyring, so the container never shares the host's keys."""
    return syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, fsencode(name), 0, 0, 0, detail="join session keyring")


def personality(persona: int) -> None:
    syscall("personality", ctypes.c_ulong(persona), detail=hex(persona))


def setgroups(gids: list[int]) -> None:
    os.setgroups(gids)
