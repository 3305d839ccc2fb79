"""Process attributes: prctl(2), pidfds, close_range, hostname, keyrings, personality."""

from __future__ import annotations

import os
import sys

from jaula.linux.libc import call, fsencode, u64s

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
    return call("prctl", option, arg2, arg3, arg4, arg5, detail=str(option))


def set_dumpable(on: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if on else 0)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_name(name: str) -> None:
    call("prctl", PR_SET_NAME, fsencode(name[:15]), 0, 0, 0)


def pidfd_open(pid: int) -> int:
    return call("pidfd_open", pid, 0, detail=f"pid {pid}")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    call("pidfd_send_signal", pidfd, sig, None, 0, detail=f"signal {sig}")


def close_range_cloexec(first: int) -> None:
    """Mark every fd from `first` up close-on-exec: nothing of the host passes an execve."""
    call("close_range", first, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC, detail=f"{first}..")


def sethostname(name: str) -> None:
    b = name.encode()
    call("sethostname", b, len(b), detail=repr(name))


def setdomainname(name: str) -> None:
    b = name.encode()
    call("setdomainname", b, len(b), detail=repr(name))


def join_session_keyring(name: str | None = None) -> int:
    """A fresh session keyring, so the container never shares the host's keys."""
    return call("keyctl", KEYCTL_JOIN_SESSION_KEYRING, fsencode(name), 0, 0, 0, detail="join session keyring")


def personality(persona: int) -> None:
    call("personality", persona, detail=hex(persona))


def setgroups(gids: list[int]) -> None:
    os.setgroups(gids)


RLIM_INFINITY = 2**64 - 1


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """prlimit64(2) on ourselves: errno as the kernel gives it (Python's `resource` turns EPERM and
    EINVAL into ValueError, and costs a module load on the hot path)."""
    call("prlimit64", 0, resource, u64s(soft, hard), None, detail=f"resource {resource} soft={soft} hard={hard}")


def getrlimit(resource: int) -> tuple[int, int]:
    buf = bytearray(16)
    call("prlimit64", 0, resource, None, buf, detail=f"resource {resource}")
    return int.from_bytes(buf[:8], sys.byteorder), int.from_bytes(buf[8:], sys.byteorder)


# fcntl(2) file seals (memfd_create(2)); Python's fcntl module is an import the hot path skips.
F_ADD_SEALS = 1033
F_GET_SEALS = 1034
F_SEAL_SEAL = 0x1
F_SEAL_SHRINK = 0x2
F_SEAL_GROW = 0x4
F_SEAL_WRITE = 0x8


def add_seals(fd: int, seals: int) -> None:
    call("fcntl", fd, F_ADD_SEALS, seals, detail=f"F_ADD_SEALS {seals:#x} on fd {fd}")


def get_seals(fd: int) -> int:
    return call("fcntl", fd, F_GET_SEALS, detail=f"F_GET_SEALS on fd {fd}")
