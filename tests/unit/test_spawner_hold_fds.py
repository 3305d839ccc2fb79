"""The spawner holds the fds it is given (`Spawner.start(..., hold_fds=...)`: jaulad's root lock)
for its life, and so does a spawner restarted after a crash, by fork or by re-exec from a
threaded process: a flock on that file stays held while a spawner lives, after the caller has
closed its own copy (as a `kill -9` of jaulad does), and is free once the spawner is gone."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from pathlib import Path

import pytest

from jaula.daemon.spawner import Spawner, SpawnerDied
from tests.unit.test_spawner_protocol import make_fake


def _held(path: Path) -> bool:
    """Whether another open of `path` is refused its flock (a new open file description)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _fds_on(pid: int, path: Path) -> list[str]:
    out = []
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{n}") == str(path):
                out.append(n)
        except OSError:
            pass
    return out


@pytest.mark.parametrize("threaded", [False, True], ids=["fork", "re-exec"])
def test_a_restarted_spawner_still_holds_the_root_lock(tmp_path: Path, threaded: bool) -> None:
    if threading.active_count() != 1:
        pytest.skip(f"{threading.active_count()} threads in the test process: the spawner needs one")
    lock = tmp_path / ".jaulad.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    sp = Spawner.start(make_fake, {"tag": "t1"}, hold_fds=[fd])
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    try:
        old = sp.pid
        os.kill(old, signal.SIGKILL)  # the spawner crashes
        with pytest.raises(SpawnerDied):
            sp.call("ping")
        if threaded:  # jaulad's case: uvicorn's threads are there, so the restart re-execs
            t.start()
        sp.restart()
        assert sp.pid != old and sp.call("ping") == {"pid": sp.pid}
        assert (sp._proc is not None) is threaded
        held_by = _fds_on(sp.pid, lock)
        assert held_by, "the restarted spawner has no fd on the lock file"
        for n in held_by:  # held, but not passed on to what it execs (the instances' inits)
            flags = int(Path(f"/proc/{sp.pid}/fdinfo/{n}").read_text().split("flags:")[1].split()[0], 8)
            assert flags & os.O_CLOEXEC
        os.close(fd)  # jaulad goes (kill -9): the spawner's copy alone holds the lock
        fd = -1
        assert _held(lock)
    finally:
        stop.set()
        if t.is_alive():
            t.join()
        sp.close()
        if fd >= 0:
            os.close(fd)
    assert not _held(lock)  # the spawner gone, the lock is free
