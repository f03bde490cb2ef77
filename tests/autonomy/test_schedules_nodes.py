"""Two runtimes (two nodes) on one PostgreSQL database fire the same schedules: every
fire time runs exactly once, whether they race pass for pass or run on their own."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.config import Settings
from agentd.store.schedules import ScheduleRecord
from agentd.testing import FakeClock

pytestmark = pytest.mark.postgres

FAST = {"schedules": {"min_interval_s": 1, "max_per_agent": 1000}}




@pytest.fixture
async def nodes(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    opened = []
    for name in ("n1", "n2"):
        settings = Settings(home=tmp_path / name, demo_agent=False, shutdown_grace_s=2.0,
                            node_id=name, database_url=pg_url)
        opened.append(await Runtime.open(settings))
    try:
        yield opened[0], opened[1]
    finally:
        for runtime in opened:
            await runtime.close()


async def _fires(runtime: Runtime) -> list[dict[str, Any]]:
    rows = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT run_id, data FROM events WHERE kind = 'message.user'"))
    return [{**orjson.loads(d), "run_id": r} for r, d in rows
            if "schedule_id" in orjson.loads(d)]


async def test_racing_passes_fire_each_time_once(nodes: tuple[Runtime, Runtime]) -> None:
    one, two = nodes
    clock = FakeClock(10_000_000.0)
    for node in nodes:
        await node.schedules.stop()
        node.schedules.clock = clock
    await one.create_agent(name="a", settings=FAST)
    made = []
    for i in range(20):
        # Half to one session each, half to a new session per fire.
        made.append(await one.schedules.create("a", ScheduleIn(
            content=f"s{i}", every_s=1, overlap="enqueue",
            session=f"k{i}" if i % 2 else None), by="test"))
    for _ in range(5):
        clock.now += 1
        await asyncio.gather(one.schedules.fire_due(), two.schedules.fire_due(),
                             one.schedules.fire_due(), two.schedules.fire_due())
    fires = await _fires(one)
    counts = Counter((d["schedule_id"], d["fire_at"]) for d in fires)
    assert len(counts) == 20 * 5
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1]
    runs = await one.store.engine.read(lambda tx: tx.all(
        "SELECT COUNT(*) FROM runs"))
    assert runs[0][0] == 100  # no run of a losing transaction was kept
    claims = await one.store.engine.read(lambda tx: tx.all(
        "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM schedule_fires"))
    assert tuple(claims[0]) == (100, 100)
    lost = one.schedules.figures["lost"] + two.schedules.figures["lost"]
    assert lost > 0  # the nodes did race
    for d in fires:
        await one.wait(d["run_id"])


async def test_both_nodes_own_loops_fire_each_time_once(
        nodes: tuple[Runtime, Runtime]) -> None:
    one, two = nodes
    await one.create_agent(name="a", settings=FAST)
    made = [await one.schedules.create("a", ScheduleIn(
        content=f"s{i}", every_s=1, overlap="enqueue", session=f"k{i}"), by="test")
        for i in range(10)]
    started = time.time()

    async def enough() -> bool:
        fires = await _fires(one)
        return len(fires) >= 30 and time.time() - started > 2.5

    await eventually(enough, what="30 fires from the two nodes")
    for rec in made:
        await one.schedules.update(rec.id, {"enabled": False})
    fires = await _fires(one)
    counts = Counter((d["schedule_id"], d["fire_at"]) for d in fires)
    assert set(counts.values()) == {1}
    by_schedule = Counter(d["schedule_id"] for d in fires)
    for rec in made:
        times = sorted(t for s, t in counts if s == rec.id)
        # Consecutive fire times, none skipped, none twice.
        assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(times))
        assert by_schedule[rec.id] == len(times)
    for d in fires:
        await one.wait(d["run_id"])
    # What each node says it fired adds up to the runs: none fired twice.
    assert one.schedules.figures["fired"] + two.schedules.figures["fired"] == len(fires)


async def test_racing_bursts_in_batches_fire_each_time_once(
        nodes: tuple[Runtime, Runtime]) -> None:
    """Both nodes claim the same bursts in commits of several fires (of other sizes
    on each node), schedules sharing sessions: a fire lost to the other node drops
    from its batch alone, no batch deadlocks the other, every fire time runs once."""
    one, two = nodes
    clock = FakeClock(20_000_000.0)
    for node, chunk in ((one, 4), (two, 7)):
        await node.schedules.stop()
        node.schedules.clock = clock
        node.schedules.batch, node.schedules.chunk = 16, chunk
    await one.create_agent(name="a", settings=FAST)
    for i in range(48):
        await one.schedules.create("a", ScheduleIn(
            content=f"s{i}", every_s=1, overlap="enqueue",
            session=[f"own{i}", f"shared{i % 5}", None][i % 3]), by="test")
    # Ties in due time come back in any order: the other node sees them reversed.
    real = two.store.due_schedules

    async def reversed_due(now: float, limit: int) -> list[ScheduleRecord]:
        return list(reversed(await real(now, limit)))

    two.store.due_schedules = reversed_due  # type: ignore[method-assign]
    for _ in range(4):
        clock.now += 1
        await asyncio.gather(one.schedules.fire_due(), two.schedules.fire_due(),
                             two.schedules.fire_due(), one.schedules.fire_due())
    fires = await _fires(one)
    counts = Counter((d["schedule_id"], d["fire_at"]) for d in fires)
    # Every fire time of every schedule, once: none dropped by a deadlock or a lost
    # batch, none twice.
    assert len(counts) == 48 * 4
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1]
    runs = await one.store.engine.read(lambda tx: tx.all("SELECT COUNT(*) FROM runs"))
    assert runs[0][0] == 48 * 4
    lost = one.schedules.figures["lost"] + two.schedules.figures["lost"]
    fired = one.schedules.figures["fired"] + two.schedules.figures["fired"]
    assert lost > 0 and fired == 48 * 4
    assert one.schedules.figures["fired"] > 0 and two.schedules.figures["fired"] > 0
    for d in fires:
        assert (await one.wait(d["run_id"])).status == "completed"
