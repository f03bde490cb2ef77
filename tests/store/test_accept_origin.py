"""What started a message (its origin) is logged with it, and writes made with it
commit or fail together with the message and its run."""

from __future__ import annotations

import pytest

from agentd.store import Store
from agentd.store._engine import Tx
from agentd.store._log import Accepted


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
