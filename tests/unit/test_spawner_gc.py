"""The spawner's garbage collection: a young collection that falls due during a request waits for
its reply (spawner._collect_due), and still happens then."""

from __future__ import annotations

import gc

from jaula.daemon import spawner


def test_a_collection_due_in_a_request_is_made_after_it() -> None:
    old = gc.get_threshold()
    try:
        gc.collect()
        gc.set_threshold(spawner._GC_IN_REQUEST, *spawner._GC_DUE[1:])   # as the spawner serves
        made = [[] for _ in range(3 * spawner._GC_DUE[0])]               # a request's objects
        assert gc.get_count()[0] >= len(made)                            # none collected meanwhile
        spawner._collect_due()                                           # its reply sent
        assert gc.get_count()[0] < spawner._GC_DUE[0]
        before = gc.get_count()
        spawner._collect_due()                                           # nothing due: nothing done
        assert gc.get_count()[1:] == before[1:]
        del made
    finally:
        gc.set_threshold(*old)
