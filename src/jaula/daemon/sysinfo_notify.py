"""sysinfo(2) answered with the instance's own figures: the console keeper's seccomp agent.

An instance with `security.syscalls.intercept.sysinfo` has a SCMP_ACT_NOTIFY rule for sysinfo
and `linux.seccomp.listenerPath` = <root>/seccomp-agent.sock; jaula.oci sends each listener fd
(the init's and each exec'd process's) with the OCI state there. The console keeper (one
process per host root, it outlives jaulad) holds the listeners and answers each call:

  totalram   the memory limit of the instance's cgroup (v1 memory.limit_in_bytes, v2 memory.max)
  freeram    the limit less the usage (memory.usage_in_bytes / memory.current), as lxcfs's MemFree
  sharedram  the cgroup's shmem (memory.stat total_shmem / shmem); bufferram 0 (as lxcfs)
  swap       the swap limit (v1 memsw less memory, v2 memory.swap.max), at most the host's swap;
             the host's figures when the instance has no swap limit
  procs      the tasks of its pids cgroup (pids.current: threads, as the kernel's nr_threads)
  uptime     CLOCK_BOOTTIME as the caller's time namespace sees it (/proc/PID/timens_offsets)
  loads      the host's (/proc/loadavg), as the kernel answers
  mem_unit   as the kernel's do_sysinfo: pages scaled to bytes with mem_unit 1 when they fit

No memory limit (or one at least the host's RAM), a 32-bit caller, or figures that cannot be
read: SECCOMP_USER_NOTIF_FLAG_CONTINUE, the kernel answers itself. The answer is written at
args[0] through /proc/PID/mem, opened first; SECCOMP_IOCTL_NOTIF_ID_VALID is checked after
opening it (the pid may have been reused) and before anything is written or answered. A pointer
that is not writable memory of the caller gets EFAULT, as the kernel gives.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from jaula.instances.console_pty import AGENT_SOCKET  # noqa: F401  (where listeners come)
from jaula.linux import seccomp_notify as sn

PAGE = os.sysconf("SC_PAGE_SIZE")
NO_LIMIT = 1 << 62          # v1 "unlimited" reads 0x7FFFFFFFFFFFF000; anything above is none
CACHE_S = 0.1               # a cgroup's figures are read again after this (a busy loop of sysinfo reads files 10/s)
FSHIFT = 11                 # avenrun's fixed point (include/linux/sched/loadavg.h)


class Cgroup:
    """Where an instance's figures are: its memory and pids cgroup folders and the hierarchy's version."""

    __slots__ = ("memory", "pids", "version")

    def __init__(self, version: int, memory: str, pids: str | None) -> None:
        self.version, self.memory, self.pids = version, memory, pids

    def __repr__(self) -> str:
        return f"Cgroup(v{self.version}, memory={self.memory!r}, pids={self.pids!r})"


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> dict[str, tuple[str, str]]:
    """controller (or "" for cgroup2) -> (its root in the hierarchy, its mount point), the first mount of each."""
    out: dict[str, tuple[str, str]] = {}
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            fstype, opts = rfields[0], rfields[2].split(",")
            root, point = fields[3], fields[4].replace("\\040", " ")
            if fstype == "cgroup2":
                out.setdefault("", (root, point))
            elif fstype == "cgroup":
                for o in opts:
                    if o in ("memory", "pids"):
                        out.setdefault(o, (root, point))
    return out


def _join(mount: tuple[str, str], path: str) -> str | None:
    root, point = mount
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    rel = path[len(root):] if root != "/" else path
    return point.rstrip("/") + "/" + rel.lstrip("/") if rel.strip("/") else point


def cgroup_of(pid: int, mounts: dict[str, tuple[str, str]], proc: str = "/proc") -> Cgroup | None:
    """The folders of `pid`'s memory (v1 controller, else the cgroup2 one) and pids cgroups; None when it has none."""
    v1: dict[str, str] = {}
    v2: str | None = None
    with open(f"{proc}/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if ctrls == "":
                v2 = path
            for c in ctrls.split(","):
                if c in ("memory", "pids"):
                    v1[c] = path
    if "memory" in v1 and "memory" in mounts:
        mem = _join(mounts["memory"], v1["memory"])
        pids = _join(mounts["pids"], v1["pids"]) if "pids" in v1 and "pids" in mounts else None
        return Cgroup(1, mem, pids) if mem else None
    if v2 is not None and "" in mounts:
        d = _join(mounts[""], v2)
        return Cgroup(2, d, d) if d else None
    return None


def _slurp(path: str) -> bytes:
    """A small kernel file in one or a few read(2)s (no buffered text file: it is the hot path)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 65536):
        parts.append(chunk)
    return b"".join(parts)


def _read(path: str) -> str:
    return _slurp(path).decode()


def _int(path: str) -> int | None:
    """A cgroup number; None for "max" or a missing file."""
    try:
        v = _read(path).strip()
    except FileNotFoundError:
        return None
    return None if v == "max" else int(v)


def _stat(path: str, key: str) -> int:
    try:
        for line in _read(path).splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except FileNotFoundError:
        pass
    return 0


class Host:
    """The host's RAM and swap (kB lines of /proc/meminfo) and loads (/proc/loadavg)."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._loads: tuple[int, int, int] = (0, 0, 0)
        self._loads_at = -1e9

    def meminfo(self) -> dict[str, int]:
        out = {}
        for line in _read(f"{self.proc}/meminfo").splitlines():
            k, _, v = line.partition(":")
            if k in ("MemTotal", "SwapTotal", "SwapFree"):
                out[k] = int(v.split()[0]) * 1024
        return out

    def loads(self) -> tuple[int, int, int]:
        """As the kernel's loads[]: avenrun << (SI_LOAD_SHIFT - FSHIFT), from /proc/loadavg's two
        decimals; read again after a second (the kernel computes them every 5 s)."""
        now = time.monotonic()
        if now - self._loads_at > 1.0:
            parts = _read(f"{self.proc}/loadavg").split()[:3]
            self._loads = tuple(round(float(x) * (1 << FSHIFT)) << (sn.SI_LOAD_SHIFT - FSHIFT) for x in parts)  # type: ignore[assignment]
            self._loads_at = now
        return self._loads


class Figures:
    """An instance's memory figures in bytes, and its task count."""

    __slots__ = ("freeram", "freeswap", "procs", "sharedram", "totalram", "totalswap")

    def __init__(self, totalram: int, freeram: int, sharedram: int, totalswap: int, freeswap: int, procs: int) -> None:
        self.totalram, self.freeram, self.sharedram = totalram, freeram, sharedram
        self.totalswap, self.freeswap, self.procs = totalswap, freeswap, procs

    def __repr__(self) -> str:
        return (f"Figures(totalram={self.totalram}, freeram={self.freeram}, sharedram={self.sharedram}, "
                f"totalswap={self.totalswap}, freeswap={self.freeswap}, procs={self.procs})")


def figures(cg: Cgroup, host: dict[str, int]) -> Figures | None:
    """The instance's figures from its cgroup files; None when it has no memory limit below the
    host's RAM (the kernel's own answer is then the honest one)."""
    d = cg.memory
    if cg.version == 1:
        limit, usage = _int(f"{d}/memory.limit_in_bytes"), _int(f"{d}/memory.usage_in_bytes")
        memsw_limit, memsw_usage = _int(f"{d}/memory.memsw.limit_in_bytes"), _int(f"{d}/memory.memsw.usage_in_bytes")
        swap_limit = None if memsw_limit is None or limit is None or memsw_limit >= NO_LIMIT else memsw_limit - limit
        swap_used = None if memsw_usage is None or usage is None else max(0, memsw_usage - usage)
        shmem = _stat(f"{d}/memory.stat", "total_shmem")
    else:
        limit, usage = _int(f"{d}/memory.max"), _int(f"{d}/memory.current")
        swap_limit, swap_used = _int(f"{d}/memory.swap.max"), _int(f"{d}/memory.swap.current")
        shmem = _stat(f"{d}/memory.stat", "shmem")
    total = host.get("MemTotal", 0)
    if limit is None or usage is None or limit >= NO_LIMIT or (total and limit >= total):
        return None
    host_swap, host_swap_free = host.get("SwapTotal", 0), host.get("SwapFree", 0)
    if swap_limit is None or swap_limit >= NO_LIMIT:
        totalswap, freeswap = host_swap, host_swap_free
    else:
        totalswap = min(max(0, swap_limit), host_swap)
        freeswap = max(0, totalswap - (swap_used or 0))
    procs = 0
    if cg.pids:
        procs = _int(f"{cg.pids}/pids.current") or 0
    return Figures(limit, max(0, limit - usage), min(shmem, limit), totalswap, freeswap, procs)


def scale(fig: Figures, word_bits: int = 64, page: int = PAGE) -> tuple[tuple[int, ...], int]:
    """(totalram, freeram, sharedram, bufferram, totalswap, freeswap) and mem_unit as the kernel's
    do_sysinfo gives them: counted in pages (mem_unit = page), turned into bytes with mem_unit 1
    when RAM plus swap in bytes fits an unsigned long, else left in pages."""
    pages = tuple(v // page for v in (fig.totalram, fig.freeram, fig.sharedram, 0, fig.totalswap, fig.freeswap))
    top = 1 << word_bits
    mem_total = pages[0] + pages[4]
    if mem_total < top and mem_total * page < top:
        return tuple(p * page for p in pages), 1
    return tuple(min(p, top - 1) for p in pages), page


def uptime(pid: int, proc: str = "/proc", boottime: float | None = None, offsets: bytes | None = None) -> int:
    """The caller's uptime as the kernel answers it: CLOCK_BOOTTIME plus its time namespace's
    boottime offset (its /proc/PID/timens_offsets, or `offsets` read already), whole seconds
    rounded up (do_sysinfo)."""
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME) if boottime is None else int(boottime * 1e9)
    try:
        if offsets is None:
            offsets = _slurp(f"{proc}/{pid}/timens_offsets")
        for line in offsets.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] in (b"boottime", b"7"):
                now += int(parts[1]) * 1_000_000_000 + int(parts[2])
    except (FileNotFoundError, PermissionError, ValueError):
        pass
    sec, ns = divmod(max(0, now), 1_000_000_000)
    return sec + (1 if ns else 0)


class Agent:
    """The answers: the instances' cgroups by container id, figures cached CACHE_S."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.host = Host(proc)
        self.native_arch = sn.NATIVE_ARCHES.get(os.uname().machine)
        self._mounts: dict[str, tuple[str, str]] | None = None
        self._cache: dict[str, tuple[float, Figures | None]] = {}
        self._host_cache: tuple[float, dict[str, int]] = (0.0, {})
        self.answered = self.continued = self.faulted = 0

    def mounts(self) -> dict[str, tuple[str, str]]:
        if self._mounts is None:
            self._mounts = cgroup_mounts(f"{self.proc}/self/mountinfo")
        return self._mounts

    def instance_cgroup(self, pid: int) -> Cgroup | None:
        """The cgroup of a process of an instance (its init while it is created: the instance's own)."""
        try:
            return cgroup_of(pid, self.mounts(), self.proc)
        except (OSError, ValueError):
            return None

    def _host(self, now: float) -> dict[str, int]:
        if now - self._host_cache[0] > 1.0:
            self._host_cache = (now, self.host.meminfo())
        return self._host_cache[1]

    def figures(self, cg: Cgroup) -> Figures | None:
        now = time.monotonic()
        hit = self._cache.get(cg.memory)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
        fig = figures(cg, self._host(now))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[cg.memory] = (now, fig)
        return fig

    def answer(self, listener: int, cg: Cgroup | None) -> None:
        """Receive one pending notification on `listener` and answer it; never raises for the
        caller's doing (gone, bad pointer). OSError only for the listener itself."""
        try:
            n = sn.recv(listener)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EAGAIN, errno.EINTR):
                return  # the caller went away (or nothing pending): nothing to answer
            raise
        try:
            val, err, flags = self._compute_and_write(listener, n, cg)
        except Exception as e:  # noqa: BLE001 - a bug must not leave the caller waiting: the kernel answers instead
            val, err, flags = 0, 0, sn.SECCOMP_USER_NOTIF_FLAG_CONTINUE
            self.continued += 1
            try:  # the keeper's stderr is its log file
                sys.stderr.write(f"console-keeper: WARNING sysinfo of pid {n.pid}: {type(e).__name__}: {e} "
                                 "(left to the kernel)\n")
            except (OSError, ValueError):
                pass
        try:
            sn.send(listener, n.id, val, err, flags)
        except OSError as e:
            if e.errno != errno.ENOENT:  # ENOENT: the caller is gone meanwhile
                raise

    def _compute_and_write(self, listener: int, n: sn.Notif, cg: Cgroup | None) -> tuple[int, int, int]:
        cont = (0, 0, sn.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        if n.arch != self.native_arch or cg is None:  # a 32-bit caller's compat_sysinfo: the kernel's
            self.continued += 1
            return cont
        fig = self.figures(cg)
        if fig is None:
            self.continued += 1
            return cont
        # Every file of the caller is opened first: an open /proc/PID file stays the process it
        # was opened for (its struct pid, its mm). Then ID_VALID: if the notification is gone,
        # the pid may be someone else's, so nothing is read from it or written to it.
        fds: list[int] = []
        try:
            try:
                for name, mode in (("mem", os.O_RDWR), ("maps", os.O_RDONLY), ("timens_offsets", os.O_RDONLY)):
                    try:
                        fds.append(os.open(f"{self.proc}/{n.pid}/{name}", mode | os.O_CLOEXEC))
                    except FileNotFoundError:
                        if name != "timens_offsets":  # a kernel without time namespaces has none
                            raise
                        fds.append(-1)
            except OSError:
                return (0, errno.ENOENT, 0) if not sn.id_valid(listener, n.id) else cont
            if not sn.id_valid(listener, n.id):
                return (0, errno.ENOENT, 0)
            mem, maps, offsets = fds
            mem_vals, unit = scale(fig)
            up = uptime(n.pid, self.proc, offsets=_read_fd(offsets) if offsets >= 0 else b"")
            data = sn.pack_sysinfo(up, self.host.loads(), *mem_vals, fig.procs, unit)
            addr = n.args[0]
            if not writable(_read_fd(maps), addr, len(data)):
                self.faulted += 1
                return (0, errno.EFAULT, 0)
            try:
                sn.write_mem(mem, addr, data)
            except OSError as e:
                if e.errno == errno.EFAULT:
                    self.faulted += 1
                    return (0, errno.EFAULT, 0)
                raise
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        self.answered += 1
        return (0, 0, 0)



def writable(maps: bytes, addr: int, size: int) -> bool:
    """Whether [addr, addr+size) is all in writable mappings (a /proc/PID/maps text): /proc/PID/mem
    writes through read-only private pages (FOLL_FORCE), where the kernel's copy_to_user faults."""
    end, need = addr + size, addr
    for line in maps.split(b"\n"):
        dash = line.find(b"-")
        sp = line.find(b" ", dash)
        if dash < 0 or sp < 0:
            continue
        hi = int(line[dash + 1:sp], 16)
        if hi <= need:
            continue
        if int(line[:dash], 16) > need or line[sp + 2:sp + 3] != b"w":
            return False
        need = hi
        if need >= end:
            return True
    return False
