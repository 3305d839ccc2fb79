"""Instances in the state database: CRUD, names, config rows, profiles, id ranges."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import pytest

from jaula.daemon.db import DEFAULT_IDMAP_BASE, Database
from jaula.daemon.models import IDMAP_SIZE, InstanceRow, ProfileRow, validate_name
from jaula.errors import BadState, ConfigError, Exists, JaulaError, NotFound


@pytest.fixture
def db(tmp_path: Path):
    with Database(tmp_path / "jaula.db") as d:
        yield d


def count(db: Database, table: str) -> int:
    return db._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_create_get_list(db: Database) -> None:
    db.create_profile(ProfileRow("base"))
    db.create_profile(ProfileRow("small", config={"limits.memory": "512MiB"}))
    made = db.create_instance(InstanceRow(
        "web1", mode="app", template="debian", description="the web", autostart=True,
        config={"limits.cpu": "2", "user.note": "hi"}, profiles=["small", "base"]))
    assert made.created.endswith("Z")
    assert made.idmap_base == DEFAULT_IDMAP_BASE and made.idmap_size == IDMAP_SIZE
    assert made == db.get_instance("web1")
    assert made.config == {"limits.cpu": "2", "user.note": "hi"}
    assert made.profiles == ["small", "base"]  # order kept
    assert made.autostart is True and made.mode == "app" and made.status == "stopped"
    db.create_instance(InstanceRow("db1"))
    assert [i.name for i in db.list_instances()] == ["db1", "web1"]
    assert db.list_instances()[1] == made
    db.update_instance("db1", status="running", pid=100, pid_start=5)
    assert [i.name for i in db.list_instances(status="running")] == ["db1"]
    assert [i.name for i in db.list_instances(autostart=True)] == ["web1"]
    assert [i.name for i in db.list_instances(status="stopped", autostart=False)] == []
    with pytest.raises(ConfigError, match="status 'up'"):
        db.list_instances(status="up")


def test_record_start_writes_running_pid_and_start_time_together(db: Database) -> None:
    db.create_instance(InstanceRow("web1"))
    db.record_start("web1", 4242, 777)
    row = db.get_instance("web1")
    assert (row.status, row.pid, row.pid_start) == ("running", 4242, 777)
    with pytest.raises(NotFound, match="'nope' not found"):
        db.record_start("nope", 1, 1)
    with pytest.raises(ConfigError, match="not a positive integer"):
        db.record_start("web1", -3, 1)
    assert db.get_instance("web1") == row  # nothing changed by the refusals


def test_create_twice_is_exists(db: Database) -> None:
    db.create_instance(InstanceRow("web1"))
    with pytest.raises(Exists, match="Instance 'web1' already exists"):
        db.create_instance(InstanceRow("web1"))
    assert count(db, "instances") == 1


@pytest.mark.parametrize("name, why", [
    ("", "is empty"),
    ("Web1", "uppercase"),
    ("web_1", "contains '_'"),
    ("-web", "starts or ends with '-'"),
    ("a" * 64, "64 characters long"),
    ("../etc", "would be a path"),
    ("we\nb", "control character"),
    ("wéb", "outside ASCII"),
    ("1234", "all digits"),
])
def test_bad_names_are_refused_with_a_reason(db: Database, name: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        db.create_instance(InstanceRow(name))
    with pytest.raises(ConfigError, match=f"Profile name .*{why}"):
        db.create_profile(ProfileRow(name))
    assert count(db, "instances") == 0


def test_good_names() -> None:
    for name in ("a", "web1", "web-1", "1web", "a" * 63):
        assert validate_name(name) == name


def test_bad_fields_are_all_reported(db: Database) -> None:
    with pytest.raises(ConfigError) as info:
        db.create_instance(InstanceRow("web1", kind="jail", mode="both", status="up",
                                       config={"a": 1, " b": "x"}, idmap_size=100))
    problems = " | ".join(info.value.problems)
    for part in ("kind 'jail'", "mode 'both'", "status 'up'", "value 1 is not a string",
                 "key ' b' is not valid", "idmap_size 100"):
        assert part in problems


def test_unknown_profile_is_not_found_and_nothing_written(db: Database) -> None:
    with pytest.raises(NotFound, match="Profile 'nope' not found"):
        db.create_instance(InstanceRow("web1", config={"a": "1"}, profiles=["nope"]))
    assert count(db, "instances") == 0 and count(db, "instance_config") == 0


def test_update_instance(db: Database) -> None:
    db.create_instance(InstanceRow("web1"))
    row = db.update_instance("web1", status="running", pid=4242, pid_start=987654, autostart=True)
    assert (row.status, row.pid, row.pid_start, row.autostart) == ("running", 4242, 987654, True)
    row = db.update_instance("web1", status="frozen")
    assert row.status == "frozen" and row.pid == 4242
    row = db.update_instance("web1", status="stopped", pid=None, pid_start=None)
    assert row.pid is None and row == db.get_instance("web1")
    with pytest.raises(ConfigError, match="status 'gone' is not one of: stopped, running, frozen, error"):
        db.update_instance("web1", status="gone")
    with pytest.raises(ConfigError, match=r"fields \['idmap_base', 'name'\] cannot be updated"):
        db.update_instance("web1", name="x", idmap_base=0)
    with pytest.raises(NotFound):
        db.update_instance("nope", status="running")


def test_rename(db: Database) -> None:
    db.create_instance(InstanceRow("web1", config={"a": "1"}))
    db.create_instance(InstanceRow("web2"))
    with pytest.raises(Exists, match="'web2' already exists"):
        db.rename_instance("web1", "web2")
    with pytest.raises(ConfigError):
        db.rename_instance("web1", "Web3")
    row = db.rename_instance("web1", "web3")
    assert row.config == {"a": "1"} and row.idmap_base == DEFAULT_IDMAP_BASE
    with pytest.raises(NotFound):
        db.get_instance("web1")


def test_config_set_unset_replace(db: Database) -> None:
    db.create_instance(InstanceRow("web1", config={"a": "1", "b": "2"}))
    assert db.set_config("web1", {"b": "3", "c": "4"}, unset=["a"]).config == {"b": "3", "c": "4"}
    assert db.replace_config("web1", {"z": "9"}).config == {"z": "9"}
    with pytest.raises(ConfigError, match="not a string"):
        db.set_config("web1", {"z": 10})  # type: ignore[dict-item]
    assert db.get_instance("web1").config == {"z": "9"}
    with pytest.raises(NotFound):
        db.set_config("nope", {"a": "1"})


def test_delete_cascades_config_profiles_and_id_range(db: Database) -> None:
    db.create_profile(ProfileRow("small"))
    db.create_instance(InstanceRow("web1", config={"a": "1", "b": "2"}, profiles=["small"]))
    db.create_instance(InstanceRow("web2", config={"a": "1"}))
    db.delete_instance("web1")
    assert count(db, "instance_config") == 1
    assert count(db, "instance_profiles") == 0
    assert db.profile_users("small") == []
    db.delete_profile("small")  # no longer in use
    with pytest.raises(NotFound, match="nothing deleted"):
        db.delete_instance("web1")
    assert db.create_instance(InstanceRow("web3")).idmap_base == DEFAULT_IDMAP_BASE  # freed range reused
    assert db.integrity_check() == []


def test_instance_profiles_replace_in_order(db: Database) -> None:
    for name in ("a", "b", "c"):
        db.create_profile(ProfileRow(name))
    db.create_instance(InstanceRow("web1", profiles=["a"]))
    assert db.set_instance_profiles("web1", ["c", "a", "b"]).profiles == ["c", "a", "b"]
    with pytest.raises(ConfigError, match="twice"):
        db.set_instance_profiles("web1", ["a", "a"])
    with pytest.raises(NotFound):
        db.set_instance_profiles("web1", ["c", "zz"])
    assert db.get_instance("web1").profiles == ["c", "a", "b"]
    with pytest.raises(BadState, match="Profile 'a' is used by web1"):
        db.delete_profile("a")


def test_idmap_ranges_never_overlap_over_200_allocations_and_free_on_delete(db: Database) -> None:
    rng = random.Random(7)
    live: set[str] = set()
    for n in range(200):
        size = IDMAP_SIZE * rng.choice((1, 1, 1, 2, 3))
        db.create_instance(InstanceRow(f"i{n}", idmap_size=size))
        live.add(f"i{n}")
        if rng.random() < 0.3:  # delete some as we go, so freed holes are reused
            victim = rng.choice(sorted(live))
            db.delete_instance(victim)
            live.remove(victim)
        ranges = sorted((r.idmap_base, r.idmap_base + r.idmap_size) for r in db.list_instances())
        for (_, end), (start, _) in pairwise(ranges):
            assert end <= start, ranges
        assert all((start - DEFAULT_IDMAP_BASE) % IDMAP_SIZE == 0 for start, _ in ranges)
    # Everything packed from the base up: the lowest free range is always taken.
    for name in list(live):
        db.delete_instance(name)
    assert db.allocate_idmap() == DEFAULT_IDMAP_BASE


def test_lowest_free_range_fills_holes(db: Database) -> None:
    for n in range(4):
        db.create_instance(InstanceRow(f"i{n}"))
    db.delete_instance("i1")
    assert db.allocate_idmap() == DEFAULT_IDMAP_BASE + IDMAP_SIZE
    assert db.allocate_idmap(2 * IDMAP_SIZE) == DEFAULT_IDMAP_BASE + 4 * IDMAP_SIZE  # hole too small
    assert db.create_instance(InstanceRow("i9")).idmap_base == DEFAULT_IDMAP_BASE + IDMAP_SIZE


def test_explicit_overlapping_range_is_refused(db: Database) -> None:
    db.create_instance(InstanceRow("web1"))
    with pytest.raises(Exists, match="overlap another instance's range"):
        db.create_instance(InstanceRow("web2", idmap_base=DEFAULT_IDMAP_BASE + 100))
    assert db.create_instance(InstanceRow("web2", idmap_base=5 * IDMAP_SIZE)).idmap_base == 5 * IDMAP_SIZE
    # the trigger also guards writes that bypass the allocator
    with pytest.raises(Exception, match="overlaps"), db.transaction():
        db._conn.execute("UPDATE instances SET idmap_base = ? WHERE name = 'web2'", (DEFAULT_IDMAP_BASE,))


def test_privileged_instance_has_no_range(db: Database) -> None:
    row = db.create_instance(InstanceRow("priv", idmap_size=0))
    assert row.idmap_base is None
    assert db.create_instance(InstanceRow("web1")).idmap_base == DEFAULT_IDMAP_BASE


def test_configured_base_and_exhaustion(tmp_path: Path) -> None:
    with Database(tmp_path / "j.db", idmap_base=200_000, idmap_limit=200_000 + 2 * IDMAP_SIZE) as db:
        assert db.create_instance(InstanceRow("a")).idmap_base == 200_000
        assert db.create_instance(InstanceRow("b")).idmap_base == 200_000 + IDMAP_SIZE
        with pytest.raises(JaulaError, match="No free range of 65536 ids"):
            db.create_instance(InstanceRow("c"))
        assert [r.name for r in db.list_instances()] == ["a", "b"]
        with pytest.raises(ConfigError, match="multiple of 65536"):
            db.allocate_idmap(1000)
