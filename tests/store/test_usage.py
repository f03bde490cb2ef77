"""The usage ledger and run priorities, run unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import calendar
import time
from typing import Any

import pytest

import agentd.store.store as store_module
from agentd.errors import SessionNotFound
from agentd.store import Lease, LeaseLost, NewEvent, Steered, Store, UsageCharge, open_store
from agentd.store._schema import MIGRATIONS
from agentd.testing import FakeClock

ZERO = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0,
        "cache_write_tokens": 0, "cost_usd": 0.0}


class Clock(FakeClock):
    """The store's clock, stopped at a UTC moment the test sets."""

    def at(self, day: str, hour: int = 12) -> None:
        y, m, d = (int(p) for p in day.split("-"))
        self.now = float(calendar.timegm((y, m, d, hour, 0, 0)))


@pytest.fixture
def clock(store: Store) -> Clock:
    clock = Clock()
    clock.at("2024-03-10")
    store.clock = clock
    return clock


def charge(agent_id: str, agent: str = "a1", *, tenant: str = "t1", model: str = "m1",
           tokens: tuple[int, int, int] = (10, 5, 2), cost: float = 0.001,
           calls: int = 1, written: int = 0) -> UsageCharge:
    return UsageCharge(agent_id=agent_id, agent=agent, tenant=tenant, model=model,
                       input_tokens=tokens[0], output_tokens=tokens[1],
                       cached_tokens=tokens[2], cost_usd=cost, calls=calls,
                       cache_write_tokens=written)


async def new_agent(store: Store, name: str = "a1") -> str:
    agent = await store.create_agent(name=name, model="scripted", instructions="",
                                     tools=[], settings={})
    return agent.id


async def step(store: Store, agent_id: str, usage: UsageCharge | None, key: str = "k"
               ) -> str:
    """A message and one committed step charging ``usage``; returns the session id."""
    accepted = await store.accept_message(agent_id=agent_id, key=key, content="hi")
    await store.append(accepted.session.id, [NewEvent(
        kind="message.assistant", run_id=accepted.run.id, data={"text": "ok"})],
        run_id=accepted.run.id, usage=usage)
    return accepted.session.id


def row(**fields: Any) -> dict[str, Any]:
    return {**ZERO, **fields}


async def test_charges_add_up_per_day_agent_and_model(store: Store, clock: Clock) -> None:
    agent_id = await new_agent(store)
    session_id = await step(store, agent_id, charge(agent_id))
    await step(store, agent_id, charge(agent_id, tokens=(1, 2, 3), cost=0.0005, calls=2))
    await step(store, agent_id, charge(agent_id, model="m2"))
    await step(store, agent_id, None)  # a step without usage charges nothing
    clock.at("2024-03-11", hour=0)
    await step(store, agent_id, charge(agent_id))

    report = await store.usage_report(group_by=["day", "agent", "model"])
    assert report == [
        row(day="2024-03-10", agent="a1", model="m1", calls=3, input_tokens=11,
            output_tokens=7, cached_tokens=5, cost_usd=0.0015),
        row(day="2024-03-10", agent="a1", model="m2", calls=1, input_tokens=10,
            output_tokens=5, cached_tokens=2, cost_usd=0.001),
        row(day="2024-03-11", agent="a1", model="m1", calls=1, input_tokens=10,
            output_tokens=5, cached_tokens=2, cost_usd=0.001),
    ]
    # The day is the UTC day of the commit that wrote the step's events.
    steps = [e for e in await store.read_events(session_id) if e.kind == "message.assistant"]
    assert [time.strftime("%Y-%m-%d", time.gmtime(e.at)) for e in steps] == [
        "2024-03-10"] * 4 + ["2024-03-11"]


async def test_cache_writes_are_summed_apart(store: Store, clock: Clock) -> None:
    """Tokens written to a provider's prompt cache: part of the input, summed apart
    like the cached ones, per group and in the totals."""
    agent_id = await new_agent(store)
    await step(store, agent_id, charge(agent_id, tokens=(3000, 50, 0), written=2900))
    await step(store, agent_id, charge(agent_id, tokens=(3100, 40, 2900), written=150))
    await step(store, agent_id, charge(agent_id, model="m2", tokens=(10, 5, 0)))
    assert await store.usage_report(group_by=["model"]) == [
        row(model="m1", calls=2, input_tokens=6100, output_tokens=90, cached_tokens=2900,
            cache_write_tokens=3050, cost_usd=0.002),
        row(model="m2", calls=1, input_tokens=10, output_tokens=5, cost_usd=0.001)]
    assert (await store.usage_report())[0]["cache_write_tokens"] == 3050


async def test_a_refused_or_failed_append_charges_nothing(store: Store, clock: Clock) -> None:
    agent_id = await new_agent(store)
    accepted = await store.accept_message(agent_id=agent_id, key="k", content="hi")
    run_id, session_id = accepted.run.id, accepted.session.id
    event = NewEvent(kind="message.assistant", run_id=run_id, data={})

    with pytest.raises(LeaseLost):  # nobody holds the run's lease as "other"
        await store.append(session_id, [event], run_id=run_id,
                           lease=Lease(owner="other", ttl=30.0), usage=charge(agent_id))
    steered = await store.accept_message(agent_id=agent_id, key="k", content="more",
                                         mode="steer")
    assert steered.steered
    with pytest.raises(Steered):
        await store.append(session_id, [event], run_id=run_id,
                           unless_steered_after=accepted.events[-1].seq,
                           usage=charge(agent_id))
    with pytest.raises(SessionNotFound):
        await store.append("s_missing", [event], usage=charge(agent_id))
    assert await store.usage_report() == [ZERO]

    # A failing write committed alongside a good one (one SQLite batch, replayed with
    # savepoints): the good one is charged once, the failing one not at all.
    results = await asyncio.gather(
        store.append(session_id, [event], run_id=run_id, usage=charge(agent_id)),
        store.append("s_missing", [event], usage=charge(agent_id, tokens=(100, 0, 0))),
        store.append(session_id, [event], run_id=run_id, usage=charge(agent_id)),
        return_exceptions=True)
    assert isinstance(results[1], SessionNotFound)
    assert await store.usage_report() == [row(calls=2, input_tokens=20, output_tokens=10,
                                              cached_tokens=4, cost_usd=0.002)]


async def seed(store: Store, clock: Clock) -> tuple[str, str]:
    """a1 (tenant t1) and a2 (tenant t2) over three days across a month's end."""
    a1, a2 = await new_agent(store, "a1"), await new_agent(store, "a2")
    for day, agent_id, name, tenant, model, tokens in [
        ("2024-01-31", a1, "a1", "t1", "m1", (100, 10, 0)),
        ("2024-02-01", a1, "a1", "t1", "m2", (200, 20, 0)),
        ("2024-02-01", a2, "a2", "t2", "m1", (300, 30, 5)),
        ("2024-02-29", a2, "a2", "t2", "m1", (400, 40, 0)),
    ]:
        clock.at(day)
        await step(store, agent_id, charge(agent_id, name, tenant=tenant, model=model,
                                           tokens=tokens, cost=tokens[0] / 1e6))
    return a1, a2


async def test_report_groups_and_filters(store: Store, clock: Clock) -> None:
    await seed(store, clock)
    by_agent = await store.usage_report(group_by=["agent"])
    assert [(r["agent"], r["calls"], r["input_tokens"], r["cost_usd"]) for r in by_agent] == [
        ("a1", 2, 300, 0.0003), ("a2", 2, 700, 0.0007)]
    assert [(r["tenant"], r["model"], r["output_tokens"]) for r in await store.usage_report(
        group_by=["tenant", "model"])] == [("t1", "m1", 10), ("t1", "m2", 20), ("t2", "m1", 70)]
    # Duplicates count once; the order asked is the order of the keys and of the rows.
    by_model_agent = await store.usage_report(group_by=["model", "agent", "model"])
    assert [list(r)[:2] for r in by_model_agent] == [["model", "agent"]] * 3
    assert [(r["model"], r["agent"]) for r in by_model_agent] == [
        ("m1", "a1"), ("m1", "a2"), ("m2", "a1")]

    # Day bounds are inclusive; filters combine.
    assert [r["day"] for r in await store.usage_report(
        group_by=["day"], since="2024-02-01", until="2024-02-01")] == ["2024-02-01"]
    assert [r["day"] for r in await store.usage_report(
        group_by=["day"], since="2024-02-01")] == ["2024-02-01", "2024-02-29"]
    assert [r["day"] for r in await store.usage_report(
        group_by=["day"], until="2024-02-01", agent="a1")] == ["2024-01-31", "2024-02-01"]
    assert await store.usage_report(tenant="t2", since="2024-02-02") == [
        row(calls=1, input_tokens=400, output_tokens=40, cost_usd=0.0004)]
    assert await store.usage_report(group_by=["agent"], agent="nobody") == []
    assert await store.usage_report(agent="nobody") == [ZERO]
    with pytest.raises(ValueError, match="week"):
        await store.usage_report(group_by=["week"])


async def test_report_by_month(store: Store, clock: Clock) -> None:
    await seed(store, clock)
    months = await store.usage_report(group_by=["month"])
    assert [(r["month"], r["calls"], r["input_tokens"]) for r in months] == [
        ("2024-01", 1, 100), ("2024-02", 3, 900)]
    assert [(r["month"], r["agent"], r["input_tokens"]) for r in await store.usage_report(
        group_by=["month", "agent"])] == [
        ("2024-01", "a1", 100), ("2024-02", "a1", 200), ("2024-02", "a2", 700)]


async def test_totals(store: Store, clock: Clock) -> None:
    assert await store.usage_report() == [ZERO]
    assert await store.usage_total(since="2000-01-01") == (0, 0.0)
    a1, a2 = await seed(store, clock)
    assert await store.usage_report() == [row(
        calls=4, input_tokens=1000, output_tokens=100, cached_tokens=5, cost_usd=0.001)]
    assert await store.usage_total(since="2024-01-01") == (1100, 0.001)
    assert await store.usage_total(since="2024-02-01") == (990, 0.0009)
    assert await store.usage_total(since="2024-02-01", agent_id=a1) == (220, 0.0002)
    assert await store.usage_total(since="2024-01-01", tenant="t2") == (770, 0.0007)
    assert await store.usage_total(since="2024-01-01", agent_id=a2, tenant="t1") == (0, 0.0)
    assert await store.usage_total(since="2024-03-01") == (0, 0.0)


async def test_usage_outlives_the_agent(store: Store, clock: Clock) -> None:
    agent_id = await new_agent(store)
    await step(store, agent_id, charge(agent_id))
    await store.delete_agent("a1")
    assert await store.count("runs") == 0
    assert await store.usage_report(group_by=["agent"]) == [
        row(agent="a1", calls=1, input_tokens=10, output_tokens=5, cached_tokens=2,
            cost_usd=0.001)]
    assert await store.usage_total(since="2024-03-10", agent_id=agent_id) == (15, 0.001)


async def test_priority_round_trips(store: Store) -> None:
    agent_id = await new_agent(store)
    urgent = await store.accept_message(agent_id=agent_id, key="k", content="x",
                                        priority="interactive", idempotency_key="i1")
    plain = await store.accept_message(agent_id=agent_id, key="k", content="y")
    assert urgent.run.priority == "interactive"
    assert (await store.get_run(urgent.run.id)).priority == "interactive"
    assert (await store.get_run(plain.run.id)).priority == "background"
    run, agent, key = await store.run_context(urgent.run.id)
    assert run.to_api(agent, key)["priority"] == "interactive"
    again = await store.accept_message(agent_id=agent_id, key="k", content="x",
                                       idempotency_key="i1")
    assert again.duplicate and again.run.priority == "interactive"
    assert [r.priority for r in await store.runs_with_status(["queued"])] == [
        "interactive", "background"]


@pytest.mark.empty_schema
async def test_migration_3_keeps_version_2_data(store_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at version 2 gains the ledger (empty) and run priorities
    (``background`` for the runs it had)."""
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:2])
    old = await open_store(store_url)
    try:
        assert await old.schema_version() == 2
        agent_id = "a_old"  # (today's create_agent writes columns version 2 lacks)
        await old.engine.write(lambda tx: tx.execute(
            "INSERT INTO agents (id, name, model, state, created_at, updated_at) "
            "VALUES (?, 'a1', 'scripted', 'created', 1, 1)", (agent_id,)))
        await old.engine.write(lambda tx: tx.execute(
            "INSERT INTO sessions (id, agent_id, key, created_at, updated_at) "
            "VALUES ('s1', ?, 'k', 1, 1)", (agent_id,)))
        await old.engine.write(lambda tx: tx.execute(
            "INSERT INTO runs (id, session_id, agent_id, status, input, created_at) "
            "VALUES ('r1', 's1', ?, 'completed', 'hi', 1)", (agent_id,)))
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)

    store = await open_store(store_url)
    try:
        assert await store.schema_version() == max(v for v, _, _ in MIGRATIONS) >= 3
        run = await store.get_run("r1")
        assert (run.status, run.input, run.priority) == ("completed", "hi", "background")
        assert await store.usage_report() == [ZERO]
        await step(store, agent_id, charge(agent_id))
        assert (await store.usage_report())[0]["calls"] == 1
    finally:
        await store.close()


@pytest.mark.empty_schema
async def test_migration_18_keeps_the_ledger_and_counts_writes_from_then(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ledger rows written before migration 18 keep their sums, with no cache writes;
    charges after it add theirs to the same row."""
    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 18])
    old = await open_store(store_url)
    try:
        assert await old.schema_version() == 17
        await old.engine.write(lambda tx: tx.execute(
            "INSERT INTO usage_daily (day, agent_id, agent, tenant, model, calls, "
            "input_tokens, output_tokens, cached_tokens, cost_usd) "
            "VALUES ('2024-03-10', 'a_old', 'a1', 't1', 'm1', 4, 4000, 80, 1000, 0.01)"))
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)

    store = await open_store(store_url)
    try:
        assert await store.schema_version() >= 18
        assert await store.usage_report(group_by=["agent"]) == [
            row(agent="a1", calls=4, input_tokens=4000, output_tokens=80, cached_tokens=1000,
                cost_usd=0.01)]
        clock = Clock()
        clock.at("2024-03-10")
        store.clock = clock
        agent_id = await new_agent(store, "a_new")
        await store.engine.write(lambda tx: tx.execute(
            "UPDATE usage_daily SET agent_id = ? WHERE agent_id = 'a_old'", (agent_id,)))
        await step(store, agent_id, charge(agent_id, tokens=(2000, 20, 0), written=1900))
        assert await store.usage_report() == [row(
            calls=5, input_tokens=6000, output_tokens=100, cached_tokens=1000,
            cache_write_tokens=1900, cost_usd=0.011)]
    finally:
        await store.close()


async def test_an_agent_moved_to_another_tenant_moves_its_day_row(store: Store,
                                                                   clock: Clock) -> None:
    """The day's row shows the tenant (and name) of its last charge, with every charge
    of the day summed, whether the tenant changed or not."""
    agent_id = await new_agent(store)
    await step(store, agent_id, charge(agent_id, tenant="t1"))
    await step(store, agent_id, charge(agent_id, "a1-renamed", tenant="t1"))
    await step(store, agent_id, charge(agent_id, tenant="t2", tokens=(1, 1, 0)))
    assert await store.usage_report(group_by=["tenant", "agent"]) == [
        row(tenant="t2", agent="a1", calls=3, input_tokens=21, output_tokens=11,
            cached_tokens=4, cost_usd=0.003)]
    await step(store, agent_id, charge(agent_id, "a1-again", tenant="t2"))
    assert await store.usage_report(group_by=["tenant", "agent"]) == [
        row(tenant="t2", agent="a1-again", calls=4, input_tokens=31, output_tokens=16,
            cached_tokens=6, cost_usd=0.004)]
    assert await store.usage_total(since="2024-03-10", tenant="t1") == (0, 0.0)
