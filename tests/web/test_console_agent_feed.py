"""The console follows agents changed by another client from the activity feed's
agent.* frames (its polls are a 30 s backstop now, longer than these tests wait): the
overview shows an agent created, paused and deleted through the API without a reload,
and an agent's page re-reads its agent when it changes and shows it deleted at once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import WAIT_MS, make_agent, sign_in

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
#: Below the pages' backstop poll (30 s): what shows within it came from the feed.
expect.set_options(timeout=min(WAIT_MS, 20_000))


def test_the_overview_shows_agents_changed_through_the_api(signed_in: Any,
                                                           api: httpx.Client) -> None:
    page = signed_in
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator('tr[data-agent="demo"]')).to_be_visible()
    make_agent(api, "from-api")
    row = page.locator('tr[data-agent="from-api"]')
    expect(row).to_be_visible()
    expect(page.locator('[data-card="agents"] .value')).to_have_text("2")
    assert api.post("/v1/agents/from-api/pause").status_code == 200
    expect(row.locator(".state-pills")).to_contain_text("paused")
    assert api.delete("/v1/agents/from-api").status_code == 204
    expect(row).to_have_count(0)
    expect(page.locator('[data-card="agents"] .value')).to_have_text("1")


def test_the_agent_page_follows_its_agent_and_shows_it_deleted(
        page: Any, daemon: Daemon, api: httpx.Client) -> None:
    make_agent(api, "watched")
    sign_in(page, daemon, at="#/agents/watched")
    head = page.locator(".page-head")
    expect(head).to_contain_text("watched")
    expect(page.locator("#conn")).to_have_text("live")
    assert api.post("/v1/agents/watched/stop").status_code == 200
    expect(head.locator(".state-pills")).to_contain_text("stopped")
    page.locator("#set-instructions").fill("typed, not saved")
    assert api.delete("/v1/agents/watched").status_code == 204
    expect(page.locator(".gone-slot .gone-box")).to_contain_text("watched no longer exists")
    expect(page.locator("#set-instructions")).to_have_value("typed, not saved")
    page.wait_for_function("() => document.querySelector('.agent-page.is-gone') !== null")
