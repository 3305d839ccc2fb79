"""Progress of long storage work: a three-argument callback and a terminal renderer for it.

A builder calls `progress(stage, done, total)` as often as it likes (once per archive member is
fine): `stage` names the step ("extract", "layer 2/3", "debootstrap: retrieving"), `done` and
`total` count its units (bytes or items; `total` is None when unknown). Renderers throttle.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Progress = Callable[[str, int, "int | None"], None]


def no_progress(stage: str, done: int, total: int | None) -> None:
    """The default callback: nothing is shown."""


def human(n: int) -> str:
    """1234567 -> '1.2M': compact, unit-less (the stage says what is counted)."""
    for suffix, scale in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)


class TerminalProgress:
    """Render progress on a terminal: one line rewritten with \\r on a tty, plain lines otherwise.

    On a tty the line is redrawn at most `rate` times a second; elsewhere (logs, CI) a line is
    written when a stage starts, at each 25% step of a stage with a known total, and when it ends.
    Call `close()` (or use it as a context manager) to end the last line.
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, rate: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 1.0 / rate
        self._stage: str | None = None
        self._last_draw = 0.0
        self._last_quarter = -1
        self._width = 0
        self._pending: tuple[int, int | None] | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self._stage:
            self._finish()
            self._stage = stage
            self._last_quarter = -1
            self._draw(done, total, force=True)
            return
        self._draw(done, total, force=total is not None and done >= total)

    def _text(self, done: int, total: int | None) -> str:
        if total:
            pct = min(100, done * 100 // total)
            return f"{self._stage}: {pct:3d}% ({human(done)}/{human(total)})"
        return f"{self._stage}: {human(done)}" if done else f"{self._stage}..."

    def _draw(self, done: int, total: int | None, force: bool) -> None:
        if self.tty:
            now = time.monotonic()
            if not force and now - self._last_draw < self.interval:
                self._pending = (done, total)
                return
            self._last_draw = now
            self._pending = None
            text = self._text(done, total)
            pad = " " * max(0, self._width - len(text))
            self.stream.write(f"\r{text}{pad}")
            self._width = len(text)
            self.stream.flush()
            return
        quarter = min(4, done * 4 // total) if total else 0
        if force or (total and quarter > self._last_quarter):
            if quarter == self._last_quarter and not force:
                return
            self._last_quarter = quarter
            self.stream.write(self._text(done, total) + "\n")
            self.stream.flush()
        else:
            self._pending = (done, total)

    def _finish(self) -> None:
        if self._stage is None:
            return
        if self._pending is not None:
            done, total = self._pending
            self._pending = None
            if self.tty:
                self._draw(done, total, force=True)
            elif not total or done * 4 // total > self._last_quarter:
                self.stream.write(self._text(done, total) + "\n")
        if self.tty:
            self.stream.write("\n")
            self._width = 0
        self.stream.flush()
        self._stage = None

    def close(self) -> None:
        self._finish()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
