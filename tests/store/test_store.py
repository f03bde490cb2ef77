"""The store contract, run unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.errors import AgentExists, AgentNotFound, Conflict, RunNotFound, SessionNotFound
from agentd.store import NewEvent, RunUpdate, Store, open_store
from agentd.store._schema import MIGRATIONS
from agentd.testing import FakeClock


async def _agent(store: Store, name: str = "a1") -> str:
    agent = await store.create_agent(name=name, model="scripted", instructions="hi",
                                     tools=["calculator"], settings={"x": 1})
    return agent.id


async def test_migrations_are_recorded_and_idempotent(store: Store, store_url: str) -> None:
    assert await store.schema_version() == max(v for v, _, _ in MIGRATIONS)
    again = await open_store(store_url)
    try:
        assert await again.schema_version() == max(v for v, _, _ in MIGRATIONS)
    finally:
        await again.close()


async def test_agent_crud(store: Store) -> None:
    await _agent(store)
    agent = await store.get_agent("a1")
    assert (agent.model, agent.instructions, agent.tools, agent.settings, agent.state) == (
        "scripted", "hi", ["calculator"], {"x": 1}, "created")
    with pytest.raises(AgentExists):
        await _agent(store)
    updated = await store.update_agent("a1", {"instructions": "new", "settings": {"y": [1]}})
    assert updated.instructions == "new" and updated.settings == {"y": [1]}
    assert updated.updated_at >= agent.updated_at
    assert [a.name for a in await store.list_agents()] == ["a1"]
    await store.delete_agent("a1")
    with pytest.raises(AgentNotFound):
        await store.get_agent("a1")
    with pytest.raises(AgentNotFound):
        await store.delete_agent("a1")
    with pytest.raises(AgentNotFound):
        await store.update_agent("a1", {"instructions": "x"})


async def test_an_agents_updated_at_follows_its_commits_when_the_clock_steps_back(
        store: Store) -> None:
    """Each change to an agent is strictly later than the one it replaces, whatever
    the clock said: a copy of the record can tell which of two is newer. (On
    PostgreSQL two changes made at once can commit in the other order than their
    clocks were read: a new agent's first run failing while its sender marks it
    running, which left the runtime holding the older one.)"""
    clock = FakeClock(start=1_000_000.0)
    store.clock = clock
    await _agent(store)
    first = await store.update_agent("a1", {"state": "running"})
    clock.now = 999_000.0  # read earlier, committed later
    second = await store.update_agent("a1", {"state": "error"})
    assert second.updated_at > first.updated_at
    assert (await store.get_agent("a1")).updated_at == second.updated_at
    # A compare-and-set on the newest record still applies; on the older one, refused.
    third = await store.update_agent("a1", {"state": "running"}, based_on=second.updated_at)
    assert third.updated_at > second.updated_at
    with pytest.raises(Conflict):
        await store.update_agent("a1", {"state": "error"}, based_on=second.updated_at)


async def test_accept_message_writes_session_run_and_events_together(store: Store) -> None:
    agent_id = await _agent(store)
    accepted = await store.accept_message(agent_id=agent_id, key="user:1", content="hello")
    assert accepted.created_session
    assert [(e.seq, e.kind) for e in accepted.events] == [(1, "message.user"), (2, "run.queued")]
    run = await store.get_run(accepted.run.id)
    assert (run.status, run.input) == ("queued", "hello")
    session = await store.get_session(agent_id, "user:1")
    assert session.last_seq == 2
    events = await store.read_events(session.id)
    assert [e.data for e in events] == [{"content": "hello"}, {}]
    second = await store.accept_message(agent_id=agent_id, key="user:1", content="again")
    assert not second.created_session
    assert [e.seq for e in second.events] == [3, 4]


async def test_concurrent_appends_keep_seq_dense_and_unique(store: Store) -> None:
    agent_id = await _agent(store)
    results = await asyncio.gather(*[
        store.accept_message(agent_id=agent_id, key="busy", content=f"m{i}") for i in range(60)
    ])
    session_id = results[0].session.id
    events = await store.read_events(session_id)
    assert [e.seq for e in events] == list(range(1, 121))
    assert sorted(e.data["content"] for e in events if e.kind == "message.user") == sorted(
        f"m{i}" for i in range(60))
    # every run's two events are adjacent: one transaction each
    for accepted in results:
        assert accepted.events[1].seq == accepted.events[0].seq + 1


async def test_append_updates_run_in_same_transaction(store: Store) -> None:
    agent_id = await _agent(store)
    acc = await store.accept_message(agent_id=agent_id, key="k", content="x")
    records = await store.append(
        acc.session.id,
        [NewEvent(kind="run.completed", run_id=acc.run.id, data={"output": "y"})],
        run_id=acc.run.id,
        run=RunUpdate(status="completed", output="y", steps=1, usage={"input_tokens": 3},
                      started=True, finished=True),
    )
    assert records[0].seq == 3
    run = await store.get_run(acc.run.id)
    assert (run.status, run.output, run.steps, run.usage) == ("completed", "y", 1,
                                                              {"input_tokens": 3})
    assert run.started_at is not None and run.finished_at is not None
    run2, agent_name, key = await store.run_context(acc.run.id)
    assert (run2.id, agent_name, key) == (acc.run.id, "a1", "k")
    with pytest.raises(RunNotFound):
        await store.get_run("r_missing")


async def test_append_to_missing_session_changes_nothing(store: Store) -> None:
    with pytest.raises(SessionNotFound):
        await store.append("s_missing", [NewEvent(kind="x")])
    assert await store.count("events") == 0


async def test_a_failing_write_does_not_disturb_concurrent_ones(store: Store) -> None:
    agent_id = await _agent(store)
    good = [store.accept_message(agent_id=agent_id, key=f"k{i}", content="ok") for i in range(10)]
    bad = [store.create_agent(name="a1", model="scripted", instructions="", tools=[],
                              settings={}) for _ in range(3)]
    results = await asyncio.gather(*good, *bad, return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results[:10])
    assert all(isinstance(r, AgentExists) for r in results[10:])
    assert await store.count("runs") == 10
    assert await store.count("events") == 20


async def test_idempotency_key_returns_the_first_run(store: Store) -> None:
    agent_id = await _agent(store)
    first = await store.accept_message(agent_id=agent_id, key="k", content="x",
                                       idempotency_key="req-1")
    second = await store.accept_message(agent_id=agent_id, key="k", content="x",
                                        idempotency_key="req-1")
    assert second.duplicate and second.run.id == first.run.id and second.events == []
    assert await store.count("runs") == 1


async def test_delete_agent_cascades(store: Store) -> None:
    agent_id = await _agent(store)
    await store.accept_message(agent_id=agent_id, key="k", content="x")
    await store.delete_agent("a1")
    for table in ("sessions", "runs", "events"):
        assert await store.count(table) == 0


async def test_delete_session(store: Store) -> None:
    agent_id = await _agent(store)
    await store.accept_message(agent_id=agent_id, key="k1", content="x")
    await store.accept_message(agent_id=agent_id, key="k2", content="x")
    await store.delete_session(agent_id, "k1")
    assert [s.key for s in await store.list_sessions(agent_id)] == ["k2"]
    with pytest.raises(SessionNotFound):
        await store.delete_session(agent_id, "k1")
    assert await store.count("events") == 2


async def test_read_events_after_and_limit(store: Store) -> None:
    agent_id = await _agent(store)
    acc = None
    for i in range(5):
        acc = await store.accept_message(agent_id=agent_id, key="k", content=str(i))
    assert acc is not None
    page = await store.read_events(acc.session.id, after=3, limit=4)
    assert [e.seq for e in page] == [4, 5, 6, 7]
    assert await store.read_events(acc.session.id, after=10) == []
    # Backwards: the last `limit` below `before`, still oldest first.
    assert [e.seq for e in await store.read_events(acc.session.id, before=9, limit=3)
            ] == [6, 7, 8]
    assert [e.seq for e in await store.read_events(acc.session.id, after=6, before=9,
                                                   limit=5)] == [7, 8]
    assert [e.seq for e in await store.read_events(acc.session.id, before=99)
            ] == list(range(1, 11))
    assert await store.read_events(acc.session.id, before=1) == []


async def test_runs_with_status(store: Store) -> None:
    agent_id = await _agent(store)
    a = await store.accept_message(agent_id=agent_id, key="k", content="1")
    b = await store.accept_message(agent_id=agent_id, key="k", content="2")
    await store.append(a.session.id, [], run_id=a.run.id, run=RunUpdate(status="running"))
    assert [r.id for r in await store.runs_with_status(["queued"])] == [b.run.id]
    assert [r.id for r in await store.runs_with_status(["queued", "running"])] == [
        a.run.id, b.run.id]


_batches = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2),
              # (Past rows.EVENTS_PER_INSERT: appended by executemany, not one insert.)
              st.lists(st.text(max_size=20), min_size=1, max_size=11)),
    min_size=1, max_size=12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=_batches)
async def test_log_round_trips_any_append_sequence(store: Store, batches: list) -> None:
    """Whatever is appended, in whatever batches and sessions, reads back in order with
    dense seqs starting at 1 in every session."""
    name = f"p{abs(hash(str(batches))) % 10**9}"
    agent_id = await _agent(store, name)
    sessions = [(await store.accept_message(agent_id=agent_id, key=f"s{i}", content="start"))
                .session.id for i in range(3)]
    expected: dict[str, list[str]] = {s: ["start", ""] for s in sessions}
    for which, texts in batches:
        sid = sessions[which]
        await store.append(sid, [NewEvent(kind="note", data={"t": t}) for t in texts])
        expected[sid].extend(texts)
    for sid in sessions:
        events = await store.read_events(sid)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        got = [e.data.get("content", e.data.get("t", "")) for e in events]
        assert got == expected[sid]
    await store.delete_agent(name)


def test_in_memory_sqlite_is_refused_clearly() -> None:
    from agentd.errors import InvalidInput
    from agentd.store import engine_for_url

    for url in ("sqlite:///:memory:", "sqlite://"):
        with pytest.raises(InvalidInput, match="in-memory"):
            engine_for_url(url)
    with pytest.raises(InvalidInput, match="unsupported database URL"):
        engine_for_url("mysql://x")


async def test_migration_2_keeps_version_1_data(tmp_path: Path) -> None:
    """A database written by the first release gains leases, queue places and
    checkpoints without losing anything."""
    db = tmp_path / "v1.db"
    version, name, sql = MIGRATIONS[0]
    types = {"real": "REAL", "bigint": "INTEGER", "text": "TEXT", "clustered": " WITHOUT ROWID"}
    conn = sqlite3.connect(db)
    conn.executescript(sql.format(**types))
    conn.executescript(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at REAL NOT NULL);"
        f"INSERT INTO schema_migrations VALUES ({version}, '{name}', 0);"
        "INSERT INTO agents VALUES ('a1', 'old', 'scripted', '', '[]', '{}', 'running', 1, 1);"
        "INSERT INTO sessions VALUES ('s1', 'a1', 'k', 2, 1, 1);"
        "INSERT INTO runs VALUES ('r1', 's1', 'a1', 'queued', 'hi', NULL, NULL, 0, '{}', NULL,"
        " 1, NULL, NULL);"
        "INSERT INTO events VALUES ('s1', 1, 'r1', 'message.user', '{\"content\": \"hi\"}', 1);"
        "INSERT INTO events VALUES ('s1', 2, 'r1', 'run.queued', '{}', 1);")
    conn.commit()
    conn.close()
    store = await open_store(f"sqlite:///{db}")
    try:
        assert await store.schema_version() == max(v for v, _, _ in MIGRATIONS)
        run = await store.get_run("r1")
        assert (run.status, run.queued_seq, run.lease_owner) == ("queued", 2, None)
        session = await store.get_session("a1", "k")
        assert (session.last_seq, session.checkpoint_seq) == (2, 0)
        assert [e.kind for e in await store.read_events("s1")] == ["message.user",
                                                                   "run.queued"]
        assert await store.list_checkpoints("s1") == []
    finally:
        await store.close()
