"""The API's copy, export and import routes, mounted into create_app's app by `mount`.

- POST /1.0/instances/{name}/copy {"name", "snapshot": null, "description": null}: an operation
  making a new, stopped instance from `name`'s root (a clone in the pool; a running source is
  frozen for the moment of the copy) or from one of its snapshots. It gets the source's (or the
  snapshot's) config and profiles, without the values that belong to one instance only (its
  NICs' nic.*.mac, and static nic.*.ipv4 / nic.*.ipv6 addresses: the copy's are allocated, or
  stable per instance), its own id range, and its own name in /etc/hostname. With
  {"snapshots": true} the source's snapshots (and their rows) become the copy's too.
- POST /1.0/instances/{name}/export {"compression": "gzip"}: an operation writing a backup in
  jaulad's backups folder; its metadata names it ("download": /1.0/backups/ID): GET that to
  download it (the file goes once sent), or DELETE it. With {"path"}, the file is written at
  `path` **on jaulad's host** instead (absolute; a new file in an existing folder: it never
  overwrites; compressed by its suffix). The file is storage/backup.py's format (a POSIX tar, compressed by its suffix: .tar.gz,
  .tar.xz, .tar.bz2) with the instance's record under "instance" in backup.json (name, mode,
  template, description, config, profiles and their settings) and the root's own layer with
  owners as seen inside the instance, so it imports on a host with another id range.
  With {"snapshots": true} the instance's snapshots come too (each a volume backup of its own,
  `snapshots/NAME.tar` in the file; their config and profiles in the record), and are imported
  with it.
- POST /1.0/import/upload?name=: the backup file as the request's body (application/octet-stream),
  then an operation making a new, stopped instance from it, named as in the file unless `name`
  is given; the upload is deleted when the operation ends. It stops, refused, when less than
  UPLOAD_RESERVE (1 GiB) would stay free on jaulad's disk.
- POST /1.0/import {"path", "name": null}: the same from a file already on jaulad's host. Its template must be
  on this host (busybox is built on first use) and its profiles too. Every member of the
  archive is checked before anything is extracted (storage/backup_check.py).

Copy, export and import run in the operation's thread (the spawner only writes a new root's host
name: milliseconds), so other instances' starts go on meanwhile; and they can be cancelled while
they run (DELETE /1.0/operations/{id}): their cp or tar is killed, and what they made goes (the
half-copied root, the partial backup, the new instance's row); the operation ends `cancelled`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from jaula.daemon import schemas as s
from jaula.daemon import stoppable
from jaula.daemon.models import (
    IDMAP_SIZE,
    MODES,
    InstanceRow,
    SnapshotRow,
    validate_name,
)
from jaula.daemon.snapshots_api import event, profile_problems
from jaula.errors import ConfigError, Exists, NotFound

#: a NIC's settings that belong to one instance only: its MAC, and its static addresses
_NIC_OWN = re.compile(r"nic\.[^.]+\.(mac|ipv4|ipv6)")


class InstanceCopy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the new instance's name (a DNS label)")
    snapshot: str | None = Field(default=None, description="copy this snapshot of the source, not its present root")
    description: str | None = Field(default=None, description="the copy's description (default: the source's)")
    snapshots: bool = Field(default=False, description="the source's snapshots become the copy's too "
                                                       "(not with `snapshot`)")


#: a backup's file name suffix for each compression
SUFFIX = {"none": ".tar", "gzip": ".tar.gz", "xz": ".tar.xz", "bzip2": ".tar.bz2"}
_BACKUP_ID = re.compile(r"[0-9a-f]{32}")
#: free bytes an upload must leave on jaulad's disk (checked every UPLOAD_CHECK bytes written)
UPLOAD_RESERVE = 1 << 30
UPLOAD_CHECK = 64 << 20
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")  # as models.now() writes it
_BINARY = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


class InstanceExport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="a new file on jaulad's host (absolute; .tar, .tar.gz, .tar.xz "
                                                        "or .tar.bz2); leave out to download the backup")
    compression: Literal["none", "gzip", "xz", "bzip2"] = Field(
        default="gzip", description="for a download (with path, its suffix decides)")
    snapshots: bool = Field(default=False, description="include the instance's snapshots (imported with it)")


class InstanceImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a backup made by export, on jaulad's host (absolute)")
    name: str | None = Field(default=None, description="the new instance's name (default: the one in the file)")


def without_volatile(config: dict[str, str]) -> dict[str, str]:
    """`config` without its NICs' MACs and static addresses (a copy gets its own: "auto" and
    "none" stay)."""
    out = {}
    for key, value in config.items():
        m = _NIC_OWN.fullmatch(key)
        if m and (m.group(1) == "mac" or value not in ("auto", "none")):
            continue
        out[key] = value
    return out


def mount(app: FastAPI, svc: Any) -> None:
    """Add the copy, export and import routes to `app`; `svc` is create_app's service."""
    from jaula.daemon.api import _async, _canonical, _sync, _validated

    db, backend, ops = svc.db, svc.backend, svc.ops

    def new_row(name: str, src: dict[str, Any], config: dict[str, str], profiles: list[str],
                what: str) -> InstanceRow:
        """The new instance's row, after every check (all problems at once)."""
        problems: list[str] = []
        try:
            validate_name(name, "Instance")
        except ConfigError as exc:
            problems += exc.problems
        if src.get("mode") not in MODES:
            problems.append(f"{what}: mode {src.get('mode')!r} is not one of {', '.join(MODES)}")
        command = src.get("command") or []
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            problems.append(f"{what}: command {command!r} is not a list of strings")
        try:
            validate_name(src.get("template"), "Template")
        except ConfigError as exc:
            problems += [f"{what}: {p}" for p in exc.problems]
        try:
            own = _validated(config, f"{what}'s config")
        except ConfigError as exc:
            problems, own = problems + exc.problems, {}
        problems += [f"{what}: {p}" for p in profile_problems(db, profiles)]
        if problems:
            raise ConfigError(problems)
        expanded = svc.expanded(profiles, own)
        privileged = expanded.get("security.privileged") is True
        return db.create_instance(InstanceRow(
            name=name, kind="container", mode=src["mode"], template=src["template"],
            description=str(src.get("description") or ""), autostart=bool(expanded.get("boot.autostart")),
            idmap_size=0 if privileged else IDMAP_SIZE, config=_canonical(own), profiles=list(profiles),
            command=list(command)))

    def submit(description: str, row: InstanceRow, fill: Any, lock: str, payload: dict[str, Any],
               done: Callable[[], None] = lambda: None) -> dict:
        """The operation filling new instance `row`'s root; `done` runs when it ends, however."""
        def action() -> dict:
            try:
                fill(svc.instance(row))
            except BaseException:
                db.delete_instance(row.name)  # revert: no half-made instance stays listed
                raise
            finally:
                done()
            event(svc, "instance-created", {"name": row.name, **payload})
            return {"instance": row.name}

        def cancelled() -> None:
            db.delete_instance(row.name)
            done()
        return _async(stoppable.submit(ops, description, action, instance=lock, on_cancel=cancelled))

    @app.post("/1.0/instances/{name}/copy", response_model=s.Async, status_code=202, tags=["instances"])
    def copy_instance(name: str, body: InstanceCopy) -> dict:
        src = db.get_instance(name)
        if body.snapshot is not None and body.snapshots:
            raise ConfigError("snapshot and snapshots: a copy of one snapshot takes no others; give one of them")
        if body.snapshot is not None:
            validate_name(body.snapshot, "Snapshot")
            kept = db.get_snapshot(name, body.snapshot)
            config, profiles = dict(kept.config), list(kept.profiles)
        else:
            config, profiles = dict(src.config), list(src.profiles)
        desc = src.description if body.description is None else body.description
        row = new_row(body.name, {"mode": src.mode, "template": src.template, "description": desc,
                                  "command": list(src.command)},
                      without_volatile(config), profiles, f"The copy of {name!r}")
        where = f" (snapshot {body.snapshot})" if body.snapshot else (" with its snapshots" if body.snapshots else "")

        def fill(inst: Any) -> None:
            kept = db.list_snapshots(name) if body.snapshots else []
            with ops.instance_lock(body.name):  # its start waits until it is made (or gone)
                backend.copy(inst, name, body.snapshot, [k.name for k in kept])
            try:
                with db.transaction() as t:
                    for k in kept:
                        t.add_snapshot(k.replace(instance=row.name, config=without_volatile(dict(k.config))))
            except BaseException:
                backend.delete(inst)  # revert: the root and its snapshots go with the row
                raise
        return submit(f"Copying instance {name}{where} to {body.name}", row, fill, name,
                      {"source": name, "snapshot": body.snapshot})

    @app.post("/1.0/instances/{name}/export", response_model=s.Async, status_code=202, tags=["instances"])
    def export_instance(name: str, body: InstanceExport) -> dict:
        db.get_instance(name)
        bid = None
        if body.path is None:
            bid = uuid.uuid4().hex
            path = os.path.join(backend.backups_dir(), bid + SUFFIX[body.compression])
        else:
            path = _new_file(body.path)

        def action() -> dict:
            row = db.get_instance(name)
            kept = db.list_snapshots(name) if body.snapshots else []
            record = {"name": row.name, "kind": row.kind, "mode": row.mode, "template": row.template,
                      "command": list(row.command),
                      "description": row.description, "created": row.created, "config": dict(row.config),
                      "profiles": list(row.profiles),
                      "profile_config": {p: dict(db.get_profile(p).config) for p in row.profiles},
                      "snapshots": [{"name": k.name, "created": k.created, "config": dict(k.config),
                                     "profiles": list(k.profiles)} for k in kept]}
            backend.export(svc.instance(row), path, record, [k.name for k in kept])
            event(svc, "instance-exported", {"name": name, "path": body.path, "backup": bid})
            if bid is None:
                return {"path": path, "size": os.path.getsize(path)}
            return {"backup": bid, "download": f"/1.0/backups/{bid}", "size": os.path.getsize(path)}
        where = "for download" if bid is not None else f"to {path}"
        return _async(stoppable.submit(ops, f"Exporting instance {name} {where}", action, instance=name))

    @app.get("/1.0/backups/{backup}", response_class=FileResponse, tags=["instances"],
             responses={200: {"description": "the backup file; it is deleted once sent", **_BINARY}})
    def download_backup(backup: str) -> FileResponse:
        path = _backup_file(backend.backups_dir(), backup)
        return FileResponse(path, media_type="application/octet-stream", filename=os.path.basename(path),
                            background=BackgroundTask(_unlink, path))

    @app.delete("/1.0/backups/{backup}", response_model=s.Sync[dict], tags=["instances"])
    def delete_backup(backup: str) -> dict:
        _unlink(_backup_file(backend.backups_dir(), backup))
        return _sync({})

    @app.post("/1.0/import/upload", response_model=s.Async, status_code=202, tags=["instances"],
              openapi_extra={"requestBody": {"required": True, **_BINARY}})
    async def upload_import(request: Request, name: str | None = Query(
            None, description="the new instance's name (default: the one in the file)")) -> dict:
        folder = await run_in_threadpool(backend.backups_dir)
        path = os.path.join(folder, f"upload-{uuid.uuid4().hex}.tar")
        try:
            f = await run_in_threadpool(open, path, "xb")
            full: str | None = None
            try:
                written, checked = 0, -UPLOAD_CHECK
                async for chunk in request.stream():
                    if full is not None:
                        continue  # read to the end, so the client gets the answer
                    if written - checked >= UPLOAD_CHECK:
                        checked = written
                        full = _no_room(folder)
                        if full is not None:
                            continue
                    await run_in_threadpool(f.write, chunk)
                    written += len(chunk)
            finally:
                f.close()
            if full is not None:
                raise ConfigError(full)
            return await run_in_threadpool(start_import, path, name, lambda: _unlink(path))
        except BaseException:
            _unlink(path)
            raise

    @app.post("/1.0/import", response_model=s.Async, status_code=202, tags=["instances"])
    def import_instance(body: InstanceImport) -> dict:
        if not body.path.startswith("/"):
            raise ConfigError(f"path {body.path!r} must be absolute: it is read by jaulad, on its host")
        if not os.path.isfile(body.path):
            raise NotFound(f"No backup file {body.path!r} on jaulad's host")
        return start_import(body.path, body.name)

    def start_import(path: str, name: str | None, done: Callable[[], None] = lambda: None) -> dict:
        what = "the uploaded backup" if os.path.basename(path).startswith("upload-") else repr(path)
        meta = backend.read_backup(path)
        rec = meta.get("instance")
        if not isinstance(rec, dict):
            raise ConfigError(f"{what} is a volume backup without an instance record: "
                              "import the files made by `jaula export`")
        config, profiles = rec.get("config"), rec.get("profiles")
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            raise ConfigError(f"{what}: its instance config is not a mapping of strings")
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            raise ConfigError(f"{what}: its instance profiles are not a list of names")
        snaps = _snapshot_records(rec.get("snapshots", []), what)
        if problems := [f"{what}: snapshot {k.name!r}: {p}" for k in snaps for p in profile_problems(db, k.profiles)]:
            raise ConfigError(problems)
        row = new_row(name if name is not None else rec.get("name"), rec, config, profiles,  # type: ignore[arg-type]
                      f"The instance in {what}")

        def fill(inst: Any) -> None:
            backend.import_(inst, path, [k.name for k in snaps])
            try:
                with db.transaction() as t:
                    for k in snaps:
                        t.add_snapshot(k.replace(instance=row.name))
            except BaseException:
                backend.delete(inst)  # revert: the root and its snapshots go with the row
                raise
        return submit(f"Importing instance {row.name} from {what}", row, fill, row.name, {"path": path}, done)


def _snapshot_records(found: object, what: str) -> list[SnapshotRow]:
    """The snapshots a backup's instance record lists (names, times, config, profiles), checked."""
    if not isinstance(found, list):
        raise ConfigError(f"{what}: its snapshots are not a list")
    out, problems = [], []
    for k in found:
        if not isinstance(k, dict):
            problems.append(f"{what}: a snapshot record is not a mapping: {k!r}")
            continue
        config, profiles = k.get("config", {}), k.get("profiles", [])
        try:
            validate_name(k.get("name"), "Snapshot")
        except ConfigError as exc:
            problems += [f"{what}: {p}" for p in exc.problems]
            continue
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()) \
                or not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            problems.append(f"{what}: snapshot {k['name']!r}: its config or profiles are malformed")
            continue
        created = k.get("created")
        out.append(SnapshotRow(instance="", name=k["name"], config=config, profiles=profiles,
                               created=created if isinstance(created, str) and _TIME.fullmatch(created) else ""))
    if len({k.name for k in out}) != len(out):
        problems.append(f"{what}: a snapshot name is listed twice")
    if problems:
        raise ConfigError(problems)
    return out


def _backup_file(folder: str, backup: str) -> str:
    """The file of export `backup` in `folder` (its id is 32 hex digits: no path can be named)."""
    if _BACKUP_ID.fullmatch(backup):
        for suffix in SUFFIX.values():
            path = os.path.join(folder, backup + suffix)
            if os.path.isfile(path):
                return path
    raise NotFound(f"No backup {backup!r} waits for download (a backup is deleted once downloaded)")


def _no_room(folder: str) -> str | None:
    """Why an upload into `folder` must stop (its disk is nearly full), or None."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if free >= UPLOAD_RESERVE:
        return None
    return (f"Not enough disk on jaulad's host for the upload: {free >> 20} MiB free, and "
            f"{UPLOAD_RESERVE >> 20} MiB are kept free; the upload was dropped")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _new_file(path: str) -> str:
    if not path.startswith("/"):
        raise ConfigError(f"path {path!r} must be absolute: the file is written by jaulad, on its host")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"path {path!r}: its folder does not exist on jaulad's host")
    if os.path.lexists(path):
        raise Exists(f"{path!r} exists already: give the name of a new file")
    return path
