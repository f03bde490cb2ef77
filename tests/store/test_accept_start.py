"""A message whose session has nothing else active starts its run in the accepting
commit (``Store.accept_message(start=...)``, what ``Runs.send`` asks for): a turn is
two commits, not three. On SQLite and PostgreSQL: only an idle session's run starts,
concurrent senders to one session start one run between them, and the run that
started is stored as its executor's first commit would have stored it."""

from __future__ import annotations

import asyncio

import pytest

from agentd.store import Store
from agentd.store.log import Accepted, Lease
from agentd.store.records import AgentRecord

LEASE = Lease(owner="node-1", ttl=30.0)


async def _agent(store: Store) -> AgentRecord:
    return await store.create_agent(name="a", model="scripted", instructions="", tools=[],
                                    settings={})


async def _kinds(store: Store, session_id: str) -> list[tuple[int, str, str | None]]:
    return [(e.seq, e.kind, e.run_id) for e in await store.read_events(session_id)]


async def test_an_idle_sessions_run_starts_with_its_message(store: Store) -> None:
    agent = await _agent(store)
    new = await store.accept_message(agent_id=agent.id, key="new", content="hi",
                                     start=LEASE)
    assert new.started and new.created_session
    assert [(e.seq, e.kind) for e in new.events] == [
        (1, "message.user"), (2, "run.queued"), (3, "run.started")]
    run = await store.get_run(new.run.id)
    assert run == new.run  # what came back is what was stored
    assert (run.status, run.lease_owner, run.queued_seq) == ("running", "node-1", 2)
    assert run.started_at is not None
    assert run.lease_expires_at == pytest.approx(run.started_at + 30.0)
    assert await _kinds(store, new.session.id) == [
        (1, "message.user", run.id), (2, "run.queued", run.id), (3, "run.started", run.id)]
    assert new.session.last_seq == 3
    assert (await store.get_session(agent.id, "new")).last_seq == 3

    # The session is busy now: the next message queues behind the run, whatever mode.
    behind = await store.accept_message(agent_id=agent.id, key="new", content="more",
                                        start=LEASE)
    assert not behind.started and behind.busy_run == run.id
    assert [e.kind for e in behind.events] == ["message.user", "run.queued"]
    queued = await store.get_run(behind.run.id)
    assert (queued.status, queued.started_at, queued.lease_owner) == ("queued", None, None)
    steered = await store.accept_message(agent_id=agent.id, key="new", content="steer",
                                         mode="steer", start=LEASE)
    assert steered.steered and steered.run.id == run.id  # into the run under way


async def test_a_session_whose_runs_ended_starts_again_and_a_queued_one_does_not(
        store: Store) -> None:
    agent = await _agent(store)
    done = await store.accept_message(agent_id=agent.id, key="old", content="before")
    waiting = await store.accept_message(agent_id=agent.id, key="waiting", content="q")
    await store.engine.write(lambda tx: tx.execute(
        "UPDATE runs SET status = 'completed' WHERE id = ?", (done.run.id,)))
    again = await store.accept_message(agent_id=agent.id, key="old", content="again",
                                       start=LEASE)
    assert again.started
    assert [k for _, k, _ in await _kinds(store, again.session.id)][-3:] == [
        "message.user", "run.queued", "run.started"]
    # A queued run (accepted without start: its node has not got to it) is ahead.
    behind = await store.accept_message(agent_id=agent.id, key="waiting", content="q2",
                                        start=LEASE, find_busy=True)
    assert not behind.started and behind.busy_run == waiting.run.id
    assert (await store.get_run(behind.run.id)).status == "queued"


async def test_the_busy_run_is_the_one_under_way_else_the_first_queued(
        store: Store) -> None:
    """Many finished runs, then two queued: the first queued is the busy one; once the
    second is running, it is (whatever their queue order)."""
    agent = await _agent(store)
    for i in range(30):
        done = await store.accept_message(agent_id=agent.id, key="k", content=f"old {i}")
        await store.engine.write(lambda tx, rid=done.run.id: tx.execute(
            "UPDATE runs SET status = 'completed' WHERE id = ?", (rid,)))
    first = await store.accept_message(agent_id=agent.id, key="k", content="first")
    second = await store.accept_message(agent_id=agent.id, key="k", content="second")
    probe = await store.accept_message(agent_id=agent.id, key="k", content="p1",
                                       mode="steer")
    assert probe.steered and probe.run.id == first.run.id
    await store.engine.write(lambda tx: tx.execute(
        "UPDATE runs SET status = 'running' WHERE id = ?", (second.run.id,)))
    probe = await store.accept_message(agent_id=agent.id, key="k", content="p2",
                                       mode="steer")
    assert probe.steered and probe.run.id == second.run.id
    # (The steered run comes back whole, as stored.)
    assert probe.run == await store.get_run(second.run.id)
    assert probe.busy_run == second.run.id


async def test_concurrent_senders_to_one_idle_session_start_one_run(store: Store) -> None:
    """Twelve messages to one idle session at once (on PostgreSQL, twelve
    transactions on the pool's connections): exactly one run starts, the others queue
    behind it, and the log has one run.started."""
    agent = await _agent(store)
    await store.accept_message(agent_id=agent.id, key="k", content="make the session")
    first = await store.read_events((await store.get_session(agent.id, "k")).id)
    await store.engine.write(lambda tx: tx.execute(
        "UPDATE runs SET status = 'completed' WHERE id = ?", (first[0].run_id,)))
    got = await asyncio.wait_for(asyncio.gather(*(
        store.accept_message(agent_id=agent.id, key="k", content=f"m{i}", start=LEASE)
        for i in range(12))), 60)
    assert all(isinstance(a, Accepted) for a in got)
    assert sum(a.started for a in got) == 1
    log = await _kinds(store, got[0].session.id)
    starts = [run for _, kind, run in log if kind == "run.started"]
    assert starts == [next(a.run.id for a in got if a.started)]
    assert [s for s, _, _ in log] == list(range(1, len(log) + 1))
    statuses = sorted([(await store.get_run(a.run.id)).status for a in got])
    assert statuses == ["queued"] * 11 + ["running"]
