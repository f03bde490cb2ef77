"""The usage page in a real browser against a real daemon: after runs, today's tokens
and calls are on the page (totals, the chart's bar for today, the table by model or
agent) and follow new runs live; a range the API refuses is said beside the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import make_agent, session_path, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_policy_violations")]


def totals(api: httpx.Client) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    found: dict[str, Any] = api.get(
        "/v1/usage", params={"since": today, "until": today}).json()["totals"]
    return found


def card_value(page: Any, label: str) -> str:
    text: str = page.locator(".usage-cards .card").filter(
        has=page.locator(f'.label:text-is("{label}")')).locator(".value").inner_text()
    return text


def test_the_days_usage_is_shown_and_follows_new_runs(page: Any, daemon: Daemon,
                                                     api: httpx.Client) -> None:
    for name in ("alpha", "beta"):
        make_agent(api, name)
        sent = api.post(f"{session_path(name, 'k')}/messages", json={"content": f"hello {name}"})
        assert sent.json()["status"] == "completed"
    before = totals(api)
    assert before["calls"] == 2 and before["input_tokens"] > 0
    sign_in(page, daemon, at="#/usage")
    page.wait_for_selector(".usage-cards .card")
    tokens = before["input_tokens"] + before["output_tokens"]
    assert card_value(page, "Tokens") == f"{tokens:,}"
    assert card_value(page, "Model calls") == "2"

    # Today's bar, by model (the default grouping), and the table's row.
    today = datetime.now(UTC).date().isoformat()
    bar = page.locator(".usage-chart rect.bar")
    assert bar.count() == 1
    assert bar.locator("title").text_content() == f"{today} · scripted: {tokens:,}"
    row = page.locator(".usage-table tbody tr")
    assert row.count() == 1 and "scripted" in row.inner_text()
    # The input's cached and cache-written parts have columns of their own.
    headers = [h.lower() for h in page.locator(".usage-table thead th").all_inner_texts()]
    assert headers[headers.index("input"):headers.index("cost")] == [
        "input", "output", "cached", "cache write"]

    # By agent: a row and a series each.
    page.select_option("#usage-by", "agent")
    page.locator(".usage-table tbody tr").filter(has_text="beta").wait_for()
    assert page.locator(".usage-table tbody tr").count() == 2
    assert page.locator(".usage-chart rect.bar").count() == 2
    assert page.locator(".usage-chart .legend li").all_inner_texts() in (
        ["alpha", "beta"], ["beta", "alpha"])

    # A run that ends while the page is open is counted without reloading.
    api.post(f"{session_path('alpha', 'k')}/messages", json={"content": "once more"})
    after = totals(api)
    assert after["calls"] == 3
    page.locator(".usage-cards .card").filter(has_text="Model calls").locator(
        ".value").filter(has_text="3").wait_for()
    assert card_value(page, "Tokens") == f"{after['input_tokens'] + after['output_tokens']:,}"


def test_a_refused_range_is_said_beside_the_field(page: Any, daemon: Daemon) -> None:
    sign_in(page, daemon, at="#/usage")
    page.wait_for_selector(".usage-cards .card")
    page.fill("#usage-until", "2030-01-01")
    page.fill("#usage-since", "2030-01-10")
    error = page.locator("#usage-since-error")
    error.filter(has_text="is after until").wait_for()
    assert page.locator("#usage-since").get_attribute("aria-invalid") == "true"
    # Put right, the error goes.
    page.fill("#usage-since", "2029-12-25")
    error.wait_for(state="hidden")
    page.locator(".usage-chart").get_by_text("No model calls in this range.").wait_for()
