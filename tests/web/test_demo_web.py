"""The README's main command, `scripts/demo`, prints the control center's address and how to log
in; with `--wait` it keeps its jaulad up while web1 runs, and what it printed is enough to log in
from Debian's headless Chromium and see web1 running on the dashboard."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.web.test_browser import Chromium, browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_the_demo_prints_where_the_control_center_is_and_how_to_log_in(browser: Chromium) -> None:  # noqa: F811
    from playwright.sync_api import expect

    if os.geteuid() != 0:
        pytest.skip("needs root")
    demo = subprocess.Popen([str(REPO / "scripts" / "demo"), "--wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out: list[str] = []
    try:
        assert demo.stdout is not None and demo.stdin is not None
        deadline = time.monotonic() + 300
        for line in demo.stdout:
            out.append(line)
            if "press Enter" in line or time.monotonic() > deadline:
                break
        text = "".join(out)
        assert "press Enter" in text, text
        url = re.search(r"the web control center is at (http://127\.0\.0\.1:\d+/ui/)", text)
        token = re.search(r"log in with the API token (\S+)", text)
        assert url and token, text
        assert "--show-token" in text and "--set-password" in text, text

        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(url.group(1))
        page.select_option("#l-kind", "token")
        page.fill("#l-secret", token.group(1))
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_have_text("Dashboard")
        expect(page.locator('tr[data-instance="web1"] .state')).to_have_text("running")
        assert browser.left_loopback() == [], browser.left_loopback()
        page.close()

        demo.stdin.write("\n")
        demo.stdin.close()
        rest = demo.stdout.read()
        assert demo.wait(120) == 0, text + rest
        assert "demo: done" in rest, rest
    finally:
        if demo.poll() is None:  # a failure above: let it clean up (EOF on its stdin), else end it
            if demo.stdin and not demo.stdin.closed:
                demo.stdin.close()
            try:
                demo.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGTERM)  # its trap removes what it made
                demo.wait(60)
