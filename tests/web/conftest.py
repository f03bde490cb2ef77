"""The web console in a real browser: Debian's Chromium, headless, driven by
Playwright, against a real ``agentd serve`` process over a socket.

Fixtures: ``daemon`` (a started daemon with a known token, SQLite and the scripted
model), ``browser`` (one Chromium per test process), ``page`` (a fresh browser
context per test), and ``signed_in`` (a page already signed in at the overview).

The daemon is the real server (:class:`agentd.testing.LiveServer`: the app, uvicorn and
a socket) in a thread of the test process, with a fresh home per test: starting a
process per test (imports, migrations) was most of these tests' time. A test that
kills or restarts the daemon is marked ``daemon_process`` and gets a real
``agentd serve`` process (:class:`tests.daemons.Daemon`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon, ThreadDaemon

from agentd.config import default_chromium

pytestmark = pytest.mark.e2e

TOKEN = "console-test-token-0123456789"
#: The product's default Chromium (the headless shell where it is installed: the full
#: browser took about 2.4 times the CPU for the same browser tests), or AGENTD_TEST_CHROMIUM.
CHROMIUM = os.environ.get("AGENTD_TEST_CHROMIUM") or default_chromium()
#: Playwright's own waits (a page element appearing): generous, CI is shared.
WAIT_MS = 20_000

playwright_sync = pytest.importorskip("playwright.sync_api")


def _chromium() -> str:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium-headless-shell)")
    return CHROMIUM


@pytest.fixture
def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The daemon with TOKEN, SQLite in a fresh home and the scripted model: served
    from a thread, or ``agentd serve`` for a test marked ``daemon_process``."""
    started: Daemon | ThreadDaemon
    if request.node.get_closest_marker("daemon_process") is not None:
        started = Daemon(tmp_path / "home", tmp_path / "agentd.log",
                         env={"AGENTD_TOKEN": TOKEN}, args=())
    else:
        started = ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token=TOKEN)
    try:
        yield started.start()
    finally:
        started.cleanup()


@pytest.fixture
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    """The daemon's API with the console's token (to set up and check state)."""
    with daemon.client(TOKEN) as client:
        yield client


# One Chromium per test module, not per process: Playwright's sync API runs an event
# loop of its own while it is open, and an async test the same worker runs later (xdist
# mixes modules) could not start its loop beside it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    with playwright_sync.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, headless=True,
                                      args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    # A script error on any page is a failure even when the test's checks passed.
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def no_policy_violations(page: Any) -> Iterator[None]:
    """The page's CSP refuses inline style and script: a refusal means the page tried
    (modules that render hostile text use it)."""
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text else None)
    yield
    assert not refused, refused


def sign_in(page: Any, daemon: Daemon, token: str = TOKEN, *, at: str = "") -> None:
    """Open the console (at ``#...``) and sign in with ``token``."""
    page.goto(f"{daemon.url}/ui/{at}")
    try:
        page.get_by_label("Token").fill(token)
    except playwright_sync.Error as exc:
        # Say what was there instead of the sign-in form (a failure here once had
        # nothing more than the timeout to go on).
        raise AssertionError(
            f"no sign-in form at {page.url}: {exc}\n-- the page:\n{page.content()[:4000]}"
            f"\n-- the daemon's log:\n{daemon.log()[-4000:]}") from exc
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def signed_in(page: Any, daemon: Daemon) -> Any:
    sign_in(page, daemon)
    page.wait_for_selector("#top:not([hidden])")
    return page


# -- helpers of the session, approvals and usage pages' tests ---------------------------


def session_hash(agent: str, key: str) -> str:
    """The console's address of a session (agent and key encoded as the app does)."""
    from urllib.parse import quote

    return f"#/agents/{quote(agent, safe='')}/sessions/{quote(key, safe='')}"


def session_path(agent: str, key: str) -> str:
    from urllib.parse import quote

    return f"/v1/agents/{quote(agent, safe='')}/sessions/{quote(key, safe='')}"


def make_agent(api: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    created = api.post("/v1/agents", json={"name": name, **fields})
    assert created.status_code == 201, created.text
    agent: dict[str, Any] = created.json()
    return agent


def log_of(api: httpx.Client, agent: str, key: str) -> list[dict[str, Any]]:
    """A session's whole log, through the API."""
    response = api.get(f"{session_path(agent, key)}/events", params={"limit": 10_000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events

