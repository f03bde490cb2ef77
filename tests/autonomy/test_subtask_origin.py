"""A child run inherits what started its parent's chain: a run a schedule fired may
not create schedules (unless ``allow_from_schedule``), and neither may its subtasks,
their subtasks, or the agents it calls. Through the HTTP API, on SQLite and
PostgreSQL; the scripted model plays each agent's ``settings.script``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client, wait_for_run

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.testing import FakeClock


@pytest.fixture
async def api(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as client:
        yield client


def _calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}


AGAIN = ("schedule_create", {"content": "again", "every_s": 3600})
#: Every run of the agent: create a schedule and start a subtask (the grandchild's
#: subtask is refused: two levels deep is the default limit), then wait, then answer.
CHAIN = [_calls(AGAIN, ("subtask_start", {"title": "more", "instructions": "go on"})),
         _calls(("subtask_wait", {})),
         {"text": "done"}]


async def _agent(api: httpx.AsyncClient, name: str, tools: list[str],
                 script: list[dict[str, Any]], **settings: Any) -> None:
    r = await api.post("/v1/agents", json={
        "name": name, "tools": tools, "settings": {"script": script, **settings}})
    assert r.status_code == 201, r.text




async def _fire(api: httpx.AsyncClient, runtime: Runtime, agent: str) -> dict[str, Any]:
    """Schedule one message to ``agent`` (through the API) and fire it (the service's
    clock moved past it: no waiting on the wall clock); its run, once ended."""
    await runtime.schedules.stop()
    clock = FakeClock(4_000_000_000.0)
    runtime.schedules.clock = clock
    at = datetime.fromtimestamp(clock.now + 60, UTC).isoformat()
    r = await api.post(f"/v1/agents/{agent}/schedules",
                       json={"at": at, "session": "cron", "content": "start"})
    assert r.status_code == 201, r.text
    clock.now += 61
    assert await runtime.schedules.fire_due() == 1
    got = await api.get(f"/v1/schedules/{r.json()['id']}")
    return await wait_for_run(api, got.json()["last_run_id"])


async def _schedule_creates(api: httpx.AsyncClient, agent: str) -> list[dict[str, Any]]:
    """Every ``schedule_create`` result in the agent's sessions, with its session's
    first message (what started the run)."""
    found = []
    sessions = (await api.get(f"/v1/agents/{agent}/sessions")).json()["sessions"]
    for session in sessions:
        events = (await api.get(f"/v1/agents/{agent}/sessions/{session['key']}/events")
                  ).json()["events"]
        first = next(e["data"] for e in events if e["kind"] == "message.user")
        found.extend({**e["data"], "origin": first, "session": session["key"]}
                     for e in events if e["kind"] == "tool.finished"
                     and e["data"]["name"] == "schedule_create")
    return found


async def _schedules(api: httpx.AsyncClient, agent: str) -> list[str]:
    listed = (await api.get(f"/v1/agents/{agent}/schedules")).json()["schedules"]
    return [s["content"] for s in listed]


async def test_a_scheduled_runs_subtasks_cannot_create_schedules_at_any_depth(
        api: httpx.AsyncClient, runtime: Runtime) -> None:
    """Each run of the agent tries to create a schedule and to start a subtask: the
    fired run, its child (depth 1) and grandchild (depth 2) are all refused; before,
    the children's origin dropped the schedule and each made one."""
    await _agent(api, "a", ["schedule_create", "subtask_start", "subtask_wait"], CHAIN)
    run = await _fire(api, runtime, "a")
    assert run["status"] == "completed", run
    tried = await _schedule_creates(api, "a")
    assert sorted(t["session"].split(":")[0] for t in tried) == ["cron", "sub", "sub"]
    for result in tried:
        assert result["is_error"], result
        assert "allow_from_schedule" in result["output"]
        # What started the chain is in every child's message, whatever its depth.
        assert result["origin"]["schedule_id"] == tried[0]["origin"]["schedule_id"]
    assert await _schedules(api, "a") == ["start"]


async def test_an_agent_called_by_a_scheduled_run_follows_its_own_setting(
        api: httpx.AsyncClient, runtime: Runtime) -> None:
    """A call to another agent carries the origin too; the callee's own
    ``allow_from_schedule`` decides for its runs."""
    for name, allowed in (("strict", False), ("lenient", True)):
        await _agent(api, name, ["schedule_create"], [_calls(AGAIN), {"text": "ok"}],
                     schedules={"allow_from_schedule": allowed})
    await _agent(api, "boss", ["agent_call"], [
        _calls(("agent_call", {"agent": "strict", "message": "schedule it"})),
        _calls(("agent_call", {"agent": "lenient", "message": "schedule it"})),
        {"text": "done"}], delegation={"calls": {"allow": ["strict", "lenient"]}})
    run = await _fire(api, runtime, "boss")
    assert run["status"] == "completed", run
    [strict] = await _schedule_creates(api, "strict")
    assert strict["is_error"] and "allow_from_schedule" in strict["output"]
    assert "schedule_id" in strict["origin"]
    [lenient] = await _schedule_creates(api, "lenient")
    assert not lenient["is_error"], lenient
    assert await _schedules(api, "strict") == []
    assert await _schedules(api, "lenient") == ["again"]


async def test_a_clients_runs_and_their_children_still_create_schedules(
        api: httpx.AsyncClient) -> None:
    """Only what started the chain is inherited: the same agent, sent a message by a
    client, creates its schedules at every depth as before."""
    await _agent(api, "a", ["schedule_create", "subtask_start", "subtask_wait"], CHAIN)
    r = await api.post("/v1/agents/a/sessions/k/messages",
                       json={"content": "go", "wait": False})
    assert r.status_code == 202, r.text
    assert (await wait_for_run(api, r.json()["id"]))["status"] == "completed"
    tried = await _schedule_creates(api, "a")
    assert len(tried) == 3 and not any(t["is_error"] for t in tried), tried
    assert await _schedules(api, "a") == ["again"] * 3


async def test_a_scheduled_teams_member_steps_cannot_create_schedules(
        api: httpx.AsyncClient, runtime: Runtime) -> None:
    """A team's member steps are child runs of the team's run: fired by a schedule,
    they carry its origin."""
    await _agent(api, "member", ["schedule_create"], [_calls(AGAIN), {"text": "ok"}])
    r = await api.post("/v1/agents", json={"name": "desk", "settings": {
        "team": {"pattern": "pipeline", "members": ["member"]}}})
    assert r.status_code == 201, r.text
    run = await _fire(api, runtime, "desk")
    assert run["status"] == "completed", run
    [tried] = await _schedule_creates(api, "member")
    assert tried["is_error"] and "allow_from_schedule" in tried["output"]
    assert await _schedules(api, "member") == []
