"""Issue 29: on a loaded machine a fire's commit can take longer than the schedule's
interval, and the daemon can be stopped between two passes. Fire times that pass
while a commit is under way, or while the daemon is down, are each fired once by the
passes after it (``missed: "all"``): none skipped, none twice."""

from __future__ import annotations

from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.config import Settings
from agentd.testing import FakeClock

FAST = {"schedules": {"min_interval_s": 1, "max_per_agent": 1000}}
T0 = 5_000_000.0


async def _claims(runtime: Runtime, schedule_id: str) -> list[tuple[float, str, int]]:
    """(fire time, status, runs whose message names it) of every claim, oldest first."""
    rows = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT f.fire_at, f.status, (SELECT COUNT(*) FROM events e WHERE e.run_id = "
        "f.run_id AND e.kind = 'message.user') FROM schedule_fires f WHERE "
        "f.schedule_id = ? ORDER BY f.fire_at", (schedule_id,)))
    return [(float(r[0]), str(r[1]), int(r[2])) for r in rows]


def _slow_commits(runtime: Runtime, clock: FakeClock, step: float, count: int) -> None:
    """The next ``count`` commits of fires take ``step`` seconds of the clock each."""
    runs = runtime.runs
    send_many = runs.send_many
    left = [count]

    async def slow(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            clock.now += step  # the fire's commit waits for the loaded machine
        return await send_many(*args, **kwargs)

    runs.send_many = slow  # type: ignore[method-assign]


# (it counts the message.user events naming each fire's run in every session: a
# replay's scratch session holds copies of the earlier ones)
@pytest.mark.no_replay
async def test_fire_times_passing_during_slow_commits_and_a_restart_fire_once(
        settings: Settings, store_url: str) -> None:
    settings.database_url = store_url
    first = await Runtime.open(settings)
    try:
        await first.schedules.stop()
        clock = FakeClock(T0)
        first.schedules.clock = clock
        await first.create_agent(name="a", settings=FAST)
        rec = await first.schedules.create("a", ScheduleIn(
            content="tick", every_s=1, session="k", missed="all", overlap="enqueue",
            catchup_s=3600), by="test")
        assert rec.next_fire_at == T0 + 1
        _slow_commits(first, clock, 2.5, 3)
        for _ in range(3):
            clock.now += 0.5
            await first.schedules.fire_due()
        # Stopped mid-way ("killed" after a commit): the store holds what committed.
        behind = (await first.schedules.get(rec.id)).next_fire_at
    finally:
        await first.close()
    assert behind is not None
    second = await Runtime.open(settings)
    try:
        await second.schedules.stop()
        clock2 = FakeClock(clock.now + 3.0)  # down three seconds
        second.schedules.clock = clock2
        _slow_commits(second, clock2, 1.5, 2)
        for _ in range(4):
            await second.schedules.fire_due()
            clock2.now += 0.25
        while (await second.schedules.fire_due()) > 0:
            pass
        after = await second.schedules.get(rec.id)
        assert after.next_fire_at is not None and after.next_fire_at > clock2.now - 1
        claims = await _claims(second, rec.id)
        want = [T0 + 1 + i for i in range(round(after.next_fire_at - T0 - 1))]
        assert [c[0] for c in claims] == want  # every fire time, in order, once
        assert {(c[1], c[2]) for c in claims} == {("fired", 1)}
        assert after.fires == len(want) and after.missed_count == 0
        assert after.skipped_count == 0
        assert len(want) >= 10
    finally:
        await second.close()
