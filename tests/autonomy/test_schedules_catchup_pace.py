"""Issue 33: ``missed: "all"`` on a store whose commits are slow. A schedule behind by
many fire times (a daemon down a while) fires them in two commits, not one each: with
commits slower than the schedule's interval it used to fall further behind at every
pass, and past ``MAX_CATCHUP`` behind it dropped fire times (PostgreSQL under the
kill harness, docs/benchmarks.md). On SQLite and PostgreSQL."""

from __future__ import annotations

from tests.autonomy.test_schedules_slow_commit import FAST, T0, _claims, _slow_commits

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.config import Settings
from agentd.testing import FakeClock


async def test_a_schedule_far_behind_keeps_up_when_commits_are_slower_than_it(
        settings: Settings, store_url: str) -> None:
    settings.database_url = store_url
    runtime = await Runtime.open(settings)
    try:
        await runtime.schedules.stop()
        clock = FakeClock(T0)
        runtime.schedules.clock = clock
        await runtime.create_agent(name="a", settings=FAST)
        rec = await runtime.schedules.create("a", ScheduleIn(
            content="tick", every_s=1, session="k", missed="all", overlap="enqueue",
            catchup_s=3600), by="test")
        clock.now += 30  # down 30 s: 30 fire times due
        _slow_commits(runtime, clock, 1.5, 1_000)  # each commit: 1.5 s of a 1 s schedule
        for _ in range(10):
            await runtime.schedules.fire_due()
        after = await runtime.schedules.get(rec.id)
        assert after.missed_count == 0
        assert after.next_fire_at is not None and after.next_fire_at > clock.now - 10
        claims = await _claims(runtime, rec.id)
        want = [T0 + 1 + i for i in range(round(after.next_fire_at - T0 - 1))]
        assert [c[0] for c in claims] == want  # every fire time, in order, once
        assert {(c[1], c[2]) for c in claims} == {("fired", 1)}
        assert len(want) >= 50  # (the 30 missed, and those due while they were fired)
        await runtime.wait_idle()
    finally:
        await runtime.close()
