"""The agent's schedule tools driven through real runs (the scripted model calls them
with the arguments a hostile model would): its own schedules only, limits, no
schedule from a scheduled run unless allowed, no re-creation on a re-run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.testing import FakeClock

TOOLS = ["schedule_create", "schedule_list", "schedule_delete"]


async def call(runtime: Runtime, agent: str, tool: str, args: dict[str, Any], *,
               origin: dict[str, Any] | None = None, key: str = "k") -> tuple[str, bool]:
    """Run ``tool`` with ``args`` in a run of ``agent``; its output and is_error."""
    sent = await runtime.send(agent, key, f"/tool {tool} {json.dumps(args)}",
                              origin=origin)
    await runtime.wait(sent.run.id)
    events = await runtime.read_events(sent.session.id)
    done = [e for e in events if e.kind == "tool.finished" and e.run_id == sent.run.id]
    assert len(done) == 1, [e.kind for e in events]
    return str(done[0].data["output"]), bool(done[0].data["is_error"])


async def _agents(runtime: Runtime, **limits: Any) -> None:
    await runtime.schedules.stop()
    for name in ("a", "b"):
        await runtime.create_agent(name=name, tools=TOOLS, settings={"schedules": {
            "min_interval_s": 60, **limits}})


async def test_an_agent_creates_lists_and_deletes_its_schedules(runtime: Runtime) -> None:
    await _agents(runtime)
    out, err = await call(runtime, "a", "schedule_create", {
        "content": "check the build", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"})
    assert not err and out.startswith("scheduled: sch_"), out
    [rec] = await runtime.schedules.of_agent("a")
    assert rec.session == "k"  # the run's own session by default
    assert rec.created_by == "agent:a" and rec.created_run is not None
    out, err = await call(runtime, "a", "schedule_create", {
        "content": "ping", "every_s": 3600, "new_session_each_time": True})
    assert not err, out
    listed, err = await call(runtime, "a", "schedule_list", {})
    assert not err and rec.id in listed and "every 3600 s" in listed
    assert "a new session each time" in listed
    out, err = await call(runtime, "a", "schedule_delete", {"schedule_id": rec.id})
    assert not err and "deleted" in out
    assert [r.content for r in await runtime.schedules.of_agent("a")] == ["ping"]


async def test_another_agents_schedule_is_neither_seen_nor_deleted(
        runtime: Runtime) -> None:
    await _agents(runtime)
    theirs = await runtime.schedules.create("b", ScheduleIn(content="b's own",
                                                            every_s=600), by="test")
    out, err = await call(runtime, "a", "schedule_delete", {"schedule_id": theirs.id})
    assert err and "no schedule" in out and "of yours" in out
    listed, _ = await call(runtime, "a", "schedule_list", {})
    assert theirs.id not in listed and "b's own" not in listed
    for junk in ("", "x" * 500, "../../sch", "sch_%' OR 1=1 --"):
        out, err = await call(runtime, "a", "schedule_delete", {"schedule_id": junk})
        assert err, out
    assert [r.id for r in await runtime.schedules.of_agent("b")] == [theirs.id]


@pytest.mark.parametrize(("args", "says"), [
    ({"every_s": 5}, "minimum interval"),
    ({"cron": "* * * * *", "every_s": 600}, "exactly one"),
    ({"cron": "*/5 * * * * *"}, "5 fields"),
    ({"cron": "0 9 * * *", "timezone": "../../../etc/shadow"}, "time zone"),
    ({"at": "2001-01-01T00:00:00"}, "past"),
    ({"at": "next tuesday"}, "ISO 8601"),
    ({"every_s": 600, "session": "a/../../b"}, "session"),
    ({"every_s": 1e300}, "at most"),
])
async def test_hostile_arguments_are_refused(runtime: Runtime, args: dict[str, Any],
                                             says: str) -> None:
    await _agents(runtime)
    out, err = await call(runtime, "a", "schedule_create", {"content": "x", **args})
    assert err and says in out, out
    assert await runtime.schedules.of_agent("a") == []


async def test_the_tools_cannot_pass_the_agents_limits(runtime: Runtime) -> None:
    await _agents(runtime, max_per_agent=5, tool_max_per_agent=2)
    for i in range(2):
        out, err = await call(runtime, "a", "schedule_create", {
            "content": f"n{i}", "every_s": 600})
        assert not err, out
    out, err = await call(runtime, "a", "schedule_create", {"content": "n3",
                                                            "every_s": 600})
    assert err and "tool_max_per_agent" in out
    # The API may still add up to max_per_agent; the tools then get nothing more.
    for i in range(3):
        await runtime.schedules.create("a", ScheduleIn(content=f"api{i}", every_s=600),
                                       by="test")
    assert len(await runtime.schedules.of_agent("a")) == 5


async def test_a_scheduled_run_may_not_create_schedules_unless_allowed(
        runtime: Runtime) -> None:
    await _agents(runtime)
    fired = {"schedule_id": "sch_x", "fire_at": 1.0}
    out, err = await call(runtime, "a", "schedule_create", {
        "content": "again and again", "every_s": 600}, origin=fired)
    assert err and "allow_from_schedule" in out
    assert await runtime.schedules.of_agent("a") == []
    # A schedule whose fires create schedules: its fires are refused, no chain grows.
    await runtime.update_agent("a", {"settings": {"schedules": {
        "min_interval_s": 1, "allow_from_schedule": False}}})
    runtime.schedules.clock = clock = FakeClock(3_000_000_000.0)
    loop = json.dumps({"content": "more", "every_s": 1})
    seed = await runtime.schedules.create("a", ScheduleIn(
        content=f"/tool schedule_create {loop}", every_s=1, session="s"), by="test")
    for _ in range(3):
        clock.now += 1
        await runtime.schedules.fire_due()
        rec = await runtime.schedules.get(seed.id)
        if rec.last_run_id:
            await runtime.wait(rec.last_run_id)
    assert [r.id for r in await runtime.schedules.of_agent("a")] == [seed.id]
    # Allowed: a fire's run may create one.
    await runtime.update_agent("a", {"settings": {"schedules": {
        "min_interval_s": 1, "allow_from_schedule": True}}})
    out, err = await call(runtime, "a", "schedule_create", {
        "content": "follow-up", "every_s": 600}, origin=fired)
    assert not err, out


async def test_a_repeated_call_creates_one_schedule(runtime: Runtime) -> None:
    """The id comes from the call's effect id: a call run again after a crash (the
    tool is idempotent) finds the schedule it made."""
    from agentd.autonomy.schedule_tools import schedule_create
    from agentd.tools import ToolContext

    await _agents(runtime)
    agent = await runtime.get_agent("a")
    ctx = ToolContext(agent="a", session="k", run_id="r_1", call_id="c1",
                      effect_id="r_1:c1", agent_id=agent.id,
                      services=runtime.executors.services)
    args = {"content": "once", "every_s": 600}
    first = await schedule_create.call(args, ctx, None, None)
    again = await schedule_create.call(args, ctx, None, None)
    assert "scheduled (already)" in str(again)
    assert str(first).split()[1] in str(again)  # the same schedule id
    assert len(await runtime.schedules.of_agent("a")) == 1
    missing = ToolContext(agent="a", session="k", run_id="r", call_id="c", effect_id="e",
                          agent_id=agent.id)
    with pytest.raises(Exception, match="not available"):
        await schedule_create.call(args, missing, None, None)
