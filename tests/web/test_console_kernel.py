"""The console's kernel page in Chromium against a real daemon: lanes, breakers and
counters from GET /v1/kernel, and "daemon unreachable" while the daemon is down, gone
by itself once it is back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import WAIT_MS, sign_in

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)


@pytest.mark.daemon_process
def test_the_kernel_page_shows_lanes_and_survives_a_daemon_restart(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    sent = api.post("/v1/agents/demo/sessions/k/messages", json={"content": "hi"})
    assert sent.status_code == 200 and sent.json()["status"] == "completed", sent.text
    sign_in(page, daemon, at="#/kernel")
    lane = page.locator('tr[data-lane="scripted"]')
    expect(lane).to_be_visible()
    expect(lane.locator('[data-col="granted"]')).to_have_text("1")
    expect(lane).to_contain_text("∞ rpm")  # the scripted lane has no rate limit
    breaker = page.locator('tr[data-breaker="scripted"]')
    expect(breaker).to_contain_text("closed")
    expect(page.locator('[data-stat="calls"] .value')).to_have_text("1")
    expect(page.locator("#conn")).to_have_text("live")
    # The page follows the kernel: another call shows at the next poll.
    assert api.post("/v1/agents/demo/sessions/k/messages",
                    json={"content": "again"}).status_code == 200
    expect(page.locator('[data-stat="calls"] .value')).to_have_text("2")

    daemon.cleanup()  # SIGKILL: the page's next poll fails
    unreachable = page.locator(".unreachable")
    expect(unreachable).to_contain_text("Daemon unreachable")
    expect(unreachable).to_contain_text("the figures below are from")
    expect(page.locator("#conn")).to_have_text("reconnecting…")
    expect(lane).to_be_visible()  # the last figures stay

    daemon.start()  # the same port and home
    expect(unreachable).to_be_hidden()
    expect(page.locator("#conn")).to_have_text("live")
    # A new process: its kernel starts empty, and the page says so.
    expect(page.locator("#kernel-lanes")).to_contain_text("No lanes yet")
    expect(page.locator('[data-stat="calls"] .value')).to_have_text("0")
