"""Namespaces: unshare(2), setns(2) and their flags."""

from __future__ import annotations

import errno
import os

from jaula.errors import SyscallError
from jaula.linux.libc import call

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_FS = 0x00000200
CLONE_FILES = 0x00000400
CLONE_SYSVSEM = 0x00040000

# OCI namespace type -> (clone flag, name of the /proc/PID/ns entry)
NAMESPACES: dict[str, tuple[int, str]] = {
    "user": (CLONE_NEWUSER, "user"),
    "mount": (CLONE_NEWNS, "mnt"),
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "uts": (CLONE_NEWUTS, "uts"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "time": (CLONE_NEWTIME, "time"),
}


def unshare(flags: int) -> None:
    call("unshare", flags, detail=hex(flags))


def setns(fd: int, nstype: int = 0, what: str = "") -> None:
    call("setns", fd, nstype, detail=what)


def setns_path(path: str, nstype: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, nstype, repr(path))
    finally:
        os.close(fd)


def available(kind: str) -> bool:
    """Whether this kernel has namespace type `kind` (an OCI name)."""
    return os.path.exists(f"/proc/self/ns/{NAMESPACES[kind][1]}")


def same_namespace(path: str, pid: int | str = "self") -> bool:
    """Whether the namespace at `path` is the one process `pid` is in."""
    kind = os.path.basename(path)
    a, b = os.stat(path), os.stat(f"/proc/{pid}/ns/{kind}")
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def userns_with_maps(uid_map: str, gid_map: str) -> int:
    """An fd of a new user namespace with these maps (uid_map/gid_map text), held by no process
    once we return: a forked child unshares and waits; we write its maps and open its namespace.
    Used to idmap mounts (mount_setattr takes a user namespace fd)."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.close(r2)
            unshare(CLONE_NEWUSER)
            os.write(w2, b"1")
            os.read(r, 1)  # hold the namespace until the parent has its fd
        finally:
            os._exit(0)
    os.close(r)
    os.close(w2)
    try:
        if os.read(r2, 1) != b"1":
            raise SyscallError("unshare", errno.EPERM, "CLONE_NEWUSER in the helper process for an idmapped mount")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise SyscallError("write", e.errno or errno.EINVAL, f"{text.strip()!r} to /proc/{pid}/{name}") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(w)
        os.close(r2)
        os.waitpid(pid, 0)
