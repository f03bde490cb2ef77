"""The console's evals pages in Chromium against a real daemon: the suites with their
last run, a suite's cases and runs, and an eval run's report (per case and aggregate,
against the baseline and the last run, the gate's verdict). A model's answer that holds
HTML stays text."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import WAIT_MS, sign_in
from tests.web.test_console_agents_xss import BOTH, injected

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)


def test_an_eval_runs_report_in_the_console(page: Any, daemon: Daemon,
                                            api: httpx.Client) -> None:
    assert api.post("/v1/agents", json={"name": "bot"}).status_code == 201
    runs = [api.post(f"/v1/agents/bot/sessions/u{i}/messages",
                     json={"content": text}).json()["id"] for i, text in
            enumerate(["hello", "bonjour"])]
    suite = api.post("/v1/evals/suites", json={"agent": "bot", "name": "smoke"}).json()
    for run in runs:
        made = api.post(f"/v1/evals/suites/{suite['id']}/cases", json={"from_run": run})
        assert made.status_code == 201, made.text
    first = api.post(f"/v1/evals/suites/{suite['id']}/runs", json={"wait": True}).json()
    assert first["summary"]["passed"] == 2, first
    # The candidate answers with HTML: both cases fail, a regression each.
    second = api.post(f"/v1/evals/suites/{suite['id']}/runs", json={
        "wait": True, "settings": {"script": [{"text": BOTH}]}}).json()
    assert second["summary"]["failed"] == 2, second

    sign_in(page, daemon, at="#/evals")
    row = page.locator('tr[data-suite="smoke"]')
    expect(row).to_contain_text("bot")
    expect(row).to_contain_text("0/2")
    expect(row).to_contain_text("failed")
    row.get_by_role("link", name="smoke").click()
    expect(page.locator(f'tr[data-run="{first["id"]}"]')).to_contain_text("2/2")
    expect(page.locator(f'tr[data-run="{second["id"]}"]')).to_contain_text("0/2")
    expect(page.locator("tr[data-case]")).to_have_count(2)
    page.locator(f'tr[data-run="{second["id"]}"] a').first.click()
    expect(page.locator('[data-stat="passed"] .value')).to_have_text("0/2")
    expect(page.locator('[data-stat="baseline"] .value')).to_have_text("2/2")
    expect(page.locator('[data-stat="previous"] .value')).to_have_text("2 passed")
    expect(page.locator('[data-gate="failed"]')).to_contain_text("below 100.0%")
    expect(page.locator("#eval-regressions")).to_contain_text("bonjour")
    failed = page.locator('tr[data-status="failed"]')
    expect(failed).to_have_count(2)
    expect(failed.first).to_contain_text("exact ✗")
    expect(failed.first).to_contain_text("<img src=x onerror")
    assert injected(page) == {"pwned": None, "nodes": 0}
