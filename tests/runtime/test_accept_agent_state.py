"""On PostgreSQL (several nodes), a pause or a delete committed on another node is
honoured for every message accepted after it, whatever this node has heard: the
accepting transaction reads the agent's row (locked for share). Here the other node's
change is made in the store directly, so this node's view of the agent is the stale
one it would have before the change's notification arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import AgentNotAccepting, AgentNotFound
from agentd.runtime.runs import Message

pytestmark = pytest.mark.postgres


@pytest.fixture
async def node(pg_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(Settings(home=tmp_path / "n1", demo_agent=False,
                                          shutdown_grace_s=2.0, database_url=pg_url))
    try:
        yield runtime
    finally:
        await runtime.close()


async def _elsewhere(node: Runtime, sql: str, name: str) -> None:
    """A change another node commits (no announcement reaches this one yet)."""
    await node.store.engine.write(lambda tx: tx.execute(sql, (name,)))


async def test_a_pause_made_elsewhere_refuses_the_next_message(node: Runtime) -> None:
    await node.create_agent(name="a", model="scripted")
    await node.wait((await node.send("a", "k", "first")).run.id)
    assert (await node.agents.get("a")).state == "running"  # this node's view
    await _elsewhere(node, "UPDATE agents SET state = 'paused' WHERE name = ?", "a")
    assert (await node.agents.get("a")).state == "running"  # (not heard yet)
    with pytest.raises(AgentNotAccepting) as refused:
        await node.send("a", "k", "second")
    assert refused.value.code == "agent_paused"
    with pytest.raises(AgentNotAccepting):
        await node.send("a", "new-session", "hello")
    # Nothing of either was written: one run, and no new session.
    _, session = await node.get_session("a", "k")
    assert [e.data.get("content") for e in await node.read_events(session.id)
            if e.kind == "message.user"] == ["first"]
    assert [s.key for s in await node.list_sessions("a")] == ["k"]


async def test_a_burst_refuses_the_messages_of_an_agent_paused_elsewhere(
        node: Runtime) -> None:
    for name in ("a", "b"):
        await node.create_agent(name=name, model="scripted")
    await _elsewhere(node, "UPDATE agents SET state = 'paused' WHERE name = ?", "a")
    out = await node.runs.send_many([Message(name="a", key="k1", content="x"),
                                     Message(name="b", key="k1", content="y"),
                                     Message(name="a", key="k2", content="z"),
                                     Message(name="b", key="k2", content="w")])
    assert [type(o).__name__ for o in out] == ["AgentNotAccepting", "SendResult",
                                               "AgentNotAccepting", "SendResult"]
    assert [o.run.input for o in out if not isinstance(o, Exception)] == ["y", "w"]


async def test_a_delete_made_elsewhere_refuses_the_next_message(node: Runtime) -> None:
    await node.create_agent(name="gone", model="scripted")
    await node.agents.get("gone")
    await _elsewhere(node, "DELETE FROM agents WHERE name = ?", "gone")
    with pytest.raises(AgentNotFound):
        await node.send("gone", "k", "hello")
