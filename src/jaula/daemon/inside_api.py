"""The routes that reach inside an instance, mounted into create_app's app by `mount`: exec
(exec_api.py), console and logs (console_api.py), files (files_api.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI


def mount(app: FastAPI, db: Any, backend: Any, instance: Callable[[Any], Any]) -> None:
    from jaula.daemon import console_api, exec_api, files_api

    exec_api.mount(app, db, backend, instance)
    console_api.mount(app, db, backend)
    files_api.mount(app, db, backend, instance)
