"""Fine marks inside `create` and the init, for benchmarks (bench/daemon.py --timing): as
jaula.instances.start_timing's, `<perf_counter_ns> <pid> <container id> <step>` appended to the
file named by $JAULA_START_TIMING, nothing at all when it is unset. The file is opened once per
process (the init inherits the runtime's fd: it must write after pivot_root, where the path is
out of reach); it is close-on-exec and not among the fds the init keeps, so it never reaches the
container's process.
"""

from __future__ import annotations

import os

PATH = os.environ.get("JAULA_START_TIMING")
_fd = -1
cid = ""  # the container the marks of rootfs (which knows no id) belong to: set by the init


def mark(name: str, step: str) -> None:
    global _fd
    if not PATH:
        return
    import time

    try:
        if _fd < 0:
            _fd = os.open(PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.write(_fd, f"{time.perf_counter_ns()} {os.getpid()} {name} {step}\n".encode())
    except OSError:
        _fd = -1  # closed by the init's close_fds: no more marks from this process
