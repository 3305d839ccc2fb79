"""The one cgroup interface the rest of jaula uses, the file access behind both drivers, and path rules.

Every file operation goes through `CgroupFs`, so the unit tests can swap in a synthetic kernel that
creates interface files on mkdir and records each write (youki's syscall-façade habit).
"""

from __future__ import annotations

import abc
import errno
import os
import time

from jaula import lazylog as logging
from jaula.cgroups.layout import Hierarchy, Layout, probe
from jaula.cgroups.resources import DeviceRule, Resources
from jaula.errors import ConfigError, JaulaError, KernelMissing, SyscallError
from jaula.linux.kfile import write_kernel_file
from jaula.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; statistics are for `events`:
if TYPE_CHECKING:       # stats.py is imported when asked for (~0.6 ms less on jaula-runtime's create)
    from jaula.cgroups.stats import Stats

log = logging.getLogger("jaula.cgroups")

_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.+@-")
SYSTEMD_PATH = "systemd cgroup paths (slice:prefix:name) need --systemd-cgroup, which jaula-runtime does not support"


class CgroupFs:
    """The real kernel: plain files under the cgroup mounts, signals, and bpf(2) for v2 devices."""

    def read(self, path: str) -> str:
        """The whole file: open, read until EOF, close (open()'s text file object costs five more
        syscalls, an fstat, an ioctl and two lseeks, and more Python than the kernel's own work)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while True:
                b = os.read(fd, 65536)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(fd)
        return b"".join(chunks).decode()

    def write(self, path: str, value: str) -> None:
        """One write(2) of the whole value, as the kernel parses each write separately; no O_CREAT."""
        write_kernel_file(path, value, os.O_TRUNC)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def set_device_filter(self, cgroup_dir: str, rules: list[DeviceRule]) -> None:
        """Replace jaula's eBPF device program on a v2 cgroup."""
        from jaula.cgroups.base import bpf

        bpf.set_device_filter(cgroup_dir, rules)


class Write(Record):
    """One value for one interface file, and the config field it comes from (for error messages)."""

    path: str
    value: str
    field: str
    controller: str
    optional: bool = False       # a default from apply(): skipped where the kernel lacks the file
    swap_on_einval: bool = False  # on EINVAL write the next one first, then retry (period/quota)


class Target(Record):
    """Where the cgroup lives on one hierarchy."""

    hierarchy: Hierarchy
    dir: str                     # the cgroup's host directory
    base: str                    # the existing directory it hangs from: create stops there
    prune: str | None = None     # the shared "jaula" parent, removed when it is left empty


class Problems(Record):
    """Problems found before any write: kernel ones (KernelMissing) and config ones (ConfigError)."""

    kernel: list[str] = []
    config: list[str] = []

    def raise_if_any(self) -> None:
        if self.config:
            raise ConfigError(self.config + self.kernel)
        if self.kernel:
            raise KernelMissing("; ".join(self.kernel))


def check_path(path: str | None, name: str) -> None:
    """Refuse what jaula cannot place safely: systemd slice syntax and '..'."""
    problems = []
    if not name or name[0] not in _NAME_FIRST or not set(name) <= _NAME_REST:
        problems.append(f"cgroup name {name!r}: use letters, digits and _.+@- (not starting with a symbol)")
    if path is not None:
        if ":" in path:
            problems.append(f"linux.cgroupsPath {path!r}: {SYSTEMD_PATH}")
        elif ".." in path.split("/") or path.strip("/") == "":
            problems.append(f"linux.cgroupsPath {path!r}: use a path without '..' below the cgroup root")
    if problems:
        raise ConfigError(problems)


def resolve(layout: Layout, path: str | None, name: str, h: Hierarchy) -> Target:
    """OCI cgroupsPath semantics: None -> <caller>/jaula/<name>; "/x" from the root; "x" below the caller."""
    cur = h.current.rstrip("/")
    if path is None:
        cg, base, prune = f"{cur}/jaula/{name}", cur or "/", f"{cur}/jaula"
    elif path.startswith("/"):
        cg = "/" + path.strip("/")
        base = cur if cur and cg.startswith(cur + "/") else "/"
        prune = None
    else:
        cg, base, prune = f"{cur}/{path.strip('/')}", cur or "/", None
    return Target(h, h.dir_of(cg), h.dir_of(base), None if prune is None else h.dir_of(prune))


def mkdirs(fs: CgroupFs, t: Target) -> list[str]:
    """mkdir -p from t.base down to t.dir; returns the directories this call made, top first."""
    if not t.dir.startswith(t.base.rstrip("/") + "/"):
        raise ConfigError(f"cgroup {t.dir!r} is not below {t.base!r}")
    made: list[str] = []
    cur = t.base
    for part in t.dir[len(t.base.rstrip("/")) + 1:].split("/"):
        cur = os.path.join(cur, part)
        for attempt in range(5):
            try:
                fs.mkdir(cur)
                made.append(cur)
                break
            except FileExistsError:
                break
            except FileNotFoundError:
                # a concurrent remove() pruned the shared parent between our two mkdirs
                if attempt == 4:
                    raise SyscallError("mkdir", errno.ENOENT, repr(cur)) from None
                parent = os.path.dirname(cur)
                try:
                    fs.mkdir(parent)
                except FileExistsError:
                    pass
            except OSError as e:
                raise SyscallError("mkdir", e.errno or errno.EIO, repr(cur)) from None
    return made


def wait_for(fs: CgroupFs, path: str, want: str, timeout: float, what: str) -> None:
    """Poll an interface file until it shows `want` (freezing takes a while on a busy cgroup)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if want in fs.read(path).splitlines():
            return
        if time.monotonic() > deadline:
            raise JaulaError(f"{what} {path!r}: no {want!r} after {timeout}s")
        fs.sleep(delay)
        delay = min(delay * 2, 0.05)


class Cgroup(abc.ABC):
    """A container's cgroup on every hierarchy the host mounts; one driver per cgroup version."""

    #: controller (or "unified", or "name=systemd") -> host directory; saved in state, bind-mounted in
    paths: dict[str, str]

    def __init__(self, layout: Layout, targets: list[Target], fs: CgroupFs | None = None) -> None:
        self.layout = layout
        self.targets = targets
        self.fs = fs or CgroupFs()

    # -- the interface ----------------------------------------------------------------------------
    @abc.abstractmethod
    def create(self) -> None:
        """mkdir -p on every hierarchy, making new directories usable (cpuset copy, v2 delegation)."""

    @abc.abstractmethod
    def plan(self, res: Resources, full: bool) -> list[Write]:
        """The writes that set `res`; `full` adds defaults for what is unset. Raises before any write."""

    def apply(self, res: Resources) -> None:
        """Make the limits exactly `res`: what it leaves unset goes back to the default where the kernel allows.

        Reset when unset: memory limit, memory+swap and reservation; cpu shares/weight, quota and burst;
        pids.max; cpuset cpus and mems (to the parent's set); every io throttle (bps and iops) of a
        device `res` does not name; v2's default io weight; hugetlb limits of page sizes it does not
        name. Left as they are: devices when `res.devices` is None, per-device io weights, swappiness,
        kernel TCP memory, the OOM killer switch, realtime cpu, net_cls/net_prio (docs/cgroups.md).
        """
        self._write_all(self.plan(res, full=True))
        self._devices(res)

    def update(self, res: Resources) -> None:
        """Change only what `res` sets (a running container's `update`)."""
        self._write_all(self.plan(res, full=False))
        self._devices(res)

    @abc.abstractmethod
    def _devices(self, res: Resources) -> None:
        """Install the device rules of `res` when it has some."""

    @abc.abstractmethod
    def add_pid(self, pid: int) -> None: ...

    @abc.abstractmethod
    def freeze(self, timeout: float = 5.0) -> None: ...

    @abc.abstractmethod
    def thaw(self, timeout: float = 5.0) -> None: ...

    @abc.abstractmethod
    def frozen(self) -> bool: ...

    @abc.abstractmethod
    def stats(self) -> Stats: ...

    @abc.abstractmethod
    def _procs_dir(self) -> str:
        """The directory whose subtree lists the cgroup's processes."""

    def pids(self) -> list[int]:
        """Every process in the cgroup and the cgroups below it."""
        out: list[int] = []
        stack = [self._procs_dir()]
        while stack:
            d = stack.pop()
            try:
                out += [int(x) for x in self.fs.read(os.path.join(d, "cgroup.procs")).split()]
                stack += [os.path.join(d, e) for e in self.fs.listdir(d) if self.fs.isdir(os.path.join(d, e))]
            except FileNotFoundError:
                continue   # a sub-cgroup removed while we walked
        return sorted(set(out))

    def kill(self, sig: int = 9) -> None:
        """Signal every process, again and again until no new one appears (forks race the loop)."""
        signalled: set[int] = set()
        for _ in range(1000):
            new = set(self.pids()) - signalled
            if not new:
                return
            for pid in sorted(new):
                try:
                    self.fs.kill(pid, sig)
                except ProcessLookupError:
                    pass
            signalled |= new
        raise JaulaError(f"kill {self._procs_dir()!r}: processes keep appearing; freeze the cgroup first")

    def exists(self) -> bool:
        return any(self.fs.isdir(d) for d in self._dirs())

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir leaf-first on every hierarchy, waiting for dying tasks; nothing to do if already gone."""
        deadline = time.monotonic() + timeout
        for d in self._dirs():
            self._rmtree(d, deadline)
        for t in self.targets:
            if t.prune:
                try:
                    self.fs.rmdir(t.prune)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                        raise SyscallError("rmdir", e.errno or errno.EIO, repr(t.prune)) from None

    # -- shared helpers ---------------------------------------------------------------------------
    def _dirs(self) -> list[str]:
        return list(dict.fromkeys(t.dir for t in self.targets))

    def _rmtree(self, top: str, deadline: float) -> None:
        if not self.fs.isdir(top):
            return
        order: list[str] = []
        stack = [top]
        while stack:
            d = stack.pop()
            order.append(d)
            try:
                stack += [os.path.join(d, e) for e in self.fs.listdir(d) if self.fs.isdir(os.path.join(d, e))]
            except FileNotFoundError:
                pass
        for d in reversed(order):      # children before parents
            delay = 0.001              # killed tasks take a few ms to exit: poll fast first, then back off
            while True:
                try:
                    self.fs.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        left = ""
                        try:
                            left = " (processes left: " + self.fs.read(os.path.join(d, "cgroup.procs")).replace("\n", " ").strip() + ")"
                        except OSError:
                            pass
                        raise SyscallError("rmdir", e.errno or errno.EIO, repr(d) + left) from None
                    self.fs.sleep(delay)
                    delay = min(delay * 2, 0.05)

    def _write_all(self, writes: list[Write]) -> None:
        """Write in order; a pair marked swap_on_einval is retried in the other order (runc's period/quota)."""
        i = 0
        while i < len(writes):
            w = writes[i]
            try:
                self.fs.write(w.path, w.value)
            except OSError as e:
                if e.errno == errno.EINVAL and w.swap_on_einval and i + 1 < len(writes):
                    nxt = writes[i + 1]
                    self._write_one(nxt)
                    self._write_one(w)
                    i += 2
                    continue
                raise self._error(w, e) from None
            i += 1

    def _write_one(self, w: Write) -> None:
        try:
            self.fs.write(w.path, w.value)
        except OSError as e:
            raise self._error(w, e) from None

    @staticmethod
    def _error(w: Write, e: OSError) -> SyscallError:
        hint = ""
        if e.errno == errno.EINVAL:
            hint = " (the kernel refused the value: out of range, or in conflict with a related limit or the parent's)"
        elif e.errno == errno.EBUSY:
            hint = " (the value is in use: e.g. a limit below current usage, or a cpuset without its cpus)"
        return SyscallError("write", e.errno or errno.EIO, f"{w.value!r} to {w.path!r} for {w.field}{hint}")


def open_cgroup(path: str | None, name: str, *, layout: Layout | None = None, fs: CgroupFs | None = None) -> Cgroup:
    """The cgroup for `path` (OCI linux.cgroupsPath) and `name` (the container id), on the right driver."""
    check_path(path, name)
    layout = layout or probe()
    hs = [h for h in layout.hierarchies() if layout.mode != "v2" or h.version == 2]
    targets = [resolve(layout, path, name, h) for h in hs]
    for t in targets:
        caller = t.hierarchy.dir_of(t.hierarchy.current)
        if t.dir == caller or caller.startswith(t.dir.rstrip("/") + "/"):
            raise ConfigError(f"linux.cgroupsPath {path!r}: {t.dir!r} is the caller's own cgroup or holds it; "
                              "use a path below it")
    return _driver(layout, targets, fs)


def reopen(paths: dict[str, str], *, layout: Layout | None = None, fs: CgroupFs | None = None) -> Cgroup:
    """The cgroup saved in state as `paths` (another process may sit in another cgroup than the creator)."""
    layout = layout or probe()
    targets = []
    for h in layout.hierarchies():
        d = paths.get(h.key) or next((paths[c] for c in h.controllers if c in paths), None)
        if d is None:
            continue
        parent = os.path.dirname(d)
        targets.append(Target(h, d, parent, parent if os.path.basename(parent) == "jaula" else None))
    if not targets:
        raise ConfigError(f"cgroup paths {paths!r}: none of them is on a mounted hierarchy")
    return _driver(layout, targets, fs)


def _driver(layout: Layout, targets: list[Target], fs: CgroupFs | None) -> Cgroup:
    if layout.mode == "none":
        raise KernelMissing("no cgroup filesystem is mounted (mount cgroup2 on /sys/fs/cgroup)")
    if layout.mode == "v2":
        from jaula.cgroups.v2 import V2Cgroup

        return V2Cgroup(layout, targets, fs)
    from jaula.cgroups.v1 import V1Cgroup

    return V1Cgroup(layout, targets, fs)
