"""An instance's own firewall, made by its own root: a default (unprivileged, user-namespaced)
busybox instance started by jaulad loads nftables rules inside and they take effect on real traffic
from the host, then go when it flushes them, and the host's ruleset never sees them.

The busybox template has no nft. The host's /usr/sbin/nft and the libraries it links (found with
ldd), with their own loader, are pushed into the instance's root through jaulad's file API, and run
through jaulad's exec API as `/opt/nft/ld-linux-x86-64.so.2 --library-path /opt/nft /opt/nft/nft`:
the rules are made by a process of the instance (its root in its user namespace, its capabilities,
its seccomp profile, its network namespace), not by the host's root entering it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_jaulad import JAULA, Daemon, daemon  # noqa: F401 (the fixture)
from tests.support import network as netsupport

pytestmark = pytest.mark.root

NFT = "/usr/sbin/nft"
NAME = "fw1"


def _nft_bundle(into: Path) -> str:
    """The host's nft, each library it links and its loader, in one folder; returns the loader's name."""
    out = subprocess.run(["ldd", NFT], check=True, capture_output=True, text=True).stdout
    loader = ""
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if not m:
            continue
        path = Path(m.group(1))
        name = line.split()[0] if "=>" in line else path.name
        shutil.copyfile(path, into / Path(name).name)    # follows the soname's link
        (into / Path(name).name).chmod(0o755)
        if "ld-linux" in path.name:
            loader = path.name
    shutil.copyfile(NFT, into / "nft")
    (into / "nft").chmod(0o755)
    assert loader, out
    return loader


@pytest.fixture
def fwd(daemon: Daemon) -> Iterator[Daemon]:  # noqa: F811
    try:
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            subprocess.run([*JAULA, "--socket", str(daemon.socket), "delete", "--force", NAME],
                           check=False, capture_output=True, timeout=60)
            daemon.proc.kill()
            daemon.proc.wait(10)


def _answers(url: str, tries: int = 3) -> bool:
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode() == "inside\n"
        except OSError:
            time.sleep(0.2)
    return False


def _host_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(not os.access(NFT, os.X_OK), reason="needs the host's nft (Debian's nftables)")
def test_instance_root_runs_its_own_nftables_firewall(fwd: Daemon) -> None:
    d = fwd
    d.start()
    bridge = "jbi" + secrets.token_hex(4)
    d.jaula("network", "create", "inlab", "-c", f"bridge={bridge}", "-c", "ipv6.address=none")
    d.jaula("launch", "busybox", NAME, "-c", "nic.eth0.network=inlab")
    pid = d.note(NAME)["pid"]
    # a default instance: its root is an unprivileged host uid in a user namespace of its own
    uid_map = Path(f"/proc/{pid}/uid_map").read_text().split()
    assert uid_map[0] == "0" and uid_map[1] != "0", uid_map
    address = next(a["address"] for a in _addresses(d) if a["instance"] == NAME and a["family"] == 4)

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "nft"
        bundle.mkdir()
        loader = _nft_bundle(bundle)
        d.jaula("exec", NAME, "--", "mkdir", "-p", "/opt")
        d.jaula("file", "push", "-r", str(bundle), f"{NAME}/opt/")
    nft = [f"/opt/nft/{loader}", "--library-path", "/opt/nft", "/opt/nft/nft"]

    def inside(*args: str) -> str:
        return d.jaula("exec", NAME, "--", *args)

    status = inside("cat", "/proc/self/status")     # what an exec'd process of the instance is
    assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE), "under the instance's seccomp filter"
    assert re.search(r"^Uid:\s+0\s", status, re.MULTILINE), "root inside"
    assert int(re.search(r"^CapEff:\s+(\w+)$", status, re.MULTILINE).group(1), 16) & (1 << 12), "CAP_NET_ADMIN (its userns)"
    inside("/bin/sh", "-c", "mkdir -p /www && echo inside > /www/index.html && "
                            "httpd -p 8080 -h /www && httpd -p 8081 -h /www")
    assert _answers(f"http://{address}:8080/") and _answers(f"http://{address}:8081/"), "control: both answer"
    table, _ = netsupport.daemon_network_names(d.root)
    assert f"inet {table}" in _host_tables()
    assert table not in inside(*nft, "list", "ruleset"), "the host's tables are not seen inside"

    inside(*nft, "add", "table", "inet", "own")
    inside(*nft, "add", "chain", "inet", "own", "in", "{ type filter hook input priority 0; policy accept; }")
    inside(*nft, "add", "rule", "inet", "own", "in", "tcp", "dport", "8080", "drop")
    assert "tcp dport 8080 drop" in inside(*nft, "list", "ruleset")
    assert not _answers(f"http://{address}:8080/", tries=1), "the instance's own rule drops 8080"
    assert _answers(f"http://{address}:8081/"), "and only 8080"
    # the rules live in the instance's network namespace, not in the host's
    assert "inet own" not in _host_tables()
    seen = subprocess.run(["nsenter", "-t", str(pid), "-n", "nft", "list", "tables"], check=True,
                          capture_output=True, text=True).stdout
    assert "table inet own" in seen

    inside(*nft, "flush", "ruleset")
    assert "own" not in inside(*nft, "list", "ruleset")
    assert f"inet {table}" in _host_tables(), "the instance's flush left the host's rules alone"
    assert _answers(f"http://{address}:8080/") and _answers(f"http://{address}:8081/"), "flushed: both again"

    d.jaula("delete", "--force", NAME)
    d.jaula("network", "delete", "inlab")
    assert bridge not in netsupport.links()
    assert d.leaks() == []


def _addresses(d: Daemon) -> list[dict]:
    from jaula.client import Client

    with Client(str(d.socket)) as c:
        return c.network_addresses()
