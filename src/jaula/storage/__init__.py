"""Storage: templates (named root file trees built locally) and pools (instances' roots over them).

Names below are imported on first use, so `import jaula.storage` costs nothing:

    from jaula.storage import TemplateStore, TerminalProgress
    store = TemplateStore()                        # $JAULA_ROOT/templates
    with TerminalProgress() as show:
        t = store.build("bb", "busybox", progress=show)
    store.import_image("app", "app.tar")           # docker/podman save, or an OCI layout
    store.build("deb12", "debootstrap", release="bookworm")
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TemplateStore": "jaula.storage.templates",
    "Template": "jaula.storage.templates",
    "validate_name": "jaula.storage.templates",
    "jaula_root": "jaula.storage.templates",
    "TerminalProgress": "jaula.storage.progress",
    "Progress": "jaula.storage.progress",
    "ImageDefaults": "jaula.storage.builders",
    "BuildContext": "jaula.storage.builders",
    "ArchiveError": "jaula.storage.builders.unpack",
}

__all__ = ["ArchiveError", "BuildContext", "ImageDefaults", "Progress", "Template", "TemplateStore", "TerminalProgress", "jaula_root", "validate_name"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jaula.storage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
