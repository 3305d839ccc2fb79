"""Signal names and numbers without `import signal` (whose enums cost milliseconds at start-up)."""

from __future__ import annotations

from jaula.errors import ConfigError

NUMBERS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
    "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
    "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN, SIGRTMAX = 34, 64


def parse(text: str) -> int:
    """'TERM', 'SIGTERM', 'sigterm', '15', 'RTMIN+3' -> a signal number."""
    t = text.strip()
    if t.isdigit():
        n = int(t)
        if 1 <= n <= SIGRTMAX:
            return n
        raise ConfigError(f"signal {text!r} is out of range (1 to {SIGRTMAX})")
    name = t.upper()
    if name.startswith("SIG"):
        name = name[3:]
    if name in NUMBERS:
        return NUMBERS[name]
    for base, start, sign in (("RTMIN", SIGRTMIN, 1), ("RTMAX", SIGRTMAX, -1)):
        if name == base:
            return start
        if name.startswith(base) and name[len(base)] in "+-" and name[len(base) + 1:].isdigit():
            n = start + int(name[len(base):])
            if SIGRTMIN <= n <= SIGRTMAX:
                return n
    raise ConfigError(f"unknown signal {text!r}: give a name such as TERM or SIGKILL, or a number")
