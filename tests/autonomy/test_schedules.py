"""The schedules service on SQLite and PostgreSQL: fires carry their origin, each
fire time runs exactly once (twice fired, restarted, two nodes), missed fire times,
overlap, failures, DST, deleting the agent."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn, following, jitter_of
from agentd.config import Settings
from agentd.errors import AgentNotFound, InvalidInput, NotFound
from agentd.testing import FakeClock

FAST = {"schedules": {"min_interval_s": 1, "max_per_agent": 1000}}




async def _manual(runtime: Runtime, now: float) -> FakeClock:
    """Stop the service's own task and give it a clock the test moves."""
    await runtime.schedules.stop()
    clock = FakeClock(now)
    runtime.schedules.clock = clock
    return clock


async def fired(runtime: Runtime, schedule_id: str | None = None) -> list[dict[str, Any]]:
    """The data of every message.user a schedule sent, with its run's id."""
    rows = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT run_id, data FROM events WHERE kind = 'message.user'"))
    out = []
    for run_id, data in rows:
        parsed = orjson.loads(data)
        if "schedule_id" in parsed and schedule_id in (None, parsed["schedule_id"]):
            out.append({**parsed, "run_id": run_id})
    return sorted(out, key=lambda d: d["fire_at"])


async def settle(runtime: Runtime) -> None:
    for item in await fired(runtime):
        await runtime.wait(item["run_id"])


async def test_an_interval_schedule_fires_runs_that_carry_its_origin(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings=FAST)
    rec = await runtime.schedules.create("a", ScheduleIn(content="tick", every_s=1,
                                                         session="cron"), by="test")
    assert rec.next_fire_at is not None and rec.agent == "a"
    seen = await eventually(lambda: _at_least(runtime, rec.id, 2), what="two fires")
    assert [d["content"] for d in seen[:2]] == ["tick", "tick"]
    assert seen[1]["fire_at"] - seen[0]["fire_at"] == pytest.approx(1.0)
    assert seen[0]["fire_at"] == pytest.approx(rec.next_fire_at)
    run = await runtime.wait(seen[0]["run_id"])
    assert run.status == "completed" and run.output == "echo: tick"
    again = await runtime.schedules.get(rec.id)
    assert again.fires >= 2 and again.last_run_id is not None


async def _at_least(runtime: Runtime, schedule_id: str, n: int) -> list[dict[str, Any]]:
    seen = await fired(runtime, schedule_id)
    return seen if len(seen) >= n else []


async def test_a_fire_time_fired_twice_at_once_runs_once(runtime: Runtime) -> None:
    clock = await _manual(runtime, 1_000_000.0)
    await runtime.create_agent(name="a", settings=FAST)
    rec = await runtime.schedules.create("a", ScheduleIn(
        content="x", every_s=10, session="k", overlap="enqueue"), by="test")
    for _ in range(3):
        clock.now += 10
        await asyncio.gather(*(runtime.schedules.fire_due() for _ in range(4)))
    seen = await fired(runtime, rec.id)
    assert [d["fire_at"] for d in seen] == [1_000_010.0, 1_000_020.0, 1_000_030.0]
    claims = await runtime.store.schedule_fires(rec.id)
    assert [(f.fire_at, f.status) for f in claims] == [
        (1_000_030.0, "fired"), (1_000_020.0, "fired"), (1_000_010.0, "fired")]
    assert {f.run_id for f in claims} == {d["run_id"] for d in seen}
    await settle(runtime)


@pytest.mark.parametrize(("missed", "late", "fires", "missed_count"), [
    ("all", 30, 5, 0),     # 5 fire times passed while down: each fires, in order
    ("all", 90, 5, 0),
    ("once", 30, 1, 4),    # the latest only
    ("once", 90, 1, 4),
    ("skip", 30, 1, 4),    # the latest is within grace_s (60): on time, fires
    ("skip", 90, 0, 5),    # the latest is 90 s late: missed like the others
])
async def test_fire_times_missed_while_down(settings: Settings, store_url: str,
                                            missed: str, late: float, fires: int,
                                            missed_count: int) -> None:
    settings.database_url = store_url
    t0 = 2_000_000.0
    first = await Runtime.open(settings)
    try:
        await _manual(first, t0)
        await first.create_agent(name="a", settings=FAST)
        rec = await first.schedules.create("a", ScheduleIn(
            content="wake", every_s=120, session="k", missed=missed), by="test")
    finally:
        await first.close()
    # The daemon was down for five periods and then some.
    second = await Runtime.open(settings)
    try:
        clock = await _manual(second, t0 + 5 * 120 + late)
        await second.schedules.fire_due()
        seen = await fired(second, rec.id)
        assert len(seen) == fires
        if fires:
            assert seen[-1]["fire_at"] == t0 + 600
        if missed == "all":
            assert [d["fire_at"] for d in seen] == [t0 + 120 * i for i in range(1, 6)]
        after = await second.schedules.get(rec.id)
        assert after.missed_count == missed_count
        assert after.next_fire_at == t0 + 720
        # The missed ones show in the schedule's fires: one claim on the first of them.
        claims = await second.store.schedule_fires(rec.id)
        notes = [(c.fire_at, c.reason) for c in claims if c.status == "missed"]
        if missed_count:
            [(first_missed, reason)] = notes
            assert first_missed == t0 + 120 and reason is not None
            assert reason.startswith(f"{missed_count} fire times missed from this one on")
            assert f"missed: {missed}" in reason
        else:
            assert notes == []
        assert sorted(c.fire_at for c in claims if c.status == "fired") == [
            d["fire_at"] for d in seen]
        await second.schedules.fire_due()  # nothing more is due
        assert len(await fired(second, rec.id)) == fires
        clock.now = t0 + 720
        await settle(second)
        await second.schedules.fire_due()
        assert len(await fired(second, rec.id)) == fires + 1
        await settle(second)
    finally:
        await second.close()


async def test_the_catch_up_window_bounds_what_missed_all_fires(runtime: Runtime) -> None:
    clock = await _manual(runtime, 3_000_000.0)
    await runtime.create_agent(name="a", settings=FAST)
    rec = await runtime.schedules.create("a", ScheduleIn(
        content="x", every_s=60, session="k", missed="all", catchup_s=150), by="test")
    clock.now += 10 * 60
    await runtime.schedules.fire_due()
    seen = await fired(runtime, rec.id)
    # Only fire times at most 150 s old fire (600 - 150 = 450: 480, 540, 600).
    assert [d["fire_at"] - 3_000_000.0 for d in seen] == [480.0, 540.0, 600.0]
    assert (await runtime.schedules.get(rec.id)).missed_count == 7
    [note] = [c for c in await runtime.store.schedule_fires(rec.id) if c.status == "missed"]
    assert note.fire_at == 3_000_060.0 and note.run_id is None and note.reason is not None
    assert note.reason.startswith("7 fire times missed") and "catchup_s: 150" in note.reason
    await settle(runtime)


@pytest.mark.parametrize(("zone", "day", "expr", "local"), [
    ("Europe/Berlin", (2025, 3, 30), "30 2 * * *", "03:00"),        # spring forward
    ("Europe/Berlin", (2025, 10, 26), "30 2 * * *", "02:30:00+02:00"),  # fall back
    ("America/New_York", (2025, 3, 9), "30 2 * * *", "03:00"),
    ("America/New_York", (2025, 11, 2), "30 1 * * *", "01:30:00-04:00"),
])
async def test_a_daily_cron_fires_once_on_a_dst_change_day(
        runtime: Runtime, zone: str, day: tuple[int, int, int], expr: str,
        local: str) -> None:
    tz = ZoneInfo(zone)
    start = datetime(*day, 0, 0, tzinfo=tz).timestamp()
    end = datetime(*day, 8, 0, tzinfo=tz).timestamp()
    clock = await _manual(runtime, start)
    await runtime.create_agent(name="a", settings=FAST)
    rec = await runtime.schedules.create("a", ScheduleIn(
        content="x", cron=expr, timezone=zone, session="k"), by="test")
    while clock.now < end:  # every 5 minutes of the day's first 8 hours
        clock.now += 300
        await runtime.schedules.fire_due()
    seen = await fired(runtime, rec.id)
    assert len(seen) == 1, [datetime.fromtimestamp(d["fire_at"], tz) for d in seen]
    assert local in datetime.fromtimestamp(seen[0]["fire_at"], tz).isoformat()
    nxt = (await runtime.schedules.get(rec.id)).next_fire_at
    assert nxt is not None and datetime.fromtimestamp(nxt, tz).day == day[2] + 1
    await settle(runtime)


async def test_a_one_shot_fires_once_and_an_end_stops_a_schedule(runtime: Runtime) -> None:
    clock = await _manual(runtime, 4_000_000.0)
    await runtime.create_agent(name="a", settings=FAST)
    once = await runtime.schedules.create("a", ScheduleIn(
        content="once", at=datetime.fromtimestamp(4_000_030.0, ZoneInfo("UTC")),
        session="k"), by="test")
    ending = await runtime.schedules.create("a", ScheduleIn(
        content="ending", every_s=20, session="k2",
        ends_at=datetime.fromtimestamp(4_000_050.0, ZoneInfo("UTC"))), by="test")
    for _ in range(10):
        clock.now += 10
        await runtime.schedules.fire_due()
        await settle(runtime)
    assert [d["fire_at"] for d in await fired(runtime, once.id)] == [4_000_030.0]
    assert [d["fire_at"] for d in await fired(runtime, ending.id)] == [4_000_020.0,
                                                                     4_000_040.0]
    for rec in (once, ending):
        assert (await runtime.schedules.get(rec.id)).next_fire_at is None
    assert await runtime.store.due_schedules(clock.now + 10**6, 10) == []
    await settle(runtime)


async def test_overlap_skip_enqueue_and_interrupt(runtime: Runtime) -> None:
    clock = await _manual(runtime, 5_000_000.0)
    slow = {**FAST, "script": [{"text": "slow", "delay_ms": 30_000}]}
    await runtime.create_agent(name="a", settings=slow)
    made = {mode: await runtime.schedules.create("a", ScheduleIn(
        content=mode, every_s=10, session=f"s-{mode}", overlap=mode), by="test")
        for mode in ("skip", "enqueue", "interrupt")}
    clock.now += 10
    await runtime.schedules.fire_due()
    first = {m: (await fired(runtime, r.id))[0]["run_id"] for m, r in made.items()}
    await eventually(lambda: _running(runtime, list(first.values())), what="runs going")
    clock.now += 10
    await runtime.schedules.fire_due()
    skip = await runtime.schedules.get(made["skip"].id)
    assert skip.skipped_count == 1 and len(await fired(runtime, made["skip"].id)) == 1
    claims = await runtime.store.schedule_fires(made["skip"].id)
    assert claims[0].status == "skipped" and "overlap: skip" in (claims[0].reason or "")
    enqueued = await fired(runtime, made["enqueue"].id)
    assert len(enqueued) == 2
    assert (await runtime.store.get_run(enqueued[1]["run_id"])).status == "queued"
    interrupted = await runtime.wait(first["interrupt"])
    assert interrupted.status in ("interrupted", "cancelled")
    for run_id in [*first.values(), enqueued[1]["run_id"]]:
        await runtime.cancel_run(run_id)


async def _running(runtime: Runtime, run_ids: list[str]) -> bool:
    runs = [await runtime.store.get_run(r) for r in run_ids]
    return all(r.status == "running" for r in runs)


FAILING = {"schedules": {"min_interval_s": 1, "pause_after_failures": 3, "backoff_s": 0},
           "max_steps": 1,
           "script": [{"tool_calls": [{"name": "current_time", "arguments": {}}]}]}


async def test_a_schedule_that_keeps_failing_is_paused_with_a_reason(
        runtime: Runtime) -> None:
    clock = await _manual(runtime, 6_000_000.0)
    await runtime.create_agent(name="a", tools=["current_time"], settings=FAILING)
    rec = await runtime.schedules.create("a", ScheduleIn(content="go", every_s=10,
                                                         session="k"), by="test")
    for _ in range(5):
        clock.now += 10
        await runtime.schedules.fire_due()
        await settle(runtime)
    seen = await fired(runtime, rec.id)
    assert len(seen) == 3  # the fourth pass found three failures in a row
    for item in seen:
        assert (await runtime.store.get_run(item["run_id"])).status == "failed"
    paused = await runtime.schedules.get(rec.id)
    assert not paused.enabled and paused.failures == 3
    assert "3 consecutive failed fires" in (paused.paused_reason or "")
    assert "max_steps" in (paused.paused_reason or "")
    # Resumed: the reason is cleared and failures are counted afresh.
    resumed = await runtime.schedules.update(rec.id, {"enabled": True})
    assert resumed.enabled and resumed.paused_reason is None and resumed.failures == 0
    assert resumed.next_fire_at == clock.now + 10
    clock.now += 10
    await runtime.schedules.fire_due()
    assert len(await fired(runtime, rec.id)) == 4
    await settle(runtime)


async def test_a_failed_fire_backs_off(runtime: Runtime) -> None:
    import time

    t0 = time.time()  # backoff is measured from the failed run's (real) end
    clock = await _manual(runtime, t0)
    settings = {**FAILING, "schedules": {"min_interval_s": 1, "backoff_s": 300,
                                         "pause_after_failures": 0}}
    await runtime.create_agent(name="a", tools=["current_time"], settings=settings)
    rec = await runtime.schedules.create("a", ScheduleIn(content="go", every_s=60,
                                                         session="k"), by="test")
    clock.now = t0 + 60
    await runtime.schedules.fire_due()
    await settle(runtime)
    clock.now = t0 + 120
    await runtime.schedules.fire_due()
    after = await runtime.schedules.get(rec.id)
    # The fire times within 300 s of the failure are passed over.
    assert after.next_fire_at == t0 + 360 and after.missed_count == 4
    assert after.failures == 1
    [note] = [c for c in await runtime.store.schedule_fires(rec.id) if c.status == "missed"]
    assert note.fire_at == t0 + 120 and note.reason is not None
    assert note.reason.startswith("4 fire times passed over") and "backing off" in note.reason
    clock.now = t0 + 360
    await runtime.schedules.fire_due()
    assert [d["fire_at"] - t0 for d in await fired(runtime, rec.id)] == [60, 360]
    await settle(runtime)


async def test_a_fire_wakes_a_sleeping_agent_and_a_paused_agent_skips(
        runtime: Runtime) -> None:
    clock = await _manual(runtime, 7_000_000.0)
    await runtime.create_agent(name="a", settings=FAST)
    rec = await runtime.schedules.create("a", ScheduleIn(content="hi", every_s=10,
                                                         session="k"), by="test")
    assert runtime.sleep_idle_agents(0) == ["a"]
    assert runtime.awake_agents == 0
    clock.now += 10
    await runtime.schedules.fire_due()
    [item] = await fired(runtime, rec.id)
    assert (await runtime.wait(item["run_id"])).status == "completed"
    await runtime.set_state("a", "pause")
    clock.now += 10
    await runtime.schedules.fire_due()
    assert len(await fired(runtime, rec.id)) == 1
    claims = await runtime.store.schedule_fires(rec.id)
    assert claims[0].status == "skipped" and "paused" in (claims[0].reason or "")


async def test_deleting_the_agent_deletes_its_schedules(runtime: Runtime) -> None:
    clock = await _manual(runtime, 8_000_000.0)
    await runtime.create_agent(name="a", settings=FAST)
    await runtime.create_agent(name="b", settings=FAST)
    gone = await runtime.schedules.create("a", ScheduleIn(content="x", every_s=10),
                                          by="test")
    kept = await runtime.schedules.create("b", ScheduleIn(content="y", every_s=10),
                                          by="test")
    await runtime.delete_agent("a")
    with pytest.raises(NotFound):
        await runtime.schedules.get(gone.id)
    assert [r.id for r in await runtime.schedules.list_all()] == [kept.id]
    clock.now += 10
    assert await runtime.schedules.fire_due() == 1
    assert [d["schedule_id"] for d in await fired(runtime)] == [kept.id]
    with pytest.raises(AgentNotFound):
        await runtime.schedules.create("a", ScheduleIn(content="x", every_s=10), by="t")
    await settle(runtime)


async def test_a_new_session_per_fire(runtime: Runtime) -> None:
    clock = await _manual(runtime, 9_000_000.0)
    await runtime.create_agent(name="a", settings=FAST)
    rec = await runtime.schedules.create("a", ScheduleIn(content="x", every_s=10),
                                         by="test")
    for _ in range(2):
        clock.now += 10
        await runtime.schedules.fire_due()
        await settle(runtime)
    keys = sorted(s.key for s in await runtime.list_sessions("a"))
    assert keys == [f"schedule:{rec.id}:1970-04-15T04:00:10Z",
                    f"schedule:{rec.id}:1970-04-15T04:00:20Z"]


@pytest.mark.parametrize(("spec", "field"), [
    ({"cron": "61 * * * *"}, "body.cron"),
    ({"cron": "* * * *"}, "body.cron"),
    ({"cron": "* * * * *"}, "body.cron"),  # every 60 s, under the minimum of 120
    ({"every_s": 119}, "body.every_s"),
    ({"every_s": 600, "timezone": "Mars/Olympus"}, "body.timezone"),
    ({"every_s": 600, "timezone": "../../etc/passwd"}, "body.timezone"),
    ({"at": datetime(2001, 1, 1)}, "body.at"),
    ({"every_s": 600, "cron": "0 * * * *"}, "body.every_s"),
    ({}, "body.cron"),
    ({"every_s": 600, "jitter_s": 600}, "body.jitter_s"),
    ({"every_s": 600, "session": "a/../b"}, "body.session"),
    ({"every_s": 600, "ends_at": datetime(2001, 1, 1)}, "body.ends_at"),
])
async def test_bad_definitions_are_refused_naming_the_field(
        runtime: Runtime, spec: dict[str, Any], field: str) -> None:
    await runtime.create_agent(name="a", settings={"schedules": {"min_interval_s": 120}})
    with pytest.raises(InvalidInput) as info:
        await runtime.schedules.create("a", ScheduleIn(content="x", **spec), by="test")
    assert info.value.details["errors"][0]["field"] == field
    assert await runtime.schedules.list_all() == []


def test_jitter_is_the_same_everywhere_and_below_jitter_s() -> None:
    from agentd.store.schedules import ScheduleRecord

    rec = ScheduleRecord(
        id="sch_1", agent_id="a", cron=None, every_s=60.0, at=None, timezone="UTC",
        session=None, content="x", jitter_s=30.0, overlap="skip", missed="once",
        catchup_s=0.0, ends_at=None, enabled=True, paused_reason=None, next_fire_at=0.0,
        next_due_at=0.0, last_fire_at=None, last_run_id=None, fires=0, missed_count=0,
        skipped_count=0, failures=0, counted_after=0.0, created_by="t", created_run=None,
        created_at=0.0, updated_at=0.0, version=1)
    delays = [jitter_of(rec, 60.0 * i) for i in range(200)]
    assert all(0 <= d < 30 for d in delays) and len(set(delays)) > 150
    assert delays == [jitter_of(rec, 60.0 * i) for i in range(200)]
    assert following(rec, 60.0) == 120.0


async def test_due_schedules_are_found_through_the_partial_index(tmp_path: Path) -> None:
    from agentd.store import open_store

    store = await open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        plan = await store.engine.read(lambda tx: tx.all(
            "EXPLAIN QUERY PLAN SELECT s.id FROM schedules s JOIN agents a ON "
            "a.id = s.agent_id LEFT JOIN runs r ON r.id = s.last_run_id WHERE "
            "s.enabled = 1 AND s.next_due_at <= ? ORDER BY s.next_due_at LIMIT ?",
            (1.0, 10)))
        text = " ".join(str(r[-1]) for r in plan)
        assert "USING INDEX schedules_due" in text, text
        assert "TEMP B-TREE" not in text, text
    finally:
        await store.close()
