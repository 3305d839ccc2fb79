"""A client of jaulad's REST API over its UNIX socket (httpx), for the CLI, tests and scripts.

Responses come back as the API's `metadata` (plain JSON); an error response raises the
`jaula.errors` class of its exit code (NotFound, ConfigError with `.problems`, BadState...) with
the API's message, and a failed operation raises the same way once waited on.
"""

from __future__ import annotations

import contextlib
import json as _json
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from jaula.client.networks import NetworkMethods
from jaula.errors import (
    BadState,
    ConfigError,
    Exists,
    ExitCode,
    JaulaError,
    KernelMissing,
    Locked,
    NotFound,
)

if TYPE_CHECKING:
    import httpx

DEFAULT_SOCKET = "/run/jaula/jaula.sock"
_DEFAULT: Any = object()  # the client's own timeout
_BY_EXIT = {ExitCode.INVALID_CONFIG: ConfigError, ExitCode.NOT_FOUND: NotFound, ExitCode.EXISTS: Exists,
            ExitCode.BAD_STATE: BadState, ExitCode.LOCKED: Locked, ExitCode.KERNEL: KernelMissing}


class Unreachable(JaulaError):
    """No jaulad answers on the socket."""


def _httpx() -> Any:
    """httpx (without its CLI's imports), imported when a stream, an upload, a download or a
    remote first needs it: plain JSON calls over the socket use jaula.client.uds_http."""
    from jaula.client.httpx_core import httpx

    return httpx


def default_socket() -> str:
    return os.environ.get("JAULA_SOCKET") or DEFAULT_SOCKET


def error_from(body: dict[str, Any], status: int | None = None) -> JaulaError:
    """The jaula.errors exception an error envelope (or a failed operation) stands for."""
    message = body.get("error") or body.get("err") or f"jaulad answered {status} with no message"
    exit_code = body.get("exit_code", body.get("metadata", {}).get("exit_code", ExitCode.FAILURE))
    cls = _BY_EXIT.get(exit_code, JaulaError)
    exc: JaulaError = ConfigError(body.get("problems") or [message]) if cls is ConfigError else cls(message)
    if cls is ConfigError:
        exc.args = (message,)
    exc.status_code = status  # type: ignore[attr-defined]
    return exc


class Client(NetworkMethods):  # NetworkMethods: networks, NICs, forwards (client/networks.py)
    """`Client("/run/jaula/jaula.sock")`: one connection pool; use as a context manager or close()."""

    def __init__(self, socket_path: str | None = None, timeout: float = 30.0, *,
                 remote: str | None = None, token: str | None = None) -> None:
        """Over the UNIX socket, or over TCP with `remote` ("http://127.0.0.1:8443") and its
        `token` (jaulad --show-token)."""
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._uds: Any = None  # plain JSON calls without httpx: uds_http.Connections to the socket
        if remote:
            from jaula.client.remote import http_client

            self.socket_path = remote  # named in messages: where jaulad was looked for
            self._client = http_client(remote, token, timeout)
        else:
            from jaula.client.uds_http import Connections

            self.socket_path = socket_path or default_socket()
            self._uds = Connections(self.socket_path)

    @property
    def _http(self) -> httpx.Client:
        """The httpx client, made on first use (streams, uploads, downloads, remotes)."""
        if self._client is None:
            httpx = _httpx()
            # verify=False: plain HTTP on a UNIX socket never uses TLS, and the default (verify=True)
            # loads the system's CA bundle into an SSL context at once: ~30 ms of every `jaula` call
            self._client = httpx.Client(transport=httpx.HTTPTransport(uds=self.socket_path, verify=False),
                                        base_url="http://jaulad", timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._uds is not None:
            self._uds.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = _DEFAULT) -> dict[str, Any]:
        """The whole envelope of a successful response; raises the error of any other.
        `timeout`: seconds of silence allowed (None: no limit; default: the client's)."""
        unreachable = (f"Cannot reach jaulad at {self.socket_path!r} ({{}}): is it running? "
                       "Start it, or give its socket with --socket or JAULA_SOCKET")
        late = f"jaulad at {self.socket_path!r} did not answer {method} {path} in time"
        if self._uds is not None:
            try:
                status, raw = self._uds.request(method, path, params=params, json=json,
                                                timeout=self.timeout if timeout is _DEFAULT else timeout)
            except TimeoutError:
                raise JaulaError(late) from None
            except OSError as exc:
                raise Unreachable(unreachable.format(exc)) from None
        else:
            httpx = _httpx()
            try:
                resp = self._http.request(method, path, json=json, params=params,
                                          timeout=httpx.USE_CLIENT_DEFAULT if timeout is _DEFAULT else timeout)
            except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as exc:
                raise Unreachable(unreachable.format(exc)) from None
            except httpx.TimeoutException:
                raise JaulaError(late) from None
            status, raw = resp.status_code, resp.content
        try:
            body = _json.loads(raw)
        except ValueError:
            raise JaulaError(f"jaulad answered {method} {path} with {status} and no JSON") from None
        if not isinstance(body, dict):
            raise JaulaError(f"jaulad answered {method} {path} with {status} and JSON that is not an envelope")
        if body.get("type") == "error" or status >= 400:
            raise error_from(body, status)
        return body

    def _sync(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw)["metadata"]

    def _async(self, method: str, path: str, wait: bool, **kw: Any) -> dict[str, Any]:
        op = self.request(method, path, **kw)["metadata"]
        return self.wait_operation(op["id"]) if wait else op

    # -- server, operations ----------------------------------------------------------------
    def server(self) -> dict[str, Any]:
        return self._sync("GET", "/1.0")

    def operations(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._sync("GET", "/1.0/operations", params={"status": status} if status else None)

    def operation(self, op_id: str) -> dict[str, Any]:
        return self._sync("GET", f"/1.0/operations/{op_id}")

    def wait_operation(self, op_id: str, timeout: float | None = None, check: bool = True) -> dict[str, Any]:
        """The operation once ended (or after `timeout` s); with `check`, a failure raises its error."""
        op = self._sync("GET", f"/1.0/operations/{op_id}/wait",
                        params={"timeout": -1 if timeout is None else timeout},
                        timeout=None if timeout is None else timeout + 10)
        if check and op["status"] == "failure":
            raise error_from(op)
        return op

    # -- instances ---------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        return self._sync("GET", "/1.0/instances")

    def get(self, name: str) -> dict[str, Any]:
        return self._sync("GET", f"/1.0/instances/{name}")

    def state(self, name: str) -> dict[str, Any]:
        return self._sync("GET", f"/1.0/instances/{name}/state")

    def stats(self, name: str) -> dict[str, Any]:
        """Its beancounters: {"name", "cpu_usage_ns", "rows": [{resource, held, maxheld, limit, failcnt...}]}."""
        return self._sync("GET", f"/1.0/instances/{name}/stats")

    def events(self, after: int = 0, type_: str | None = None, timeout: float = 0) -> list[dict[str, Any]]:
        """Stored lifecycle events after id `after`, oldest first; waits up to `timeout` s for the
        first one. `type_`: one action, e.g. "instance-started"."""
        params: dict[str, Any] = {"after": after, "timeout": timeout}
        if type_:
            params["type"] = type_
        return self._sync("GET", "/1.0/events/history", params=params, timeout=timeout + 30)

    def stream_events(self, types: str | None = None) -> Iterator[dict[str, Any]]:
        """Events as they happen (`GET /1.0/events`), until the stream ends or the caller stops;
        `types`: "lifecycle,operation,logging" or a part. Subscribed once the first `next()`
        returns or, for a caller that must not miss what it does next, once `open_events` did."""
        with self.open_events(types) as lines:
            yield from lines

    @contextlib.contextmanager
    def open_events(self, types: str | None = None) -> Iterator[Iterator[dict[str, Any]]]:
        """`with c.open_events("lifecycle") as events:` subscribed on entry; iterate `events`."""
        httpx = _httpx()
        params = {"type": types} if types else None
        try:
            with self._http.stream("GET", "/1.0/events", params=params, timeout=httpx.Timeout(30, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from(resp.json(), resp.status_code)

                def lines() -> Iterator[dict[str, Any]]:
                    try:
                        for line in resp.iter_lines():
                            if line.strip():  # empty lines are keep-alives
                                yield _json.loads(line)
                    except (httpx.RemoteProtocolError, httpx.ReadError):
                        return  # jaulad went away: the stream ends
                yield lines()
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise Unreachable(f"Cannot reach jaulad at {self.socket_path!r} ({exc}): is it running?") from None

    def cancel_operation(self, op_id: str) -> dict[str, Any]:
        return self._sync("DELETE", f"/1.0/operations/{op_id}")

    def create(self, template: str, name: str, *, config: dict[str, str] | None = None,
               profiles: list[str] | None = None, mode: str = "system", description: str = "",
               command: list[str] | None = None, start: bool = False, wait: bool = True) -> dict[str, Any]:
        """`command`: an app instance's own (mode "app"); none: its template's. `start`: started
        in the same operation (a launch), refused before anything is made when the host's
        capacity cannot take its start."""
        body: dict[str, Any] = {"name": name, "template": template, "mode": mode, "config": config or {},
                                "profiles": profiles or [], "description": description}
        if command:
            body["command"] = list(command)
        if start:
            body["start"] = True
        return self._async("POST", "/1.0/instances", wait, json=body)

    def update(self, name: str, *, config: dict[str, str | None] | None = None,
               profiles: list[str] | None = None, description: str | None = None) -> dict[str, Any]:
        """Change settings (None or "" unsets a key), profiles or description; the instance after."""
        body = {k: v for k, v in (("config", config), ("profiles", profiles), ("description", description))
                if v is not None}
        return self._sync("PATCH", f"/1.0/instances/{name}", json=body)

    def delete(self, name: str, *, force: bool = False, wait: bool = True) -> dict[str, Any]:
        return self._async("DELETE", f"/1.0/instances/{name}", wait, params={"force": force})

    def _state(self, name: str, action: str, wait: bool, **kw: Any) -> dict[str, Any]:
        path, body = f"/1.0/instances/{name}/state", {"action": action, **kw}
        if not wait:
            return self._async("PUT", path, False, json=body)
        # one request: jaulad answers once the operation ended (`?wait=-1`); a jaulad that does
        # not know `wait` answers at once, and the operation is then waited on as before
        op = self.request("PUT", path, json=body, params={"wait": -1}, timeout=None)["metadata"]
        if op["status"] not in ("success", "failure", "cancelled"):
            return self.wait_operation(op["id"])
        if op["status"] == "failure":
            raise error_from(op)
        return op

    def start(self, name: str, *, wait: bool = True) -> dict[str, Any]:
        return self._state(name, "start", wait)

    def stop(self, name: str, *, force: bool = False, timeout: float = 30.0, wait: bool = True) -> dict[str, Any]:
        return self._state(name, "stop", wait, force=force, timeout=timeout)

    def restart(self, name: str, *, force: bool = False, timeout: float = 30.0, wait: bool = True) -> dict[str, Any]:
        return self._state(name, "restart", wait, force=force, timeout=timeout)

    def freeze(self, name: str, *, wait: bool = True) -> dict[str, Any]:
        return self._state(name, "freeze", wait)

    def unfreeze(self, name: str, *, wait: bool = True) -> dict[str, Any]:
        return self._state(name, "unfreeze", wait)

    # -- profiles ----------------------------------------------------------------------------
    def profiles(self) -> list[dict[str, Any]]:
        return self._sync("GET", "/1.0/profiles")

    def profile(self, name: str) -> dict[str, Any]:
        return self._sync("GET", f"/1.0/profiles/{name}")

    def create_profile(self, name: str, config: dict[str, str] | None = None,
                       description: str = "") -> dict[str, Any]:
        return self._sync("POST", "/1.0/profiles",
                          json={"name": name, "config": config or {}, "description": description})

    def update_profile(self, name: str, config: dict[str, str | None] | None = None,
                       description: str | None = None) -> dict[str, Any]:
        """Set keys (None or "" removes one) and/or the description; checked for every instance
        using it first. {"profile", "live": {instance: keys}, "next_start": {instance: keys}}."""
        return self._sync("PATCH", f"/1.0/profiles/{name}",
                          json={"config": config or {}, "description": description})

    def replace_profile(self, name: str, config: dict[str, str], description: str | None = None) -> dict[str, Any]:
        """Make `config` the profile's whole config; the same answer as update_profile."""
        return self._sync("PUT", f"/1.0/profiles/{name}", json={"config": config, "description": description})

    def rename_profile(self, name: str, new_name: str) -> dict[str, Any]:
        return self._sync("POST", f"/1.0/profiles/{name}", json={"name": new_name})

    def delete_profile(self, name: str) -> None:
        self._sync("DELETE", f"/1.0/profiles/{name}")

    # -- templates ---------------------------------------------------------------------------
    def templates(self) -> list[dict[str, Any]]:
        return self._sync("GET", "/1.0/templates")

    def template(self, name: str) -> dict[str, Any]:
        return self._sync("GET", f"/1.0/templates/{name}")

    def build_template(self, name: str, source: str, options: dict[str, Any] | None = None, *,
                       replace: bool = False, wait: bool = True) -> dict[str, Any]:
        """Build a template (an operation: its metadata has stage, done, total while it runs)."""
        return self._async("POST", "/1.0/templates", wait,
                           json={"name": name, "source": source, "options": options or {}, "replace": replace})

    def import_template(self, name: str, path: str, *, format: str = "tarball", replace: bool = False,
                        wait: bool = True) -> dict[str, Any]:
        """A template from an archive at `path` on jaulad's host (tarball: a root tree; image: OCI/docker)."""
        return self._async("POST", "/1.0/templates/import", wait,
                           json={"name": name, "path": path, "format": format, "replace": replace})

    def delete_template(self, name: str) -> dict[str, Any]:
        return self._sync("DELETE", f"/1.0/templates/{name}")

    # -- host --------------------------------------------------------------------------------
    def host(self) -> dict[str, Any]:
        return self._sync("GET", "/1.0/host")

    def set_host(self, ratios: dict[str, float]) -> dict[str, Any]:
        return self._sync("PUT", "/1.0/host", json=ratios)

    # -- snapshots, copy, export and import ----------------------------------------------------
    def snapshots(self, name: str) -> list[dict[str, Any]]:
        return self._sync("GET", f"/1.0/instances/{name}/snapshots")

    def snapshot(self, name: str, snap: str) -> dict[str, Any]:
        return self._sync("GET", f"/1.0/instances/{name}/snapshots/{snap}")

    def create_snapshot(self, name: str, snap: str, *, wait: bool = True) -> dict[str, Any]:
        """Snapshot instance `name` (running or not); the operation's metadata has the snapshot."""
        return self._async("POST", f"/1.0/instances/{name}/snapshots", wait, json={"name": snap})

    def restore_snapshot(self, name: str, snap: str, *, stop: bool = False, timeout: float = 30.0,
                         wait: bool = True) -> dict[str, Any]:
        """Bring `name` back to snapshot `snap`; `stop`: a running instance is stopped, restored, started."""
        return self._async("POST", f"/1.0/instances/{name}/snapshots/{snap}/restore", wait,
                           json={"stop": stop, "timeout": timeout})

    def delete_snapshot(self, name: str, snap: str, *, wait: bool = True) -> dict[str, Any]:
        return self._async("DELETE", f"/1.0/instances/{name}/snapshots/{snap}", wait)

    def copy(self, source: str, name: str, *, snapshot: str | None = None, description: str | None = None,
             snapshots: bool = False, wait: bool = True) -> dict[str, Any]:
        """A new stopped instance `name` from `source` (or from its snapshot `snapshot`); with
        `snapshots`, the source's snapshots become the copy's too."""
        return self._async("POST", f"/1.0/instances/{source}/copy", wait,
                           json={"name": name, "snapshot": snapshot, "description": description,
                                 "snapshots": snapshots})

    def export(self, name: str, path: str, *, snapshots: bool = False, wait: bool = True) -> dict[str, Any]:
        """Write a backup of `name` (with its snapshots?) to new file `path` on jaulad's host (absolute)."""
        return self._async("POST", f"/1.0/instances/{name}/export", wait, json={"path": path, "snapshots": snapshots})

    def import_(self, path: str, name: str | None = None, *, wait: bool = True) -> dict[str, Any]:
        """A new stopped instance from backup `path` on jaulad's host (absolute), named `name` or as in the file."""
        return self._async("POST", "/1.0/import", wait, json={"path": path, "name": name})

    def export_to(self, name: str, file: str, *, compression: str = "gzip", snapshots: bool = False,
                  follow: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Export `name` (with its snapshots?) and download the backup into new local `file`
        (written whole or not at all). `follow(op)`: waits for the export's operation instead of
        `wait_operation` (the CLI's, which cancels it on Ctrl-C)."""
        if os.path.lexists(file):
            raise Exists(f"{file!r} exists already: give the name of a new file")
        op = self._async("POST", f"/1.0/instances/{name}/export", follow is None,
                         json={"compression": compression, "snapshots": snapshots})
        if follow is not None:
            op = follow(op)
        partial = f"{file}.partial-{os.getpid()}"
        httpx = _httpx()
        try:
            with self._http.stream("GET", op["metadata"]["download"], timeout=httpx.Timeout(30, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from(resp.json(), resp.status_code)
                with open(partial, "xb") as f:
                    f.writelines(resp.iter_bytes(1 << 20))
            os.link(partial, file)  # fails rather than replace a file made meanwhile
        finally:
            if os.path.lexists(partial):
                os.unlink(partial)
        return op

    def import_from(self, file: str, name: str | None = None, *, wait: bool = True,
                    follow: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Upload local backup `file` and import it as a new instance (`name`, or the one in the
        file); `follow(op)` waits for the import's operation instead of `wait_operation`."""
        httpx = _httpx()
        with open(file, "rb") as f:
            try:
                resp = self._http.post("/1.0/import/upload", params={"name": name} if name else None, content=f,
                                       headers={"Content-Type": "application/octet-stream"},
                                       timeout=httpx.Timeout(30, read=None, write=None))
            except (httpx.ConnectError, FileNotFoundError) as exc:
                raise Unreachable(f"Cannot reach jaulad at {self.socket_path!r} ({exc}): is it running?") from None
        body = resp.json()
        if body.get("type") == "error" or resp.status_code >= 400:
            raise error_from(body, resp.status_code)
        if follow is not None:
            return follow(body["metadata"])
        return self.wait_operation(body["metadata"]["id"]) if wait else body["metadata"]

    # -- inside an instance: exec, console, logs, files (jaula.client.stream) -----------------
    def exec(self, name: str, command: list[str], *, environment: dict[str, str] | None = None,
             user: int | None = None, group: int | None = None, cwd: str | None = None,
             interactive: bool = False, width: int = 0, height: int = 0) -> dict[str, Any]:
        """Ask for a command in `name`: the operation, whose metadata holds its websocket and
        secret; `attach(op)` opens the stream (the command starts then)."""
        body = {"command": list(command), "environment": environment or {}, "user": user, "group": group,
                "cwd": cwd, "interactive": interactive, "width": width, "height": height}
        return self.request("POST", f"/1.0/instances/{name}/exec", json=body)["metadata"]

    def _stream(self, path: str, secret: str = "") -> Any:
        from jaula.client.stream import Stream

        auth = None if self._uds is not None else self._http.headers.get("authorization")
        return Stream(self.socket_path, path, secret, {"Authorization": auth} if auth else None)

    def attach(self, op: dict[str, Any]) -> Any:
        """The stream of an exec operation (jaula.client.stream.Stream)."""
        return self._stream(op["metadata"]["websocket"], op["metadata"]["secret"])

    def console(self, name: str, *, replay: bool = False, attach: bool = False) -> Any:
        """Follow the console output of `name` (a Stream; with `replay`, the kept output first);
        with `attach`, read and write a running system instance's console (its pty)."""
        self.get(name)  # a clear NotFound before the websocket
        return self._stream(f"/1.0/instances/{name}/console?replay={'true' if replay else 'false'}"
                            + ("&attach=true" if attach else ""))

    def _raw(self, method: str, path: str, **kw: Any) -> httpx.Response:
        httpx = _httpx()
        try:
            resp = self._http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as exc:
            raise Unreachable(f"Cannot reach jaulad at {self.socket_path!r} ({exc}): is it running?") from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"error": resp.text[:500]}
            raise error_from(body, resp.status_code)
        return resp

    def console_log(self, name: str) -> bytes:
        """The kept console output of `name` (its last 128 KiB)."""
        return self._raw("GET", f"/1.0/instances/{name}/console").content

    def logs(self, name: str) -> bytes:
        """The instance's output log (its init's stdout and stderr; the last 128 KiB)."""
        return self._raw("GET", f"/1.0/instances/{name}/logs").content

    def pull_file(self, name: str, path: str, *, follow: bool = True) -> tuple[dict[str, Any], bytes]:
        """({"type", "uid", "gid", "mode", "entries"?, "target"?}, content) of `path` inside
        `name`: a file's bytes, or a directory's entries (a list in the first item, b"" as
        content); without `follow`, a symlink as itself (type "symlink", its "target")."""
        resp = self._raw("GET", f"/1.0/instances/{name}/files",
                         params={"path": path, "follow": "true" if follow else "false"})
        h = resp.headers
        meta: dict[str, Any] = {"type": h.get("x-jaula-type", "file"), "uid": int(h.get("x-jaula-uid", 0)),
                                "gid": int(h.get("x-jaula-gid", 0)), "mode": int(h.get("x-jaula-mode", "644"), 8)}
        if meta["type"] == "directory":
            meta["entries"] = resp.json()["metadata"]
            return meta, b""
        if meta["type"] == "symlink":
            meta["target"] = resp.json()["metadata"]["target"]
            return meta, b""
        return meta, resp.content

    def push_file(self, name: str, path: str, content: bytes = b"", *, type_: str = "file", uid: int = 0,
                  gid: int = 0, mode: int | None = None) -> None:
        """Write `content` to `path` inside `name` (type_ "directory": make it), owned by the
        instance's `uid`/`gid`, with `mode` (default 0644, 0755 for a directory)."""
        headers = {"X-Jaula-Type": type_, "X-Jaula-Uid": str(uid), "X-Jaula-Gid": str(gid)}
        if mode is not None:
            headers["X-Jaula-Mode"] = f"{mode:04o}"
        self._raw("POST", f"/1.0/instances/{name}/files", params={"path": path}, content=content,
                  headers=headers)
