"""`jaula template ...` and `jaula host` against the API with the fake backend and template store."""

from __future__ import annotations

import os

from jaula.errors import ExitCode
from tests.unit.test_cli import jaula

GiB = 1 << 30


def test_template_build_list_import_delete(api) -> None:
    r = jaula(api, "template", "build", "bb", "busybox")
    assert r.exit_code == 0, r.output
    assert r.output.endswith("Template bb built from busybox (4.0 KiB)\n")
    r = jaula(api, "template", "import", "img", "/srv/a.tar", "--image")
    assert r.exit_code == 0, r.output
    assert api.backend.templates.builds[-1] == ("img", "oci", {"path": "/srv/a.tar"})
    r = jaula(api, "template", "import", "rel", "a.tar")
    assert r.exit_code == 0, r.output
    assert api.backend.templates.builds[-1] == ("rel", "tarball", {"path": os.path.abspath("a.tar")})
    assert jaula(api, "template", "delete", "rel").exit_code == 0
    lines = jaula(api, "template", "list").output.splitlines()
    assert lines[0].split()[:3] == ["NAME", "SOURCE", "OS"]
    assert [ln.split()[0] for ln in lines[1:]] == ["bb", "img"]
    assert jaula(api, "create", "bb", "web1").exit_code == 0
    r = jaula(api, "template", "delete", "bb")
    assert r.exit_code == ExitCode.BAD_STATE and "web1" in r.output
    assert jaula(api, "template", "delete", "img").output == "Template img deleted\n"
    r = jaula(api, "template", "build", "x", "busybox", "-o", "nokey")
    assert r.exit_code == ExitCode.USAGE


def test_a_failed_build_says_why(api) -> None:
    from jaula.errors import ConfigError
    api.backend.templates.fail = ConfigError("no busybox binary on this host")
    r = jaula(api, "template", "build", "bb", "busybox")
    assert r.exit_code == ExitCode.INVALID_CONFIG and "no busybox binary" in r.output


def test_host_table_and_refused_start(api) -> None:
    api.app.state.host.probe = lambda: {"physical": {"cpu": 2, "memory": 24 * GiB, "disk": 100 * GiB},
                                        "used": {"cpu": 0.25, "memory": 3 * GiB, "disk": 10 * GiB}}
    assert jaula(api, "launch", "bb", "db1", "-c", "limits.memory=16GiB").exit_code == 0
    r = jaula(api, "launch", "bb", "web1", "-c", "limits.memory=10GiB")
    assert r.exit_code == ExitCode.BAD_STATE
    assert "starting web1 would commit 26 GiB of memory against 24 GiB physical (ratio 1): 2 GiB over" in r.output
    assert [i["name"] for i in api.client.list()] == ["db1"]  # refused before anything was made
    out = jaula(api, "host").output.splitlines()
    assert out[0].split() == ["PHYSICAL", "RATIO", "ALLOWED", "COMMITTED", "USED"]
    assert out[1].split() == ["cpu", "2", "4", "8", "0", "0.25", "(load)"]
    assert out[2].split() == ["memory", "24.0", "GiB", "1", "24.0", "GiB", "16.0", "GiB", "3.0", "GiB"]
    assert "1 running instance(s)" in out[4]
    r = jaula(api, "host", "set", "overcommit.memory=1.5")
    assert r.exit_code == 0 and "36.0 GiB" in r.output
    assert jaula(api, "launch", "bb", "web1", "-c", "limits.memory=10GiB").exit_code == 0
