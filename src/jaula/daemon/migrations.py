"""The database schema as an ordered list of migrations, applied at open, one transaction each.

A migration is never edited once released: a change to the schema is a new migration at the end,
so every database, however old, reaches the same schema by the same steps. The applied versions
are rows of `schema_version`; a database newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import datetime
import sqlite3

from jaula.errors import JaulaError
from jaula.record import Record


class SchemaError(JaulaError):
    """The database's schema cannot be used by this jaula (newer, or a migration failed)."""


class Migration(Record, frozen=True):
    version: int
    description: str
    statements: tuple[str, ...]


# Status and class values are also checked in models.py, with messages; the CHECKs here keep a
# stray write from any other path (sqlite3 shell, an older jaula) from storing nonsense.
_V1 = (
    """CREATE TABLE instances (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        kind        TEXT NOT NULL CHECK (kind IN ('container', 'vm')),
        mode        TEXT NOT NULL CHECK (mode IN ('system', 'app')),
        template    TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        created     TEXT NOT NULL,
        status      TEXT NOT NULL DEFAULT 'stopped'
                    CHECK (status IN ('stopped', 'running', 'frozen', 'error')),
        autostart   INTEGER NOT NULL DEFAULT 0 CHECK (autostart IN (0, 1)),
        idmap_base  INTEGER UNIQUE CHECK (idmap_base IS NULL OR idmap_base >= 0),
        idmap_size  INTEGER NOT NULL DEFAULT 0 CHECK (idmap_size >= 0),
        pid         INTEGER,
        pid_start   INTEGER
    )""",
    # Two instances never share host ids, whatever path wrote the row: the allocator picks free
    # ranges, and these triggers refuse an overlapping one from anywhere else.
    """CREATE TRIGGER instances_idmap_insert BEFORE INSERT ON instances
       WHEN NEW.idmap_base IS NOT NULL AND EXISTS (
           SELECT 1 FROM instances WHERE idmap_base IS NOT NULL
           AND idmap_base < NEW.idmap_base + NEW.idmap_size
           AND NEW.idmap_base < idmap_base + idmap_size)
       BEGIN SELECT RAISE(ABORT, 'idmap range overlaps another instance'); END""",
    """CREATE TRIGGER instances_idmap_update BEFORE UPDATE OF idmap_base, idmap_size ON instances
       WHEN NEW.idmap_base IS NOT NULL AND EXISTS (
           SELECT 1 FROM instances WHERE idmap_base IS NOT NULL AND id != NEW.id
           AND idmap_base < NEW.idmap_base + NEW.idmap_size
           AND NEW.idmap_base < idmap_base + idmap_size)
       BEGIN SELECT RAISE(ABORT, 'idmap range overlaps another instance'); END""",
    """CREATE TABLE instance_config (
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        PRIMARY KEY (instance_id, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE profiles (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE profile_config (
        profile_id  INTEGER NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
        key         TEXT NOT NULL,
        value       TEXT NOT NULL,
        PRIMARY KEY (profile_id, key)
    ) WITHOUT ROWID""",
    # RESTRICT: a profile in use cannot vanish under its instances (db.py says which use it).
    """CREATE TABLE instance_profiles (
        instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        profile_id  INTEGER NOT NULL REFERENCES profiles(id) ON DELETE RESTRICT,
        position    INTEGER NOT NULL,
        PRIMARY KEY (instance_id, profile_id),
        UNIQUE (instance_id, position)
    ) WITHOUT ROWID""",
    "CREATE INDEX instance_profiles_profile ON instance_profiles(profile_id)",
    """CREATE TABLE templates (
        name        TEXT PRIMARY KEY,
        source      TEXT NOT NULL,
        created     TEXT NOT NULL,
        size        INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
        metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
    )""",
    """CREATE TABLE operations (
        id          TEXT PRIMARY KEY,
        class       TEXT NOT NULL CHECK (class IN ('task', 'websocket')),
        description TEXT NOT NULL,
        status      TEXT NOT NULL
                    CHECK (status IN ('pending', 'running', 'success', 'failure', 'cancelled')),
        created     TEXT NOT NULL,
        updated     TEXT NOT NULL,
        error       TEXT NOT NULL DEFAULT '',
        resources   TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(resources)),
        metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
    )""",
    "CREATE INDEX operations_status ON operations(status)",
    # AUTOINCREMENT: ids are never reused after retention drops old rows, so a client resuming
    # the event stream "after id N" never mistakes a new event for one it has seen.
    """CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        time        TEXT NOT NULL,
        type        TEXT NOT NULL,
        payload     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload))
    )""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "instances, config, profiles, templates, operations, events", _V1),
    Migration(2, "instance snapshots", (
        # A snapshot keeps the instance's own config and profiles of its moment (JSON), restored with it.
        """CREATE TABLE instance_snapshots (
            instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
            name        TEXT NOT NULL,
            created     TEXT NOT NULL,
            size        INTEGER CHECK (size IS NULL OR size >= 0),
            stateful    INTEGER NOT NULL DEFAULT 0 CHECK (stateful IN (0, 1)),
            config      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config)),
            profiles    TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(profiles)),
            PRIMARY KEY (instance_id, name)
        ) WITHOUT ROWID""",)),
    # networks (jaula.daemon.network_tables): an address belongs to one NIC of one instance and is
    # unique in its network; it goes with its instance (CASCADE), and keeps its network from
    # being deleted (RESTRICT). A forward goes with its instance or its network.
    Migration(3, "networks, their addresses and port forwards", (
        """CREATE TABLE networks (
            id          INTEGER PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            created     TEXT NOT NULL
        )""",
        """CREATE TABLE network_config (
            network_id  INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
            key         TEXT NOT NULL,
            value       TEXT NOT NULL,
            PRIMARY KEY (network_id, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE network_addresses (
            network_id  INTEGER NOT NULL REFERENCES networks(id) ON DELETE RESTRICT,
            instance_id INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
            nic         TEXT NOT NULL,
            family      INTEGER NOT NULL CHECK (family IN (4, 6)),
            address     TEXT NOT NULL,
            PRIMARY KEY (instance_id, nic, family),
            UNIQUE (network_id, address)
        ) WITHOUT ROWID""",
        "CREATE INDEX network_addresses_network ON network_addresses(network_id)",
        """CREATE TABLE network_forwards (
            id           INTEGER PRIMARY KEY,
            network_id   INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
            instance_id  INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
            nic          TEXT NOT NULL,
            proto        TEXT NOT NULL CHECK (proto IN ('tcp', 'udp')),
            host_address TEXT NOT NULL DEFAULT '',
            host_port    INTEGER NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
            port         INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
            UNIQUE (proto, host_address, host_port)
        )""",
    )),
    # the control center's sessions (jaula.web.sessions), kept over a restart of jaulad. Only a
    # hash of the cookie's id is stored: a copy of the database opens no session. Times are
    # wall-clock seconds (time.time), so expiry holds across restarts.
    Migration(4, "control center sessions", (
        """CREATE TABLE web_sessions (
            id_hash     TEXT PRIMARY KEY CHECK (length(id_hash) = 64),
            csrf        TEXT NOT NULL,
            login       TEXT NOT NULL CHECK (login IN ('token', 'password')),
            created     REAL NOT NULL,
            used        REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX web_sessions_used ON web_sessions(used)",
    )),
    # an app instance's own command (a JSON list of strings; [] runs the template's command)
    Migration(5, "app instances' own command", (
        "ALTER TABLE instances ADD COLUMN command TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(command))",
    )),
)


def _ensure_version_table(conn: sqlite3.Connection) -> None:
    # IF NOT EXISTS, under the write lock taken first (IMMEDIATE: a deferred transaction that
    # finds it must write returns SQLITE_BUSY at once, without waiting), makes this safe for
    # several processes opening a new database at once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                version     INTEGER PRIMARY KEY,
                description TEXT NOT NULL,
                applied     TEXT NOT NULL
            )"""
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] or 0


def apply(conn: sqlite3.Connection, where: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the database to the last of `migrations`; return its version.

    `conn` is in autocommit mode (isolation_level=None). Each migration runs in its own
    BEGIN IMMEDIATE transaction with its version row, so a crash or an error leaves the
    database at the previous version, never between two. The version is read again under the
    write lock: another process may have migrated meanwhile, and then nothing is done twice.
    """
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise SchemaError(f"Migrations must have increasing versions from 1, got {versions}")
    known = versions[-1] if versions else 0
    _ensure_version_table(conn)
    for migration in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _check(conn, where, known)
            if version < migration.version:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?)",
                    (migration.version, migration.description, _now()),
                )
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise SchemaError(
                    f"Database {where!r}: migration {migration.version} ({migration.description}) "
                    f"failed: {exc}; the database stays at version {current_version(conn)}"
                ) from exc
            raise
        conn.execute("COMMIT")
    return _check(conn, where, known)


def _check(conn: sqlite3.Connection, where: str, known: int) -> int:
    version = current_version(conn)
    if version > known:
        raise SchemaError(
            f"Database {where!r} has schema version {version}, newer than this jaula knows "
            f"({known}): run the jaula that wrote it, or upgrade this one"
        )
    return version


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
