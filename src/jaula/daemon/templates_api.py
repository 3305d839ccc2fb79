"""The API's templates and host routes, mounted into create_app's app by `mount`.

Templates: the TemplateStore under $ROOT/templates is the truth for files (a template built by
`python -m jaula.storage.template_cli` or on first use is listed too); the database's templates
table records the ones built or imported through the API. The store comes from the backend's
`template_store()` (the daemon's SpawnerBackend; a fake in tests).

- GET /1.0/templates, GET /1.0/templates/{name}
- POST /1.0/templates {"name", "source": busybox|debootstrap|tarball|oci, "options", "replace"}:
  an operation; while it runs its metadata is {"stage", "done", "total"} from the builder's
  progress callback (written at most 5 times a second), at the end {"stage": "done", "template"}.
- POST /1.0/templates/import {"name", "path", "format": "tarball"|"image"}: the same from an
  archive **already on the daemon's host** (a server-side path; no upload yet).
- DELETE /1.0/templates/{name}: refused (409) while instances use it.

Host: GET /1.0/host (host.py's report), PUT /1.0/host {"overcommit.memory": 1.5, ...}.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from jaula.daemon import schemas as s
from jaula.daemon.host import Host
from jaula.daemon.models import TemplateRow
from jaula.daemon.operations import stop_point
from jaula.errors import BadState, ConfigError, JaulaError, NotFound

PROGRESS_INTERVAL = 0.2


class Template(BaseModel):
    name: str
    source: str
    created: str
    size: int = Field(description="bytes")
    os: str
    os_version: str
    arch: str
    command: list[str] = Field(description="what runs by default in an app instance")
    used_by: list[str] = Field(description="the instances built on it: they keep it from being deleted")


class TemplateBuild(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: str = Field(description="busybox, debootstrap, tarball or oci")
    options: dict[str, Any] = Field(default={}, description="the builder's options, e.g. {\"suite\": \"bookworm\"}")
    replace: bool = Field(default=False, description="rebuild over an existing template nothing uses")


class TemplateImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str = Field(description="an archive on the daemon's host (server-side path; uploads are not supported yet)")
    format: Literal["tarball", "image"] = Field(
        default="tarball", description="tarball: a root file tree; image: an OCI layout or docker/podman save archive")
    replace: bool = False


class HostFigures(BaseModel):
    cpu: float = Field(description="cpus")
    memory: int = Field(description="bytes")
    disk: int | None = Field(default=None, description="bytes of the file system holding jaulad's root")


class Committed(BaseModel):
    cpu: float = Field(description="sum of limits.cpu of running and frozen instances")
    memory: int = Field(description="sum of limits.memory of running and frozen instances, bytes")
    instances: int = Field(description="running and frozen instances")
    unlimited: dict[str, int] = Field(description="of those, how many have no limit of each kind (counted as 0)")


class Allowed(BaseModel):
    cpu: float
    memory: int


class HostInfo(BaseModel):
    physical: HostFigures
    used: HostFigures = Field(description="memory: MemTotal - MemAvailable; cpu: the 1-minute load average")
    committed: Committed
    overcommit: dict[str, float] = Field(description="overcommit.memory (default 1.0), overcommit.cpu (default 4.0)")
    allowed: Allowed = Field(description="physical x ratio: what running instances may commit in all")


def mount(app: FastAPI, db: Any, backend: Any, ops: Any,
          expanded: Callable[[list[str], dict[str, Any]], dict[str, Any]]) -> Host:
    """Add the templates and host routes to `app`; the Host whose check a start must pass."""
    host = Host(db, expanded)
    app.state.host = host
    building: set[str] = set()  # names being built: a second build of one is refused (same tmp folder)
    building_lock = threading.Lock()

    def store() -> Any:
        get = getattr(backend, "template_store", None)
        if get is None:
            raise JaulaError("This jaulad has no template store")
        st = get()
        st.in_use = users
        return st

    def users(name: str) -> list[str]:
        return sorted(r.name for r in db.list_instances() if r.template == name)

    def out(t: Any) -> Template:
        return Template(name=t.name, source=t.source, created=t.created, size=t.size, os=t.os,
                        os_version=t.os_version, arch=t.arch, command=[str(c) for c in t.command],
                        used_by=users(t.name))

    def sync(metadata: Any) -> dict:
        return {"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}

    def async_(op: Any) -> dict:
        from jaula.daemon.api import _async
        return _async(op)

    @app.get("/1.0/templates", response_model=s.Sync[list[Template]], tags=["templates"])
    def list_templates() -> dict:
        return sync([out(t) for t in store().list()])

    @app.get("/1.0/templates/{name}", response_model=s.Sync[Template], tags=["templates"])
    def get_template(name: str) -> dict:
        return sync(out(store().get(name)))

    def submit(name: str, source: str, opts: dict[str, Any], replace: bool, what: str) -> Any:
        from jaula.storage import builders
        from jaula.storage.templates import validate_name

        st = store()
        validate_name(name)
        source_name, _fn, table = builders.resolve(source)
        builders.check_options(source_name, table, opts)
        if st.exists(name) and not replace:
            from jaula.errors import Exists
            raise Exists(f"Template {name!r} exists: delete it first, or build with replace")
        if replace and users(name):
            raise BadState(f"Template {name!r} is used by {', '.join(users(name))}: cannot replace it "
                           "until they are deleted")
        with building_lock:
            if name in building:
                raise BadState(f"Template {name!r} is being built already: wait for that operation")
            building.add(name)
        ready = threading.Event()
        box: dict[str, str] = {}
        last = [0.0]

        def progress(stage: str, done: int, total: int | None) -> None:
            if "id" in box:
                stop_point(box["id"])  # a cancelled build stops here: the builder undoes its work
            now = time.monotonic()
            if now - last[0] < PROGRESS_INTERVAL and not (total is not None and done >= total):
                return
            last[0] = now
            try:
                db.update_operation(box["id"], metadata={"stage": stage, "done": done, "total": total})
            except (JaulaError, KeyError):
                pass

        def action() -> dict:
            try:
                ready.wait(10)
                t = st.build(name, source_name, replace=replace, progress=progress, **opts)
            finally:
                with building_lock:
                    building.discard(name)
            try:
                if replace:
                    try:
                        db.delete_template(name)
                    except NotFound:
                        pass
                db.add_template(TemplateRow(name=name, source=t.source, size=t.size,
                                            metadata={"os": t.os, "os_version": t.os_version, "arch": t.arch}))
            except JaulaError:  # the files are the truth; a stale row is not worth failing for
                pass
            app.state.events.lifecycle("template-built", {"name": name})  # stored and pushed
            return {"stage": "done", "done": t.size, "total": t.size, "template": out(t).model_dump()}
        try:
            op = ops.submit(f"{what} template {name}", action, resources={"templates": [name]}, stoppable=True)
        except BaseException:
            with building_lock:
                building.discard(name)
            raise
        box["id"] = op.id
        ready.set()
        return op

    @app.post("/1.0/templates", response_model=s.Async, status_code=202, tags=["templates"])
    def build_template(body: TemplateBuild) -> dict:
        return async_(submit(body.name, body.source, dict(body.options), body.replace, "Building"))

    @app.post("/1.0/templates/import", response_model=s.Async, status_code=202, tags=["templates"])
    def import_template(body: TemplateImport) -> dict:
        if not body.path.startswith("/"):
            raise ConfigError(f"path {body.path!r} must be absolute: it is read by jaulad, on its host")
        source = "tarball" if body.format == "tarball" else "oci"
        return async_(submit(body.name, source, {"path": body.path}, body.replace, "Importing"))

    @app.delete("/1.0/templates/{name}", response_model=s.Sync[dict], tags=["templates"])
    def delete_template(name: str) -> dict:
        used = users(name)
        if used:
            raise BadState(f"Template {name!r} is used by {', '.join(used)}: delete those instances first")
        store().delete(name)
        try:
            db.delete_template(name)
        except NotFound:
            pass
        app.state.events.lifecycle("template-deleted", {"name": name})
        return sync({})

    @app.get("/1.0/host", response_model=s.Sync[HostInfo], tags=["host"])
    def get_host() -> dict:
        return sync(host.report())

    @app.put("/1.0/host", response_model=s.Sync[HostInfo], tags=["host"])
    def put_host(body: dict[str, float]) -> dict:
        host.set_ratios(body)
        return sync(host.report())

    return host
