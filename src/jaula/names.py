"""Names of instances, templates and profiles: DNS labels (RFC 1123), checked in one place.

Names become folder names, host names and parts of cgroup and interface names, so nothing that
could be a path, a control character or a homoglyph gets through.
"""

from __future__ import annotations

from jaula.errors import ConfigError

NAME_MAX = 63
RULE = "use 1 to 63 lowercase letters (a-z), digits and '-', starting and ending with a letter or digit"
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALLOWED = _ALNUM | {"-"}


def is_name(name: str) -> bool:
    """Whether `name` is a DNS label (the quiet form of `validate_name`)."""
    return (0 < len(name) <= NAME_MAX and set(name) <= _ALLOWED
            and name[0] in _ALNUM and name[-1] in _ALNUM)


def validate_name(name: object, what: str = "Instance") -> str:
    """`name` if it is a DNS label, else ConfigError saying exactly what is wrong and what is allowed."""
    if not isinstance(name, str):
        raise ConfigError(f"{what} name {name!r} is not a string: {RULE}")
    if name == "":
        why = "is empty"
    elif "/" in name or name in (".", "..") or ".." in name:
        why = "would be a path ('/' and dots are not allowed)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        why = "contains a control character"
    elif not name.isascii():
        why = "contains a character outside ASCII"
    elif len(name) > NAME_MAX:
        why = f"is {len(name)} characters long (at most {NAME_MAX})"
    elif name != name.lower():
        why = "contains uppercase letters"
    elif name.startswith("-") or name.endswith("-"):
        why = "starts or ends with '-'"
    elif not is_name(name):
        bad = sorted({c for c in name if c not in _ALLOWED})
        why = "contains " + ", ".join(repr(c) for c in bad)
    else:
        return name
    raise ConfigError(f"{what} name {name!a} {why}: {RULE}")
