"""Fires committed together (Store.accept_messages, Runs.send_many, Schedules.fire_due's
chunks), on SQLite and PostgreSQL: every message of a batch stands on its own (one
refused, lost to another writer or claimed before writes nothing and leaves the
others), and every fire time of a burst runs exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.config import Settings
from agentd.errors import SessionBusy, SessionNotFound
from agentd.runtime.runs import Message, SendResult
from agentd.store import Store
from agentd.store.engine import Tx
from agentd.store.log import Accepted, ToAccept
from agentd.store.records import EventRecord
from agentd.store.schedules import ScheduleRecord
from agentd.testing import FakeClock

FAST = {"schedules": {"min_interval_s": 1, "max_per_agent": 1000}}




async def fired(runtime: Runtime) -> list[dict[str, Any]]:
    """The data of every message.user a schedule sent, with its run's id."""
    rows = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT run_id, data FROM events WHERE kind = 'message.user'"))
    return [{**orjson.loads(d), "run_id": r} for r, d in rows
            if "schedule_id" in orjson.loads(d)]


async def settle(runtime: Runtime) -> None:
    for item in await fired(runtime):
        await runtime.wait(item["run_id"])


class Refused(Exception):
    pass


async def test_each_message_of_a_batch_stands_on_its_own(store: Store) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    busy = await store.accept_message(agent_id=agent.id, key="busy", content="first")
    written: list[str] = []

    def refuse(tx: Tx, accepted: Accepted) -> None:
        raise Refused("refused after its writes")

    def note(tx: Tx, accepted: Accepted) -> None:
        written.append(accepted.run.id)

    outcomes = await store.accept_messages([
        ToAccept(agent_id=agent.id, key="k", content="one", also=note),
        ToAccept(agent_id=agent.id, key="gone", content="never", also=refuse),
        ToAccept(agent_id=agent.id, key="busy", content="second", mode="reject"),
        ToAccept(agent_id=agent.id, key="k", content="two", origin={"by": "test"}),
    ])
    one, refused, rejected, two = outcomes
    assert isinstance(one, Accepted) and isinstance(two, Accepted)
    assert isinstance(refused, Refused) and isinstance(rejected, SessionBusy)
    assert written == [one.run.id]
    # Nothing of the refused message: not even the session it created.
    with pytest.raises(SessionNotFound):
        await store.get_session(agent.id, "gone")
    # The busy session got nothing more.
    assert [e.kind for e in await store.read_events(busy.session.id)] == [
        "message.user", "run.queued"]
    # The accepted ones: one session, dense seqs, queued in the order given.
    session = await store.get_session(agent.id, "k")
    events = await store.read_events(session.id)
    assert [(e.seq, e.kind, e.run_id) for e in events] == [
        (1, "message.user", one.run.id), (2, "run.queued", one.run.id),
        (3, "message.user", two.run.id), (4, "run.queued", two.run.id)]
    assert events[2].data == {"by": "test", "content": "two"}
    assert (await store.get_run(one.run.id)).queued_seq == 2
    assert (await store.get_run(two.run.id)).queued_seq == 4
    counts = await store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM runs"))
    assert counts is not None and counts[0] == 3


def _watch_chunks(runtime: Runtime) -> list[bool]:
    """How each accepted message of the store's chunks was written (True: set-wise),
    from the real call's outcomes."""
    seen: list[bool] = []
    real = runtime.store.accept_messages

    async def watched(items: Any, **kw: Any) -> list[Accepted | Exception]:
        outcomes = await real(items, **kw)
        seen.extend(o.batched for o in outcomes if isinstance(o, Accepted))
        return outcomes

    runtime.store.accept_messages = watched  # type: ignore[method-assign]
    return seen


async def _schedules(runtime: Runtime, n: int, every_s: float = 10) -> list[ScheduleRecord]:
    made = []
    for i in range(n):
        # A third to a session of its own, a third sharing a session with others, a
        # third to a new session per fire.
        session = [f"own{i}", f"shared{i % 4}", None][i % 3]
        made.append(await runtime.schedules.create("a", ScheduleIn(
            content=f"s{i}", every_s=every_s, overlap="enqueue", session=session),
            by="test"))
    return made


@pytest.fixture
async def runtime(settings: Settings, store_url: str) -> AsyncIterator[Runtime]:
    settings.database_url = store_url
    # Runs nobody holds are taken over every lease_ttl_s / 2: not within a test.
    settings.lease_ttl_s = 1200
    rt = await Runtime.open(settings)
    yield rt
    await rt.close()


async def test_a_burst_in_chunks_fires_each_time_once(runtime: Runtime) -> None:
    await runtime.schedules.stop()
    clock = FakeClock(10_000_000.0)
    runtime.schedules.clock = clock
    # Queries of 16, commits of 7: a burst of 45 takes several of each.
    runtime.schedules.batch, runtime.schedules.chunk = 16, 7
    await runtime.create_agent(name="a", settings=FAST)
    made = await _schedules(runtime, 45)
    for _ in range(3):
        clock.now += 10
        # Three passes at once: those that read a schedule another already moved on
        # lose it, fire by fire.
        await asyncio.gather(*(runtime.schedules.fire_due() for _ in range(3)))
    seen = await fired(runtime)
    counts = Counter((d["schedule_id"], d["fire_at"]) for d in seen)
    assert len(counts) == 45 * 3 and set(counts.values()) == {1}
    for rec in made:
        assert {t for s, t in counts if s == rec.id} == {
            10_000_010.0, 10_000_020.0, 10_000_030.0}
    figures = runtime.schedules.figures
    assert figures["fired"] == 135 and figures["skipped"] == 0
    claims = await runtime.store.engine.read(lambda tx: tx.one(
        "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM schedule_fires"))
    runs = await runtime.store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM runs"))
    assert claims is not None and tuple(claims) == (135, 135)
    assert runs is not None and runs[0] == 135  # no run of a lost fire was kept
    # Each run was handed to the supervisor once the burst was claimed: all finish
    # (none left for the take-over job), in each shared session in the order of
    # their fire times.
    await asyncio.wait_for(settle(runtime), 120)
    for key in ("shared0", "shared1"):
        _, session = await runtime.get_session("a", key)
        events = await runtime.store.read_events(session.id)
        starts = [e.data["fire_at"] for e in events if e.kind == "message.user"]
        assert starts == sorted(starts) and len(starts) >= 3
    for item in seen:
        assert (await runtime.store.get_run(item["run_id"])).status == "completed"


async def test_a_fire_lost_or_claimed_before_in_a_batch_drops_only_itself(
        runtime: Runtime) -> None:
    await runtime.schedules.stop()
    clock = FakeClock(11_000_000.0)
    runtime.schedules.clock = clock
    await runtime.create_agent(name="a", settings=FAST)
    made = [await runtime.schedules.create("a", ScheduleIn(
        content=f"s{i}", every_s=10, overlap="enqueue"), by="test") for i in range(12)]
    lost, claimed = made[4], made[7]
    clock.now += 10
    fire_at = 11_000_010.0
    # Between the pass's query and its commit another writer moves one schedule on
    # (as a second node's fire would) and one fire time turns out claimed already.
    real: Callable[[float, int], Awaitable[list[ScheduleRecord]]] = (
        runtime.store.due_schedules)

    async def meddling(now: float, limit: int) -> list[ScheduleRecord]:
        due = await real(now, limit)
        if any(r.id == lost.id for r in due):
            await runtime.store.move_schedule(lost.id, expect_next=fire_at,
                                              next_fire_at=fire_at + 10,
                                              next_due_at=fire_at + 10)
            await runtime.store.engine.write(lambda tx: tx.execute(
                "INSERT INTO schedule_fires (schedule_id, fire_at, run_id, status, "
                "reason, at) VALUES (?, ?, NULL, 'skipped', 'test', ?)",
                (claimed.id, fire_at, fire_at)))
        return due

    runtime.store.due_schedules = meddling  # type: ignore[method-assign]
    batched = _watch_chunks(runtime)
    assert await runtime.schedules.fire_due() == 12
    # The chunk's set-wise claims failed on the two: it went fire by fire.
    assert batched == [False] * 10
    assert runtime.schedules.figures["lost"] == 1
    assert runtime.schedules.figures["fired"] == 10
    seen = await fired(runtime)
    assert sorted(d["schedule_id"] for d in seen) == sorted(
        r.id for r in made if r.id not in (lost.id, claimed.id))
    # Nothing of the lost fire was written: no session of its own, no run.
    sessions = {s.key for s in await runtime.list_sessions("a")}
    assert len(sessions) == 10 and not any(lost.id in k or claimed.id in k
                                           for k in sessions)
    runs = await runtime.store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM runs"))
    assert runs is not None and runs[0] == 10
    # The one claimed before moved past its fire time without a run.
    after = await runtime.schedules.get(claimed.id)
    assert after.next_fire_at == fire_at + 10 and after.fires == 0
    [claim] = await runtime.store.schedule_fires(claimed.id)
    assert (claim.status, claim.reason, claim.run_id) == ("skipped", "test", None)
    # Next time round both fire like the rest.
    runtime.store.due_schedules = real  # type: ignore[method-assign]
    clock.now += 10
    await runtime.schedules.fire_due()
    again = Counter(d["schedule_id"] for d in await fired(runtime))
    assert again[lost.id] == 1 and again[claimed.id] == 1 and len(again) == 12
    await settle(runtime)


async def test_a_burst_is_claimed_set_wise_each_claim_with_its_run(runtime: Runtime) -> None:
    await runtime.schedules.stop()
    clock = FakeClock(12_000_000.0)
    runtime.schedules.clock = clock
    runtime.schedules.chunk = 10
    await runtime.create_agent(name="a", settings=FAST)
    made = await _schedules(runtime, 30)
    batched = _watch_chunks(runtime)
    clock.now += 10
    assert await runtime.schedules.fire_due() == 30
    assert batched == [True] * 30
    # Each fire time claimed once, with its own run, whose message says which fire
    # it is; each schedule moved on past it.
    claims = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT schedule_id, fire_at, run_id, status FROM schedule_fires"))
    by_run = {d["run_id"]: d for d in await fired(runtime)}
    assert len(claims) == 30 and len(by_run) == 30
    for schedule_id, fire_at, run_id, status in claims:
        assert status == "fired"
        assert (by_run[run_id]["schedule_id"], by_run[run_id]["fire_at"]) == (
            schedule_id, fire_at)
    for rec in made:
        after = await runtime.schedules.get(rec.id)
        assert after.fires == 1 and after.last_fire_at == 12_000_010.0
        assert after.next_fire_at == 12_000_020.0 and after.version == rec.version + 1
        assert after.last_run_id in by_run
    await asyncio.wait_for(settle(runtime), 120)
    # The same schedules again: their sessions exist now (some shared), still set-wise;
    # their runs start from logs read in one query per chunk, none from a read of its
    # own (the histories this process held are dropped first, as a burst of 10,000
    # sessions overflows them).
    agent = await runtime.get_agent("a")
    runtime.histories.drop_agent(agent.id)
    per_run: list[str] = []
    chunks: list[list[str]] = []
    read_events, read_logs = runtime.store.read_events, runtime.store.read_logs

    async def one(session_id: str, *, after: int = 0, limit: int | None = None) -> Any:
        per_run.append(session_id)
        return await read_events(session_id, after=after, limit=limit)

    async def many(session_ids: Any) -> Any:
        chunks.append(list(session_ids))
        return await read_logs(session_ids)

    runtime.store.read_events = one  # type: ignore[method-assign]
    runtime.store.read_logs = many  # type: ignore[method-assign]
    clock.now += 10
    batched.clear()
    assert await runtime.schedules.fire_due() == 30
    assert batched == [True] * 30
    await asyncio.wait_for(settle(runtime), 120)
    keys: dict[str, str] = {}
    for d in await fired(runtime):
        if d["fire_at"] == 12_000_020.0:
            run, _, key = await runtime.runs.get(d["run_id"])
            keys[run.session_id] = key
    # The sessions made for this fire (session None) came with their messages.
    old = {sid for sid, key in keys.items() if not key.startswith("schedule:")}
    assert len(keys) == 30 - 6 and 0 < len(old) < len(keys)  # 4 shared by 16
    assert len(chunks) == 3 and set().union(*chunks) == old
    # The chunks' logs were read set-wise (above). Whether a run also reads its own
    # log depends on whether its worker reaches it before its chunk's logs are in, a
    # race (seen on PostgreSQL under CI's load), so it is not asserted here; the
    # reads per run are counted by bench/autonomy_burst.py.
    alone = {sid for sid, key in keys.items() if not key.startswith("shared")}
    assert len(alone) == 20
    for item in await fired(runtime):
        assert (await runtime.store.get_run(item["run_id"])).status == "completed"


async def _run_log(runtime: Runtime, run_id: str) -> list[EventRecord]:
    run = await runtime.store.get_run(run_id)
    return [e for e in await runtime.store.read_events(run.session_id) if e.run_id == run_id]


async def test_a_burst_runs_start_in_the_commit_of_their_claims(runtime: Runtime) -> None:
    """A fire whose session has nothing else active starts its run in its claim's
    commit (run.started logged with its message, no later start); a fire queued behind
    another run of its session starts when that one ends. Each run starts once."""
    await runtime.schedules.stop()
    clock = FakeClock(13_000_000.0)
    # The claims' time and the runs' (the store's) from one clock: they are compared.
    runtime.schedules.clock = runtime.store.clock = clock
    runtime.schedules.chunk = 10
    await runtime.create_agent(name="a", settings=FAST)
    await _schedules(runtime, 30)
    clock.now += 10
    assert await runtime.schedules.fire_due() == 30
    await asyncio.wait_for(settle(runtime), 120)
    claims = dict(await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT run_id, at FROM schedule_fires")))
    with_message: set[str] = set()
    for item in await fired(runtime):
        log = await _run_log(runtime, item["run_id"])
        assert [e.kind for e in log] == ["message.user", "run.queued", "run.started",
                                         "message.assistant", "run.completed"]
        run = await runtime.store.get_run(item["run_id"])
        assert run.status == "completed" and run.started_at == log[2].at
        if log[2].seq == log[1].seq + 1 and log[2].at == log[0].at:
            with_message.add(run.id)
            assert run.started_at <= claims[run.id]  # in the claim's transaction
    # Ten to sessions of their own, ten to new ones, four shared sessions' first
    # fires; the six other fires to a shared session queued behind those.
    assert len(with_message) == 24


async def test_a_run_started_with_its_message_goes_on_while_its_agent_is_paused(
        runtime: Runtime) -> None:
    """A started run is under way: pausing its agent before the run's executor exists
    does not hold it (as it does not hold runs under way); a run queued behind it is
    held until the agent is resumed."""
    await runtime.schedules.stop()
    await runtime.create_agent(name="a")
    deferred: list[Callable[[], object]] = []
    sent = await runtime.runs.send_many([
        Message(name="a", key="k1", content="one"), Message(name="a", key="k2", content="two"),
        Message(name="a", key="k1", content="three")], defer=deferred, start=True)
    one, two, three = sent
    assert isinstance(one, SendResult) and isinstance(two, SendResult)
    assert isinstance(three, SendResult)
    assert [r.run.status for r in (one, two, three)] == ["running", "running", "queued"]
    await runtime.set_state("a", "pause")
    for hand_over in deferred:
        hand_over()
    for r in (one, two):
        assert (await asyncio.wait_for(runtime.wait(r.run.id), 60)).status == "completed"
    await asyncio.sleep(0.2)
    assert (await runtime.store.get_run(three.run.id)).status == "queued"
    await runtime.set_state("a", "resume")
    assert (await asyncio.wait_for(runtime.wait(three.run.id), 60)).status == "completed"
    for r in (one, two):
        assert [e.kind for e in await _run_log(runtime, r.run.id)].count("run.started") == 1


async def test_a_takeover_pass_leaves_runs_just_started_with_their_messages(
        runtime: Runtime) -> None:
    """Between a started run's commit and its hand-over to the supervisor, a takeover
    pass may read it: it is not one to take over (it started after the pass's
    horizon), and handed over twice it is queued once. At start, a node's own runs
    are taken back whenever they started."""
    await runtime.schedules.stop()
    await runtime.create_agent(name="a")
    deferred: list[Callable[[], object]] = []
    sent = await runtime.runs.send_many([
        Message(name="a", key="k1", content="one"), Message(name="a", key="k2", content="two")],
        defer=deferred, start=True)
    ids = {r.run.id for r in sent if isinstance(r, SendResult)}
    owner, ttl = runtime.lease.owner, runtime.lease.ttl
    passing = await runtime.store.orphaned_runs(owner, queued_before=time.time() - ttl / 2)
    assert not ids & {r.id for r in passing}
    at_start = await runtime.store.orphaned_runs(owner, queued_before=time.time() + 1)
    assert ids <= {r.id for r in at_start}
    for r in at_start:
        if r.id in ids:  # as a pass that read it a moment earlier would submit it
            runtime.supervisor.submit(r.session_id, r.id, agent_id=r.agent_id,
                                      order=r.queued_seq, start=False)
    assert runtime.supervisor.queued_runs == 2
    for hand_over in deferred:
        hand_over()
    for run_id in ids:
        assert (await asyncio.wait_for(runtime.wait(run_id), 60)).status == "completed"
        kinds = [e.kind for e in await _run_log(runtime, run_id)]
        assert kinds.count("run.started") == 1 and "run.resumed" not in kinds


async def test_runs_started_with_their_messages_survive_a_restart(
        settings: Settings, store_url: str) -> None:
    """Runs started in their messages' commit whose executors never ran (the daemon
    stopped first) are picked up at the next start, from their logs, once each."""
    settings.database_url = store_url
    rt = await Runtime.open(settings)
    try:
        await rt.schedules.stop()
        await rt.create_agent(name="a")
        deferred: list[Callable[[], object]] = []
        sent = await rt.runs.send_many([
            Message(name="a", key="k1", content="one"),
            Message(name="a", key="k2", content="two")], defer=deferred, start=True)
        ids = [r.run.id for r in sent if isinstance(r, SendResult)]
        assert len(ids) == 2
    finally:
        await rt.close()
    rt = await Runtime.open(settings)
    try:
        for run_id in ids:
            assert (await asyncio.wait_for(rt.wait(run_id), 60)).status == "completed"
            assert [e.kind for e in await _run_log(rt, run_id)] == [
                "message.user", "run.queued", "run.started", "run.resumed",
                "message.assistant", "run.completed"]
    finally:
        await rt.close()


async def test_a_burst_records_the_fire_times_its_fires_missed(runtime: Runtime) -> None:
    """Fires written set-wise that carry missed fire times (the daemon was behind)
    record them as the fire-by-fire path does: one ``missed`` claim on the first of
    each schedule's, with how many and why."""
    await runtime.schedules.stop()
    clock = FakeClock(14_000_000.0)
    runtime.schedules.clock = clock
    await runtime.create_agent(name="a", settings=FAST)
    made = [await runtime.schedules.create("a", ScheduleIn(
        content=f"s{i}", every_s=10, session=f"k{i}", missed="once"), by="test")
        for i in range(3)]
    batched = _watch_chunks(runtime)
    clock.now += 45  # four fire times each: the latest fires, three are missed
    assert await runtime.schedules.fire_due() == 3
    assert batched == [True] * 3
    for rec in made:
        claims = await runtime.store.schedule_fires(rec.id)
        assert [(c.fire_at - 14_000_000.0, c.status) for c in claims] == [
            (40.0, "fired"), (10.0, "missed")]
        assert claims[1].reason is not None and claims[1].reason.startswith(
            "3 fire times missed from this one on")
        assert (await runtime.schedules.get(rec.id)).missed_count == 3
    await asyncio.wait_for(settle(runtime), 60)
