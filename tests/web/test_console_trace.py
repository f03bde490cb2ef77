"""The console's trace view of a run in a real browser against a real daemon: from a
session's timeline to a waterfall of the run's spans (GET /v1/runs/{id}/trace), bars
placed within the root span and nested by parent, error spans marked, and a span name
that is HTML (a tool name the model made up) shown as text that runs nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.daemons import Daemon
from tests.web.conftest import make_agent, session_hash, session_path, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_policy_violations")]

expect = pytest.importorskip("playwright.sync_api").expect

#: A tool name no agent has: the model asks for it all the same, and its span is named
#: after it.
HOSTILE = '<img src=x onerror="window.__xss=1">'


def spans_of(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    doc = api.get(f"/v1/runs/{run_id}/trace").json()
    return [s for r in doc["resourceSpans"] for ss in r["scopeSpans"] for s in ss["spans"]]


def test_a_runs_trace_is_a_waterfall_of_its_spans(page: Any, daemon: Daemon,
                                                  api: httpx.Client) -> None:
    make_agent(api, "tracer", tools=["calculator"], settings={"script": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}},
                        {"name": HOSTILE, "arguments": {}}]},
        {"text": "42", "delay_ms": 50}]})
    done = api.post(f"{session_path('tracer', 'k')}/messages", json={"content": "sum"})
    assert done.json()["status"] == "completed", done.text
    run_id = done.json()["id"]
    spans = spans_of(api, run_id)
    names = {s["name"] for s in spans}
    assert f"execute_tool {HOSTILE}" in names and "execute_tool calculator" in names

    sign_in(page, daemon, at=session_hash("tracer", "k"))
    link = page.locator(f'#pane-timeline a.run[title="Trace of run {run_id}"]').first
    link.click()
    page.wait_for_url(f"**#/runs/{run_id}/trace")
    rows = page.locator(".trace-span")
    expect(rows).to_have_count(len(spans))
    expect(page.locator(".trace-run")).to_contain_text(run_id)

    # The root span (the run) first at depth 0, spanning the whole width; every other
    # span nested under it, its bar inside the track.
    root = rows.nth(0)
    assert root.get_attribute("data-depth") == "0"
    expect(root.locator(".trace-name")).to_have_text("invoke_agent tracer")
    track = root.locator(".trace-track").bounding_box()
    bar = root.locator(".trace-bar").bounding_box()
    assert track is not None and bar is not None
    assert abs(bar["x"] - track["x"]) < 2 and bar["width"] > track["width"] * 0.95
    depths = [rows.nth(i).get_attribute("data-depth") for i in range(len(spans))]
    assert all(d is not None and int(d) >= 1 for d in depths[1:])
    chat = page.locator(".trace-span", has=page.locator(".trace-name",
                                                         has_text="chat scripted")).first
    expect(chat).to_be_visible()

    # The made-up tool's span: its name as text, marked as an error, nothing run.
    hostile = page.locator(".trace-span", has=page.locator(".trace-name",
                                                            has_text=HOSTILE))
    expect(hostile).to_have_count(1)
    expect(hostile.locator(".trace-name")).to_have_text(f"execute_tool {HOSTILE}")
    assert page.locator(".trace-waterfall img").count() == 0
    assert page.evaluate("window.__xss") is None
    calc = page.locator(".trace-span", has=page.locator(".trace-name",
                                                         has_text="execute_tool calculator"))
    # An unknown tool's call fails: its span's status is an error.
    assert {s["name"] for s in spans if s.get("status", {}).get("code") == 2} == {
        f"execute_tool {HOSTILE}"}
    expect(hostile).to_have_class("trace-span failed")
    expect(hostile.locator(".trace-error")).to_be_visible()
    expect(calc.locator(".trace-error")).to_have_count(0)

    # A row opens to its attributes, shown as text.
    calc.locator("summary").click()
    expect(calc.locator(".trace-attrs")).to_contain_text("gen_ai.tool.name")
    hostile.locator("summary").click()
    expect(hostile.locator(".trace-attrs")).to_contain_text(HOSTILE)
    assert page.evaluate("window.__xss") is None
