"""The API's snapshot routes, mounted into create_app's app by `mount`.

- POST   /1.0/instances/{name}/snapshots {"name", "stateful": false}: an operation. A running
  instance is frozen for the moment its root is copied (thawed after), or snapshotted live
  where the pool's snapshot is atomic (btrfs): the operation's metadata says which ("live").
  The instance's own config and profiles of that moment are kept in the snapshot's row.
- GET    /1.0/instances/{name}/snapshots, GET .../snapshots/{snap}
- DELETE /1.0/instances/{name}/snapshots/{snap}: an operation.
- POST   /1.0/instances/{name}/snapshots/{snap}/restore {"stop": false}: an operation; the root,
  config and profiles come back as they were. A running (or frozen) instance is refused unless
  "stop" is true: then it is stopped, restored and started again (Incus restarts it the same way).
- PUT    /1.0/instances/{name} {"restore": "snap"}: the same as Incus asks it, with "stop" true
  (a running instance is stopped, restored and started again); the only PUT body taken (settings
  change by PATCH).

Snapshot names are DNS labels, like instance names. Stateful snapshots (process memory) are not
supported: "stateful": true is refused.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from jaula.daemon import schemas as s
from jaula.daemon import stoppable
from jaula.daemon.models import SnapshotRow, validate_name
from jaula.errors import BadState, ConfigError, Exists, NotFound

log = logging.getLogger("jaula.api")


class Snapshot(BaseModel):
    name: str
    created: str
    size: int | None = Field(description="bytes of host disk it holds, when known")
    stateful: bool
    config: dict[str, str] = Field(description="the instance's own settings when it was taken")
    profiles: list[str] = Field(description="the instance's profiles when it was taken")


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="a DNS label: 1 to 63 of a-z, 0-9 and '-'")
    stateful: bool = Field(default=False, description="keep the processes' memory too: not supported, must be false")


class SnapshotRestore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stop: bool = Field(default=False, description="a running instance is stopped, restored and started "
                                                  "again; without it a running instance is refused")
    timeout: float = Field(default=30.0, ge=0, le=3600, description="with stop: seconds for a clean shutdown")


class InstanceRestore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    restore: str = Field(description="the snapshot to bring back (a running instance is stopped, restored and "
                                     "started again, as Incus does); settings are changed by PATCH, not PUT")
    stateful: bool = Field(default=False, description="restore the processes' memory too: not supported, must be false")


def snapshot_out(snap: SnapshotRow) -> Snapshot:
    return Snapshot(name=snap.name, created=snap.created, size=snap.size, stateful=snap.stateful,
                    config=dict(snap.config), profiles=list(snap.profiles))


def event(svc: Any, type_: str, payload: dict[str, Any]) -> None:
    """Record a lifecycle event (through the API's event bus where it has one)."""
    bus = getattr(svc, "events", None)
    if bus is not None and hasattr(bus, "lifecycle"):
        bus.lifecycle(type_, payload)
    else:
        svc.db.add_event(type_, payload)


def profile_problems(db: Any, profiles: list[str]) -> list[str]:
    """A problem for each profile that is not on this host."""
    problems = []
    for p in profiles:
        try:
            db.get_profile(p)
        except NotFound as exc:
            problems.append(str(exc))
    return problems


def mount(app: FastAPI, svc: Any) -> None:
    """Add the snapshot routes to `app`; `svc` is create_app's service (db, backend, ops, host)."""
    from jaula.daemon.api import _async, _sync

    db, backend, ops = svc.db, svc.backend, svc.ops

    @app.get("/1.0/instances/{name}/snapshots", response_model=s.Sync[list[Snapshot]], tags=["snapshots"])
    def list_snapshots(name: str) -> dict:
        return _sync([snapshot_out(x) for x in db.list_snapshots(name)])

    @app.get("/1.0/instances/{name}/snapshots/{snap}", response_model=s.Sync[Snapshot], tags=["snapshots"])
    def get_snapshot(name: str, snap: str) -> dict:
        return _sync(snapshot_out(db.get_snapshot(name, snap)))

    @app.post("/1.0/instances/{name}/snapshots", response_model=s.Async, status_code=202, tags=["snapshots"])
    def create_snapshot(name: str, body: SnapshotCreate) -> dict:
        problems = []
        try:
            validate_name(body.name, "Snapshot")
        except ConfigError as exc:
            problems += exc.problems
        if body.stateful:
            problems.append("stateful snapshots (the processes' memory) are not supported: leave stateful false")
        if problems:
            raise ConfigError(problems)
        db.get_instance(name)
        _absent(name, body.name)

        def action() -> dict:
            row = db.get_instance(name)
            _absent(name, body.name)
            inst = svc.instance(row)
            try:
                got = backend.snapshot(inst, body.name)
            except Exists:  # in the pool without a row: a snapshot cut before its row was written
                log.warning("snapshot %s of %s was in the pool without a row: replaced", body.name, name)
                backend.delete_snapshot(inst, body.name)
                got = backend.snapshot(inst, body.name)
            try:
                snap = db.add_snapshot(SnapshotRow(instance=name, name=body.name, size=got.get("size"),
                                                   config=dict(row.config), profiles=list(row.profiles)))
            except BaseException:
                backend.delete_snapshot(inst, body.name)  # revert: no snapshot without its row
                raise
            event(svc, "instance-snapshot-created", {"name": name, "snapshot": body.name})
            return {"snapshot": snapshot_out(snap).model_dump(), "live": bool(got.get("live"))}
        return _async(stoppable.submit(ops, f"Snapshotting instance {name} as {body.name}", action, instance=name))

    @app.delete("/1.0/instances/{name}/snapshots/{snap}", response_model=s.Async, status_code=202,
                tags=["snapshots"])
    def delete_snapshot(name: str, snap: str) -> dict:
        db.get_snapshot(name, snap)

        def action() -> dict:
            db.get_snapshot(name, snap)
            try:
                backend.delete_snapshot(svc.instance(db.get_instance(name)), snap)
            except NotFound:
                log.warning("snapshot %s of %s was already gone from the pool: its row goes", snap, name)
            db.delete_snapshot(name, snap)
            event(svc, "instance-snapshot-deleted", {"name": name, "snapshot": snap})
            return {}
        return _async(ops.submit(f"Deleting snapshot {snap} of instance {name}", action, instance=name))

    @app.post("/1.0/instances/{name}/snapshots/{snap}/restore", response_model=s.Async, status_code=202,
              tags=["snapshots"])
    def restore_snapshot(name: str, snap: str, body: SnapshotRestore | None = None) -> dict:
        return restore(name, snap, body or SnapshotRestore())

    @app.put("/1.0/instances/{name}", response_model=s.Async, status_code=202, tags=["snapshots"])
    def put_instance(name: str, body: InstanceRestore) -> dict:
        """Incus's way to restore a snapshot: a running instance is stopped, restored and started again."""
        if body.stateful:
            raise ConfigError("stateful: a stateful restore (process memory) is not supported; leave it false")
        validate_name(body.restore, "Snapshot")
        return restore(name, body.restore, SnapshotRestore(stop=True))

    def restore(name: str, snap: str, body: SnapshotRestore) -> dict:
        row = db.get_instance(name)
        kept = db.get_snapshot(name, snap)
        if problems := profile_problems(db, kept.profiles):
            raise ConfigError([f"Snapshot {snap!r} uses a profile that is gone: {p}" for p in problems])
        svc.expanded(kept.profiles, kept.config)  # its settings still pass today's rules
        if row.status != "stopped" and not body.stop:
            raise BadState(f"Instance {name!r} is {row.status}: stop it first, or restore with stop "
                           "(jaula snapshot restore --stop: stopped, restored, started again)")

        def action() -> dict:
            row = db.get_instance(name)
            kept = db.get_snapshot(name, snap)
            was = row.status
            meta: dict[str, Any] = {}
            if was != "stopped":
                if not body.stop:
                    raise BadState(f"Instance {name!r} is {was}: stop it first, or restore with stop")
                meta["clean"] = backend.stop(svc.instance(row), timeout=body.timeout, force=False)
                db.update_instance(name, status="stopped", pid=None, pid_start=None)
            try:
                backend.restore(svc.instance(row), snap)
            except BaseException:
                if was in ("running", "frozen"):  # revert: it runs again, on its root as it was
                    try:
                        again = backend.start(svc.instance(row))
                        db.update_instance(name, status="running", pid=again.pid or None)
                    except Exception:  # logged: the restore's error is the one to tell
                        log.exception("instance %s: start again after a failed restore", name)
                raise
            expanded = svc.expanded(kept.profiles, kept.config)
            with db.transaction() as t:
                t.replace_config(name, dict(kept.config))
                t.set_instance_profiles(name, list(kept.profiles))
                t.update_instance(name, autostart=bool(expanded.get("boot.autostart")))
            if was in ("running", "frozen"):
                row = db.get_instance(name)
                with svc.host.starting(row) if svc.host is not None else contextlib.nullcontext():
                    st = backend.start(svc.instance(row))
                    db.update_instance(name, status="running", pid=st.pid or None)
                meta["pid"] = st.pid
            event(svc, "instance-snapshot-restored", {"name": name, "snapshot": snap})
            return meta
        return _async(stoppable.submit(ops, f"Restoring instance {name} to snapshot {snap}", action, instance=name))

    def _absent(name: str, snap: str) -> None:
        try:
            db.get_snapshot(name, snap)
        except NotFound:
            return
        raise Exists(f"Instance {name!r} already has a snapshot {snap!r}: pick another name, or delete that one first")
