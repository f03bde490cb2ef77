"""Reading a session's log backwards: ``GET .../events?before=`` (the console opens a
long session at its tail and pages back on scroll). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import Settings

URL = "/v1/agents/a/sessions/k/events"


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as c:
        yield c


async def _session_of(client: httpx.AsyncClient, turns: int) -> list[dict[str, Any]]:
    created = await client.post("/v1/agents", json={"name": "a"})
    assert created.status_code == 201, created.text
    for i in range(turns):
        sent = await client.post("/v1/agents/a/sessions/k/messages",
                                 json={"content": f"turn {i}"})
        assert sent.status_code == 200 and sent.json()["status"] == "completed", sent.text
    whole = (await client.get(URL, params={"limit": 10_000})).json()
    events: list[dict[str, Any]] = whole["events"]
    assert [e["seq"] for e in events] == list(range(1, whole["last_seq"] + 1))
    return events


async def test_before_pages_backwards_from_the_tail(client: httpx.AsyncClient) -> None:
    log = await _session_of(client, 4)
    last = log[-1]["seq"]
    assert last >= 16

    tail = (await client.get(URL, params={"before": last + 1, "limit": 5})).json()
    assert tail["last_seq"] == last
    # The newest five, oldest first: the same objects a forward read gives.
    assert tail["events"] == log[-5:]

    # Page back until the start: every event once, in order, nothing skipped.
    pages: list[list[dict[str, Any]]] = [tail["events"]]
    while pages[-1] and pages[-1][0]["seq"] > 1:
        older = (await client.get(URL, params={"before": pages[-1][0]["seq"],
                                               "limit": 5})).json()["events"]
        assert older, "a page before seq > 1 is never empty"
        pages.append(older)
    assert [e for page in reversed(pages) for e in page] == log

    # before past the end reads the tail; before=1 reads nothing; after bounds it too.
    beyond = (await client.get(URL, params={"before": 10**18, "limit": 3})).json()
    assert beyond["events"] == log[-3:]
    assert (await client.get(URL, params={"before": 1})).json()["events"] == []
    window = (await client.get(URL, params={"after": 4, "before": 9, "limit": 100})).json()
    assert [e["seq"] for e in window["events"]] == [5, 6, 7, 8]
    narrow = (await client.get(URL, params={"after": 4, "before": 9, "limit": 2})).json()
    assert [e["seq"] for e in narrow["events"]] == [7, 8]


async def test_bad_before_is_refused(client: httpx.AsyncClient) -> None:
    await _session_of(client, 1)
    for bad in ("0", "-3", "x", str(2**63)):
        response = await client.get(URL, params={"before": bad})
        assert response.status_code == 422, (bad, response.text)
        body = response.json()["error"]
        assert body["code"] == "invalid_input"
        assert "before" in body["message"]
        assert [e["field"] for e in body["details"]["errors"]] == ["query.before"]
    # A stream follows forwards: before has no meaning there and is refused, not ignored.
    streamed = await client.get(URL, params={"before": 3},
                                headers={"Accept": "text/event-stream"})
    assert streamed.status_code == 422
    assert streamed.json()["error"]["details"]["errors"][0]["field"] == "query.before"
    missing = await client.get("/v1/agents/a/sessions/nobody/events", params={"before": 3})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "session_not_found"
