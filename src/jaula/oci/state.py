"""Container state on disk: `<root>/<id>/state.json`, runc's layout, written atomically."""

from __future__ import annotations

import os
import time

from jaula import fastjson
from jaula.errors import ConfigError, NotFound

DEFAULT_ROOT = "/run/jaula-runtime"
STATE_FILE = "state.json"
FIFO = "exec.fifo"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")
MAX_ID = 1024

CREATING, CREATED, RUNNING, STOPPED, PAUSED = "creating", "created", "running", "stopped", "paused"


def check_id(cid: str) -> None:
    """Refuse ids that could escape the state root or confuse a shell (runc's rule: [\\w+-.]+)."""
    if not cid:
        raise ConfigError("the container id is empty")
    if cid in (".", "..") or len(cid) > MAX_ID or not set(cid) <= _ID_CHARS:
        raise ConfigError(f"invalid container id {cid!r}: use letters, digits and _ + - . (not '.' or '..' alone), at most {MAX_ID} characters")


def now_rfc3339() -> str:
    t = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1_000_000_000)) + f".{t % 1_000_000_000:09d}Z"


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): tells a reused pid from ours."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie is as good as gone
    return int(fields[19])


class Container:
    """What state.json holds: the OCI state plus what later commands need."""

    def __init__(self, root: str, cid: str, data: dict):
        self.root = root
        self.id = cid
        self.data = data
        self.started = False  # create(..., Options(start=True)) started it too

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.id)

    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    @property
    def bundle(self) -> str:
        return self.data["bundle"]

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, FIFO)

    def alive(self) -> bool:
        pid = self.pid
        return pid > 0 and proc_start_time(pid) == self.data.get("pidStart")

    def status(self) -> str:
        if self.data.get("status") == CREATING:
            return CREATING if self.alive() or not self.pid else STOPPED
        if not self.alive():
            return STOPPED
        if os.path.exists(self.fifo):
            return CREATED
        if self.frozen():
            return PAUSED
        return RUNNING

    def frozen(self) -> bool:
        for ctrl, path in (self.data.get("cgroupPaths") or {}).items():
            try:
                if ctrl == "freezer":
                    with open(os.path.join(path, "freezer.state")) as f:
                        return f.read().strip() in ("FROZEN", "FREEZING")
                if ctrl == "unified" and os.path.exists(os.path.join(path, "cgroup.freeze")):
                    with open(os.path.join(path, "cgroup.freeze")) as f:
                        if f.read().strip() == "1":
                            return True
            except OSError:
                pass
        return False

    def oci_state(self) -> dict:
        """The state object of the OCI runtime spec, as `state` prints it."""
        st = self.status()
        d = {
            "ociVersion": self.data.get("ociVersion", "1.2.0"),
            "id": self.id,
            "pid": self.pid if st not in (STOPPED,) else 0,
            "status": st,
            "bundle": self.bundle,
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
            "owner": self.data.get("owner", ""),
        }
        if self.data.get("annotations"):
            d["annotations"] = self.data["annotations"]
        return d

    def save(self) -> None:
        tmp = os.path.join(self.dir, f".{STATE_FILE}.{os.getpid()}")
        data = fastjson.dumps(self.data).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # as open(): less umask
        try:
            while data:  # raw fd writes: a text file object costs more than the write (twice a create)
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.dir, STATE_FILE))


def load(root: str, cid: str) -> Container:
    check_id(cid)
    path = os.path.join(root, cid, STATE_FILE)
    try:
        with open(path, "rb") as f:
            data = fastjson.loads(f.read())
    except FileNotFoundError:
        raise NotFound(f"container {cid!r} does not exist (no {path!r})") from None
    return Container(root, cid, data)  # type: ignore[arg-type]


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.exists(os.path.join(root, n, STATE_FILE)))
