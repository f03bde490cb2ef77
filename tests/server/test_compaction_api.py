"""POST .../compact and GET .../context through the ASGI app, on SQLite and PostgreSQL:
the answer, both views of a compacted session, restore, and every error writing
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.llm.scripted import enqueue

BASE = "/v1/agents/a/sessions/user%3A1"


@pytest.fixture
async def api(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as client:
        made = await client.post("/v1/agents", json={
            "name": "a", "model": "scripted", "tools": ["calculator"],
            "settings": {"max_retries": 0}})
        assert made.status_code == 201, made.text
        yield client


async def talk(api: httpx.AsyncClient, *texts: str) -> None:
    for text in texts:
        sent = await api.post(f"{BASE}/messages", json={"content": text, "wait": True})
        assert sent.status_code == 200 and sent.json()["status"] == "completed", sent.text


async def log_of(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get(f"{BASE}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def test_compact_shows_both_views_and_restore_brings_all_back(
        api: httpx.AsyncClient) -> None:
    await talk(api, "red apple pie", '/tool calculator {"expression": "2 + 3"}',
               "green pear tart", "blue plum jam")
    before = (await api.get(f"{BASE}/context")).json()
    assert before["summary"] is None and before["summary_range"] is None
    assert [m["kind"] for m in before["messages"]] == [
        "user", "assistant", "user", "assistant", "tool_result", "assistant",
        "user", "assistant", "user", "assistant"]
    last = (await api.get(BASE)).json()["last_seq"]

    done = await api.post(f"{BASE}/compact", json={})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["seq"] == last + 1 and body["from_seq"] == 1
    assert (body["strategy"], body["messages"], body["model"]) == ("summarize", 6, "scripted")
    assert body["summary"] == (
        "Summary:\n- user: red apple pie\n- assistant: echo: red apple pie\n"
        "- user: /tool calculator {\"expression\": \"2\n"
        "- assistant: calls calculator {'expression': '2\n- tool calculator: 5\n"
        "- assistant: calculator returned: 5")
    assert body["estimated_tokens_after"] < body["estimated_tokens_before"]
    assert body["usage"]["output_tokens"] > 0

    # The log: every original event, and the compaction among them.
    log = await log_of(api)
    assert len(log) == last + 1 and log[-1]["kind"] == "session.compacted"
    assert log[-1]["data"]["to_seq"] == body["to_seq"] and log[-1]["run_id"] is None
    assert [e["data"]["content"] for e in log if e["kind"] == "message.user"] == [
        "red apple pie", '/tool calculator {"expression": "2 + 3"}', "green pear tart",
        "blue plum jam"]
    # The model's view: the summary, then the kept turns only.
    after = (await api.get(f"{BASE}/context")).json()
    assert after["summary"] == body["summary"] and after["last_seq"] == last + 1
    assert after["summary_range"] == {"from_seq": 1, "to_seq": body["to_seq"]}
    assert after["messages"] == before["messages"][6:]
    assert after["estimated_tokens"] < before["estimated_tokens"]

    # The next run is answered from that view, and restore gives everything back.
    await talk(api, "orange")
    restored = await api.post(f"{BASE}/restore", json={"seq": last})
    assert restored.status_code == 200, restored.text
    again = (await api.get(f"{BASE}/context")).json()
    assert again["summary"] is None and again["messages"] == before["messages"]


async def test_clear_tool_results_over_http(api: httpx.AsyncClient) -> None:
    await talk(api, '/tool calculator {"expression": "10 * 10"}', "two", "three")
    done = await api.post(f"{BASE}/compact", json={"strategy": "clear_tool_results"})
    assert done.status_code == 200, done.text
    assert (done.json()["summary"], done.json()["model"], done.json()["messages"]) == (
        None, None, 1)
    messages = (await api.get(f"{BASE}/context")).json()["messages"]
    result = next(m for m in messages if m["kind"] == "tool_result")
    assert result["content"] == "[tool result cleared by compaction: 3 characters]"
    assert messages[1]["tool_calls"][0]["name"] == "calculator"


async def test_errors_name_the_problem_and_write_nothing(api: httpx.AsyncClient) -> None:
    missing = await api.post("/v1/agents/nobody/sessions/x/compact", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "agent_not_found"
    missing = await api.post("/v1/agents/a/sessions/nope/compact", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "session_not_found"
    assert (await api.get("/v1/agents/a/sessions/nope/context")).status_code == 404

    await talk(api, "one", "two")
    log = await log_of(api)
    nothing = await api.post(f"{BASE}/compact")  # no body: the agent's settings
    assert nothing.status_code == 409, nothing.text
    assert nothing.json()["error"]["code"] == "nothing_to_compact"
    assert nothing.json()["error"]["details"]["keep_turns"] == 2

    for body, field in (({"strategy": "shorten"}, "body.strategy"),
                        ({"keep_turns": 0}, "body.keep_turns"),
                        ({"keep_turns": 101}, "body.keep_turns"),
                        ({"keep_turns": "1"}, "body.keep_turns"),
                        ({"keep_turns": 1, "extra": True}, "body.extra")):
        bad = await api.post(f"{BASE}/compact", json=body)
        assert bad.status_code == 422, (body, bad.text)
        fields = [e["field"] for e in bad.json()["error"]["details"]["errors"]]
        assert field in fields, (body, fields)

    # The summary model fails for good (502) or only for now (503).
    await talk(api, "three")
    log = await log_of(api)
    view = (await api.get(f"{BASE}/context")).json()
    enqueue({"error": "no summaries today"}, agent="a")
    failed = await api.post(f"{BASE}/compact", json={"keep_turns": 1})
    assert failed.status_code == 502, failed.text
    assert "no summaries today" in failed.json()["error"]["message"]
    enqueue({"error": "busy", "retryable": True}, agent="a")
    unavailable = await api.post(f"{BASE}/compact", json={"keep_turns": 1})
    assert unavailable.status_code == 503, unavailable.text
    assert unavailable.json()["error"]["retryable"] is True
    assert await log_of(api) == log
    assert (await api.get(f"{BASE}/context")).json() == view


async def test_the_event_kind_is_in_the_published_schema(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/v1/events/schema")).json()
    kinds = [d["properties"]["kind"].get("const") for d in schema["$defs"].values()
             if "kind" in d.get("properties", {})]
    assert "session.compacted" in kinds
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert "post" in paths["/v1/agents/{name}/sessions/{key}/compact"]
    assert "get" in paths["/v1/agents/{name}/sessions/{key}/context"]
