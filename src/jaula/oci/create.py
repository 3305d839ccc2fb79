"""`create`: validate, make the cgroup and state, fork the init, and walk it through the handshake.

A failure at any step undoes what was done (cgroup, state directory, processes), so a refused
or broken create leaves nothing behind.
"""

from __future__ import annotations

import os

from jaula.errors import ConfigError, Exists, JaulaError
from jaula.oci import config, process, rootfs, state, sync
from jaula.oci.init import (
    Plan,
    clone_init,
    clones_init,
    fork_first,
    fork_init,
    forks_init_directly,
    idmapped_mounts,
    intermediate,
    wants_pid_exchange,
)
from jaula.oci.timing import mark as tmark
from jaula.oci.validate import validate

CGROUP_ROOT = "/sys/fs/cgroup"


class Options:
    def __init__(self, console_socket: str | None = None, pid_file: str | None = None, preserve_fds: int = 0,
                 no_pivot: bool = False, console_fd: object = None, on_namespaces: object = None,
                 start: bool = False, on_ready: object = None):
        self.console_socket = console_socket
        # create and start in one (a caller with nothing to do between them, such as jaulad for an
        # instance without a console keeper or cgroups to delegate): the start byte is in the exec
        # fifo before the init asks, so it goes on to exec its program right after READY (no
        # wake-up by a later start) while we finish; create returns once it has exec'd (or died)
        # and the container is running. Not with poststart hooks (start runs them): then as without.
        self.start = start
        # called with the init's pid once it said READY, before it may run its program: with
        # `start`, the start byte is written after it (the init then waits for it, as for start)
        self.on_ready = on_ready
        # called with the init's pid once its namespaces exist and before it runs: with the
        # intermediate, while the init builds its root (work there overlaps its setup), else
        # once it is ready
        self.on_namespaces = on_namespaces
        self.pid_file = pid_file
        self.preserve_fds = preserve_fds
        self.no_pivot = no_pivot
        self.console_fd = console_fd  # a connected socket for `run -t` without --console-socket


def create(root: str, cid: str, bundle: str, opts: Options, log, spec: config.Spec | None = None) -> state.Container:
    """`spec`: the bundle's config already parsed (config.parse of what its config.json holds: a
    caller that rendered it, jaulad's driver), instead of reading it back; validated all the same."""
    state.check_id(cid)
    if opts.no_pivot:
        raise ConfigError("--no-pivot is refused: jaula-runtime always uses pivot_root, as chroot can be escaped")
    if spec is None:
        spec = config.load(bundle)
    validate(spec)
    tmark(cid, "oc.valid")
    p = spec.process
    if p.terminal and opts.console_socket is None and opts.console_fd is None:
        raise ConfigError("process.terminal is true: give --console-socket to receive the pty master")
    if not p.terminal and opts.console_socket:
        raise ConfigError("--console-socket is given but process.terminal is false")

    os.makedirs(root, 0o711, exist_ok=True)
    cdir = os.path.join(root, cid)
    try:
        os.mkdir(cdir, 0o711)
    except FileExistsError:
        raise Exists(f"container {cid!r} already exists in {root!r}") from None
    undo: list = [lambda: _rmtree(cdir)]
    try:
        c = _create(spec, root, cid, cdir, opts, log, undo)
    except BaseException:
        for fn in reversed(undo):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - keep undoing the rest
                log.warning(f"cleanup after a failed create: {e}")
        raise
    global _made
    _made += 1
    if _made >= 2:  # a long-lived caller (jaulad's spawner): clone its next inits from a zygote
        from jaula.oci import zygote

        zygote.keep()
    return c


_made = 0  # containers this process made: from the second on, it keeps a zygote (jaula.oci.zygote)


def _create(spec: config.Spec, root: str, cid: str, cdir: str, opts: Options, log, undo: list) -> state.Container:
    from jaula.cgroups.base import open_cgroup

    lx = spec.linux
    seccomp_prog = None
    if lx.seccomp is not None:
        from jaula.oci import seccomp

        # Compiled here, not in the init: a too-long program is refused before any cgroup or
        # process exists, and a long-lived caller (jaulad's spawner) compiles each profile once.
        seccomp_prog = seccomp.compiled(lx.seccomp)
    tmark(cid, "oc.seccomp")
    cg = open_cgroup(lx.cgroups_path, cid, layout=kept_layout())
    tmark(cid, "oc.cgopen")
    mounts = {h.mountpoint: "cgroup2" if h.version == 2 else "cgroup" for h in cg.layout.hierarchies()}
    binds, v2_only = cgroup_binds(cg.paths, mounts)
    # org.jaula.cgroup.writable: hierarchies bound read-write under a read-only cgroup mount
    writable = [cg.paths[k] for k in spec.annotations.get(WRITABLE_CGROUPS, "").split(",") if k in cg.paths]
    # an init that manages its cgroup2 subtree (systemd) must start in it: joined as on pure v2
    need_unified = v2_only or _needs_unified(lx.resources) or cg.paths.get("unified") in writable
    cgroup_files = join_files(cg.paths, mounts, need_unified)
    direct = forks_init_directly(spec)
    cloned = not direct and clones_init(spec)
    # late: an init the zygote clones, which joins its cgroups by writes only (no cgroup2 folder to be
    # born in) and only after GO_ON, gets them made and limited after its clone request, while
    # it starts (not so for an init cloned from here: its copy-on-write faults and ours then slowed
    # both, docs/runtime.md)
    late = (cloned and _made >= 2 and not any(os.path.basename(f) == "cgroup.procs" for f in cgroup_files)
            and _zygote_ready())
    if not late:
        _make_cgroup(cg, lx, cid, undo)
    fifo = os.path.join(cdir, state.FIFO)
    os.mkfifo(fifo, 0o600)
    # Opened read-write so init's read blocks until `start` writes, whether or not a writer exists yet.
    fifo_fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
    undo.append(lambda: os.close(fifo_fd))
    watch = exec_w = -1
    if opts.start and not spec.hooks.get("poststart"):
        # The init keeps the write end until its execve closes it: then the read end hangs up.
        # (Not the fifo: the start byte in it would make it poll readable until the init reads it.)
        watch, exec_w = os.pipe2(os.O_CLOEXEC)
        held = [watch, exec_w]
        undo.append(lambda: [os.close(held.pop()) for _ in list(held)])
    data = {
        "ociVersion": spec.oci_version, "id": cid, "status": state.CREATING, "pid": 0, "bundle": spec.bundle,
        "rootfs": spec.root.path if spec.root else "", "created": state.now_rfc3339(), "owner": "",
        "annotations": spec.annotations, "cgroupPaths": cg.paths, "cgroupsPath": lx.cgroups_path,
        "hooks": {k: [{"path": h.path, "args": h.args, "env": h.env, "timeout": h.timeout} for h in spec.hooks[k]]
                  for k in ("poststart", "poststop") if spec.hooks.get(k)},
    }
    c = state.Container(root, cid, data)
    c.save()
    console_sock = None
    tmark(cid, "oc.saved")
    if spec.process.terminal:
        console_sock = opts.console_fd if opts.console_fd is not None else _connect(opts.console_socket)
    ctx = rootfs.Context(rootfs=spec.root.path, userns=lx.namespace("user") is not None,
                         cgroup_ns=lx.namespace("cgroup") is not None, cgroup_binds=binds,
                         cgroup2_only=v2_only, cgroup_writable=writable)
    hook_state = {"ociVersion": spec.oci_version, "id": cid, "status": state.CREATING, "pid": 0,
                  "bundle": spec.bundle, "annotations": spec.annotations}
    parent, child = sync.pair()
    plan = Plan(spec, cid, child, ctx, fifo_fd, console_sock, opts.preserve_fds, log, hook_state,
                cgroup_files)
    plan.seccomp_prog = seccomp_prog
    plan.tramp = process.kept_trampoline()
    plan.cgroup_fd = born_in(plan.cgroup_files)
    plan.tell_namespaces = opts.on_namespaces is not None
    plan.exec_w = exec_w
    if plan.cgroup_fd >= 0:
        undo.append(lambda: os.close(plan.cgroup_fd))
    log.reopen()
    tmark(cid, "oc.plan")
    if direct:
        pid = fork_init(plan, parent)
    elif cloned:
        pid = None
        if _made >= 2:
            from jaula.oci import zygote
            from jaula.oci.init import birth_flags

            pid = zygote.clone(plan, birth_flags(spec))  # None: none ready, clone it ourselves
        if pid is None:
            pid = clone_init(plan, parent)
    else:
        pid = fork_first(plan)
        if pid == 0:
            parent.close()
            intermediate(plan)  # never returns
    child.close()
    if exec_w >= 0:
        os.close(held.pop())  # only the init's (and an intermediate's, until it exits) remain
    if plan.cgroup_fd >= 0:
        undo.pop()
        os.close(plan.cgroup_fd)
    ipid = pid if direct or cloned else 0
    tmark(cid, "oc.cloned")

    def kill_children() -> None:
        for victim in (ipid, pid):
            if victim:
                try:
                    os.kill(victim, 9)
                except ProcessLookupError:
                    pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    undo.append(kill_children)
    if cloned:
        write_id_maps(pid, lx.uid_mappings, lx.gid_mappings)
        if spec.process.oom_score_adj is not None:
            _write_proc(pid, "oom_score_adj", str(spec.process.oom_score_adj))
        tmark(cid, "oc.maps")
        if late:
            # undone after kill_children (the list runs backwards): the init is killed first; it
            # is in none of them yet, it joins after GO_ON, once the limits are written
            _make_cgroup(cg, lx, cid, undo, at=len(undo) - 1)
        sync.send(parent, sync.GO_ON)
        if plan.tell_namespaces:  # the init makes all but its user and pid namespaces itself
            sync.expect(parent, sync.NAMESPACES)
        tmark(cid, "oc.nsready")
    elif not direct:
        if lx.namespace("user") is not None and not lx.namespace("user").path:
            sync.expect(parent, sync.USERNS)
            write_id_maps(pid, lx.uid_mappings, lx.gid_mappings)
            sync.send(parent, sync.GO_ON)
        ipid = int(sync.expect(parent, sync.PID))
        os.waitpid(pid, 0)
    data.update(pid=ipid, pidStart=state.proc_start_time(ipid))
    tmark(cid, "oc.pidstart")
    if wants_pid_exchange(spec):
        c.save()  # hooks run before READY may ask `state` for the pid; otherwise the next save has it
    if idmapped_mounts(spec):
        from jaula.oci.idmap import make_idmapped_mounts

        fds = make_idmapped_mounts(spec, ipid)
        try:
            sync.send(parent, sync.IDMAPPED, fds=fds)
        finally:
            for fd in fds:
                os.close(fd)
    if wants_pid_exchange(spec):
        sync.expect(parent, sync.CREATE_RUNTIME)
        hook_state["pid"] = ipid
        for kind in ("prestart", "createRuntime"):
            if spec.hooks.get(kind):
                from jaula.oci import hooks

                hooks.run(kind, spec.hooks[kind], hook_state)
        sync.send(parent, sync.GO_ON, str(ipid))
    if not direct and opts.on_namespaces is not None:
        opts.on_namespaces(ipid)
    tmark(cid, "oc.onns")
    if watch >= 0 and not direct and opts.on_ready is None:
        os.write(fifo_fd, b"0")  # read by the init only after its READY: then it goes on to exec
    while True:
        name, payload, fds = sync.recv(parent, with_fds=True)
        if name == sync.READY:
            break
        if name == sync.SECCOMP and fds:
            _forward_seccomp(spec, c, fds[0])
            continue
        if name == sync.ERROR:
            raise JaulaError(f"container init: {payload}")
        raise JaulaError("container init exited during setup" if not name else f"unexpected message {name!r} from init")
    if direct and opts.on_namespaces is not None:
        opts.on_namespaces(ipid)
    if opts.on_ready is not None:
        opts.on_ready(ipid)
    if watch >= 0 and (direct or opts.on_ready is not None):
        os.write(fifo_fd, b"0")  # only now: the init must not run before on_namespaces or on_ready
    tmark(cid, "oc.ready")
    parent.close()
    os.close(fifo_fd)
    if console_sock is not None and opts.console_fd is None:
        console_sock.close()
    data["status"] = state.CREATED
    c.save()
    tmark(cid, "oc.done")
    if opts.pid_file:
        write_pid_file(opts.pid_file, ipid)
    if watch >= 0:
        os.unlink(fifo)  # started: `state` says running (as after lifecycle.start)
        _wait_hangup(watch)
        os.close(held.pop())
        c.started = True
        tmark(cid, "oc.execd")
    return c


def _zygote_ready() -> bool:
    from jaula.oci import zygote

    return zygote.ready()


def _make_cgroup(cg, lx: config.Linux, cid: str, undo: list, at: int | None = None) -> None:
    """Make the container's cgroup and write its limits; their undo goes into `undo` (at index `at`)."""
    cg.create()
    tmark(cid, "oc.cgcreate")
    for fn in (cg.remove, lambda: cg.kill(9)):  # kill: whatever got in, an init whose pid we never learned
        undo.insert(len(undo) if at is None else at, fn)
        if at is not None:
            at += 1
    if lx.resources is not None:
        _allow_default_devices(lx)
        # A new cgroup starts at the kernel's defaults: write only what the config sets (as runc).
        cg.update(lx.resources)
    tmark(cid, "oc.cgupdate")


# Devices every container gets whatever its rules say (runc's AllowedDevices): the default /dev
# nodes, the pty devices, and mknod (not read or write) of any node.
_ALLOWED = [("c", None, None, "m"), ("b", None, None, "m"), ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"),
            ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"),
            ("c", 5, 2, "rwm"), ("c", 136, None, "rwm")]


def _allow_default_devices(lx: config.Linux) -> None:
    from jaula.cgroups.resources import DeviceRule

    rules = lx.resources.devices
    if rules is None:
        return
    rules.extend(DeviceRule(allow=True, type=t, major=a, minor=b, access=acc) for t, a, b, acc in _ALLOWED)
    rules.extend(DeviceRule(allow=True, type=d.type if d.type != "u" else "c", major=d.major, minor=d.minor, access="rwm")
                 for d in lx.devices if d.type in ("c", "b", "u"))


def _wait_hangup(fd: int) -> None:
    """Until the other end of a pipe is closed by all who hold it (nothing is ever written)."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLHUP)
    while not poller.poll(1000):
        pass


def _forward_seccomp(spec: config.Spec, c: state.Container, fd: int) -> None:
    from jaula.oci import seccomp

    sc = spec.linux.seccomp
    d = c.data
    # The state as `state` would print it while creating, built from what we hold: not c.oci_state(),
    # which reads /proc/PID/stat to tell a live init (and the freezer's state), here while the init
    # goes on towards its execve, which that read waited for (~1 ms in an app's start).
    st = {"ociVersion": d.get("ociVersion", "1.2.0"), "id": c.id, "pid": c.pid, "status": state.CREATING,
          "bundle": c.bundle, "rootfs": d.get("rootfs", ""), "created": d.get("created", ""),
          "owner": d.get("owner", "")}
    if d.get("annotations"):
        st["annotations"] = d["annotations"]
    try:
        seccomp.send_to_listener(sc.listener_path, fd, st, sc.listener_metadata)
    finally:
        os.close(fd)


def _connect(path: str | None):
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC, 0)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise JaulaError(f"cannot connect to the console socket {path!r}: {e.strerror}") from None
    return s


def write_id_maps(pid: int, uid_maps: list, gid_maps: list) -> None:
    for name, maps in (("uid_map", uid_maps), ("gid_map", gid_maps)):
        _write_proc(pid, name, "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps))


def _write_proc(pid: int, name: str, text: str) -> None:
    """One write(2) of `text` (the kernel takes an id map whole, in one write), by a raw fd."""
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise JaulaError(f"writing /proc/{pid}/{name} ({text.strip()!r}): {e.strerror}") from None


def write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def cgroup_mounts() -> dict[str, str]:
    """Mount point -> "cgroup" or "cgroup2", for every cgroup hierarchy mounted here."""
    mounts: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            fstype = parts[parts.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                mounts[parts[4]] = fstype
    return mounts


def _hierarchy(host_dir: str, mounts: dict[str, str]) -> str | None:
    return max((mp for mp in mounts if host_dir == mp or host_dir.startswith(mp + "/")), key=len, default=None)


def _needs_unified(res: object) -> bool:
    """On a hybrid host, whether the cgroup2 hierarchy holds a limit of this container."""
    return res is not None and bool(getattr(res, "hugepage_limits", None) or getattr(res, "unified", None))


def join_files(paths: dict[str, str], mounts: dict[str, str], need_unified: bool) -> list[str]:
    """The files the container's first process writes 0 into to join its cgroup (see init.join_cgroup).

    On a hybrid host the cgroup2 hierarchy is joined only when a limit lives there: moving a
    process on cgroup2 takes the kernel's global threadgroup lock (~10 ms here).
    """
    files: dict[str, None] = {}
    for host_dir in paths.values():
        mp = _hierarchy(host_dir, mounts)
        if mp is None:
            continue
        if mounts[mp] == "cgroup2":
            if need_unified:
                files[os.path.join(host_dir, "cgroup.procs")] = None
        else:
            files[os.path.join(host_dir, "tasks")] = None
    return list(files)


WRITABLE_CGROUPS = "org.jaula.cgroup.writable"


def born_in(files: list[str]) -> int:
    """An fd of the cgroup2 folder among join_files' `files`, which is then taken out of them: the
    first process is cloned into it (init.fork_first) rather than moved by a write. -1 where there
    is none, or no clone3 (jaula.linux._sys older than VERSION 3, or JAULA_SYSCALL=ctypes)."""
    from jaula.linux import libc

    for path in files:
        if os.path.basename(path) == "cgroup.procs" and libc.can_clone3():
            fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            files.remove(path)
            return fd
    return -1


def cgroup_binds(paths: dict[str, str], mounts: dict[str, str]) -> tuple[list[tuple[str, str]], bool]:
    """(subdir under /sys/fs/cgroup, container's cgroup dir) per mounted hierarchy; and whether the host is pure v2."""
    binds: dict[str, str] = {}
    for host_dir in paths.values():
        best = _hierarchy(host_dir, mounts)
        if best is None:
            continue
        sub = os.path.relpath(best, CGROUP_ROOT)
        binds[sub if sub != "." else ""] = host_dir
    v2_only = list(binds) == [""]
    return sorted(binds.items()), v2_only


_kept: tuple[object, object] | None = None  # (key, Layout) of kept_layout


def kept_layout():
    """cgroups.layout.probe(), kept for a long-lived caller (jaulad's spawner: it parses the whole
    mount table, which grows with every instance's mounts; 0.5-1.2 ms a create here) while what
    it is made of stays: our own cgroups (/proc/self/cgroup: the caller moved, probe again) and
    the cgroup mounts: on a v1 or hybrid host what is mounted on each entry of /sys/fs/cgroup
    (st_dev: a hierarchy mounted or unmounted there); on a pure v2 host, /sys/fs/cgroup itself
    (its entries are cgroups, not mounts). A cgroup hierarchy mounted elsewhere is not seen."""
    global _kept
    from jaula.cgroups.layout import probe

    try:
        with open("/proc/self/cgroup", "rb") as f:
            own = f.read()
        top = os.stat(CGROUP_ROOT)
        mounts: tuple = ()
        if _kept is None or _kept[1].mode != "v2":
            mounts = tuple(sorted((e.name, e.stat(follow_symlinks=False).st_dev) for e in os.scandir(CGROUP_ROOT)))
        key = (own, top.st_dev, top.st_ino, mounts)
    except OSError:
        return probe()
    if _kept is not None and _kept[0] == key:
        return _kept[1]
    layout = probe()
    if layout.mode == "v2" and mounts:
        key = key[:3] + ((),)
    _kept = (key, layout)
    return layout


def _rmtree(path: str) -> None:
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)
