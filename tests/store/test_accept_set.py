"""Chunks of messages written set-wise (Store.accept_messages, store/_accept_many.py),
on SQLite and PostgreSQL: the same rows as message by message, a refused message
writes nothing, a failure anywhere in the set path sends the chunk message by
message (only the bad one refused), and overlapping chunks committed concurrently
(two nodes firing the same burst) neither deadlock nor lose a message."""

from __future__ import annotations

import asyncio
import random

import pytest

from agentd.errors import SessionBusy, SessionNotFound
from agentd.store import Store
from agentd.store.engine import Tx
from agentd.store.log import Accepted, Lease, ToAccept
from agentd.store.records import AgentRecord


class Refused(Exception):
    pass


async def _agent(store: Store, name: str = "a") -> AgentRecord:
    return await store.create_agent(name=name, model="scripted", instructions="", tools=[],
                                    settings={})


async def _log(store: Store, agent_id: str, key: str) -> list[tuple[int, str, str | None]]:
    session = await store.get_session(agent_id, key)
    return [(e.seq, e.kind, e.run_id) for e in await store.read_events(session.id)]


async def test_a_chunk_is_written_set_wise_as_message_by_message(store: Store) -> None:
    agent = await _agent(store)
    old = await store.accept_message(agent_id=agent.id, key="old", content="before")
    busy = await store.accept_message(agent_id=agent.id, key="busy", content="first")
    outcomes = await store.accept_messages([
        ToAccept(agent_id=agent.id, key="new2", content="n2", origin={"schedule_id": "x",
                                                                      "fire_at": 1.5}),
        ToAccept(agent_id=agent.id, key="old", content="again", mode="interrupt"),
        ToAccept(agent_id=agent.id, key="busy", content="second", mode="reject"),
        ToAccept(agent_id=agent.id, key="new1", content="n1", priority="batch"),
    ])
    new2, again, rejected, new1 = outcomes
    assert isinstance(rejected, SessionBusy) and rejected.details == {
        "active_run": busy.run.id}
    for done in (new2, again, new1):
        assert isinstance(done, Accepted) and done.batched
    assert isinstance(new2, Accepted) and isinstance(again, Accepted)
    assert isinstance(new1, Accepted)
    # A new session from seq 1; an old one carries on densely after its last seq.
    assert (new2.created_session, new1.created_session, again.created_session) == (
        True, True, False)
    assert await _log(store, agent.id, "new2") == [
        (1, "message.user", new2.run.id), (2, "run.queued", new2.run.id)]
    assert await _log(store, agent.id, "old") == [
        (1, "message.user", old.run.id), (2, "run.queued", old.run.id),
        (3, "message.user", again.run.id), (4, "run.queued", again.run.id)]
    # What came back is what was stored: events, runs, sessions.
    for done in (new2, again, new1):
        stored = await store.read_events(done.session.id)
        assert [(e.seq, e.kind, e.data) for e in stored[-2:]] == [
            (e.seq, e.kind, e.data) for e in done.events]
        run = await store.get_run(done.run.id)
        assert (run.status, run.queued_seq, run.input, run.priority) == (
            "queued", done.events[-1].seq, done.run.input, done.run.priority)
        session = await store.get_session(agent.id, done.session.key)
        assert (session.id, session.last_seq) == (done.session.id, done.session.last_seq)
    assert new2.events[0].data == {"schedule_id": "x", "fire_at": 1.5, "content": "n2"}
    assert (await store.get_run(new1.run.id)).priority == "batch"
    # interrupt names the run it interrupts; the refused message wrote nothing.
    assert again.busy_run == old.run.id
    assert await _log(store, agent.id, "busy") == [
        (1, "message.user", busy.run.id), (2, "run.queued", busy.run.id)]
    runs = await store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM runs"))
    assert runs is not None and runs[0] == 5


async def test_also_many_sees_every_accepted_message_in_the_same_commit(
        store: Store) -> None:
    agent = await _agent(store)
    seen: list[tuple[int, str]] = []

    def also_many(tx: Tx, done: list[tuple[int, Accepted]]) -> None:
        seen.extend((i, a.run.id) for i, a in done)
        # It writes in the chunk's transaction: the runs are there already.
        rows = tx.all("SELECT id FROM runs")
        assert {r[0] for r in rows} >= {a.run.id for _, a in done}

    def never(tx: Tx, accepted: Accepted) -> None:
        raise AssertionError("the per-message also runs only when the set path fails")

    outcomes = await store.accept_messages(
        [ToAccept(agent_id=agent.id, key=f"k{i}", content=str(i), also=never)
         for i in range(5)], also_many=also_many)
    assert all(isinstance(o, Accepted) and o.batched for o in outcomes)
    assert seen == [(i, o.run.id) for i, o in enumerate(outcomes)
                    if isinstance(o, Accepted)]


async def test_a_failure_in_the_set_path_sends_the_chunk_message_by_message(
        store: Store) -> None:
    agent = await _agent(store)
    written: list[str] = []

    def also_many(tx: Tx, done: list[tuple[int, Accepted]]) -> None:
        # Writes first, then fails: none of it may stay.
        tx.execute("UPDATE agents SET instructions = 'set path' WHERE id = ?", (agent.id,))
        raise Refused("one of the chunk is bad")

    def good(tx: Tx, accepted: Accepted) -> None:
        written.append(accepted.session.key)

    def bad(tx: Tx, accepted: Accepted) -> None:
        raise Refused("this one")

    items = [ToAccept(agent_id=agent.id, key=f"k{i}", content=str(i),
                      also=bad if i == 2 else good) for i in range(4)]
    outcomes = await store.accept_messages(items, also_many=also_many)
    assert isinstance(outcomes[2], Refused)
    assert sorted(written) == ["k0", "k1", "k3"]
    for i in (0, 1, 3):
        done = outcomes[i]
        assert isinstance(done, Accepted) and not done.batched
        assert [(s, k) for s, k, _ in await _log(store, agent.id, f"k{i}")] == [
            (1, "message.user"), (2, "run.queued")]
    with pytest.raises(SessionNotFound):
        await store.get_session(agent.id, "k2")
    assert (await store.get_agent("a")).instructions == ""
    runs = await store.engine.read(lambda tx: tx.one("SELECT COUNT(*) FROM runs"))
    assert runs is not None and runs[0] == 3


async def test_chunks_the_set_path_cannot_write_go_message_by_message(store: Store) -> None:
    agent = await _agent(store)
    first = await store.accept_message(agent_id=agent.id, key="s", content="x",
                                       idempotency_key="k1")
    # An idempotency key (a duplicate here), a steer, and two messages to one session.
    outcomes = await store.accept_messages([
        ToAccept(agent_id=agent.id, key="s", content="x", idempotency_key="k1"),
        ToAccept(agent_id=agent.id, key="t", content="y"),
    ])
    dup, other = outcomes
    assert isinstance(dup, Accepted) and dup.duplicate and dup.run.id == first.run.id
    assert isinstance(other, Accepted) and not other.batched
    steer = await store.accept_messages([
        ToAccept(agent_id=agent.id, key="s", content="more", mode="steer"),
        ToAccept(agent_id=agent.id, key="u", content="z")])
    assert isinstance(steer[0], Accepted) and steer[0].steered and not steer[0].batched
    # Two messages to one session, one of them in reject mode: the second is refused
    # because of the first, as message by message.
    twice = await store.accept_messages([
        ToAccept(agent_id=agent.id, key="v", content="1"),
        ToAccept(agent_id=agent.id, key="v", content="2", mode="reject")])
    assert isinstance(twice[0], Accepted) and not twice[0].batched
    assert isinstance(twice[1], SessionBusy)


async def test_plain_messages_to_one_session_in_a_chunk_queue_in_order(
        store: Store) -> None:
    agent = await _agent(store)
    await store.accept_message(agent_id=agent.id, key="old", content="before")
    outcomes = await store.accept_messages([
        ToAccept(agent_id=agent.id, key="new", content="1"),
        ToAccept(agent_id=agent.id, key="old", content="2"),
        ToAccept(agent_id=agent.id, key="new", content="3"),
        ToAccept(agent_id=agent.id, key="old", content="4"),
        ToAccept(agent_id=agent.id, key="new", content="5")])
    assert all(isinstance(o, Accepted) and o.batched for o in outcomes)
    done = [o for o in outcomes if isinstance(o, Accepted)]
    assert [(o.session.key, o.run.queued_seq, o.created_session) for o in done] == [
        ("new", 2, True), ("old", 4, False), ("new", 4, False), ("old", 6, False),
        ("new", 6, False)]
    for key, contents in (("new", ["1", "3", "5"]), ("old", ["before", "2", "4"])):
        session = await store.get_session(agent.id, key)
        log = await store.read_events(session.id)
        assert session.last_seq == len(log) == 6
        assert [e.seq for e in log] == list(range(1, 7))
        assert [e.data["content"] for e in log if e.kind == "message.user"] == contents
        runs = [await store.get_run(e.run_id) for e in log if e.kind == "run.queued"
                and e.run_id is not None]
        assert [r.queued_seq for r in runs] == [2, 4, 6]


async def test_overlapping_chunks_at_once_neither_deadlock_nor_fall_back(
        store: Store) -> None:
    """Eight chunks over the same 40 sessions (half of them new), in different orders,
    committed concurrently (on PostgreSQL: eight transactions side by side, each
    locking its sessions in one order, creating the new ones as it goes): every
    message is accepted set-wise in the first go, once, and every log is dense."""
    agents = [await _agent(store, f"a{i}") for i in range(2)]
    keys = [(agents[i % 2].id, f"k{i}") for i in range(40)]
    for agent_id, key in keys[::2]:
        await store.accept_message(agent_id=agent_id, key=key, content="before")
    rng = random.Random(7)
    chunks = []
    for c in range(8):
        order = keys[:]
        rng.shuffle(order)
        chunks.append([ToAccept(agent_id=a, key=k, content=f"c{c}") for a, k in order])
    results = await asyncio.wait_for(
        asyncio.gather(*(store.accept_messages(chunk) for chunk in chunks)), 60)
    accepted = [o for outcomes in results for o in outcomes]
    assert all(isinstance(o, Accepted) and o.batched for o in accepted), [
        o for o in accepted if not isinstance(o, Accepted)]
    assert len({o.run.id for o in accepted if isinstance(o, Accepted)}) == 8 * 40
    for i, (agent_id, key) in enumerate(keys):
        session = await store.get_session(agent_id, key)
        log = await store.read_events(session.id)
        assert [e.seq for e in log] == list(range(1, 2 * 8 + (2 if i % 2 == 0 else 0) + 1))
        contents = [e.data["content"] for e in log if e.kind == "message.user"]
        assert sorted(c for c in contents if c != "before") == [f"c{c}" for c in range(8)]


async def test_overlapping_chunks_of_existing_sessions_all_go_set_wise(
        store: Store) -> None:
    """With every session there already, nothing makes a chunk fall back: each takes
    its sessions' locks in one order, so none waits in a cycle (PostgreSQL would end
    one with a deadlock error, and that chunk would go message by message)."""
    agent = await _agent(store)
    keys = [f"k{i}" for i in range(60)]
    for key in keys:
        await store.accept_message(agent_id=agent.id, key=key, content="before")
    rng = random.Random(11)
    chunks = []
    for c in range(8):
        order = keys[:]
        rng.shuffle(order)
        chunks.append([ToAccept(agent_id=agent.id, key=k, content=f"c{c}") for k in order])
    results = await asyncio.wait_for(
        asyncio.gather(*(store.accept_messages(chunk) for chunk in chunks)), 60)
    outcomes = [o for chunk in results for o in chunk]
    assert all(isinstance(o, Accepted) and o.batched for o in outcomes)
    for key in keys:
        log = await _log(store, agent.id, key)
        assert [s for s, _, _ in log] == list(range(1, 2 + 2 * 8 + 1))


async def test_start_starts_the_runs_of_idle_sessions_with_their_messages(
        store: Store) -> None:
    """``start``: the first message of each session with nothing active starts its run
    in the same commit (run.started logged, the run running under the lease); a busy
    session's message, and a session's second message of the chunk, queue as usual."""
    agent = await _agent(store)
    busy = await store.accept_message(agent_id=agent.id, key="busy", content="first")
    done = await store.accept_message(agent_id=agent.id, key="old", content="before")
    await store.engine.write(lambda tx: tx.execute(
        "UPDATE runs SET status = 'completed' WHERE id = ?", (done.run.id,)))
    lease = Lease(owner="node-1", ttl=30.0)
    outcomes = await store.accept_messages([
        ToAccept(agent_id=agent.id, key="new", content="n1"),
        ToAccept(agent_id=agent.id, key="busy", content="second"),
        ToAccept(agent_id=agent.id, key="old", content="again"),
        ToAccept(agent_id=agent.id, key="new", content="n2")], start=lease)
    new1, queued, again, new2 = outcomes
    for o in outcomes:
        assert isinstance(o, Accepted) and o.batched
    assert isinstance(new1, Accepted) and isinstance(new2, Accepted)
    assert isinstance(queued, Accepted) and isinstance(again, Accepted)
    assert (new1.started, queued.started, again.started, new2.started) == (
        True, False, True, False)
    assert await _log(store, agent.id, "new") == [
        (1, "message.user", new1.run.id), (2, "run.queued", new1.run.id),
        (3, "run.started", new1.run.id), (4, "message.user", new2.run.id),
        (5, "run.queued", new2.run.id)]
    assert await _log(store, agent.id, "old") == [
        (1, "message.user", done.run.id), (2, "run.queued", done.run.id),
        (3, "message.user", again.run.id), (4, "run.queued", again.run.id),
        (5, "run.started", again.run.id)]
    assert await _log(store, agent.id, "busy") == [
        (1, "message.user", busy.run.id), (2, "run.queued", busy.run.id),
        (3, "message.user", queued.run.id), (4, "run.queued", queued.run.id)]
    for o in (new1, again):
        run = await store.get_run(o.run.id)
        assert run == o.run  # what came back is what was stored
        assert (run.status, run.lease_owner, run.queued_seq) == (
            "running", "node-1", o.events[1].seq)
        assert run.started_at is not None and run.lease_expires_at == pytest.approx(
            run.started_at + 30.0)
        # The run started with its message: one commit, one time.
        assert {e.at for e in o.events} == {run.started_at}
        stored = await store.read_events(o.session.id, after=o.events[0].seq - 1, limit=3)
        assert [(e.seq, e.kind, e.data, e.at) for e in stored] == [
            (e.seq, e.kind, e.data, e.at) for e in o.events]
    for o in (queued, new2):
        run = await store.get_run(o.run.id)
        assert (run.status, run.started_at, run.lease_owner) == ("queued", None, None)
    for key in ("new", "old", "busy"):
        session = await store.get_session(agent.id, key)
        log = await store.read_events(session.id)
        assert session.last_seq == len(log) == log[-1].seq
    assert (await store.get_session(agent.id, "new")).last_seq == new2.session.last_seq
    assert new1.session.last_seq == 3 and again.session.last_seq == 5


async def test_overlapping_chunks_with_start_start_one_run_per_session(
        store: Store) -> None:
    """Eight chunks over the same 40 sessions (half of them with a finished run) at
    once, each asking to start its runs (on PostgreSQL side by side, a chunk finding a
    session it meant to start taken by another): all set-wise, each session starts
    exactly one run, its first queued, and the rest queue behind it; every log is
    dense and every message accepted once."""
    agents = [await _agent(store, f"a{i}") for i in range(2)]
    keys = [(agents[i % 2].id, f"k{i}") for i in range(40)]
    for agent_id, key in keys[::2]:
        await store.accept_message(agent_id=agent_id, key=key, content="before")
    await store.engine.write(lambda tx: tx.execute("UPDATE runs SET status = 'completed'"))
    rng = random.Random(5)
    chunks = []
    for c in range(8):
        order = keys[:]
        rng.shuffle(order)
        chunks.append([ToAccept(agent_id=a, key=k, content=f"c{c}") for a, k in order])
    lease = Lease(owner="node-1", ttl=30.0)
    results = await asyncio.wait_for(asyncio.gather(
        *(store.accept_messages(chunk, start=lease) for chunk in chunks)), 60)
    accepted = [o for outcomes in results for o in outcomes]
    assert all(isinstance(o, Accepted) and o.batched for o in accepted)
    assert len({o.run.id for o in accepted if isinstance(o, Accepted)}) == 8 * 40
    for agent_id, key in keys:
        session = await store.get_session(agent_id, key)
        log = await store.read_events(session.id)
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        assert session.last_seq == len(log)
        starts = [e.run_id for e in log if e.kind == "run.started"]
        queued = [e.run_id for e in log if e.kind == "run.queued"
                  and e.data == {} and e.run_id is not None]
        runs = [await store.get_run(r) for r in queued if r is not None]
        active = [r for r in runs if r.status != "completed"]
        assert len(active) == 8
        assert len(starts) == 1 and starts[0] == active[0].id
        assert [r.status for r in active] == ["running"] + ["queued"] * 7
