"""`jaula network ...`, `jaula nic ...` and the IPV4 column of `jaula list` against the API with
the fake backend and a recording host side; and the host network mode in the rendered config."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from jaula.cli.main import cli
from jaula.instances.model import Instance
from tests.unit.network_fakes import RecordingPlumbing
from tests.unit.test_instances_render import rendered


def jaula(api, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--socket", api.socket, *args], catch_exceptions=False)


def test_network_forward_and_nic_commands(api) -> None:
    svc = api.app.state.networks
    svc.plumbing, svc.tag = RecordingPlumbing(), "t1"
    r = jaula(api, "network", "create", "lab", "-c", "ipv4.address=10.9.9.1/24", "-c", "ipv6.address=none")
    assert r.exit_code == 0 and "IPv4 10.9.9.1/24" in r.output, r.output
    r = jaula(api, "network", "create", "bad", "-c", "isolation=maybe", "-c", "mtu=9")
    assert r.exit_code == 3 and "isolation: 'maybe'" in r.output and "mtu: 9 is out of range" in r.output
    assert jaula(api, "launch", "bb", "web1", "-c", "nic.eth0.network=lab").exit_code == 0
    table = jaula(api, "list").output
    assert "IPV4" in table and "10.9.9.2 (eth0)" in table
    assert json.loads(jaula(api, "list", "--format", "json").output)[0]["ipv4"] == "10.9.9.2 (eth0)"
    assert "web1" in jaula(api, "network", "list").output
    assert "used_by:\n- web1" in jaula(api, "network", "show", "lab").output
    assert jaula(api, "network", "set", "lab", "isolation=isolate").exit_code == 0

    assert jaula(api, "network", "forward", "add", "lab", "web1", "8080", "80").exit_code == 0
    assert "8080" in jaula(api, "network", "forward", "list", "lab").output
    r = jaula(api, "network", "forward", "add", "lab", "web1", "8080", "81")
    assert r.exit_code == 5 and "already forwarded" in r.output
    assert jaula(api, "network", "forward", "remove", "lab", "8080").exit_code == 0

    r = jaula(api, "nic", "add", "web1", "eth1", "network=lab", "ipv4=10.9.9.77")
    assert r.exit_code == 0 and "10.9.9.77" in r.output, r.output
    assert "10.9.9.77" in jaula(api, "nic", "list", "web1").output
    assert jaula(api, "nic", "remove", "web1", "eth1").exit_code == 0
    r = jaula(api, "network", "delete", "lab")
    assert r.exit_code == 6 and "used by web1" in r.output
    assert jaula(api, "delete", "--force", "web1").exit_code == 0
    assert jaula(api, "network", "delete", "lab").exit_code == 0


def test_host_network_mode_keeps_the_host_netns(tmp_path: Path) -> None:
    own = Instance.new("h1", "bb", config={"security.privileged": "true", "network.mode": "host",
                                           "nic.eth0.type": "none"})
    assert "network" not in [n["type"] for n in rendered(tmp_path, own)["linux"]["namespaces"]]
    private = Instance.new("p1", "bb", idmap_base=100000)
    assert "network" in [n["type"] for n in rendered(tmp_path, private)["linux"]["namespaces"]]


def test_host_network_mode_warns(api) -> None:
    r = CliRunner().invoke(cli, ["--socket", api.socket, "create", "bb", "h1", "-c", "security.privileged=true",
                                 "-c", "network.mode=host", "-c", "nic.eth0.type=none"], catch_exceptions=False)
    assert r.exit_code == 0 and "Warning: h1 shares the host's network stack" in r.output
    r = CliRunner().invoke(cli, ["--socket", api.socket, "create", "bb", "h2", "-c", "network.mode=host"],
                           catch_exceptions=False)
    assert r.exit_code == 3 and "only for a privileged instance" in r.output
