"""A recording stand-in for `facade.Real`: unit tests assert the calls rootfs setup would make."""

from __future__ import annotations

import os
import stat


class Recording:
    """Records every call as a tuple; paths that `exists` names are files or directories."""

    def __init__(self, dirs: set[str] | None = None, files: set[str] | None = None, fstype: dict[str, int] | None = None,
                 nodes: dict[str, tuple[int, int]] | None = None):
        self.calls: list[tuple] = []
        self.dirs = set(dirs or ())
        self.files = set(files or ())
        self.nodes = dict(nodes or {})  # path -> (st_mode, st_rdev): device nodes, made by mknod or given
        self.fstype = fstype or {}
        self._fds: dict[int, str] = {}
        self._next = 100

    def _fd(self, path: str) -> int:
        self._next += 1
        self._fds[self._next] = path
        return self._next

    def path_of(self, fd: int) -> str:
        return self._fds[fd]

    def mount(self, source, target, fstype, flags=0, data=None):
        self.calls.append(("mount", self._name(source), self._name(target), fstype, flags, data))

    def umount2(self, target, flags=0):
        self.calls.append(("umount2", self._name(target), flags))

    def pivot_root(self, new_root, put_old):
        self.calls.append(("pivot_root", new_root, put_old))

    def move_mount(self, from_fd, to_fd):
        self.calls.append(("move_mount", from_fd, "fd:" + self._fds.get(to_fd, str(to_fd))))

    def mount_setattr(self, fd, path, flags, attr_set=0, attr_clr=0, propagation=0, userns_fd=0):
        self.calls.append(("mount_setattr", self._fds.get(fd, fd), path, flags, attr_set, attr_clr, propagation))

    def chdir(self, path):
        self.calls.append(("chdir", self._fds.get(path, path) if isinstance(path, int) else path))

    def open(self, path, flags, mode=0o777):
        return self._fd(path)

    def open_in_root(self, root_fd, path, flags=os.O_PATH):
        full = "/" + path.strip("/")
        if full not in self.dirs and full not in self.files and full not in self.nodes:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self._fd(full)

    def make_in_root(self, root_fd, path, directory, mode=0o755):
        full = "/" + path.strip("/")
        parent = os.path.dirname(full)
        while parent != "/":  # like the real one, it makes the parents too
            self.dirs.add(parent)
            parent = os.path.dirname(parent)
        (self.dirs if directory else self.files).add(full)
        self.calls.append(("make", full, "dir" if directory else "file"))
        return self._fd(full)

    def close(self, fd):
        pass

    def fstat(self, fd):
        p = self._fds[fd]
        if p in self.nodes:
            mode, rdev = self.nodes[p]
            return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": rdev})
        mode = stat.S_IFDIR | 0o755 if p in self.dirs else stat.S_IFREG | 0o644
        return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    def stat(self, path):
        if path in self.files:
            return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    def fstatfs_type(self, fd):
        return self.fstype.get(self._fds[fd], 0)

    def statvfs_flags(self, path):
        return 0

    def mknod(self, path, mode, device):
        name = self._name(path)
        self.calls.append(("mknod", name, mode, device))
        if name.startswith("fd:"):
            self.nodes[name[3:]] = (mode, device)

    def symlink(self, target, path):
        self.calls.append(("symlink", target, self._name(path)))

    def chown(self, path, uid, gid):
        self.calls.append(("chown", self._name(path), uid, gid))

    def chmod(self, path, mode):
        self.calls.append(("chmod", self._name(path), mode))

    def write_file(self, path, data):
        self.calls.append(("write", self._name(path), data))

    def _name(self, target):
        """Show /proc/self/fd/N[/name] targets as the container path they stand for."""
        if isinstance(target, str) and target.startswith("/proc/self/fd/"):
            num, _, rest = target[len("/proc/self/fd/"):].partition("/")
            fd = int(num)
            if fd in self._fds:
                return "fd:" + self._fds[fd] + ("/" + rest if rest else "")
        return target
