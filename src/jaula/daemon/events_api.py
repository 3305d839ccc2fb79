"""The event routes: `GET /1.0/events` pushes events live, `GET /1.0/events/history` replays the
stored lifecycle events.

The live stream is a streaming HTTP response of newline-delimited JSON (one event a line,
`application/x-ndjson`) rather than Incus's websocket: it works over the UNIX socket with any
HTTP client (`curl --unix-socket ... -N`), and needs no upgrade. The listener is subscribed
before the response's headers are sent, so a client that has the headers misses nothing
after them. An empty line is sent every KEEPALIVE_S seconds of quiet (clients skip it), so a
listener gone away is noticed and dropped even when nothing happens.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from jaula.daemon import schemas as s
from jaula.daemon.events import TYPES, EventBus

KEEPALIVE_S = 15.0


class StreamEvent(BaseModel):
    """One line of the `GET /1.0/events` stream."""

    type: Literal["lifecycle", "operation", "logging"]
    timestamp: str
    metadata: dict = Field(description="lifecycle: {action, source, context, id}; operation: the "
                                       "operation object; logging: {level, message, context}")


def mount(app: FastAPI, bus: EventBus, db: Any) -> None:
    @app.get("/1.0/events", tags=["events"], response_class=StreamingResponse, responses={200: {
        "description": "newline-delimited JSON, one event a line, until the client goes (empty lines "
                       "are keep-alives)",
        "content": {"application/x-ndjson": {"schema": StreamEvent.model_json_schema()}}}})
    async def events(type: str | None = Query(
            None, description=f"comma-separated types among {', '.join(TYPES)}; none: all")) -> StreamingResponse:
        listener = bus.subscribe(type, loop=asyncio.get_running_loop())  # a bad type: 400 before any byte

        async def lines() -> Any:
            try:
                while True:
                    done, event = await listener.next(KEEPALIVE_S)
                    if not done:
                        yield b"\n"
                    elif event is None:
                        return
                    else:
                        yield json.dumps(event).encode() + b"\n"
            finally:
                bus.unsubscribe(listener)
        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/1.0/events/history", response_model=s.Sync[list[s.Event]], tags=["events"])
    def history(after: int = Query(0, description="the last event id seen; only later ones come"),
                type: str | None = Query(None, description="only events of this action, e.g. instance-started"),
                timeout: float = Query(0, ge=0, le=300, description="wait up to this long for one")) -> dict:
        deadline = time.monotonic() + timeout
        while not (found := db.events(after=after, limit=1000, type_=type)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return {"type": "sync", "status": "Success", "status_code": 200,
                "metadata": [s.Event(id=e.id, time=e.time, type=e.type, payload=e.payload) for e in found]}
