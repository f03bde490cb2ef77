"""The heartbeat over HTTP: GET/PATCH ``/v1/agents/{name}/heartbeat`` (4xx naming the
key), a silent reply left out of SSE streams (live and replayed) but in the log, and
the beat claim shared by two nodes on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from tests.conftest import asgi_client, eventually

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.runtime import Token
from agentd.store.records import EventRecord
from agentd.testing import FakeClock

from .test_heartbeat import EVERY, T0, _hb, _runs, _settle


async def test_get_and_patch_the_heartbeat(settings: Settings, runtime: Runtime) -> None:
    runtime.heartbeat.clock = FakeClock(T0 + 5)
    await runtime.create_agent(name="a")
    async with asgi_client(settings, runtime) as api:
        shown = (await api.get("/v1/agents/a/heartbeat")).json()
        assert shown["settings"]["enabled"] is False and shown["valid"] is True
        assert shown["state"] == {"last_beat_at": None, "last_run_id": None,
                                  "last_outcome": None, "next_beat_at": None,
                                  "last_skip_at": None, "last_skip_reason": None}
        response = await api.patch("/v1/agents/a/heartbeat", json={
            "enabled": True, "every_s": 900, "document": "Look around.",
            "active_hours": {"start": "08:00", "end": "20:00",
                             "timezone": "Europe/Berlin"}})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["settings"]["every_s"] == 900
        assert body["settings"]["active_hours"]["timezone"] == "Europe/Berlin"
        assert body["state"]["next_beat_at"] == "2030-01-02T10:00:00Z"
        # active_hours is merged key by key; null resets a key to its default.
        merged = (await api.patch("/v1/agents/a/heartbeat", json={
            "active_hours": {"end": "21:00"}, "document": None})).json()["settings"]
        assert merged["active_hours"] == {"start": "08:00", "end": "21:00",
                                          "timezone": "Europe/Berlin"}
        assert merged["document"] is None and merged["file"] == "HEARTBEAT.md"
        # Stored in the agent's settings, as PATCH /v1/agents shows them.
        agent = (await api.get("/v1/agents/a")).json()
        assert agent["settings"]["heartbeat"]["every_s"] == 900

        for patch, field in [({"every_s": 5}, "body.every_s"),
                             ({"every_s": "often"}, "body.every_s"),
                             ({"file": "../../etc/passwd"}, "body.file"),
                             ({"active_hours": {"timezone": "Nowhere/City"}},
                              "body.active_hours.timezone"),
                             ({"surprise": True}, "body.surprise")]:
            bad = await api.patch("/v1/agents/a/heartbeat", json=patch)
            assert bad.status_code == 422, (patch, bad.text)
            error = bad.json()["error"]
            assert error["code"] == "invalid_input"
            assert [e["field"] for e in error["details"]["errors"]] == [field], error
        after = (await api.get("/v1/agents/a/heartbeat")).json()["settings"]
        assert after == merged  # nothing half-written
        missing = await api.get("/v1/agents/nobody/heartbeat")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "agent_not_found"


def _frames(lines: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    frames, current = [], {}
    for line in lines:
        if not line:
            if "event" in current:
                frames.append((current["id"], current["event"], orjson.loads(current["data"])))
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = value
    return frames


async def _stream(api: Any, runtime: Runtime, path: str,
                  headers: dict[str, str] | None = None
                  ) -> list[tuple[str, str, dict[str, Any]]]:
    """The frames of a session's SSE stream up to now: the stream is ended (as a
    session's deletion ends it) once it is subscribed, so the ASGI transport, which
    hands over a body only when it is complete, can return it."""
    _, session = await runtime.get_session("a", "heartbeat")
    request = asyncio.ensure_future(api.get(path, headers={
        "Accept": "text/event-stream", **(headers or {})}))
    await eventually(lambda: any(not sub.closed for sub in runtime.bus._subs.get(
        session.id, ())), what="the subscription")
    runtime.bus.close_session(session.id)
    response = await request
    assert response.status_code == 200, response.text
    return _frames(response.text.split("\n"))


async def test_a_silent_reply_is_logged_but_not_streamed(settings: Settings,
                                                        runtime: Runtime) -> None:
    runtime.heartbeat.clock = FakeClock(T0 + 5)
    await runtime.create_agent(name="a", settings=_hb())
    await runtime.heartbeat.tick()
    await _settle(runtime)
    async with asgi_client(settings, runtime) as api:
        page = (await api.get("/v1/agents/a/sessions/heartbeat/events")).json()
        kinds = [e["kind"] for e in page["events"]]
        assert kinds == ["message.user", "run.queued", "run.started", "message.assistant",
                         "run.completed"]
        frames = await _stream(api, runtime, "/v1/agents/a/sessions/heartbeat/events")
        assert [name for _, name, _ in frames] == [
            "message.user", "run.queued", "run.started", "done"]
        assert frames[-1][2]["data"]["silent"] is True
        # Resuming after run.started (seq 3) goes straight to done (seq 5).
        resumed = await _stream(api, runtime, "/v1/agents/a/sessions/heartbeat/events",
                                {"Last-Event-ID": frames[2][0]})
        assert [(i.partition("@")[0], name) for i, name, _ in resumed] == [("5", "done")]


async def test_a_heartbeats_text_is_not_published_live(runtime: Runtime) -> None:
    clock = FakeClock(T0 + 5)
    runtime.heartbeat.clock = clock
    settings = _hb()
    settings["script"] = [{"text": "HEARTBEAT_OK", "delay_ms": 100},
                          {"text": "the disk is almost full", "delay_ms": 100}]
    await runtime.create_agent(name="a", settings=settings)
    await runtime.heartbeat.tick()  # creates the session; silent
    await _settle(runtime)
    _, session = await runtime.get_session("a", "heartbeat")
    with runtime.subscribe(session.id) as sub:
        clock.now += EVERY
        await runtime.heartbeat.tick()
        await _settle(runtime)
        items = []
        while not sub.queue.empty():
            items.append(sub.queue.get_nowait())
    assert not any(isinstance(i, Token) for i in items), items
    second = (await runtime.get_heartbeat("a"))["state"]["last_run_id"]
    # (On PostgreSQL the log follower may publish the first beat's events again.)
    reply = next(i for i in items if isinstance(i, EventRecord)
                 and i.kind == "message.assistant" and i.run_id == second)
    assert reply.data["text"] == "the disk is almost full" and "silent" not in reply.data


@asynccontextmanager
async def _node(base: Settings, url: str, node_id: str) -> AsyncIterator[Runtime]:
    settings = base.model_copy(update={"database_url": url, "node_id": node_id})
    rt = await Runtime.open(settings)
    try:
        yield rt
    finally:
        await rt.close()


@pytest.mark.postgres
async def test_two_nodes_beat_each_slot_once(settings: Settings, pg_url: str) -> None:
    clock = FakeClock(T0 + 5)
    async with _node(settings, pg_url, "A") as a, _node(settings, pg_url, "B") as b:
        a.heartbeat.clock = b.heartbeat.clock = clock
        await a.create_agent(name="a", settings=_hb())
        await b.heartbeat.sync()
        for step in range(3):
            clock.now = T0 + step * EVERY + 5
            queued = sum([await a.heartbeat.tick(), await b.heartbeat.tick()])
            assert queued == 1, step
            await _settle(a)
        runs = await _runs(a)
        assert len(runs) == 3
        events = await a.read_events(runs[0].session_id)
        slots = sorted(e.data["beat_at"] for e in events if e.kind == "message.user")
        assert slots == [T0, T0 + EVERY, T0 + 2 * EVERY]
