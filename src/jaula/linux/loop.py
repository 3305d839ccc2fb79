"""Loop devices through /dev/loop-control and the loop ioctls (loop(4)), without losetup.

A device is taken with LOOP_CTL_GET_FREE and bound in one call with LOOP_CONFIGURE (5.8+),
which closes the race of the older LOOP_SET_FD + LOOP_SET_STATUS64 pair. Another process may
take the same free device between the two calls: LOOP_CONFIGURE then fails with EBUSY and we
ask for another one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from jaula.errors import SyscallError

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82

LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_PARTSCAN = 8
LO_FLAGS_DIRECT_IO = 16

LO_NAME_SIZE = 64
LO_KEY_SIZE = 32


class LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_crypt_name", ctypes.c_char * LO_NAME_SIZE),
        ("lo_encrypt_key", ctypes.c_uint8 * LO_KEY_SIZE),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def _ioctl(fd: int, request: int, arg: object, call: str, detail: str) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise SyscallError(call, e.errno or errno.EIO, detail) from None


def attach(backing: str, autoclear: bool = True, read_only: bool = False, attempts: int = 16) -> tuple[str, int]:
    """Bind a free loop device to file `backing`; returns (device path, open fd of the device).

    With `autoclear` the kernel unbinds the device when its last user goes away (the fd is
    closed and whatever was mounted from it is unmounted), so a crash leaks no device.
    """
    flags = os.O_RDONLY if read_only else os.O_RDWR
    file_fd = os.open(backing, flags | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(attempts):
                try:
                    number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                except OSError as e:
                    raise SyscallError("ioctl(LOOP_CTL_GET_FREE)", e.errno or errno.EIO, "/dev/loop-control") from None
                dev = f"/dev/loop{number}"
                dev_fd = os.open(dev, flags | os.O_CLOEXEC)
                cfg = LoopConfig()
                cfg.fd = file_fd
                cfg.info.lo_flags = (LO_FLAGS_AUTOCLEAR if autoclear else 0) | (LO_FLAGS_READ_ONLY if read_only else 0)
                cfg.info.lo_file_name = os.fsencode(backing)[: LO_NAME_SIZE - 1]
                try:
                    fcntl.ioctl(dev_fd, LOOP_CONFIGURE, cfg)
                except OSError as e:
                    os.close(dev_fd)
                    if e.errno == errno.EBUSY:  # taken by someone else since GET_FREE
                        continue
                    raise SyscallError("ioctl(LOOP_CONFIGURE)", e.errno or errno.EIO, f"{dev} on {backing!r}") from None
                return dev, dev_fd
        finally:
            os.close(ctl)
    finally:
        os.close(file_fd)
    raise SyscallError("ioctl(LOOP_CONFIGURE)", errno.EBUSY, f"no free loop device for {backing!r} after {attempts} tries")


def detach(dev: str) -> None:
    """Unbind `dev` now (LOOP_CLR_FD); with autoclear set it goes once its users are gone."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _ioctl(fd, LOOP_CLR_FD, 0, "ioctl(LOOP_CLR_FD)", dev)
    finally:
        os.close(fd)


def set_capacity(dev: str) -> None:
    """Make `dev` see its backing file's new size (after the file grew)."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _ioctl(fd, LOOP_SET_CAPACITY, 0, "ioctl(LOOP_SET_CAPACITY)", dev)
    finally:
        os.close(fd)


def backing_file(dev: str) -> str | None:
    """The file bound to loop device `dev`, or None when it is free (from sysfs)."""
    name = os.path.basename(dev)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except FileNotFoundError:
        return None


def bound() -> dict[str, str]:
    """Every bound loop device -> its backing file (a deleted file ends in ' (deleted)')."""
    out: dict[str, str] = {}
    for name in sorted(os.listdir("/sys/block")):
        if name.startswith("loop") and (path := backing_file(name)) is not None:
            out[f"/dev/{name}"] = path
    return out


def devices_of(backing: str) -> list[str]:
    """The loop devices bound to file `backing`."""
    real = os.path.realpath(backing)
    return [dev for dev, path in bound().items() if path == real]
