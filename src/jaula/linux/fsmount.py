"""The filesystem context API (fsopen, fsconfig, fsmount) and filesystem freezing.

fsconfig(FSCONFIG_SET_FD) gives overlayfs its layers as file descriptors (6.13+ for
"lowerdir+", "upperdir", "workdir"): a detached idmapped mount can then be a layer without
ever being attached anywhere in the tree.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from jaula.errors import SyscallError
from jaula.linux.libc import call, fsencode

FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1

FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_BINARY = 2
FSCONFIG_SET_PATH = 3
FSCONFIG_SET_PATH_EMPTY = 4
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
FSCONFIG_CMD_RECONFIGURE = 7

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def _log(fs_fd: int) -> str:
    """The messages the filesystem left on its context (read(2) of the fs fd), for the error text."""
    lines = []
    for _ in range(8):
        try:
            data = os.read(fs_fd, 1024)
        except OSError:
            break
        if not data:
            break
        lines.append(data.decode(errors="replace").strip())
    return "; ".join(lines)


class FsContext:
    """A filesystem being configured: `set`, `set_fd`, `flag`, then `mount()` for a detached mount fd."""

    def __init__(self, fstype: str):
        self.fstype = fstype
        # call(): the C module where it is built, not ctypes (15 us a call, 10 calls a mount)
        self.fd = call("fsopen", fsencode(fstype), FSOPEN_CLOEXEC, detail=repr(fstype))

    def _config(self, cmd: int, key: str | None, value: object, aux: int, what: str) -> None:
        try:
            call("fsconfig", self.fd, cmd, fsencode(key), value, aux, detail=f"{self.fstype} {what}")
        except SyscallError as e:
            log = _log(self.fd)
            if log:
                raise SyscallError(e.call, e.errno, f"{e.detail} ({log})") from None
            raise

    def set(self, key: str, value: str) -> None:
        self._config(FSCONFIG_SET_STRING, key, fsencode(value), 0, f"{key}={value}")

    def flag(self, key: str) -> None:
        self._config(FSCONFIG_SET_FLAG, key, None, 0, key)

    def set_fd(self, key: str, fd: int, what: str = "") -> None:
        self._config(FSCONFIG_SET_FD, key, None, fd, f"{key}=fd {fd}{' (' + what + ')' if what else ''}")

    def mount(self, attr_flags: int = 0) -> int:
        """Create the superblock and return a detached mount fd (close-on-exec)."""
        self._config(FSCONFIG_CMD_CREATE, None, None, 0, "create")
        return call("fsmount", self.fd, FSMOUNT_CLOEXEC, attr_flags, detail=self.fstype)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> FsContext:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def frozen(path: str) -> Iterator[None]:
    """Hold the filesystem mounted at `path` frozen (FIFREEZE): writers block, its image is consistent."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as e:
            raise SyscallError("ioctl(FIFREEZE)", e.errno or 0, repr(path)) from None
        try:
            yield
        finally:
            try:
                fcntl.ioctl(fd, FITHAW, 0)
            except OSError as e:
                raise SyscallError("ioctl(FITHAW)", e.errno or 0, repr(path)) from None
    finally:
        os.close(fd)
