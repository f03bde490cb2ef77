"""On PostgreSQL (several nodes), a pause or a delete committed on another node is
honoured for every message accepted after it, whatever this node has heard: the
accepting transaction reads the agent's row (locked for share). Here the other node's
change is made in the store directly, so this node's view of the agent is the stale
one it would have before the change's notification arrives. Below, settings changes,
resumes and agents made again elsewhere, and runs already queued when a pause is made
elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.conftest import under_way

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import AgentNotAccepting, AgentNotFound
from agentd.runtime.runs import Message
from agentd.store import Store, open_store
from agentd.tools import tool

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


# -- settings, resumes and new agents made elsewhere (issue 33, item 5) ------------------
#
# Here the other node is a second store on the same database making its changes as a
# node does (``updated_at`` moves on, the change is announced), and this node's
# listener is stopped first: it has not heard of them, as it would not have for a
# moment after they commit.


@pytest.fixture
async def elsewhere(pg_url: str, node: Runtime) -> AsyncIterator[Store]:
    await node.follower.stop()  # (this node hears nothing from here on)
    other = await open_store(pg_url)
    try:
        yield other
    finally:
        await other.close()


def _script(text: str, delay_ms: int = 0) -> dict[str, object]:
    return {"script": [{"text": text, **({"delay_ms": delay_ms} if delay_ms else {})}]}


async def test_a_settings_change_made_elsewhere_is_used_by_the_next_message(
        node: Runtime, elsewhere: Store) -> None:
    await node.create_agent(name="a", model="scripted", settings=_script("old"))
    assert (await node.wait((await node.send("a", "k", "first")).run.id)).output == "old"
    await elsewhere.update_agent("a", {"settings": _script("new")})
    assert (await node.agents.get("a")).settings == _script("old")  # (not heard)
    sent = await node.send("a", "k", "second")
    assert (await node.wait(sent.run.id)).output == "new"
    # ... in a burst too, and the copy held here is the stored one now.
    await elsewhere.update_agent("a", {"settings": _script("newer")})
    [burst] = await node.runs.send_many([Message(name="a", key="k2", content="x")])
    assert not isinstance(burst, Exception)
    assert (await node.wait(burst.run.id)).output == "newer"
    assert (await node.agents.get("a")).settings == _script("newer")


async def test_a_priority_set_elsewhere_is_the_next_messages(node: Runtime,
                                                            elsewhere: Store) -> None:
    await node.create_agent(name="a", model="scripted")
    await node.wait((await node.send("a", "k", "first")).run.id)
    await elsewhere.update_agent("a", {"settings": {"priority": "batch"}})
    sent = await node.send("a", "k", "second")
    assert sent.run.priority == "batch"
    assert (await node.store.get_run(sent.run.id)).priority == "batch"


async def test_a_run_accepted_elsewhere_starts_with_the_settings_it_was_taken_with(
        node: Runtime, elsewhere: Store) -> None:
    """Another node accepts the message after changing the agent; this node, whose
    copy is older, starts its run (it takes over runs queued with no node on them)."""
    await node.create_agent(name="a", model="scripted", settings=_script("old"))
    await node.wait((await node.send("a", "k", "first")).run.id)
    changed = await elsewhere.update_agent("a", {"settings": _script("new")})
    accepted = await elsewhere.accept_message(agent_id=changed.id, key="k2", content="go")
    await node.leases.take_over(queued_before=node.clock.time() + 1.0)
    assert (await node.wait(accepted.run.id)).output == "new"


async def test_a_resume_made_elsewhere_is_honoured_at_once(node: Runtime,
                                                          elsewhere: Store) -> None:
    await node.create_agent(name="a", model="scripted", settings=_script("hi"))
    await node.set_state("a", "pause")
    await elsewhere.set_agent_state("a", "running")
    assert (await node.agents.get("a")).state == "paused"  # (not heard)
    sent = await node.send("a", "k", "hello")
    assert (await node.wait(sent.run.id)).output == "hi"


async def test_an_agent_made_again_elsewhere_under_its_name_gets_the_message(
        node: Runtime, elsewhere: Store) -> None:
    old = await node.create_agent(name="a", model="scripted", settings=_script("old one"))
    await node.wait((await node.send("a", "k", "first")).run.id)
    await elsewhere.delete_agent("a")
    new = await elsewhere.create_agent(name="a", model="scripted", instructions="",
                                       tools=[], settings=_script("new one"))
    sent = await node.send("a", "k", "hello")
    assert sent.agent.id == new.id != old.id
    assert (await node.wait(sent.run.id)).output == "new one"


async def test_a_run_queued_here_stays_queued_when_its_agent_is_paused_elsewhere(
        node: Runtime, elsewhere: Store) -> None:
    """A pause holds the runs already queued (docs/operations.md), on every node: the
    commit that would start one finds the agent paused as stored."""
    release = asyncio.Event()

    @tool
    async def hold() -> str:
        """Keeps its run under way until the test lets it go."""
        await release.wait()
        return "held"

    node.tools.register(hold)
    await node.create_agent(name="a", model="scripted", tools=["hold"], settings={
        "script": [{"tool_calls": [{"name": "hold", "arguments": {}}]}, {"text": "done"}]})
    first = await node.send("a", "k", "first")
    await under_way(node, first.run.id)
    second = await node.send("a", "k", "second")  # queued behind it, here
    await elsewhere.set_agent_state("a", "paused")
    release.set()
    assert (await node.wait(first.run.id)).status == "completed"
    await node.supervisor.idle()
    held = await node.store.get_run(second.run.id)
    assert (held.status, held.started_at) == ("queued", None)
    # Resumed (here, say): it starts.
    await node.set_state("a", "resume")
    assert (await node.wait(second.run.id)).status == "completed"
