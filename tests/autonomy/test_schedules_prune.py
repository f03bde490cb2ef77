"""Old fire claims are pruned also when a schedule fires in bursts (found by
bench/killtest_autonomy.py: a schedule that caught up several fire times per pass,
as ``missed: "all"`` does after every restart, never pruned its claims)."""

from __future__ import annotations

from tests.autonomy.test_schedules import FAST, _manual, settle

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.store.schedules import KEEP_FIRES


async def test_claims_are_pruned_when_every_pass_fires_a_burst(runtime: Runtime) -> None:
    start = 4_000_000.0
    clock = await _manual(runtime, start)
    await runtime.create_agent(name="a", settings=FAST)
    rec = await runtime.schedules.create("a", ScheduleIn(
        content="x", every_s=1, session="k", missed="all", overlap="enqueue",
        catchup_s=3600), by="test")
    assert rec.next_fire_at == start + 1
    # Two fire times due at each pass: the count of fires before a pass is always even,
    # so it never lands on the one that prunes unless a burst counts on within itself.
    passes = (KEEP_FIRES + 64) // 2
    for _ in range(passes):
        clock.now += 2
        await runtime.schedules.fire_due()
    again = await runtime.schedules.get(rec.id)
    assert again.fires == 2 * passes and again.skipped_count == again.missed_count == 0
    kept = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT fire_at FROM schedule_fires WHERE schedule_id = ? ORDER BY fire_at",
        (rec.id,)))
    times = [float(r[0]) for r in kept]
    # The newest claims are all there, none after the last fire time; the oldest pruned.
    assert KEEP_FIRES <= len(times) < KEEP_FIRES + 32, len(times)
    assert times == [start + 2 * passes - i for i in range(len(times) - 1, -1, -1)]
    await settle(runtime)
