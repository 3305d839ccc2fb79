"""cgroup v1 device rules as a state machine, so an update writes only the difference.

Writing "deny a" and then every allow (what a first apply does) leaves a window in which a running
container cannot open even /dev/null. As runc does (libcontainer/cgroups/devices/emulator.go), the
driver reads devices.list, models the kernel's policy (security/device_cgroup.c), and writes only
the rules that turn the current policy into the target one: a rule the target keeps is never
touched, so on a whitelisted cgroup no device the target allows is ever refused in between.
"""

from __future__ import annotations

from jaula.cgroups.resources import DeviceRule

_ORDER = "rwm"
Key = tuple[str, "int | None", "int | None"]     # (type "c" or "b", major, minor); None is "*"


def _perms(s: str) -> str:
    return "".join(c for c in _ORDER if c in s)


def _minus(a: str, b: str) -> str:
    return "".join(c for c in a if c not in b)


def _fmt(key: Key) -> str:
    star = lambda n: "*" if n is None else str(n)  # noqa: E731
    return f"{key[0]} {star(key[1])}:{star(key[2])}"


class Policy:
    """A devices cgroup: its default (allow everything: a blacklist) and the exceptions to it.

    On a whitelist (default deny) the exceptions are what is allowed; on a blacklist they are what is
    denied. devices.list shows a whitelist's exceptions but only "a *:* rwm" for a blacklist, so the
    denies of a blacklist read back are unknown, and a transition from one starts over.
    """

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[Key, str] = {}    # insertion order is the kernel's list order

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        return self.default_allow == other.default_allow and self.exceptions == other.exceptions

    def __repr__(self) -> str:
        rules = ", ".join(f"{_fmt(k)} {v}" for k, v in self.exceptions.items())
        return f"Policy({'allow' if self.default_allow else 'deny'} by default; except {rules or 'nothing'})"

    def apply(self, allow: bool, line: str) -> None:
        """What the kernel does on a write of `line` to devices.allow (allow) or devices.deny."""
        parts = line.split()
        if not parts or parts[0][0] not in "abc":
            raise ValueError(f"device rule {line!r}: the type must be a, b or c")
        if parts[0][0] == "a":          # the kernel reads any "a..." line as "every device"
            self.default_allow = allow
            self.exceptions = {}
            return
        if len(parts) != 3 or ":" not in parts[1]:
            raise ValueError(f"device rule {line!r}: want 'TYPE MAJOR:MINOR ACCESS'")
        maj, _, mnr = parts[1].partition(":")
        key = (parts[0], None if maj == "*" else int(maj), None if mnr == "*" else int(mnr))
        access = _perms(parts[2])
        if allow != self.default_allow:          # an exception to the default: add or merge
            self.exceptions[key] = _perms(self.exceptions.get(key, "") + access)
            return
        # Back to the default: the kernel removes the access from an exception of exactly this
        # key and silently ignores the part a wildcard exception covers; refuse that instead.
        for wild in ((key[0], None, key[2]), (key[0], key[1], None), (key[0], None, None)):
            if wild != key and set(self.exceptions.get(wild, "")) & set(access):
                raise ValueError(f"device rule {'allow' if allow else 'deny'} {_fmt(key)} {access}: cgroup v1 "
                                 f"cannot take it out of the wider rule {_fmt(wild)} {self.exceptions[wild]}")
        left = _minus(self.exceptions.get(key, ""), access)
        if left:
            self.exceptions[key] = left
        else:
            self.exceptions.pop(key, None)

    @classmethod
    def from_list(cls, text: str) -> Policy:
        """devices.list: "a *:* rwm" for a blacklist, else the whitelist's exceptions."""
        p = cls(default_allow=False)
        for line in text.splitlines():
            if line.strip():
                p.apply(True, line)
        return p

    @classmethod
    def from_rules(cls, rules: list[DeviceRule]) -> Policy:
        """The OCI rules applied in order to a whitelist: the last matching rule wins."""
        p = cls(default_allow=False)
        for r in rules:
            for line in r.v1_lines():
                p.apply(r.allow, line)
        return p

    def list_text(self) -> str:
        """What devices.list would show."""
        if self.default_allow:
            return "a *:* rwm\n"
        return "".join(f"{_fmt(k)} {v}\n" for k, v in self.exceptions.items())


def transition(current: Policy, target: Policy) -> list[tuple[bool, str]]:
    """The (allow, line) writes that turn `current` into `target`; none when they are equal.

    A change of default, or a blacklist (whose denies are unknown), starts with the "a" rule that
    resets the cgroup; otherwise only the access that differs is written, drops first.
    """
    out: list[tuple[bool, str]] = []
    old = current.exceptions
    if current.default_allow or current.default_allow != target.default_allow:
        out.append((target.default_allow, "a"))
        old = {}
    for key, perms in old.items():
        dropped = _minus(perms, target.exceptions.get(key, ""))
        if dropped:
            out.append((target.default_allow, f"{_fmt(key)} {dropped}"))
    for key, perms in target.exceptions.items():
        gained = _minus(perms, old.get(key, ""))
        if gained:
            out.append((not target.default_allow, f"{_fmt(key)} {gained}"))
    return out


def matches(after: Policy, target: Policy) -> bool:
    """Is the policy read back the one asked for? A blacklist's denies cannot be read: only its mode."""
    if target.default_allow:
        return after.default_allow
    return after == target
