"""Extract tar streams (rootfs tarballs, image layers) into a root that they cannot escape.

tarfile's own `extractall` resolves member paths with the host's path walk, so a member
`etc -> /` followed by `etc/passwd` writes the host's /etc/passwd; its `data` filter stops that
but also drops ownership, setuid bits and device nodes, which a root file tree needs. Here every
parent directory is resolved inside the root by openat2(RESOLVE_IN_ROOT) (a symlink in the tree
points inside the tree, as it will once it is an instance's root), the last component is never
followed (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW), and names that are absolute or contain '..' are
refused. Numeric owners, modes (setuid included), times and `SCHILY.xattr` extended attributes
are kept. Device nodes are skipped unless the source is trusted (our own debootstrap cache): an
instance gets its /dev from the runtime.

Layers of an OCI image go through the same extractor with `whiteouts=True`: `.wh.NAME` deletes
NAME from the layers below, `.wh..wh..opq` empties its directory of what the layers below put
there (the image-spec's "layer changesets").
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

from jaula.errors import JaulaError, SyscallError
from jaula.lazylog import getLogger
from jaula.linux.fs import make_in_root, open_in_root
from jaula.record import Record

log = getLogger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_COPY_CHUNK = 1 << 20
_TICK_BYTES = 4 << 20


class ArchiveError(JaulaError):
    """An archive was refused: a member would leave the root, or the archive is damaged."""


class UnpackStats(Record):
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    fifos: int = 0
    bytes: int = 0
    whiteouts: int = 0
    skipped_devices: int = 0
    skipped_other: int = 0
    xattr_failures: int = 0


def member_path(name: str) -> str:
    """The member's path relative to the root ('' for the root itself), or ArchiveError."""
    if "\0" in name:
        raise ArchiveError(f"Archive member {name!r} has a NUL byte in its name: refused")
    if name.startswith("/"):
        raise ArchiveError(f"Archive member {name!r} has an absolute path: refused (members must be relative to the root)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"Archive member {name!r} has a '..' component that would leave the root: refused")
    return "/".join(parts)


def _ns(mtime: float) -> int:
    return int(mtime) * 1_000_000_000 if isinstance(mtime, int) else int(mtime * 1e9)


class Unpacker:
    """Extract one or more tar streams (layers) into `root`, in order.

    `owners`: keep the members' numeric uid/gid (default: when running as root).
    `devices`: create character and block devices (default: skip and count them).
    `whiteouts`: interpret OCI whiteout files instead of extracting them.
    Call `finish()` after the last layer: directory modes and times are applied then, since
    creating entries inside a directory changes its mtime (and a 0555 directory must still be
    written into while extracting).
    """

    def __init__(self, root: Path, *, whiteouts: bool = False, devices: bool = False, owners: bool | None = None):
        self.root = Path(root)
        self.root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.whiteouts = whiteouts
        self.devices = devices
        self.owners = os.geteuid() == 0 if owners is None else owners
        self.stats = UnpackStats()
        self._dirs: dict[str, tuple[int, int]] = {}  # rel -> (mode, mtime ns), applied by finish()
        self._layer: set[str] = set()  # paths written by the current layer (whiteouts spare them)
        self._cached: tuple[str, int] | None = None  # the last parent resolved: (rel, O_PATH fd)

    def close(self) -> None:
        self._forget()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- resolution ---------------------------------------------------------------------------
    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def _parent(self, rel: str, create: bool = True) -> tuple[int, str] | None:
        """(O_PATH fd of rel's parent resolved inside the root, last component). The fd is cached:
        do not close it. With create=False, None when the parent does not exist."""
        head, _, leaf = rel.rpartition("/")
        if self._cached is not None and self._cached[0] == head:
            return self._cached[1], leaf
        try:
            fd = open_in_root(self.root_fd, head or ".", os.O_PATH | os.O_DIRECTORY)
        except SyscallError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                if not create:
                    return None
                why = "is not a directory" if e.errno == errno.ENOTDIR else "is a loop of symbolic links"
                raise ArchiveError(f"Archive member {rel!r}: a folder above it {why}") from None
            if e.errno != errno.ENOENT:
                raise
            if not create:
                return None
            try:
                fd = make_in_root(self.root_fd, head, directory=True)
            except SyscallError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise
                raise ArchiveError(f"Archive member {rel!r}: a folder above it is a symbolic link to "
                                   "something that is not in the root") from None
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise ArchiveError(f"Archive member {rel!r}: a parent of it is not a directory") from None
        self._forget()
        self._cached = (head, fd)
        return fd, leaf

    @staticmethod
    def _lstat(dfd: int, leaf: str) -> os.stat_result | None:
        try:
            return os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, dfd: int, leaf: str, st: os.stat_result, rel: str) -> None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(leaf, dir_fd=dfd)  # fd-based: never follows a symlink inside
            prefix = rel + "/"
            for key in [k for k in self._dirs if k.startswith(prefix)]:
                del self._dirs[key]
            self._dirs.pop(rel, None)
            self._forget()  # a cached parent may have been below it
        else:
            os.unlink(leaf, dir_fd=dfd)
            if stat.S_ISLNK(st.st_mode):
                self._forget()

    # --- extraction -----------------------------------------------------------------------------
    def layer(self, tar: tarfile.TarFile, tick: Callable[[], None] | None = None) -> None:
        """Extract every member of `tar` (a stream: members are read once, in order)."""
        self._layer = set()
        for member in tar:
            self._member(tar, member, tick)
            if tick is not None:
                tick()
        self._forget()

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo, tick: Callable[[], None] | None) -> None:
        rel = member_path(m.name)
        base = rel.rpartition("/")[2]
        if self.whiteouts and base.startswith(WHITEOUT):
            self._whiteout(rel)
            return
        if m.ischr() or m.isblk():
            if not self.devices:
                self.stats.skipped_devices += 1
                log.debug("skipped device node %s", rel)
                return
        elif not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            self.stats.skipped_other += 1
            log.warning("skipped archive member %r of unknown type %r", m.name, m.type)
            return
        if rel == "":
            if not m.isdir():
                raise ArchiveError(f"Archive member {m.name!r} names the root but is not a directory")
            self._directory(m, rel, None, "")
            return
        dfd, leaf = self._parent(rel)  # type: ignore[misc]
        old = self._lstat(dfd, leaf)
        if m.islnk() and member_path(m.linkname) == rel:
            return  # a hard link to itself: already there
        if old is not None and not (m.isdir() and stat.S_ISDIR(old.st_mode)):
            self._remove(dfd, leaf, old, rel)
            dfd, leaf = self._parent(rel)  # type: ignore[misc]  # removal may have closed it
            old = None
        if m.isdir():
            self._directory(m, rel, dfd, leaf, exists=old is not None)
        else:
            if m.isreg():
                self._file(tar, m, dfd, leaf, tick)
            elif m.issym():
                os.symlink(m.linkname, leaf, dir_fd=dfd)
                self._attrs_by_name(m, dfd, leaf, mode=False)
                self.stats.symlinks += 1
            elif m.islnk():
                self._hardlink(m, rel, dfd, leaf)
            elif m.isfifo():
                os.mkfifo(leaf, 0o600, dir_fd=dfd)
                self._attrs_by_name(m, dfd, leaf, mode=True)
                self.stats.fifos += 1
            else:  # device, trusted source
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(leaf, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=dfd)
                self._attrs_by_name(m, dfd, leaf, mode=True)
        self._layer.add(rel)

    def _directory(self, m: tarfile.TarInfo, rel: str, dfd: int | None, leaf: str, exists: bool = True) -> None:
        if dfd is None:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root_fd)
        else:
            if not exists:
                os.mkdir(leaf, 0o700, dir_fd=dfd)
            fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            if self.owners:
                os.fchown(fd, m.uid, m.gid)
            self._xattrs(m, fd)
        finally:
            os.close(fd)
        self._dirs[rel] = (m.mode & 0o7777, _ns(m.mtime))
        self._layer.add(rel)
        self.stats.dirs += 1

    def _file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, dfd: int, leaf: str, tick: Callable[[], None] | None) -> None:
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            src = tar.extractfile(m)
            if src is not None and m.size:
                with open(fd, "wb", closefd=False) as out:
                    since = 0
                    while chunk := src.read(_COPY_CHUNK):
                        out.write(chunk)
                        since += len(chunk)
                        if tick is not None and since >= _TICK_BYTES:
                            tick()
                            since = 0
            if self.owners:
                os.fchown(fd, m.uid, m.gid)  # before chmod: chown clears setuid and setgid
            os.fchmod(fd, m.mode & 0o7777)
            self._xattrs(m, fd)  # after chown, which drops security.capability
            ns = _ns(m.mtime)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.bytes += m.size

    def _hardlink(self, m: tarfile.TarInfo, rel: str, dfd: int, leaf: str) -> None:
        target = member_path(m.linkname)
        head, _, tleaf = target.rpartition("/")
        try:
            tfd = open_in_root(self.root_fd, head or ".", os.O_PATH | os.O_DIRECTORY)
        except SyscallError:
            raise ArchiveError(f"Archive member {m.name!r}: hard link to {m.linkname!r}, which is not in the archive") from None
        try:
            os.link(tleaf, leaf, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise ArchiveError(f"Archive member {m.name!r}: hard link to {m.linkname!r}, which is not in the archive") from None
        except PermissionError:
            raise ArchiveError(f"Archive member {m.name!r}: hard link to {m.linkname!r}, which is a directory") from None
        finally:
            os.close(tfd)
        self.stats.hardlinks += 1

    def _attrs_by_name(self, m: tarfile.TarInfo, dfd: int, leaf: str, mode: bool) -> None:
        if self.owners:
            os.chown(leaf, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)
        if mode:  # a fifo or device we just made: not a symlink, so chmod cannot be redirected
            os.chmod(leaf, m.mode & 0o7777, dir_fd=dfd)
        ns = _ns(m.mtime)
        os.utime(leaf, ns=(ns, ns), dir_fd=dfd, follow_symlinks=False)

    def _xattrs(self, m: tarfile.TarInfo, fd: int) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            try:
                os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))
            except OSError as e:
                self.stats.xattr_failures += 1
                log.warning("xattr %s on %r: %s", name, m.name, e.strerror)

    # --- whiteouts ------------------------------------------------------------------------------
    def _whiteout(self, rel: str) -> None:
        head, _, base = rel.rpartition("/")
        self.stats.whiteouts += 1
        if base == OPAQUE:
            self._opaque(head)
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # aufs's own bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to apply
        name = base[len(WHITEOUT):]
        if name in ("", ".", ".."):
            raise ArchiveError(f"Archive member {rel!r}: whiteout of {name!r} refused")
        target = f"{head}/{name}" if head else name
        if target in self._layer:
            return  # this layer's own entry: a whiteout hides only the layers below
        got = self._parent(target, create=False)
        if got is None:
            return
        dfd, leaf = got
        old = self._lstat(dfd, leaf)
        if old is not None:
            self._remove(dfd, leaf, old, target)

    def _opaque(self, rel: str) -> None:
        """Hide everything the layers below put in directory `rel`; keep this layer's entries."""
        try:
            fd = open_in_root(self.root_fd, rel or ".", os.O_RDONLY | os.O_DIRECTORY)
        except SyscallError:
            return
        try:
            self._clear_below(fd, rel)
        finally:
            os.close(fd)
        self._forget()

    def _clear_below(self, fd: int, rel: str) -> None:
        for name in os.listdir(fd):
            child = f"{rel}/{name}" if rel else name
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if child in self._layer:
                if stat.S_ISDIR(st.st_mode):
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    try:
                        self._clear_below(sub, child)
                    finally:
                        os.close(sub)
                continue
            self._remove(fd, name, st, child)

    # --- the end --------------------------------------------------------------------------------
    def finish(self) -> None:
        """Apply directory modes and times, deepest first (a parent's mode may shut us out)."""
        for rel in sorted(self._dirs, key=lambda r: r.count("/") + (r != ""), reverse=True):
            mode, ns = self._dirs[rel]
            if rel == "":
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root_fd)
                try:
                    os.fchmod(fd, mode)
                    os.utime(fd, ns=(ns, ns))
                finally:
                    os.close(fd)
                continue
            got = self._parent(rel, create=False)
            if got is None:
                continue
            dfd, leaf = got
            st = self._lstat(dfd, leaf)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            os.chmod(leaf, mode, dir_fd=dfd)
            os.utime(leaf, ns=(ns, ns), dir_fd=dfd, follow_symlinks=False)
        self._dirs.clear()
        self._forget()
