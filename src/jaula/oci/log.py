"""The runtime's log: runc-compatible lines to --log (text or json), errors also to stderr.

Callers such as podman read the json log to report a runtime's errors. `logging` itself costs
about 12 ms to import, more than half of a container start, so this small writer stands in.
"""

from __future__ import annotations

import os
import sys
import time

from jaula import fastjson

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Log:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False):
        self.path = path
        self.fmt = fmt
        self.level = 10 if debug else 30
        self._fd = -1
        self._root = _root_id() if path else None

    def _write(self, level: str, msg: str) -> None:
        if _LEVELS[level] < self.level:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        if self.fmt == "json":
            line = fastjson.dumps({"level": level, "msg": msg, "time": stamp})
        else:
            line = f'time="{stamp}" level={level} msg="{msg}"'
        if self.path:
            try:
                if self._fd < 0:
                    if _root_id() != self._root:
                        return  # in a container after pivot_root: the host's log is out of reach; never write inside
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                os.write(self._fd, (line + "\n").encode())
            except OSError:
                pass  # a log line must never fail the work it reports on
        elif level != "error":
            sys.stderr.write(line + "\n")

    def debug(self, msg: str) -> None:
        self._write("debug", msg)

    def info(self, msg: str) -> None:
        self._write("info", msg)

    def warning(self, msg: str) -> None:
        self._write("warning", msg)

    def error(self, msg: str) -> None:
        self._write("error", msg)

    def from_library(self, level: int, name: str, text: str) -> None:
        """The sink of jaula.lazylog: what the library (cgroups, seccomp) reports goes to --log."""
        self._write("debug" if level < 20 else "info" if level < 30 else "warning" if level < 40 else "error", text)

    def reopen(self) -> None:
        """Forget the fd (after a fork into a container, which must not keep a host file)."""
        self._fd = -1


def _root_id() -> tuple[int, int]:
    st = os.stat("/")
    return st.st_dev, st.st_ino


NULL = Log()
