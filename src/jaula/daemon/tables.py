"""Profiles, templates, operations and events: the `Database` methods besides instances.

A mixin so that db.py keeps the connection, transactions and instances, and each file stays
readable; these methods use only `transaction()`, `_read()` and `_conn` from `Database`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import AbstractContextManager
from typing import Any

from jaula.daemon.models import (
    FINISHED,
    OPERATION_CLASSES,
    OPERATION_STATUSES,
    EventRow,
    OperationRow,
    ProfileRow,
    SnapshotRow,
    TemplateRow,
    check_choice,
    config_problems,
    now,
    to_json,
    validate_name,
)
from jaula.errors import BadState, ConfigError, Exists, NotFound


class Tables:
    _conn: sqlite3.Connection
    events_keep: int

    def transaction(self) -> AbstractContextManager[Any]: ...  # Database's
    def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...  # Database's
    def _write_config(self, table: str, column: str, owner: int, config: dict[str, str]) -> None: ...

    # -- profiles -----------------------------------------------------------------------------

    def create_profile(self, profile: ProfileRow) -> ProfileRow:
        validate_name(profile.name, "Profile")
        problems = config_problems(profile.config, "Profile")
        if not isinstance(profile.description, str):
            problems.append("Profile description must be a string")
        if problems:
            raise ConfigError(problems)
        with self.transaction():
            if self._conn.execute("SELECT 1 FROM profiles WHERE name = ?", (profile.name,)).fetchone():
                raise Exists(f"Profile {profile.name!r} already exists: edit it, or pick another name")
            cur = self._conn.execute("INSERT INTO profiles (name, description) VALUES (?, ?)",
                                     (profile.name, profile.description))
            self._write_config("profile_config", "profile_id", cur.lastrowid, profile.config)  # type: ignore[arg-type]
        return self.get_profile(profile.name)

    def get_profile(self, name: str) -> ProfileRow:
        with self._read() as conn:
            found = conn.execute("SELECT id, description FROM profiles WHERE name = ?", (name,)).fetchone()
            if found is None:
                raise NotFound(f"Profile {name!r} not found: `jaula profile list` shows the profiles")
            config = dict(conn.execute(
                "SELECT key, value FROM profile_config WHERE profile_id = ? ORDER BY key", (found[0],)))
        return ProfileRow(name=name, description=found[1], config=config)

    def list_profiles(self) -> list[ProfileRow]:
        with self._read() as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM profiles ORDER BY name")]
            return [self.get_profile(n) for n in names]

    def update_profile(self, name: str, *, description: str | None = None,
                       config: dict[str, str] | None = None) -> ProfileRow:
        """Change the description, or replace the whole config, or both."""
        if config is not None and (problems := config_problems(config, "Profile")):
            raise ConfigError(problems)
        with self.transaction():
            found = self._conn.execute("SELECT id FROM profiles WHERE name = ?", (name,)).fetchone()
            if found is None:
                raise NotFound(f"Profile {name!r} not found: nothing updated")
            if description is not None:
                if not isinstance(description, str):
                    raise ConfigError("Profile description must be a string")
                self._conn.execute("UPDATE profiles SET description = ? WHERE id = ?", (description, found[0]))
            if config is not None:
                self._conn.execute("DELETE FROM profile_config WHERE profile_id = ?", (found[0],))
                self._write_config("profile_config", "profile_id", found[0], config)
        return self.get_profile(name)

    def profile_users(self, name: str) -> list[str]:
        """Names of the instances using the profile."""
        with self._read() as conn:
            return [r[0] for r in conn.execute(
                "SELECT i.name FROM instance_profiles ip JOIN profiles p ON p.id = ip.profile_id "
                "JOIN instances i ON i.id = ip.instance_id WHERE p.name = ? ORDER BY i.name", (name,))]

    def rename_profile(self, name: str, new_name: str) -> ProfileRow:
        """Rename a profile; refused while instances use it (their links would follow, but
        snapshots and exported backups name their profiles)."""
        validate_name(new_name, "Profile")
        with self.transaction():
            if users := self.profile_users(name):
                raise BadState(f"Profile {name!r} is used by {', '.join(users)}: "
                               "remove it from those instances first")
            if self._conn.execute("SELECT 1 FROM profiles WHERE name = ?", (new_name,)).fetchone():
                raise Exists(f"Cannot rename profile {name!r}: profile {new_name!r} already exists")
            if self._conn.execute("UPDATE profiles SET name = ? WHERE name = ?", (new_name, name)).rowcount == 0:
                raise NotFound(f"Profile {name!r} not found: nothing renamed")
        return self.get_profile(new_name)

    def delete_profile(self, name: str) -> None:
        with self.transaction():
            if users := self.profile_users(name):
                raise BadState(f"Profile {name!r} is used by {', '.join(users)}: "
                               "remove it from those instances first")
            if self._conn.execute("DELETE FROM profiles WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"Profile {name!r} not found: nothing deleted")

    # -- templates ----------------------------------------------------------------------------

    def add_template(self, template: TemplateRow) -> TemplateRow:
        validate_name(template.name, "Template")
        if not isinstance(template.source, str) or not template.source:
            raise ConfigError(f"Template {template.name!r}: source must be a non-empty string")
        if not isinstance(template.size, int) or template.size < 0:
            raise ConfigError(f"Template {template.name!r}: size {template.size!r} must be a non-negative integer")
        metadata = to_json(template.metadata, f"Template {template.name!r} metadata")
        with self.transaction():
            if self._conn.execute("SELECT 1 FROM templates WHERE name = ?", (template.name,)).fetchone():
                raise Exists(f"Template {template.name!r} already exists: delete it first to replace it")
            self._conn.execute(
                "INSERT INTO templates (name, source, created, size, metadata) VALUES (?, ?, ?, ?, ?)",
                (template.name, template.source, template.created or now(), template.size, metadata))
        return self.get_template(template.name)

    def get_template(self, name: str) -> TemplateRow:
        with self._read() as conn:
            found = conn.execute("SELECT * FROM templates WHERE name = ?", (name,)).fetchone()
        if found is None:
            raise NotFound(f"Template {name!r} not found: `jaula template list` shows the templates")
        return _template(found)

    def list_templates(self) -> list[TemplateRow]:
        with self._read() as conn:
            return [_template(r) for r in conn.execute("SELECT * FROM templates ORDER BY name")]

    def delete_template(self, name: str) -> None:
        """Forget a template; refused while instances are built on it."""
        with self.transaction():
            users = [r[0] for r in self._conn.execute(
                "SELECT name FROM instances WHERE template = ? ORDER BY name", (name,))]
            if users:
                raise BadState(f"Template {name!r} is used by {', '.join(users)}: delete those instances first")
            if self._conn.execute("DELETE FROM templates WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"Template {name!r} not found: nothing deleted")

    # -- operations ---------------------------------------------------------------------------

    def create_operation(self, op_class: str, description: str, *,
                         resources: dict[str, list[str]] | None = None,
                         metadata: dict[str, Any] | None = None, status: str = "pending") -> OperationRow:
        check_choice(op_class, OPERATION_CLASSES, "Operation class")
        check_choice(status, ("pending", "running"), "A new operation's status")
        if not isinstance(description, str) or not description:
            raise ConfigError("Operation description must be a non-empty string")
        stamp = now()
        op = OperationRow(id=str(uuid.uuid4()), op_class=op_class, description=description,
                          status=status, created=stamp, updated=stamp,
                          resources=resources or {}, metadata=metadata or {})
        row = (op.id, op.op_class, op.description, op.status, op.created, op.updated, op.error,
               to_json(op.resources, "Operation resources"), to_json(op.metadata, "Operation metadata"))
        with self.transaction():
            self._conn.execute("INSERT INTO operations (id, class, description, status, created, updated, "
                               "error, resources, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return op

    def update_operation(self, op_id: str, *, status: str | None = None, error: str | None = None,
                         metadata: dict[str, Any] | None = None) -> OperationRow:
        """Move an operation on; a finished one (success, failure, cancelled) cannot change."""
        if status is not None:
            check_choice(status, OPERATION_STATUSES, "Operation status")
        if error is not None and not isinstance(error, str):
            raise ConfigError("Operation error must be a string")
        with self.transaction():
            op = self.get_operation(op_id)
            if op.status in FINISHED:
                raise BadState(f"Operation {op_id} already ended ({op.status}): it cannot change")
            op = op.replace(status=op.status if status is None else status,
                            error=op.error if error is None else error,
                            metadata=op.metadata if metadata is None else metadata, updated=now())
            self._conn.execute(
                "UPDATE operations SET status = ?, error = ?, metadata = ?, updated = ? WHERE id = ?",
                (op.status, op.error, to_json(op.metadata, "Operation metadata"), op.updated, op_id))
        return op  # type: ignore[return-value]

    def get_operation(self, op_id: str) -> OperationRow:
        with self._read() as conn:
            found = conn.execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
        if found is None:
            raise NotFound(f"Operation {op_id!r} not found (finished operations are kept for a while only)")
        return _operation(found)

    def list_operations(self, status: str | None = None) -> list[OperationRow]:
        if status is not None:
            check_choice(status, OPERATION_STATUSES, "Operation status")
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM operations WHERE ?1 IS NULL OR status = ?1 "
                                "ORDER BY created, rowid", (status,)).fetchall()
        return [_operation(r) for r in rows]

    def delete_operation(self, op_id: str) -> None:
        with self.transaction():
            if self._conn.execute("DELETE FROM operations WHERE id = ?", (op_id,)).rowcount == 0:
                raise NotFound(f"Operation {op_id!r} not found: nothing deleted")

    def fail_unfinished_operations(self, error: str) -> list[str]:
        """At daemon start: operations left pending or running by a previous life failed."""
        with self.transaction():
            ids = [r[0] for r in self._conn.execute(
                "SELECT id FROM operations WHERE status IN ('pending', 'running') ORDER BY created, rowid")]
            self._conn.execute("UPDATE operations SET status = 'failure', error = ?, updated = ? "
                               "WHERE status IN ('pending', 'running')", (error, now()))
        return ids

    # -- events -------------------------------------------------------------------------------

    def add_event(self, type_: str, payload: dict[str, Any] | None = None) -> EventRow:
        """Append an event; only the last `events_keep` are kept."""
        if not isinstance(type_, str) or not type_:
            raise ConfigError("Event type must be a non-empty string")
        event_json = to_json(payload or {}, f"Event {type_!r} payload")
        stamp = now()
        with self.transaction():
            cur = self._conn.execute("INSERT INTO events (time, type, payload) VALUES (?, ?, ?)",
                                     (stamp, type_, event_json))
            event_id: int = cur.lastrowid  # type: ignore[assignment]
            self._conn.execute("DELETE FROM events WHERE id <= ?", (event_id - self.events_keep,))
        return EventRow(id=event_id, time=stamp, type=type_, payload=payload or {})

    def events(self, after: int = 0, limit: int | None = None, type_: str | None = None) -> list[EventRow]:
        """Events with id > `after`, oldest first (a stream resumes from the last id it saw)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM events WHERE id > ?1 AND (?2 IS NULL OR type = ?2) ORDER BY id LIMIT ?3",
                (after, type_, -1 if limit is None else limit)).fetchall()
        return [EventRow(id=r["id"], time=r["time"], type=r["type"], payload=json.loads(r["payload"]))
                for r in rows]

    # -- snapshots ----------------------------------------------------------------------------

    def add_snapshot(self, snap: SnapshotRow) -> SnapshotRow:
        """Record a snapshot of an instance (its root is already kept by the pool)."""
        validate_name(snap.name, "Snapshot")
        problems = config_problems(snap.config, "Snapshot")
        if snap.size is not None and (not isinstance(snap.size, int) or snap.size < 0):
            problems.append(f"Snapshot size {snap.size!r} must be a non-negative integer")
        if problems:
            raise ConfigError(problems)
        with self.transaction():
            iid = self._snapshot_owner(snap.instance)
            if self._conn.execute("SELECT 1 FROM instance_snapshots WHERE instance_id = ? AND name = ?",
                                  (iid, snap.name)).fetchone():
                raise Exists(f"Instance {snap.instance!r} already has a snapshot {snap.name!r}: "
                             "pick another name, or delete that one first")
            self._conn.execute(
                "INSERT INTO instance_snapshots (instance_id, name, created, size, stateful, config, profiles) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (iid, snap.name, snap.created or now(), snap.size, int(snap.stateful),
                 to_json(snap.config, "Snapshot config"), json.dumps(list(snap.profiles))))
        return self.get_snapshot(snap.instance, snap.name)

    def list_snapshots(self, instance: str) -> list[SnapshotRow]:
        """An instance's snapshots, oldest first."""
        with self._read() as conn:
            iid = self._snapshot_owner(instance)
            rows = conn.execute("SELECT * FROM instance_snapshots WHERE instance_id = ? ORDER BY created, name",
                                (iid,)).fetchall()
        return [_snapshot(instance, r) for r in rows]

    def get_snapshot(self, instance: str, name: str) -> SnapshotRow:
        with self._read() as conn:
            iid = self._snapshot_owner(instance)
            found = conn.execute("SELECT * FROM instance_snapshots WHERE instance_id = ? AND name = ?",
                                 (iid, name)).fetchone()
        if found is None:
            raise NotFound(f"Instance {instance!r} has no snapshot {name!r}: "
                           f"`jaula snapshot list {instance}` shows its snapshots")
        return _snapshot(instance, found)

    def delete_snapshot(self, instance: str, name: str) -> None:
        with self.transaction():
            iid = self._snapshot_owner(instance)
            if self._conn.execute("DELETE FROM instance_snapshots WHERE instance_id = ? AND name = ?",
                                  (iid, name)).rowcount == 0:
                raise NotFound(f"Instance {instance!r} has no snapshot {name!r}: nothing deleted")

    def _snapshot_owner(self, instance: str) -> int:
        found = self._conn.execute("SELECT id FROM instances WHERE name = ?", (instance,)).fetchone()
        if found is None:
            raise NotFound(f"Instance {instance!r} not found: `jaula list` shows the instances")
        return int(found[0])


def _snapshot(instance: str, r: sqlite3.Row) -> SnapshotRow:
    return SnapshotRow(instance=instance, name=r["name"], created=r["created"], size=r["size"],
                       stateful=bool(r["stateful"]), config=json.loads(r["config"]),
                       profiles=json.loads(r["profiles"]))


def _template(r: sqlite3.Row) -> TemplateRow:
    return TemplateRow(name=r["name"], source=r["source"], created=r["created"], size=r["size"],
                       metadata=json.loads(r["metadata"]))


def _operation(r: sqlite3.Row) -> OperationRow:
    return OperationRow(id=r["id"], op_class=r["class"], description=r["description"],
                        status=r["status"], created=r["created"], updated=r["updated"],
                        error=r["error"], resources=json.loads(r["resources"]),
                        metadata=json.loads(r["metadata"]))


