"""jaulad's real `Backend`: every driver call goes to the single-threaded spawner (spawner.py),
and every instance it starts is watched by the supervisor (supervisor.py) in the event loop.

    sp = Spawner.start(make_driver, {"root": "/var/lib/jaula"})   # first thing, before threads
    backend = SpawnerBackend(sp, db, root)
    backend.attach(supervisor, loop)                               # once the event loop runs

The spawner builds `ContainerDriver(ROOT/instances, open_pool("dir", ROOT/pools/default),
TemplateStore(ROOT/templates), cgroup_parent=identity.cgroup_parent(ROOT))` (`make_driver`,
importable by name so a restart by re-exec works): instances' cgroups go under a parent of
this root's own ("jaula", or "jaula-<tag>" for a root other than the default). `start` records
the init's pid and start time in the instance's row (live restore adopts them) and hands its
pidfd to the supervisor; `stop` stops watching first, so a stop asked for (or a restart) is not
reported as the instance exiting by itself.

A create over a missing template "busybox" builds it first (seconds, no network); any other
missing template is refused, saying how to build it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

from jaula.daemon.db import Database
from jaula.daemon.spawner import Spawner, SpawnerDied
from jaula.errors import NotFound
from jaula.instances.driver import InstanceState
from jaula.instances.model import Instance
from jaula.instances.start_timing import mark

log = logging.getLogger("jaula.backend")

#: templates built on first use when a create names them
AUTO_TEMPLATES = {"busybox": "busybox"}
#: the kind of jaulad's pool (jaula.storage.pool)
POOL_KIND = "dir"


def paths(root: str | os.PathLike[str]) -> dict[str, Path]:
    r = Path(root)
    return {"instances": r / "instances", "pool": r / "pools" / "default",
            "templates": r / "templates", "cache": r / "cache"}


def make_driver(root: str) -> Any:
    """The spawner's driver over jaulad's root (module level: a re-exec'd spawner imports it)."""
    from jaula.daemon.identity import cgroup_parent
    from jaula.instances.container import ContainerDriver
    from jaula.storage import TemplateStore
    from jaula.storage.pool import open_pool

    p = paths(root)
    return ContainerDriver(str(p["instances"]), open_pool(POOL_KIND, str(p["pool"])),
                           TemplateStore(root=p["templates"], cache=p["cache"]),
                           cgroup_parent=cgroup_parent(root),
                           console_keeper=os.path.join(root, "console-keeper.sock"))  # console_pty.SOCKET_NAME


class _Stats:
    """The spawner's stats reply (a dict) as the API expects it (`as_dict`)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def as_dict(self) -> dict[str, Any]:
        return self.data


class SpawnerBackend:
    """The Backend over a Spawner, recording pids in `db` and watching inits with a Supervisor."""

    records_start = True  # start() records status running and the pid in `db` itself

    def __init__(self, spawner: Spawner, db: Database, root: str | os.PathLike[str]) -> None:
        self.spawner = spawner
        self.db = db
        self.root = Path(root)
        self.supervisor: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._build_lock = threading.Lock()

    def attach(self, supervisor: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.supervisor, self.loop = supervisor, loop

    # -- the spawner ----------------------------------------------------------------------------
    def call(self, op: str, inst: Instance | None = None, **args: Any) -> Any:
        try:
            return self.spawner.call(op, inst, **args)
        except SpawnerDied:
            log.error("the spawner died; starting a new one")
            try:
                self.spawner.restart()
            except Exception:  # the next call says it again
                log.exception("the spawner could not be restarted")
            raise

    def _in_loop(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` in the event loop's thread (the supervisor's) and return its result."""
        if self.supervisor is None or self.loop is None:
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        from jaula.daemon.operations import run_left_for_loop

        if running is self.loop:
            run_left_for_loop(self.loop)
            return fn(*args)

        async def run() -> Any:
            run_left_for_loop(self.loop)  # a start's watch still waiting for its answer: first
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def _in_loop_soon(self, fn: Any, *args: Any) -> None:
        """Have `fn(*args)` run in the event loop's thread, without waiting for it (one thread hop
        less on a start's path): after the start's answer went out when the API runs it in one
        worker (operations.after_answer), else at once; calls keep their order, so a stop's
        `unwatch` (`_in_loop`, after the start's operation ended) runs after the start's `watch`.
        Raises RuntimeError when the loop is closed."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            fn(*args)
        else:
            from jaula.daemon.operations import after_answer

            after_answer(self.loop, fn, *args)  # type: ignore[arg-type]

    # -- templates ------------------------------------------------------------------------------
    def template_store(self) -> Any:
        """The TemplateStore under the root (the API's templates routes use it)."""
        from jaula.storage import TemplateStore

        p = paths(self.root)
        return TemplateStore(root=p["templates"], cache=p["cache"])

    def ensure_template(self, name: str) -> None:
        from jaula.storage import TemplateStore

        p = paths(self.root)
        store = TemplateStore(root=p["templates"], cache=p["cache"])
        if store.exists(name):
            return
        source = AUTO_TEMPLATES.get(name)
        if source is None:
            known = ", ".join(t.name for t in store.list()) or "none"
            raise NotFound(f"Template {name!r} not found in {str(p['templates'])!r} (templates: {known}); "
                           f"build it first (jaula template build {name} SOURCE), "
                           f"or use one of: {', '.join(sorted(AUTO_TEMPLATES))} (built on first use)")
        with self._build_lock:
            if not store.exists(name):
                log.info("building template %s from %s", name, source)
                store.build(name, source)

    # -- Backend --------------------------------------------------------------------------------
    def create(self, inst: Instance) -> None:
        self.ensure_template(inst.template)
        self.call("create", inst)

    def start(self, inst: Instance) -> InstanceState:
        from jaula.oci.state import proc_start_time

        mark(inst.name, "be.call")
        st = dict(self.call("start", inst))
        mark(inst.name, "be.reply")
        pidfd = st.pop("pidfd", None)
        pid = int(st.get("pid") or 0)
        try:
            if pid > 0:  # status running with its pid: one write (the caller then writes none)
                self.db.record_start(inst.name, pid, proc_start_time(pid))
            mark(inst.name, "be.db_pid")
            if pidfd is not None and self.supervisor is not None:
                self._in_loop_soon(self.supervisor.watch, inst.name, pidfd, pid)
                pidfd = None
            mark(inst.name, "be.watched")
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return InstanceState(**{k: v for k, v in st.items() if k in InstanceState._fields})

    def stop(self, inst: Instance, timeout: float = 30.0, force: bool = False) -> bool:
        if self.supervisor is not None:
            self._in_loop(self.supervisor.unwatch, inst.name)
        return bool(self.call("stop", inst, timeout=timeout, force=force))

    def freeze(self, inst: Instance) -> None:
        self.call("freeze", inst)

    def unfreeze(self, inst: Instance) -> None:
        self.call("unfreeze", inst)

    def delete(self, inst: Instance) -> None:
        self.call("delete", inst)

    def state(self, inst: Instance) -> InstanceState:
        st = self.call("state", inst)
        return InstanceState(**{k: v for k, v in st.items() if k in InstanceState._fields})

    def stats(self, inst: Instance) -> Any:
        found = self.call("stats", inst)
        return None if found is None else _Stats(found)

    def update(self, inst: Instance, config: dict[str, Any]) -> dict[str, Any]:
        return self.call("update", inst, config=config)

    # -- inside (exec_api, console_api, files_api) ---------------------------------------------
    def exec_start(self, inst: Instance, args: list[str], **kw: Any) -> Any:
        """Start a command inside (blocking: from an executor); its fds (exec_process.ExecProcess)."""
        from jaula.daemon import exec_process

        return exec_process.start(self.call, inst, args, **kw)

    def mount_root(self, inst: Instance) -> str:
        """Mount a stopped instance's root for a file transfer; where (ContainerDriver.mount_root)."""
        return str(self.call("mount_root", inst))

    def unmount_root(self, inst: Instance) -> None:
        self.call("unmount_root", inst)

    def console_log(self, name: str) -> Path:
        """The file the instance's init writes its stdout and stderr to (the driver's layout)."""
        return paths(self.root)["instances"] / "logs" / name / "console.log"

    # -- snapshots, copies and backups ----------------------------------------------------------
    # Snapshot, restore, delete_snapshot and export only copy files (cp, tar: fork+exec, which is
    # safe with threads) and freeze a cgroup: they run here, in the operation's thread, so a long
    # one does not hold up other instances' starts in the spawner. Copy and import too, but for
    # their one step that mounts the new root (an idmapped mount forks a user namespace helper)
    # to write its host name: that alone goes to the spawner (`personalize`, milliseconds).
    def _local(self) -> Any:
        driver = getattr(self, "_local_driver", None)
        if driver is None:
            driver = self._local_driver = make_driver(str(self.root))
        return driver

    def snapshot(self, inst: Instance, snap: str) -> dict[str, Any]:
        return dict(self._local().snapshot(inst, snap))

    def restore(self, inst: Instance, snap: str) -> None:
        self._local().restore(inst, snap)

    def delete_snapshot(self, inst: Instance, snap: str) -> None:
        self._local().delete_snapshot(inst, snap)

    def copy(self, inst: Instance, source: str, snapshot: str | None = None,
             snapshots: list[str] | None = None) -> None:
        self._local().copy(inst, source, snapshot, snapshots, personalize=self._personalize)

    def _personalize(self, inst: Instance, volume: str) -> None:
        self.call("personalize", inst, volume=volume)

    def export(self, inst: Instance, path: str, record: dict[str, Any], snapshots: list[str] | None = None) -> None:
        self._local().export(inst, path, record, snapshots)

    def import_(self, inst: Instance, path: str, snapshots: list[str] | None = None) -> None:
        self.ensure_template(inst.template)
        self._local().import_(inst, path, snapshots, personalize=self._personalize)

    def read_backup(self, path: str) -> dict[str, Any]:
        """Read here, not in the spawner: it only opens the file's first member."""
        from jaula.storage import backup
        from jaula.storage.pool import open_pool

        return backup.read_meta(path, type(open_pool(POOL_KIND, str(paths(self.root)["pool"]))).export_layout)

    def backups_dir(self) -> str:
        """$ROOT/backups (root only): exports waiting to be downloaded, uploads waiting to be imported."""
        folder = self.root / "backups"
        if not getattr(self, "_backups_swept", False):  # what a previous jaulad left goes
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            self._backups_swept = True
        folder.mkdir(mode=0o700, exist_ok=True)
        return str(folder)
