"""The scheduler takes new limits and weights while calls wait (a configuration reload):
no queued call is lost or granted twice, a raised limit serves the queue at once, a
lowered one admits nothing past it, a rate keeps its bucket's level, and a bad value
changes nothing. Time is a FakeClock: rates refill only when the test moves it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentd.runtime.scheduler import Grant, LaneLimits, Scheduler
from agentd.testing import FakeClock


def _lane(s: Scheduler, name: str) -> dict[str, Any]:
    lane: dict[str, Any] = s.metrics()["lanes"][name]
    return lane


async def _until(predicate: Any, ticks: int = 10_000) -> None:
    for _ in range(ticks):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def _queue(s: Scheduler, n: int, **kwargs: Any) -> list[asyncio.Task[Grant]]:
    return [asyncio.create_task(s.acquire(provider="p", model="m", agent=f"a{i}", **kwargs))
            for i in range(n)]


async def test_a_raised_concurrency_serves_the_queue_at_once_and_loses_no_one() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)}, clock=FakeClock())
    held = await s.acquire(provider="p", model="m")
    waiting = _queue(s, 5)
    await _until(lambda: s.queued("p") == 5)
    s.reconfigure({"p": LaneLimits(concurrency=4)})
    await _until(lambda: sum(t.done() for t in waiting) == 3)
    assert _lane(s, "p")["in_flight"] == 4 and s.queued("p") == 2
    assert _lane(s, "p")["limits"]["concurrency"] == 4
    # Lowered below what is in flight: nothing more until enough calls end.
    s.reconfigure({"p": LaneLimits(concurrency=2)})
    held.release()
    for task in waiting:
        if task.done():
            task.result().release()
            break
    await asyncio.sleep(0)
    assert s.queued("p") == 2 and _lane(s, "p")["in_flight"] == 2
    for task in [t for t in waiting if t.done()]:
        task.result().release()
    await _until(lambda: all(t.done() for t in waiting))
    for task in waiting[-2:]:
        task.result().release()
    lane = _lane(s, "p")
    # Every call granted exactly once: the held one and the five that waited.
    assert (lane["granted"], lane["in_flight"], lane["queued"]) == (6, 0, 0)


async def test_a_rate_keeps_its_level_and_paces_the_queue_at_the_new_rate() -> None:
    clock = FakeClock()
    s = Scheduler({"p": LaneLimits(rpm=60)}, clock=clock)  # 1 a second, bucket of 1
    (await s.acquire(provider="p", model="m")).release()  # the bucket is empty now
    waiting = _queue(s, 3)
    await _until(lambda: s.queued("p") == 3)
    # Ten times the rate: a full new bucket would admit all three at once; the level
    # carried over (empty) admits none until time refills it.
    s.reconfigure({"p": LaneLimits(rpm=600)})
    await asyncio.sleep(0)
    assert s.queued("p") == 3 and _lane(s, "p")["limits"]["rpm"] == 600
    await clock.advance(0.1)  # one request at 10 a second
    await _until(lambda: s.queued("p") == 2)
    await clock.advance(0.2)
    await _until(lambda: all(t.done() for t in waiting))
    for task in waiting:
        task.result().release()
    assert not s.timer_armed("p")


async def test_a_new_limit_holds_new_calls_and_the_unlimited_lane_gets_it() -> None:
    s = Scheduler(clock=FakeClock())
    free = [await s.acquire(provider="p", model="m") for _ in range(3)]
    s.reconfigure({"p": LaneLimits(concurrency=2)})
    blocked = asyncio.create_task(s.acquire(provider="p", model="m"))
    await _until(lambda: s.queued("p") == 1)
    for grant in free[:2]:
        grant.release()
    await _until(blocked.done)
    assert _lane(s, "p")["in_flight"] == 2
    blocked.result().release()
    free[2].release()


async def test_a_removed_model_lane_admits_its_queue_and_new_calls_go_to_the_provider(
        ) -> None:
    s = Scheduler({"p:m": LaneLimits(concurrency=1), "p": LaneLimits(concurrency=5)},
                  clock=FakeClock())
    held = await s.acquire(provider="p", model="m")
    assert held.lane == "p:m"
    waiting = _queue(s, 2)
    await _until(lambda: s.queued("p:m") == 2)
    s.reconfigure({"p": LaneLimits(concurrency=5)})
    await _until(lambda: all(t.done() for t in waiting))
    assert s.lane_for("p", "m") == "p"
    fresh = await s.acquire(provider="p", model="m")
    assert fresh.lane == "p"
    for grant in (held, fresh, *(t.result() for t in waiting)):
        grant.release()
    assert _lane(s, "p:m")["in_flight"] == 0 and _lane(s, "p")["in_flight"] == 0


async def test_new_weights_count_for_calls_queued_after() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)}, tenant_weights={"a": 1.0, "b": 1.0},
                  clock=FakeClock())
    s.reconfigure({"p": LaneLimits(concurrency=1)}, tenant_weights={"a": 3.0, "b": 1.0})
    held = await s.acquire(provider="p", model="m")
    order: list[str] = []

    async def call(tenant: str, i: int) -> None:
        grant = await s.acquire(provider="p", model="m", tenant=tenant, agent=f"{tenant}{i}")
        order.append(tenant)
        grant.release()

    tasks = [asyncio.create_task(call(t, i)) for i in range(8) for t in "ab"]
    await _until(lambda: s.queued("p") == 16)
    held.release()
    await asyncio.gather(*tasks)
    assert order[:8].count("a") == 6  # 3 : 1, as the new weights say


@pytest.mark.parametrize(("limits", "weights"), [
    ({"p": "not limits"}, {}),
    ({"p": LaneLimits(concurrency=9)}, {"class_weights": {"urgent": 2.0}}),
    ({"p": LaneLimits(concurrency=9)}, {"tenant_weights": {"a": 0.0}}),
])
async def test_a_bad_value_changes_nothing(limits: Any, weights: dict[str, Any]) -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)}, tenant_weights={"a": 2.0},
                  clock=FakeClock())
    before = s.metrics()
    with pytest.raises((TypeError, ValueError)):
        s.reconfigure(limits, **weights)
    assert s.metrics() == before
    held = await s.acquire(provider="p", model="m", tenant="a")
    other = asyncio.create_task(s.acquire(provider="p", model="m"))
    await _until(lambda: s.queued("p") == 1)  # still a concurrency of 1
    held.release()
    (await other).release()
