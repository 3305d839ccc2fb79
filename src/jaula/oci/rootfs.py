"""The container's file tree: mounts, /dev, pivot_root, masked and read-only paths.

Every target inside the root is resolved with openat2(RESOLVE_IN_ROOT) and mounted through its
/proc/self/fd path, so a symlink planted in the image cannot redirect a mount onto the host.
"""

from __future__ import annotations

import errno
import os
import stat

from jaula.errors import ConfigError, SyscallError
from jaula.linux import fs
from jaula.linux import mount as m
from jaula.linux.mount import fd_path
from jaula.oci import timing
from jaula.oci.config import Device, Mount, Spec
from jaula.oci.mountopts import parse as parse_options
from jaula.record import Record

DEFAULT_DEVICES = [
    Device(path="/dev/null", type="c", major=1, minor=3, file_mode=0o666, uid=0, gid=0),
    Device(path="/dev/zero", type="c", major=1, minor=5, file_mode=0o666, uid=0, gid=0),
    Device(path="/dev/full", type="c", major=1, minor=7, file_mode=0o666, uid=0, gid=0),
    Device(path="/dev/random", type="c", major=1, minor=8, file_mode=0o666, uid=0, gid=0),
    Device(path="/dev/urandom", type="c", major=1, minor=9, file_mode=0o666, uid=0, gid=0),
    Device(path="/dev/tty", type="c", major=5, minor=0, file_mode=0o666, uid=0, gid=0),
]
DEV_LINKS = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
             ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr")]
# Flags a user namespace cannot clear on a bind mount it did not create (mount_namespaces(7), "locked").
_LOCKABLE = m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC | m.MS_RDONLY | m.MS_NOATIME | m.MS_NODIRATIME
_ST_RELATIME = 4096


class Context(Record):
    rootfs: str
    userns: bool = False
    cgroup_ns: bool = False
    cgroup_binds: list = []      # (subdir below the cgroup mount, host dir of the container's cgroup)
    cgroup2_only: bool = False
    cgroup_writable: list = []   # host dirs of cgroup_binds bound read-write under a read-only mount
    detached: dict = {}          # index in spec.mounts -> fd of a prepared detached mount (idmapped)
    console: str | None = None   # pty slave to bind on /dev/console


def _is_bind(mnt: Mount) -> bool:
    return mnt.type in ("bind", "rbind") or mnt.parsed.bind


def prepare(spec: Spec, ctx: Context, sys) -> None:
    """Everything before pivot_root, in the container's new mount namespace."""
    lx = spec.linux
    prop = parse_options([lx.rootfs_propagation]).propagation if lx.rootfs_propagation else [m.MS_SLAVE | m.MS_REC]
    # Nothing we mount may propagate back to the host.
    sys.mount(None, "/", None, m.MS_SLAVE | m.MS_REC)
    for p in prop:
        # pivot_root(2) refuses a shared new root: finalize() applies shared; the default (rslave)
        # was just done
        if not p & m.MS_SHARED and p != m.MS_SLAVE | m.MS_REC:
            sys.mount(None, "/", None, p)
    timing.mark(timing.cid, "rf.slave")
    sys.mount(ctx.rootfs, ctx.rootfs, None, m.MS_BIND | m.MS_REC)
    timing.mark(timing.cid, "rf.rootbind")
    root_fd = sys.open(ctx.rootfs, os.O_PATH | os.O_DIRECTORY)
    try:
        dev_bound = False
        for i, mnt in enumerate(spec.mounts):
            if mnt.destination == "/dev" and _is_bind(mnt):
                dev_bound = True
            _mount_one(spec, ctx, sys, root_fd, i, mnt)
            if timing.PATH:
                timing.mark(timing.cid, "rf." + mnt.type + mnt.destination.replace("/", "_"))
        if not dev_bound:
            make_devices(sys, root_fd, DEFAULT_DEVICES + list(lx.devices), ctx.userns)
            timing.mark(timing.cid, "rf.devices")
            _dev_links(sys, root_fd)
            timing.mark(timing.cid, "rf.devlinks")
        else:
            make_devices(sys, root_fd, list(lx.devices), ctx.userns)
        if ctx.console:
            fd = sys.make_in_root(root_fd, "/dev/console", directory=False)
            try:
                sys.mount(ctx.console, fd_path(fd), None, m.MS_BIND)
            finally:
                sys.close(fd)
    finally:
        sys.close(root_fd)


def _mount_one(spec: Spec, ctx: Context, sys, root_fd: int, i: int, mnt: Mount) -> None:
    opts = mnt.parsed
    where = f"mounts[{i}] ({mnt.destination})"
    if i in ctx.detached:
        fd = sys.make_in_root(root_fd, mnt.destination, directory=_source_is_dir(sys, mnt.source))
        try:
            sys.move_mount(ctx.detached[i], fd)
        finally:
            sys.close(fd)
        return
    if _is_bind(mnt):
        src = mnt.source if os.path.isabs(mnt.source) else os.path.join(spec.bundle, mnt.source)
        fd = sys.make_in_root(root_fd, mnt.destination, directory=_source_is_dir(sys, src))
        try:
            target = fd_path(fd)
            sys.mount(src, target, None, m.MS_BIND | (m.MS_REC if opts.recursive_bind or mnt.type == "rbind" else 0))
            # Reopen: the old fd names the directory under the new mount, not the mount itself.
            new_fd = sys.open_in_root(root_fd, mnt.destination)
            sys.close(fd)
            fd, target = new_fd, fd_path(new_fd)
            flags = opts.flags & ~(m.MS_REMOUNT | m.MS_SILENT)
            if flags:
                _remount_bind(sys, target, flags, src)
            _propagate(sys, target, opts.propagation)
            _recursive_attrs(sys, fd, opts)
        finally:
            sys.close(fd)
        return
    if mnt.type == "cgroup":
        _mount_cgroup(sys, ctx, root_fd, mnt)
        return
    fd = sys.make_in_root(root_fd, mnt.destination, directory=True)
    try:
        if not stat.S_ISDIR(sys.fstat(fd).st_mode):
            raise ConfigError(f"{where}: the destination is not a directory in the container")
        data = ",".join(opts.data) or None
        if mnt.type == "tmpfs" and opts.copy_up:
            _copy_up_tmpfs(sys, fd, mnt, opts.flags, data)
        else:
            sys.mount(mnt.source or mnt.type, fd_path(fd), mnt.type, opts.flags & ~m.MS_REMOUNT, data)
        if mnt.type in ("proc", "sysfs"):
            _check_fs(sys, root_fd, mnt)
        if opts.propagation or opts.rec_set or opts.rec_clr:
            new_fd = sys.open_in_root(root_fd, mnt.destination)
            try:
                _propagate(sys, fd_path(new_fd), opts.propagation)
                _recursive_attrs(sys, new_fd, opts)
            finally:
                sys.close(new_fd)
    finally:
        sys.close(fd)


def _source_is_dir(sys, src: str) -> bool:
    try:
        return stat.S_ISDIR(sys.stat(src).st_mode)
    except FileNotFoundError:
        raise ConfigError(f"bind mount source {src!r} does not exist") from None


def _remount_bind(sys, target: str, flags: int, src: str | None) -> None:
    try:
        sys.mount(None, target, None, m.MS_REMOUNT | m.MS_BIND | flags)
    except SyscallError as e:
        if e.errno != errno.EPERM or src is None:
            raise
        # In a user namespace the source's nosuid/nodev/noexec/atime flags are locked: keep them.
        st = sys.statvfs_flags(src)
        keep = st & _LOCKABLE
        if st & _ST_RELATIME:
            keep |= m.MS_RELATIME
        sys.mount(None, target, None, m.MS_REMOUNT | m.MS_BIND | flags | keep)


def _propagate(sys, target: str, propagation: list[int]) -> None:
    for p in propagation:
        sys.mount(None, target, None, p)


def _recursive_attrs(sys, fd: int, opts) -> None:
    if opts.rec_set or opts.rec_clr:
        sys.mount_setattr(fd, "", m.AT_EMPTY_PATH | m.AT_RECURSIVE, attr_set=opts.rec_set, attr_clr=opts.rec_clr)


def _check_fs(sys, root_fd: int, mnt: Mount) -> None:
    """proc and sysfs must really be there after mounting: never a directory of the image instead."""
    want = fs.PROC_SUPER_MAGIC if mnt.type == "proc" else fs.SYSFS_MAGIC
    try:
        fd = sys.open_in_root(root_fd, mnt.destination)
    except OSError as e:
        raise SyscallError("mount", errno.EXDEV, f"{mnt.type} on {mnt.destination!r}: gone from the container ({e.strerror}): "
                           "a link in the image sent it under a later mount") from None
    try:
        if sys.fstatfs_type(fd) != want:
            raise SyscallError("mount", errno.EXDEV, f"{mnt.type} on {mnt.destination!r}: the destination is not a fresh {mnt.type}")
    finally:
        sys.close(fd)


def _copy_up_tmpfs(sys, fd: int, mnt: Mount, flags: int, data: str | None) -> None:
    """tmpcopyup: the tmpfs starts with what the image had at the destination."""
    import shutil

    src = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        staging = f"/proc/self/fd/{src}"
        sys.mount("tmpfs", fd_path(fd), "tmpfs", flags & ~m.MS_RDONLY, data)
        new = os.open(fd_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in os.listdir(src):
                s, d = os.path.join(staging, name), os.path.join(f"/proc/self/fd/{new}", name)
                if os.path.isdir(s) and not os.path.islink(s):
                    shutil.copytree(s, d, symlinks=True)
                else:
                    shutil.copy2(s, d, follow_symlinks=False)
        finally:
            os.close(new)
        if flags & m.MS_RDONLY:
            sys.mount(None, fd_path(fd), None, m.MS_REMOUNT | flags)
    finally:
        os.close(src)


def _mount_cgroup(sys, ctx: Context, root_fd: int, mnt: Mount) -> None:
    opts = mnt.parsed
    ro = bool(opts.flags & m.MS_RDONLY)
    base = opts.flags & (m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC)
    fd = sys.make_in_root(root_fd, mnt.destination, directory=True)
    try:
        if ctx.cgroup2_only:
            if ctx.cgroup_binds and ctx.cgroup_binds[0][1] in ctx.cgroup_writable:
                ro = False  # the init's own subtree (the cgroup namespace's root is the container's)
            if ctx.cgroup_ns or not ctx.cgroup_binds:
                flags = opts.flags & ~m.MS_REMOUNT
                sys.mount("cgroup", fd_path(fd), "cgroup2", flags if ro else flags & ~m.MS_RDONLY, None)
            else:
                sys.mount(ctx.cgroup_binds[0][1], fd_path(fd), None, m.MS_BIND | m.MS_REC)
                if ro:
                    _remount_bind(sys, fd_path(fd), m.MS_RDONLY | base, ctx.cgroup_binds[0][1])
            return
        # cgroup v1 cannot be mounted from a user namespace: a tmpfs with each hierarchy's own
        # cgroup of the container bound below it, as runc does; read-only but for the
        # hierarchies its init manages (cgroup_writable: LXC's cgroup:mixed).
        sys.mount("tmpfs", fd_path(fd), "tmpfs", base, "mode=755")
        top = sys.open_in_root(root_fd, mnt.destination)
        # All read-only (no hierarchy the init manages): one mount_setattr over the tmpfs and
        # every bind below it, instead of a remount of each (~0.3 ms less of the init's setup).
        at_once = ro and not any(host_dir in ctx.cgroup_writable for _, host_dir in ctx.cgroup_binds)
        try:
            for sub, host_dir in ctx.cgroup_binds:
                sfd = sys.make_in_root(top, sub, directory=True)
                try:
                    sys.mount(host_dir, fd_path(sfd), None, m.MS_BIND | m.MS_REC)
                    if ro and not at_once and host_dir not in ctx.cgroup_writable:
                        nfd = sys.open_in_root(top, sub)
                        try:
                            _remount_bind(sys, fd_path(nfd), m.MS_RDONLY | base, host_dir)
                        finally:
                            sys.close(nfd)
                finally:
                    sys.close(sfd)
            if at_once:
                sys.mount_setattr(top, "", m.AT_EMPTY_PATH | m.AT_RECURSIVE, attr_set=m.MOUNT_ATTR_RDONLY | _attrs(base))
            elif ro:
                sys.mount(None, fd_path(top), None, m.MS_REMOUNT | m.MS_RDONLY | base, "mode=755")
        finally:
            sys.close(top)
    finally:
        sys.close(fd)


def _attrs(flags: int) -> int:
    """MOUNT_ATTR_* of mount(2)'s MS_NOSUID, MS_NODEV and MS_NOEXEC in `flags`."""
    return ((m.MOUNT_ATTR_NOSUID if flags & m.MS_NOSUID else 0) | (m.MOUNT_ATTR_NODEV if flags & m.MS_NODEV else 0)
            | (m.MOUNT_ATTR_NOEXEC if flags & m.MS_NOEXEC else 0))


def make_devices(sys, root_fd: int, devices: list[Device], userns: bool) -> None:
    """Device nodes in the new /dev; in a user namespace mknod is refused, so bind the host's node."""
    for dev in devices:
        if dev.type == "p":
            kind = stat.S_IFIFO
        else:
            kind = stat.S_IFBLK if dev.type == "b" else stat.S_IFCHR
        mode = dev.file_mode if dev.file_mode is not None else 0o666
        if userns and dev.type != "p":
            if not os.path.exists(dev.path):
                raise ConfigError(f"device {dev.path!r}: a container in a user namespace can only get host devices by bind mount, and the host has no {dev.path}")
            fd = sys.make_in_root(root_fd, dev.path, directory=False)
            try:
                sys.mount(dev.path, fd_path(fd), None, m.MS_BIND)
            finally:
                sys.close(fd)
            continue
        parent = sys.make_in_root(root_fd, os.path.dirname(dev.path), directory=True)
        try:
            name = os.path.basename(dev.path)
            where = f"{fd_path(parent)}/{name}"
            try:
                sys.mknod(where, kind | mode, os.makedev(dev.major, dev.minor))
            except FileExistsError:
                os.unlink(where)  # an image may ship a stale node or file: replace it
                sys.mknod(where, kind | mode, os.makedev(dev.major, dev.minor))
            sys.chmod(where, mode)  # mknod's mode went through the umask
            sys.chown(where, dev.uid or 0, dev.gid or 0)
        finally:
            sys.close(parent)


def _dev_links(sys, root_fd: int) -> None:
    dev = sys.open_in_root(root_fd, "/dev")
    try:
        for target, link in DEV_LINKS + [("pts/ptmx", "/dev/ptmx")]:
            try:
                sys.symlink(target, f"{fd_path(dev)}/{os.path.basename(link)}")
            except FileExistsError:
                pass
    finally:
        sys.close(dev)


def pivot(sys, rootfs: str) -> None:
    """pivot_root(".", ".") then detach the old root: no put_old directory, nothing of the host left."""
    sys.chdir(rootfs)
    sys.pivot_root(".", ".")
    # The old root is stacked on "."; make it a slave first so the unmount does not reach the host.
    sys.mount(None, ".", None, m.MS_SLAVE | m.MS_REC)
    sys.umount2(".", m.MNT_DETACH)
    sys.chdir("/")


def finalize(spec: Spec, ctx: Context, sys) -> None:
    """After pivot_root: rootfsPropagation, read-only root, masked and read-only paths."""
    if spec.linux.rootfs_propagation:
        # The root is a bind of the bundle's rootfs: it took its propagation from the host mount
        # under it, not from "/" before pivot_root. Set it now that it is "/" (as runc does).
        for p in parse_options([spec.linux.rootfs_propagation]).propagation:
            sys.mount(None, "/", None, p)
    root_fd = sys.open("/", os.O_PATH | os.O_DIRECTORY)
    devnull = -1
    try:
        # Every proc and sysfs still there: a link in the image may have put one under a later mount.
        for mnt in spec.mounts:
            if mnt.type in ("proc", "sysfs"):
                _check_fs(sys, root_fd, mnt)
        if spec.linux.readonly_paths or spec.linux.masked_paths:
            check_fd_paths(sys, root_fd)
        for path in spec.linux.readonly_paths:
            readonly_path(sys, root_fd, path)
        if spec.linux.masked_paths:
            devnull = open_devnull(sys, root_fd)
        for path in spec.linux.masked_paths:
            mask_path(sys, root_fd, path, devnull)
        if spec.root is not None and spec.root.readonly:
            _remount_bind(sys, "/", m.MS_RDONLY, "/")
    finally:
        if devnull >= 0:
            sys.close(devnull)
        sys.close(root_fd)


def check_fd_paths(sys, root_fd: int) -> None:
    """From here on we mount through /proc/self/fd/N, and the kernel resolves that in the
    container's root: prove it is a real proc showing our own fds. Without a proc mount, /proc is
    the image's, whose links named like our fds could send a mask anywhere in the container."""
    magic = 0
    try:
        fd = sys.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY)
        try:
            magic = sys.fstatfs_type(fd)
        finally:
            sys.close(fd)
        ours, seen = sys.fstat(root_fd), sys.stat(fd_path(root_fd))
    except OSError:
        ours = seen = None
    if magic != fs.PROC_SUPER_MAGIC or ours is None or (ours.st_dev, ours.st_ino) != (seen.st_dev, seen.st_ino):
        raise SyscallError("mount", errno.EXDEV, "/proc/self/fd in the container is not this process's fds on a proc: "
                           "masked and read-only paths need a proc mounted at /proc")


def _open_if_exists(sys, root_fd: int, path: str) -> int | None:
    """An O_PATH fd of `path` inside the root; None when it does not exist (nothing to protect)."""
    try:
        return sys.open_in_root(root_fd, path)
    except FileNotFoundError:
        return None
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def readonly_path(sys, root_fd: int, path: str) -> None:
    fd = _open_if_exists(sys, root_fd, path)
    if fd is None:
        return
    try:
        sys.mount(fd_path(fd), fd_path(fd), None, m.MS_BIND | m.MS_REC)
        nfd = sys.open_in_root(root_fd, path)
        try:
            _remount_bind(sys, fd_path(nfd), m.MS_RDONLY | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, fd_path(nfd))
        finally:
            sys.close(nfd)
    finally:
        sys.close(fd)


def mask_path(sys, root_fd: int, path: str, devnull_fd: int) -> None:
    """Hide `path`: an empty read-only tmpfs over a directory, a checked /dev/null over a file."""
    fd = _open_if_exists(sys, root_fd, path)
    if fd is None:
        return
    try:
        if stat.S_ISDIR(sys.fstat(fd).st_mode):
            sys.mount("tmpfs", fd_path(fd), "tmpfs", m.MS_RDONLY | m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC, "size=0,mode=555")
        else:
            sys.mount(fd_path(devnull_fd), fd_path(fd), None, m.MS_BIND)
    finally:
        sys.close(fd)


def open_devnull(sys, root_fd: int) -> int:
    """An O_PATH fd of the container's /dev/null, proven to be the null device 1:3.

    A /dev/null swapped for a symlink or another file would make "masking" bind something the
    container chose over the path (CVE-2025-31133): we mount only through this checked fd.
    """
    fd = sys.open_in_root(root_fd, "/dev/null")
    st = sys.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        sys.close(fd)
        raise SyscallError("open", errno.EINVAL, "'/dev/null' in the container is not the null device (1:3): refusing to mask with it")
    return fd
