"""Attacks on the overview and agent pages: what an agent's owner, its model or its tools
wrote (instructions, settings values, memory, schedules, session keys, a refused name in an
error) holds HTML and script. The page shows it as text and runs none of it: a payload
that ran would set ``window.__pwned``, and no element it names exists in the page."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import WAIT_MS, sign_in

pytestmark = pytest.mark.e2e

expect = pytest.importorskip("playwright.sync_api").expect
expect.set_options(timeout=WAIT_MS)

IMG = '<img src=x onerror="window.__pwned=(window.__pwned||0)+1">'
SCRIPT = "<script>window.__pwned=(window.__pwned||0)+1</script>"
SVG = '<svg onload="window.__pwned=1"><a href="javascript:window.__pwned=1">x</a></svg>'
BOTH = f"{IMG} and {SCRIPT} and {SVG}"


def injected(page: Any) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate("""() => ({
        pwned: window.__pwned === undefined ? null : window.__pwned,
        nodes: document.querySelectorAll('main img, main script, main svg, main iframe,'
            + ' main [onerror], main [onload], a[href^="javascript:"]').length,
    })""")
    return found


def test_hostile_text_on_the_agent_pages_stays_text(page: Any, daemon: Daemon,
                                                     api: httpx.Client) -> None:
    created = api.post("/v1/agents", json={
        "name": "target", "instructions": BOTH,
        "settings": {"tenant": IMG, "script": [{"text": BOTH}],
                     "heartbeat": {"document": BOTH}}})
    assert created.status_code == 201, created.text
    sent = api.post(f"/v1/agents/target/sessions/{IMG}/messages", json={"content": "hi"})
    assert sent.status_code == 200, sent.text
    assert api.put("/v1/agents/target/memory/blocks/persona",
                   json={"value": BOTH, "description": IMG}).status_code == 200
    assert api.post("/v1/agents/target/memory/entries",
                    json={"content": BOTH, "tags": [IMG]}).status_code == 201
    assert api.post("/v1/agents/target/schedules", json={
        "every_s": 3600, "content": BOTH, "session": SCRIPT}).status_code == 201

    sign_in(page, daemon)
    expect(page.locator('tr[data-agent="target"]')).to_contain_text(IMG)  # the tenant
    page.goto(f"{daemon.url}/ui/#/agents/target")
    expect(page.locator("#set-instructions")).to_have_value(BOTH)
    expect(page.locator("#set-tenant")).to_have_value(IMG)
    expect(page.locator("#set-other")).to_have_value(re.compile(r'"text": "<img src=x onerror'))
    for tab, shown in (("Sessions", IMG), ("Memory", BOTH), ("Schedules", SCRIPT)):
        page.get_by_role("tab", name=tab).click()
        expect(page.locator(".tab-panel").get_by_text(shown, exact=False).first).to_be_visible()
        assert injected(page) == {"pwned": None, "nodes": 0}, tab
    page.get_by_role("tab", name="Heartbeat").click()
    expect(page.locator("#beat-document")).to_have_value(BOTH)
    page.get_by_role("tab", name="Memory").click()
    expect(page.locator('[data-block="persona"] .hint')).to_have_text(IMG)
    expect(page.locator(".entry .tag")).to_have_text(IMG)
    assert injected(page) == {"pwned": None, "nodes": 0}


def test_a_refused_name_in_an_error_stays_text(signed_in: Any) -> None:
    page = signed_in
    page.get_by_role("button", name="New agent").click()
    page.locator("#new-agent-name").fill(IMG)
    page.locator("form.new-agent-form").get_by_role("button", name="Create agent").click()
    error = page.locator("#new-agent-name ~ .field-errors")
    expect(error).to_contain_text("invalid agent name")
    expect(error).to_contain_text("onerror")
    assert injected(page) == {"pwned": None, "nodes": 0}
