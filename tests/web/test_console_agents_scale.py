"""The overview with 10,000 agents (made through the store before the daemon starts, as
``agentd create`` would store them, without the per-agent model check): it shows the first
page of agents with the daemon's count, pages on, searches and filters in the daemon. No
timing is asserted: bench/console_overview.py measures it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.daemons import Daemon
from tests.web.conftest import TOKEN, WAIT_MS, sign_in

from agentd.config import Settings
from agentd.store import open_store

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)

N = 10_000


def agent_name(i: int) -> str:
    return f"agent-{i:05d}"


async def seed(home: Path, n: int) -> int:
    """``n`` agents; every 50th paused. Returns how many are paused."""
    home.mkdir(parents=True)
    store = await open_store(Settings(home=home).database_url)
    try:
        for start in range(0, n, 500):
            await asyncio.gather(*(store.create_agent(
                name=agent_name(i), model="scripted", instructions=f"Agent number {i}.",
                tools=["calculator"] if i % 3 else [],
                settings={"tenant": "acme" if i % 2 else "globex"})
                for i in range(start, min(n, start + 500))))
        paused = range(0, n, 50)
        await asyncio.gather(*(store.update_agent(agent_name(i), {"state": "paused"})
                               for i in paused))
        return len(paused)
    finally:
        await store.close()


@pytest.fixture
def crowded(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    # Playwright's sync API holds this thread's event loop: seed from another thread.
    with ThreadPoolExecutor(1) as pool:
        paused = pool.submit(asyncio.run, seed(tmp_path / "home", N)).result()
    started = Daemon(tmp_path / "home", tmp_path / "agentd.log",
                     env={"AGENTD_TOKEN": TOKEN}, args=())
    try:
        yield started.start(), paused
    finally:
        started.cleanup()


def test_the_overview_with_ten_thousand_agents(page: Any,
                                               crowded: tuple[Daemon, int]) -> None:
    daemon, paused = crowded
    sign_in(page, daemon)
    count = page.locator("#agent-count")
    expect(count).to_have_text("1\u2013100 of 10,001")  # with the demo agent
    expect(page.locator('[data-card="agents"] .value')).to_have_text("10,001")
    rows = page.locator("table.agents tbody tr")
    expect(rows).to_have_count(100)
    expect(rows.first).to_have_attribute("data-agent", agent_name(0))

    page.locator("#agents-next").click()
    expect(count).to_have_text("101\u2013200 of 10,001")
    expect(rows.first).to_have_attribute("data-agent", agent_name(100))
    page.locator("#agents-prev").click()
    expect(rows.first).to_have_attribute("data-agent", agent_name(0))

    # "/" goes to the search; the daemon finds the one agent.
    page.locator("main").click(position={"x": 5, "y": 5})
    page.keyboard.press("/")
    expect(page.locator("#agent-search")).to_be_focused()
    page.keyboard.type("07777")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-agent", agent_name(7777))
    expect(count).to_have_text("1\u20131")

    page.locator("#agent-search").fill("")
    page.locator("#agent-state").select_option("paused")
    expect(count).to_have_text(f"1\u2013100 of {paused}")
    expect(rows.first.locator(".state-pills")).to_contain_text("paused")

    page.locator("#agent-state").select_option("")
    page.locator("#agent-search").fill("agent-09999")
    rows.first.get_by_role("link", name=agent_name(9999)).click()
    page.wait_for_url(re.compile(r"#/agents/agent-09999$"))
    expect(page.locator("#set-instructions")).to_have_value("Agent number 9999.")
