"""GET /v1/usage and /v1/agents/{name}/usage through the ASGI app, on SQLite and (with
AGENTD_TEST_POSTGRES_URL) PostgreSQL.

Usage is seeded by committing steps with a charge on real sessions
(``runtime.store.append(..., usage=...)``), with models named ``test-*`` so that the
assertions hold whatever the runtime itself charges for the scripted model.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.store import NewEvent, UsageCharge

SUMS = {"calls", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
        "cost_usd"}


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as c:
        yield c


async def agent_with_session(client: httpx.AsyncClient, runtime: Runtime, name: str) -> str:
    """Create agent ``name`` and its session ``k`` (one finished run); the session id."""
    assert (await client.post("/v1/agents", json={"name": name})).status_code == 201
    sent = await client.post(f"/v1/agents/{name}/sessions/k/messages", json={"content": "hi"})
    assert sent.status_code == 200, sent.text
    assert isinstance(sent.json()["priority"], str)  # the Run carries its priority
    _, session = await runtime.get_session(name, "k")
    return session.id


async def charge(runtime: Runtime, session_id: str, agent: str, *, model: str,
                 tenant: str = "", tokens: tuple[int, int, int] = (10, 5, 0),
                 cost: float = 0.001, written: int = 0) -> float:
    """Commit a step charging this usage; returns its commit time."""
    record = await runtime.get_agent(agent)
    events = await runtime.store.append(
        session_id, [NewEvent(kind="note", data={})],
        usage=UsageCharge(agent_id=record.id, agent=agent, tenant=tenant, model=model,
                          input_tokens=tokens[0], output_tokens=tokens[1],
                          cached_tokens=tokens[2], cache_write_tokens=written,
                          cost_usd=cost))
    return events[0].at


def seeded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if str(r.get("model", "")).startswith("test-")]


async def get_usage(client: httpx.AsyncClient, path: str = "/v1/usage", **params: Any
                    ) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"usage", "totals", "since", "until"}
    # The totals are the sums of the rows, whatever the grouping.
    for key in SUMS - {"cost_usd"}:
        assert body["totals"][key] == sum(r[key] for r in body["usage"])
    assert body["totals"]["cost_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in body["usage"]))
    return body


async def test_usage_grouped_filtered_and_totalled(client: httpx.AsyncClient,
                                                   runtime: Runtime) -> None:
    s1 = await agent_with_session(client, runtime, "a1")
    s2 = await agent_with_session(client, runtime, "a2")
    at = await charge(runtime, s1, "a1", model="test-m1", tenant="acme")
    await charge(runtime, s1, "a1", model="test-m1", tenant="acme", tokens=(9, 2, 3),
                 written=4)
    await charge(runtime, s1, "a1", model="test-m2", tenant="acme")
    await charge(runtime, s2, "a2", model="test-m1", tenant="other", tokens=(100, 50, 0),
                 cost=0.01)
    today = time.strftime("%Y-%m-%d", time.gmtime(at))

    body = await get_usage(client, by="agent,model")
    assert (body["since"], body["until"]) == (None, None)
    assert seeded(body["usage"]) == [
        {"agent": "a1", "model": "test-m1", "calls": 2, "input_tokens": 19,
         "output_tokens": 7, "cached_tokens": 3, "cache_write_tokens": 4, "cost_usd": 0.002},
        {"agent": "a1", "model": "test-m2", "calls": 1, "input_tokens": 10,
         "output_tokens": 5, "cached_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.001},
        {"agent": "a2", "model": "test-m1", "calls": 1, "input_tokens": 100,
         "output_tokens": 50, "cached_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.01},
    ]

    acme = await get_usage(client, tenant="acme")
    assert acme["usage"] == [acme["totals"]]
    assert acme["totals"] == {"calls": 3, "input_tokens": 29, "output_tokens": 12,
                              "cached_tokens": 3, "cache_write_tokens": 4, "cost_usd": 0.003}
    only_a2 = await get_usage(client, agent="a2", by="tenant,model")
    assert seeded(only_a2["usage"]) == [{"tenant": "other", "model": "test-m1", "calls": 1,
                                         "input_tokens": 100, "output_tokens": 50,
                                         "cached_tokens": 0, "cache_write_tokens": 0,
                                         "cost_usd": 0.01}]

    by_day = await get_usage(client, by="day,month", since=today, until=today)
    assert (by_day["since"], by_day["until"]) == (today, today)
    assert [(r["day"], r["month"]) for r in by_day["usage"]] == [(today, today[:7])]
    assert by_day["totals"]["calls"] >= 4
    nothing = await get_usage(client, by="agent", since="2999-01-01")
    assert nothing["usage"] == []
    assert nothing["totals"] == dict.fromkeys(SUMS, 0)


async def test_agent_usage(client: httpx.AsyncClient, runtime: Runtime) -> None:
    s1 = await agent_with_session(client, runtime, "a1")
    s2 = await agent_with_session(client, runtime, "a2")
    await charge(runtime, s1, "a1", model="test-m1")
    await charge(runtime, s2, "a2", model="test-m1", tokens=(7, 7, 7))

    mine = await get_usage(client, "/v1/agents/a1/usage", by="agent,model")
    assert {r["agent"] for r in mine["usage"]} == {"a1"}
    assert seeded(mine["usage"]) == [{"agent": "a1", "model": "test-m1", "calls": 1,
                                      "input_tokens": 10, "output_tokens": 5,
                                      "cached_tokens": 0, "cache_write_tokens": 0,
                                      "cost_usd": 0.001}]
    assert mine == await get_usage(client, agent="a1", by="agent,model")

    missing = await client.get("/v1/agents/nobody/usage")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "agent_not_found"
    # An unknown name in the query is no error: nothing was used under it.
    assert (await get_usage(client, agent="nobody", by="agent"))["usage"] == []

    # A deleted agent's usage stays in the ledger, under its name.
    assert (await client.delete("/v1/agents/a1")).status_code == 204
    assert (await client.get("/v1/agents/a1/usage")).status_code == 404
    kept = await get_usage(client, agent="a1", by="model")
    assert seeded(kept["usage"]) == [{"model": "test-m1", "calls": 1, "input_tokens": 10,
                                      "output_tokens": 5, "cached_tokens": 0,
                                      "cache_write_tokens": 0, "cost_usd": 0.001}]


@pytest.mark.parametrize(("params", "field", "words"), [
    ({"since": "2024-13-01"}, "query.since", "YYYY-MM-DD"),
    ({"since": "20240101"}, "query.since", "YYYY-MM-DD"),
    ({"until": "yesterday"}, "query.until", "YYYY-MM-DD"),
    ({"since": "2024-02-02", "until": "2024-02-01"}, "query.since", "after until"),
    ({"by": "agent,week"}, "query.by", "'week'"),
])
@pytest.mark.parametrize("path", ["/v1/usage", "/v1/agents/a1/usage"])
async def test_bad_usage_queries_are_422(client: httpx.AsyncClient, runtime: Runtime,
                                         path: str, params: dict[str, str], field: str,
                                         words: str) -> None:
    assert (await client.post("/v1/agents", json={"name": "a1"})).status_code == 201
    response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert words in error["message"]
    assert [e["field"] for e in error["details"]["errors"]] == [field]
