"""The kernel scheduler: limits, H-SFQ fairness, rate pacing, pauses, cancellation.

Times are real but small (rpm=600 is 10 requests a second); assertions are on counts
and order, and only ever bound elapsed time from the side that a slow machine cannot
break.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentd.assembly._parts import lane_limits
from agentd.config import Settings
from agentd.runtime.scheduler import (
    DEFAULT_CLASS_WEIGHTS,
    PRIORITIES,
    Grant,
    LaneLimits,
    Scheduler,
)
from agentd.testing import FakeClock

Call = tuple[str, dict[str, Any]]


async def _until(predicate: Callable[[], bool], ticks: int = 10_000) -> None:
    """Let the loop run until ``predicate`` holds (no timers involved)."""
    for _ in range(ticks):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def _grant_order(s: Scheduler, provider: str, calls: list[Call], *, hold: int) -> list[str]:
    """Queue ``calls`` (label, acquire kwargs) while ``hold`` grants fill the lane, then let
    them through; return the labels in grant order."""
    holders = [await s.acquire(provider=provider, model="m") for _ in range(hold)]
    order: list[str] = []

    async def one(label: str, kw: dict[str, Any]) -> None:
        grant = await s.acquire(provider=provider, model="m", **kw)
        order.append(label)
        await asyncio.sleep(0)  # keep the slot across a tick, so slots stay contended
        grant.release()

    tasks = [asyncio.create_task(one(label, kw)) for label, kw in calls]
    await _until(lambda: s.queued(provider) == len(calls))
    for holder in holders:
        holder.release()
    await asyncio.gather(*tasks)
    assert s.queued() == 0
    return order


def _lane(s: Scheduler, name: str) -> dict[str, Any]:
    lane: dict[str, Any] = s.metrics()["lanes"][name]
    return lane


# -- lanes -------------------------------------------------------------------------------


def test_lane_for_uses_the_model_lane_only_when_it_has_limits() -> None:
    s = Scheduler({"openai": LaneLimits(rpm=60), "openai:gpt-4o": LaneLimits(rpm=30)})
    assert s.lane_for("openai", "gpt-4o") == "openai:gpt-4o"
    assert s.lane_for("openai", "gpt-4o-mini") == "openai"
    assert s.lane_for("scripted", "echo") == "scripted"


async def test_model_lane_is_independent_of_its_provider_lane() -> None:
    s = Scheduler({"openai": LaneLimits(concurrency=1), "openai:gpt-4o": LaneLimits(concurrency=1)})
    big = await s.acquire(provider="openai", model="gpt-4o")
    small = await s.acquire(provider="openai", model="gpt-4o-mini")
    assert (big.lane, small.lane) == ("openai:gpt-4o", "openai")
    assert big.position == small.position == 0
    # Both lanes are now full, each on its own.
    waiting = asyncio.create_task(s.acquire(provider="openai", model="gpt-4o"))
    await _until(lambda: s.queued("openai:gpt-4o") == 1)
    assert s.queued("openai") == 0
    big.release()
    (await waiting).release()
    small.release()


async def test_lane_without_limits_admits_everything_at_once() -> None:
    s = Scheduler()
    grants = await asyncio.gather(*(s.acquire(provider="scripted", model="echo", agent=f"a{i}")
                                    for i in range(500)))
    assert all(g.position == 0 and g.wait_s == 0.0 for g in grants)
    lane = _lane(s, "scripted")
    assert (lane["in_flight"], lane["granted"], lane["waited"]) == (500, 500, 0)
    for g in grants:
        g.release()
    assert _lane(s, "scripted")["in_flight"] == 0


async def test_grant_reports_its_call() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    first = await s.acquire(provider="p", model="m", priority="interactive", tokens=7)
    assert (first.lane, first.priority, first.position, first.wait_s, first.tokens) == (
        "p", "interactive", 0, 0.0, 7)
    queued = [asyncio.create_task(s.acquire(provider="p", model="m", agent=f"a{i}"))
              for i in range(3)]
    await _until(lambda: s.queued("p") == 3)
    first.release()
    positions = []
    for task in queued:
        grant = await task
        positions.append(grant.position)
        assert grant.wait_s > 0.0
        grant.release()
    assert positions == [0, 1, 2]
    assert "released=True" in repr(grant)


# -- concurrency and order ---------------------------------------------------------------


async def test_concurrency_limit_is_never_exceeded() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=3)})
    rng = random.Random(7)
    in_flight = peak = 0

    async def call(i: int) -> None:
        nonlocal in_flight, peak
        await asyncio.sleep(rng.random() * 0.002)
        grant = await s.acquire(provider="p", model="m", agent=f"a{i % 7}",
                                priority=PRIORITIES[i % 3], tenant=f"t{i % 2}")
        in_flight += 1
        peak = max(peak, in_flight)
        assert _lane(s, "p")["in_flight"] <= 3
        await asyncio.sleep(rng.random() * 0.002)
        in_flight -= 1
        grant.release()

    await asyncio.gather(*(call(i) for i in range(200)))
    assert peak == 3
    lane = _lane(s, "p")
    assert (lane["in_flight"], lane["queued"], lane["granted"]) == (0, 0, 200)
    assert lane["waited"] > 0


async def test_calls_of_one_agent_are_granted_in_arrival_order() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=2)})
    calls: list[Call] = [(f"{agent}{i}", {"agent": agent}) for i in range(30) for agent in "ab"]
    order = await _grant_order(s, "p", calls, hold=2)
    for agent in "ab":
        assert [x for x in order if x[0] == agent] == [f"{agent}{i}" for i in range(30)]


async def test_equal_weights_get_equal_service() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=2)})
    # Agent-major arrival: a0's fifty calls all arrive before a1's first.
    calls: list[Call] = [(f"a{a}", {"agent": f"a{a}"}) for a in range(10) for _ in range(50)]
    order = await _grant_order(s, "p", calls, hold=2)
    counts: Counter[str] = Counter()
    for label in order:
        counts[label] += 1
        values = [counts[f"a{a}"] for a in range(10)]
        assert max(values) - min(values) <= 1
    assert len(order) == 500


async def test_agent_weights_1_2_4_get_service_in_that_ratio() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    weights = {"one": 1.0, "two": 2.0, "four": 4.0}
    calls: list[Call] = [(name, {"agent": name, "weight": w})
                         for _ in range(200) for name, w in weights.items()]
    order = await _grant_order(s, "p", calls, hold=1)
    counts: Counter[str] = Counter()
    for n, label in enumerate(order[:300], start=1):
        counts[label] += 1
        for name, w in weights.items():
            assert abs(counts[name] - n * w / 7) <= 2, (n, dict(counts))
    assert Counter(order[:70]) == {"one": 10, "two": 20, "four": 40}


async def test_latest_weight_given_for_an_agent_counts() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    # "x" says weight 1 on its first calls and 3 on its later ones: 3 it is.
    calls: list[Call] = [("x", {"agent": "x", "weight": 1.0 if i < 5 else 3.0})
                         for i in range(100)]
    calls += [("y", {"agent": "y"}) for _ in range(100)]
    order = await _grant_order(s, "p", calls, hold=1)
    assert abs(Counter(order[:80])["x"] - 60) <= 1


async def test_an_agent_back_from_idle_gets_no_credit_for_its_idle_time() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    order: list[str] = []

    async def one(agent: str) -> None:
        grant = await s.acquire(provider="p", model="m", agent=agent)
        order.append(agent)
        await asyncio.sleep(0)
        grant.release()

    holder = await s.acquire(provider="p", model="m")
    tasks = [asyncio.create_task(one("x"))]
    tasks += [asyncio.create_task(one("y")) for _ in range(200)]
    await _until(lambda: s.queued("p") == 201)
    holder.release()
    await _until(lambda: len(order) >= 100)
    tasks += [asyncio.create_task(one("x")) for _ in range(20)]
    await _until(lambda: s.queued("p") == 200 - len(order) + 21)
    start = len(order)
    await asyncio.gather(*tasks)
    # x was idle while y got ~100 calls: it rejoins at the current virtual time and
    # alternates with y, rather than taking a burst of 20 to "catch up".
    assert 9 <= order[start:start + 20].count("x") <= 11


async def test_an_agent_that_requeues_after_each_call_keeps_only_its_share() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    order: list[str] = []
    stop = False

    async def sequential() -> None:  # one call at a time: idle between calls
        while not stop:
            grant = await s.acquire(provider="p", model="m", agent="seq", weight=1.0)
            order.append("seq")
            await asyncio.sleep(0)
            grant.release()

    async def one() -> None:
        grant = await s.acquire(provider="p", model="m", agent="deep", weight=4.0)
        order.append("deep")
        await asyncio.sleep(0)
        grant.release()

    holder = await s.acquire(provider="p", model="m")
    deep = [asyncio.create_task(one()) for _ in range(300)]
    await _until(lambda: s.queued("p") == 300)
    seq = asyncio.create_task(sequential())
    await _until(lambda: s.queued("p") == 301)
    holder.release()
    await _until(lambda: len(order) >= 250)
    stop = True
    await asyncio.gather(*deep, seq)
    assert abs(order[:250].count("seq") - 50) <= 2  # weight 1 of 5, as if backlogged


async def test_tenants_share_equally_whatever_their_number_of_agents() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=2)})
    calls: list[Call] = [("A", {"tenant": "A", "agent": "solo"}) for _ in range(100)]
    calls += [(f"B{a}", {"tenant": "B", "agent": f"b{a}"}) for a in range(10) for _ in range(10)]
    order = await _grant_order(s, "p", calls, hold=2)
    first = order[:100]
    a_share = sum(1 for x in first if x == "A")
    assert abs(a_share - 50) <= 1
    b_agents = Counter(x for x in first if x != "A")
    assert len(b_agents) == 10 and max(b_agents.values()) - min(b_agents.values()) <= 1


async def test_tenant_weights_set_the_tenant_share() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)}, tenant_weights={"gold": 3.0})
    calls: list[Call] = [(t, {"tenant": t}) for _ in range(100) for t in ("gold", "free")]
    order = await _grant_order(s, "p", calls, hold=1)
    assert abs(Counter(order[:80])["gold"] - 60) <= 1


async def test_interactive_call_overtakes_a_thousand_background_calls() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    holder = await s.acquire(provider="p", model="m")
    order: list[str] = []

    async def one(label: str, **kw: Any) -> Grant:
        grant = await s.acquire(provider="p", model="m", **kw)
        order.append(label)
        grant.release()
        return grant

    background = [asyncio.create_task(one("bg", agent=f"a{i % 10}")) for i in range(1000)]
    await _until(lambda: s.queued("p") == 1000)
    chat = asyncio.create_task(one("chat", priority="interactive", agent="user"))
    await _until(lambda: s.queued("p") == 1001)
    assert _lane(s, "p")["queued_by_class"] == {"interactive": 1, "background": 1000, "batch": 0}
    holder.release()
    grant = await chat
    assert order[0] == "chat"
    assert grant.position == 1000
    await asyncio.gather(*background)


async def test_interactive_arriving_mid_stream_takes_the_next_free_slot() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    calls: list[Call] = [("bg", {"agent": f"a{i % 5}"}) for i in range(200)]
    order: list[str] = []
    done = asyncio.Event()

    async def chat_when_busy() -> None:
        await _until(lambda: len(order) >= 50)
        grant = await s.acquire(provider="p", model="m", priority="interactive")
        order.append("chat")
        grant.release()
        done.set()

    chat = asyncio.create_task(chat_when_busy())
    holders = [await s.acquire(provider="p", model="m")]

    async def one(label: str, kw: dict[str, Any]) -> None:
        grant = await s.acquire(provider="p", model="m", **kw)
        order.append(label)
        await asyncio.sleep(0)
        grant.release()

    tasks = [asyncio.create_task(one(label, kw)) for label, kw in calls]
    await _until(lambda: s.queued("p") == 200)
    holders[0].release()
    await asyncio.gather(*tasks, chat)
    at = order.index("chat")
    # Queued while the 51st call held the slot, granted when it was released.
    assert 50 <= at <= 52


async def test_batch_is_not_starved_by_a_backlog_of_higher_classes() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    calls: list[Call] = [("interactive", {"priority": "interactive", "agent": f"i{i % 4}"})
                         for i in range(1000)]
    calls += [("background", {"priority": "background"}) for _ in range(200)]
    calls += [("batch", {"priority": "batch"}) for _ in range(20)]
    order = await _grant_order(s, "p", calls, hold=1)
    first = Counter(order[:555])
    assert abs(first["batch"] - 5) <= 1
    assert abs(first["background"] - 50) <= 1
    assert abs(first["interactive"] - 500) <= 1


async def test_batch_progresses_under_continuous_interactive_and_background_load() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    granted = 0
    stop = False

    async def producer(priority: str, agent: str) -> None:
        nonlocal granted
        while not stop:
            grant = await s.acquire(provider="p", model="m", priority=priority, agent=agent)
            granted += 1
            await asyncio.sleep(0)
            grant.release()

    producers = [asyncio.create_task(producer(p, f"{p}{i}"))
                 for p in ("interactive", "background") for i in range(4)]
    await _until(lambda: granted >= 20)
    marks = []
    for _ in range(4):  # one batch call at a time, each queued behind the load
        grant = await asyncio.wait_for(s.acquire(provider="p", model="m", priority="batch"), 10)
        marks.append(granted)
        grant.release()
    stop = True
    await asyncio.gather(*producers)
    # Each batch call gets its turn about 111 grants after the previous one (its 1/111
    # share), not "when the load stops".
    gaps = [later - earlier for earlier, later in itertools.pairwise(marks)]
    assert all(100 <= gap <= 120 for gap in gaps), gaps


# -- rates and pauses --------------------------------------------------------------------


async def test_rpm_admits_a_one_second_burst_then_paces_at_the_rate() -> None:
    s = Scheduler({"p": LaneLimits(rpm=600)})  # 10 a second, bucket of 10
    grants: list[Grant] = []

    async def call() -> None:
        grant = await s.acquire(provider="p", model="m")
        grants.append(grant)
        grant.release()

    started = time.monotonic()
    tasks = [asyncio.create_task(call()) for _ in range(15)]
    await _until(lambda: s.queued("p") == 5)
    assert len(grants) == 10 and all(g.position == 0 for g in grants)
    while len(grants) < 15:
        await asyncio.sleep(0.02)
        # Never more than the burst plus what the rate refilled (measured after counting).
        assert len(grants) <= 11 + 10 * (time.monotonic() - started)
    await asyncio.gather(*tasks)
    assert [g.position for g in grants[10:]] == [0, 1, 2, 3, 4]
    paced = grants[10:]
    assert all(later.wait_s > earlier.wait_s for earlier, later in itertools.pairwise(paced))
    lane = _lane(s, "p")
    assert (lane["granted"], lane["waited"], lane["queued"]) == (15, 5, 0)
    assert not s.timer_armed("p")  # no timer left behind once the lane is idle


async def test_tpm_reserves_the_estimate_and_release_corrects_it() -> None:
    s = Scheduler({"p": LaneLimits(tpm=600)})  # 10 tokens a second, bucket of 10
    first = await s.acquire(provider="p", model="m", tokens=8)
    second = asyncio.create_task(s.acquire(provider="p", model="m", tokens=5))
    await _until(lambda: s.queued("p") == 1)  # 2 left, 5 needed: ~0.3 s away
    first.release(tokens_used=2)  # 6 come back: the second fits now
    await _until(second.done)
    grant = second.result()
    assert grant.tokens == 5 and grant.position == 0
    # Used far more than it reserved: the lane goes into debt, even a 1-token call waits.
    grant.release(tokens_used=40)
    third = asyncio.create_task(s.acquire(provider="p", model="m", tokens=1))
    await asyncio.sleep(0.05)
    assert not third.done() and s.queued("p") == 1
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert s.queued("p") == 0 and not s.timer_armed("p")


async def test_release_without_usage_keeps_the_reservation() -> None:
    # The test's own clock: with the real one, a loaded machine could let the 0.3 s
    # the refill takes pass before the check below.
    clock = FakeClock()
    s = Scheduler({"p": LaneLimits(tpm=600)}, clock=clock)  # 10 tokens a second
    (await s.acquire(provider="p", model="m", tokens=8)).release()
    waiting = asyncio.create_task(s.acquire(provider="p", model="m", tokens=5))
    await clock.advance(0.25)  # 2 + 2.5: had the 8 come back, it would have gone at once
    assert not waiting.done()
    await clock.advance(0.1)
    (await asyncio.wait_for(waiting, 5)).release()


async def test_call_bigger_than_the_token_bucket_waits_for_a_full_bucket() -> None:
    s = Scheduler({"p": LaneLimits(tpm=600)})
    big = await s.acquire(provider="p", model="m", tokens=50)  # full bucket: admitted
    assert big.position == 0
    after = asyncio.create_task(s.acquire(provider="p", model="m", tokens=0))
    await asyncio.sleep(0.05)
    assert not after.done()  # 40 tokens of debt: 4 s before even a zero-token call
    assert _lane(s, "p")["queued"] == 1
    after.cancel()
    with pytest.raises(asyncio.CancelledError):
        await after
    big.release()


async def test_pause_holds_the_lane_until_retry_after() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=5)})
    s.pause("p", 0.2)
    assert _lane(s, "p")["paused_for_s"] > 0
    started = time.monotonic()
    task = asyncio.create_task(s.acquire(provider="p", model="m"))
    await _until(lambda: s.queued("p") == 1)
    grant = await asyncio.wait_for(task, 5)
    assert time.monotonic() - started >= 0.15  # a pause is never cut short
    assert grant.wait_s >= 0.15
    grant.release()
    assert _lane(s, "p")["paused_for_s"] == 0
    assert (await s.acquire(provider="p", model="m")).position == 0


async def test_pause_applies_to_a_lane_without_limits_and_only_extends() -> None:
    s = Scheduler()
    s.pause("scripted", 0.15)
    s.pause("scripted", 0.01)  # shorter: does not cut the first pause short
    s.pause("scripted", 0)
    s.pause("scripted", -3)
    started = time.monotonic()
    grant = await asyncio.wait_for(s.acquire(provider="scripted", model="echo"), 5)
    assert time.monotonic() - started >= 0.1
    grant.release()
    with pytest.raises(ValueError, match="seconds"):
        s.pause("scripted", float("nan"))


async def test_pause_while_calls_are_queued_defers_them() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    holder = await s.acquire(provider="p", model="m")
    task = asyncio.create_task(s.acquire(provider="p", model="m"))
    await _until(lambda: s.queued("p") == 1)
    s.pause("p", 0.1)
    holder.release()  # a free slot, but the lane is paused
    await asyncio.sleep(0)
    assert not task.done()
    (await asyncio.wait_for(task, 5)).release()
    assert not s.timer_armed("p")


# -- cancellation and release ------------------------------------------------------------


async def test_cancelled_waiters_leave_no_trace() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    holder = await s.acquire(provider="p", model="m")

    async def call(agent: str) -> None:
        (await s.acquire(provider="p", model="m", agent=agent)).release()

    tasks = {(agent, i): asyncio.create_task(call(agent)) for agent in "abc" for i in range(10)}
    await _until(lambda: s.queued("p") == 30)
    doomed = {key for key in tasks if key[0] == "b" or (key[0] == "a" and key[1] % 2)}
    for key in doomed:
        tasks[key].cancel()
    await _until(lambda: s.queued("p") == 15)
    assert _lane(s, "p")["queued_by_class"]["background"] == 15
    holder.release()
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for key, result in zip(tasks, results, strict=True):
        if key in doomed:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result is None
    lane = _lane(s, "p")
    assert (lane["queued"], lane["in_flight"], lane["granted"]) == (0, 0, 16)
    later = await asyncio.wait_for(s.acquire(provider="p", model="m", agent="b"), 1)
    assert later.position == 0
    later.release()


async def test_cancellation_keeps_the_remaining_agents_fair() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    holder = await s.acquire(provider="p", model="m")
    order: list[str] = []

    async def one(agent: str) -> None:
        grant = await s.acquire(provider="p", model="m", agent=agent)
        order.append(agent)
        grant.release()

    tasks = {agent: [asyncio.create_task(one(agent)) for _ in range(20)] for agent in "abc"}
    await _until(lambda: s.queued("p") == 60)
    for task in tasks["b"][5:]:
        task.cancel()
    holder.release()
    await asyncio.gather(*tasks["a"], *tasks["c"], *tasks["b"][:5])
    await asyncio.gather(*tasks["b"][5:], return_exceptions=True)
    counts: Counter[str] = Counter()
    for agent in order[:40]:
        counts[agent] += 1
        assert abs(counts["a"] - counts["c"]) <= 1
    assert counts["b"] == 5


async def test_cancelling_a_blocked_head_lets_the_next_call_through() -> None:
    s = Scheduler({"p": LaneLimits(tpm=600)})
    first = await s.acquire(provider="p", model="m", tokens=10)  # bucket now empty
    head = asyncio.create_task(s.acquire(provider="p", model="m", agent="x", tokens=10))
    await _until(lambda: s.queued("p") == 1)
    small = asyncio.create_task(s.acquire(provider="p", model="m", agent="y", tokens=0))
    await _until(lambda: s.queued("p") == 2)
    assert not small.done()  # fair order: it waits behind x's call
    head.cancel()
    await _until(small.done)
    small.result().release()
    first.release()
    with pytest.raises(asyncio.CancelledError):
        await head


async def test_cancellation_racing_the_grant_gives_the_slot_back() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1, tpm=600)})
    first = await s.acquire(provider="p", model="m", tokens=6)
    task = asyncio.create_task(s.acquire(provider="p", model="m", tokens=4))
    await _until(lambda: s.queued("p") == 1)
    first.release(tokens_used=6)  # grants the waiter: the slot and the last 4 tokens
    assert _lane(s, "p")["in_flight"] == 1
    task.cancel()  # ...before its task could resume
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _lane(s, "p")["in_flight"] == 0
    again = await s.acquire(provider="p", model="m", tokens=4)
    assert again.position == 0 and again.wait_s == 0.0  # slot and tokens were returned
    again.release()


async def test_state_of_agents_that_come_and_go_is_forgotten() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    deep_grants = 0

    async def deep() -> None:
        nonlocal deep_grants
        grant = await s.acquire(provider="p", model="m", agent="deep")
        deep_grants += 1
        await asyncio.sleep(0)
        grant.release()

    holder = await s.acquire(provider="p", model="m")
    backlog = [asyncio.create_task(deep()) for _ in range(2000)]
    await _until(lambda: s.queued("p") == 2000)
    holder.release()
    for k in range(500):  # a stream of one-call agents through a lane that stays busy
        (await s.acquire(provider="p", model="m", agent=f"once{k}")).release()
    assert s.queued("p") > 0 and deep_grants < 2000
    tenant = s._lanes["p"].root.children["background"].children["default"]  # type: ignore[attr-defined]
    assert len(tenant.children) < 200  # not one node per agent ever seen
    await asyncio.gather(*backlog)
    assert not s._lanes["p"].root.children  # the busy period ended: nothing kept


async def test_release_is_idempotent() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    first = await s.acquire(provider="p", model="m")
    first.release()
    second = await s.acquire(provider="p", model="m")
    first.release()  # must not free the slot that second holds
    third = asyncio.create_task(s.acquire(provider="p", model="m"))
    await _until(lambda: s.queued("p") == 1)
    await asyncio.sleep(0)
    assert not third.done() and _lane(s, "p")["in_flight"] == 1
    second.release()
    (await third).release()
    assert _lane(s, "p")["in_flight"] == 0


# -- arguments and configuration ---------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"priority": "urgent"}, "priority must be one of"),
    ({"weight": 0.0}, "weight must be"),
    ({"weight": float("nan")}, "weight must be"),
    ({"tokens": -1}, "tokens must be"),
])
async def test_acquire_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    s = Scheduler()
    with pytest.raises(ValueError, match=message):
        await s.acquire(provider="p", model="m", **kwargs)
    with pytest.raises(ValueError, match=message):
        s.grant_now(provider="p", model="m", **kwargs)
    with pytest.raises(ValueError, match=message):
        await s.queue(provider="p", model="m", **kwargs)
    assert s.metrics()["totals"]["in_flight"] == 0


async def test_grant_now_grants_only_what_acquire_would_grant_without_waiting() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    first = s.grant_now(provider="p", model="m", priority="interactive")
    assert first is not None and first.lane == "p" and first.position == 0
    assert s.grant_now(provider="p", model="m", priority="interactive") is None  # (full)
    waiting = asyncio.create_task(s.acquire(provider="p", model="m"))
    await asyncio.sleep(0)
    first.release()
    second = await waiting  # (a queued call is granted as before)
    assert s.metrics()["lanes"]["p"]["granted"] == 2
    second.release()
    third = s.grant_now(provider="p", model="m")
    assert third is not None
    third.release()
    assert s.metrics()["totals"]["in_flight"] == 0


async def test_a_call_grant_now_did_not_admit_queues_behind_the_one_in_flight() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)})
    first = s.grant_now(provider="p", model="m", priority="interactive")
    assert first is not None
    assert s.grant_now(provider="p", model="m", priority="interactive") is None
    waiting = asyncio.create_task(s.queue(provider="p", model="m", priority="interactive"))
    await asyncio.sleep(0)  # (one turn of the loop: the task runs to its wait)
    assert s.metrics()["lanes"]["p"]["queued"] == 1 and not waiting.done()
    first.release()
    second = await waiting
    assert second.lane == "p" and s.metrics()["lanes"]["p"]["waited"] == 1
    second.release()
    assert s.metrics()["totals"]["in_flight"] == 0


def _limits_of(name: str, raw: object) -> LaneLimits:
    """The lane limits the daemon builds from its ``providers`` setting."""
    return lane_limits(Settings(demo_agent=False, providers={name: raw}))[name]


def test_the_providers_setting_builds_limits() -> None:
    limits = _limits_of("openai", {"concurrency": 4, "rpm": 600, "tpm": 1_000_000,
                                   "burst_s": 2})
    assert limits == LaneLimits(concurrency=4, rpm=600.0, tpm=1e6, burst_s=2.0)
    assert isinstance(limits.rpm, float)
    assert _limits_of("openai", {}) == LaneLimits()
    assert _limits_of("openai", {"rpm": None}).rpm is None


@pytest.mark.parametrize(("name", "raw", "where"), [
    ("openai", {"rpm": 0}, "providers.openai.rpm"),
    ("openai", {"rpm": -60}, "providers.openai.rpm"),
    ("openai", {"rpm": True}, "providers.openai.rpm"),
    ("openai", {"rpm": "60"}, "providers.openai.rpm"),
    ("openai", {"rpm": float("inf")}, "providers.openai.rpm"),
    ("openai", {"tpm": 0.0}, "providers.openai.tpm"),
    ("openai", {"tpm": float("nan")}, "providers.openai.tpm"),
    ("openai", {"burst_s": 0}, "providers.openai.burst_s"),
    ("openai", {"burst_s": None}, "providers.openai.burst_s"),
    ("openai", {"concurrency": 0}, "providers.openai.concurrency"),
    ("openai", {"concurrency": 2.5}, "providers.openai.concurrency"),
    ("openai", {"concurrency": True}, "providers.openai.concurrency"),
    ("openai", {"foo": 1}, "providers.openai.foo"),
    ("openai", {"rpm": 60, "scope": "galaxy"}, "providers.openai.scope"),
    ("openai", {"rpm": 60, "scope": None}, "providers.openai.scope"),
    ("openai", [("rpm", 60)], "providers.openai"),
    ("openai", 60, "providers.openai"),
    ("openai:gpt-4o", {"rpm": 0}, "providers.openai:gpt-4o.rpm"),
])
def test_bad_provider_limits_are_refused_naming_the_setting(name: str, raw: object,
                                                            where: str) -> None:
    with pytest.raises(ValidationError) as info:
        _limits_of(name, raw)
    assert where in str(info.value)


def test_lane_limits_refuse_bad_values_when_built_directly() -> None:
    with pytest.raises(ValueError, match=r"LaneLimits\.rpm must be"):
        LaneLimits(rpm=0)
    with pytest.raises(ValueError, match=r"LaneLimits\.concurrency must be"):
        LaneLimits(concurrency=0)


def test_scheduler_refuses_bad_weights() -> None:
    with pytest.raises(ValueError, match=r"class_weights\.urgent is not a priority"):
        Scheduler(class_weights={"urgent": 5.0})
    with pytest.raises(ValueError, match=r"class_weights\.batch must be"):
        Scheduler(class_weights={"batch": 0.0})
    with pytest.raises(ValueError, match=r"tenant_weights\.acme must be"):
        Scheduler(tenant_weights={"acme": -1.0})


async def test_class_weights_can_be_changed() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=1)}, class_weights={"background": 100.0})
    calls: list[Call] = [(p, {"priority": p}) for _ in range(50) for p in ("interactive",
                                                                          "background")]
    order = await _grant_order(s, "p", calls, hold=1)
    assert abs(Counter(order[:40])["interactive"] - 20) <= 1
    assert DEFAULT_CLASS_WEIGHTS["background"] == 10.0  # the defaults are not changed


async def test_metrics_shape() -> None:
    s = Scheduler({"openai": LaneLimits(concurrency=1, rpm=600),
                   "openai:gpt-4o": LaneLimits(tpm=60_000)})
    assert set(s.metrics()["lanes"]) == {"openai", "openai:gpt-4o"}  # configured, unused
    holder = await s.acquire(provider="openai", model="x", priority="interactive")
    waiting = asyncio.create_task(s.acquire(provider="openai", model="x", priority="batch"))
    await _until(lambda: s.queued() == 1)
    m = s.metrics()
    json.dumps(m)
    lane = m["lanes"]["openai"]
    assert set(lane) == {"limits", "in_flight", "queued", "queued_by_class", "granted",
                         "waited", "wait_ms", "paused_for_s"}
    assert lane["limits"] == {"concurrency": 1, "rpm": 600.0, "tpm": None, "burst_s": 1.0,
                              "reserve": 0}
    assert (lane["in_flight"], lane["queued"], lane["granted"]) == (1, 1, 1)
    assert lane["queued_by_class"] == {"interactive": 0, "background": 0, "batch": 1}
    assert set(lane["wait_ms"]) == {"p50", "p99", "max"}
    holder.release()
    (await waiting).release()
    s.pause("openai", 30)
    m = s.metrics()
    json.dumps(m)
    lane = m["lanes"]["openai"]
    assert (lane["granted"], lane["waited"], lane["in_flight"]) == (2, 1, 0)
    assert 0 <= lane["wait_ms"]["p50"] <= lane["wait_ms"]["p99"] <= lane["wait_ms"]["max"]
    assert lane["wait_ms"]["max"] > 0
    assert 29 < lane["paused_for_s"] <= 30
    assert m["totals"] == {"in_flight": 0, "queued": 0, "granted": 2, "waited": 1}
    assert s.queued("nowhere") == 0


# -- property ----------------------------------------------------------------------------

_acquire = st.tuples(st.just("acquire"), st.sampled_from(PRIORITIES), st.integers(0, 3),
                     st.integers(0, 1), st.sampled_from([0.5, 1.0, 2.0]))
_pick = st.tuples(st.sampled_from(["cancel", "release"]), st.integers(0, 100))
_ops = st.lists(st.one_of(_acquire, _pick, st.just(("tick",))), max_size=60)


async def _scenario(concurrency: int, ops: list[tuple[Any, ...]]) -> None:
    s = Scheduler({"p": LaneLimits(concurrency=concurrency)})
    tasks: list[asyncio.Task[None]] = []
    grants: dict[int, Grant] = {}
    released: set[int] = set()
    cancelled: set[int] = set()

    async def call(i: int, kw: dict[str, Any]) -> None:
        grants[i] = await s.acquire(provider="p", model="m", **kw)

    def holding() -> int:
        return len(grants) - len(released)

    def check() -> None:
        in_flight = _lane(s, "p")["in_flight"]
        assert holding() <= in_flight <= concurrency

    for op in ops:
        if op[0] == "acquire":
            _, priority, agent, tenant, weight = op
            kw = {"priority": priority, "agent": f"a{agent}", "tenant": f"t{tenant}",
                  "weight": weight}
            tasks.append(asyncio.create_task(call(len(tasks), kw)))
        elif op[0] == "cancel" and tasks:
            i = op[1] % len(tasks)
            tasks[i].cancel()
            cancelled.add(i)
        elif op[0] == "release" and tasks:
            i = op[1] % len(tasks)
            if i in grants:
                grants[i].release()  # a second release of the same grant does nothing
                released.add(i)
        elif op[0] == "tick":
            await asyncio.sleep(0)
        check()
    for _ in range(10_000):  # drain: release whatever is granted until all are done
        await asyncio.sleep(0)
        check()
        for i, grant in grants.items():
            if i not in released:
                grant.release()
                released.add(i)
        if all(t.done() for t in tasks):
            break
    assert all(t.done() for t in tasks)
    for i, task in enumerate(tasks):
        if i not in cancelled:
            assert not task.cancelled() and i in grants  # every live call got its turn
    assert s.queued() == 0
    lane = _lane(s, "p")
    assert lane["in_flight"] == 0 and lane["granted"] >= len(grants)
    assert not s.timer_armed("p")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(concurrency=st.integers(1, 3), ops=_ops)
def test_random_acquire_cancel_release_keeps_the_invariants(
        concurrency: int, ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(_scenario(concurrency, ops))


# -- the interactive reserve ---------------------------------------------------------------


async def test_the_reserve_keeps_slots_for_interactive_calls() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=3, reserve=1)})
    in_flight = {"background": 0, "interactive": 0}
    peak = {"background": 0, "interactive": 0}
    chat_waits: list[int] = []
    released = [0]

    async def one(priority: str, hold: float) -> None:
        grant = await s.acquire(provider="p", model="m", priority=priority)
        if priority == "interactive":
            chat_waits.append(released[0])  # background calls ended before the grant
        in_flight[priority] += 1
        peak[priority] = max(peak[priority], in_flight[priority])
        await asyncio.sleep(hold)
        in_flight[priority] -= 1
        released[0] += priority == "background"
        grant.release()

    background = [asyncio.create_task(one("background", 0.05)) for _ in range(20)]
    await _until(lambda: s.queued("p") == 18)
    # Background calls fill all but the reserve; a chat then gets the reserve at once.
    assert s.metrics()["lanes"]["p"]["in_flight"] == 2
    await one("interactive", 0)
    assert chat_waits == [0]
    await asyncio.gather(*background)
    assert peak["background"] == 2


async def test_the_reserve_goes_to_interactive_calls_queued_behind_background_ones() -> None:
    s = Scheduler({"p": LaneLimits(concurrency=2, reserve=1)})
    # Both slots are taken by interactive calls; background and interactive calls queue.
    holders = [await s.acquire(provider="p", model="m", priority="interactive")
               for _ in range(2)]
    order: list[str] = []

    async def one(label: str, priority: str) -> None:
        grant = await s.acquire(provider="p", model="m", priority=priority)
        order.append(label)
        await asyncio.sleep(0.005)
        grant.release()

    tasks = [asyncio.create_task(one(f"bg{i}", "background")) for i in range(3)]
    tasks.append(asyncio.create_task(one("chat", "interactive")))
    await _until(lambda: s.queued("p") == 4)
    holders[0].release()  # one slot: the fair order picks the chat (interactive first)
    await _until(lambda: len(order) == 1)
    holders[1].release()  # the other: a background call may take it (not the reserve)
    await asyncio.gather(*tasks)
    assert order[0] == "chat" and sorted(order[1:]) == ["bg0", "bg1", "bg2"]
    assert s.queued("p") == 0 and s.metrics()["lanes"]["p"]["in_flight"] == 0


@pytest.mark.parametrize(("raw", "message"), [
    ({"concurrency": 2, "reserve": 2}, "reserve must be below concurrency"),
    ({"reserve": 1}, "reserve must be below concurrency"),
    ({"concurrency": 2, "reserve": -1}, "providers.p.reserve"),
])
def test_a_bad_reserve_is_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _limits_of("p", raw)


async def test_the_reserve_is_not_left_idle_behind_a_background_call() -> None:
    """When the fair order's next call is a background one that only the reserve could
    admit, the reserve goes to the next interactive call instead of idling."""
    s = Scheduler({"p": LaneLimits(concurrency=2, reserve=1)})
    holder = await s.acquire(provider="p", model="m", priority="background")
    order: list[str] = []

    async def one(label: str, priority: str) -> None:
        grant = await s.acquire(provider="p", model="m", priority=priority)
        order.append(label)
        await asyncio.sleep(0)
        grant.release()

    tasks = [asyncio.create_task(one(f"i{i}", "interactive")) for i in range(30)]
    tasks += [asyncio.create_task(one(f"b{i}", "background")) for i in range(3)]
    # Every chat gets through the reserve while the background call holds the other slot.
    await _until(lambda: len(order) == 30)
    assert all(label.startswith("i") for label in order)
    holder.release()
    await asyncio.gather(*tasks)
    assert order[30:] == ["b0", "b1", "b2"]


def test_timers_are_rearmed_on_uvloop() -> None:
    """The daemon runs on uvloop, whose ``call_at`` for a moment already past returns a
    handle with no ``when()``: re-arming a lane's timer must not depend on it."""
    import uvloop

    async def scenario() -> int:
        s = Scheduler({"p": LaneLimits(rpm=600)})  # 10 at once, then one per 0.1 s
        lane = s._lane("p")
        lane.arm(0.0)  # due at once: uvloop hands back a plain Handle
        lane.arm(0.05)  # re-armed before it ran
        grants = [await s.acquire(provider="p", model="m") for _ in range(10)]
        waiting = [asyncio.create_task(s.acquire(provider="p", model="m")) for _ in range(2)]
        await _until(lambda: s.queued("p") == 2)  # a timer is armed for the refill
        s.pause("p", 0.15)  # and moved further out
        grants += await asyncio.gather(*waiting)
        for grant in grants:
            grant.release()
        return len(grants)

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == 12
    finally:
        loop.close()
