"""The store's shared limits (agentd.store.limits), on SQLite and PostgreSQL: the GCRA
buckets, the slots and their claims, the pause, the nodes' demand rows. Times are
given to each exchange (``now``): nothing here waits."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentd.store import Store
from agentd.store.limits import Exchange, Give, Outcome, Rates, Take, gcra

T0 = 1_767_225_600.0
RPM60 = Rates.of(60.0, None, 1.0)  # one a second, a bucket of one


async def _take(store: Store, *, now: float, rates: Rates = RPM60, node: str = "n1",
                lane: str = "p", **take: object) -> Outcome:
    return await store.limit_exchange(lane, Exchange(node=node, now=now, rates=rates,
                                                     take=Take(**take)))  # type: ignore[arg-type]


async def test_requests_are_admitted_at_the_rate_and_told_how_long_to_wait(
        store: Store) -> None:
    rates = Rates.of(120.0, None, 2.0)  # two a second, a bucket of four
    admitted = [await _take(store, now=T0, rates=rates) for _ in range(5)]
    assert [o.taken for o in admitted] == [True] * 4 + [False]
    assert admitted[-1].refused == "rate"
    assert admitted[-1].wait_s == pytest.approx(0.5)
    # Half a second later exactly one more; the bucket refills, never beyond four.
    assert (await _take(store, now=T0 + 0.5, rates=rates)).taken
    assert not (await _take(store, now=T0 + 0.5, rates=rates)).taken
    later = [await _take(store, now=T0 + 60, rates=rates) for _ in range(5)]
    assert [o.taken for o in later] == [True] * 4 + [False]
    assert (await store.limit_state("p"))["granted"] == 9


async def test_lanes_are_independent(store: Store) -> None:
    assert (await _take(store, now=T0, lane="a")).taken
    assert not (await _take(store, now=T0, lane="a")).taken
    assert (await _take(store, now=T0, lane="b")).taken


async def test_tokens_are_reserved_corrected_and_a_large_call_leaves_a_debt(
        store: Store) -> None:
    rates = Rates.of(None, 6000.0, 1.0)  # 100 tokens a second, a bucket of 100
    assert (await _take(store, now=T0, rates=rates, tokens=80)).taken
    short = await _take(store, now=T0, rates=rates, tokens=40)
    assert (short.refused, short.wait_s) == ("rate", pytest.approx(0.2))
    # The call used 30 of its 80: 50 come back, and 40 fit now.
    await store.limit_exchange("p", Exchange(node="n1", now=T0, rates=rates,
                                             gives=[Give(tokens=50)]))
    assert (await _take(store, now=T0, rates=rates, tokens=40)).taken
    # Bigger than the bucket: let through once the bucket is full, leaving a debt of
    # 150 tokens (1.5 s) before anything else goes.
    big = await _take(store, now=T0 + 10, rates=rates, tokens=250)
    assert big.taken
    after = await _take(store, now=T0 + 10, rates=rates, tokens=1)
    assert (after.refused, after.wait_s) == ("rate", pytest.approx(1.51))


async def test_a_request_given_back_can_be_taken_again(store: Store) -> None:
    assert (await _take(store, now=T0)).taken
    await store.limit_exchange("p", Exchange(node="n1", now=T0, rates=RPM60,
                                             gives=[Give(request=True)]))
    assert (await _take(store, now=T0)).taken
    # A full bucket stays full: giving back more than was taken adds nothing.
    await store.limit_exchange("p", Exchange(node="n1", now=T0 + 5, rates=RPM60,
                                             gives=[Give(request=True)] * 3))
    assert [(await _take(store, now=T0 + 5)).taken for _ in range(2)] == [True, False]


async def test_slots_are_claimed_freed_by_their_claim_and_expire(store: Store) -> None:
    free = Rates()
    one = await _take(store, now=T0, rates=free, concurrency=2, claim="a")
    two = await _take(store, now=T0, rates=free, concurrency=2, claim="b", node="n2")
    full = await _take(store, now=T0, rates=free, concurrency=2, claim="c")
    assert (one.taken, two.taken, full.taken, full.refused) == (True, True, False, "full")
    assert {one.slot, two.slot} == {0, 1}
    assert (await store.limit_state("p", T0))["slots_held"] == {"n1": 1, "n2": 1}
    # A give with another claim frees nothing; with its own, the slot.
    await store.limit_exchange("p", Exchange(node="n1", now=T0, rates=free,
                                             gives=[Give(slot=one.slot, claim="zzz")]))
    assert not (await _take(store, now=T0, rates=free, concurrency=2, claim="c")).taken
    await store.limit_exchange("p", Exchange(node="n1", now=T0, rates=free,
                                             gives=[Give(slot=one.slot, claim="a")]))
    c = await _take(store, now=T0, rates=free, concurrency=2, claim="c")
    assert c.taken and c.slot == one.slot
    # n2's claim is renewed, n1's is not: after the ttl (30 s), n1's slot is free
    # and n2's is not.
    renewed = await store.limit_exchange("p", Exchange(node="n2", now=T0 + 20, rates=free,
                                                       renew=["b"], ttl_s=30.0))
    assert renewed.renewed == {"b"}
    d = await _take(store, now=T0 + 31, rates=free, concurrency=2, claim="d")
    assert (d.taken, d.slot) == (True, one.slot)
    assert not (await _take(store, now=T0 + 31, rates=free, concurrency=2, claim="e")).taken
    # c's node comes back: its renewal says the claim is gone, its give frees nothing.
    lost = await store.limit_exchange("p", Exchange(node="n1", now=T0 + 32, rates=free,
                                                    renew=["c"]))
    assert lost.renewed == set()
    await store.limit_exchange("p", Exchange(node="n1", now=T0 + 32, rates=free,
                                             gives=[Give(slot=one.slot, claim="c")]))
    assert (await store.limit_state("p", T0 + 32))["slots_held"] == {"n1": 1, "n2": 1}


async def test_the_reserve_is_for_interactive_calls(store: Store) -> None:
    free = Rates()

    async def take(claim: str, interactive: bool) -> Outcome:
        return await _take(store, now=T0, rates=free, concurrency=3, reserve=1,
                           interactive=interactive, claim=claim)

    assert [(await take(c, False)).taken for c in "ab"] == [True, True]
    refused = await take("c", False)
    assert (refused.taken, refused.refused) == (False, "full")
    reserved = await take("d", True)
    assert (reserved.taken, reserved.slot) == (True, 0)
    assert not (await take("e", True)).taken


async def test_a_slot_limit_raised_adds_slots(store: Store) -> None:
    free = Rates()
    assert (await _take(store, now=T0, rates=free, concurrency=1, claim="a")).taken
    assert not (await _take(store, now=T0, rates=free, concurrency=1, claim="b")).taken
    assert (await _take(store, now=T0, rates=free, concurrency=2, claim="b")).taken


async def test_a_pause_holds_every_node_until_it_ends(store: Store) -> None:
    await store.limit_exchange("p", Exchange(node="n1", now=T0, rates=RPM60,
                                             pause_until=T0 + 7))
    # A shorter pause does not shorten it.
    await store.limit_exchange("p", Exchange(node="n2", now=T0, rates=RPM60,
                                             pause_until=T0 + 2))
    paused = await _take(store, now=T0 + 1, node="n2")
    assert (paused.refused, paused.wait_s) == ("paused", pytest.approx(6.0))
    assert (await store.limit_state("p", T0 + 1))["paused_for_s"] == pytest.approx(6.0)
    assert (await _take(store, now=T0 + 7, node="n2")).taken


async def test_a_refused_take_changes_nothing(store: Store) -> None:
    rates = Rates.of(60.0, None, 1.0)
    assert (await _take(store, now=T0, rates=rates, concurrency=1, claim="a")).taken
    # Refused for the rate: no slot is claimed by it.
    assert (await _take(store, now=T0, rates=rates, concurrency=1, claim="b")).refused == "rate"
    assert (await store.limit_state("p", T0))["slots_held"] == {"n1": 1}
    # Refused for a slot: no request is taken by it.
    assert (await _take(store, now=T0 + 1, rates=rates, concurrency=1,
                        claim="b")).refused == "full"
    await store.limit_exchange("p", Exchange(node="n1", now=T0 + 1, rates=rates,
                                             gives=[Give(slot=0, claim="a")]))
    assert (await _take(store, now=T0 + 1, rates=rates, concurrency=1, claim="b")).taken


async def test_demand_rows_are_read_by_the_others_and_expire(store: Store) -> None:
    async def say(node: str, now: float, demand: str | None) -> Outcome:
        return await store.limit_exchange("p", Exchange(
            node=node, now=now, rates=RPM60, demand=demand, demand_ttl_s=3.0, read=True))

    assert (await say("n1", T0, '{"a": 1}')).others == {}
    assert (await say("n2", T0 + 1, '{"b": 2}')).others == {"n1": '{"a": 1}'}
    assert (await say("n1", T0 + 2, None)).others == {"n2": '{"b": 2}'}
    assert (await store.limit_state("p", T0 + 2))["nodes_waiting"] == ["n1", "n2"]
    # n1 stops waiting; n2's row is not refreshed and lapses.
    assert (await say("n1", T0 + 2, "")).others == {"n2": '{"b": 2}'}
    assert (await say("n3", T0 + 2.5, None)).others == {"n2": '{"b": 2}'}
    assert (await say("n3", T0 + 4.5, None)).others == {}


async def test_a_node_starting_again_frees_what_its_previous_life_held(store: Store) -> None:
    free = Rates()
    assert (await _take(store, now=T0, rates=free, concurrency=1, claim="old")).taken
    await store.limit_exchange("p", Exchange(node="n1", now=T0, rates=free, demand="{}"))
    assert await store.limit_forget_node("n1") == 1
    assert (await _take(store, now=T0, rates=free, concurrency=1, node="n2",
                        claim="new")).taken
    assert (await store.limit_state("p", T0))["nodes_waiting"] == []


async def test_concurrent_takes_never_exceed_the_slots_or_the_rate(store: Store) -> None:
    """Many takes at once (PostgreSQL: on the pool's connections in parallel): no more
    than the slots and the bucket allow, and every claim in a slot of its own."""
    rates = Rates.of(600.0, None, 1.0)  # ten a second, a bucket of ten
    outcomes = await asyncio.gather(*(
        _take(store, now=T0, rates=rates, concurrency=8, claim=f"c{i}", node=f"n{i % 3}")
        for i in range(40)))
    taken = [o for o in outcomes if o.taken]
    assert len(taken) == 8
    assert len({o.slot for o in taken}) == 8
    outcomes = await asyncio.gather(*(
        _take(store, now=T0 + 100, rates=rates, lane="q", node=f"n{i % 3}")
        for i in range(40)))
    assert sum(o.taken for o in outcomes) == 10


@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(0, 300)), max_size=60),
       st.floats(0.5, 5.0))
def test_gcra_never_admits_more_than_the_rate_and_a_bucket(
        asks: list[tuple[float, int]], burst_s: float) -> None:
    """Whatever the times and sizes asked, tokens admitted in any window of w seconds
    are at most w x the rate + the bucket, past a call bigger than the bucket."""
    rate = 100.0  # tokens a second
    interval, capacity = 1.0 / rate, rate * burst_s
    tat, now, admitted = 0.0, 0.0, []
    for gap, amount in asks:
        now += gap
        wait, new = gcra(tat, now, interval, capacity, amount)
        if wait == 0.0:
            tat = new
            admitted.append((now, amount))
        else:
            assert wait > 0 and new == tat
    for i, (start, _) in enumerate(admitted):
        for j in range(i, len(admitted)):
            end = admitted[j][0]
            total = sum(a for _, a in admitted[i:j + 1])
            biggest = max(a for _, a in admitted[i:j + 1])
            assert total <= (end - start) * rate + max(capacity, biggest) + 1e-6
