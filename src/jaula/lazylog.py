"""Logging without importing `logging` (about 12 ms on the runtime's start).

Messages go to `logging` when something (the daemon, pytest) has imported it, and to `sink`
when one is set (jaula-runtime points it at its --log writer).
"""

from __future__ import annotations

import sys

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
sink = None  # callable(level: int, name: str, text: str) | None


class Logger:
    def __init__(self, name: str):
        self.name = name

    def log(self, level: int, msg: str, *args: object) -> None:
        if sink is not None:
            sink(level, self.name, msg % args if args else msg)
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.getLogger(self.name).log(level, msg, *args)

    def debug(self, msg: str, *args: object) -> None:
        self.log(DEBUG, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(INFO, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(ERROR, msg, *args)


def getLogger(name: str) -> Logger:  # noqa: N802 - the name logging uses
    return Logger(name)
