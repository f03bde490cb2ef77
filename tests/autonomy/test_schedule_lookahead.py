"""Schedules prepared ahead of their time (``Schedules.lead_s``): what is due at a time
is read and planned before it, and claimed at or after it; an edit meanwhile is fired
as edited, never as planned, and never twice."""

from __future__ import annotations

import asyncio
import time

import orjson

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn

FAST = {"schedules": {"min_interval_s": 1, "max_per_agent": 1000}}


async def _due_soon(runtime: Runtime, content: str, in_s: float, n: int = 1) -> list[str]:
    """``n`` schedules of agent "a" whose next fire time is ``in_s`` from now (the
    service's own task stopped: the test fires)."""
    await runtime.schedules.stop()
    await runtime.create_agent(name="a", settings=FAST)
    ids = []
    for i in range(n):
        rec = await runtime.schedules.create("a", ScheduleIn(
            content=content, every_s=3600, session=f"s{i}"), by="test")
        ids.append(rec.id)
    at = time.time() + in_s
    await runtime.store.engine.write(lambda tx: tx.executemany(
        "UPDATE schedules SET next_fire_at = ?, next_due_at = ? WHERE id = ?",
        [(at, at, sid) for sid in ids]))
    return ids


async def _fires(runtime: Runtime) -> list[tuple[str, float, float, str]]:
    """(schedule id, fire time, claimed at, content) of every fire claimed."""
    rows = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT f.schedule_id, f.fire_at, f.at, e.data FROM schedule_fires f "
        "JOIN events e ON e.run_id = f.run_id AND e.kind = 'message.user' "
        "WHERE f.status = 'fired' ORDER BY f.schedule_id"))
    return [(r[0], float(r[1]), float(r[2]), orjson.loads(r[3])["content"]) for r in rows]


async def test_a_burst_planned_ahead_is_claimed_at_its_time_each_fire_once(
        runtime: Runtime) -> None:
    ids = await _due_soon(runtime, "tick", in_s=0.6, n=30)
    runtime.schedules.batch = 8  # several commits, as a big burst makes
    runtime.schedules.chunk = 4
    [due_at] = {(await runtime.schedules.get(i)).next_due_at for i in ids}
    assert due_at is not None
    done = await runtime.schedules.fire_due(at=due_at)
    assert done == 30
    fires = await _fires(runtime)
    assert sorted(f[0] for f in fires) == sorted(ids)  # each once
    for _, fire_at, claimed_at, content in fires:
        assert fire_at == due_at and content == "tick"
        assert claimed_at >= due_at  # never before its time
    assert (await runtime.schedules.fire_due()) == 0  # nothing left due


async def test_an_edit_after_planning_is_fired_as_edited(runtime: Runtime) -> None:
    [sid] = await _due_soon(runtime, "old", in_s=0.8)
    due_at = (await runtime.schedules.get(sid)).next_due_at
    assert due_at is not None
    firing = asyncio.create_task(runtime.schedules.fire_due(at=due_at))
    await asyncio.sleep(0.3)  # planned, waiting for its time
    assert not firing.done()
    await runtime.schedules.update(sid, {"content": "new"})
    await firing
    fires = await _fires(runtime)
    assert [(f[0], f[3]) for f in fires] == [(sid, "new")]
    assert fires[0][2] >= due_at


async def test_a_schedule_paused_after_planning_does_not_fire(runtime: Runtime) -> None:
    [sid] = await _due_soon(runtime, "tick", in_s=0.8)
    due_at = (await runtime.schedules.get(sid)).next_due_at
    assert due_at is not None
    firing = asyncio.create_task(runtime.schedules.fire_due(at=due_at))
    await asyncio.sleep(0.3)
    await runtime.schedules.update(sid, {"enabled": False})
    await firing
    assert await _fires(runtime) == []


async def test_a_previous_run_is_interrupted_at_the_fire_time_not_ahead_of_it(
        runtime: Runtime) -> None:
    await runtime.schedules.stop()
    await runtime.create_agent(name="a", settings={
        **FAST, "script": [{"text": "slow", "delay_ms": 30_000}]})
    rec = await runtime.schedules.create("a", ScheduleIn(
        content="tick", every_s=3600, overlap="interrupt"), by="test")  # new session each

    async def due_in(seconds: float) -> float:
        at = time.time() + seconds
        await runtime.store.engine.write(lambda tx: tx.execute(
            "UPDATE schedules SET next_fire_at = ?, next_due_at = ? WHERE id = ?",
            (at, at, rec.id)))
        return at

    await runtime.schedules.fire_due(at=await due_in(0.2))
    [(_, _, _, _)] = await _fires(runtime)
    first = (await runtime.schedules.get(rec.id)).last_run_id
    assert first is not None
    for _ in range(100):
        if (await runtime.store.get_run(first)).status == "running":
            break
        await asyncio.sleep(0.05)
    at = await due_in(1.0)
    # Planned ahead: left for its time (the overlap is decided then), nothing done now.
    await runtime.schedules.fire_due(at=at)
    assert (await runtime.store.get_run(first)).status == "running"
    assert len(await _fires(runtime)) == 1
    await asyncio.sleep(max(at - time.time(), 0) + 0.01)
    assert (await runtime.schedules.fire_due()) == 1  # the loop's pass at its time
    assert len(await _fires(runtime)) == 2
    stopped = await runtime.wait(first)
    assert stopped.status in ("interrupted", "cancelled")
    second = (await runtime.schedules.get(rec.id)).last_run_id
    assert second is not None and second != first
    await runtime.cancel_run(second)
