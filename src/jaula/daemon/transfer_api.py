"""The API's copy, export and import routes, mounted into create_app's app by `mount`.

- POST /1.0/instances/{name}/copy {"name", "snapshot": null, "description": null}: an operation
  making a new, stopped instance from `name`'s root (a clone in the pool; a running source is
  frozen for the moment of the copy) or from one of its snapshots. It gets the source's (or the
  snapshot's) config and profiles, without the values that belong to one instance only (its
  NICs' nic.*.mac, and static nic.*.ipv4 / nic.*.ipv6 addresses: the copy's are allocated, or
  stable per instance), its own id range, and its own name in /etc/hostname.
- POST /1.0/instances/{name}/export {"path"}: an operation writing a backup file at `path` **on
  jaulad's host** (server-side; absolute; a new file in an existing folder: it never overwrites).
  The file is storage/backup.py's format (a POSIX tar, compressed by its suffix: .tar.gz,
  .tar.xz, .tar.bz2) with the instance's record under "instance" in backup.json (name, mode,
  template, description, config, profiles and their settings) and the root's own layer with
  owners as seen inside the instance, so it imports on a host with another id range.
  Snapshots are not exported.
- POST /1.0/import {"path", "name": null}: an operation making a new, stopped instance from such
  a file on jaulad's host, named as in the file unless `name` is given. Its template must be
  on this host (busybox is built on first use) and its profiles too. Every member of the
  archive is checked before anything is extracted (storage/backup_check.py).
"""

from __future__ import annotations

import os
import re
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from jaula.daemon import schemas as s
from jaula.daemon.models import IDMAP_SIZE, MODES, InstanceRow, validate_name
from jaula.daemon.snapshots_api import event, profile_problems
from jaula.errors import ConfigError, Exists, NotFound

#: a NIC's settings that belong to one instance only: its MAC, and its static addresses
_NIC_OWN = re.compile(r"nic\.[^.]+\.(mac|ipv4|ipv6)")


class InstanceCopy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the new instance's name (a DNS label)")
    snapshot: str | None = Field(default=None, description="copy this snapshot of the source, not its present root")
    description: str | None = Field(default=None, description="the copy's description (default: the source's)")


class InstanceExport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a new file on jaulad's host (absolute; .tar, .tar.gz, .tar.xz or .tar.bz2)")


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
    from jaula.daemon.api import _async, _canonical, _validated

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
            idmap_size=0 if privileged else IDMAP_SIZE, config=_canonical(own), profiles=list(profiles)))

    def submit(description: str, row: InstanceRow, fill: Any, lock: str, payload: dict[str, Any]) -> dict:
        def action() -> dict:
            try:
                fill(svc.instance(row))
            except BaseException:
                db.delete_instance(row.name)  # revert: no half-made instance stays listed
                raise
            event(svc, "instance-created", {"name": row.name, **payload})
            return {"instance": row.name}
        return _async(ops.submit(description, action, instance=lock,
                                 on_cancel=lambda: db.delete_instance(row.name)))

    @app.post("/1.0/instances/{name}/copy", response_model=s.Async, status_code=202, tags=["instances"])
    def copy_instance(name: str, body: InstanceCopy) -> dict:
        src = db.get_instance(name)
        if body.snapshot is not None:
            validate_name(body.snapshot, "Snapshot")
            kept = db.get_snapshot(name, body.snapshot)
            config, profiles = dict(kept.config), list(kept.profiles)
        else:
            config, profiles = dict(src.config), list(src.profiles)
        desc = src.description if body.description is None else body.description
        row = new_row(body.name, {"mode": src.mode, "template": src.template, "description": desc},
                      without_volatile(config), profiles, f"The copy of {name!r}")
        where = f" (snapshot {body.snapshot})" if body.snapshot else ""
        return submit(f"Copying instance {name}{where} to {body.name}", row,
                      lambda inst: backend.copy(inst, name, body.snapshot), name,
                      {"source": name, "snapshot": body.snapshot})

    @app.post("/1.0/instances/{name}/export", response_model=s.Async, status_code=202, tags=["instances"])
    def export_instance(name: str, body: InstanceExport) -> dict:
        row = db.get_instance(name)
        path = _new_file(body.path)
        record = {"name": row.name, "kind": row.kind, "mode": row.mode, "template": row.template,
                  "description": row.description, "created": row.created, "config": dict(row.config),
                  "profiles": list(row.profiles),
                  "profile_config": {p: dict(db.get_profile(p).config) for p in row.profiles}}

        def action() -> dict:
            backend.export(svc.instance(db.get_instance(name)), path, record)
            event(svc, "instance-exported", {"name": name, "path": path})
            return {"path": path, "size": os.path.getsize(path)}
        return _async(ops.submit(f"Exporting instance {name} to {path}", action, instance=name))

    @app.post("/1.0/import", response_model=s.Async, status_code=202, tags=["instances"])
    def import_instance(body: InstanceImport) -> dict:
        if not body.path.startswith("/"):
            raise ConfigError(f"path {body.path!r} must be absolute: it is read by jaulad, on its host")
        if not os.path.isfile(body.path):
            raise NotFound(f"No backup file {body.path!r} on jaulad's host")
        meta = backend.read_backup(body.path)
        rec = meta.get("instance")
        if not isinstance(rec, dict):
            raise ConfigError(f"{body.path!r} is a volume backup without an instance record: "
                              "import the files made by `jaula export`")
        config, profiles = rec.get("config"), rec.get("profiles")
        if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
            raise ConfigError(f"{body.path!r}: its instance config is not a mapping of strings")
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            raise ConfigError(f"{body.path!r}: its instance profiles are not a list of names")
        name = body.name if body.name is not None else rec.get("name")
        row = new_row(name, rec, config, profiles, f"The instance in {body.path!r}")  # type: ignore[arg-type]
        return submit(f"Importing instance {row.name} from {body.path}", row,
                      lambda inst: backend.import_(inst, body.path), row.name, {"path": body.path})


def _new_file(path: str) -> str:
    if not path.startswith("/"):
        raise ConfigError(f"path {path!r} must be absolute: the file is written by jaulad, on its host")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"path {path!r}: its folder does not exist on jaulad's host")
    if os.path.lexists(path):
        raise Exists(f"{path!r} exists already: give the name of a new file")
    return path
