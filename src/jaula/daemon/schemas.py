"""The API's request and response bodies (pydantic, at the edge only): the OpenAPI document
(`docs/openapi.json`) is generated from these, and the tests validate responses against it.

Envelope as Incus's: {"type": "sync", "metadata": ...}, {"type": "async", "operation": URL,
"metadata": the operation}, {"type": "error", "error_code": HTTP status, "error": message}.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

CONFIG_HELP = ("Settings as strings (`limits.memory`: `512MiB`); see GET /1.0 `settings` "
               "for the known keys. user.* and environment.* are free.")


class Sync(BaseModel, Generic[T]):
    type: Literal["sync"] = "sync"
    status: str = "Success"
    status_code: int = 200
    metadata: T


class Error(BaseModel):
    type: Literal["error"] = "error"
    error_code: int = Field(description="the HTTP status")
    error: str = Field(description="what was wrong and what to do")
    problems: list[str] = Field(default=[], description="every problem found, when validation refused the request")
    exit_code: int = Field(description="the `jaula` CLI's exit code for this error (jaula.errors.ExitCode)")


class SettingInfo(BaseModel):
    key: str
    type: str
    default: str | None
    live: bool = Field(description="a running instance takes a change at once")
    description: str


class Server(BaseModel):
    api_version: str = "1.0"
    server: str = "jaulad"
    server_version: str
    settings: list[SettingInfo]


class Operation(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    class_: Literal["task", "websocket"] = Field(alias="class")
    description: str
    status: Literal["pending", "running", "success", "failure", "cancelled"]
    created: str
    updated: str
    err: str = Field(description="why it failed; empty unless status is failure")
    resources: dict[str, list[str]]
    metadata: dict
    may_cancel: bool = Field(default=False, description="DELETE cancels it: pending, or a running template build, "
                                                        "snapshot, restore, copy, export or import")


class Event(BaseModel):
    id: int = Field(description="increasing: pass the last one seen as `after` to resume")
    time: str
    type: str = Field(description="the action: instance-created, instance-started, instance-stopped, ...")
    payload: dict


class Async(BaseModel):
    type: Literal["async"] = "async"
    status: str = "Operation created"
    status_code: int = 100
    operation: str = Field(description="the operation's URL: GET it, or GET its /wait")
    metadata: Operation


class Instance(BaseModel):
    name: str
    kind: str
    mode: str
    template: str
    description: str
    created: str
    status: Literal["stopped", "running", "frozen", "error"]
    autostart: bool
    privileged: bool
    config: dict[str, str] = Field(description="the instance's own settings")
    expanded_config: dict[str, str] = Field(description="its profiles' settings, then its own on top")
    profiles: list[str]
    pid: int | None
    command: list[str] = Field(default=[], description="an app instance's own command; []: its template's")


class InstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="a DNS label: 1 to 63 of a-z, 0-9 and '-'")
    template: str
    mode: Literal["system", "app"] = "system"
    command: list[str] = Field(default=[], description="app mode: the program and its arguments to run "
                                                       "instead of the template's command")
    kind: Literal["container"] = "container"
    config: dict[str, str] = Field(default={}, description=CONFIG_HELP)
    profiles: list[str] = Field(default=[], description="applied in order, the instance's own config on top")
    description: str = ""
    start: bool = Field(default=False, description="start it once made, in the same operation (`jaula launch`); "
                                                   "a start the host's capacity refuses (overcommit ratios) is "
                                                   "refused before anything is made")


class InstancePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, str | None] | None = Field(
        default=None, description="keys to set; a null or empty value unsets the key")
    profiles: list[str] | None = None
    description: str | None = None


class InstanceState(BaseModel):
    status: str = Field(description="as the backend sees it now: stopped, starting, running, frozen")
    pid: int = Field(description="its first process on the host; 0 when stopped")
    init: str = Field(description="the init its stop signal was chosen for ('app' for app instances)")
    stop_signal: int


class Counter(BaseModel):
    """A beancounter row (jaula.cgroups.stats.Counter): held now, maxheld its peak, limit (null:
    unlimited), failcnt (times the limit was hit), barrier (the soft limit, else the limit)."""

    resource: str
    held: int | None
    maxheld: int | None
    limit: int | None
    failcnt: int | None
    unit: str
    details: dict[str, int]
    barrier: int | None


class Stats(BaseModel):
    name: str = Field(description="its cgroup's name")
    cpu_usage_ns: int | None
    rows: list[Counter] = Field(description="empty when it is stopped")


class StateChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["start", "stop", "restart", "freeze", "unfreeze"]
    force: bool = Field(default=False, description="stop: kill at once, without asking the init")
    timeout: float = Field(default=30.0, ge=0, le=3600,
                           description="stop: seconds to wait for a clean shutdown before killing")


class Profile(BaseModel):
    name: str
    description: str
    config: dict[str, str]
    used_by: list[str] = Field(default=[], description="the instances using it, by name")


class ProfileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    config: dict[str, str] = Field(default={}, description=CONFIG_HELP)
