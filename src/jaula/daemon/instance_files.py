"""Files inside an instance's root, for the API's push and pull: every path is resolved with
openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from an fd of the instance's own root, so a
symlink the instance planted ("/tmp/x -> /etc/shadow", "../../..") resolves inside the instance,
never on the host.

- the root: /proc/PID/root of the running instance's init (its mount namespace's view: the
  idmapped volume and what the instance mounted), its pid checked against the recorded start
  time before and after the open (a reused pid is refused);
- a push writes a new file beside the target (O_EXCL, O_NOFOLLOW) and renames it over the target:
  a symlink there is replaced, not followed, and a failure leaves the old file as it was;
- ids: the API speaks the instance's ids (0 = its root); on the host they are `base + id`
  (instances.model.ID_RANGE ids from the instance's idmap_base; 0 for a privileged instance);
  a push creates as those ids (the thread's fsuid/fsgid, jaula.linux.fsid): a file system the
  instance mounted itself (its /tmp) refuses an owner its user namespace does not map;
- /proc and /sys inside are refused (host root writing there reaches kernel state), as are
  paths that are neither a regular file nor a directory (devices, fifos, sockets).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from typing import Any

from jaula.errors import BadState, ConfigError, JaulaError, NotFound
from jaula.linux import fs, fsid

ID_RANGE = 65536
OVERFLOW_ID = 65534      # what an id outside the instance's range shows as (the kernel's overflowuid)


class Meta:
    def __init__(self, type_: str, uid: int, gid: int, mode: int, size: int = 0) -> None:
        self.type, self.uid, self.gid, self.mode, self.size = type_, uid, gid, mode, size

    def headers(self) -> dict[str, str]:
        return {"X-Jaula-Type": self.type, "X-Jaula-Uid": str(self.uid), "X-Jaula-Gid": str(self.gid),
                "X-Jaula-Mode": f"{self.mode:04o}"}


def open_root(pid: int | None, pid_start: int | None, name: str) -> int:
    """An O_PATH fd of the running instance's root (its init's /proc/PID/root)."""
    from jaula.oci.state import proc_start_time

    if not pid or pid_start is None or proc_start_time(pid) != pid_start:
        raise BadState(f"Instance {name!r} has no running init jaulad knows of: start it first")
    try:
        fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise BadState(f"Instance {name!r}: its root cannot be reached ({os.strerror(e.errno or 0)}): "
                       "is it running?") from None
    if proc_start_time(pid) != pid_start:
        os.close(fd)
        raise BadState(f"Instance {name!r} stopped while its root was opened")
    return fd


def check_path(path: str) -> str:
    if not path or not path.startswith("/") or "\0" in path:
        raise ConfigError(f"path {path!r}: give an absolute path inside the instance, e.g. /etc/hostname")
    return path


def _split(path: str) -> tuple[str, str]:
    parts = [p for p in check_path(path).split("/") if p not in ("", ".")]
    if not parts or parts[-1] == "..":
        raise ConfigError(f"path {path!r}: name a file or folder, not the root or '..'")
    return "/" + "/".join(parts[:-1]), parts[-1]


def _open(root: int, path: str, flags: int, what: str) -> int:
    try:
        return fs.open_in_root(root, path, flags)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise NotFound(f"{what} {path!r} not found inside the instance") from None
        if e.errno == errno.ENOTDIR:
            raise ConfigError(f"{what} {path!r}: a part of it is not a folder") from None
        raise JaulaError(f"{what} {path!r}: {os.strerror(e.errno or 0)}") from None


def _refuse_kernel_fs(fd: int, path: str) -> None:
    if fs.fstatfs_type(fd) in (fs.PROC_SUPER_MAGIC, fs.SYSFS_MAGIC):
        raise ConfigError(f"path {path!r} is on /proc or /sys inside the instance: not pushed or pulled "
                          "(use jaula exec there)")


def inside_id(host_id: int, base: int) -> int:
    return host_id - base if base <= host_id < base + ID_RANGE else OVERFLOW_ID


def host_id(inner: int, base: int, what: str) -> int:
    if not 0 <= inner < ID_RANGE:
        raise ConfigError(f"{what} {inner}: not an id of the instance (0 to {ID_RANGE - 1})")
    return base + inner


def _meta(st: os.stat_result, base: int) -> Meta:
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
    return Meta(kind, inside_id(st.st_uid, base), inside_id(st.st_gid, base), stat.S_IMODE(st.st_mode), st.st_size)


def pull(root: int, path: str, base: int, follow: bool = True) -> tuple[Meta, int | list[str] | str]:
    """(meta, an fd open for reading) of a regular file, or (meta, sorted entries) of a folder;
    without `follow`, (meta, its target) of a symlink (a recursive pull skips them: a link to a
    folder above would never end)."""
    if not follow and check_path(path).rstrip("/"):
        with _parent(root, path) as (pfd, name):
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFound(f"path {path!r} not found inside the instance") from None
            if stat.S_ISLNK(st.st_mode):
                meta = _meta(st, base)
                meta.type = "symlink"
                return meta, os.readlink(name, dir_fd=pfd)
    fd = _open(root, check_path(path), os.O_PATH, "path")
    try:
        _refuse_kernel_fs(fd, path)
        st = os.fstat(fd)
        meta = _meta(st, base)
        if stat.S_ISDIR(st.st_mode):
            dfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                return meta, sorted(os.listdir(dfd))
            finally:
                os.close(dfd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"path {path!r} is neither a regular file nor a folder (a device, fifo or socket)")
        return meta, os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _parent(root: int, path: str) -> Iterator[tuple[int, str]]:
    parent, name = _split(path)
    pfd = _open(root, parent, os.O_PATH | os.O_DIRECTORY, "folder")
    try:
        _refuse_kernel_fs(pfd, path)
        yield pfd, name
    finally:
        os.close(pfd)


def push_file(root: int, path: str, chunks: Iterator[bytes], *, uid: int, gid: int, mode: int, base: int) -> None:
    """Write a regular file at `path` (replacing what is there, a symlink included, never a folder)."""
    huid, hgid = host_id(uid, base, "uid"), host_id(gid, base, "gid")
    with _parent(root, path) as (pfd, name), fsid.as_ids(huid, hgid):
        tmp = f".jaula-push-{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
        except OSError as e:
            raise JaulaError(f"push {path!r}: create in its folder: {os.strerror(e.errno or 0)}") from None
        try:
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                os.fchown(fd, huid, hgid)
                os.fchmod(fd, mode)   # after the chown, which clears set-id bits
            finally:
                os.close(fd)
            try:
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            except OSError as e:
                if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise ConfigError(f"push {path!r}: a folder is there (push into it: {path.rstrip('/')}/NAME)") from None
                raise
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=pfd)
            if isinstance(e, OSError) and not isinstance(e, JaulaError):
                raise JaulaError(f"push {path!r}: {os.strerror(e.errno or 0)}") from None
            raise


def push_directory(root: int, path: str, *, uid: int, gid: int, mode: int, base: int) -> None:
    """Make a folder at `path` (its parent must exist); an existing folder gets the owner and mode."""
    huid, hgid = host_id(uid, base, "uid"), host_id(gid, base, "gid")
    with _parent(root, path) as (pfd, name), fsid.as_ids(huid, hgid):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=pfd)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        except OSError as e:
            raise ConfigError(f"push {path!r}: something other than a folder is there "
                              f"({os.strerror(e.errno or 0)})") from None
        try:
            os.fchown(fd, huid, hgid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def parse_mode(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f"mode {text!r}: give octal permission bits, e.g. 0644") from None
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f"mode {text!r}: permission bits go from 0000 to 7777")
    return mode


def describe(meta: Meta) -> dict[str, Any]:
    return {"type": meta.type, "uid": meta.uid, "gid": meta.gid, "mode": f"{meta.mode:04o}", "size": meta.size}
