"""Two runtimes (two nodes) on one PostgreSQL database: a change to an agent made on
one reaches the other's activity feed (announced in the changing transaction), each
feed gets each change once, and a change that is not committed announces nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import AgentNotAccepting, AgentNotFound, Conflict
from agentd.runtime.bus import Feed, FeedItem
from agentd.store.records import AgentChange

pytestmark = pytest.mark.postgres


@pytest.fixture
async def nodes(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime]]:
    opened = []
    for name in ("n1", "n2"):
        settings = Settings(home=tmp_path / name, demo_agent=False, shutdown_grace_s=2.0,
                            node_id=name, database_url=pg_url)
        opened.append(await Runtime.open(settings))
    try:
        await listening(*opened)
        yield opened[0], opened[1]
    finally:
        for runtime in opened:
            await runtime.close()


async def listening(*runtimes: Runtime) -> None:
    """Once each runtime hears the others' changes (their listeners connect in the
    background): each changes an agent of its own until every other has heard it."""
    feeds = [r.subscribe_activity() for r in runtimes]
    for i, runtime in enumerate(runtimes):
        await runtime.create_agent(name=f"warm-{i}")
    heard: list[set[str]] = [set() for _ in runtimes]

    async def all_heard() -> bool:
        for i, runtime in enumerate(runtimes):
            await runtime.update_agent(f"warm-{i}", {"instructions": "again"})
        for feed, got in zip(feeds, heard, strict=True):
            got.update(c[1] for c in changes(feed, warm=True))
        return all(got >= {f"warm-{j}" for j in range(len(runtimes))} for got in heard)

    await eventually(all_heard, what="each node hearing the others", interval=0.2)
    for feed in feeds:
        feed.close()


def changes(feed: Feed[FeedItem], *, warm: bool = False
            ) -> list[tuple[str, str, str, tuple[str | None, ...]]]:
    """The agent changes ``feed`` holds now (``warm``: the warm-up agents' too; a late
    one may still come after it)."""
    out = []
    while not feed.queue.empty():
        item = feed.queue.get_nowait()
        if isinstance(item, AgentChange) and (warm or not item.agent.startswith("warm-")):
            out.append((item.kind, item.agent, item.state, item.tenants))
    return out


async def test_each_nodes_changes_reach_the_other_nodes_feed_once(
        nodes: tuple[Runtime, Runtime]) -> None:
    one, two = nodes
    feeds = (one.subscribe_activity(), two.subscribe_activity())
    seen: tuple[list[tuple[str, str, str, tuple[str | None, ...]]], ...] = ([], [])

    async def both_have(count: int) -> bool:
        for feed, got in zip(feeds, seen, strict=True):
            got.extend(changes(feed))
        return all(len(got) >= count for got in seen)

    await one.create_agent(name="a", settings={"tenant": "acme"})
    await one.update_agent("a", {"settings": {"tenant": "globex"}})
    await two.lifecycle.set_state("a", "pause")
    await two.lifecycle.set_state("a", "resume")
    await eventually(lambda: both_have(4), what="four changes on both nodes")
    await two.delete_agent("a")
    await eventually(lambda: both_have(5), what="the deletion on both nodes")
    expected = [("agent.created", "a", "created", ("acme",)),
                ("agent.updated", "a", "created", ("globex", "acme")),
                ("agent.state", "a", "paused", ("globex",)),
                ("agent.state", "a", "running", ("globex",)),
                ("agent.deleted", "a", "running", ("globex",))]
    # Node one's own first (published as made), node two's as announced: the same
    # changes, each once, in the order they were committed.
    assert seen[0] == expected
    assert seen[1] == expected


async def test_a_change_not_committed_announces_nothing(
        nodes: tuple[Runtime, Runtime]) -> None:
    one, two = nodes
    # Subscribed first: the creation's announcement reaches node two whenever it does.
    feed = two.subscribe_activity()
    agent = await one.create_agent(name="a")
    await one.update_agent("a", {"instructions": "new"})
    with pytest.raises(Conflict):  # (computed from the old record: refused, rolled back)
        await one.agents.update("a", {"instructions": "stale"}, based_on=agent)
    await one.lifecycle.set_state("a", "pause")
    got: list[tuple[str, str, str, tuple[str | None, ...]]] = []

    def arrived() -> bool:
        got.extend(changes(feed))
        return len(got) >= 3

    await eventually(arrived, what="the committed changes on node two")
    assert [g[0] for g in got] == ["agent.created", "agent.updated", "agent.state"]


async def test_an_awake_agent_follows_a_change_made_on_the_other_node(
        nodes: tuple[Runtime, Runtime]) -> None:
    """Node two holds the agent awake; node one changes its settings, pauses it,
    resumes it, deletes it: node two's next use of it sees each change, not its copy."""
    one, two = nodes
    await one.create_agent(name="a", settings={"script": [{"text": "before"}]})
    first = await two.send("a", "k", "hi")
    assert (await two.wait(first.run.id)).output == "before"
    assert two.agents.is_awake("a")
    feed = two.subscribe_activity()
    got: list[tuple[str, str, str, tuple[str | None, ...]]] = []

    async def heard(count: int) -> None:
        def arrived() -> bool:
            got.extend(changes(feed))
            return len(got) >= count
        await eventually(arrived, what=f"{count} changes heard on node two")

    await one.update_agent("a", {"settings": {"script": [{"text": "after"}]}})
    await one.set_state("a", "pause")
    await heard(2)
    with pytest.raises(AgentNotAccepting, match="paused"):
        await two.send("a", "k", "refused")
    await one.set_state("a", "resume")
    await heard(3)
    second = await two.send("a", "k", "again")
    assert (await two.wait(second.run.id)).output == "after"
    await one.delete_agent("a")
    await heard(4)
    with pytest.raises(AgentNotFound):
        await two.send("a", "k", "gone")
    assert not two.agents.is_awake("a")
