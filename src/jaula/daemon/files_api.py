"""File push and pull through the API (incus's /files), mounted by inside_api.

- GET /1.0/instances/{name}/files?path=P: a regular file's bytes (application/octet-stream), or
  a folder's entries ({"type": "sync", "metadata": [names]}); the headers X-Jaula-Type (file or
  directory), X-Jaula-Uid, X-Jaula-Gid (the instance's ids) and X-Jaula-Mode (octal) describe it.
- POST /1.0/instances/{name}/files?path=P with X-Jaula-Type file (the body is the content) or
  directory, X-Jaula-Uid/Gid (default 0: the instance's root), X-Jaula-Mode (default 0644 / 0755).

Paths resolve inside the instance (instance_files.py): under its init's root while it runs (or is
frozen); a stopped instance's volume is mounted for the transfer (as its start would mount it),
in an operation that keeps its starts waiting, and unmounted after.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from jaula.daemon import instance_files as files
from jaula.errors import BadState, ConfigError

_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "a file's bytes (application/octet-stream), or a folder's entries as {\"metadata\": [names]}; "
                   "X-Jaula-Type, X-Jaula-Uid, X-Jaula-Gid, X-Jaula-Mode describe it",
    "content": {"application/octet-stream": {}, "application/json": {}}}}


def mount(app: FastAPI, db: Any, backend: Any, instance: Callable[[Any], Any]) -> None:
    """Add the files routes; `instance(row)` is the driver's model of a stored instance."""

    def base_of(row: Any) -> int:
        return row.idmap_base if row.idmap_size and row.idmap_base is not None else 0

    def in_root(name: str, what: str, fn: Callable[[int, int, bool], Any]) -> Any:
        """`fn(root_fd, base, mounted)` over the instance's root: its init's while it runs (or is
        frozen), else its volume mounted for the moment (`mounted`), in an operation (starts of
        it wait meanwhile)."""
        row = db.get_instance(name)
        if row.status in ("running", "frozen"):
            root = files.open_root(row.pid, row.pid_start, name)
            try:
                return fn(root, base_of(row), False)
            finally:
                os.close(root)
        if not hasattr(backend, "mount_root"):
            raise BadState(f"Instance {name!r} is {row.status}: this jaulad reaches files of running instances only")
        got: dict[str, Any] = {}

        def action() -> dict:
            now = db.get_instance(name)
            try:
                if now.status != "stopped":
                    raise BadState(f"Instance {name!r} is {now.status} now: try again")
                inst = instance(now)
                where = backend.mount_root(inst)
                try:
                    root = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        got["value"] = fn(root, base_of(now), True)
                    finally:
                        os.close(root)
                finally:
                    backend.unmount_root(inst)
            except BaseException as exc:
                got["error"] = exc
                raise
            return {}

        ops = app.state.operations
        op = ops.submit(f"{what} instance {name} (stopped: its root mounted for it)", action, instance=name)
        ops.wait(op.id)
        if "error" in got:
            raise got["error"]
        if "value" not in got:
            raise BadState(f"{what} instance {name!r} was cancelled")
        return got["value"]

    @app.get("/1.0/instances/{name}/files", tags=["instances"], responses=_FILE_RESPONSES,
             summary="Pull a file (its bytes) or list a folder inside an instance")
    def pull(name: str, path: str = Query(..., description="absolute path inside the instance"),
             follow: bool = Query(True, description="false: a symlink named by path comes as itself "
                                                    "(X-Jaula-Type symlink, metadata.target), not its target")) -> Any:
        files.check_path(path)
        db.get_instance(name)

        def read(root: int, base: int, mounted: bool) -> tuple[files.Meta, Any]:
            meta, got = files.pull(root, path, base, follow)
            if isinstance(got, (list, str)) or not mounted:
                return meta, got
            with os.fdopen(got, "rb") as f:   # the root is unmounted next: keep a copy
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
                shutil.copyfileobj(f, spool, 1 << 16)
            meta.size = _size(spool)
            return meta, spool

        meta, got = in_root(name, "Pulling a file from", read)
        if isinstance(got, str):
            return JSONResponse({"type": "sync", "status": "Success", "status_code": 200,
                                 "metadata": {"target": got}}, headers=meta.headers())
        if isinstance(got, list):
            return JSONResponse({"type": "sync", "status": "Success", "status_code": 200, "metadata": got},
                                headers=meta.headers())
        headers = {**meta.headers(), "Content-Length": str(meta.size)}
        body = _read(got, meta.size) if isinstance(got, int) else _read_spool(got, meta.size)
        return StreamingResponse(body, media_type="application/octet-stream", headers=headers)

    @app.post("/1.0/instances/{name}/files", tags=["instances"], status_code=200,
              summary="Push a file (the body) or make a folder inside an instance")
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
        row = await loop.run_in_executor(None, db.get_instance, name)
        ids = {"uid": x_jaula_uid, "gid": x_jaula_gid, "mode": mode}
        if x_jaula_type == "directory":
            await loop.run_in_executor(None, in_root, name, "Making a folder in",
                                       lambda root, base, _m: files.push_directory(root, path, base=base, **ids))
        elif row.status in ("running", "frozen"):
            root = await loop.run_in_executor(None, files.open_root, row.pid, row.pid_start, name)
            try:
                await _push_body(request, lambda chunks: files.push_file(root, path, chunks, base=base_of(row), **ids))
            finally:
                os.close(root)
        else:  # the body first (the instance's root is mounted only for the write)
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
            try:
                async for chunk in request.stream():
                    spool.write(chunk)
                spool.seek(0)
                await loop.run_in_executor(None, in_root, name, "Pushing a file into",
                                           lambda root, base, _m: files.push_file(
                                               root, path, iter(lambda: spool.read(1 << 16), b""), base=base, **ids))
            finally:
                spool.close()
        return {"type": "sync", "status": "Success", "status_code": 200, "metadata": {}}


SPOOL_MEMORY = 8 << 20   # a stopped instance's file passes through memory up to this, then a temp file


def _size(f: Any) -> int:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    return size


def _read_spool(f: Any, size: int) -> Iterator[bytes]:
    try:
        while size > 0 and (chunk := f.read(min(1 << 16, size))):
            size -= len(chunk)
            yield chunk
    finally:
        f.close()


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
