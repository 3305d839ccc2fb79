"""Marks along an instance's start, for benchmarks: each `mark(name, step)` appends
`<perf_counter_ns> <pid> <name> <step>` to the file named by $JAULA_START_TIMING (nothing at all
when it is unset). perf_counter_ns is CLOCK_MONOTONIC on Linux, so marks of jaulad, its spawner
and a client compare: bench/daemon.py --timing FILE sets it and prints the steps' medians.
"""

from __future__ import annotations

import os
import time

ENV = "JAULA_START_TIMING"
_path = os.environ.get(ENV)


def mark(name: str, step: str) -> None:
    if _path:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{time.perf_counter_ns()} {os.getpid()} {name} {step}\n".encode())
        finally:
            os.close(fd)
