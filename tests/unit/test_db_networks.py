"""Migration 3: networks, address allocations (unique per network, gone with the instance, in the
caller's transaction) and port forwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaula.daemon.db import Database
from jaula.daemon.models import InstanceRow
from jaula.daemon.network_tables import AddressRow, ForwardRow, NetworkRow
from jaula.errors import BadState, Exists, NotFound


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(tmp_path / "jaula.db")
    d.create_network(NetworkRow(name="n1", config={"ipv4.address": "10.5.5.1/24", "bridge": "jb1"}))
    for name in ("a", "b"):
        d.create_instance(InstanceRow(name=name, template="busybox"))
    return d


def test_addresses_unique_per_network_and_freed_with_the_instance(db: Database) -> None:
    db.set_addresses("a", [AddressRow("n1", "a", "eth0", 4, "10.5.5.2")])
    with pytest.raises(Exists, match="10.5.5.2 of network 'n1' is a's"):
        db.set_addresses("b", [AddressRow("n1", "b", "eth0", 4, "10.5.5.2")])
    assert [a.instance for a in db.addresses(network="n1")] == ["a"]
    with pytest.raises(BadState, match="used by a"):
        db.delete_network("n1")
    db.delete_instance("a")
    assert db.addresses() == []
    db.delete_network("n1")
    with pytest.raises(NotFound):
        db.get_network("n1")


def test_allocation_rolls_back_with_the_instance_row(db: Database) -> None:
    with pytest.raises(Exists), db.transaction():
        db.create_instance(InstanceRow(name="c", template="busybox"))
        db.set_addresses("c", [AddressRow("n1", "c", "eth0", 4, "10.5.5.9")])
        db.set_addresses("b", [AddressRow("n1", "b", "eth0", 4, "10.5.5.9")])   # taken: all goes
    assert "c" not in [i.name for i in db.list_instances()] and db.addresses() == []


def test_networks_refuse_a_taken_name_or_bridge(db: Database) -> None:
    with pytest.raises(Exists, match="already exists"):
        db.create_network(NetworkRow(name="n1"))
    with pytest.raises(Exists, match="bridge 'jb1'"):
        db.create_network(NetworkRow(name="n2", config={"bridge": "jb1"}))
    assert db.update_network("n1", description="lab").description == "lab"


def test_forwards_clash_on_the_same_host_port(db: Database) -> None:
    f = db.add_forward(ForwardRow("n1", "a", "eth0", "tcp", 8080, 80))
    assert f.id > 0 and db.forwards(instance="a") == [f]
    with pytest.raises(Exists, match="already forwarded to a"):
        db.add_forward(ForwardRow("n1", "b", "eth0", "tcp", 8080, 80, host_address="127.0.0.1"))
    db.add_forward(ForwardRow("n1", "b", "eth0", "udp", 8080, 53))             # another protocol
    db.delete_instance("a")
    assert [x.instance for x in db.forwards()] == ["b"]
