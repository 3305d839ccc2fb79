"""What `jaula` imports for a command (its start-up time: bench/cli_startup.py has the figures):
`--help` no HTTP client, no rich, no yaml and nothing of the daemon's side; a command talking to
jaulad httpx without httpx's own command-line tool (click, rich's syntax, pygments), and a
client over the UNIX socket that loads no CA bundle (no TLS there). Each check runs in a fresh
interpreter, as the CLI does."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

from jaula.client import Client

REPO = Path(__file__).resolve().parents[2]
SERVER_SIDE = ("jaula.daemon", "fastapi", "starlette", "uvicorn", "pydantic", "sqlite3")


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (stdout kept apart)."""
    script = (f"import sys, json, io, contextlib\nout = io.StringIO()\nwith contextlib.redirect_stdout(out):\n"
              f"    {code}\nprint(json.dumps(sorted(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                       env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "JAULA_NO_AUTOSTART": "1"})
    return set(json.loads(r.stdout.splitlines()[-1]))


def _under(mods: set[str], tops: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if any(m == t or m.startswith(t + ".") for t in tops))


def test_help_imports_no_http_client_rich_yaml_or_server_side() -> None:
    mods = _modules_after("from jaula.cli.main import cli; cli(['--help'], prog_name='jaula', standalone_mode=False)")
    assert "jaula.cli.main" in mods and "click" in mods
    assert _under(mods, ("httpx", "httpcore", "rich", "yaml", "websockets", "jaula.client.rest")) == []
    assert _under(mods, SERVER_SIDE) == []


def test_the_client_imports_httpx_without_its_command_line_tool() -> None:
    # a socket client's JSON calls need no httpx (jaula.client.uds_http)
    mods = _modules_after("from jaula.client import Client; c = Client('/nonexistent.sock'); "
                          "exec('try: c.list()\\nexcept Exception as e: assert \"Cannot reach\" in str(e), e'); c.close()")
    assert "jaula.client.rest" in mods and "jaula.client.uds_http" in mods
    assert _under(mods, ("httpx", "httpcore", "h11")) == []
    # a stream, an upload, a download or a remote imports it, still without its tool
    mods = _modules_after("from jaula.client import Client; c = Client('/nonexistent.sock'); c._http; c.close()")
    assert "httpx" in mods and "jaula.client.rest" in mods
    assert _under(mods, ("httpx._main", "pygments", "rich", "click")) == []
    assert _under(mods, SERVER_SIDE) == []
    # and httpx's tool is still importable afterwards, by whoever wants it
    mods = _modules_after("import jaula.client.rest; import httpx._main")
    assert "httpx._main" in mods


def test_a_socket_client_makes_no_tls_context_with_the_ca_bundle() -> None:
    with Client("/nonexistent.sock") as c:
        pool = c._http._transport._pool  # httpx's HTTPTransport -> httpcore's pool
        ctx = pool._ssl_context
        assert ctx is None or (ctx.verify_mode == ssl.CERT_NONE and ctx.cert_store_stats()["x509_ca"] == 0)


def test_the_cli_modules_are_registered_when_first_looked_for() -> None:
    mods = _modules_after("import jaula.cli.main")
    assert _under(mods, ("jaula.cli.inside", "jaula.cli.snapshots", "jaula.cli.templates_host",
                         "jaula.cli.events", "jaula.cli.stats")) == []
    code = ("from click.testing import CliRunner; from jaula.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0; "
            "assert all(f'  {c} ' in r.output for c in ('exec', 'snapshot', 'network', 'template', 'list')), r.output; "
            "r = CliRunner().invoke(cli, ['config', 'edit', '--help']); assert r.exit_code == 0, r.output")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={"PYTHONPATH": str(REPO / "src")})
