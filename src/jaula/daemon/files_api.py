"""File push and pull through the API (incus's /files), mounted by inside_api.

- GET /1.0/instances/{name}/files?path=P: a regular file's bytes (application/octet-stream), or
  a folder's entries ({"type": "sync", "metadata": [names]}); the headers X-Jaula-Type (file or
  directory), X-Jaula-Uid, X-Jaula-Gid (the instance's ids) and X-Jaula-Mode (octal) describe it.
- POST /1.0/instances/{name}/files?path=P with X-Jaula-Type file (the body is the content) or
  directory, X-Jaula-Uid/Gid (default 0: the instance's root), X-Jaula-Mode (default 0644 / 0755).

The instance must be running (its init's root is where paths resolve: instance_files.py).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from jaula.daemon import instance_files as files
from jaula.errors import BadState, ConfigError

_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "a file's bytes (application/octet-stream), or a folder's entries as {\"metadata\": [names]}; "
                   "X-Jaula-Type, X-Jaula-Uid, X-Jaula-Gid, X-Jaula-Mode describe it",
    "content": {"application/octet-stream": {}, "application/json": {}}}}


def mount(app: FastAPI, db: Any) -> None:
    def root_of(name: str) -> tuple[int, int]:
        row = db.get_instance(name)
        if row.status != "running":
            raise BadState(f"Instance {name!r} is {row.status}: files are pushed and pulled while it runs "
                           f"(jaula start {name})")
        base = row.idmap_base if row.idmap_size and row.idmap_base is not None else 0
        return files.open_root(row.pid, row.pid_start, name), base

    @app.get("/1.0/instances/{name}/files", tags=["instances"], responses=_FILE_RESPONSES,
             summary="Pull a file (its bytes) or list a folder inside a running instance")
    def pull(name: str, path: str = Query(..., description="absolute path inside the instance")) -> Any:
        files.check_path(path)
        root, base = root_of(name)
        try:
            meta, got = files.pull(root, path, base)
        finally:
            os.close(root)
        if isinstance(got, list):
            return JSONResponse({"type": "sync", "status": "Success", "status_code": 200, "metadata": got},
                                headers=meta.headers())
        headers = {**meta.headers(), "Content-Length": str(meta.size)}
        return StreamingResponse(_read(got, meta.size), media_type="application/octet-stream", headers=headers)

    @app.post("/1.0/instances/{name}/files", tags=["instances"], status_code=200,
              summary="Push a file (the body) or make a folder inside a running instance")
    async def push(name: str, request: Request,
                   path: str = Query(..., description="absolute path inside the instance"),
                   x_jaula_type: str = Header("file", description="file or directory"),
                   x_jaula_uid: int = Header(0, description="owner, an id of the instance"),
                   x_jaula_gid: int = Header(0, description="group, an id of the instance"),
                   x_jaula_mode: str | None = Header(None, description="octal, e.g. 0644")) -> dict:
        files.check_path(path)
        problems = []
        if x_jaula_type not in ("file", "directory"):
            problems.append(f"X-Jaula-Type {x_jaula_type!r}: use file or directory")
        for what, v in (("X-Jaula-Uid", x_jaula_uid), ("X-Jaula-Gid", x_jaula_gid)):
            if not 0 <= v < files.ID_RANGE:
                problems.append(f"{what} {v}: not an id of the instance (0 to {files.ID_RANGE - 1})")
        try:
            mode = files.parse_mode(x_jaula_mode, 0o755 if x_jaula_type == "directory" else 0o644)
        except ConfigError as exc:
            problems += exc.problems
        if problems:
            raise ConfigError(problems)
        loop = asyncio.get_running_loop()
        root, base = await loop.run_in_executor(None, root_of, name)
        try:
            if x_jaula_type == "directory":
                await loop.run_in_executor(None, lambda: files.push_directory(
                    root, path, uid=x_jaula_uid, gid=x_jaula_gid, mode=mode, base=base))
            else:
                await _push_body(request, lambda chunks: files.push_file(
                    root, path, chunks, uid=x_jaula_uid, gid=x_jaula_gid, mode=mode, base=base))
        finally:
            os.close(root)
        return {"type": "sync", "status": "Success", "status_code": 200, "metadata": {}}


def _read(fd: int, size: int) -> Iterator[bytes]:
    """The file's first `size` bytes (its size when opened: the Content-Length sent), zeros
    after its end if the instance shortened it meanwhile."""
    try:
        while size > 0:
            chunk = os.read(fd, min(1 << 16, size)) or b"\0" * min(1 << 16, size)
            size -= len(chunk)
            yield chunk
    finally:
        os.close(fd)


async def _push_body(request: Request, write: Any) -> None:
    """Stream the request's body to `write(chunks)`, which runs in a thread (file writes block)."""
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
    stop = threading.Event()

    def chunks() -> Iterator[bytes]:
        while (item := q.get()) is not None:
            yield item

    def run() -> None:
        try:
            write(chunks())
        finally:
            stop.set()
            while True:  # unblock a producer still putting
                try:
                    q.get_nowait()
                except queue.Empty:
                    break

    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(None, run)
    try:
        async for chunk in request.stream():
            if stop.is_set():
                break
            if chunk:
                await loop.run_in_executor(None, q.put, chunk)
    finally:
        if not stop.is_set():
            await loop.run_in_executor(None, q.put, None)
    await job
