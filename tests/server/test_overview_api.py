"""Listing agents a page at a time (GET /v1/agents with limit, after, q, state) and the
daemon at a glance (GET /v1/overview), through the ASGI app on SQLite and (with
AGENTD_TEST_POSTGRES_URL) PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client, eventually, wait_for_run

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.runtime.overview import DiskGauge, disk_usage
from agentd.store import NewEvent, UsageCharge

NAMES = ["alpha", "Beta-2", "a_b", "axb", "gamma.1", "delta", "zeta", "ALPHA-ops"]


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as c:
        yield c


async def create(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/agents", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def listing(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/agents", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def names(body: dict[str, Any]) -> list[str]:
    return [a["name"] for a in body["agents"]]


def invalid(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    fields = [e["field"] for e in error["details"]["errors"]]
    assert len(fields) == 1, fields
    return str(fields[0])


# -- GET /v1/agents, paged and filtered -------------------------------------------------


async def test_without_parameters_the_answer_is_unchanged(client: httpx.AsyncClient) -> None:
    assert (await listing(client)) == {"agents": []}
    await create(client, "one")
    body = await listing(client)
    assert set(body) == {"agents"}
    assert "awake" not in body["agents"][0]


async def test_pages_by_name_cover_every_agent_once(client: httpx.AsyncClient) -> None:
    for name in NAMES:
        await create(client, name)
    everyone = names(await listing(client))
    assert everyone == sorted(NAMES)  # the store's order: by name, byte-wise
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        body = await listing(client, limit=3, **({"after": after} if after else {}))
        assert set(body) == {"agents", "next_after"}
        assert len(body["agents"]) <= 3
        seen += names(body)
        pages += 1
        after = body["next_after"]
        if after is None:
            break
        assert after == body["agents"][-1]["name"]
    assert seen == everyone and pages == 3
    # An exact fit: the last full page says there is no more.
    assert (await listing(client, limit=len(NAMES)))["next_after"] is None
    # A page keyed by name does not shift when an agent is created before it.
    first = await listing(client, limit=4)
    await create(client, "AAA-first")
    rest = await listing(client, limit=100, after=first["next_after"])
    assert names(first) + names(rest) == everyone


async def test_q_matches_part_of_the_name_in_any_case(client: httpx.AsyncClient) -> None:
    for name in NAMES:
        await create(client, name)
    assert names(await listing(client, q="alpha")) == ["ALPHA-ops", "alpha"]
    assert names(await listing(client, q="PHA-O")) == ["ALPHA-ops"]
    # _ and % are themselves, not LIKE's wildcards.
    assert names(await listing(client, q="_")) == ["a_b"]
    assert names(await listing(client, q="%")) == []
    assert names(await listing(client, q="a.b")) == []
    paged = await listing(client, q="a", limit=2)
    assert len(paged["agents"]) == 2 and paged["next_after"] == paged["agents"][1]["name"]
    assert (await listing(client, q="nothing-like-it")) == {"agents": [],
                                                             "next_after": None}


async def test_state_filters_and_awake(client: httpx.AsyncClient, runtime: Runtime) -> None:
    for name in ("p", "r", "s", "c"):
        await create(client, name)
    assert (await client.post("/v1/agents/p/pause")).status_code == 200
    assert (await client.post("/v1/agents/s/stop")).status_code == 200
    assert (await client.post("/v1/agents/r/resume")).status_code == 200
    assert names(await listing(client, state="paused")) == ["p"]
    assert names(await listing(client, state="paused, stopped")) == ["p", "s"]
    assert names(await listing(client, state="created", q="c")) == ["c"]
    rows = {a["name"]: a for a in (await listing(client, limit=10))["agents"]}
    assert {n: a["state"] for n, a in rows.items()} == {
        "c": "created", "p": "paused", "r": "running", "s": "stopped"}
    assert all(a["awake"] is True for a in rows.values())  # created here: in memory
    assert runtime.sleep_idle_agents(0.0)
    rows = {a["name"]: a for a in (await listing(client, limit=10))["agents"]}
    assert not any(a["awake"] for a in rows.values())
    assert (await client.get("/v1/agents/r")).status_code == 200  # reading wakes it
    rows = {a["name"]: a for a in (await listing(client, state="running"))["agents"]}
    assert rows["r"]["awake"] is True


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 0}, "query.limit"),
    ({"limit": 1001}, "query.limit"),
    ({"limit": "ten"}, "query.limit"),
    ({"state": "asleep"}, "query.state"),
    ({"state": "paused,bogus"}, "query.state"),
    ({"q": "x" * 65}, "query.q"),
    ({"after": "x" * 257}, "query.after"),
])
async def test_bad_listing_parameters_are_refused(client: httpx.AsyncClient,
                                                  params: dict[str, Any], field: str) -> None:
    assert invalid(await client.get("/v1/agents", params=params)) == field


# -- GET /v1/overview ---------------------------------------------------------------------


async def overview(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/overview")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_overview_of_an_empty_daemon(client: httpx.AsyncClient) -> None:
    body = await overview(client)
    assert body["agents"] == {"total": 0, "awake": 0, "asleep": 0, "by_state": {
        "created": 0, "running": 0, "paused": 0, "stopped": 0, "error": 0}}
    assert body["runs"] == {"queued": 0, "running": 0, "waiting_approval": 0}
    assert body["approvals_waiting"] == 0
    assert body["node"] == {"active_runs": 0, "queued_runs": 0, "model_calls_queued": 0}
    assert body["busy"] == []
    assert body["usage_today"]["calls"] == 0 and body["usage_today"]["cost_usd"] == 0
    assert body["store"]["bytes"] > 0
    assert body["sandbox"]["backend"]
    assert (await client.get("/openapi.json")).json()["paths"]["/v1/overview"]["get"]


async def test_overview_counts_agents_runs_approvals_and_usage(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    await create(client, "asker", tools=["calculator"], settings={
        "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
        "script": [{"tool_calls": [{"name": "calculator",
                                    "arguments": {"expression": "6*7"}}]},
                   {"text": "42"}]})
    await create(client, "held")
    await create(client, "done")
    assert (await client.post("/v1/agents/held/pause")).status_code == 200
    sent = await client.post("/v1/agents/asker/sessions/k/messages",
                             json={"content": "sum", "wait": False})
    assert sent.status_code == 202, sent.text
    await wait_for_run(client, sent.json()["id"], "waiting_approval")
    finished = await client.post("/v1/agents/done/sessions/k/messages",
                                 json={"content": "hi"})
    assert finished.json()["status"] == "completed"
    # A charge of today, as a model call's step commits it.
    _, session = await runtime.get_session("done", "k")
    record = await runtime.get_agent("done")
    await runtime.store.append(session.id, [NewEvent(kind="note", data={})], usage=UsageCharge(
        agent_id=record.id, agent="done", tenant="", model="test-model", input_tokens=1000,
        output_tokens=500, cached_tokens=0, cost_usd=0.25))

    body = await overview(client)
    assert body["agents"]["total"] == 3
    assert body["agents"]["by_state"]["paused"] == 1
    assert body["agents"]["by_state"]["running"] + body["agents"]["by_state"]["created"] == 2
    assert body["agents"]["awake"] + body["agents"]["asleep"] == 3
    assert body["runs"]["waiting_approval"] == 1 and body["approvals_waiting"] == 1
    assert len((await client.get("/v1/approvals")).json()["approvals"]) == 1
    usage = body["usage_today"]
    assert usage["input_tokens"] >= 1000 and usage["output_tokens"] >= 500
    assert usage["cost_usd"] >= 0.25 and usage["calls"] >= 1
    assert len(usage["day"]) == 10

    runtime.sleep_idle_agents(0.0)
    assert (await overview(client))["agents"]["asleep"] == 3 - runtime.awake_agents
    approval = (await client.get("/v1/approvals")).json()["approvals"][0]
    decided = await client.post(f"/v1/approvals/{approval['approval_id']}",
                                json={"action": "deny", "reason": "no"})
    assert decided.status_code == 200, decided.text
    await wait_for_run(client, sent.json()["id"])
    after = await overview(client)
    assert after["approvals_waiting"] == 0 and after["runs"]["waiting_approval"] == 0
    assert (await client.delete("/v1/agents/held")).status_code == 204
    assert (await overview(client))["agents"]["total"] == 2


async def test_the_sandbox_disk_is_measured_off_the_request(
        client: httpx.AsyncClient, runtime: Runtime, settings: Settings) -> None:
    first = (await overview(client))["sandbox"]
    await runtime.overview.disk.wait()
    measured = (await overview(client))["sandbox"]
    assert measured["measured_at"] is not None
    assert measured["workspaces_bytes"] is not None and measured["snapshots_bytes"] is not None
    assert first["measured_at"] is None or first["measured_at"] == measured["measured_at"]
    # A file in an agent's workspace shows at the next measurement (the TTL is past).
    root = settings.workspaces_dir / "some-agent"
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.bin").write_bytes(os.urandom(256 * 1024))
    runtime.overview.disk.ttl_s = 0.0
    before = measured["workspaces_bytes"]

    async def grown() -> dict[str, Any] | None:
        now = (await overview(client))["sandbox"]
        return now if now["workspaces_bytes"] >= before + 256 * 1024 else None

    later = await eventually(grown, what="the new file counted")
    assert later["workspaces_files"] >= 1


def test_disk_usage_counts_hard_links_once_and_follows_no_link(tmp_path: Path) -> None:
    assert disk_usage(tmp_path / "missing") == (0, 0)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "d" / "a", tmp_path / "d" / "hard")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"y" * 1_000_000)
    os.symlink(outside, tmp_path / "d" / "link")
    used, files = disk_usage(tmp_path)
    assert files == 2  # the file (once) and the link itself
    assert 100_000 <= used < 1_000_000


async def test_a_gauge_answers_at_once_and_measures_in_the_background(tmp_path: Path) -> None:
    calls: list[Path] = []

    def measure(root: Path) -> tuple[int, int]:
        calls.append(root)
        return 10, 1

    gauge = DiskGauge(tmp_path / "ws", None, ttl_s=3600, measure=measure)
    assert gauge.read()["workspaces_bytes"] is None  # not measured yet: not waited for
    await gauge.wait()
    assert gauge.read()["workspaces_bytes"] == 10 and gauge.read()["snapshots_bytes"] == 0
    await gauge.wait()
    assert calls == [tmp_path / "ws"]  # fresh enough: measured once
    await gauge.close()


async def test_busy_says_what_each_run_under_way_is_doing(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    """A run in a model call names its model; one asking a person names the tool; an
    ended run is not listed."""
    await create(client, "slow", settings={"script": [{"text": "late", "delay_ms": 60_000}]})
    await create(client, "asker", tools=["calculator"], settings={
        "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
        "script": [{"tool_calls": [{"name": "calculator",
                                    "arguments": {"expression": "6*7"}}]},
                   {"text": "42"}]})
    slow = (await client.post("/v1/agents/slow/sessions/k/messages",
                              json={"content": "hi", "wait": False})).json()
    asked = (await client.post("/v1/agents/asker/sessions/k/messages",
                               json={"content": "sum", "wait": False})).json()
    await wait_for_run(client, asked["id"], "waiting_approval")

    async def both() -> dict[str, dict[str, Any]] | None:
        busy = {b["agent"]: b for b in (await overview(client))["busy"]}
        return busy if busy.get("slow", {}).get("waiting_for", {}).get(
            "doing") == "model" else None

    busy = await eventually(both, what="the slow run in its model call")
    assert busy["slow"]["run"] == slow["id"] and busy["slow"]["session"] == "k"
    assert busy["slow"]["status"] == "running"
    assert busy["slow"]["waiting_for"]["detail"].startswith("scripted")
    assert busy["asker"]["run"] == asked["id"]
    assert busy["asker"]["status"] == "waiting_approval"
    assert busy["asker"]["waiting_for"]["doing"] == "approval"
    assert busy["asker"]["waiting_for"]["detail"] == "calculator"
    assert busy["asker"]["waiting_for"]["since"].endswith("Z")
    assert (await client.post(f"/v1/runs/{slow['id']}/cancel")).status_code == 200
    await wait_for_run(client, slow["id"])
    assert [b["agent"] for b in (await overview(client))["busy"]] == ["asker"]
