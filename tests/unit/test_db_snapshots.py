"""Snapshot rows in the state database: added with the instance's config of their moment, listed
oldest first, refused twice or with a bad name, and gone with their instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaula.daemon.db import Database
from jaula.daemon.models import InstanceRow, SnapshotRow
from jaula.errors import ConfigError, Exists, NotFound


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(tmp_path / "jaula.db")
    d.create_instance(InstanceRow(name="web1", template="bb", config={"limits.memory": "1GiB"}))
    return d


def test_snapshots_are_kept_with_their_config_and_listed_in_order(db: Database) -> None:
    db.add_snapshot(SnapshotRow(instance="web1", name="s1", size=4096, config={"limits.memory": "1GiB"},
                                created="2026-01-01T00:00:00.000Z"))
    db.add_snapshot(SnapshotRow(instance="web1", name="s0", config={}, profiles=[]))  # created now
    assert [s.name for s in db.list_snapshots("web1")] == ["s1", "s0"]
    s1 = db.get_snapshot("web1", "s1")
    assert (s1.size, s1.config, s1.stateful, s1.profiles) == (4096, {"limits.memory": "1GiB"}, False, [])
    assert db.get_snapshot("web1", "s0").created.endswith("Z")
    db.delete_snapshot("web1", "s1")
    assert [s.name for s in db.list_snapshots("web1")] == ["s0"]


def test_bad_names_duplicates_and_missing_ones_are_refused(db: Database) -> None:
    db.add_snapshot(SnapshotRow(instance="web1", name="s1"))
    with pytest.raises(Exists, match="already has a snapshot 's1'"):
        db.add_snapshot(SnapshotRow(instance="web1", name="s1"))
    with pytest.raises(ConfigError, match="Snapshot name"):
        db.add_snapshot(SnapshotRow(instance="web1", name="Bad/Name"))
    with pytest.raises(NotFound, match="Instance 'nope' not found"):
        db.add_snapshot(SnapshotRow(instance="nope", name="s2"))
    with pytest.raises(NotFound, match="has no snapshot 'zz'"):
        db.get_snapshot("web1", "zz")
    with pytest.raises(NotFound, match="nothing deleted"):
        db.delete_snapshot("web1", "zz")


def test_snapshot_rows_go_with_their_instance(db: Database) -> None:
    db.add_snapshot(SnapshotRow(instance="web1", name="s1"))
    db.delete_instance("web1")
    db.create_instance(InstanceRow(name="web1", template="bb"))
    assert db.list_snapshots("web1") == []
    assert db.integrity_check() == []
