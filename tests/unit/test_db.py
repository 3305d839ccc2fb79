"""The state database itself: settings at open, migrations, transactions."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from jaula.daemon import migrations
from jaula.daemon.db import Database, SchemaError
from jaula.daemon.migrations import MIGRATIONS, Migration
from jaula.daemon.models import InstanceRow
from jaula.errors import ConfigError, Locked

LAST = MIGRATIONS[-1].version  # the schema this jaula knows


@pytest.fixture
def db(tmp_path: Path):
    with Database(tmp_path / "jaula.db") as d:
        yield d


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_open_sets_wal_foreign_keys_busy_timeout_and_synchronous(db: Database) -> None:
    conn = db._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert stat.S_IMODE(os.stat(db.path).st_mode) == 0o600


def test_migrations_from_empty(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "jaula.db"
    with Database(path) as db:
        assert db.schema_version == MIGRATIONS[-1].version
        assert db.integrity_check() == []
    assert {"schema_version", "instances", "instance_config", "profiles", "profile_config",
            "instance_profiles", "templates", "operations", "events"} <= tables(path)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version, description FROM schema_version ORDER BY version").fetchall()
    assert rows == [(m.version, m.description) for m in MIGRATIONS]


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "jaula.db"
    with Database(path) as db:
        db.create_instance(InstanceRow("web1", config={"limits.memory": "1GiB"}))
    for _ in range(3):
        with Database(path) as db:
            assert db.get_instance("web1").config == {"limits.memory": "1GiB"}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


def test_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "jaula.db"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'from the future', 'x')")
    with pytest.raises(SchemaError, match=rf"schema version 999, newer than this jaula knows \({LAST}\)"):
        Database(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 999


def test_later_migrations_apply_in_order_on_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "jaula.db"
    Database(path).close()
    more = MIGRATIONS + (
        Migration(LAST + 1, "add a", ("CREATE TABLE a (x INTEGER)",)),
        Migration(LAST + 2, "fill a", ("INSERT INTO a VALUES (3)",)),
    )
    with Database(path, migrations=more) as db:
        assert db.schema_version == LAST + 2
        assert [tuple(r) for r in db._conn.execute("SELECT x FROM a")] == [(3,)]
    with Database(path, migrations=more) as db:  # nothing applied twice
        assert db._conn.execute("SELECT count(*) FROM a").fetchone()[0] == 1


def test_a_failing_migration_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    path = tmp_path / "jaula.db"
    broken = MIGRATIONS + (
        Migration(LAST + 1, "half done", ("CREATE TABLE b (x INTEGER)", "INSERT INTO nowhere VALUES (1)")),
    )
    with pytest.raises(SchemaError, match=rf"migration {LAST + 1} \(half done\) failed: .*stays at version {LAST}"):
        Database(path, migrations=broken)
    assert "b" not in tables(path)
    with Database(path) as db:
        assert db.schema_version == LAST


def test_migrations_must_be_ordered(tmp_path: Path) -> None:
    bad = (Migration(2, "two", ()), Migration(1, "one", ()))
    with pytest.raises(SchemaError, match="increasing versions"):
        Database(tmp_path / "jaula.db", migrations=bad)


def test_current_version_of_an_empty_file(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    migrations._ensure_version_table(conn)
    assert migrations.current_version(conn) == 0


def test_rollback_on_exception_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.transaction():
        db.create_instance(InstanceRow("web1", config={"a": "1"}))
        db.add_event("created", {"name": "web1"})
        raise RuntimeError("boom")
    assert db.list_instances() == []
    assert db.events() == []
    assert db._conn.execute("SELECT count(*) FROM instance_config").fetchone()[0] == 0
    assert not db._conn.in_transaction


def test_a_failed_write_inside_a_transaction_rolls_back_the_whole(db: Database) -> None:
    with pytest.raises(ConfigError), db.transaction():
        db.create_instance(InstanceRow("web1"))
        db.create_instance(InstanceRow("Bad Name"))
    assert db.list_instances() == []


def test_nested_transaction_undoes_only_the_inner_block(db: Database) -> None:
    with db.transaction():
        db.create_instance(InstanceRow("outer"))
        with pytest.raises(KeyError), db.transaction():
            db.create_instance(InstanceRow("inner"))
            raise KeyError("x")
        assert [i.name for i in db.list_instances()] == ["outer"]
    assert [i.name for i in db.list_instances()] == ["outer"]


def test_writes_commit_together_at_the_outer_end(db: Database, tmp_path: Path) -> None:
    other = sqlite3.connect(db.path)
    with db.transaction():
        db.create_instance(InstanceRow("web1"))
        db.set_config("web1", {"a": "1"})
        assert other.execute("SELECT count(*) FROM instances").fetchone()[0] == 0  # not yet visible
    assert other.execute("SELECT count(*) FROM instances").fetchone()[0] == 1
    other.close()


def test_another_writer_holding_the_lock_gives_locked(tmp_path: Path) -> None:
    path = tmp_path / "jaula.db"
    db = Database(path, busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Locked, match="locked by another process for more than 0.2 s"):
            db.create_instance(InstanceRow("web1"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    db.create_instance(InstanceRow("web1"))  # usable again
    db.close()


def test_threads_share_one_database(db: Database) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                db.create_instance(InstanceRow(f"t{n}-{i}", config={"n": str(n)}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = db.list_instances()
    assert len(rows) == 80
    bases = [r.idmap_base for r in rows]
    assert len(set(bases)) == 80


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="leave no room"):
        Database(tmp_path / "a.db", idmap_base=2**32 - 10)
    with pytest.raises(ConfigError, match="events_keep"):
        Database(tmp_path / "b.db", events_keep=0)


def test_many_connections_opening_a_new_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "jaula.db"
    barrier = threading.Barrier(6)
    versions: list[int] = []

    def open_it() -> None:
        barrier.wait()
        with Database(path) as db:  # each its own connection, as separate processes would be
            versions.append(db.schema_version)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == [MIGRATIONS[-1].version] * 6
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)
