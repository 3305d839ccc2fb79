"""jaulad's REST API (FastAPI), served on a UNIX socket: instances, their state, profiles and
operations, in Incus's envelope (schemas.py).

Everything a request names (instance and profile names, settings, profiles) is checked before
any change, with every problem listed; long actions (create, start, stop, delete) return an
operation at once and run in a worker (operations.py). Instances are driven through a
`Backend` (backend.py): the spawner in jaulad, a fake in tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from jaula import __version__ as _version
from jaula.daemon import schemas as s
from jaula.daemon.backend import Backend
from jaula.daemon.db import Database
from jaula.daemon.events import EventBus
from jaula.daemon.models import FINISHED, InstanceRow, OperationRow
from jaula.daemon.operations import Operations, may_cancel
from jaula.errors import (
    BadState,
    ConfigError,
    Exists,
    ExitCode,
    JaulaError,
    Locked,
    NotFound,
)
from jaula.instances import settings
from jaula.instances.model import Instance, validate_name
from jaula.instances.start_timing import mark

log = logging.getLogger("jaula.api")

_HTTP = ((ConfigError, 400), (NotFound, 404), (Exists, 409), (BadState, 409), (Locked, 503))
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.Error, "description": why} for code, why in (
        (400, "refused by validation: `problems` lists each problem"),
        (404, "no such instance, profile or operation"),
        (409, "the name is taken, or the action does not fit the instance's (or operation's) state"),
        (422, "the request body does not fit the schema"),
    )}


def create_app(db: Database, backend: Backend, *, workers: int = 8) -> FastAPI:
    """The API over `db` (the source of truth) and `backend` (what runs instances)."""
    app = FastAPI(title="jaulad", version=_version, description=__doc__,
                  responses=_ERRORS)  # type: ignore[arg-type]
    bus = app.state.events = EventBus(db)
    ops = Operations(db, workers=workers,  # each status as an event, built only when one is listened to
                     on_change=lambda op: bus.wants("operation") and bus.publish(
                         "operation", _op_out(op).model_dump(by_alias=True)))
    app.state.db, app.state.backend, app.state.operations = db, backend, ops
    app.router.add_event_handler("shutdown", lambda: ops.shutdown(wait=True))
    app.router.add_event_handler("shutdown", bus.close)
    _error_handlers(app)
    svc = _Service(db, backend, ops, bus)
    from jaula.daemon import events_api  # the live event stream and the stored history
    events_api.mount(app, bus, db)
    from jaula.daemon import templates_api  # templates and host capacity routes
    svc.host = templates_api.mount(app, db, backend, ops, svc.expanded)
    from jaula.daemon import inside_api  # exec, console, logs and files inside instances
    inside_api.mount(app, db, backend, svc.instance)
    from jaula.daemon import networks_api  # networks, instances' NICs, port forwards
    svc.networks = networks_api.mount(app, svc)
    from jaula.daemon import snapshots_api, transfer_api  # snapshots; copy, export and import
    snapshots_api.mount(app, svc)
    transfer_api.mount(app, svc)
    from jaula.daemon import profiles_api  # profiles: list, create, show, change, rename, delete
    svc.profiles = profiles_api.mount(app, svc)
    mounted = len(app.router.routes)

    @app.get("/1.0", response_model=s.Sync[s.Server], tags=["server"])
    def server() -> dict:
        return _sync(s.Server(server_version=_version, settings=[
            s.SettingInfo(key=k, type=v.type, default=None if v.default is None else settings.show(k, v.default),
                          live=v.live, description=v.description) for k, v in settings.SETTINGS.items()]))

    @app.get("/1.0/instances", response_model=s.Sync[list[s.Instance]], tags=["instances"])
    def list_instances() -> dict:
        return _sync([svc.instance_out(r) for r in db.list_instances()])

    @app.post("/1.0/instances", response_model=s.Async, status_code=202, tags=["instances"])
    def create_instance(body: s.InstanceCreate) -> dict:
        return _async(svc.create(body))

    @app.get("/1.0/instances/{name}", response_model=s.Sync[s.Instance], tags=["instances"])
    def get_instance(name: str) -> dict:
        return _sync(svc.instance_out(db.get_instance(name)))

    @app.patch("/1.0/instances/{name}", response_model=s.Sync[s.Instance], tags=["instances"])
    def patch_instance(name: str, body: s.InstancePatch) -> dict:
        return _sync(svc.instance_out(svc.patch(name, body)))

    @app.delete("/1.0/instances/{name}", response_model=s.Async, status_code=202, tags=["instances"])
    def delete_instance(name: str, force: bool = Query(False, description="stop it first when running")) -> dict:
        return _async(svc.delete(name, force))

    @app.get("/1.0/instances/{name}/state", response_model=s.Sync[s.InstanceState], tags=["instances"])
    def get_state(name: str) -> dict:
        st = backend.state(svc.instance(db.get_instance(name)))
        return _sync(s.InstanceState(status=st.status, pid=st.pid, init=st.init, stop_signal=st.stop_signal))

    @app.get("/1.0/instances/{name}/stats", response_model=s.Sync[s.Stats], tags=["instances"])
    def get_stats(name: str) -> dict:
        row = db.get_instance(name)
        found = backend.stats(svc.instance(row)) if row.status != "stopped" else None
        return _sync(s.Stats(name=name, cpu_usage_ns=None, rows=[]) if found is None else found.as_dict())

    @app.put("/1.0/instances/{name}/state", response_model=s.Async, status_code=202, tags=["instances"])
    async def change_state(name: str, body: s.StateChange, wait: float | None = Query(
            None, description="seconds to wait for the operation's end before answering (-1: until it "
            "ends): the answer's operation is then as it ended (or as it is after that time), so "
            "the caller needs no second request to `/1.0/operations/{id}/wait`")) -> dict:
        if wait is not None and wait < 0 and ops.worker_free():  # the whole change in one worker
            return _async(await ops.in_worker(svc.change_state_ended, name, body))
        op = await run_in_threadpool(svc.change_state, name, body)
        if wait is not None and op.status not in FINISHED:
            op = await ops.await_end(op.id, wait)
        return _async(op)

    @app.get("/1.0/operations", response_model=s.Sync[list[s.Operation]], tags=["operations"])
    def list_operations(status: str | None = None) -> dict:
        return _sync([_op_out(o) for o in db.list_operations(status)])

    @app.get("/1.0/operations/{op_id}", response_model=s.Sync[s.Operation], tags=["operations"])
    def get_operation(op_id: str) -> dict:
        return _sync(_op_out(db.get_operation(op_id)))

    @app.get("/1.0/operations/{op_id}/wait", response_model=s.Sync[s.Operation], tags=["operations"])
    async def wait_operation(op_id: str, timeout: float = Query(
            -1, description="seconds to wait at most; -1: until it ends")) -> dict:
        # in the event loop: the worker ending the operation hands it over (no thread to wake)
        return _sync(_op_out(await ops.await_end(op_id, None if timeout < 0 else timeout)))

    @app.delete("/1.0/operations/{op_id}", response_model=s.Sync[s.Operation], tags=["operations"])
    def cancel_operation(op_id: str) -> dict:
        return _sync(_op_out(ops.cancel(op_id)))

    # Starlette tries the routes in order, ~2 us each: the instances' and operations' own (a
    # start's PUT, the operations' waits) before the ~50 of the other modules and the docs
    routes = app.router.routes
    routes[:] = routes[mounted:] + routes[:mounted]
    return app


class _Service:
    """The actions behind the routes: checks first, then the database and the backend."""

    def __init__(self, db: Database, backend: Backend, ops: Operations, events: EventBus | None = None) -> None:
        self.db, self.backend, self.ops = db, backend, ops
        self.events = events or EventBus(db)  # lifecycle events: stored, and pushed to listeners
        self.host: Any = None  # host.Host: a start must fit its overcommit ratios
        self.networks: Any = None  # networks.NetworkService: NICs' addresses and plans

    # -- views ---------------------------------------------------------------------------------
    def expanded(self, profiles: list[str], own: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for p in profiles:
            merged.update(self.db.get_profile(p).config)
        merged.update(own)
        return _validated(merged, "The config with its profiles'")

    def instance(self, row: InstanceRow) -> Instance:
        """The driver's model of a stored instance, with its effective config."""
        inst = Instance(name=row.name, template=row.template, kind=row.kind, mode=row.mode,
                        config=self.expanded(row.profiles, row.config), profiles=list(row.profiles),
                        description=row.description, created=row.created,
                        idmap_base=row.idmap_base if row.idmap_size else None, command=list(row.command))
        if self.networks is not None:  # the NICs' complete plans, for the driver
            inst.network = self.networks.instance_network(row.name, inst.config)
        return inst

    def instance_out(self, row: InstanceRow) -> s.Instance:
        try:
            expanded = _canonical(self.expanded(row.profiles, row.config))
        except ConfigError:  # stored before a rule changed: still listed, as stored
            expanded = {k: v for p in row.profiles for k, v in self.db.get_profile(p).config.items()}
            expanded.update(row.config)
        return s.Instance(name=row.name, kind=row.kind, mode=row.mode, template=row.template,
                          description=row.description, created=row.created, status=row.status,  # type: ignore[arg-type]
                          autostart=row.autostart, privileged=row.idmap_size == 0, config=dict(row.config),
                          expanded_config=expanded, profiles=list(row.profiles), pid=row.pid,
                          command=list(row.command))

    # -- instances -----------------------------------------------------------------------------
    def create(self, body: s.InstanceCreate) -> OperationRow:
        validate_name(body.name)
        problems: list[str] = []
        try:
            validate_name(body.template, "Template")
        except ConfigError as exc:
            problems += exc.problems
        try:
            own = _validated(body.config, f"Instance {body.name!r}")
        except ConfigError as exc:
            problems, own = problems + exc.problems, {}
        if len(set(body.profiles)) != len(body.profiles):
            problems.append(f"profiles {body.profiles} name a profile twice")
        if body.command and body.mode != "app":
            problems.append("command: only an app instance (mode app) runs a command of its own; "
                            "a system instance runs its template's init")
        if any("\0" in a for a in body.command):
            problems.append("command: an argument holds a NUL byte")
        for p in body.profiles:
            try:
                validate_name(p, "Profile")
                self.db.get_profile(p)
            except (ConfigError, NotFound) as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(problems)
        expanded = self.expanded(body.profiles, own)
        if body.start and self.host is not None:  # launch: a start the host cannot take makes nothing
            self.host.check_start(InstanceRow(name=body.name, template=body.template, config=_canonical(own),
                                              profiles=list(body.profiles)))
        # a default network made for it goes again when the create fails (networks.first_use)
        with self.networks.first_use() if self.networks is not None else contextlib.nullcontext():
            if self.networks is not None:  # eth0 on the default network unless a NIC is named
                own = self.networks.prepare(own, expanded)
                expanded = self.expanded(body.profiles, own)
            privileged = expanded.get("security.privileged") is True
            if privileged:
                log.warning("instance %s is privileged: no user namespace, its root is root on the host", body.name)
            with self.db.transaction():  # the row and its addresses together
                row = self.db.create_instance(InstanceRow(
                    name=body.name, kind=body.kind, mode=body.mode, template=body.template,
                    description=body.description, autostart=bool(expanded.get("boot.autostart")),
                    idmap_size=0 if privileged else 65536, config=_canonical(own), profiles=list(body.profiles),
                    command=list(body.command)))
                if self.networks is not None:
                    self.networks.allocate(row.name)

        def action() -> dict:
            with contextlib.ExitStack() as held:
                try:
                    if body.start and self.host is not None:  # checked again, and held until it runs
                        held.enter_context(self.host.starting(row))
                    self.backend.create(self.instance(row))
                except BaseException:
                    self.db.delete_instance(row.name)  # revert: no half-made instance stays listed
                    if self.networks is not None:
                        self.networks.collect()
                    raise
                self.events.lifecycle("instance-created", {"name": row.name})
                if not body.start:
                    return {}
                # a start that fails now (not for capacity) leaves the instance made, stopped
                st = self.backend.start(self.instance(self.db.get_instance(row.name)))
                if not (st.pid and getattr(self.backend, "records_start", False)):
                    self.db.update_instance(row.name, status="running", pid=st.pid or None)
            self.events.lifecycle("instance-started", {"name": row.name, "pid": st.pid})
            return {"pid": st.pid}
        verb = "Launching" if body.start else "Creating"
        return self.ops.submit(f"{verb} instance {row.name}", action, instance=row.name,
                               on_cancel=lambda: self.db.delete_instance(row.name))

    def patch(self, name: str, body: s.InstancePatch) -> InstanceRow:
        row = self.db.get_instance(name)
        own: dict[str, Any] = dict(row.config)
        for key, value in (body.config or {}).items():
            if value is None or value == "":
                own.pop(key, None)
            else:
                own[key] = value
        profiles = row.profiles if body.profiles is None else body.profiles
        problems: list[str] = []
        for p in profiles:
            try:
                self.db.get_profile(p)
            except NotFound as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(problems)
        own_norm = _validated(own, f"Instance {name!r}")
        expanded = self.expanded(profiles, own_norm)
        # a default network made for the change goes again when it fails (networks.first_use)
        with self.networks.first_use() if self.networks is not None else contextlib.nullcontext():
            if self.networks is not None:
                self.networks.check_networks(expanded)
            if row.status in ("running", "frozen"):
                inst = self.instance(row)
                for key in settings.changed_keys(inst.config, expanded):
                    if not settings.is_live(key):
                        raise BadState(f"{key} cannot change while {name!r} runs: stop it, then set it")
                if self.host is not None:  # raised limits must stay within the overcommit ratios, as a start
                    after = row.replace(config=_canonical(own_norm), profiles=list(profiles))
                    (mem0, cpu0), (mem1, cpu1) = self.host.limits_of(row), self.host.limits_of(after)
                    if (mem1 or 0) > (mem0 or 0) or (cpu1 or 0) > (cpu0 or 0):
                        self.host.check_start(after, doing="this change to")
                self.backend.update(inst, expanded)
            with self.db.transaction() as db:
                db.replace_config(name, _canonical(own_norm))
                if body.profiles is not None:
                    db.set_instance_profiles(name, body.profiles)
                changes: dict[str, Any] = {"autostart": bool(expanded.get("boot.autostart"))}
                if body.description is not None:
                    changes["description"] = body.description
                db.update_instance(name, **changes)
                if self.networks is not None:  # addresses follow the NICs, in the same transaction
                    self.networks.allocate(name)
        self.events.lifecycle("instance-updated", {"name": name})
        return self.db.get_instance(name)

    def delete(self, name: str, force: bool) -> OperationRow:
        row = self.db.get_instance(name)
        if row.status != "stopped" and not force:
            raise BadState(f"Instance {name!r} is {row.status}: stop it first, or delete with force")

        def action() -> dict:
            row = self.db.get_instance(name)
            inst = self.instance(row)
            if row.status != "stopped":
                if not force:
                    raise BadState(f"Instance {name!r} is {row.status}: stop it first, or delete with force")
                self.backend.stop(inst, timeout=0, force=True)
                self.db.update_instance(name, status="stopped", pid=None, pid_start=None)
            self.backend.delete(inst)
            if self.networks is not None:
                self.networks.release(name)  # its forwards; its addresses go with its row
            self.db.delete_instance(name)
            if self.networks is not None:
                self.networks.collect()  # the default network made on first use goes with its last user
            self.events.lifecycle("instance-deleted", {"name": name})
            return {}
        return self.ops.submit(f"Deleting instance {name}", action, instance=name)

    def change_state(self, name: str, body: s.StateChange) -> OperationRow:
        """Check the change and queue its operation; the new operation (pending)."""
        verb, action = self._state_change(name, body)
        op = self.ops.submit(f"{verb} instance {name}", action, instance=name)
        mark(name, "api.submitted")
        return op

    def change_state_ended(self, name: str, body: s.StateChange) -> OperationRow:
        """`change_state` and the wait for its end, in the calling thread (an operations' worker:
        `PUT .../state?wait=-1`); the operation as it ended."""
        verb, action = self._state_change(name, body)
        return self.ops.run_here(f"{verb} instance {name}", action, instance=name)

    def _state_change(self, name: str, body: s.StateChange) -> tuple[str, Callable[[], dict]]:
        """The checks before a state change's operation (a refusal raises: no operation), and the
        operation's description verb and action."""
        mark(name, "api.in")
        _check_action(row := self.db.get_instance(name), body.action)
        # a restart too: refused before its stop, so one that could not start again keeps running
        if self.host is not None and (body.action == "restart" or (
                body.action == "start" and row.status not in ("running", "frozen"))):
            self.host.check_start(row)

        def action() -> dict:
            mark(name, "op.action")
            row = self.db.get_instance(name)
            _check_action(row, body.action)
            inst = self.instance(row)
            mark(name, "op.instance")
            meta: dict[str, Any] = {}
            if body.action == "restart" and self.host is not None and row.status != "stopped":
                self.host.check_start(row)  # again, as the operation runs: before the stop
            if body.action in ("stop", "restart") and row.status != "stopped":
                meta["clean"] = self.backend.stop(inst, timeout=body.timeout, force=body.force)
                row = self.db.update_instance(name, status="stopped", pid=None, pid_start=None)
            if body.action in ("start", "restart"):
                # the capacity check and the commitment as one step (host.py): concurrent starts
                # cannot together pass the overcommit ratios
                with self.host.starting(row) if self.host is not None else contextlib.nullcontext():
                    st = self.backend.start(inst)
                    if not (st.pid and getattr(self.backend, "records_start", False)):
                        self.db.update_instance(name, status="running", pid=st.pid or None)
                mark(name, "op.db_running")
                meta["pid"] = st.pid
            elif body.action == "freeze":
                self.backend.freeze(inst)
                self.db.update_instance(name, status="frozen")
            elif body.action == "unfreeze":
                self.backend.unfreeze(inst)
                self.db.update_instance(name, status="running")
            self.events.lifecycle(_DONE[body.action], {"name": name, **meta})
            mark(name, "op.event")
            return meta
        verb = {"stop": "Stopping", "start": "Starting", "restart": "Restarting",
                "freeze": "Freezing", "unfreeze": "Unfreezing"}[body.action]
        return verb, action


_DONE = {"start": "instance-started", "stop": "instance-stopped", "restart": "instance-restarted",
         "freeze": "instance-frozen", "unfreeze": "instance-unfrozen"}
_NEEDS = {"start": ("stopped", "error"), "stop": ("running", "frozen", "error"),
          "restart": ("running", "stopped", "error"), "freeze": ("running",), "unfreeze": ("frozen",)}


def _check_action(row: InstanceRow, action: str) -> None:
    if row.status not in _NEEDS[action]:
        hint = {"start": "it is already started", "stop": "it is not running",
                "freeze": "only a running instance can be frozen",
                "unfreeze": "it is not frozen"}.get(action, "")
        raise BadState(f"Cannot {action} instance {row.name!r}: it is {row.status} ({hint})")


def _validated(config: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        return settings.validate(config)
    except ConfigError as exc:
        raise ConfigError([f"{what}: {p}" for p in exc.problems]) from None


def _canonical(config: dict[str, Any]) -> dict[str, str]:
    """Normalized settings as stored: strings a person would write ("512MiB", "true")."""
    return {k: settings.show(k, v) for k, v in config.items()}


def _sync(metadata: Any, status_code: int = 200) -> dict:
    return {"type": "sync", "status": "Success" if status_code < 300 else "Created",
            "status_code": status_code, "metadata": metadata}


def _async(op: OperationRow) -> dict:
    return {"type": "async", "status": "Operation created", "status_code": 100,
            "operation": f"/1.0/operations/{op.id}", "metadata": _op_out(op)}


def _op_out(op: OperationRow) -> s.Operation:
    return s.Operation(id=op.id, **{"class": op.op_class}, description=op.description,  # type: ignore[arg-type]
                       status=op.status, created=op.created, updated=op.updated, err=op.error,  # type: ignore[arg-type]
                       resources=op.resources, metadata=op.metadata, may_cancel=may_cancel(op))


def error_body(status: int, message: str, problems: list[str] | None = None,
               exit_code: int = ExitCode.FAILURE) -> dict:
    return {"type": "error", "error_code": status, "error": message, "problems": problems or [],
            "exit_code": exit_code}


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(JaulaError)
    def jaula_error(request: Request, exc: JaulaError) -> JSONResponse:
        status = next((code for cls, code in _HTTP if isinstance(exc, cls)), 500)
        problems = exc.problems if isinstance(exc, ConfigError) else []
        return JSONResponse(error_body(status, str(exc), problems, exc.exit_code), status_code=status)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse(error_body(422, "The request was refused: " + "; ".join(problems), problems,
                                       ExitCode.INVALID_CONFIG), status_code=422)

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = ExitCode.NOT_FOUND if exc.status_code == 404 else ExitCode.FAILURE
        message = (f"No such endpoint {request.method} {request.url.path}: see docs/openapi.json"
                   if exc.status_code in (404, 405) else str(exc.detail))
        return JSONResponse(error_body(exc.status_code, message, exit_code=code), status_code=exc.status_code)


def openapi_document() -> dict:
    """The OpenAPI document, as dumped to docs/openapi.json (no database needed)."""
    return create_app(None, None).openapi()  # type: ignore[arg-type]


def main() -> None:
    """`python -m jaula.daemon.api > docs/openapi.json`"""
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
