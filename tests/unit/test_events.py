"""The event bus (daemon/events.py) and the live stream `GET /1.0/events` over a real UNIX socket
(the fake backend runs the instances): lifecycle and operation events in order, type filters, a
bad type refused, a slow listener dropped without blocking the publisher, streams ended at stop."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from jaula.daemon.events import EventBus, LogHandler, parse_types
from jaula.errors import ConfigError


def test_types_are_parsed_and_unknown_ones_refused() -> None:
    assert parse_types(None) == {"lifecycle", "operation", "logging"}
    assert parse_types("lifecycle, operation") == {"lifecycle", "operation"}
    with pytest.raises(ConfigError) as err:
        parse_types("lifecycle,exec,nope")
    assert "'exec', 'nope'" in str(err.value) and "lifecycle, operation, logging" in str(err.value)


def test_listeners_get_only_their_types_in_order() -> None:
    bus = EventBus()
    life, every = bus.subscribe("lifecycle"), bus.subscribe()
    bus.publish("operation", {"id": "1"})
    bus.lifecycle("instance-started", {"name": "web1"})
    bus.lifecycle("instance-stopped", {"name": "web1"})
    got = [life.get(1), life.get(1)]
    assert [e["metadata"]["action"] for e in got] == ["instance-started", "instance-stopped"]
    assert got[0]["metadata"]["source"] == "/1.0/instances/web1"
    assert [every.get(1)["type"] for _ in range(3)] == ["operation", "lifecycle", "lifecycle"]
    assert life.get(0.05) is None  # nothing more


def test_wants_says_whether_a_listener_takes_a_type() -> None:
    bus = EventBus()
    assert not bus.wants("operation")
    life = bus.subscribe("lifecycle")
    assert bus.wants("lifecycle") and not bus.wants("operation")
    every = bus.subscribe()
    assert bus.wants("operation")
    bus.unsubscribe(every)
    bus.unsubscribe(life)
    assert not bus.wants("lifecycle")


def test_a_slow_listener_is_dropped_not_waited_for() -> None:
    bus = EventBus(queue_size=4)
    slow, fast = bus.subscribe("operation"), bus.subscribe("operation")
    for i in range(4):
        bus.publish("operation", {"n": i})
        assert fast.get(1)["metadata"]["n"] == i
    bus.publish("operation", {"n": 4})  # slow holds 4 already: dropped, publish returns at once
    assert bus.listeners() == 1 and slow.closed and not fast.closed
    assert [slow.get(1)["metadata"]["n"] for _ in range(4)] == [0, 1, 2, 3]
    notice = slow.get(1)
    assert notice["type"] == "logging" and "fell 4 events behind" in notice["metadata"]["message"]
    assert slow.get(1) is None  # then the end


def test_publishers_in_threads_wake_an_async_listener() -> None:
    bus = EventBus()

    async def main() -> list[int]:
        listener = bus.subscribe("operation", loop=asyncio.get_running_loop())
        threads = [threading.Thread(target=bus.publish, args=("operation", {"n": i})) for i in range(20)]
        for t in threads:
            t.start()
        got = []
        while len(got) < 20:
            done, event = await listener.next(5)
            assert done and event is not None
            got.append(event["metadata"]["n"])
        bus.close()
        assert await listener.next(5) == (True, None)
        return got

    assert sorted(asyncio.run(main())) == list(range(20))


def test_log_records_become_logging_events() -> None:
    import logging

    bus = EventBus()
    handler = LogHandler(bus)
    log = logging.getLogger("jaula.test-events")
    log.addHandler(handler)
    try:
        listener = bus.subscribe("logging")
        log.warning("disk %s almost full", "/var")
        event = listener.get(1)
        assert event["metadata"] == {"level": "warning", "message": "disk /var almost full",
                                     "context": {"logger": "jaula.test-events"}}
    finally:
        log.removeHandler(handler)


def _create(api: SimpleNamespace, name: str) -> None:
    api.client.create("bb", name)


def test_the_stream_pushes_lifecycle_and_operation_events_in_order(api) -> None:
    _create(api, "web1")
    with api.client.open_events("lifecycle,operation") as events:
        api.client.start("web1")
        api.client.stop("web1")
        api.client.delete("web1")
        got = []
        for e in events:
            got.append(e)
            if e["type"] == "operation" and e["metadata"]["description"].startswith("Deleting") \
                    and e["metadata"]["status"] == "success":
                break
    life = [e["metadata"]["action"] for e in got if e["type"] == "lifecycle"]
    assert life == ["instance-started", "instance-stopped", "instance-deleted"]
    ops = [(e["metadata"]["description"], e["metadata"]["status"]) for e in got if e["type"] == "operation"]
    assert ops[:3] == [("Starting instance web1", "pending"), ("Starting instance web1", "running"),
                       ("Starting instance web1", "success")]
    assert ("Deleting instance web1", "success") in ops
    # the lifecycle events are also stored, with the ids the stream gave
    stored = api.client.events(type_="instance-stopped")
    assert [e["id"] for e in stored] == [e["metadata"]["id"] for e in got
                                         if e["type"] == "lifecycle" and e["metadata"]["action"] == "instance-stopped"]


def test_a_failed_operation_is_pushed_with_its_error(api) -> None:
    from jaula.errors import BadState

    _create(api, "web1")
    api.backend.fail["start"] = BadState("no room")
    with api.client.open_events("operation") as events:
        with pytest.raises(BadState):
            api.client.start("web1")
        statuses = []
        for e in events:
            statuses.append(e["metadata"]["status"])
            if e["metadata"]["status"] == "failure":
                assert e["metadata"]["err"] == "no room"
                break
    assert statuses == ["pending", "running", "failure"]


def test_a_bad_type_is_refused_before_streaming(api) -> None:
    resp = api.client._http.get("/1.0/events", params={"type": "lifecycle,bogus"})
    assert resp.status_code == 400 and "'bogus'" in resp.json()["error"]


def test_stopping_the_server_ends_open_streams(api) -> None:
    bus = api.app.state.events
    with api.client.open_events() as events:
        assert bus.listeners() == 1
        bus.close()
        assert list(events) == []  # ended, not hanging
    assert bus.listeners() == 0


def test_a_listener_that_never_reads_is_dropped_and_jaulad_goes_on(api) -> None:
    """Over a real socket: the client sends its request and reads nothing; the server's writes
    fill the socket, then the listener's queue: it is dropped, publishing never waits."""
    import socket as socketlib
    import time

    bus = api.app.state.events
    bus.queue_size = 16
    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 4096)
    sock.connect(api.socket)
    try:
        sock.sendall(b"GET /1.0/events?type=operation HTTP/1.1\r\nHost: jaulad\r\n\r\n")
        deadline = time.monotonic() + 10
        while bus.listeners() == 0:
            assert time.monotonic() < deadline, "the listener never subscribed"
            time.sleep(0.01)
        big = {"blob": "x" * 10_000}
        start = time.monotonic()
        while bus.listeners() and time.monotonic() - start < 30:
            for _ in range(50):
                bus.publish("operation", big)  # returns at once, whatever the listener does
            time.sleep(0.01)
        assert bus.listeners() == 0, "a listener that never reads was not dropped"
        api.client.create("bb", "web1")  # jaulad goes on
    finally:
        sock.close()


def test_a_client_that_goes_away_is_unsubscribed(api) -> None:
    import time

    bus = api.app.state.events
    with api.client.open_events("lifecycle"):
        assert bus.listeners() == 1
    deadline = time.monotonic() + 10
    while bus.listeners():  # noticed at the next write (an event or the keep-alive) or the disconnect
        assert time.monotonic() < deadline, "the listener outlived its client"
        bus.lifecycle("instance-updated", {"name": "x"})
        time.sleep(0.05)


def test_a_log_line_under_the_database_lock_does_not_deadlock_a_lifecycle_event(tmp_path) -> None:
    """Thread A logs while in a database transaction; thread B stores a lifecycle event meanwhile
    (it waits for the database). A's logging event must not wait behind B."""
    import logging
    import time

    from jaula.daemon.db import Database

    db = Database(tmp_path / "jaula.db")
    bus = EventBus(db)
    handler = LogHandler(bus)
    log = logging.getLogger("jaula.test-deadlock")
    log.addHandler(handler)
    listener = bus.subscribe()
    in_transaction = threading.Event()
    threads: list[threading.Thread] = []
    try:
        def a() -> None:
            with db.transaction():
                in_transaction.set()
                time.sleep(0.2)  # room for B to block on the database inside lifecycle()
                log.warning("inside a transaction")

        def b() -> None:
            in_transaction.wait(5)
            bus.lifecycle("instance-started", {"name": "x"})
        threads = [threading.Thread(target=a, daemon=True), threading.Thread(target=b, daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads), "deadlock: the log line waited behind the lifecycle event"
        got = [listener.get(1) for _ in range(2)]
        assert [e["type"] for e in got] == ["logging", "lifecycle"]
    finally:
        log.removeHandler(handler)
        if not any(t.is_alive() for t in threads):  # a deadlocked thread holds the database
            db.close()


def test_a_cancelled_operation_is_pushed(api) -> None:
    _create(api, "web1")
    gate = api.backend.gate["start"] = threading.Event()
    try:
        with api.client.open_events("operation") as events:
            first = api.client.start("web1", wait=False)  # held in the backend
            second = api.client.restart("web1", wait=False)  # queued behind it: pending
            api.client.cancel_operation(second["id"])
            seen = []
            for e in events:
                seen.append((e["metadata"]["id"], e["metadata"]["status"]))
                if (second["id"], "cancelled") in seen:
                    break
        assert [s for i, s in seen if i == second["id"]] == ["pending", "cancelled"]
    finally:
        gate.set()
    assert api.client.wait_operation(first["id"])["status"] == "success"


def test_quiet_streams_get_empty_keepalive_lines(api, monkeypatch: pytest.MonkeyPatch) -> None:
    from jaula.daemon import events_api

    monkeypatch.setattr(events_api, "KEEPALIVE_S", 0.05)
    with api.client._http.stream("GET", "/1.0/events", params={"type": "lifecycle"}) as resp:
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = resp.iter_lines()
        assert [next(lines), next(lines)] == ["", ""]  # nothing happened: keep-alives only
