"""The control center in a real browser: Debian's headless Chromium driven by Playwright (never
`playwright install`: executable_path points at /usr/bin/chromium), against a real jaulad
(`--web`) over a private root, with a real busybox instance: log in (by keyboard), create an
instance, see it running, run a command in its shell (xterm.js over the exec websocket) and one on
its console (xterm.js attached to its /dev/console over the console websocket), change
its memory limit and see the counter's limit change, stop it, delete it. Screenshots of the
dashboard (desktop and phone sized) are kept in build/artifacts/ (web-dashboard.png,
web-dashboard-phone.png, web-instance.png; the test checks they are written). Every request the
browser makes (pages, assets, fetches, websockets) is recorded: none may leave the loopback
address (no CDN, works with no internet). Nothing is left behind."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.test_jaulad import JAULA, JAULAD, Daemon, daemon  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "build" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"
NAME = "webt1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOOPBACK = {"127.0.0.1", "localhost"}


@dataclass
class Chromium:
    """The browser's context and every URL it asked for (requests and websockets)."""
    ctx: Any
    urls: list[str] = field(default_factory=list)

    def new_page(self) -> Any:
        return self.ctx.new_page()

    def left_loopback(self) -> list[str]:
        """The URLs that went anywhere but this host (a CDN, the internet)."""
        return [u for u in self.urls if urlsplit(u).scheme not in ("data", "blob", "about")
                and urlsplit(u).hostname not in LOOPBACK]


@pytest.fixture
def browser() -> Iterator[Chromium]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras (pip)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: Debian's chromium package (scripts/setup installs it)")
    profile = tempfile.mkdtemp(prefix="jaula-chromium-")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS, headless=True,
                                                    viewport={"width": 1280, "height": 900})
        seen = Chromium(ctx)
        ctx.on("request", lambda r: seen.urls.append(r.url))
        ctx.on("page", lambda p: p.on("websocket", lambda ws: seen.urls.append(ws.url)))
        try:
            yield seen
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def deleted_at_end(daemon: Daemon) -> Iterator[list[str]]:  # noqa: F811
    """Names of instances a failed test must not leave behind: deleted (forced) while its jaulad
    still runs, before the daemon fixture kills it (that would leave their mounts and cgroups)."""
    names: list[str] = []
    yield names
    if daemon.proc is not None and daemon.proc.poll() is None:
        for name in names:
            subprocess.run([*JAULA, "--socket", str(daemon.socket), "delete", "--force", name],
                           capture_output=True, timeout=120, check=False)


def start_with_web(d: Daemon, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    r = subprocess.run([*JAULAD, "--root", str(d.root), "--set-password"], input=PASSWORD + "\n", text=True,
                       capture_output=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("JAULA_WEB", str(port))  # jaulad --web PORT, through its environment: on 127.0.0.1
    d.start()


def listening_on(port: int) -> list[str]:
    """The addresses a TCP socket listens on at `port` (/proc/net/tcp and tcp6, this namespace)."""
    import ipaddress

    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # TCP_LISTEN
                raw = bytes.fromhex(addr)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))  # host-endian words
                found.append(str(ipaddress.ip_address(raw)))
    return found


@pytest.mark.timeout(600)
def test_the_control_center_drives_a_real_instance(daemon: Daemon, browser: Chromium,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch, deleted_at_end: list[str]) -> None:
    from playwright.sync_api import expect

    port = free_port()
    deleted_at_end.append(NAME)
    start_with_web(daemon, port, monkeypatch)
    daemon.jaula("profile", "create", "webp", "-c", "limits.processes=300")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    began = time.time()
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(30_000)
    assert listening_on(port) == ["127.0.0.1"]  # `--web PORT`: loopback only
    page.goto(f"http://127.0.0.1:{port}/ui/")

    # log in by keyboard: the secret field has the focus, Enter submits
    expect(page.locator("#l-secret")).to_be_focused()
    page.keyboard.type("wrong password")
    page.keyboard.press("Enter")
    expect(page.locator("#status .msg.error")).to_contain_text("Wrong password")
    page.fill("#l-secret", "")
    page.focus("#l-secret")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("h1")).to_have_text("Dashboard")
    # the host's capacity and what is committed (nothing runs yet)
    expect(page.locator('[data-host="memory-physical"]')).to_contain_text("GiB")
    expect(page.locator('[data-host="cpu-physical"]')).to_contain_text(f"{os.cpu_count()} cpus")
    expect(page.locator('[data-host="memory-committed"]')).to_contain_text(re.compile(r"^0 B of \S+ \S+ allowed$"))

    # create and start an instance: a template, a profile besides default, limits, a network
    page.click("text=Create instance")
    page.fill("#c-name", NAME)
    expect(page.locator("#c-template option").first).to_have_attribute("value", "busybox")
    page.check('input[name="profile"][value="webp"]')
    page.fill("#c-memory", "128MiB")
    page.select_option("#c-network", "default")
    page.click("#create-form button[type=submit]")
    expect(page).to_have_url(f"http://127.0.0.1:{port}/ui/#/instances/{NAME}", timeout=180_000)
    expect(page.locator("h1 .state")).to_have_text("running", timeout=60_000)
    daemon.note(NAME)
    expect(page.locator('[data-counter="memory-limit"]')).to_have_text("128.0 MiB")
    expect(page.locator("main")).to_contain_text("profiles webp")
    expect(page.locator('[data-config="limits.processes"]')).to_have_text("300")  # from the profile
    # its NIC on the default network (made on first use), with an address
    expect(page.locator("#nics tbody tr").first).to_contain_text("eth0")
    expect(page.locator("#nics tbody tr").first).to_contain_text(re.compile(r"\d+\.\d+\.\d+\.\d+"))
    # a NIC added (plugged at once, with an address) and removed (confirmed)
    page.fill("#nic-name", "eth1")
    page.select_option("#nic-network", "default")
    page.click("text=Add NIC")
    eth1 = page.locator('#nics tr[data-nic="eth1"]')
    expect(eth1).to_contain_text(re.compile(r"\d+\.\d+\.\d+\.\d+"))
    assert "eth1" in daemon.jaula("nic", "list", NAME)
    eth1.locator("button").click()
    page.click("dialog button.danger")
    expect(eth1).to_have_count(0)
    assert "eth1" not in daemon.jaula("nic", "list", NAME)
    # a port forward from the host added, listed by the API, removed
    host_port = free_port()
    page.select_option("#fwd-nic", "eth0")
    page.fill("#fwd-host-port", str(host_port))
    page.fill("#fwd-port", "80")
    page.click("text=Add forward")
    fwd = page.locator(f'#forwards tr[data-forward="tcp/{host_port}"]')
    expect(fwd).to_contain_text("eth0:80")
    listed = page.request.get(f"http://127.0.0.1:{port}/1.0/networks/default/forwards").json()["metadata"]
    assert [(f["instance"], f["host_port"], f["port"]) for f in listed] == [(NAME, host_port, 80)], listed
    fwd.locator("button").click()
    expect(page.locator("#forwards")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("No port forward.")
    assert page.request.get(f"http://127.0.0.1:{port}/1.0/networks/default/forwards").json()["metadata"] == []

    # a command in the browser's terminal
    page.click("#open-shell")
    expect(page.locator("#terminal .xterm-rows")).to_be_visible()
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("#")  # the shell's prompt
    page.keyboard.type("echo hello-$((6*7)) from $(hostname)\n")
    expect(page.locator("#terminal .xterm-rows")).to_contain_text(f"hello-42 from {NAME}")
    page.keyboard.type("ping -c 2 -W 2 $(ip route | awk '/default/ {print $3}')\n")
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("2 packets received", timeout=20_000)
    page.click("#open-shell")  # closes it
    # the instance's own console (its /dev/console, a pty held by the console keeper): a command typed there
    page.click("#open-console")
    expect(page.locator("#console-terminal .xterm-rows")).to_be_visible()
    page.locator("#console-terminal .xterm").click()
    page.keyboard.press("Enter")  # the shell on the console prompts again
    expect(page.locator("#console-terminal .xterm-rows")).to_contain_text(f"root@{NAME}")
    page.keyboard.type("echo console-$((6*7)) from $(hostname)\n")
    expect(page.locator("#console-terminal .xterm-rows")).to_contain_text(f"console-42 from {NAME}")
    page.click("#open-console")  # detaches; the instance keeps running
    expect(page.locator("#console-terminal")).to_be_hidden()
    # the NIC's counters (its host-side veth's) saw the pings; the page graphs them
    nics = page.request.get(f"http://127.0.0.1:{port}/ui/netstats/{NAME}").json()["nics"]
    assert nics[0]["name"] == "eth0" and nics[0]["tx_packets"] >= 2 and nics[0]["rx_packets"] >= 2, nics
    expect(page.locator('[data-graph="Network in"] figcaption')).to_contain_text("/s")
    expect(page.locator('[data-graph="Network out"] figcaption')).to_contain_text("/s")
    expect(page.locator('[data-graph="Disk I/O"] figcaption')).to_contain_text("/s")
    expect(page.locator('[data-graph="CPU"] figcaption')).to_contain_text("%")
    expect(page.locator('[data-graph="Memory"] figcaption')).to_contain_text("(limit 128.0 MiB)")
    page.screenshot(path=str(ARTIFACTS / "web-instance.png"), full_page=True)

    # the memory limit, live: the counter's limit follows
    page.select_option("#cfg-key", "limits.memory")
    page.fill("#cfg-value", "96MiB")
    page.click("#config-form button[type=submit]")
    expect(page.locator('[data-config="limits.memory"]')).to_have_text("96MiB")
    expect(page.locator('[data-counter="memory-limit"]')).to_have_text("96.0 MiB")

    # a snapshot taken, listed; frozen and thawed (confirmed)
    page.fill("#snap-name", "before")
    page.click("text=Take snapshot")
    expect(page.locator("#snapshots tbody tr")).to_contain_text("before")
    page.click('[data-action="freeze"]')
    page.click("dialog button.danger")
    expect(page.locator("h1 .state")).to_have_text("frozen")
    page.click('[data-action="unfreeze"]')
    expect(page.locator("h1 .state")).to_have_text("running")
    pid = daemon.instances()[NAME]["pid"]
    page.click('[data-action="restart"]')
    page.click("dialog button.danger")
    expect(page.locator("#status .msg")).to_contain_text(f"{NAME}: restart done", timeout=60_000)
    expect(page.locator("h1 .state")).to_have_text("running")
    assert daemon.note(NAME)["pid"] != pid  # a new init

    # the dashboard: the instance running with its sparklines; screenshots (desktop, phone)
    page.click("nav >> text=Dashboard")
    row = page.locator(f'tr[data-instance="{NAME}"]')
    expect(row.locator(".state")).to_have_text("running")
    expect(page.locator("#events li").first).to_contain_text(f"instance-restarted {NAME}")  # the stored ones
    expect(page.locator('[data-host="memory-committed"]')).to_contain_text(re.compile(r"^96\.0 MiB of "))
    # live (operations are not stored: only the stream brings them): a stop and a start from the
    # CLI show up while the page stays open (no reload), and the row follows
    page.evaluate("window.jaulaNoReload = 1")  # gone if the page reloaded
    daemon.jaula("stop", NAME)
    expect(page.locator("#events li", has_text=f"Stopping instance {NAME}: success")).to_have_count(1)
    expect(row.locator(".state")).to_have_text("stopped")
    daemon.jaula("start", NAME)
    expect(page.locator("#events li", has_text=f"Starting instance {NAME}: success")).to_have_count(1)
    expect(page.locator("#events li", has_text=f"instance-started {NAME}").first).to_be_visible()
    expect(row.locator(".state")).to_have_text("running")
    assert page.evaluate("window.jaulaNoReload") == 1
    daemon.note(NAME)
    daemon.jaula("freeze", NAME)
    expect(page.locator("#events li", has_text=f"Freezing instance {NAME}: success")).to_have_count(1)
    expect(row.locator(".state")).to_have_text("frozen")
    daemon.jaula("unfreeze", NAME)
    expect(row.locator(".state")).to_have_text("running")
    # a sparkline of three samples or more (the page's CSP forbids eval: no wait_for_function)
    expect(row.locator("polyline").first).to_have_attribute("points", re.compile(r"^\S+ \S+ \S+"), timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "web-dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page overflows a phone's width"
    page.screenshot(path=str(ARTIFACTS / "web-dashboard-phone.png"), full_page=True)
    for shot in ("web-dashboard.png", "web-dashboard-phone.png", "web-instance.png"):  # kept, fresh, PNGs
        kept = ARTIFACTS / shot
        assert kept.stat().st_mtime >= began and kept.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", kept
    page.set_viewport_size({"width": 1280, "height": 900})

    # by keyboard to the instance: the focused link keeps its focus while the table refreshes
    link = row.locator("a")
    link.focus()
    points = row.locator("polyline").first.get_attribute("points")
    expect(row.locator("polyline").first).not_to_have_attribute("points", points or "", timeout=20_000)
    expect(link).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("h1 .state")).to_have_text("running")

    # stop it (confirmed in a dialog), then delete it
    page.click('[data-action="stop"]')
    expect(page.locator("dialog")).to_be_visible()
    page.click("dialog button.danger")
    expect(page.locator("h1 .state")).to_have_text("stopped", timeout=60_000)
    page.click('[data-action="delete"]')
    page.keyboard.press("Escape")  # cancelled by keyboard: nothing happens
    expect(page.locator("dialog")).to_have_count(0)
    assert NAME in daemon.instances()
    page.click('[data-action="delete"]')
    page.click("dialog button.danger")
    expect(page).to_have_url(f"http://127.0.0.1:{port}/ui/#/", timeout=60_000)
    expect(page.locator(f'tr[data-instance="{NAME}"]')).to_have_count(0)
    assert NAME not in daemon.instances()
    assert errors == [], errors
    assert browser.left_loopback() == [], browser.left_loopback()
    assert any(u.startswith("ws://127.0.0.1") for u in browser.urls), "the terminals' websockets were not seen"

    daemon.kill(15)
    assert daemon.leaks() == []


class Attacker(BaseHTTPRequestHandler):
    """Another site's page: a form that posts itself to the control center (the classic CSRF); at
    /blank, an empty page to run a script in."""
    target = ""

    def do_GET(self) -> None:  # http.server's name
        body = b"<p>blank</p>" if self.path == "/blank" else (f'<form id="f" method="post" action="{self.target}" enctype="text/plain">'
                '<input name=\'{"name": "evil", "x": "\' value=\'"}\'></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.timeout(300)
def test_templates_networks_and_csrf_in_the_browser(daemon: Daemon, browser: Chromium,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Log in by token; build a template with its progress, import one, list the networks; a
    state-changing request without the CSRF token is refused, from the page itself and from
    another site's form, and nothing is made."""
    from playwright.sync_api import expect

    port = free_port()
    start_with_web(daemon, port, monkeypatch)
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"http://127.0.0.1:{port}/ui/")
    page.select_option("#l-kind", "token")
    page.fill("#l-secret", (daemon.root / "api.token").read_text().strip())
    page.click("#login-form button")
    page.click("nav >> text=Templates")  # at once: the route asked for last wins over the login's
    expect(page.locator("h1")).to_have_text("Templates")
    page.fill("#t-name", "bb2")
    page.select_option("#t-source", "busybox")
    page.click("#build-form button[type=submit]")
    expect(page.locator("#status .msg")).to_contain_text("template bb2 built", timeout=120_000)
    expect(page.locator("#t-progress")).to_be_visible()
    expect(page.locator("#templates tbody")).to_contain_text("bb2")
    assert "bb2" in daemon.jaula("template", "list")
    # import: a root tree tarball on the host (made from the one just built)
    rootfs = daemon.root / "templates" / "bb2" / "rootfs"
    assert (rootfs / "bin").is_dir(), sorted(p.name for p in rootfs.parent.iterdir())
    archive = daemon.top / "bb.tar.gz"
    subprocess.run(["tar", "-C", str(rootfs), "-czf", str(archive), "."], check=True, timeout=60)
    page.fill("#i-name", "bb3")
    page.fill("#i-path", str(archive))
    page.select_option("#i-format", "tarball")
    page.click("#import-form button[type=submit]")
    expect(page.locator("#status .msg")).to_contain_text("template bb3 imported", timeout=120_000)
    expect(page.locator("#templates tbody")).to_contain_text("bb3")
    assert "bb3" in daemon.jaula("template", "list")

    # the networks: none yet, then one made from the CLI is listed with its subnet and bridge
    page.click("nav >> text=Networks")
    expect(page.locator("h1")).to_have_text("Networks")
    expect(page.locator("main")).to_contain_text("No network yet")
    daemon.jaula("network", "create", "webnet", "-c", "ipv4.address=auto", "-c", "ipv6.address=none")
    page.reload()
    row = page.locator("#networks tbody tr", has_text="webnet")
    expect(row).to_contain_text(re.compile(r"\d+\.\d+\.\d+\.\d+/\d+"))
    daemon.jaula("network", "delete", "webnet")

    # a bad build is refused with the API's reasons, shown on the page
    page.click("nav >> text=Templates")
    page.fill("#t-name", "../x")
    page.click("#build-form button[type=submit]")
    expect(page.locator("#status .msg.error")).to_be_visible()

    # CSRF: the page's own fetch without the token, or with a wrong one, is refused (403)
    status = page.evaluate("""async () => {
        const post = (hdrs) => fetch('/1.0/networks', {method: 'POST', credentials: 'same-origin',
          headers: {'Content-Type': 'application/json', ...hdrs}, body: JSON.stringify({name: 'evil'})});
        const a = await post({}), b = await post({'X-Jaula-CSRF': 'forged'});
        return [a.status, (await a.json()).error, b.status];
    }""")
    assert status[0] == 403 and status[0] == status[2] and "CSRF" in status[1], status
    # another origin's form (same site: the cookie goes; no token: 403), another site's (the
    # SameSite=Strict cookie stays home: 401); a websocket from either is closed at once (4403:
    # not the page's origin; 4401: no session)
    Attacker.target = f"http://127.0.0.1:{port}/1.0/networks"
    evil = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        for host, refused, ws_code in (("127.0.0.1", "Missing or wrong CSRF token", 4403), ("localhost", "Not logged in", 4401)):
            other = browser.new_page()
            other.goto(f"http://{host}:{evil.server_address[1]}/blank")
            code = other.evaluate("""(url) => new Promise((done) => {
                const ws = new WebSocket(url);
                ws.onclose = (ev) => done(ev.code);
            })""", f"ws://127.0.0.1:{port}/1.0/events")
            assert code == ws_code, (host, code)
            other.goto(f"http://{host}:{evil.server_address[1]}/")
            other.wait_for_url(Attacker.target)
            expect(other.locator("body")).to_contain_text(refused)
            other.close()
    finally:
        evil.shutdown()
        evil.server_close()
    assert "evil" not in daemon.jaula("network", "list")
    assert browser.left_loopback() == [], browser.left_loopback()
    daemon.kill(15)
    assert daemon.leaks() == []
