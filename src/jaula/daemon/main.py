"""`jaulad`: the daemon. One per host; the REST API on a UNIX socket over the state database,
instances driven through the spawner and watched by the supervisor.

    jaulad [--root /var/lib/jaula] [--socket /run/jaula/jaula.sock]

Start order (why: the spawner must be forked while this process has one thread, and uvicorn's
event loop and executors make threads):
  1. $ROOT/.jaulad.lock (waiting for a killed jaulad's spawner to finish), the database
     ($ROOT/jaula.db);
  2. the spawner (`Spawner.start`), before any thread;
  3. operations a previous life left pending or running are marked failed; the orphan sweep
     (`_sweep`) undoes what a `kill -9` cut; jaulad's lxcfs is adopted or started (honest /proc:
     jaula.daemon.lxcfs; left running at stop while instances run); the console keeper is
     reconnected to or started (jaula.daemon.console_keeper: system instances' console ptys);
  4. in the event loop, at the API's startup: live restore (every instance recorded running with
     a pid is adopted by the supervisor if that very process is still there, else marked
     stopped with an unknown exit status), then autostart (`boot.autostart`); before them, the
     managed DNS of the networks (`_start_dns`: jaula.daemon.dns_service);
  5. the API served on the socket until SIGTERM or SIGINT. Instances keep running when jaulad
     stops (or is killed): the next jaulad adopts them.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from jaula.errors import JaulaError

log = logging.getLogger("jaula.daemon")

DEFAULT_ROOT = "/var/lib/jaula"
DEFAULT_SOCKET = "/run/jaula/jaula.sock"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jaulad", description="jaula's daemon: the REST API on a UNIX socket")
    p.add_argument("--root", default=os.environ.get("JAULA_ROOT") or DEFAULT_ROOT,
                   help="state folder: database, templates, pool, instances [env JAULA_ROOT; default %(default)s]")
    p.add_argument("--socket", default=os.environ.get("JAULA_SOCKET") or DEFAULT_SOCKET,
                   help="the API's UNIX socket [env JAULA_SOCKET; default %(default)s]")
    p.add_argument("--listen", metavar="ADDRESS:PORT", default=os.environ.get("JAULA_LISTEN") or None,
                   help="also serve the API over TCP (e.g. 127.0.0.1:8443), every request needing the token "
                        "of $ROOT/api.token [env JAULA_LISTEN]")
    p.add_argument("--listen-any-address", action="store_true",
                   help="allow --listen on a non-loopback address (plain HTTP: the token crosses the network)")
    p.add_argument("--show-token", action="store_true",
                   help="print the TCP API's token ($ROOT/api.token, made when missing) and exit")
    p.add_argument("--web", metavar="[ADDRESS:]PORT", default=os.environ.get("JAULA_WEB") or None,
                   help="serve the web control center at http://ADDRESS:PORT/ui/ (e.g. 8444, on 127.0.0.1 when "
                        "no address is given): login by "
                        "the token or the password of --set-password [env JAULA_WEB]")
    p.add_argument("--web-any-address", action="store_true",
                   help="allow --web on a non-loopback address (plain HTTP: passwords cross the network)")
    p.add_argument("--set-password", action="store_true",
                   help="set the control center's password (read from stdin, or asked), stored hashed in "
                        "$ROOT/web.password; every control center session ends; then exit")
    p.add_argument("--debug", action="store_true", help="log more")
    return p.parse_args(argv)


def _prepare_root(root: Path) -> None:
    """The root and the folders above an instance's tree must be traversable by others (an
    instance's root is an unprivileged host uid); their contents stay protected by their own modes."""
    root.mkdir(parents=True, exist_ok=True)
    mode = root.stat().st_mode & 0o777
    if mode & 0o011 != 0o011:
        root.chmod(mode | 0o011)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.debug else logging.INFO,
                        format="jaulad: %(levelname)s %(name)s: %(message)s")
    root = Path(ns.root).absolute()
    os.environ["JAULA_ROOT"] = str(root)
    try:
        if ns.show_token:
            from jaula.daemon.auth import load_or_create_token
            _prepare_root(root)
            print(load_or_create_token(root))
            return 0
        if ns.set_password:
            from jaula.web.cli import set_password
            _prepare_root(root)
            return set_password(root)
        listen = web = None
        if ns.web:
            from jaula.web.cli import web_address
            web = web_address(ns.web, ns.web_any_address, ns.listen)
        if ns.listen:
            from jaula.daemon.auth import is_loopback, parse_listen
            listen = parse_listen(ns.listen, ns.listen_any_address)
            if not is_loopback(listen[0]):
                log.warning("the API listens on %s, not a loopback address: other hosts can reach it over "
                            "plain HTTP, the token included", ns.listen)
        return _run(root, ns.socket, listen, web)
    except JaulaError as exc:
        print(f"jaulad: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1)) or 1


def _run(root: Path, socket_path: str, listen: tuple[str, int] | None = None,
         web: tuple[str, int] | None = None) -> int:
    from jaula.daemon import notify
    from jaula.daemon.db import Database
    from jaula.daemon.spawner import Spawner
    from jaula.daemon.spawner_backend import SpawnerBackend, make_driver, paths

    notify_socket = notify.take_socket()  # not inherited by the spawner
    _prepare_root(root)
    for p in paths(root).values():
        p.mkdir(parents=True, exist_ok=True)
    paths(root)["instances"].chmod(0o711)
    # The root lock: held by jaulad and by its spawner (inherited; given again to a spawner
    # restarted after a crash), so after a kill -9 of jaulad the next one waits for the spawner.
    lock_fd = _lock_root(root)
    db = Database(root / "jaula.db")
    spawner = Spawner.start(make_driver, {"root": str(root)}, hold_fds=[lock_fd])  # before any thread
    lxcfs = keeper = None
    try:
        failed = db.fail_unfinished_operations("jaulad stopped while it ran: look at the instance's state")
        if failed:
            log.info("%d unfinished operation(s) of a previous jaulad marked failed", len(failed))
        backend = SpawnerBackend(spawner, db, root)
        from jaula.daemon import identity
        from jaula.network.plumbing import Plumbing
        backend.network_tag = identity.root_tag(str(root))  # names (nft table, bridges, veths) unique per root
        backend.network = Plumbing(identity.table_name(backend.network_tag))  # type: ignore[attr-defined]
        _sweep(db, backend, root)
        lxcfs = _start_lxcfs(root)  # before any instance starts (autostart): honest /proc
        keeper = _start_console_keeper(root)  # before any instance starts: their consoles' ptys
        backend.console_keeper = keeper  # type: ignore[attr-defined] (console_api attaches through it)

        from jaula.daemon import api, server
        from jaula.daemon.events import LogHandler

        app = api.create_app(db, backend)
        app.state.networks.ensure_all()  # the stored networks' bridges, firewall rules and forwards
        logging.getLogger("jaula").addHandler(LogHandler(app.state.events))  # logging events
        state: dict[str, Any] = {}
        tcp = token = None
        if listen is not None:
            from jaula.daemon.auth import load_or_create_token
            token = load_or_create_token(root)
            tcp = server.bind_tcp(*listen)
            log.info("the API also listens on %s:%d (token in %s)", listen[0], tcp.getsockname()[1],
                     root / "api.token")

        web_served = None
        if web is not None:  # the control center (jaula.web)
            from jaula.web.cli import bind_web
            web_served = bind_web(root, web, db)

        async def startup() -> None:
            state["dns"] = await _start_dns(root, app)  # before autostart: running instances ask now
            state["supervisor"] = _start_supervision(db, backend, app)
            _freeze_heap()
            notify.notify(notify_socket, "READY=1")

        async def shutdown() -> None:
            notify.notify(notify_socket, "STOPPING=1")
            sup = state.get("supervisor")
            if sup is not None:
                sup.close()  # the instances keep running
            if state.get("dns") is not None:
                state["dns"].close()

        app.router.add_event_handler("startup", startup)
        app.router.add_event_handler("shutdown", shutdown)
        log.info("serving on %s (root %s, spawner pid %d)", socket_path, root, spawner.pid)
        # uvicorn raises the signal that stopped it again once done, under the handlers it
        # found: ours just note it, so the spawner and the database are closed here and the
        # exit status says jaulad stopped cleanly.
        got: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda n, _f: got.append(n))
        server.serve(app, socket_path, tcp, token, web_served)
        log.info("stopped (%s); instances keep running",
                 ", ".join(signal.Signals(n).name for n in got) or "asked to")
        return 0
    finally:
        if lxcfs is not None:
            _stop_lxcfs(lxcfs, db)
        if keeper is not None:
            keeper.close()  # it stays while it holds running instances' consoles
        spawner.close()
        db.close()
        os.close(lock_fd)


async def _start_dns(root: Path, app: Any) -> Any:
    """The managed DNS of the networks (dns.mode=managed: jaula.daemon.dns_service), in the event
    loop, its listeners following the networks from now on; None without a host side."""
    networks = getattr(app.state, "networks", None)
    if networks is None or not networks.enabled:
        return None
    from jaula.daemon.dns_service import DnsService

    svc = DnsService(root / "jaula.db", asyncio.get_running_loop())
    networks.dns = svc
    await svc.reconcile()
    return svc


def _start_console_keeper(root: Path) -> Any:
    """The console keeper (jaula.daemon.console_keeper): the one a killed jaulad left, or a new
    one; it holds system instances' console ptys and outlives jaulad while it holds any."""
    from jaula.daemon.console_keeper_service import KeeperService

    keeper = KeeperService(root)
    keeper.start()
    return keeper


def _start_lxcfs(root: Path) -> Any:
    """jaulad's own lxcfs (jaula.daemon.lxcfs, docs/honest-proc.md): the one a previous jaulad
    left adopted, or a new one; None with JAULA_LXCFS=off (instances then get the kernel's files)."""
    if os.environ.get("JAULA_LXCFS", "").strip().lower() in ("0", "off", "false", "no"):
        log.info("JAULA_LXCFS=off: no lxcfs; instances get the kernel's /proc files")
        return None
    from jaula.daemon.lxcfs import Lxcfs
    from jaula.daemon.spawner_backend import paths

    svc = Lxcfs(str(paths(root)["instances"]))
    try:
        svc.start()
    except Exception as exc:  # noqa: BLE001 (honest /proc is not worth refusing to serve)
        log.warning("lxcfs: %s; instances start without it", exc)
    return svc


def _stop_lxcfs(svc: Any, db: Any) -> None:
    """lxcfs stops with jaulad only when no instance runs: running ones keep reading its files,
    and the next jaulad adopts it."""
    running = [r.name for r in db.list_instances() if r.status in ("running", "frozen")]
    if running and svc.pid is not None:
        log.info("lxcfs %d left running for %d running instance(s): the next jaulad adopts it", svc.pid, len(running))
    svc.close(stop=not running)


LOCK_WAIT_S = 60.0


def _lock_root(root: Path) -> int:
    """Take $ROOT/.jaulad.lock (flock). The spawner holds it too (and a restarted one: `hold_fds`),
    so after a `kill -9` of jaulad its old spawner (which finishes the request it was serving,
    then exits) holds it: wait for it, so the orphan sweep does not race a create or start still
    in flight. Another live jaulad on the same root holds it too: refused after LOCK_WAIT_S."""
    from jaula.errors import BadState

    fd = os.open(root / ".jaulad.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_S
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise BadState(f"{root / '.jaulad.lock'} is held: another jaulad (or the spawner of a "
                               f"killed one) uses root {str(root)!r}") from None
            if not said:
                log.info("waiting for the previous jaulad's spawner to finish (%s)", root / ".jaulad.lock")
                said = True
            time.sleep(0.05)


def _sweep(db: Any, backend: Any, root: Path) -> None:
    """The orphan sweep, before live restore: undo what a `kill -9` of a previous jaulad cut.

    - a row whose volume does not exist (its create never finished, or its delete did) goes;
    - an instance not recorded running (or frozen) with a live pid (same pid and start time), that
      still has a runtime state or a bundle (a start cut before its row said running, or an init
      gone while no jaulad watched), is stopped by force (cgroup, runtime state, mount go; its
      cgroup is under this root's own parent, `identity.cgroup_parent`, never another jaulad's): it is
      then stopped and startable;
    - a volume, runtime state, bundle or console log without a row goes (a create cut after the
      revert of its row, or a delete cut before it ended), as do the pool's half-built (`.new-`)
      and half-deleted (`.del-`) volume folders;
    - then any mount left under a bundle that is not a live instance's is detached."""
    from jaula.cgroups.base import open_cgroup
    from jaula.daemon.identity import cgroup_parent
    from jaula.daemon.spawner_backend import paths
    from jaula.instances.model import Instance
    from jaula.linux.mount import MNT_DETACH, umount2
    from jaula.oci.state import STATE_FILE, proc_start_time
    from jaula.storage.fsutil import mount_points

    def mount_points_under(top: str) -> list[str]:
        return sorted(m for m in mount_points() if m == top or m.startswith(top + "/"))

    p = paths(root)
    parent = cgroup_parent(root)
    volumes_dir = p["pool"] / "volumes"
    runtime, bundles, logs = (p["instances"] / d for d in ("runtime", "bundles", "logs"))

    def listed(d: Path) -> set[str]:
        try:
            return {n for n in os.listdir(d) if not n.startswith(".")}
        except FileNotFoundError:
            return set()

    volumes = {n for n in listed(volumes_dir) if (volumes_dir / n / "volume.json").exists()}
    rows = {r.name: r for r in db.list_instances()}

    def alive(r: Any) -> bool:  # that very process (pid and start time), as live restore checks
        return bool(r.pid) and r.pid_start is not None and proc_start_time(r.pid) == r.pid_start

    live = {n for n, r in rows.items() if r.status in ("running", "frozen") and alive(r)}

    def call(op: str, name: str, **args: Any) -> None:
        template = rows[name].template if name in rows else "busybox"
        try:
            backend.call(op, Instance(name=name, template=template), **args)
        except JaulaError as exc:
            log.warning("sweep: %s of %s: %s", op, name, exc)

    for name, row in rows.items():
        if name not in live and name not in volumes:
            log.info("sweep: instance %s has no volume (its create or delete was cut): row removed", name)
            if (runtime / name).exists() or (bundles / name).exists():
                call("stop", name, timeout=0, force=True)
            db.delete_instance(name)
            db.add_event("instance-deleted", {"name": name, "reason": "create or delete cut by a jaulad crash"})
    rows = {r.name: r for r in db.list_instances()}

    for name in sorted((set(rows) | listed(runtime) | listed(bundles)) - live):
        row = rows.get(name)
        if (runtime / name).exists() or (bundles / name).exists():
            if not (runtime / name).exists() and row is not None and row.status == "stopped":
                # a created instance's root, left mounted for its first start (which mounts it again)
                log.info("sweep: root of %s (created, not running) unmounted", name)
            else:
                log.info("sweep: %s was left started (or half started) by a previous jaulad: stopped", name)
            call("stop", name, timeout=0, force=True)
        if row is not None and (row.pid or row.status != "stopped"):
            db.update_instance(name, status="stopped", pid=None, pid_start=None)
            if row.status != "stopped":  # recorded running, its init gone: as live restore says it
                db.add_event("instance-exited", {"name": name, "status": "unknown"})
                log.info("instance %s exited (status unknown)", name)

    for name in sorted(listed(runtime) - live):
        if not (runtime / name / STATE_FILE).exists():
            # a create cut before the runtime saved its state: its cgroup may be made, but no
            # process was forked yet (the fork comes after the save)
            log.info("sweep: runtime state of %s half made: removed, with its cgroup", name)
            try:  # under this root's cgroup parent only: another jaulad's instance may have this name
                cg = open_cgroup(f"{parent}/{name}", name)
                if cg.exists():
                    cg.remove()
                for d in {os.path.dirname(t.dir) for t in cg.targets}:
                    try:
                        os.rmdir(d)  # the parent goes with its last instance, as the driver does it
                    except OSError:
                        pass
            except Exception as exc:  # noqa: BLE001 (logged; the next start tries again)
                log.warning("sweep: cgroup of %s: %s", name, exc)
            shutil.rmtree(runtime / name, ignore_errors=True)

    for name in sorted((volumes | listed(logs)) - set(rows)):
        log.info("sweep: volume or log of %s without an instance row: removed", name)
        if name in volumes:
            call("delete", name)
        shutil.rmtree(logs / name, ignore_errors=True)

    for n in os.listdir(volumes_dir) if volumes_dir.is_dir() else []:
        if n.startswith((".new-", ".del-")) and not mount_points_under(str(volumes_dir / n)):
            log.info("sweep: half-made volume folder %s removed", n)
            shutil.rmtree(volumes_dir / n, ignore_errors=True)

    keep = tuple(str(bundles / n) + "/" for n in live)
    for point in reversed(mount_points_under(str(bundles))):
        if not (point + "/").startswith(keep):
            log.info("sweep: stray mount %s detached", point)
            try:
                umount2(point, MNT_DETACH)
            except Exception as exc:  # noqa: BLE001 (logged; the next start tries again)
                log.warning("sweep: umount of %s: %s", point, exc)

    if getattr(backend, "network", None) is not None:  # veths and ifbs of NICs of instances not running
        from jaula.network.ipam import veth_name
        nics = {(n, k.split(".")[1]) for n in set(rows) - live for k in [*rows[n].config, "nic.eth0."] if k.startswith("nic.")}
        try:
            for link in backend.network.remove_strays(sorted(veth_name(backend.network_tag, n, i) for n, i in nics)):
                log.info("sweep: stray interface %s removed", link)
        except JaulaError as exc:
            log.warning("sweep: stray interfaces: %s", exc)


def _freeze_heap() -> None:
    """What jaulad made to start (modules, the app, its routes and schemas: ~10^5 objects) kept
    out of the garbage collector's passes: they live as long as jaulad, and each full pass over
    them took 45-55 ms, in the middle of whatever request was then running (gc.freeze)."""
    import gc

    gc.collect()
    gc.freeze()


def _start_supervision(db: Any, backend: Any, app: Any) -> Any:
    """In the event loop: the supervisor, live restore, then autostart."""
    from jaula.daemon import api, schemas
    from jaula.daemon.supervisor import Supervisor
    from jaula.oci.state import proc_start_time

    loop = asyncio.get_running_loop()
    ops, bus = app.state.operations, app.state.events

    def record_exit(name: str, status: Any) -> None:
        try:
            row = db.get_instance(name)
        except JaulaError:
            return  # deleted meanwhile
        if row.status == "stopped":
            return  # a stop or delete got there first
        if row.pid and row.pid_start is not None and proc_start_time(row.pid) == row.pid_start:
            return  # a later start's init runs: the exit was of an earlier one
        db.update_instance(name, status="stopped", pid=None, pid_start=None)
        bus.lifecycle("instance-exited", {"name": name, "status": status})
        log.info("instance %s exited (status %s)", name, status)
        if getattr(backend, "root", None) is not None:  # the driver's NICs: firewall elements, ifb go now
            from jaula.daemon.spawner_backend import paths
            from jaula.instances import nics
            nics.unplug_exited(str(paths(backend.root)["instances"]), name)

    async def on_exit(name: str, status: Any) -> None:
        # Under the instance's operation lock, in a worker: an init that exits at once is reported
        # while its start operation has yet to record it running; unlocked, the exit was recorded
        # first and then overwritten by "running" (the instance stayed running with no process).
        def locked() -> None:
            with ops.instance_lock(name):
                record_exit(name, status)
        await loop.run_in_executor(None, locked)

    sup = Supervisor(on_exit, exit_status=lambda pid: backend.call("exit_status", pid=pid), loop=loop)
    backend.attach(sup, loop)

    adopted = 0
    for row in db.list_instances():
        if row.status in ("running", "frozen"):
            if row.pid:
                if sup.adopt(row.name, row.pid, row.pid_start):
                    adopted += 1
            else:
                record_exit(row.name, "unknown")
    if adopted:
        log.info("adopted %d running instance(s)", adopted)

    svc = api._Service(db, backend, app.state.operations, bus)
    svc.host = getattr(app.state, "host", None)  # autostart within the overcommit ratios too
    svc.networks = getattr(app.state, "networks", None)  # its NICs' plans
    for row in db.list_instances(autostart=True):
        if row.status == "stopped":
            try:
                svc.change_state(row.name, schemas.StateChange(action="start"))
            except JaulaError as exc:
                log.warning("autostart of %s: %s", row.name, exc)
    return sup


if __name__ == "__main__":
    sys.exit(main())
