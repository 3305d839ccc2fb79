"""seccomp user notification for a supervisor, and struct sysinfo: ioctls and layouts, no policy.

Small on purpose (fcntl and struct only, no ctypes): the console keeper imports it, and its
memory is per host. `jaula.linux.seccomp` builds and loads filters; this module answers them.
Layouts: include/uapi/linux/seccomp.h, include/uapi/linux/sysinfo.h (x86_64, aarch64: LP64).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

# _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp), _IOW('!', 2, __u64)
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# AUDIT_ARCH_* of seccomp_data.arch (include/uapi/linux/audit.h)
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
NATIVE_ARCHES = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}

_NOTIF = struct.Struct("=QII iI Q 6Q")  # id, pid, flags, data{nr, arch, ip, args[6]}: 80 bytes
_NOTIF_RESP = struct.Struct("=QqiI")     # id, val, error, flags: 24 bytes
_ID = struct.Struct("=Q")

# struct sysinfo of an LP64 ABI: uptime, loads[3], totalram, freeram, sharedram, bufferram,
# totalswap, freeswap, procs (u16), totalhigh, freehigh, mem_unit (u32), _f[0]; padded to 112
SYSINFO = struct.Struct("=q3Q6QH6x2QI4x")
SI_LOAD_SHIFT = 16   # loads are fixed point: 1.0 is 1 << 16


class Notif:
    """One struct seccomp_notif: a syscall of `pid` (in the receiver's pid namespace) waiting for its answer."""

    __slots__ = ("arch", "args", "flags", "id", "ip", "nr", "pid")

    def __init__(self, buf: bytes) -> None:
        self.id, self.pid, self.flags, self.nr, self.arch, self.ip, *args = _NOTIF.unpack(buf)
        self.args = tuple(args)


def recv(listener: int) -> Notif:
    """SECCOMP_IOCTL_NOTIF_RECV. OSError ENOENT: the caller went away between poll and recv
    (killed, or its syscall interrupted); EAGAIN-like blocking only when nothing is pending."""
    buf = bytearray(_NOTIF.size)  # the kernel wants it zeroed
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    return Notif(buf)


def id_valid(listener: int, notif_id: int) -> bool:
    """Whether the notification is still pending (its caller alive and waiting): checked after
    opening the caller's /proc files, before trusting them (its pid may have been reused)."""
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, bytearray(_ID.pack(notif_id)), True)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def send(listener: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> None:
    """SECCOMP_IOCTL_NOTIF_SEND: the syscall returns `val`, or fails with `error` (a positive
    errno, sent negated), or (flags CONTINUE) is run by the kernel as if not filtered.
    OSError ENOENT: the caller is gone."""
    buf = bytearray(_NOTIF_RESP.pack(notif_id, val, -error if error > 0 else error, flags))
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, buf, True)


def pack_sysinfo(uptime: int, loads: tuple[int, int, int], totalram: int, freeram: int, sharedram: int,
                 bufferram: int, totalswap: int, freeswap: int, procs: int, mem_unit: int) -> bytes:
    """The 112 bytes of an LP64 struct sysinfo (totalhigh, freehigh 0 on 64-bit)."""
    return SYSINFO.pack(uptime, *loads, totalram, freeram, sharedram, bufferram, totalswap, freeswap,
                        min(procs, 0xFFFF), 0, 0, mem_unit)


def write_mem(mem_fd: int, addr: int, data: bytes) -> None:
    """Write `data` at `addr` through an open /proc/PID/mem; OSError EFAULT when the range is not
    all mapped (the kernel reads EIO there) or past what an off_t reaches."""
    try:
        n = os.pwrite(mem_fd, data, addr)
    except OverflowError:
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT)) from None
    except OSError as e:
        if e.errno in (errno.EIO, errno.EINVAL, errno.EFAULT):
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT)) from None
        raise
    if n != len(data):
        raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
