"""The container side of `create`: the intermediate process and the container's init.

Runs in forked children of `jaula-runtime` (single-threaded, so fork and unshare(CLONE_NEWUSER)
are safe). The order of steps is the one in ARCHITECTURE.md; every failure is sent to the
runtime as an ERROR message naming the step, and the child exits.
"""

from __future__ import annotations

import os

from jaula.linux import ns as nsys
from jaula.linux import proc
from jaula.linux.facade import Real
from jaula.oci import process, rootfs, sync, timing
from jaula.oci.config import Process, Spec
from jaula.oci.timing import mark as tmark


class Plan:
    """What the runtime prepared for init before forking (all inherited through fork)."""

    def __init__(self, spec: Spec, cid: str, sock, ctx: rootfs.Context, fifo_fd: int, console_sock: int,
                 preserve_fds: int, log, state: dict, cgroup_files: list[str] | None = None):
        self.spec = spec
        self.id = cid
        self.sock = sock
        self.ctx = ctx
        self.fifo_fd = fifo_fd
        self.console_sock = console_sock
        self.preserve_fds = preserve_fds
        self.log = log
        self.state = state
        self.cgroup_files = cgroup_files or []
        self.pid_sent = -1  # read end of a pipe: the intermediate has sent PID when a byte arrives
        self.seccomp_prog: bytes | None = None  # linux.seccomp compiled by the runtime before the fork
        self.tramp: int | None = None  # the exec trampoline's memfd (process.kept_trampoline)
        self.cgroup_fd = -1  # a cgroup2 folder the first process is born in (fork_first), or -1
        self.tell_namespaces = False  # a cloned init says NAMESPACES once they exist (for on_namespaces)
        self.exec_w = -1  # close-on-exec write end kept until execve: create(start=True) waits for its hang-up


def fork_first(plan: Plan) -> int:
    """The runtime's fork of the container's first process: born in its cgroup2 folder when
    plan.cgroup_fd names one (clone3 CLONE_INTO_CGROUP), instead of moved there by a write to
    cgroup.procs, which waits for an RCU grace period (~10 ms, see join_cgroup); else os.fork()."""
    if plan.cgroup_fd >= 0:
        from jaula.linux import libc

        return libc.clone3(0, plan.cgroup_fd)
    return os.fork()


def clones_init(spec: Spec) -> bool:
    """Whether the runtime makes the init with one clone3 into its new namespaces (clone_init),
    without the intermediate process, its fork and its PID message: with a new user namespace (the
    kernel makes it first, so it owns the others) and none to join by path. Needs the C module's
    clone3."""
    lx = spec.linux
    if lx.namespace("user") is None or any(ns.path for ns in lx.namespaces):
        return False
    from jaula.linux import libc

    return libc.can_clone3()


# Made by clone_init's clone3: the user namespace, and the pid namespace (which only children
# enter), small. The others the init unshares itself once it is in its cgroups: the kernel charges
# a namespace's memory to the cgroup of the process making it, and a network namespace or a copy
# of the host's mount table is a good part of an idle instance's kernel memory (made at birth,
# the spawner's cgroup held it: bench/daemon.py's uncharged kernel memory rose by ~345 KiB an
# instance). The cgroup namespace's root is where its maker is, and the time namespace's offsets
# must be written before any process is in it (the init unshares it, writes them, then enters it).
_AT_BIRTH = ("user", "pid")


def clone_init(plan: Plan, runtime_end) -> int:
    """Clone the init into new namespaces (see clones_init), born in its cgroup2 folder when
    plan.cgroup_fd names one; its pid. The runtime then writes its id maps (and oom_score_adj,
    which a process inside a user namespace cannot lower) and sends GO_ON."""
    from jaula.linux import libc

    flags = birth_flags(plan.spec)
    pid = libc.clone3(flags, plan.cgroup_fd)
    if pid == 0:
        runtime_end.close()
        _cloned(plan, flags)  # never returns
    return pid


def birth_flags(spec: Spec) -> int:
    """The CLONE_NEW* flags of clone_init's clone3 (or the zygote's: jaula.oci.zygote)."""
    flags = 0
    for ns in spec.linux.namespaces:
        if ns.type in _AT_BIRTH:
            flags |= nsys.NAMESPACES[ns.type][0]
    return flags


def _cloned(plan: Plan, made: int) -> None:
    """The cloned init's own steps before container_init: what _enter does, in its order but for
    the namespaces made at its birth. Never returns."""
    offsets = -1
    try:
        # Opened while our credentials are the host root's, who owns our /proc files (see
        # _open_time_offsets); nothing else is in our user namespace yet.
        offsets = _open_time_offsets(plan.spec.linux.time_offsets)
        tmark(plan.id, "in.born")
        proc.set_dumpable(False)  # what runs inside must not reach us
        sync.expect(plan.sock, sync.GO_ON)  # our id maps are written
        tmark(plan.id, "in.goon")
        # Our credentials are still the host root's (kuid 0) until setresuid: the v1 `tasks`
        # files, owned by it, take our "0" (see join_cgroup).
        join_cgroup(plan.cgroup_files)
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError:
            pass  # root is not mapped: stay who the maps made us
        rest = 0
        tmark(plan.id, "in.joined")
        for ns in plan.spec.linux.namespaces:
            rest |= nsys.NAMESPACES[ns.type][0]
        rest &= ~made
        if rest:
            nsys.unshare(rest)
        if rest & nsys.CLONE_NEWTIME:
            # unshare made it for our children only: its offsets, then we enter it ourselves
            # (setns takes a time namespace from a single-threaded process: timens_install).
            if offsets >= 0:
                _write_time_offsets(offsets, plan.spec.linux.time_offsets)
            nsys.setns_path("/proc/self/ns/time_for_children", nsys.CLONE_NEWTIME)
        tmark(plan.id, "in.unshared")
        if plan.tell_namespaces:  # the runtime waits for them to plug NICs into our netns
            sync.send(plan.sock, sync.NAMESPACES)
    except BaseException as e:  # noqa: BLE001 - the child must report and exit, whatever happened
        _report(plan.sock, "namespaces", e)
        os._exit(1)
    finally:
        if offsets >= 0:
            os.close(offsets)  # never into the container
    container_init(plan)


def forks_init_directly(spec: Spec) -> bool:
    """Whether the runtime forks the init itself (fork_init), without the intermediate process.

    The intermediate exists so that the pid namespace (which only children enter) is created after
    the user namespace that must own it, and for the time namespace (children only, too). Without
    either, the runtime can unshare the pid namespace for its own children and fork the init
    straight into it: one Python process less on every create.
    """
    lx = spec.linux
    pid = lx.namespace("pid")
    return lx.namespace("user") is None and lx.namespace("time") is None and (pid is None or not pid.path)


def fork_init(plan: Plan, runtime_end) -> int:
    """Fork the init from the runtime (see forks_init_directly); its pid. The runtime's own pid
    namespace for later children (hooks) is taken back at once: unshare(CLONE_NEWPID) only sets
    the namespace of the children to come."""
    own = -1
    if plan.spec.linux.namespace("pid") is not None:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if own >= 0:
            nsys.unshare(nsys.CLONE_NEWPID)
        pid = fork_first(plan)
        if pid == 0:
            if own >= 0:
                os.close(own)  # the host's pid namespace: never into the container
            runtime_end.close()
            _first_process(plan)  # never returns
        return pid
    finally:
        if own >= 0:
            nsys.setns(own, nsys.CLONE_NEWPID, "the runtime's own pid namespace")
            os.close(own)


def _first_process(plan: Plan) -> None:
    """The init forked by the runtime: the intermediate's steps for itself, then the init's. Never returns."""
    try:
        _enter(plan, nsys.CLONE_NEWPID)
    except BaseException as e:  # noqa: BLE001 - the child must report and exit, whatever happened
        _report(plan.sock, "namespaces", e)
        os._exit(1)
    container_init(plan)


def _enter(plan: Plan, done: int = 0) -> None:
    """Non-dumpable, in the cgroup, oom_score_adj, then the namespaces (but those in `done`)."""
    proc.set_dumpable(False)
    join_cgroup(plan.cgroup_files)
    adj = plan.spec.process.oom_score_adj
    if adj is not None:  # inherited by init; set while we are still the host's root
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(adj))
    _namespaces(plan, done)


def intermediate(plan: Plan) -> None:
    """Enter or create the namespaces, then fork the init (pid 1 of a new pid namespace). Never returns."""
    code = 1
    try:
        _enter(plan)
        # Init and we share the socket: init must not speak before our PID message is out.
        plan.pid_sent, told = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(told)
            container_init(plan)  # never returns
        sync.send(plan.sock, sync.PID, str(pid))
        os.write(told, b"1")
        code = 0
    except BaseException as e:  # noqa: BLE001 - the child must report and exit, whatever happened
        _report(plan.sock, "namespaces", e)
    finally:
        os._exit(code)


def _namespaces(plan: Plan, done: int = 0) -> None:
    lx = plan.spec.linux
    offsets = _open_time_offsets(lx.time_offsets)
    try:
        _join_and_unshare(plan, done)
        if offsets >= 0:
            _write_time_offsets(offsets, lx.time_offsets)
    finally:
        if offsets >= 0:
            os.close(offsets)  # never into the init we fork next


def _open_time_offsets(offsets: dict) -> int:
    """/proc/self/timens_offsets, opened while we are still the host's root (-1 without offsets).

    It has to be written after unshare(CLONE_NEWTIME) and before a process enters the new time
    namespace (our fork of the init), and we are non-dumpable from the start: inside a new user
    namespace our /proc/self files then belong to the host's root, whom it does not map, so an
    open there is refused (EACCES). The kernel checks CAP_SYS_TIME over the time namespace's
    owner against the credentials the file was opened with (file_ns_capable): the host's root
    has it over every user namespace. So we open it first and write it later; dumpable is never
    turned back on (crun has its parent write /proc/PID/timens_offsets instead: one more round
    trip on the socket)."""
    if not offsets:
        return -1
    return os.open("/proc/self/timens_offsets", os.O_WRONLY | os.O_CLOEXEC)


def _write_time_offsets(fd: int, offsets: dict) -> None:
    """All offsets in one write: the kernel takes each write whole (fs/proc/base.c)."""
    text = "".join(f"{clock} {secs} {nsecs}\n" for clock, (secs, nsecs) in offsets.items())
    os.write(fd, text.encode())


def _join_and_unshare(plan: Plan, done: int) -> None:
    lx = plan.spec.linux
    user = lx.namespace("user")
    if user is not None and user.path:
        nsys.setns_path(user.path, nsys.CLONE_NEWUSER)
    for ns in lx.namespaces:
        if ns.path and ns.type != "user":
            nsys.setns_path(ns.path, nsys.NAMESPACES[ns.type][0])
    if user is not None and not user.path:
        nsys.unshare(nsys.CLONE_NEWUSER)
        # The runtime writes the id maps.
        sync.send(plan.sock, sync.USERNS)
        sync.expect(plan.sock, sync.GO_ON)
    if user is not None:
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError:
            pass  # root is not mapped: stay who the maps made us
    flags = 0
    for ns in lx.namespaces:
        if not ns.path and ns.type != "user":
            flags |= nsys.NAMESPACES[ns.type][0]
    flags &= ~done
    if flags:
        nsys.unshare(flags)


def wants_pid_exchange(spec: Spec) -> bool:
    """Whether init and the runtime meet before pivot_root (CREATE_RUNTIME / GO_ON): to run the
    runtime's prestart and createRuntime hooks there, and to tell init its host pid for the hooks
    it runs itself. Without hooks nobody needs that meeting, and it is two context switches."""
    return any(spec.hooks.get(k) for k in ("prestart", "createRuntime", "createContainer", "startContainer"))


def idmapped_mounts(spec: Spec) -> list[int]:
    """Indexes of the mounts with the idmap or ridmap option."""
    return [i for i, m in enumerate(spec.mounts) if m.parsed.idmap]


def join_cgroup(files: list[str]) -> None:
    """Move ourselves into the container's cgroup, before any namespace exists.

    On cgroup v1 we write 0 ("this thread") to each hierarchy's `tasks`: the kernel then skips the
    global threadgroup lock whose RCU grace period makes a write of a pid to cgroup.procs cost
    ~10 ms (cgroup_procs_write_start). Being single-threaded, the thread is the whole process.
    """
    from jaula.linux.kfile import write_kernel_file

    for path in files:
        write_kernel_file(path, "0")


def _report(sock, step: str, e: BaseException) -> None:
    try:
        sync.send(sock, sync.ERROR, f"{step}: {e}")
    except OSError:
        pass


def container_init(plan: Plan) -> None:
    """pid 1 of the container: build its world, wait for start, become the container's process."""
    step = "init"
    timing.cid = plan.id
    try:
        spec, lx, p = plan.spec, plan.spec.linux, plan.spec.process
        sys_ = Real()
        os.setsid()
        step = "session keyring"
        try:
            proc.join_session_keyring(None)
        except OSError as e:
            plan.log.debug(f"no new session keyring: {e}")
        if lx.namespace("mount") is not None:
            step = "idmapped mounts"
            wanted = idmapped_mounts(spec)
            if wanted:
                name, _, fds = sync.recv(plan.sock, with_fds=True)
                if name != sync.IDMAPPED or len(fds) != len(wanted):
                    raise sync.ProtocolError(f"expected {len(wanted)} idmapped mounts, got {name} with {len(fds)}")
                plan.ctx.detached = dict(zip(wanted, fds))
            step = "rootfs"
            rootfs.prepare(spec, plan.ctx, sys_)
            tmark(plan.id, "in.rootfs")
            for fd in plan.ctx.detached.values():
                os.close(fd)
        step = "createRuntime hooks"
        if plan.pid_sent >= 0:  # forked by the intermediate: wait until it has sent PID
            if os.read(plan.pid_sent, 1) != b"1":
                raise sync.ProtocolError("the intermediate process exited before reporting the init's pid")
            os.close(plan.pid_sent)
        if wants_pid_exchange(spec):
            sync.send(plan.sock, sync.CREATE_RUNTIME)
            plan.state["pid"] = int(sync.expect(plan.sock, sync.GO_ON))
        _preload(plan)
        if spec.hooks.get("createContainer"):
            step = "createContainer hooks"
            from jaula.oci import hooks

            hooks.run("createContainer", spec.hooks["createContainer"], plan.state)
        tramp = plan.tramp if plan.tramp is not None else process.trampoline()
        tmark(plan.id, "in.preload")
        if lx.namespace("mount") is not None:
            step = "pivot_root"
            rootfs.pivot(sys_, plan.ctx.rootfs)
            tmark(plan.id, "in.pivot")
        step = "hostname"
        if spec.hostname:
            proc.sethostname(spec.hostname)
        if spec.domainname:
            proc.setdomainname(spec.domainname)
        step = "sysctl"
        for name, value in lx.sysctl.items():
            sys_.write_file("/proc/sys/" + name.replace(".", "/"), value)
        if p.terminal:
            step = "console"
            console(p, plan.console_sock, plan.log)
        if lx.namespace("mount") is not None:
            step = "masked and read-only paths"
            rootfs.finalize(spec, plan.ctx, sys_)
            tmark(plan.id, "in.finalize")
        if lx.personality is not None:
            proc.personality(lx.personality)
        step = "process"
        exe = process.lookup(p)
        process.apply_lsm(p, plan.log)
        process.set_rlimits(p)
        tmark(plan.id, "in.rlimits")
        seccomp_early = lx.seccomp is not None and (not p.no_new_privileges or lx.seccomp.listener_path)
        if seccomp_early and not p.no_new_privileges:
            # Without no_new_privs, seccomp needs CAP_SYS_ADMIN: load it while we still have it.
            step = "seccomp"
            _seccomp(plan)
        step = "capabilities"
        process.drop_bounding(p)
        process.set_user(p, setgroups_allowed=_setgroups_allowed())
        process.set_caps(p)
        tmark(plan.id, "in.caps")
        if p.no_new_privileges:
            proc.set_no_new_privs()
            if seccomp_early:
                step = "seccomp"
                _seccomp(plan)
        step = "cwd"
        tmark(plan.id, "in.seccomp")
        keep = {0, 1, 2, plan.sock.fileno(), plan.fifo_fd} | set(range(3, 3 + plan.preserve_fds))
        if tramp is not None:
            keep.add(tramp)
        if plan.exec_w >= 0:
            keep.add(plan.exec_w)
        process.close_fds(keep)
        process.enter_cwd(p)
        env = dict(e.split("=", 1) for e in p.env)
        sync.send(plan.sock, sync.READY)
    except BaseException as e:  # noqa: BLE001
        _report(plan.sock, step, e)
        os._exit(1)
    # Created: wait for `start` to write a byte into the exec fifo.
    plan.sock.close()
    try:
        while not os.read(plan.fifo_fd, 1):
            pass
        # The fifo stays open until execve closes it: `start` waits for that to run poststart hooks.
        if spec.hooks.get("startContainer"):
            from jaula.oci import hooks  # preloaded

            hooks.run("startContainer", spec.hooks["startContainer"], plan.state | {"status": "created"})
        if lx.seccomp is not None and not seccomp_early:
            _seccomp(plan)
        process.exec_program(tramp, exe, p.args, env)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(2, f"jaula-runtime: exec {p.args[0]!r}: {e}\n".encode())
        except OSError:
            pass
        os._exit(127)


def _preload(plan: Plan) -> None:
    """Import now what init needs after pivot_root: from then on the host's Python library is
    out of reach (as it must be: nothing of the host's interpreter is visible inside)."""
    p = plan.spec.process
    if plan.spec.hooks.get("startContainer"):
        from jaula.oci import hooks  # noqa: F401
    if p.terminal:
        import fcntl  # noqa: F401
        import struct  # noqa: F401
        import termios  # noqa: F401

        from jaula.linux import fs, mount  # noqa: F401
    if plan.spec.linux.seccomp is not None:
        from jaula.oci import seccomp  # noqa: F401


def _setgroups_allowed() -> bool:
    try:
        fd = os.open("/proc/self/setgroups", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        return os.read(fd, 64).strip() != b"deny"
    except OSError:
        return True
    finally:
        os.close(fd)


def _seccomp(plan: Plan) -> None:
    from jaula.oci import seccomp

    fd = seccomp.install(plan.spec.linux.seccomp, prog=plan.seccomp_prog)
    if fd >= 0:
        # The listener path is on the host, out of reach after pivot_root: the runtime forwards it.
        sync.send(plan.sock, sync.SECCOMP, fds=[fd])
        os.close(fd)


# <asm-generic/ioctls.h> (x86, arm, arm64, riscv, s390); Python's termios does not export them.
_TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int): unlockpt
_TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int): ptsname's number


def console(p: Process, console_sock, log, bind_console: bool = True) -> None:
    """A pty from the container's own devpts; the master goes to the console socket, the slave is our stdio.

    bind_console: also bind the slave on /dev/console (init only; an exec'd process leaves it alone)."""
    import fcntl
    import struct
    import termios

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0\0\0\0"))[0]
    slave_path = f"/dev/pts/{n}"
    if p.console_height or p.console_width:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", p.console_height, p.console_width, 0, 0))
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    if bind_console:
        _bind_console(log, slave_path)
    sync.send(console_sock, "console", fds=[master])
    console_sock.close()
    os.close(master)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for i in range(3):
        os.dup2(slave, i)
    os.close(slave)


def _bind_console(log, slave_path: str) -> None:
    try:
        from jaula.linux import fs, mount

        root = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            fd = fs.make_in_root(root, "/dev/console", directory=False)
            try:
                mount.mount(slave_path, mount.fd_path(fd), None, mount.MS_BIND)
            finally:
                os.close(fd)
        finally:
            os.close(root)
    except OSError as e:
        log.debug(f"no /dev/console: {e}")
