"""The client's end of jaulad's exec and console streams (jaula.frames over a WebSocket on the
API's UNIX socket), and the relay between such a stream and local fds or a terminal.

    op = client.exec("web1", ["sh", "-c", "id"])          # the operation, with its secret
    code = relay(client.attach(op), tty=False)            # stdin/stdout/stderr <-> the command
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

from jaula import frames
from jaula.errors import JaulaError

#: detach from a console: ctrl-a then q (as incus and screen)
DETACH = b"\x01q"


class Stream:
    """One stream: `send_*` from any thread, `recv()` from one."""

    def __init__(self, target: str, path: str, secret: str = "", headers: dict[str, str] | None = None) -> None:
        """`target`: jaulad's UNIX socket, or a remote's URL (http://HOST:PORT) with `headers`
        (its Authorization)."""
        from websockets.exceptions import InvalidHandshake
        from websockets.sync.client import connect, unix_connect

        if secret:
            path += ("&" if "?" in path else "?") + f"secret={secret}"
        options: dict[str, Any] = {"max_size": None, "compression": None, "open_timeout": 30}
        self._open = contextlib.ExitStack()   # websockets >= 17.1 wants its connection used as a context
        try:
            if "://" in target:
                base = target.replace("https://", "wss://", 1).replace("http://", "ws://", 1).rstrip("/")
                self.ws = self._open.enter_context(connect(base + path, additional_headers=headers or {}, **options))
            else:
                self.ws = self._open.enter_context(unix_connect(target, f"ws://jaulad{path}", **options))
        except (OSError, InvalidHandshake) as exc:  # the socket, or jaulad refused the stream
            raise JaulaError(f"Cannot open the stream {path.partition('?')[0]} on {target!r}: {exc}") from None
        self._lock = threading.Lock()

    def _send(self, data: bytes) -> None:
        with self._lock:
            self.ws.send(data)

    def send_stdin(self, data: bytes) -> None:
        self._send(frames.encode(frames.STDIN, data))

    def close_stdin(self) -> None:
        self._send(frames.encode(frames.STDIN, b""))

    def resize(self, width: int, height: int) -> None:
        self._send(frames.resize(width, height))

    def signal(self, signum: int) -> None:
        self._send(frames.signal(signum))

    def recv(self) -> tuple[int, bytes] | None:
        """The next frame, or None once jaulad closed the stream."""
        from websockets.exceptions import ConnectionClosed

        try:
            msg = self.ws.recv()
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code not in (1000, 1001):
                raise JaulaError(f"jaulad closed the stream: {exc.rcvd.reason or exc.rcvd.code}") from None
            return None
        return frames.decode(msg)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._open.close()


def _error(msg: dict[str, Any]) -> JaulaError:
    from jaula.client.rest import error_from

    code = int(msg.get("exit_code", 1))
    err = error_from({"error": msg.get("message", ""), "exit_code": code})
    err.exit_code = code  # a shell's 126/127 too (the command could not run), not only jaula's codes
    return err


def terminal_size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on `fd`, or (0, 0)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 0, 0
    return size.columns, size.lines


def relay(stream: Stream, *, tty: bool, stdin: int = 0, stdout: int = 1, stderr: int = 2,
          detach: bytes | None = None, forward_signals: bool = True, cbreak: bool = False) -> int:
    """Copy `stdin` to the stream and its output to `stdout`/`stderr` until it ends; the command's
    exit code (or raise the error jaulad sent). With `tty` and a terminal on `stdin`, the
    terminal is raw meanwhile and its resizes are sent. `detach` (bytes typed on stdin) ends the
    relay at once (returns 0). Without a tty, SIGINT, SIGTERM and SIGHUP go to the command. `cbreak`:
    the terminal only stops echoing and waiting for lines (a console's output is a file's bytes,
    not a pty's: the terminal still turns its newlines into line starts; ctrl-c still stops us)."""
    # What the caller printed before comes out before the command's output, which goes to the fds
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (AttributeError, OSError, ValueError):
            pass
    raw = tty and os.isatty(stdin)
    old_attrs = None
    old_handlers: dict[int, Any] = {}
    main = threading.current_thread() is threading.main_thread()
    detached = threading.Event()
    try:
        if raw:
            import termios
            import tty as tty_mod

            old_attrs = termios.tcgetattr(stdin)
            (tty_mod.setcbreak if cbreak else tty_mod.setraw)(stdin)
        if main and raw and not cbreak:
            old_handlers[signal.SIGWINCH] = signal.signal(
                signal.SIGWINCH, lambda *_: _quiet(stream.resize, *(v or 1 for v in terminal_size(stdin))))
        elif main and forward_signals and not tty:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                old_handlers[sig] = signal.signal(sig, lambda n, _f: _quiet(stream.signal, n))
        threading.Thread(target=_pump_stdin, args=(stream, stdin, detach, detached), daemon=True,
                         name="jaula-stdin").start()
        while (frame := stream.recv()) is not None:
            channel, payload = frame
            if channel == frames.STDOUT:
                _write(stdout, payload)
            elif channel == frames.STDERR:
                _write(stderr, payload)
            elif channel == frames.CONTROL:
                msg = frames.parse_control(payload, from_client=False)
                if msg["type"] == "exit":
                    return int(msg["code"])
                raise _error(msg)
        if detached.is_set():
            return 0
        raise JaulaError("jaulad closed the stream without saying how the command ended")
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if old_attrs is not None:
            import termios

            termios.tcsetattr(stdin, termios.TCSADRAIN, old_attrs)
        stream.close()


def _quiet(fn: Any, *args: Any) -> None:
    with contextlib.suppress(Exception):
        fn(*args)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pump_stdin(stream: Stream, fd: int, detach: bytes | None, detached: threading.Event) -> None:
    prev = b""
    try:
        while data := os.read(fd, 65536):
            if detach and detach in prev[-1:] + data:
                detached.set()
                stream.close()
                return
            prev = data
            stream.send_stdin(data)
        stream.close_stdin()
    except Exception:  # noqa: BLE001 - the stream ended (or stdin broke): the receiver says how
        return


def main_fds() -> tuple[int, int, int]:
    """The process's own stdin, stdout, stderr, flushed first (click may have buffered)."""
    sys.stdout.flush()
    sys.stderr.flush()
    return 0, 1, 2
