"""Profiles, templates, operations and events in the state database."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from jaula.daemon.db import Database
from jaula.daemon.models import EventRow, InstanceRow, ProfileRow, TemplateRow
from jaula.errors import BadState, ConfigError, Exists, NotFound


@pytest.fixture
def db(tmp_path: Path):
    with Database(tmp_path / "jaula.db", events_keep=50) as d:
        yield d


def test_profiles_crud(db: Database) -> None:
    made = db.create_profile(ProfileRow("vps-512", description="vzctl's ve-vps.512MB",
                                        config={"limits.memory": "512MiB", "limits.cpu": "1"}))
    assert made == db.get_profile("vps-512")
    with pytest.raises(Exists, match="Profile 'vps-512' already exists"):
        db.create_profile(ProfileRow("vps-512"))
    db.create_profile(ProfileRow("base"))
    assert [p.name for p in db.list_profiles()] == ["base", "vps-512"]
    row = db.update_profile("vps-512", config={"limits.memory": "1GiB"})
    assert row.config == {"limits.memory": "1GiB"} and row.description == "vzctl's ve-vps.512MB"
    assert db.update_profile("vps-512", description="bigger").description == "bigger"
    with pytest.raises(ConfigError, match="not a string"):
        db.update_profile("vps-512", config={"limits.memory": 1})  # type: ignore[dict-item]
    with pytest.raises(NotFound):
        db.update_profile("nope", description="x")
    db.delete_profile("vps-512")
    with pytest.raises(NotFound, match="Profile 'vps-512' not found"):
        db.get_profile("vps-512")
    assert db._conn.execute("SELECT count(*) FROM profile_config").fetchone()[0] == 0
    with pytest.raises(NotFound):
        db.delete_profile("vps-512")


def test_profile_in_use_cannot_be_deleted_even_by_sql(db: Database) -> None:
    db.create_profile(ProfileRow("base"))
    db.create_instance(InstanceRow("web1", profiles=["base"]))
    db.create_instance(InstanceRow("web2", profiles=["base"]))
    assert db.profile_users("base") == ["web1", "web2"]
    with pytest.raises(BadState, match="Profile 'base' is used by web1, web2"):
        db.delete_profile("base")
    with pytest.raises(Exception, match="FOREIGN KEY"), db.transaction():
        db._conn.execute("DELETE FROM profiles WHERE name = 'base'")
    assert db.get_profile("base").name == "base"


def test_templates_crud(db: Database) -> None:
    made = db.add_template(TemplateRow("debian", source="debootstrap:bookworm", size=123456,
                                       metadata={"os": "debian", "init": "systemd"}))
    assert made.created.endswith("Z")
    assert made == db.get_template("debian")
    with pytest.raises(Exists):
        db.add_template(TemplateRow("debian", source="x"))
    with pytest.raises(ConfigError, match="Template name 'Deb' contains uppercase"):
        db.add_template(TemplateRow("Deb", source="x"))
    with pytest.raises(ConfigError, match="cannot be stored as JSON"):
        db.add_template(TemplateRow("bad", source="x", metadata={"x": object()}))
    with pytest.raises(ConfigError, match="size"):
        db.add_template(TemplateRow("bad", source="x", size=-1))
    db.add_template(TemplateRow("busybox", source="busybox", created="2026-01-01T00:00:00Z"))
    assert [t.name for t in db.list_templates()] == ["busybox", "debian"]
    db.create_instance(InstanceRow("web1", template="debian"))
    with pytest.raises(BadState, match="Template 'debian' is used by web1"):
        db.delete_template("debian")
    db.delete_instance("web1")
    db.delete_template("debian")
    with pytest.raises(NotFound):
        db.get_template("debian")
    with pytest.raises(NotFound):
        db.delete_template("debian")


def test_operations_lifecycle(db: Database) -> None:
    op = db.create_operation("task", "Creating instance", resources={"instances": ["web1"]},
                             metadata={"progress": 0})
    assert uuid.UUID(op.id).version == 4
    assert (op.status, op.op_class, op.error) == ("pending", "task", "")
    assert op == db.get_operation(op.id)
    running = db.update_operation(op.id, status="running", metadata={"progress": 50})
    assert running.status == "running" and running.metadata == {"progress": 50}
    assert running.updated >= op.updated and running.created == op.created
    assert running == db.get_operation(op.id)
    failed = db.update_operation(op.id, status="failure", error="Template 'x' not found")
    assert failed == db.get_operation(op.id)
    with pytest.raises(BadState, match="already ended \\(failure\\)"):
        db.update_operation(op.id, status="running")
    ws = db.create_operation("websocket", "Executing command")
    assert [o.id for o in db.list_operations()] == [op.id, ws.id]
    assert [o.id for o in db.list_operations("pending")] == [ws.id]
    db.delete_operation(op.id)
    with pytest.raises(NotFound):
        db.get_operation(op.id)
    with pytest.raises(NotFound):
        db.delete_operation(op.id)


def test_operation_checks(db: Database) -> None:
    with pytest.raises(ConfigError, match="Operation class 'job' is not one of: task, websocket"):
        db.create_operation("job", "x")
    with pytest.raises(ConfigError, match="new operation's status"):
        db.create_operation("task", "x", status="success")
    with pytest.raises(ConfigError, match="non-empty"):
        db.create_operation("task", "")
    op = db.create_operation("task", "x")
    with pytest.raises(ConfigError, match="Operation status 'done'"):
        db.update_operation(op.id, status="done")
    with pytest.raises(NotFound):
        db.update_operation("nope", status="running")
    assert db.get_operation(op.id).status == "pending"


def test_unfinished_operations_fail_at_restart(db: Database) -> None:
    a = db.create_operation("task", "a")
    b = db.create_operation("task", "b", status="running")
    c = db.create_operation("task", "c")
    db.update_operation(c.id, status="success")
    assert db.fail_unfinished_operations("jaulad restarted") == [a.id, b.id]
    assert [(o.status, o.error) for o in db.list_operations()] == [
        ("failure", "jaulad restarted"), ("failure", "jaulad restarted"), ("success", "")]


def test_events_append_read_after_and_bounded(db: Database) -> None:
    first = db.add_event("lifecycle", {"action": "instance-created", "name": "web1"})
    assert isinstance(first, EventRow) and first.id == 1
    assert db.events() == [first]
    for n in range(99):
        db.add_event("logging" if n % 2 else "operation", {"n": n})
    kept = db.events()
    assert len(kept) == 50  # events_keep
    assert [e.id for e in kept] == list(range(51, 101))
    assert [e.id for e in db.events(after=98)] == [99, 100]
    assert [e.id for e in db.events(after=90, limit=3)] == [91, 92, 93]
    assert all(e.type == "logging" for e in db.events(type_="logging"))
    assert db.add_event("x").id == 101  # ids never reused after pruning
    with pytest.raises(ConfigError, match="Event type"):
        db.add_event("")
    with pytest.raises(ConfigError, match="payload must be a mapping"):
        db.add_event("x", ["not", "a", "dict"])  # type: ignore[arg-type]
