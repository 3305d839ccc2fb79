"""Non-blocking file descriptors in the event loop: wait until one is readable or writable,
read what is there, write everything (add_reader/add_writer, no thread per fd)."""

from __future__ import annotations

import asyncio
import errno
import os


def nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


async def _ready(fd: int, write: bool) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def read(fd: int, size: int = 65536) -> bytes:
    """Some bytes, or b"" at the end (EIO from a pty's master whose slave closed is the end too)."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await _ready(fd, write=False)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise


async def write_all(fd: int, data: bytes) -> None:
    """Write all of `data`; BrokenPipeError when the reader went."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, write=True)
            continue
        view = view[n:]
