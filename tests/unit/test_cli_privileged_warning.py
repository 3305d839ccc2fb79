"""A privileged instance is made only on request, and with a warning (issue 6): `jaula create` and
`jaula launch` say so on stderr whether -c or a profile asked for it; a default instance gets none.
Against the API with the fake backend."""

from __future__ import annotations

from click.testing import CliRunner

from jaula.cli.main import cli


def jaula(api, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--socket", api.socket, *args], catch_exceptions=False)


def test_privileged_warns_and_default_does_not(api) -> None:
    r = jaula(api, "create", "bb", "p1", "-c", "security.privileged=true", "-c", "nic.eth0.type=none")
    assert r.exit_code == 0 and "Warning: p1 is privileged" in r.stderr and "root on the host" in r.stderr, r.output
    r = jaula(api, "create", "bb", "u1", "-c", "nic.eth0.type=none")
    assert r.exit_code == 0 and "Warning" not in r.output, r.output

    assert jaula(api, "profile", "create", "priv").exit_code == 0
    assert jaula(api, "profile", "set", "priv", "security.privileged=true").exit_code == 0
    r = jaula(api, "create", "bb", "p2", "-p", "priv", "-c", "nic.eth0.type=none")
    assert r.exit_code == 0 and "Warning: p2 is privileged" in r.stderr, r.output
