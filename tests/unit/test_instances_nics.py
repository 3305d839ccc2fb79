"""instances/nics.py: NICs plugged from the daemon's plans, recorded in the bundle, unplugged from
the record (a failed plug undoes the ones before it), reconciled live; with a recording host side."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from jaula.instances import nics
from jaula.network.plan import NetworkPlan, NicPlan
from tests.unit.network_fakes import RecordingPlumbing

NET = NetworkPlan(name="lab", bridge="jb1", ipv4="10.5.5.1/24")


def _nic(name: str, **kw: object) -> NicPlan:
    return NicPlan(instance="web1", name=name, type="bridged", host_name=f"jv{name}", parent="jb1",
                   mac="02:00:00:00:00:01", network="lab", ipv4=("10.5.5.2/24",), **kw)


def _network(*names: str) -> dict:
    return {"table": "jaula_t1", "networks": [NET.as_dict()], "nics": [_nic(n).as_dict() for n in names]}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> RecordingPlumbing:
    plumbing = RecordingPlumbing()
    monkeypatch.setattr(nics, "_plumbing", lambda table: plumbing)
    return plumbing


def test_plugged_recorded_and_unplugged_from_the_record(tmp_path: Path, fake: RecordingPlumbing) -> None:
    with ExitStack() as undo:
        nics.plug_all(str(tmp_path), _network("eth0", "eth1"), 42, undo)
        undo.pop_all()
    assert fake.verbs() == ["plug", "plug"] and (tmp_path / nics.RECORD).exists()
    nics.unplug_all(str(tmp_path))
    assert [(v, n.name) for v, n in fake.calls[2:]] == [("unplug", "eth1"), ("unplug", "eth0")]
    assert not (tmp_path / nics.RECORD).exists()
    nics.unplug_all(str(tmp_path))                        # nothing recorded: nothing to do
    assert len(fake.calls) == 4


def test_policed_before_the_fork_then_plugged(tmp_path: Path, fake: RecordingPlumbing) -> None:
    # the start's order: every NIC's firewall rules (recorded first), then, in the hook, the links
    with pytest.raises(OSError), ExitStack() as undo:
        nics.police_all(str(tmp_path), _network("eth0", "eth1"), undo)
        assert (tmp_path / nics.RECORD).exists()      # recorded before anything is made
        nics.plug_all(str(tmp_path), _network("eth0", "eth1"), 42, undo, policed=True)
        raise OSError("the start failed after the plug")
    assert [(v, n.name) for v, n in fake.calls] == [
        ("police", "eth0"), ("police", "eth1"), ("plug policed", "eth0"), ("plug policed", "eth1"),
        ("unplug", "eth1"), ("unplug", "eth0"), ("unpolice", "eth1"), ("unpolice", "eth0")]
    assert not (tmp_path / nics.RECORD).exists()      # and the record forgotten


def test_a_failed_plug_undoes_the_ones_before(tmp_path: Path, fake: RecordingPlumbing) -> None:
    calls = 0

    def plug(net, nic, pid, undo, policed=False):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("no")
        fake._rec("plug", nic)
        undo.callback(fake.unplug, nic)
    fake.plug = plug  # type: ignore[method-assign]
    with pytest.raises(OSError), ExitStack() as undo:
        nics.plug_all(str(tmp_path), _network("eth0", "eth1"), 42, undo)
    assert [(v, n.name) for v, n in fake.calls] == [("plug", "eth0"), ("unplug", "eth0")]
    assert not (tmp_path / nics.RECORD).exists()


def test_live_changes_add_remove_and_rates(tmp_path: Path, fake: RecordingPlumbing) -> None:
    with ExitStack() as undo:
        nics.plug_all(str(tmp_path), _network("eth0"), 42, undo)
        undo.pop_all()
    nics.update(str(tmp_path), _network("eth0", "eth1"), {"nic.eth0.network": "lab", "nic.eth1.network": "lab"}, 42)
    assert [(v, n.name) for v, n in fake.calls[1:]] == [("plug", "eth1")]
    nics.update(str(tmp_path), _network("eth0", "eth1"), {"nic.eth0.limits.egress": "10Mbit"}, 42)
    verb, nic = fake.calls[-1]
    assert verb == "set_rate" and nic.name == "eth0" and nic.egress_kbit == 10000
    nics.update(str(tmp_path), _network("eth1"), {}, 42)
    assert [(v, n.name) for v, n in fake.calls[-1:]] == [("unplug", "eth0")]
    nics.unplug_all(str(tmp_path))
    assert [(v, n.name) for v, n in fake.calls[-1:]] == [("unplug", "eth1")]


def test_resolv_conf_written_in_the_tree_replacing_a_symlink(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "resolv.conf").symlink_to("/etc/shadow")        # never followed to the host's file
    nics.write_etc(str(tmp_path), {**_network("eth0"), "resolv_conf": "nameserver 10.5.5.1\n",
                                   "hosts": "10.5.5.2\tweb1\n"}, None)
    assert not (etc / "resolv.conf").is_symlink() and (etc / "resolv.conf").read_text() == "nameserver 10.5.5.1\n"
    assert (etc / "hosts").read_text() == "10.5.5.2\tweb1\n"
