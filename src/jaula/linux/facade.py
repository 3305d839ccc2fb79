"""The syscalls rootfs setup makes, behind one object, so tests can swap in a recording fake.

`Real` calls the kernel; `jaula.linux.fake.Recording` records the calls (youki's Syscall trait).
"""

from __future__ import annotations

import os

from jaula.linux import fs, kfile, mount


class Real:
    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
        mount.mount(source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        mount.umount2(target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        mount.pivot_root(new_root, put_old)

    def move_mount(self, from_fd: int, to_fd: int) -> None:
        mount.move_mount_to_fd(from_fd, to_fd)

    def mount_setattr(self, fd: int, path: str, flags: int, attr_set: int = 0, attr_clr: int = 0, propagation: int = 0, userns_fd: int = 0) -> None:
        mount.mount_setattr(fd, path, flags, attr_set, attr_clr, propagation, userns_fd)

    def chdir(self, path: str | int) -> None:
        os.chdir(path)

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def open_in_root(self, root_fd: int, path: str, flags: int = os.O_PATH) -> int:
        return fs.open_in_root(root_fd, path, flags)

    def make_in_root(self, root_fd: int, path: str, directory: bool, mode: int = 0o755) -> int:
        return fs.make_in_root(root_fd, path, directory, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def fstatfs_type(self, fd: int) -> int:
        return fs.fstatfs_type(fd)

    def statvfs_flags(self, path: str) -> int:
        return os.statvfs(path).f_flag

    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def write_file(self, path: str, data: str) -> None:
        kfile.write_kernel_file(path, data, os.O_NOFOLLOW)
