"""Errors and the exit codes people script against.

Codes are stable: never reuse a number for another meaning (as OpenVZ's vzerror.h).
"""

from __future__ import annotations


class ExitCode:
    """Exit codes (plain ints: `enum` costs milliseconds on the runtime's hot path)."""

    OK = 0
    FAILURE = 1          # anything not listed below
    USAGE = 2            # bad command line
    INVALID_CONFIG = 3   # config.json or a setting refused by validation
    NOT_FOUND = 4        # no such container / instance
    EXISTS = 5           # the id or name is taken
    BAD_STATE = 6        # the action does not fit the current state (start of a running container)
    KERNEL = 7           # a kernel feature the request needs is missing
    HOOK = 8             # a hook failed or timed out
    LOCKED = 9           # another jaula process holds the lock


class JaulaError(Exception):
    """Base of every error shown to a user: the message says what was wrong and what to do."""

    exit_code: int = ExitCode.FAILURE


class ConfigError(JaulaError):
    """A config was refused before any change was made; `problems` lists every problem found."""

    exit_code = ExitCode.INVALID_CONFIG

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class NotFound(JaulaError):
    exit_code = ExitCode.NOT_FOUND


class Exists(JaulaError):
    exit_code = ExitCode.EXISTS


class BadState(JaulaError):
    exit_code = ExitCode.BAD_STATE


class KernelMissing(JaulaError):
    exit_code = ExitCode.KERNEL


class HookError(JaulaError):
    exit_code = ExitCode.HOOK


class Locked(JaulaError):
    exit_code = ExitCode.LOCKED


class SyscallError(JaulaError, OSError):
    """A syscall failed: the message names the call, its path or target, and errno."""

    def __init__(self, call: str, errno_: int, detail: str = ""):
        import os

        self.call = call
        self.detail = detail
        msg = f"{call}{' ' + detail if detail else ''}: {os.strerror(errno_)}"
        OSError.__init__(self, errno_, msg)
        self.args = (errno_, msg)

    def __str__(self) -> str:
        return self.args[1]
