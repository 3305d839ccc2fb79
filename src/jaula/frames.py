"""The framing of jaulad's exec and console streams: one WebSocket, binary messages, the first
byte of each naming its channel (incus opens one websocket per fd; one socket with a channel
byte needs no secrets per fd and keeps the order between stdout and control).

  channel 0  stdin   client -> jaulad; an empty payload is the end of stdin (EOF)
  channel 1  stdout  jaulad -> client (with a pty: everything the pty says)
  channel 2  stderr  jaulad -> client (never with a pty: the pty merges them)
  channel 3  control JSON, both ways:
     client -> jaulad  {"type": "resize", "width": W, "height": H}   (pty only: TIOCSWINSZ)
                       {"type": "signal", "signal": N}               (to the command)
     jaulad -> client  {"type": "exit", "code": N}                   (last message: its exit code)
                       {"type": "error", "message": "...", "exit_code": K} (it could not run)
"""

from __future__ import annotations

import json
from typing import Any

STDIN, STDOUT, STDERR, CONTROL = 0, 1, 2, 3
CHANNELS = (STDIN, STDOUT, STDERR, CONTROL)
MAX_CONTROL = 4096          # a control message longer than this is refused
MAX_SIZE = 0xFFFF           # a window dimension is an unsigned short (struct winsize)


class FrameError(ValueError):
    """A message that is not a frame of this protocol; the text says what was wrong."""


def encode(channel: int, data: bytes = b"") -> bytes:
    if channel not in CHANNELS:
        raise FrameError(f"channel {channel!r} is not one of {CHANNELS}")
    return bytes((channel,)) + data


def decode(message: bytes | str) -> tuple[int, bytes]:
    """(channel, payload) of one message."""
    if isinstance(message, str):
        raise FrameError("a text message: frames are binary (a channel byte, then the data)")
    if not message:
        raise FrameError("an empty message: a frame starts with its channel byte")
    channel = message[0]
    if channel not in CHANNELS:
        raise FrameError(f"channel {channel} is not one of {CHANNELS}")
    return channel, bytes(message[1:])


def control(kind: str, **fields: Any) -> bytes:
    return encode(CONTROL, json.dumps({"type": kind, **fields}).encode())


def resize(width: int, height: int) -> bytes:
    return control("resize", width=width, height=height)


def signal(signum: int) -> bytes:
    return control("signal", signal=signum)


def _int(msg: dict, key: str, low: int, high: int) -> int:
    v = msg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise FrameError(f"control {msg.get('type')!r}: {key} must be an integer from {low} to {high}, not {v!r}")
    return v


def parse_control(payload: bytes, *, from_client: bool = True) -> dict[str, Any]:
    """A control message, checked: its type is one the sender may send, its fields in range."""
    if len(payload) > MAX_CONTROL:
        raise FrameError(f"a control message of {len(payload)} bytes is over {MAX_CONTROL}")
    try:
        msg = json.loads(payload)
    except ValueError as e:
        raise FrameError(f"a control message is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise FrameError("a control message must be a JSON object with a \"type\"")
    kind = msg.get("type")
    allowed = ("resize", "signal") if from_client else ("exit", "error")
    if kind not in allowed:
        raise FrameError(f"control type {kind!r} is not one of {', '.join(allowed)}")
    if kind == "resize":
        return {"type": kind, "width": _int(msg, "width", 1, MAX_SIZE), "height": _int(msg, "height", 1, MAX_SIZE)}
    if kind == "signal":
        return {"type": kind, "signal": _int(msg, "signal", 1, 64)}
    if kind == "exit":
        return {"type": kind, "code": _int(msg, "code", 0, 255)}
    return {"type": kind, "message": str(msg.get("message", "")), "exit_code": _int(msg, "exit_code", 0, 255)}
