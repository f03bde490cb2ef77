"""A turn's second commit on SQLite moves the session's row without reading it first:
the writer knows the last seq and checkpoint its first commit left (``known``, see
``agentd.store.log.append``), and the update lands only if the row still holds them.
Whatever else moved the row since (a burst's accept, a checkpoint, a write rolled
back), the seqs stay dense and the checkpoint falls due as before; on PostgreSQL
nothing is known and the row is read as ever."""

from __future__ import annotations

from pathlib import Path

from agentd.store import Store, StoreOptions, open_store
from agentd.store.log import Lease, LeaseLost, RunUpdate, ToAccept
from agentd.store.records import NewEvent

LEASE = Lease(owner="node-1", ttl=30.0)


async def _turn_start(store: Store, agent_id: str, key: str = "s") -> tuple[str, str]:
    accepted = await store.accept_message(agent_id=agent_id, key=key, content="hi",
                                          start=LEASE)
    return accepted.session.id, accepted.run.id


async def _finish(store: Store, session_id: str, run_id: str, *,
                  checkpoint_every: float = 300.0, lease: Lease = LEASE) -> list[int]:
    records = await store.append(
        session_id, [NewEvent(kind="message.assistant", data={"text": "ok"}, run_id=run_id),
                     NewEvent(kind="run.completed", data={"output": "ok"}, run_id=run_id)],
        run_id=run_id, run=RunUpdate(status="completed", output="ok", finished=True),
        lease=lease, checkpoint_every=checkpoint_every)
    return [r.seq for r in records]


async def _dense(store: Store, agent_id: str, key: str) -> None:
    session = await store.get_session(agent_id, key)
    seqs = [e.seq for e in await store.read_events(session.id)]
    assert seqs == list(range(1, session.last_seq + 1))


async def test_seqs_stay_dense_whatever_moved_the_row(store: Store) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    session_id, run_id = await _turn_start(store, agent.id)
    assert await _finish(store, session_id, run_id) == [4, 5]
    # Moved by a write that does not go through append (a burst's set-wise accept).
    session_id, run_id = await _turn_start(store, agent.id)
    [queued] = await store.accept_messages([ToAccept(agent_id=agent.id, key="s",
                                                     content="more")])
    assert not isinstance(queued, Exception)
    assert [e.seq for e in queued.events] == [9, 10]
    assert await _finish(store, session_id, run_id) == [11, 12]
    # A commit rolled back (its lease not held): nothing of it counts.
    session_id, run_id = await _turn_start(store, agent.id, "t")
    try:
        await _finish(store, session_id, run_id, lease=Lease(owner="node-2", ttl=30.0))
    except LeaseLost:
        pass
    else:
        raise AssertionError("a lease not held was written under")
    assert await _finish(store, session_id, run_id) == [4, 5]
    # A checkpoint moves the row's last checkpoint: the next is not due at once.
    session_id, run_id = await _turn_start(store, agent.id, "u")
    seqs = await _finish(store, session_id, run_id, checkpoint_every=0.0)
    assert seqs == [4, 5, 6]  # the automatic checkpoint's event
    session_id, run_id = await _turn_start(store, agent.id, "u")
    assert await _finish(store, session_id, run_id, checkpoint_every=300.0) == [10, 11]
    for key in ("s", "t", "u"):
        await _dense(store, agent.id, key)


async def test_a_turns_second_commit_does_not_read_the_session(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'k.db'}",
                             StoreOptions(synchronous="NORMAL"))
    try:
        agent = await store.create_agent(name="a", model="scripted", instructions="",
                                         tools=[], settings={})
        session_id, run_id = await _turn_start(store, agent.id)
        seen: list[str] = []
        conn = store.engine._conn  # type: ignore[attr-defined]  # the loop's writer
        conn.set_trace_callback(seen.append)
        try:
            assert await _finish(store, session_id, run_id) == [4, 5]
        finally:
            conn.set_trace_callback(None)
        assert seen and not [s for s in seen if "FROM sessions" in s]
        await _dense(store, agent.id, "s")
    finally:
        await store.close()
