"""The instance and profile models: what a user asks for, checked before anything is made.

An `Instance` is a record, not a live object: drivers (`driver.py`) act on it. Its `config` holds
the validated settings the instance itself sets; the settings it runs with are its profiles'
merged in order, then its own on top (`merged_config`).
"""

from __future__ import annotations

import time
from typing import Any

from jaula.errors import ConfigError
from jaula.instances import settings
from jaula.names import NAME_MAX, validate_name  # noqa: F401 - re-exported
from jaula.record import Record

KINDS = ("container",)
RESERVED_KINDS = ("vm",)
MODES = ("system", "app")
ID_RANGE = 65536            # ids per unprivileged instance: 0..65535 inside
ID_MAX = 2**32 - 2          # the last usable id (2^32-1 is "no id")



def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Profile(Record):
    """A named set of settings applied to instances at create (a preset, as vzctl's ve-vps.512MB)."""

    name: str
    config: dict = {}
    description: str = ""

    @classmethod
    def new(cls, name: str, config: dict[str, Any] | None = None, description: str = "") -> Profile:
        """A checked profile: its name, then every setting (ConfigError lists all problems)."""
        validate_name(name, "Profile")
        return cls(name=name, config=settings.validate(config or {}), description=_description(description))


class Instance(Record):
    """One instance as configured. `idmap_base`: the first host id of its 65536-id range (given
    by the caller's allocator; None for a privileged instance). `command`: an app instance's
    program, when it overrides the template's."""

    name: str
    template: str
    kind: str = "container"
    mode: str = "system"
    config: dict = {}
    profiles: list = []
    description: str = ""
    created: str = ""
    idmap_base: int | None = None
    command: list = []
    # filled in by jaulad (daemon/networks.py): the complete plans of its NICs for the driver,
    # {"table", "networks", "nics", "resolv_conf", "hosts"}; {}: no NICs to plug
    network: dict = {}

    @classmethod
    def new(cls, name: str, template: str, *, kind: str = "container", mode: str = "system",
            config: dict[str, Any] | None = None, profiles: list[str] | None = None, description: str = "",
            idmap_base: int | None = None, command: list[str] | None = None) -> Instance:
        """A checked instance: the name first (before anything else is looked at), then the rest,
        every problem at once."""
        validate_name(name)
        inst = cls(name=name, template=template, kind=kind, mode=mode, config=dict(config or {}),
                   profiles=list(profiles or []), description=description, created=now_rfc3339(),
                   idmap_base=idmap_base, command=list(command or []))
        return inst.validate()

    def validate(self) -> Instance:
        """Check every field; returns self with its config normalized, or raises ConfigError."""
        validate_name(self.name)
        problems: list[str] = []
        if self.kind in RESERVED_KINDS:
            problems.append(f"kind {self.kind!r} is not supported yet: use 'container'")
        elif self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is unknown: use 'container'")
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} is unknown: use 'system' (runs the template's init) "
                            "or 'app' (runs one command)")
        try:
            validate_name(self.template, "Template")
        except ConfigError as e:
            problems += e.problems
        for p in self.profiles:
            try:
                validate_name(p, "Profile")
            except ConfigError as e:
                problems += e.problems
        if not isinstance(self.command, list) or not all(isinstance(a, str) and "\0" not in a for a in self.command):
            problems.append(f"command {self.command!r}: give a list of strings")
        elif self.command and self.mode != "app":
            problems.append("command: only app instances run a command; a system instance runs its template's init")
        try:
            self.description = _description(self.description)
        except ConfigError as e:
            problems += e.problems
        try:
            config = settings.validate(self.config)
        except ConfigError as e:
            problems += e.problems
            config = self.config
        if self.idmap_base is not None:
            b = self.idmap_base
            if not isinstance(b, int) or isinstance(b, bool) or b < ID_RANGE or b + ID_RANGE - 1 > ID_MAX:
                problems.append(f"idmap_base {b!r}: give a host id from {ID_RANGE} to {ID_MAX - ID_RANGE + 1} "
                                f"(the instance uses {ID_RANGE} ids from there)")
        if problems:
            raise ConfigError(problems)
        self.config = config
        return self

    @property
    def privileged(self) -> bool:
        return self.config.get("security.privileged") is True

    def merged_config(self, profiles: list[Profile] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        """The settings it runs with: each profile's in order, then its own on top; validated."""
        merged: dict[str, Any] = {}
        for p in profiles:
            merged.update(p.config)
        merged.update(self.config)
        return settings.validate(merged)

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Instance:
        return cls(**{k: v for k, v in d.items() if k in cls._fields}).validate()


def _description(text: object) -> str:
    if not isinstance(text, str):
        raise ConfigError(f"description {text!r}: give a string")
    if len(text) > 1024 or any(ord(c) < 32 and c not in "\t\n" for c in text):
        raise ConfigError("description: at most 1024 characters, no control characters but tab and newline")
    return text
