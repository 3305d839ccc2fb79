"""The container driver: an instance as an OCI container run by jaula.oci as a library.

Layout under the driver's root (a tmpfs such as /run/jaula in production):
  runtime/<name>/state.json     jaula-runtime's own state (runc's layout)
  bundles/<name>/config.json    the rendered config; bundles/<name>/rootfs the mounted volume
  logs/<name>/console.log       the init's console output (truncated at each start): a system
                                instance's pty drained there by the console keeper, an app's
                                stdout and stderr written there directly

`create` in jaula.oci forks the container's first process, so `start` must be called from a
single-threaded process (jaulad's spawner; a test). The init's parent exits during create:
it is reaped by the host's init or by the caller when the caller is a subreaper.
"""

from __future__ import annotations

import errno
import json
import os
import select
import time
from contextlib import ExitStack
from typing import Any

from jaula.errors import BadState, ConfigError, JaulaError, NotFound
from jaula.instances import cgroup_delegation, lxcfs_view, nics, render, settings
from jaula.instances.container_storage import StorageVerbs  # snapshots, copies, backups
from jaula.instances.driver import (
    FROZEN,
    RUNNING,
    STARTING,
    STOPPED,
    Driver,
    InstanceState,
)
from jaula.instances.model import ID_RANGE, Instance, validate_name
from jaula.instances.start_timing import mark

_BUNDLE_FILES = ("config.json", "runtime.log", nics.RECORD)


class ContainerDriver(StorageVerbs, Driver):
    kind = "container"
    SETTINGS = frozenset(settings.SETTINGS)

    def __init__(self, root: str, pool: Any, templates: Any, *, cgroup_parent: str | None = None,
                 console_keeper: str | None = None) -> None:
        """`pool`: a jaula.storage pool holding one volume per instance (named as it);
        `templates`: a TemplateStore; `cgroup_parent`: where instances' cgroups go (OCI
        cgroupsPath rules: "p" -> <caller's cgroup>/p/<name>, removed with its last instance;
        None: <caller's cgroup>/jaula/<name>); `console_keeper`: the console keeper's socket
        (jaula.instances.console_pty): a system instance's init then gets a pty as its console,
        whose master goes to the keeper; None (or no keeper answering): its output goes
        straight into its console log, its stdin is /dev/null."""
        self.root = os.path.abspath(root)
        self.console_keeper = console_keeper
        self._keeper_probe: Any = None  # an idle connection to the keeper: its hang-up says it died
        if console_keeper:
            _preload_console()
        self.runtime_root = os.path.join(self.root, "runtime")
        self.pool = pool
        self.templates = templates
        self.cgroup_parent = cgroup_parent
        self._inits: dict[tuple[str, str], render.InitKind] = {}  # (template root, build id) -> its init
        self._last_spec: Any = None  # the last start's parsed spec (start says why)

    # --- paths and state ---------------------------------------------------------------------------
    def bundle(self, name: str) -> str:
        return os.path.join(self.root, "bundles", validate_name(name))

    def console_log(self, name: str) -> str:
        return os.path.join(self.root, "logs", validate_name(name), "console.log")

    def _container(self, name: str):
        from jaula.oci import state

        try:
            return state.load(self.runtime_root, validate_name(name))
        except NotFound:
            return None

    def _running(self, inst: Instance):
        """The runtime's container when the instance's processes are there, else BadState."""
        from jaula.oci.state import STOPPED as GONE

        c = self._container(inst.name)
        if c is None or c.status() == GONE:
            raise BadState(f"instance {inst.name!r} is not running")
        return c

    def _log(self, name: str):
        from jaula.oci.log import Log

        return Log(path=os.path.join(self.bundle(name), "runtime.log"))

    # --- storage -----------------------------------------------------------------------------------
    def create(self, inst: Instance) -> None:
        inst.validate()
        cfg = settings.effective(inst.config)
        template = self.templates.get(inst.template)
        size = cfg.get("limits.disk")
        if size is not None and not self.pool.has_quota:
            raise ConfigError(f"limits.disk: a {self.pool.kind} pool has no per-instance disk quota; "
                              "use a loop or btrfs pool, or unset limits.disk")
        self.pool.create_volume(inst.name, str(template.rootfs), size=size)
        try:
            self._personalize(inst, keep=True)
        except BaseException:
            self.pool.unmount(inst.name)
            self.pool.delete_volume(inst.name)
            raise
        # Its console log, empty, for the start to truncate (its folder and inode made here, not
        # at the start: ~0.04 ms of ext4 work less there); the start makes it if this could not.
        log = self.console_log(inst.name)
        try:
            os.makedirs(os.path.dirname(log), 0o700, exist_ok=True)
            os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError:
            pass

    def _personalize(self, inst: Instance, volume: str | None = None, keep: bool = False) -> None:
        """Write the instance's name in its /etc/hostname (a system instance's init sets the host
        name from it), resolved inside the tree: an image's symlink there is replaced, never followed.
        `volume`: write it in that volume instead (a scratch copy that becomes its snapshot).
        `keep`: leave the root mounted where a start mounts it (`create`: its start, the launch's,
        then finds it there: `_mount_root`); else it is unmounted and its bundle folder goes."""
        volume = volume or inst.name
        idmap = self._idmap(inst)
        rootfs = os.path.join(self.bundle(inst.name), "rootfs")
        os.makedirs(rootfs, 0o711, exist_ok=True)
        self.pool.mount(volume, rootfs, idmap=idmap)
        try:
            _write_hostname(rootfs, inst.name, idmap)
        except BaseException:
            keep = False
            raise
        finally:
            if not keep:
                self.pool.unmount(volume)
                self._remove_bundle(inst.name)

    @staticmethod
    def _idmap(inst: Instance):
        """The IdMap of an unprivileged instance's range; None for a privileged one."""
        if inst.privileged:
            return None
        if inst.idmap_base is None:
            raise ConfigError(f"instance {inst.name!r} has no id range (idmap_base): allocate one, "
                              "or set security.privileged=true")
        from jaula.storage.idmap import IdMap

        return IdMap(inst.idmap_base, inst.idmap_base, ID_RANGE)

    def delete(self, inst: Instance) -> None:
        from jaula.oci.state import STOPPED as GONE

        c = self._container(validate_name(inst.name))
        if c is not None:
            if c.status() != GONE:
                raise BadState(f"cannot delete instance {inst.name!r}: it is {self.state(inst).status}; stop it first")
            self._destroy(c, inst.name)  # it ended by itself: its cgroup and runtime state go too
        self._release(inst.name)
        self.pool.delete_volume(inst.name)
        log = self.console_log(inst.name)
        for path in (log, os.path.dirname(log)):
            try:
                os.unlink(path) if path == log else os.rmdir(path)
            except FileNotFoundError:
                pass

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, inst: Instance) -> InstanceState:
        from jaula.oci.state import STOPPED as GONE

        mark(inst.name, "drv.in")
        self._last_spec = None
        inst.validate()
        name = inst.name
        cfg = settings.effective(inst.config)
        old = self._container(name)
        if old is not None:
            if old.status() != GONE:
                raise BadState(f"cannot start instance {name!r}: it is {self.state(inst).status}")
            self._cleanup(old, name)  # it ended by itself: free what it held first
        template = self.templates.get(inst.template)
        init = self._system_init(inst, template) if inst.mode == "system" else render.INITS["app"]
        bundle = self.bundle(name)
        rootfs = os.path.join(bundle, "rootfs")
        cgroups_path = f"{self.cgroup_parent.rstrip('/')}/{name}" if self.cgroup_parent else None
        with ExitStack() as undo:
            undo.callback(self._prune_cgroup_parent)  # last: a failed create may have made it
            os.makedirs(rootfs, 0o711, exist_ok=True)
            undo.callback(self._remove_bundle, name)
            idmap = self._idmap(inst)
            kept = self._kept_root(name, inst, idmap)
            if kept:
                undo.callback(self.pool.unmount, name)
            if idmap is not None:
                _check_reachable(rootfs, idmap.uid_base)
            mark(name, "drv.checked")
            if not kept:
                self._mount_root(name, rootfs, idmap)
                undo.callback(self.pool.unmount, name)
            mark(name, "drv.mounted")
            nics.write_etc(rootfs, inst.network, idmap)  # resolv.conf and hosts of its network
            # A privileged instance's capabilities are the host's: only what our bounding set holds.
            known = _bounding_caps() if idmap is None else None
            keeper = self._console_keeper(inst)
            if keeper is not None:
                undo.callback(keeper.close)
            spec = render.render(inst, cfg, template, rootfs, init, cgroups_path, known_caps=known,
                                 lxcfs=lxcfs_view.for_instance(self.root, name, cfg),
                                 sysinfo_agent=self._sysinfo_agent(keeper, cfg))
            if keeper is not None:
                spec["process"]["terminal"] = True  # a pty as its console: the keeper holds the master
            mark(name, "drv.rendered")
            # The runtime takes the spec as rendered, parsed here (every check of config.load's
            # but the file's read and JSON decoding; create validates it as ever). config.json
            # (read by exec, ours and jaula-runtime's, after the start) is made and written while
            # the init builds its root: on_namespaces below (create changes nothing of the dict;
            # hooks, which may read it, are not rendered: a spec with some gets it first)
            from jaula.oci import config as oci_config

            parsed = oci_config.parse(spec, bundle)
            # the rendered dict, held here only: dropped once written, so that its objects are
            # freed beside the init's work, not after its exec when start returns (where every
            # page they sit on, shared with the cloned init, is a copy-on-write fault)
            pending = [spec]
            if spec.get("hooks"):
                _write_config(bundle, _config_bytes(pending.pop()))
            del spec
            mark(name, "drv.written")
            # NICs into the init's netns before it runs: while it builds its root, when it can
            # (their firewall rules first, before the fork: nics.police_all says why)
            plug = None
            if inst.network.get("nics"):
                nics.police_all(bundle, inst.network, undo)
                mark(name, "drv.policed")
                plug = lambda pid: nics.plug_all(bundle, inst.network, pid, undo, policed=True)

            def on_namespaces(pid: int) -> None:
                if pending:
                    _write_config(bundle, _config_bytes(pending.pop()))
                if plug is not None:
                    plug(pid)

            # No cgroup to delegate between create and start: the runtime starts it too, the init
            # going on to exec without a wake-up (with a keeper, once the keeper has its console).
            at_once = idmap is None or not (cfg.get("security.nesting") is True or cgroup_delegation.writable(init.name))
            c = self._create(name, bundle, on_namespaces, keeper, start=at_once, spec=parsed)
            # the parsed spec is freed at the next start, before its fork (see `pending`)
            self._last_spec, parsed = parsed, None
            undo.callback(self._destroy, c, name)
            mark(name, "drv.created")
            if idmap is not None:  # its init (systemd) and, nesting, its runtimes use cgroups
                cgroup_delegation.delegate(cgroup_delegation.to_delegate(
                    c.data["cgroupPaths"], init.name, cfg.get("security.nesting") is True),
                    idmap.uid_base, idmap.gid_base)
            if not c.started:
                _start_and_wait_exec(c, self._log(name))
            mark(name, "drv.execd")
            undo.pop_all()
        st = _state_of(c, started=True)  # the container just started: its status read again
        mark(name, "drv.state")
        # An init that exited already (an app running /bin/true) reads stopped, pid 0: its pid still
        # goes back, so the caller watches it (the spawner's zombie until reaped) and records the
        # exit and its status, instead of "running" with nothing to watch.
        return st if st.pid else st.replace(pid=c.pid)

    def _kept_root(self, name: str, inst: Instance, idmap: Any = False) -> bool:
        """Whether the instance's root is mounted where its start mounts it, through its id range
        (`idmap`, by default its own): left there by `create` (a launch's start then mounts
        nothing: ~0.7 ms, and create unmounts nothing), or by a file transfer's `mount_root`."""
        if idmap is False:
            try:
                idmap = self._idmap(inst)
            except ConfigError:
                return False
        return self.pool.mounted_here(name, os.path.join(self.bundle(name), "rootfs"), idmap)

    def _mount_root(self, name: str, rootfs: str, idmap: Any) -> None:
        """Mount the volume at `rootfs`; mounted otherwise (another id range since), first unmounted."""
        try:
            self.pool.mount(name, rootfs, idmap=idmap)
        except BadState:
            if self._mounted_at(name) is None:
                raise
            self.pool.unmount(name)
            self.pool.mount(name, rootfs, idmap=idmap)

    def _system_init(self, inst: Instance, template: Any) -> render.InitKind:
        """The init of a system instance's template (render.detect_init), kept per template build
        (its id is new at each build; a template is not changed in place): a few stats and
        readlinks in its tree otherwise, at each start."""
        root = str(template.rootfs)
        build = getattr(template, "id", "")
        key = (root, build)
        found = self._inits.get(key) if build else None
        if found is None:
            if not os.path.lexists(os.path.join(root, "sbin/init")):
                raise ConfigError(f"template {inst.template!r} has no /sbin/init: run it as an app instance")
            found = render.detect_init(root)
            if build:
                if len(self._inits) >= 64:
                    self._inits.clear()
                self._inits[key] = found
        return found

    def _sysinfo_agent(self, keeper: Any, cfg: dict[str, Any]) -> str | None:
        """The console keeper's seccomp agent socket for security.syscalls.intercept.sysinfo, when
        a keeper answers (a system instance's connection to it, or a probe for an app): None when
        not, the instance then starts without it (the kernel's sysinfo)."""
        if not self.console_keeper or cfg.get("security.syscalls.intercept.sysinfo") is False:
            return None
        from jaula.instances import console_pty

        path = os.path.join(os.path.dirname(self.console_keeper), console_pty.AGENT_SOCKET)
        if keeper is None and not self._keeper_alive():
            return None
        return path if os.path.exists(path) else None

    def _keeper_alive(self) -> bool:
        """Whether the console keeper answers, for an app instance's start: one connection kept
        open to it (the keeper keeps idle clients) and polled for its hang-up, instead of a connect
        and close at every start (~1 ms of the keeper's and our time); when it hung up (the keeper
        died, jaulad starts another on the same socket), connect again."""
        from jaula.instances import console_pty

        conn = self._keeper_probe
        if conn is not None:
            p = select.poll()
            p.register(conn.fileno(), select.POLLIN | select.POLLRDHUP)
            if not p.poll(0):  # the keeper sends nothing unasked: any event is its end
                return True
            conn.close()
            self._keeper_probe = None
        try:
            self._keeper_probe = console_pty.connect(self.console_keeper)  # close-on-exec
        except OSError:
            return False
        return True

    def _console_keeper(self, inst: Instance) -> Any:
        """A connection to the console keeper for a system instance's pty console; None for an app
        instance, or when no keeper is set or answers (its output then goes into the log as is)."""
        if inst.mode != "system" or not self.console_keeper:
            return None
        from jaula.instances import console_pty

        try:
            return console_pty.connect(self.console_keeper)
        except OSError as exc:
            import logging

            logging.getLogger("jaula.instances").warning(
                "console keeper %s: %s: %s starts with a read-only console (its output in its log)",
                self.console_keeper, exc.strerror or exc, inst.name)
            return None

    def _create(self, name: str, bundle: str, on_namespaces: Any = None, keeper: Any = None, start: bool = False,
                spec: Any = None):
        """jaula.oci's create with the init's output in the console log: with `keeper` (a connection
        to the console keeper) the init's console is a pty whose master, the log's fd and a pidfd of
        the init go to the keeper before the init runs (one message, no reply awaited); without,
        the init's stdin is /dev/null and its stdout and stderr the log itself.
        `on_namespaces(pid)` as jaula.oci.create.Options says; `spec`: the bundle's config parsed
        (jaula.oci.config.parse), None to have create read it."""
        from jaula.oci.create import Options, create

        log_path = self.console_log(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        try:
            out = os.open(log_path, flags, 0o600)
        except FileNotFoundError:  # no folder yet (made by create, gone since)
            os.makedirs(os.path.dirname(log_path), 0o700, exist_ok=True)
            out = os.open(log_path, flags, 0o600)
        try:
            null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(out)
            raise
        saved: list[int | None] = []
        mine = theirs = None
        try:
            if keeper is not None:
                from jaula.oci import sync

                mine, theirs = sync.pair()  # the init sends its pty's master on it during create
            for fd in (0, 1, 2):
                try:
                    saved.append(os.dup(fd))
                except OSError:
                    saved.append(None)
            # The forked init inherits fds 0-2 (and closes every other one).
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)

            def hook(pid: int) -> None:  # the init is forked: our own stdio back (our log is not its)
                for fd, copy in enumerate(saved):
                    if copy is not None:
                        os.dup2(copy, fd)
                on_namespaces(pid)

            ready = None
            if keeper is not None and start:  # the console to the keeper before the init runs
                def ready(pid: int) -> None:
                    self._hand_console(pid, name, mine, out, keeper)
            opts = Options(on_namespaces=hook if on_namespaces is not None else None, console_fd=theirs, start=start,
                           on_ready=ready)
            c = create(self.runtime_root, name, bundle, opts, self._log(name), spec=spec)
            if keeper is not None and ready is None:
                mark(name, "drv.oci_created")
                try:
                    self._hand_console(c.pid, name, mine, out, keeper)
                except BaseException:
                    self._destroy(c, name)
                    raise
            return c
        finally:
            for sock in (mine, theirs, keeper):  # the keeper's connection too: one start, one message
                if sock is not None:
                    sock.close()
            for fd, copy in enumerate(saved):
                if copy is None:
                    os.close(fd)
                else:
                    os.dup2(copy, fd)
                    os.close(copy)
            os.close(null)
            os.close(out)

    def _hand_console(self, pid: int, name: str, mine: Any, out: int, keeper: Any) -> None:
        """The master the init sent during create (already queued: no wait), the log and a pidfd of
        the init, to the keeper; on a failure `_create` ends the container (it is not the caller's yet)."""
        from jaula.instances import console_pty
        from jaula.oci import sync

        mine.setblocking(False)
        try:
            _, _, fds = sync.recv(mine, with_fds=True)
        except BlockingIOError:
            fds = []
        try:
            if len(fds) != 1:
                raise JaulaError(f"instance {name!r}: the init sent no console master during create")
            pidfd = os.pidfd_open(pid)
            try:
                console_pty.hand_over(keeper, name, fds[0], out, pidfd)
            except OSError as exc:
                raise JaulaError(f"instance {name!r}: the console keeper took no console ({exc}); "
                                 "jaulad starts another keeper: start the instance again") from None
            finally:
                os.close(pidfd)
        finally:
            for fd in fds:
                os.close(fd)

    def stop(self, inst: Instance, timeout: float = 30.0, force: bool = False) -> bool:
        from jaula.oci import lifecycle
        from jaula.oci.state import CREATED, PAUSED
        from jaula.oci.state import RUNNING as UP

        name = validate_name(inst.name)
        c = self._container(name)
        if c is None:
            bundle = self.bundle(name)
            only_root = _listdir(bundle) == ["rootfs"] and self._kept_root(name, inst)
            if only_root or (self._mounted_at(name) is None and not os.path.exists(bundle)):
                raise BadState(f"instance {name!r} is not running")  # (only its root mounted by create)
            self._release(name)  # what a start cut short left
            return True
        st = c.status()
        clean = st not in (UP, PAUSED, CREATED)   # it had ended by itself
        if not clean and not force and st != CREATED:
            if st == PAUSED:
                lifecycle._cgroup(c).thaw()
            sig = int(c.data.get("annotations", {}).get(render.ANNOTATION + "stop-signal", 15))
            try:
                waited = _wait_handler(c.pid, sig, min(timeout, 0.5))
                lifecycle.signal_init(c, sig)
                clean = _wait_exit(c, max(0.0, timeout - waited))
            except BadState:
                clean = True  # it went while we looked
        self._cleanup(c, name)
        return clean

    def _cleanup(self, c: Any, name: str) -> None:
        """Kill what is left, remove the cgroup and the runtime state, unmount the root."""
        self._destroy(c, name)
        self._release(name)

    def _destroy(self, c: Any, name: str) -> None:
        from jaula.oci import lifecycle

        lifecycle.destroy_processes(c)
        _reap(c.pid)
        lifecycle.cleanup(c, self._log(name))
        self._prune_cgroup_parent()

    def _prune_cgroup_parent(self) -> None:
        """Our cgroup parent goes with its last instance (the runtime prunes only its default
        parent). No race with a start: the spawner serves one driver call at a time."""
        if not self.cgroup_parent:
            return
        from jaula.cgroups.base import open_cgroup

        try:
            dirs = {os.path.dirname(t.dir) for t in open_cgroup(f"{self.cgroup_parent.rstrip('/')}/x", "x").targets}
        except JaulaError:
            return
        for d in dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass  # another instance is in it (EBUSY, ENOTEMPTY), or it is gone

    def _mounted_at(self, name: str) -> str | None:
        try:
            return self.pool.mounted_at(name)
        except NotFound:
            return None  # no volume (deleted, or never made)

    def _release(self, name: str) -> None:
        nics.unplug_all(self.bundle(name))  # what its record says was plugged (firewall rules, links)
        if self._mounted_at(name) is not None:
            self.pool.unmount(name)
        self._remove_bundle(name)

    def _remove_bundle(self, name: str) -> None:
        """Remove the bundle's own files only: rmdir of the root fails if a volume is still there."""
        bundle = self.bundle(name)
        for f in _BUNDLE_FILES + (".config.json.tmp",):
            try:
                os.unlink(os.path.join(bundle, f))
            except FileNotFoundError:
                pass
        for d in (os.path.join(bundle, "rootfs"), bundle):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass

    def freeze(self, inst: Instance) -> None:
        from jaula.oci import lifecycle

        lifecycle.pause(self._running(inst))

    def unfreeze(self, inst: Instance) -> None:
        from jaula.oci import lifecycle

        lifecycle.resume(self._running(inst))

    # --- inside ------------------------------------------------------------------------------------
    def exec(self, inst: Instance, args: list[str], *, env: dict[str, str] | None = None,
             user: tuple[int, int] | None = None, cwd: str | None = None, tty: bool = False,
             stdin: int | None = None, stdout: int | None = None, stderr: int | None = None) -> int:
        c, spec, p = self._exec_spec(inst, args, env=env, user=user, cwd=cwd, tty=tty)
        return _exec_in_child(c, spec, p, (stdin, stdout, stderr), self._log(inst.name))

    def spawn_exec(self, inst: Instance, args: list[str], *, fds: list[int], env: dict[str, str] | None = None,
                   user: tuple[int, int] | None = None, cwd: str | None = None, tty: bool = False,
                   width: int = 0, height: int = 0, console_socket: str | None = None) -> int:
        """`exec` without waiting (jaulad's spawner must not block on a long command): fork a
        waiter that runs it and returns the waiter's pid. `fds`: stdin, stdout, stderr (ignored
        with `tty`: the pty's master goes to the listener on `console_socket`), then a pipe on
        which the waiter writes one JSON line, {"exit": N} or {"error": TEXT, "type": CLASS}.
        The waiter forwards HUP INT QUIT USR1 USR2 TERM WINCH to the command (jaula.oci.foreground)."""
        if len(fds) != 4:
            raise ConfigError("spawn_exec: give 4 fds: stdin, stdout, stderr and the status pipe")
        if tty and not console_socket:
            raise ConfigError("spawn_exec: a pty needs a console socket to hand its master to")
        c, spec, p = self._exec_spec(inst, args, env=env, user=user, cwd=cwd, tty=tty, width=width, height=height)
        log = self._log(inst.name)
        pid = os.fork()
        if pid == 0:
            _exec_waiter(c, spec, p, fds, console_socket if tty else None, log)
        return pid

    def mount_root(self, inst: Instance) -> str:
        """Mount a stopped instance's root where its start would (bundles/<name>/rootfs, idmapped
        the same way) for a file push or pull, and return that path; `unmount_root` undoes it.
        The caller keeps starts of the instance out meanwhile (jaulad: its operation lock)."""
        from jaula.oci.state import STOPPED as GONE

        name = validate_name(inst.name)
        c = self._container(name)
        if c is not None and c.status() != GONE:
            raise BadState(f"instance {name!r} is {self.state(inst).status}: its root is reached through its init")
        rootfs = os.path.join(self.bundle(name), "rootfs")
        if self._kept_root(name, inst):
            return rootfs  # mounted by create, as it would be here
        if self._mounted_at(name) is not None:
            raise BadState(f"instance {name!r}: its root is mounted already (a start or a file transfer under way)")
        os.makedirs(rootfs, 0o711, exist_ok=True)
        try:
            self.pool.mount(name, rootfs, idmap=self._idmap(inst))
        except BaseException:
            self._remove_bundle(name)
            raise
        return rootfs

    def unmount_root(self, inst: Instance) -> None:
        """Undo `mount_root`: unmount the volume, remove the empty bundle."""
        self._release(validate_name(inst.name))

    def _exec_spec(self, inst: Instance, args: list[str], *, env: dict[str, str] | None, user: tuple[int, int] | None,
                   cwd: str | None, tty: bool, width: int = 0, height: int = 0):
        """The running container, its spec and the exec's Process (the init's security settings)."""
        from jaula.oci import config

        if not args or not all(isinstance(a, str) for a in args):
            raise ConfigError("exec: give the command as a list of strings")
        c = self._running(inst)
        if c.frozen():
            raise BadState(f"cannot exec in instance {inst.name!r}: it is frozen")
        spec = config.load(c.bundle)
        if spec.linux.seccomp_json is not None:  # load() leaves it unparsed: the exec gets the init's filter
            from jaula.oci.seccomp import Seccomp

            spec.linux.seccomp = Seccomp.from_json(spec.linux.seccomp_json)
        base = spec.process
        merged: dict[str, str] = dict(e.split("=", 1) for e in base.env)
        merged.update(dict(e.split("=", 1) for e in settings.environment(inst.config)))
        merged.update(env or {})
        uid, gid = user if user is not None else (base.user.uid, base.user.gid)
        p = config.Process(
            terminal=tty, args=list(args), env=[f"{k}={v}" for k, v in merged.items()], cwd=cwd or base.cwd,
            user=config.User(uid=uid, gid=gid), capabilities={k: list(v) for k, v in (base.capabilities or {}).items()},
            rlimits=list(base.rlimits), no_new_privileges=base.no_new_privileges,
            console_width=width if tty else 0, console_height=height if tty else 0)
        return c, spec, p

    # --- looking and changing ----------------------------------------------------------------------
    def state(self, inst: Instance) -> InstanceState:
        c = self._container(inst.name)
        return InstanceState(status=STOPPED) if c is None else _state_of(c)

    def stats(self, inst: Instance):
        from jaula.cgroups.base import reopen

        c = self._running(inst)
        st = reopen(c.data.get("cgroupPaths") or {}).stats()
        st.name = inst.name
        return st

    def update(self, inst: Instance, config: dict[str, Any]) -> dict[str, Any]:
        new = settings.validate(config)
        old = settings.validate(inst.config)
        changed = settings.changed_keys(old, new)
        c = self._container(inst.name)
        from jaula.oci.state import STOPPED as GONE

        running = c is not None and c.status() != GONE
        if running:
            fixed = [k for k in changed if not settings.is_live(k)]
            if fixed:
                raise BadState(f"instance {inst.name!r} is running: {', '.join(fixed)} cannot change while it runs; "
                               "stop it first")
        if "limits.disk" in changed:
            size = new.get("limits.disk")
            if size is None:
                raise ConfigError("limits.disk: a disk quota cannot be removed; set a larger size instead")
            if not self.pool.has_quota:
                raise ConfigError(f"limits.disk: a {self.pool.kind} pool has no per-instance disk quota")
            self.pool.resize(inst.name, size)
        if running:
            res = render.resources_update(settings.effective(old), settings.effective(new))
            if res:
                from jaula.oci import lifecycle

                lifecycle.update(c, res)
            nics.update(self.bundle(inst.name), inst.network, new, c.pid)  # NICs added, removed, rates
        return new


def _preload_console() -> None:
    """Import here, once, what a forked init imports to make its pty console (jaula.oci.init's
    _preload): else every start's init imports them anew after the fork (termios alone ~0.4 ms)."""
    import fcntl  # noqa: F401
    import struct  # noqa: F401
    import termios  # noqa: F401

    from jaula.linux import fs, mount  # noqa: F401
    from jaula.oci import sync  # noqa: F401


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _write_hostname(rootfs: str, name: str, idmap: Any) -> None:
    """`name` in /etc/hostname of the tree mounted at `rootfs` (see _personalize), owned by the
    instance's root."""
    from jaula.linux.fs import open_in_root

    rfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            etc = open_in_root(rfd, "etc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return  # no /etc: nothing reads a host name file there
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open("hostname", flags, 0o644, dir_fd=etc)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.EISDIR):
                    raise
                if e.errno == errno.EISDIR:
                    return
                os.unlink("hostname", dir_fd=etc)
                fd = os.open("hostname", flags | os.O_EXCL, 0o644, dir_fd=etc)
            try:
                os.write(fd, (name + "\n").encode())
                if idmap is not None:
                    os.fchown(fd, idmap.uid_base, idmap.gid_base)
            finally:
                os.close(fd)
        finally:
            os.close(etc)
    finally:
        os.close(rfd)


def _state_of(c: Any, started: bool = False) -> InstanceState:
    """The instance's state from the runtime's container `c` (its status read now). `started`:
    `start` just started it (its exec fifo gone, no freeze yet: this process serves one call at a
    time): running while its init lives, stopped once it ended (an app's /bin/true), without the
    fifo's and the freezer's reads of Container.status."""
    from jaula.oci.state import CREATED, CREATING, PAUSED
    from jaula.oci.state import RUNNING as UP
    from jaula.oci.state import STOPPED as GONE

    st = (UP if c.alive() else GONE) if started else c.status()
    ann = c.data.get("annotations") or {}
    status = {UP: RUNNING, PAUSED: FROZEN, CREATED: STARTING, CREATING: STARTING}.get(st, STOPPED)
    return InstanceState(status=status, pid=c.pid if status != STOPPED else 0,
                         init=ann.get(render.ANNOTATION + "init", ""),
                         stop_signal=int(ann.get(render.ANNOTATION + "stop-signal", 15)))


def _config_bytes(spec: dict[str, Any]) -> bytes:
    """config.json's content: one json.dumps without indent (the C encoder; json.dump to a file,
    or any indent, takes the pure Python one: 0.8-1.1 ms a start in jaulad's spawner before)."""
    return json.dumps(spec, separators=(",", ":")).encode()


def _write_config(bundle: str, data: bytes) -> None:
    """The bundle's config.json, replaced whole (a temporary file renamed), in one write."""
    from jaula.storage.fsutil import replace_file

    replace_file(os.path.join(bundle, "config.json"), data, 0o644, os.path.join(bundle, ".config.json.tmp"))


def _start_and_wait_exec(c: Any, log: Any) -> None:
    """jaula.oci's start, returning once the init has exec'd the instance's program (or died), so
    that a stop right after a start reaches the program's own signal handlers: the init holds the
    exec fifo open until its execve closes it, and a reader opened before start sees it go."""
    from jaula.oci import lifecycle

    watch = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        lifecycle.start(c, log)
    except BaseException:
        os.close(watch)
        raise
    lifecycle._wait_exec(watch)  # closes it


def _bounding_caps() -> list[str]:
    from jaula.linux.caps import NAMES

    with open("/proc/self/status") as f:
        mask = int(next(line for line in f if line.startswith("CapBnd:")).split()[1], 16)
    return [name for i, name in enumerate(NAMES) if mask & (1 << i)]


def _check_reachable(path: str, uid: int) -> None:
    """The instance's root (host uid `uid`, no capability over host files) must traverse every
    folder above its root tree, or the runtime's bind mount of it fails with a bare EACCES."""
    import stat

    d = os.path.dirname(os.path.abspath(path))
    while True:
        mode = os.stat(d).st_mode
        if not mode & stat.S_IXOTH:
            raise ConfigError(f"the instance's root (host uid {uid}) cannot reach {path!r}: {d!r} is mode "
                              f"{stat.S_IMODE(mode):04o}; give the driver a root every user may traverse (chmod o+x)")
        if d == "/":
            return
        d = os.path.dirname(d)


def _wait_handler(pid: int, sig: int, timeout: float) -> float:
    """Wait until the init catches `sig` (SigCgt in /proc/PID/status); the seconds waited.

    A pid 1 ignores signals from outside its namespace that it has no handler for: sent in the
    moment between its execve and its sigaction (a stop right after a start), the stop signal
    would be lost and the stop would wait its whole timeout.
    """
    start = time.monotonic()
    bit = 1 << (sig - 1)
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                caught = next((int(line.split()[1], 16) for line in f if line.startswith("SigCgt:")), 0)
        except (OSError, ValueError):
            break  # gone: nothing to wait for
        waited = time.monotonic() - start
        if caught & bit or waited >= timeout:
            return waited
        time.sleep(0.005)
    return time.monotonic() - start


def _wait_exit(c: Any, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the container's init to exit (its pidfd turns readable)."""
    from jaula.linux import proc

    try:
        pfd = proc.pidfd_open(c.pid)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return True
        raise
    try:
        if not c.alive():
            return True
        poller = select.poll()
        poller.register(pfd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return not c.alive()
            if poller.poll(max(1, int(left * 1000))):
                return True
    finally:
        os.close(pfd)


def _reap(pid: int) -> None:
    """Reap the init when it was ours (the caller is a subreaper); nothing to do otherwise."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _exec_in_child(c: Any, spec: Any, p: Any, fds: tuple[int | None, int | None, int | None], log: Any) -> int:
    """jaula.oci's exec from a child of ours: it becomes a subreaper and forwards signals while it
    waits, which must not change this process; the child puts the given fds on 0-2 first."""
    from jaula.oci.execute import ExecOptions, execute

    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            os.close(rfd)
            for target, fd in enumerate(fds):
                if fd is not None:
                    os.dup2(fd, target)
            code = execute(c, spec, p, ExecOptions(), log)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            try:
                os.write(wfd, f"{type(e).__name__}\0{e}".encode()[:4000])
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        err = b""
        while chunk := os.read(rfd, 4096):
            err += chunk
    finally:
        os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if err:
        kind, _, text = err.decode(errors="replace").partition("\0")
        raise (BadState if kind == "BadState" else JaulaError)(f"exec in {c.id!r}: {text}")
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _exec_waiter(c: Any, spec: Any, p: Any, fds: list[int], console_socket: str | None, log: Any) -> None:
    """The forked waiter of `spawn_exec`: never returns. Only its stdio and the status pipe stay
    open (the spawner's socket and jaulad's root lock must not be held by a long command)."""
    import signal

    code = 0
    status = 3
    try:
        null = os.open("/dev/null", os.O_RDWR)
        moved = [os.dup(fd) for fd in fds]       # above 0-3 first: the fds may sit on 0-3
        for target, fd in enumerate(moved[:3]):
            os.dup2(null if console_socket else fd, target)
        os.dup2(moved[3], status)
        os.closerange(status + 1, 1 << 20)      # close_range(2): one call
        for sig in range(1, signal.NSIG):        # the spawner ignores SIGINT: the command must not
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        from jaula.oci.execute import ExecOptions, execute

        result: dict[str, Any] = {"exit": execute(c, spec, p, ExecOptions(console_socket=console_socket), log)}
    except BaseException as e:  # noqa: BLE001 - reported to jaulad on the status pipe
        result = {"error": f"exec in {c.id!r}: {e}", "type": type(e).__name__}
        code = 1
    try:
        os.write(status, (json.dumps(result) + "\n").encode())
    except OSError:
        code = 1
    os._exit(code)
