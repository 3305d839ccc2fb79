"""The daemon's stored records and the checks on their fields, with messages a user can act on.

These are the database's view of things (`InstanceRow`, not the instance driver's model): what
`Database` takes and returns. Checks run here before SQL so the message names the field and the
rule; the schema's CHECK constraints are the backstop.
"""

from __future__ import annotations

import datetime
import json
import re

from jaula.errors import ConfigError
from jaula.names import NAME_MAX, RULE  # noqa: F401 - re-exported
from jaula.names import validate_name as _validate_name
from jaula.record import Record

_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
KEY_MAX = 256

KINDS = ("container", "vm")
MODES = ("system", "app")
INSTANCE_STATUSES = ("stopped", "running", "frozen", "error")
OPERATION_CLASSES = ("task", "websocket")
OPERATION_STATUSES = ("pending", "running", "success", "failure", "cancelled")
FINISHED = ("success", "failure", "cancelled")

IDMAP_SIZE = 65536


class InstanceRow(Record):
    """An instance as stored: its row, its config rows and its ordered profiles."""

    name: str
    kind: str = "container"
    mode: str = "system"
    template: str = ""
    description: str = ""
    created: str = ""                 # RFC 3339, UTC; set by create_instance when empty
    status: str = "stopped"
    autostart: bool = False
    idmap_base: int | None = None     # first host id of its range; None: allocated at create
    idmap_size: int = IDMAP_SIZE      # 0: no range (a privileged instance)
    pid: int | None = None            # its init's host pid while running
    pid_start: int | None = None      # that pid's start time (/proc/PID/stat field 22): live
                                      # restore adopts the pid only if it is still the same process
    config: dict = {}                 # key -> value, both str
    profiles: list = []               # profile names, applied in this order
    command: list = []                # an app instance's own command; []: its template's


class SnapshotRow(Record):
    """A snapshot of an instance's root, with the instance's own config and profiles of its moment."""

    instance: str
    name: str
    created: str = ""                 # RFC 3339, UTC; set by add_snapshot when empty
    size: int | None = None           # bytes of host disk it holds, when known
    stateful: bool = False            # process state kept too (not supported yet: always false)
    config: dict = {}
    profiles: list = []


class ProfileRow(Record):
    name: str
    description: str = ""
    config: dict = {}


class TemplateRow(Record):
    name: str
    source: str
    created: str = ""                 # RFC 3339, UTC; set by add_template when empty
    size: int = 0                     # bytes
    metadata: dict = {}


class OperationRow(Record):
    id: str                           # uuid4
    op_class: str                     # task or websocket ("class" is a keyword)
    description: str
    status: str = "pending"
    created: str = ""
    updated: str = ""
    error: str = ""
    resources: dict = {}              # e.g. {"instances": ["web1"]}
    metadata: dict = {}


class EventRow(Record):
    id: int
    time: str
    type: str
    payload: dict = {}


def validate_name(name: object, what: str = "Instance") -> str:
    """`name` if it is a DNS label (jaula.names) and not all digits (it could be taken for an id)."""
    name = _validate_name(name, what)
    if name.isdigit():
        raise ConfigError(f"{what} name {name!a} is all digits (it could be taken for an id): {RULE}")
    return name


def config_problems(config: object, what: str) -> list[str]:
    """Every problem with a config mapping (keys like `limits.memory`, values strings)."""
    if not isinstance(config, dict):
        return [f"{what} config must be a mapping of keys to strings, not {type(config).__name__}"]
    problems = []
    for key, value in config.items():
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key) or len(key) > KEY_MAX:
            problems.append(
                f"{what} config key {key!r} is not valid: use letters, digits, '.', '_', '/' "
                f"and '-', starting with a letter or digit, at most {KEY_MAX} characters"
            )
        elif not isinstance(value, str):
            problems.append(f"{what} config {key!r}: value {value!r} is not a string (write it as one)")
        elif "\x00" in value:
            problems.append(f"{what} config {key!r}: value contains a NUL character")
    return problems


def check_choice(value: object, choices: tuple[str, ...], field: str) -> None:
    if value not in choices:
        raise ConfigError(f"{field} {value!r} is not one of: {', '.join(choices)}")


def instance_problems(row: InstanceRow) -> list[str]:
    """Every problem with an instance row before it is written."""
    problems = []
    try:
        validate_name(row.name, "Instance")
    except ConfigError as exc:
        problems += exc.problems
    for value, choices, field in (
        (row.kind, KINDS, "Instance kind"),
        (row.mode, MODES, "Instance mode"),
        (row.status, INSTANCE_STATUSES, "Instance status"),
    ):
        if value not in choices:
            problems.append(f"{field} {value!r} is not one of: {', '.join(choices)}")
    if row.template:
        try:
            validate_name(row.template, "Template")
        except ConfigError as exc:
            problems += exc.problems
    if not isinstance(row.description, str):
        problems.append("Instance description must be a string")
    if not isinstance(row.command, list) or not all(isinstance(a, str) and "\0" not in a for a in row.command):
        problems.append(f"Instance command {row.command!r}: give a list of strings (no NUL)")
    elif row.command and row.mode != "app":
        problems.append("Instance command: only an app instance runs a command of its own; "
                        "a system instance runs its template's init")
    if not isinstance(row.autostart, bool):
        problems.append(f"Instance autostart {row.autostart!r} must be true or false")
    if not isinstance(row.idmap_size, int) or row.idmap_size < 0 or row.idmap_size % IDMAP_SIZE:
        problems.append(f"Instance idmap_size {row.idmap_size!r} must be 0 or a multiple of {IDMAP_SIZE}")
    if row.idmap_base is not None and (not isinstance(row.idmap_base, int) or row.idmap_base < 0):
        problems.append(f"Instance idmap_base {row.idmap_base!r} must be a non-negative integer")
    for field in ("pid", "pid_start"):
        value = getattr(row, field)
        if value is not None and (not isinstance(value, int) or value <= 0):
            problems.append(f"Instance {field} {value!r} must be a positive integer")
    problems += config_problems(row.config, "Instance")
    if not isinstance(row.profiles, list) or not all(isinstance(p, str) for p in row.profiles):
        problems.append("Instance profiles must be a list of profile names")
    elif len(set(row.profiles)) != len(row.profiles):
        problems.append(f"Instance profiles {row.profiles} name a profile twice")
    return problems


def now() -> str:
    """RFC 3339 UTC with milliseconds: sorts as text in time order."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json(value: object, what: str) -> str:
    """A mapping as compact JSON, or ConfigError naming the field when it cannot be one."""
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping, not {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} cannot be stored as JSON: {exc}") from exc
