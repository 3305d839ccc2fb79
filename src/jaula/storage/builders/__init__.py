"""Template builders: each fills an empty root directory and says what the template runs.

A builder is a module with `OPTIONS` (the options it accepts, each with a check and a
description: checked all together before anything is made) and
`build(ctx: BuildContext, **opts) -> ImageDefaults`. `BUILDERS` maps a source name to its
module; modules are imported on first use. A callable with the same signature (and an optional
`OPTIONS` attribute) can be given as a source too, which is how tests inject a failing builder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from jaula.errors import ConfigError
from jaula.record import Record
from jaula.storage.progress import Progress, no_progress

BUILDERS: dict[str, str] = {
    "busybox": "jaula.storage.builders.busybox",
    "debootstrap": "jaula.storage.builders.debootstrap",
    "tarball": "jaula.storage.builders.tarball",
    "oci": "jaula.storage.builders.ociimage",
}


class BuildContext(Record):
    """What a builder gets: the empty root to fill, a scratch folder beside it (removed with the
    partial template), the shared download cache, the progress callback, the template's name."""

    name: str
    rootfs: Path
    scratch: Path
    cache: Path
    progress: Progress = no_progress


class ImageDefaults(Record):
    """How the template runs by default (an OCI image config's Entrypoint, Cmd, Env, WorkingDir,
    User) and what the builder knows of its origin (`source` text, `arch`, `os` when the tree's
    os-release cannot tell)."""

    source: str = ""
    entrypoint: list = []
    cmd: list = []
    env: list = []
    workdir: str = "/"
    user: str = ""
    arch: str = ""
    os: str = ""


class Option(Record, frozen=True):
    """One builder option: `check(value)` returns a problem (text) or None."""

    description: str
    check: Callable[[Any], str | None]
    required: bool = False


def is_str(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "must be a non-empty string"


def is_path(v: Any) -> str | None:
    return None if isinstance(v, (str, Path)) and str(v) else "must be a path"


def is_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def is_str_list(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v)
    return None if ok else "must be a list of non-empty strings"


def resolve(source: str | Callable[..., ImageDefaults]) -> tuple[str, Callable[..., ImageDefaults], dict[str, Option]]:
    """(source name, build function, options table) for a source name or a callable."""
    if callable(source):
        return getattr(source, "__name__", "custom"), source, getattr(source, "OPTIONS", {})
    if source not in BUILDERS:
        raise ConfigError(f"Unknown template source {source!r}: use one of {', '.join(sorted(BUILDERS))}")
    module: ModuleType = importlib.import_module(BUILDERS[source])
    return source, module.build, module.OPTIONS


def check_options(source: str, table: dict[str, Option], opts: dict[str, Any]) -> None:
    """Every problem with `opts` at once, as one ConfigError (nothing has been made yet)."""
    problems = []
    for key in sorted(set(opts) - set(table)):
        known = ", ".join(sorted(table)) or "none"
        problems.append(f"{source}: unknown option {key!r} (options: {known})")
    for key, opt in table.items():
        if key not in opts or opts[key] is None:
            if opt.required:
                problems.append(f"{source}: option {key!r} is required ({opt.description})")
            continue
        if (why := opt.check(opts[key])) is not None:
            problems.append(f"{source}: option {key!r} {why} ({opt.description})")
    if problems:
        raise ConfigError(problems)
