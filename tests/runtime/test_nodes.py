"""Node liveness (agentd.runtime.nodes): a node found gone has its runs taken over at
once, not when their leases expire; a node that is alive (its lock held) is never
taken over early, nor one whose lock was free for one look only; a run taken over
from a node that was judged gone but was not is fenced by its lease there.

Two runtimes ("nodes") share one PostgreSQL schema in this process. Their own
housekeeping looks are far apart (``node_check_s = 60``): the test makes each look
itself (``nodes.check()``), and makes a node's lock free by breaking its connection.
The processes' side (SIGKILL, SIGSTOP) is tests/e2e/test_node_failover.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from tests.conftest import eventually, under_way

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import StoreError
from agentd.store import Accepted, Lease, NewEvent, RunMoved, RunUpdate, Store, open_store
from agentd.store.records import EventRecord
from agentd.testing import FakeClock
from agentd.tools import tool

GATE_SCRIPT = {"script": [{"tool_calls": [{"name": "gate", "arguments": {}}]},
                          {"text": "through the gate"}]}


class Gate:
    """An idempotent tool ``gate`` that holds its run until the test opens it, and
    counts how many times it was entered (on any node)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0

        @tool(idempotent=True)
        async def gate() -> str:
            """Waits until the test opens the gate."""
            self.entered += 1
            await self.open.wait()
            return "opened"

        self.tool = gate


@asynccontextmanager
async def _node(base: Settings, url: str, node_id: str, gate: Gate | None = None,
                **overrides: Any) -> AsyncIterator[Runtime]:
    settings = base.model_copy(update={
        "database_url": url, "node_id": node_id, "lease_ttl_s": 600.0,
        "node_check_s": 60.0, **overrides})
    rt = await Runtime.open(settings)
    if gate is not None:
        rt.tools.register(gate.tool)
    try:
        yield rt
    finally:
        await rt.close()


async def _drop(rt: Runtime, url: str) -> None:
    """Break the node's lock connection, as a dead process's breaks, and return once
    the server let the lock go: closing a connection returns before the server's
    backend has ended and released its locks (on a loaded machine, a look made at
    once could still find it held: seen in CI)."""
    lock = rt.nodes.lock
    assert lock is not None and lock.key is not None
    await lock._drop()

    async def free() -> bool:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock.key,))
            row = await cur.fetchone()
            taken = bool(row and row[0])
            if taken:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (lock.key,))
            return taken

    await eventually(free, what="the server to let the node's lock go")


async def _lease(rt: Runtime, run_id: str) -> tuple[str | None, float]:
    run = await rt.store.get_run(run_id)
    return run.lease_owner, run.lease_expires_at


async def _leave_running(store: Store, agent_id: str, owner: str) -> Accepted:
    """A run under way under ``owner``'s lease, valid for ten minutes."""
    accepted = await store.accept_message(agent_id=agent_id, key="left", content="left")
    await store.append(accepted.session.id, [NewEvent(kind="run.started",
                                                      run_id=accepted.run.id)],
                       run_id=accepted.run.id, run=RunUpdate(status="running"),
                       lease=Lease(owner=owner, ttl=600, acquire=True))
    return accepted


async def _registered(url: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT id FROM node_liveness")
        return {str(r[0]) for r in await cur.fetchall()}


@pytest.mark.postgres
async def test_a_node_found_gone_twice_is_taken_over_before_its_leases_expire(
        settings: Settings, pg_url: str) -> None:
    gate = Gate()
    async with _node(settings, pg_url, "A", gate) as a, _node(settings, pg_url, "B", gate) as b:
        assert (await a.health())["node_lock"] == "held"
        assert await _registered(pg_url) == {"A", "B"}
        await a.create_agent(name="agent", tools=["gate"], settings=GATE_SCRIPT)
        sent = await a.send("agent", "k", "go")
        await under_way(a, sent.run.id)
        await eventually(lambda: gate.entered == 1, what="A in the gate")
        executor = a.supervisor.executors()[0]

        # A is alive (its lock held): B's looks leave its run alone, however many.
        for _ in range(3):
            assert await b.nodes.check() == 0
        assert (await _lease(b, sent.run.id))[0] == "A"

        # A's lock is free (its process died; here: its connection broke, and A does
        # not look at it again within the test). One look only suspects it...
        assert a.nodes.lock is not None
        # (A's keeper would take it back within a second: on a loaded machine that
        # can fall between B's two looks. A dead process keeps nothing: stop it.)
        keeper = a.nodes._keeper
        assert keeper is not None
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await _drop(a, pg_url)
        assert (await a.health())["node_lock"] == "lost"
        assert await b.nodes.check() == 0
        owner, expires = await _lease(b, sent.run.id)
        assert owner == "A" and expires > time.time() + 500
        # ...the second ends its leases (hundreds of seconds before they would expire)
        # and B takes the run over, resuming it from its last committed step.
        assert await b.nodes.check() == 1
        assert (b.nodes.nodes_gone, b.nodes.leases_ended) == (1, 1)
        await eventually(lambda: gate.entered == 2, what="B in the gate (the idempotent "
                                                         "call run again)")
        assert await _registered(pg_url) == {"B"}
        gate.open.set()
        run = await asyncio.wait_for(b.wait(sent.run.id), 30)
        assert (run.status, run.output, run.lease_owner) == (
            "completed", "through the gate", "B")
        # A was not gone: its call returned too, but the commit of its result was
        # refused (the run's lease is B's), and A stopped driving the run.
        await eventually(lambda: executor.lost, what="A's executor finding its lease lost")
        log = [e for e in await b.read_events(sent.session.id) if e.run_id == sent.run.id]
        assert [e.kind for e in log] == [
            "message.user", "run.queued", "run.started", "message.assistant",
            "tool.started", "run.resumed", "tool.started", "tool.finished",
            "message.assistant", "run.completed"]
        assert log[5].data["previous_owner"] == "A"
        assert log[4].data["effect_id"] == log[6].data["effect_id"]


@pytest.mark.postgres
async def test_runs_a_dead_judge_let_go_are_taken_over_at_the_next_look(
        settings: Settings, pg_url: str) -> None:
    """A node that ended a gone node's leases may die before it takes the runs over:
    they are nobody's then, and the next look of any node takes them (found by
    bench/cluster.py: a run waited 11 s, for the next take-over sweep)."""
    gate = Gate()
    async with _node(settings, pg_url, "A", gate) as a, _node(settings, pg_url, "B", gate) as b:
        await a.create_agent(name="agent", tools=["gate"], settings=GATE_SCRIPT)
        sent = await a.send("agent", "k", "go")
        await eventually(lambda: gate.entered == 1, what="A in the gate")
        assert a.nodes.lock is not None
        await _drop(a, pg_url)
        # A third node looks twice, ends A's leases, and dies before it takes them.
        await b.store.dead_nodes("judge", suspects=set())
        found = await b.store.dead_nodes("judge", suspects={"A"})
        assert found.ended == {"A": 1}
        assert await _lease(b, sent.run.id) == ("A", 0)
        assert await b.nodes.check() == 1
        await eventually(lambda: gate.entered == 2, what="B in the gate")
        gate.open.set()
        run = await asyncio.wait_for(b.wait(sent.run.id), 30)
        assert (run.status, run.lease_owner) == ("completed", "B")


@pytest.mark.postgres
async def test_a_lock_free_for_one_look_only_costs_nothing(settings: Settings,
                                                           pg_url: str) -> None:
    gate = Gate()
    async with _node(settings, pg_url, "A", gate) as a, _node(settings, pg_url, "B", gate) as b:
        await a.create_agent(name="agent", tools=["gate"], settings=GATE_SCRIPT)
        sent = await a.send("agent", "k", "go")
        await eventually(lambda: gate.entered == 1, what="A in the gate")
        assert a.nodes.lock is not None
        await _drop(a, pg_url)
        assert await b.nodes.check() == 0  # suspected
        await a.nodes.lock._retake(time.time)  # A's connection is back
        assert (await a.health())["node_lock"] == "held"
        for _ in range(3):
            assert await b.nodes.check() == 0
        assert (await _lease(b, sent.run.id))[0] == "A"
        assert b.nodes.nodes_gone == 0
        gate.open.set()
        run = await asyncio.wait_for(a.wait(sent.run.id), 30)
        assert (run.status, run.lease_owner) == ("completed", "A")
        assert gate.entered == 1


@pytest.mark.postgres
async def test_a_second_node_with_the_same_id_is_refused(settings: Settings,
                                                         pg_url: str) -> None:
    async with _node(settings, pg_url, "twin"):
        with pytest.raises(StoreError, match="node id 'twin' is in use"):
            # (it waits lease_ttl_s for the lock: the previous process of a node may
            # hold it for a moment after it died)
            async with _node(settings, pg_url, "twin", lease_ttl_s=0.3):
                pass
    # Once the first has stopped, the id is free again.
    async with _node(settings, pg_url, "twin") as again:
        assert (await again.health())["node_lock"] == "held"


@pytest.mark.postgres
async def test_a_node_stopping_is_taken_over_at_once_for_what_it_could_not_park(
        settings: Settings, pg_url: str) -> None:
    """A lease still held when a node stops (a run it could not park) is ended by the
    first node to look, without waiting for it to expire; a gone node with no lease
    is forgotten."""
    async with _node(settings, pg_url, "B") as b:
        async with _node(settings, pg_url, "A") as a:
            await a.create_agent(name="agent", settings={"script": [{"text": "hi"}]})
            sent = await a.send("agent", "k", "go")
            await a.wait(sent.run.id)
            # A run left under way under A's lease, as by a run that outlived A's grace.
            left = await _leave_running(a.store, sent.agent.id, "A")
        assert await _registered(pg_url) == {"A", "B"}
        assert await b.nodes.check() == 0
        assert await b.nodes.check() == 1
        run = await asyncio.wait_for(b.wait(left.run.id), 30)
        assert (run.status, run.lease_owner) == ("completed", "B")
        assert await _registered(pg_url) == {"B"}
        async with _node(settings, pg_url, "C"):
            pass  # stopped with nothing under way
        assert await _registered(pg_url) == {"B", "C"}
        assert await b.nodes.check() == 0
        assert await _registered(pg_url) == {"B"}


@pytest.mark.postgres
async def test_an_unregistered_lease_owner_waits_for_expiry(pg_url: str) -> None:
    """A node that holds no liveness lock (an older version, node_check_s = 0) is never
    judged gone: its leases are taken over when they expire, as before."""
    store: Store = await open_store(pg_url)
    try:
        agent = await store.create_agent(name="a", model="scripted", instructions="",
                                         tools=[], settings={})
        accepted = await _leave_running(store, agent.id, "old")
        for _ in range(3):
            found = await store.dead_nodes("me", suspects={"old"})
            assert (found.free, found.ended) == (set(), {})
        # Registered with a key nobody holds: gone; ended at the second look.
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("INSERT INTO node_liveness (id, lock_key, started_at) "
                               "VALUES ('old', 4242, 0)")
        found = await store.dead_nodes("me", suspects=set())
        assert (found.free, found.ended) == ({"old"}, {})
        found = await store.dead_nodes("me", suspects={"old"})
        assert (found.free, found.ended) == ({"old"}, {"old": 1})
        assert (await store.get_run(accepted.run.id)).lease_expires_at == 0
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_node_with_node_check_0_holds_no_lock(settings: Settings,
                                                      pg_url: str) -> None:
    async with _node(settings, pg_url, "plain", node_check_s=0) as rt:
        assert (await rt.health())["node_lock"] is None
        assert "nodes" not in rt.housekeeper.jobs
        assert await _registered(pg_url) == set()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_sqlite_has_no_node_lock(runtime: Runtime) -> None:
    assert (await runtime.health())["node_lock"] is None
    assert "nodes" not in runtime.housekeeper.jobs
    found = await runtime.store.dead_nodes("me", suspects={"x"})
    assert (found.free, found.ended) == (set(), {})


@pytest.mark.postgres
async def test_a_step_committed_by_the_holder_while_its_run_is_taken_over_is_kept(
        settings: Settings, pg_url: str) -> None:
    """The node taking a run over folds its log, then takes the lease. The node that
    held it may commit a step in between, its lease already expired by the time the
    commit lands (a process stopped in the middle of a commit, stamped before the
    stop). That step must be seen, not made again: found by bench/cluster.py with
    SIGSTOPs, a boss run's steps were [1, 1, 2] and its subtasks never started."""
    script = {"script": [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"text": "forty-two"}]}
    async with _node(settings, pg_url, "B") as b:
        agent = await b.create_agent(name="agent", tools=["calculator"], settings=script)
        left = await _leave_running(b.store, agent.id, "A")
        run_id, session_id = left.run.id, left.session.id
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("UPDATE runs SET lease_expires_at = 0 WHERE id = %s",
                               (run_id,))
        # A's commit of its first step, stamped a minute ago: it lands after B read the
        # log, and renews A's lease to a time already past.
        stale: Store = await open_store(pg_url, clock=FakeClock(time.time() - 60))
        step = NewEvent(kind="message.assistant", run_id=run_id, data={
            "text": "", "tool_calls": [{"id": "call_0", "name": "calculator",
                                        "arguments": {"expression": "6*7"}}],
            "usage": {}, "finish_reason": "tool_calls", "model": "scripted", "step": 1})
        read = b.store.read_events
        held_up: list[int] = []

        async def read_then_land(session: str, **options: Any) -> list[EventRecord]:
            events = await read(session, **options)
            if session == session_id and not options and not held_up:
                held_up.append(len(events))
                await stale.append(session_id, [step], run_id=run_id,
                                   lease=Lease(owner="A", ttl=30))
            return events

        b.store.read_events = read_then_land  # type: ignore[method-assign]
        try:
            assert await b.leases.take_over() == 1
            run = await asyncio.wait_for(b.wait(run_id), 30)
        finally:
            await stale.close()
        assert held_up, "the held-up commit never landed"
        assert (run.status, run.output, run.lease_owner) == ("completed", "forty-two", "B")
        log = [e for e in await read(session_id) if e.run_id == run_id]
        assert [e.data["step"] for e in log if e.kind == "message.assistant"] == [1, 2]
        finished = [e.data for e in log if e.kind == "tool.finished"]
        assert [(f["name"], f["output"]) for f in finished] == [("calculator", "42")]
        resumed = [e.data for e in log if e.kind == "run.resumed"]
        assert resumed == [{"reason": "taken over", "previous_owner": "A", "steps": 1}]


async def test_taking_a_run_is_refused_when_it_moved_after_the_fold(store: Store) -> None:
    """``unless_run_after``: nothing written, RunMoved (a LeaseLost), when the run has
    an event after the seq its log was read up to; another run's events do not count."""
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    left = await _leave_running(store, agent.id, "A")
    other = await store.accept_message(agent_id=agent.id, key="left", content="next")
    seen = (await store.read_events(left.session.id))[-1].seq
    take = Lease(owner="B", ttl=30, acquire=True, head=False)
    await store.append(left.session.id, [], run_id=left.run.id, lease=Lease(
        owner="A", ttl=30, release=True))  # (its lease ended: B may take it)
    # Another run's event after the fold: the run itself did not move.
    await store.append(left.session.id, [NewEvent(kind="checkpoint", run_id=other.run.id)])
    await store.append(left.session.id, [NewEvent(kind="run.resumed", run_id=left.run.id)],
                       run_id=left.run.id, lease=take, unless_run_after=seen)
    assert (await store.get_run(left.run.id)).lease_owner == "B"
    # The run moved after what the next taker read: nothing of its commit is written.
    last = (await store.read_events(left.session.id))[-1].seq
    await store.append(left.session.id, [], run_id=left.run.id, lease=Lease(
        owner="B", ttl=30, release=True))
    with pytest.raises(RunMoved):
        await store.append(left.session.id, [NewEvent(kind="run.resumed",
                                                      run_id=left.run.id)],
                           run_id=left.run.id, lease=Lease(owner="C", ttl=30, acquire=True),
                           unless_run_after=last - 1)
    assert (await store.read_events(left.session.id))[-1].seq == last
    assert (await store.get_run(left.run.id)).lease_owner == "B"


@pytest.mark.postgres
async def test_the_server_gives_up_on_a_vanished_host_in_seconds(pg_url: str) -> None:
    """Every pool connection sets the server's TCP keepalives (a node that vanished
    mid-transaction would otherwise hold its row locks for the system's default, hours;
    the lock's connection sets them too). Over TCP, as the tests' server is reached."""
    store = await open_store(pg_url)
    try:
        shown = await store.engine.read(lambda tx: [
            tx.one(f"SHOW tcp_keepalives_{name}") for name in ("idle", "interval", "count")])
    finally:
        await store.close()
    assert [row[0] if row else None for row in shown] == ["5", "2", "3"]
