"""The control center on a phone-sized screen (375x667) and by keyboard only, in Debian's headless
Chromium against a real jaulad with a real busybox instance: on every view no horizontal scroll and
every control reachable (scrolled into view, inside the screen, not covered); Tab walks through
every control of the instance page with a visible focus, and Stop and Start are activated with the
keyboard alone (the confirmation answered by keyboard too). Last, the session expires (its row
aged in jaulad's database past the idle limit): the open page says so and shows the login."""

from __future__ import annotations

import sqlite3

import pytest

from tests.e2e.test_jaulad import Daemon, daemon  # noqa: F401 (the fixture)
from tests.web.test_browser import (  # noqa: F401
    PASSWORD,
    Chromium,
    browser,
    deleted_at_end,
    free_port,
    start_with_web,
)

pytestmark = pytest.mark.root

NAME = "webkb"
VIEWS = ["#/", f"#/instances/{NAME}", "#/create", "#/templates", "#/networks"]

# Every control shown that a user can act on: scrolled into view (tables scroll sideways in their
# own box), it must lie inside the screen and be what a tap at its centre reaches.
UNREACHABLE = """() => {
  const W = window.innerWidth, H = window.innerHeight, bad = [];
  const sel = 'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])';
  for (const el of document.querySelectorAll(sel)) {
    if (el.closest('[hidden]') || !el.getClientRects().length || el.classList.contains('skip')) continue;
    el.scrollIntoView({ block: 'center', inline: 'center' });
    const r = el.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    const mine = hit && (hit === el || el.contains(hit) || [...(el.labels || [])].some((l) => l.contains(hit)));
    if (r.left < -1 || r.right > W + 1 || r.top < -1 || r.bottom > H + 1 || !mine) {
      bad.push(`${el.tagName.toLowerCase()}#${el.id}[${el.textContent.trim().slice(0, 30) || el.name || ''}]`
        + ` at ${Math.round(r.left)}..${Math.round(r.right)} x ${Math.round(r.top)}..${Math.round(r.bottom)}`
        + (mine ? '' : ` covered by ${hit ? hit.tagName.toLowerCase() : 'nothing'}`));
    }
  }
  window.scrollTo(0, 0);
  return bad;
}"""

# The focused element (marked as reached), and whether its focus is visible (an outline drawn).
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  el.setAttribute('data-kb-reached', '');
  const st = getComputedStyle(el);
  return { tag: el.tagName.toLowerCase(), id: el.id, action: el.getAttribute('data-action'),
           text: el.textContent.trim().slice(0, 40),
           visible: st.outlineStyle !== 'none' && parseFloat(st.outlineWidth) >= 2 };
}"""

# The controls shown and enabled that Tab never reached.
NOT_REACHED = """() => [...document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])')]
  .filter((el) => !el.closest('[hidden]') && el.getClientRects().length && !el.disabled && !el.hasAttribute('data-kb-reached'))
  .map((el) => `${el.tagName.toLowerCase()}#${el.id}[${el.textContent.trim().slice(0, 30)}]`)"""


def login(page: object, port: int) -> None:
    from playwright.sync_api import expect

    page.goto(f"http://127.0.0.1:{port}/ui/")  # type: ignore[attr-defined]
    page.fill("#l-secret", PASSWORD)  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    expect(page.locator("h1")).to_have_text("Dashboard")  # type: ignore[attr-defined]


def tab_to(page: object, action: str, limit: int = 120) -> dict:
    """Tab (only) until the button of `action` has the focus; its focus must be visible."""
    for _ in range(limit):
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
        f = page.evaluate(FOCUSED)  # type: ignore[attr-defined]
        if f and f["action"] == action:
            assert f["visible"], f"the focus on {action} is not visible: {f}"
            return f
    raise AssertionError(f"Tab never reached the {action} button")


@pytest.mark.timeout(300)
def test_phone_sized_screen_and_keyboard_only(daemon: Daemon, browser: Chromium,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch, deleted_at_end: list[str]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    port = free_port()
    deleted_at_end.append(NAME)
    start_with_web(daemon, port, monkeypatch)
    daemon.jaula("launch", "busybox", NAME, "-c", "limits.memory=64MiB")
    daemon.note(NAME)
    page = browser.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    login(page, port)

    # a phone: every view fits its width, every control can be reached and tapped
    page.set_viewport_size({"width": 375, "height": 667})
    for view in VIEWS:
        page.goto(f"http://127.0.0.1:{port}/ui/{view}")
        expect(page.locator("#nav")).to_be_visible()
        if view == "#/":
            expect(page.locator(f'tr[data-instance="{NAME}"] .state')).to_have_text("running")
        elif view.startswith("#/instances/"):
            expect(page.locator("#nics tbody tr").first).to_contain_text("eth0")
            expect(page.locator("#forward-form")).to_be_visible()
            expect(page.locator("#snap-name")).to_be_visible()
        elif view == "#/create":
            expect(page.locator("#c-template option").first).to_have_attribute("value", "busybox")
            expect(page.locator("#c-no-profile")).to_be_visible()
        elif view == "#/templates":
            expect(page.locator("#templates tbody")).to_contain_text("busybox")
        else:
            expect(page.locator("#networks tbody")).to_contain_text("default")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, f"{view} scrolls sideways on a phone"
        assert page.evaluate(UNREACHABLE) == [], f"{view}: controls out of reach on a phone"
    page.set_viewport_size({"width": 1280, "height": 900})

    # the keyboard only: from the dashboard, Tab to the instance's link, Enter
    page.goto(f"http://127.0.0.1:{port}/ui/#/")
    expect(page.locator(f'tr[data-instance="{NAME}"] .state')).to_have_text("running")
    for _ in range(60):
        page.keyboard.press("Tab")
        f = page.evaluate(FOCUSED)
        if f and f["tag"] == "a" and f["text"] == NAME:
            assert f["visible"], f
            break
    else:
        raise AssertionError("Tab never reached the instance's link on the dashboard")
    page.keyboard.press("Enter")
    expect(page.locator("h1 .state")).to_have_text("running")
    expect(page.locator("#nics tbody tr").first).to_contain_text("eth0")
    expect(page.locator("#snap-name")).to_be_visible()

    # Tab walks through every control of the instance page, each with a visible focus
    invisible, first = [], None
    for _ in range(150):
        page.keyboard.press("Tab")
        f = page.evaluate(FOCUSED)
        if f is None:
            continue
        key = (f["tag"], f["id"], f["text"])
        if key == first:
            break  # round the page once
        first = first or key
        if not f["visible"]:
            invisible.append(f)
    assert invisible == [], f"focus not visible on {invisible}"
    assert page.evaluate(NOT_REACHED) == [], "controls Tab never reaches"

    # Stop by keyboard: Enter on it, the dialog's focus on Cancel, Shift+Tab to Stop, Enter
    tab_to(page, "stop")
    page.keyboard.press("Enter")
    expect(page.locator("dialog")).to_be_visible()
    expect(page.locator("dialog button.secondary")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(page.locator("dialog button.danger")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("h1 .state")).to_have_text("stopped", timeout=60_000)
    assert daemon.instances()[NAME]["status"] == "stopped"
    # Start by keyboard: Space on it this time
    tab_to(page, "start")
    page.keyboard.press(" ")
    expect(page.locator("h1 .state")).to_have_text("running", timeout=60_000)
    daemon.note(NAME)

    # the session expires while the page is open: its next request is refused, the login shown
    from jaula.web.sessions import IDLE_S

    with sqlite3.connect(daemon.root / "jaula.db") as db:
        db.execute("UPDATE web_sessions SET used = used - ?, created = created - ?", (IDLE_S + 60, IDLE_S + 60))
    expect(page.locator("#status .msg.error")).to_contain_text("Your session ended: log in again")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    with sqlite3.connect(daemon.root / "jaula.db") as db:
        assert db.execute("SELECT count(*) FROM web_sessions").fetchone()[0] == 0  # refused and deleted

    assert errors == [], errors
    assert browser.left_loopback() == [], browser.left_loopback()
    daemon.jaula("delete", "--force", NAME)
    daemon.kill(15)
    assert daemon.leaks() == []
