"""GET /v1/tools and GET /v1/runs through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import bearer

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=bearer(settings)) as c:
        yield c


async def _agent(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/v1/agents", json={"name": name, "model": "scripted",
                                                      "tools": ["calculator"]})
    assert response.status_code == 201, response.text


async def _send(client: httpx.AsyncClient, agent: str, key: str, content: str,
                **body: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/agents/{agent}/sessions/{key}/messages",
                                 json={"content": content, **body})
    assert response.status_code in (200, 202), response.text
    run: dict[str, Any] = response.json()
    return run


# -- tools --------------------------------------------------------------------------


async def test_tools_lists_every_tool_with_its_schema_and_metadata(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.get("/v1/tools")
    assert response.status_code == 200
    tools = response.json()["tools"]
    names = [t["name"] for t in tools]
    assert names == sorted(names) == runtime.tools.names()
    calc = next(t for t in tools if t["name"] == "calculator")
    assert calc["parameters"]["type"] == "object"
    assert "expression" in calc["parameters"]["properties"]
    assert calc["read_only"] is True and calc["needs_approval"] is False
    assert calc["timeout_s"] > 0
    fetch = next(t for t in tools if t["name"] == "http_fetch")
    assert fetch["needs_network"] is True and fetch["untrusted_output"] is True


async def test_one_tool_and_an_unknown_one(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/tools/calculator")
    assert response.status_code == 200
    assert response.json()["name"] == "calculator"
    missing = await client.get("/v1/tools/no-such-tool")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "tool_not_found"


async def test_tools_need_a_token(settings: Settings, runtime: Runtime) -> None:
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as anonymous:
        assert (await anonymous.get("/v1/tools")).status_code == 401
        assert (await anonymous.get("/v1/runs")).status_code == 401


# -- runs ---------------------------------------------------------------------------


async def test_runs_newest_first_with_filters(client: httpx.AsyncClient) -> None:
    await _agent(client, "alpha")
    await _agent(client, "beta")
    first = await _send(client, "alpha", "k1", "one", wait=True)
    second = await _send(client, "alpha", "k2", "two", wait=True)
    third = await _send(client, "beta", "k1", "three", wait=True)

    everything = (await client.get("/v1/runs")).json()
    assert [r["id"] for r in everything["runs"]] == [third["id"], second["id"], first["id"]]
    assert everything["next_cursor"] is None
    assert everything["runs"][0]["agent"] == "beta"
    assert everything["runs"][0]["session"] == "k1"
    assert everything["runs"][0]["output"] == third["output"]

    alpha = (await client.get("/v1/runs", params={"agent": "alpha"})).json()["runs"]
    assert [r["id"] for r in alpha] == [second["id"], first["id"]]
    one = (await client.get("/v1/runs", params={"agent": "alpha", "session": "k1"})).json()
    assert [r["id"] for r in one["runs"]] == [first["id"]]
    done = (await client.get("/v1/runs", params={"status": "completed,failed"})).json()
    assert len(done["runs"]) == 3
    none = (await client.get("/v1/runs", params={"status": "queued"})).json()
    assert none["runs"] == []
    later = (await client.get("/v1/runs", params={"since": "2999-01-01"})).json()
    assert later["runs"] == []
    earlier = (await client.get("/v1/runs", params={"since": "2000-01-01T00:00:00Z"})).json()
    assert len(earlier["runs"]) == 3


async def test_runs_page_with_a_cursor_without_repeats_or_gaps(
        client: httpx.AsyncClient) -> None:
    await _agent(client, "pager")
    ids = [(await _send(client, "pager", "s", f"m{i}", wait=True))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/runs", params=params)).json()
        pages += 1
        seen.extend(r["id"] for r in page["runs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # A run added while paging does not shift the pages already read.
        if pages == 1:
            await _send(client, "pager", "s", "late", wait=True)
    assert pages == 3
    assert seen == list(reversed(ids))


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "done"}, "query.status"),
    ({"since": "yesterday"}, "query.since"),
    ({"cursor": "not-a-cursor"}, "query.cursor"),
    ({"cursor": "WyJ4IiwgMV0"}, "query.cursor"),  # valid base64 and JSON, wrong shape
    ({"session": "k1"}, "query.session"),
    ({"limit": 0}, "query.limit"),
    ({"limit": 1001}, "query.limit"),
    ({"limit": "many"}, "query.limit"),
])
async def test_runs_refuse_bad_filters_with_422(client: httpx.AsyncClient,
                                                params: dict[str, Any], field: str) -> None:
    response = await client.get("/v1/runs", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert field in {e["field"] for e in error["details"]["errors"]}


async def test_runs_of_an_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runs", params={"agent": "ghost"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"
    feed = await client.get("/v1/events", params={"agent": "ghost"})
    assert feed.status_code == 404


async def test_new_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "get" in paths["/v1/tools"]
    assert "get" in paths["/v1/tools/{name}"]
    assert "get" in paths["/v1/runs"]
    assert "text/event-stream" in paths["/v1/events"]["get"]["responses"]["200"]["content"]
