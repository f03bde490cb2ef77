"""An agent's sessions a page at a time (GET /v1/agents/{name}/sessions with limit,
after, q) through the ASGI app on SQLite and (with AGENTD_TEST_POSTGRES_URL)
PostgreSQL: the unpaged answer is unchanged, pages cover every session once, bad
parameters are 422 naming the field, and a scoped token sees no other tenant's agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client
from tests.server._scopes import ACME, ADMIN, GLOBEX, auth, scoped_daemon, settings_for
from tests.server.test_overview_api import invalid

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.store.rows import SESSION_NEW


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as c:
        yield c


async def agent_with_sessions(client: httpx.AsyncClient, runtime: Runtime, name: str,
                              rows: list[tuple[str, float]]) -> None:
    """An agent and its sessions (key, updated_at), written with the times given."""
    response = await client.post("/v1/agents", json={"name": name})
    assert response.status_code == 201, response.text
    agent = await runtime.store.get_agent(name)
    await runtime.store.engine.write(lambda tx: [tx.execute(
        f"INSERT INTO sessions ({SESSION_NEW}) VALUES (?, ?, ?, 0, ?, ?, 0, ?)",
        (f"s_{name}_{i:04d}", agent.id, key, at, at, at))
        for i, (key, at) in enumerate(rows)])


async def listing(client: httpx.AsyncClient, name: str = "bot", **params: Any
                  ) -> dict[str, Any]:
    response = await client.get(f"/v1/agents/{name}/sessions", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def keys(body: dict[str, Any]) -> list[str]:
    return [s["key"] for s in body["sessions"]]




async def test_without_parameters_the_answer_is_unchanged(client: httpx.AsyncClient,
                                                          runtime: Runtime) -> None:
    await agent_with_sessions(client, runtime, "bot", [("a", 1.0), ("b", 2.0)])
    body = await listing(client)
    assert set(body) == {"sessions"} and keys(body) == ["b", "a"]


async def test_pages_cover_250_sessions_once_in_order(client: httpx.AsyncClient,
                                                      runtime: Runtime) -> None:
    # Ties: five sessions at each instant, so boundaries fall among equal times.
    rows = [(f"user:{i}", 1_700_000_000.123456 + i // 5) for i in range(250)]
    await agent_with_sessions(client, runtime, "bot", rows)
    await agent_with_sessions(client, runtime, "other", [("user:1", 2e9)])
    everything = keys(await listing(client))
    assert sorted(everything) == sorted(k for k, _ in rows)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        body = await listing(client, limit=100, **({"after": after} if after else {}))
        assert set(body) == {"sessions", "next_after"} and len(body["sessions"]) <= 100
        seen += keys(body)
        pages += 1
        after = body["next_after"]
        if after is None:
            break
    assert seen == everything and pages == 3
    # Only after (or only q): pages of 100.
    first = await listing(client, q="")
    assert len(first["sessions"]) == 100 and first["next_after"]
    second = await listing(client, after=first["next_after"])
    assert keys(first) + keys(second) == everything[:200]
    assert (await listing(client, limit=250))["next_after"] is None  # an exact fit


async def test_q_matches_part_of_the_key_in_any_case(client: httpx.AsyncClient,
                                                     runtime: Runtime) -> None:
    await agent_with_sessions(client, runtime, "bot", [
        ("User:Alice", 1.0), ("user:bob", 2.0), ("50%", 3.0), ("a_b", 4.0), ("axb", 5.0),
        ("<img src=x onerror=alert(1)>", 6.0)])
    assert keys(await listing(client, q="USER")) == ["user:bob", "User:Alice"]
    assert keys(await listing(client, q="%")) == ["50%"]
    assert keys(await listing(client, q="_")) == ["a_b"]
    assert keys(await listing(client, q="onerror")) == ["<img src=x onerror=alert(1)>"]
    paged = await listing(client, q="B", limit=2)
    assert keys(paged) == ["axb", "a_b"] and paged["next_after"]
    rest = await listing(client, q="B", limit=2, after=paged["next_after"])
    assert keys(rest) == ["user:bob"] and rest["next_after"] is None
    assert await listing(client, q="nothing") == {"sessions": [], "next_after": None}


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "query.limit"),
    ({"limit": 1001}, "query.limit"),
    ({"limit": "ten"}, "query.limit"),
    ({"after": "not-a-cursor"}, "query.after"),
    ({"after": "WzEsMl0", "limit": 5}, "query.after"),  # [1,2]: JSON, not a place
    ({"after": "x" * 513}, "query.after"),
    ({"q": "x" * 257}, "query.q"),
])
async def test_bad_parameters_are_refused_naming_the_field(
        client: httpx.AsyncClient, runtime: Runtime, params: dict[str, Any], field: str
) -> None:
    await agent_with_sessions(client, runtime, "bot", [("a", 1.0)])
    assert invalid(await client.get("/v1/agents/bot/sessions", params=params)) == field


async def test_an_unknown_agent_is_404_paged_or_not(client: httpx.AsyncClient) -> None:
    for params in ({}, {"limit": 10}, {"q": "x"}):
        response = await client.get("/v1/agents/ghost/sessions", params=params)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "agent_not_found"


async def test_a_scoped_token_pages_only_its_own_agents_sessions(
        tmp_path: Path, store_url: str) -> None:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (runtime, api):
        for name, tenant in (("acme-bot", "acme"), ("globex-bot", "globex")):
            created = await api.post("/v1/agents", headers=auth(ADMIN), json={
                "name": name, "settings": {"tenant": tenant}})
            assert created.status_code == 201, created.text
            await runtime.store.accept_message(
                agent_id=(await runtime.store.get_agent(name)).id, key=f"{name}:chat",
                content="hi")
        for params in ({}, {"limit": 10}, {"q": "chat"}, {"limit": 1, "q": "acme"}):
            own = await api.get("/v1/agents/acme-bot/sessions", headers=auth(ACME),
                                params=params)
            assert own.status_code == 200 and keys(own.json()) == ["acme-bot:chat"], own.text
            other = await api.get("/v1/agents/acme-bot/sessions", headers=auth(GLOBEX),
                                  params=params)
            ghost = await api.get("/v1/agents/nobody-bot/sessions", headers=auth(GLOBEX),
                                  params=params)
            assert other.status_code == 404, other.text
            assert other.text.replace("acme-bot", "X") == ghost.text.replace("nobody-bot", "X")
            assert "chat" not in other.text
