"""What started a message (its origin) is logged with it, and writes made with it
commit or fail together with the message and its run."""

from __future__ import annotations

import pytest

from agentd.store import Store
from agentd.store.engine import Tx
from agentd.store.log import Accepted


async def _agent(store: Store) -> str:
    record = await store.create_agent(name="a", model="scripted:echo", instructions="",
                                      tools=[], settings={})
    return record.id


async def test_origin_is_merged_into_the_user_message(store: Store) -> None:
    agent_id = await _agent(store)
    accepted = await store.accept_message(
        agent_id=agent_id, key="k", content="tick",
        origin={"schedule_id": "sch_1", "fire_at": 1_700_000_000.0})
    message = accepted.events[0]
    assert message.kind == "message.user"
    assert message.data == {"schedule_id": "sch_1", "fire_at": 1_700_000_000.0,
                            "content": "tick"}
    stored = await store.read_events(accepted.session.id, after=0)
    assert stored[0].data["schedule_id"] == "sch_1"


async def test_origin_cannot_replace_the_content(store: Store) -> None:
    agent_id = await _agent(store)
    with pytest.raises(ValueError):
        await store.accept_message(agent_id=agent_id, key="k", content="x",
                                   origin={"content": "other"})


async def test_a_failing_also_writes_nothing(store: Store) -> None:
    agent_id = await _agent(store)

    def refuse(tx: Tx, accepted: Accepted) -> None:
        raise RuntimeError("claim lost")

    with pytest.raises(RuntimeError):
        await store.accept_message(agent_id=agent_id, key="k", content="x", also=refuse)
    assert await store.list_sessions(agent_id) == []


async def test_also_commits_with_the_run_and_is_skipped_for_a_duplicate(
        store: Store) -> None:
    agent_id = await _agent(store)
    seen: list[str] = []

    def note(tx: Tx, accepted: Accepted) -> None:
        seen.append(accepted.run.id)
        row = tx.one("SELECT status FROM runs WHERE id = ?", (accepted.run.id,))
        assert row is not None and row[0] == "queued"

    first = await store.accept_message(agent_id=agent_id, key="k", content="x",
                                       idempotency_key="fire-1", also=note)
    again = await store.accept_message(agent_id=agent_id, key="k", content="x",
                                       idempotency_key="fire-1", also=note)
    assert again.duplicate and again.run.id == first.run.id
    assert seen == [first.run.id]


async def test_on_new_session_sees_other_agents_keys_and_refuses_atomically(
        store: Store) -> None:
    ids = {}
    for name in ("a", "b", "c"):
        ids[name] = (await store.create_agent(name=name, model="scripted:echo",
                                              instructions="", tools=[], settings={})).id
    await store.accept_message(agent_id=ids["a"], key="lg:t1", content="first")
    calls: list[list[str]] = []

    def refuse_shared(others: list[str]) -> None:
        calls.append(others)
        if others:
            raise LookupError(f"taken by {others[0]}")

    # b would create its own session of a key a has: refused, nothing written.
    with pytest.raises(LookupError, match="taken by a"):
        await store.accept_message(agent_id=ids["b"], key="lg:t1", content="mine",
                                   also=store.on_new_session(refuse_shared))
    assert await store.list_sessions(ids["b"]) == []
    # (SQLite runs a failed write again in its own savepoint: asked twice.)
    assert calls and all(others == ["a"] for others in calls)
    asked = len(calls)
    # a's own session exists: the check is not even asked.
    await store.accept_message(agent_id=ids["a"], key="lg:t1", content="again",
                               also=store.on_new_session(refuse_shared))
    assert len(calls) == asked
    # A key nobody has: asked, with no other agent, and written.
    made = await store.accept_message(agent_id=ids["c"], key="lg:t2", content="new",
                                      also=store.on_new_session(refuse_shared))
    assert calls[asked:] == [[]]
    assert made.created_session
    assert [s.key for s in await store.list_sessions(ids["c"])] == ["lg:t2"]
