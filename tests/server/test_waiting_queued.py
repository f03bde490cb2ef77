"""A streamed message whose run is queued behind another run of its session says so:
a ``waiting`` frame with reason ``queued`` right after its ``run.queued`` event, told
only to the sender's stream (the log holds no such event). On one node the supervisor
knows the run ahead; on PostgreSQL the run ahead may be another node's."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client, wait_for_run
from tests.server.test_api import parse_sse

from agentd.assembly import Runtime
from agentd.config import Settings

SLOW = {"text": "slow answer", "delay_ms": 1500}
CONTRACT = {"run_id", "reason", "model", "cause", "retry_in_s"}


async def _agent(api: httpx.AsyncClient, *script: dict[str, Any]) -> None:
    r = await api.post("/v1/agents", json={"name": "a", "model": "scripted",
                                           "settings": {"script": list(script)}})
    assert r.status_code == 201, r.text


async def _send(api: httpx.AsyncClient, content: str, **body: Any) -> httpx.Response:
    r = await api.post("/v1/agents/a/sessions/k/messages", json={"content": content, **body})
    assert r.status_code in (200, 202), r.text
    return r


def _names(frames: list[dict[str, Any]]) -> list[str]:
    return [f["event"] for f in frames]


async def test_a_message_queued_behind_a_run_streams_waiting_queued(
        settings: Settings, runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as api:
        await _agent(api, SLOW, {"text": "second answer"})
        first = (await _send(api, "one", wait=False)).json()["id"]
        frames = parse_sse((await _send(api, "two", stream=True)).text)
        names = _names(frames)
        assert names.count("waiting") == 1, names
        waiting = frames[names.index("waiting")]
        # Right after the run's run.queued event, with that event's seq as its id;
        # the waiting is over at the run's next frame (run.started).
        queued = frames[names.index("run.queued")]
        assert names.index("run.queued") + 1 == names.index("waiting") < names.index(
            "run.started")
        assert waiting["id"] == queued["id"]
        data = waiting["data"]
        assert set(data) >= CONTRACT
        run_id = frames[-1]["data"]["run_id"]
        assert data["run_id"] == run_id != first
        assert data["reason"] == "queued" and data["model"] is None
        assert first in data["cause"]
        assert frames[-1]["event"] == "done"
        assert frames[-1]["data"]["data"]["output"] == "second answer"
        # The first run had ended before the second started: the queue was real.
        assert (await wait_for_run(api, first))["status"] == "completed"
        # Not in the log: a client that comes later reads run.queued, then run.started.
        log = (await api.get("/v1/agents/a/sessions/k/events")).json()["events"]
        assert "run.waiting" not in [e["kind"] for e in log]


async def test_a_message_to_an_idle_session_streams_no_waiting(
        settings: Settings, runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as api:
        await _agent(api, {"text": "first"}, {"text": "second"})
        assert (await _send(api, "one", wait=True)).json()["status"] == "completed"
        frames = parse_sse((await _send(api, "two", stream=True)).text)
        assert "waiting" not in _names(frames)
        assert frames[-1]["event"] == "done"


async def test_interrupting_a_run_waits_for_it_to_stop(
        settings: Settings, runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as api:
        await _agent(api, SLOW, {"text": "after the interrupt"})
        first = (await _send(api, "one", wait=False)).json()["id"]
        frames = parse_sse((await _send(api, "two", stream=True, mode="interrupt")).text)
        waiting = [f["data"] for f in frames if f["event"] == "waiting"]
        assert [w["reason"] for w in waiting] == ["queued"]
        assert first in waiting[0]["cause"]
        assert frames[-1]["event"] == "done"
        assert (await wait_for_run(api, first))["status"] == "cancelled"


async def test_a_resent_or_steered_message_streams_no_queued_waiting(
        settings: Settings, runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as api:
        await _agent(api, SLOW, {"text": "steered"}, {"text": "two"})
        first = (await _send(api, "one", wait=False)).json()["id"]
        headers = {"Idempotency-Key": "k-2"}
        sent = await api.post("/v1/agents/a/sessions/k/messages", headers=headers,
                              json={"content": "two", "wait": False})
        assert sent.status_code == 202, sent.text
        # Steered into the run under way: it joins that run, it waits for nothing.
        steered = parse_sse((await _send(api, "three", stream=True, mode="steer")).text)
        assert {f["data"]["run_id"] for f in steered} == {first}
        assert "waiting" not in _names(steered)
        # The queued message again, streamed: the same run, its frames from the log.
        again = await api.post("/v1/agents/a/sessions/k/messages", headers=headers,
                               json={"content": "two", "stream": True})
        assert again.status_code == 200, again.text
        frames = parse_sse(again.text)
        assert {f["data"]["run_id"] for f in frames} == {sent.json()["id"]}
        assert "waiting" not in _names(frames)
        assert frames[-1]["event"] == "done"


@pytest.mark.postgres
async def test_on_postgresql_the_run_ahead_may_be_another_nodes(
        settings: Settings, pg_url: str) -> None:
    """Two daemons on one PostgreSQL store: the run ahead is driven by node A, the
    streamed message reaches node B (whose supervisor knows nothing of it)."""
    nodes: list[Runtime] = []
    for node in ("node-a", "node-b"):
        nodes.append(await Runtime.open(settings.model_copy(update={
            "database_url": pg_url, "node_id": node})))
    try:
        async with asgi_client(settings, nodes[0]) as a, \
                asgi_client(settings, nodes[1]) as b:
            await _agent(a, SLOW, {"text": "second answer"})
            first = (await _send(a, "one", wait=False)).json()["id"]
            stream = asyncio.create_task(_send(b, "two", stream=True))
            frames = parse_sse((await stream).text)
            waiting = [f["data"] for f in frames if f["event"] == "waiting"]
            assert [w["reason"] for w in waiting] == ["queued"], _names(frames)
            assert first in waiting[0]["cause"]
            assert frames[-1]["event"] == "done"
    finally:
        for rt in nodes:
            await rt.close()
