"""Capabilities: names, capget(2)/capset(2), the bounding and ambient sets."""

from __future__ import annotations

import errno
import os
import sys

from jaula.errors import SyscallError
from jaula.linux.libc import NR, call, raw, u32s
from jaula.linux.proc import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_CAPBSET_READ,
    prctl,
)

NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]
BY_NAME = {n: i for i, n in enumerate(NAMES)}

_VERSION_3 = 0x20080522


_last: int | None = None


def last_cap() -> int:
    """The highest capability this kernel knows (read once per process, and by a runtime before
    it forks an init: the init then has it without a read of its container's /proc)."""
    global _last
    if _last is None:
        try:
            fd = os.open("/proc/sys/kernel/cap_last_cap", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _last = int(os.read(fd, 64))
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return len(NAMES) - 1
    return _last


def to_mask(names: list[str]) -> int:
    mask = 0
    for n in names:
        mask |= 1 << BY_NAME[n]
    return mask


def to_names(mask: int) -> list[str]:
    return [n for i, n in enumerate(NAMES) if mask >> i & 1]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of `pid` (0: this thread)."""
    data = bytearray(24)  # struct __user_cap_data_struct[2]: effective, permitted, inheritable (u32 each)
    call("capget", bytearray(u32s(_VERSION_3, pid)), data, detail=f"pid {pid}")  # the kernel may write the header
    words = [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, 24, 4)]
    return tuple((words[3 + k] << 32) | words[k] for k in range(3))  # type: ignore[return-value]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    data = u32s(*(mask >> (32 * i) for i in range(2) for mask in (effective, permitted, inheritable)))
    call("capset", bytearray(u32s(_VERSION_3, 0)), data, detail=f"eff={effective:#x} perm={permitted:#x} inh={inheritable:#x}")


def bounding_has(cap: int) -> bool:
    return prctl(PR_CAPBSET_READ, cap) == 1


def bounding_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def bounding_keep(mask: int) -> None:
    """Drop from the bounding set every capability of this kernel that `mask` lacks: one prctl each,
    straight through the raw syscall (~40 of them on every container start)."""
    nr = NR["prctl"]
    for cap in range(last_cap() + 1):
        if not mask >> cap & 1:
            ret = raw(nr, PR_CAPBSET_DROP, cap, 0, 0, 0)
            if ret < 0 and ret != -errno.EINVAL:  # EINVAL: a cap this kernel lacks
                raise SyscallError("prctl", -ret, f"PR_CAPBSET_DROP {NAMES[cap] if cap < len(NAMES) else cap}")


def ambient_clear() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
