"""The control center in a real browser: Debian's headless Chromium driven by Playwright (never
`playwright install`: executable_path points at /usr/bin/chromium), against a real jaulad
(`--web`) over a private root, with a real busybox instance: log in (by keyboard), create an
instance, see it running, run a command in its shell (xterm.js over the exec websocket) and one on
its console (xterm.js attached to its /dev/console over the console websocket), change
its memory limit and see the counter's limit change, stop it, delete it. Screenshots of the
dashboard (desktop and phone sized) are kept in build/artifacts/. Nothing is left behind."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_jaulad import JAULAD, Daemon, daemon  # noqa: F401 (the fixture)

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


@pytest.fixture
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras (pip)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: Debian's chromium package (scripts/setup installs it)")
    profile = tempfile.mkdtemp(prefix="jaula-chromium-")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=ARGS, headless=True,
                                                    viewport={"width": 1280, "height": 900})
        try:
            yield ctx
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def start_with_web(d: Daemon, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    r = subprocess.run([*JAULAD, "--root", str(d.root), "--set-password"], input=PASSWORD + "\n", text=True,
                       capture_output=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("JAULA_WEB", f"127.0.0.1:{port}")  # jaulad --web, through its environment
    d.start()


@pytest.mark.timeout(600)
def test_the_control_center_drives_a_real_instance(daemon: Daemon, browser: object,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect

    port = free_port()
    start_with_web(daemon, port, monkeypatch)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(30_000)
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

    # create and start an instance
    page.click("text=Create instance")
    page.fill("#c-name", NAME)
    page.fill("#c-memory", "128MiB")
    page.select_option("#c-network", "default")
    page.click("#create-form button[type=submit]")
    expect(page).to_have_url(f"http://127.0.0.1:{port}/ui/#/instances/{NAME}", timeout=180_000)
    expect(page.locator("h1 .state")).to_have_text("running", timeout=60_000)
    daemon.note(NAME)
    expect(page.locator('[data-counter="memory-limit"]')).to_have_text("128.0 MiB")
    # its NIC on the default network (made on first use), with an address
    expect(page.locator("#nics tbody tr").first).to_contain_text("eth0")
    expect(page.locator("#nics tbody tr").first).to_contain_text(re.compile(r"\d+\.\d+\.\d+\.\d+"))

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
    # live (operations are not stored: only the stream brings them): an action from the CLI shows
    # up, and the row follows
    daemon.jaula("freeze", NAME)
    expect(page.locator("#events li", has_text=f"Freezing instance {NAME}: success")).to_have_count(1)
    expect(row.locator(".state")).to_have_text("frozen")
    daemon.jaula("unfreeze", NAME)
    expect(page.locator("#events li", has_text=f"Unfreezing instance {NAME}: success")).to_have_count(1)
    expect(row.locator(".state")).to_have_text("running")
    # a sparkline of three samples or more (the page's CSP forbids eval: no wait_for_function)
    expect(row.locator("polyline").first).to_have_attribute("points", re.compile(r"^\S+ \S+ \S+"), timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "web-dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page overflows a phone's width"
    page.screenshot(path=str(ARTIFACTS / "web-dashboard-phone.png"), full_page=True)
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

    daemon.kill(15)
    assert daemon.leaks() == []


@pytest.mark.timeout(300)
def test_a_template_is_built_with_progress_and_networks_listed(daemon: Daemon, browser: object,  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect

    port = free_port()
    start_with_web(daemon, port, monkeypatch)
    page = browser.new_page()  # type: ignore[attr-defined]
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
    page.click("nav >> text=Networks")
    expect(page.locator("h1")).to_have_text("Networks")
    expect(page.locator("main")).to_contain_text("No network yet")
    # a bad build is refused with the API's reasons, shown on the page
    page.click("nav >> text=Templates")
    page.fill("#t-name", "../x")
    page.click("#build-form button[type=submit]")
    expect(page.locator("#status .msg.error")).to_be_visible()
    daemon.kill(15)
    assert daemon.leaks() == []
