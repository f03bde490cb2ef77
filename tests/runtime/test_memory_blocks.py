"""Core memory blocks through the runtime: rendered into the model's context, edited by
the agent's tools in a real run (scripted model), shared between agents."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from agentd.assembly import Runtime
from agentd.errors import NotFound
from agentd.llm.scripted import enqueue
from agentd.memory.blocks import render_blocks

TOOLS = ["memory_append", "memory_replace", "memory_rewrite"]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


async def run(rt: Runtime, agent: str, text: str = "go") -> Any:
    sent = await rt.send(agent, "k", text)
    return await rt.wait(sent.run.id)


async def tool_outputs(rt: Runtime, agent: str) -> list[tuple[str, bool]]:
    session = await rt.store.get_session((await rt.get_agent(agent)).id, "k")
    return [(e.data["output"], e.data["is_error"])
            for e in await rt.read_events(session.id) if e.kind == "tool.finished"]


async def test_blocks_rendered_and_edited_by_tools(runtime: Runtime,
                                                   systems: list[str]) -> None:
    await runtime.create_agent(name="a", instructions="Be brief.", tools=TOOLS)
    await runtime.put_block("a", "persona", value="I like tea.", description="who I am",
                            by="api:t")
    await runtime.put_block("a", "human", value="Ann", limit=100, by="api:t")
    enqueue(call("memory_append", label="human", text="lives in Oslo"),
            call("memory_replace", label="persona", old="tea", new="coffee"),
            {"text": "done"}, agent="a")
    result = await run(runtime, "a")
    assert result.status == "completed" and result.output == "done"
    assert len(systems) == 3
    assert systems[0].startswith("Be brief.\n\n<memory_blocks>")
    assert '<persona description="who I am" chars="11/5000">\nI like tea.\n</persona>' \
        in systems[0]
    assert systems[0].index("<persona") < systems[0].index("<human")  # position order
    # The step after each tool call sees the new value.
    assert "Ann\nlives in Oslo" in systems[1] and "I like tea." in systems[1]
    assert "I like coffee." in systems[2]
    history = await runtime.block_history("a", "persona")
    assert [(v.version, v.value) for v in history] == [(1, "I like tea."),
                                                       (2, "I like coffee.")]
    assert history[1].changed_by == f"run:{result.id}" and history[1].run_id == result.id
    # Memory tools change no files: the workspace is not snapshotted for them.
    session = await runtime.store.get_session((await runtime.get_agent("a")).id, "k")
    kinds = {e.kind for e in await runtime.read_events(session.id)}
    assert "tool.finished" in kinds and "workspace.snapshot" not in kinds


async def test_tool_refusals_the_model_can_act_on(runtime: Runtime,
                                                  systems: list[str]) -> None:
    await runtime.create_agent(name="a", tools=TOOLS)
    await runtime.put_block("a", "notes", value="a b a", limit=10, by="api:t")
    await runtime.put_block("a", "rules", value="be kind", read_only=True, by="api:t")
    enqueue(call("memory_append", label="notes", text="0123456789"),
            call("memory_replace", label="notes", old="a", new="x"),
            call("memory_replace", label="notes", old="zzz", new="x"),
            call("memory_rewrite", label="rules", value="be rude"),
            call("memory_rewrite", label="nope", value="x"),
            {"text": "ok"}, agent="a")
    assert (await run(runtime, "a")).status == "completed"
    outputs = await tool_outputs(runtime, "a")
    assert all(is_error for _, is_error in outputs)
    texts = [o for o, _ in outputs]
    assert "limited to 10 characters" in texts[0] and "has 5 now" in texts[0]
    assert "occurs 2 times" in texts[1]
    assert "does not occur" in texts[2]
    assert "read-only" in texts[3]
    assert "no memory block 'nope'" in texts[4] and "notes, rules" in texts[4]
    blocks = {b.label: (b.value, b.version) for b in await runtime.list_blocks("a")}
    assert blocks == {"notes": ("a b a", 1), "rules": ("be kind", 1)}


async def test_shared_block_seen_by_both(runtime: Runtime, systems: list[str]) -> None:
    await runtime.create_agent(name="a", tools=TOOLS)
    await runtime.create_agent(name="b")
    await runtime.put_block("a", "team", value="plan: v1", by="api:t")
    await runtime.attach_block("a", "team", "b")
    enqueue(call("memory_rewrite", label="team", value="plan: v2"), {"text": "ok"},
            agent="a")
    await run(runtime, "a")
    await run(runtime, "b", "hi")
    assert "plan: v2" in systems[-1]
    await runtime.delete_agent("a")
    assert (await runtime.get_block("b", "team")).value == "plan: v2"
    with pytest.raises(NotFound):
        await runtime.get_block("b", "other")


async def test_no_blocks_no_section(runtime: Runtime, systems: list[str]) -> None:
    await runtime.create_agent(name="a", instructions="Hi.")
    await run(runtime, "a")
    assert systems == ["Hi."]
    assert render_blocks("", []) == ""


def test_render_escapes_description() -> None:
    from agentd.store.blocks import BlockRecord

    b = BlockRecord(id="x", label="p", description='say "hi" <b>', value="v", limit=9,
                    read_only=True, version=1, created_at=0, updated_at=0, position=0)
    text = render_blocks("", [b])
    assert 'description="say &quot;hi&quot; &lt;b&gt;"' in text and 'read_only="true"' in text
    assert orjson.dumps(text)  # plain text, nothing odd


async def test_a_run_sees_blocks_changed_since_the_last_run(runtime: Runtime,
                                                           systems: list[str]) -> None:
    """What a run read of the blocks is not kept past a write (API, tool of another
    agent sharing the block, restore)."""
    await runtime.create_agent(name="a", tools=TOOLS)
    await runtime.create_agent(name="b")
    await runtime.put_block("a", "team", value="plan: v1", by="api:t")
    await runtime.attach_block("a", "team", "b")
    await run(runtime, "b", "hi")
    assert "plan: v1" in systems[-1]
    enqueue(call("memory_rewrite", label="team", value="plan: v2"), {"text": "ok"},
            agent="a")
    await run(runtime, "a")
    await run(runtime, "b", "hi")
    assert "plan: v2" in systems[-1]
    await runtime.put_block("b", "team", value="plan: v3", by="api:t")
    await run(runtime, "b", "hi")
    assert "plan: v3" in systems[-1]
    await runtime.restore_block("b", "team", 1, by="api:t")
    await run(runtime, "b", "hi")
    assert "plan: v1" in systems[-1] and "plan: v3" not in systems[-1]


async def test_runs_that_start_together_read_the_blocks_once(runtime: Runtime) -> None:
    """Twenty runs of one agent starting at once share one read of its blocks; a
    change made while a read is under way is not hidden by that read."""
    await runtime.create_agent(name="a")
    await runtime.put_block("a", "persona", value="one", by="api:t")
    agent = await runtime.get_agent("a")
    reads: list[str] = []
    real = runtime.store.list_blocks

    async def counted(agent_id: str) -> Any:
        reads.append(agent_id)
        return await real(agent_id)

    runtime.store.list_blocks = counted  # type: ignore[method-assign]
    texts = await asyncio.gather(*(runtime.memory.instructions(agent.id, "base")
                                   for _ in range(20)))
    assert all("one" in t for t in texts)
    if not runtime.memory.exclusive:
        # A shared store (other nodes write blocks too): every run reads them.
        assert reads == [agent.id] * 20
        return
    assert reads == [agent.id]
    # Kept: the next run reads nothing.
    assert "one" in await runtime.memory.instructions(agent.id, "base")
    assert len(reads) == 1
    # A read under way when the block changes: its waiters get what it read, but it
    # is not kept; the next run reads the new value.
    gate, read = asyncio.Event(), asyncio.Event()

    async def slow(agent_id: str) -> Any:
        got = await real(agent_id)
        read.set()
        await gate.wait()
        return got

    runtime.memory.changed()
    runtime.store.list_blocks = slow  # type: ignore[method-assign]
    pending = asyncio.ensure_future(runtime.memory.instructions(agent.id, "base"))
    await read.wait()
    await runtime.put_block("a", "persona", value="two", by="api:t")
    gate.set()
    assert "one" in await pending
    runtime.store.list_blocks = counted  # type: ignore[method-assign]
    assert "two" in await runtime.memory.instructions(agent.id, "base")


async def test_a_run_of_a_new_session_starts_without_reading_the_log(
        runtime: Runtime) -> None:
    """A message that created its session hands the run its log and origin: starting
    it reads neither (and the run still sees both)."""
    await runtime.create_agent(name="a")
    reads: list[tuple[str, int]] = []
    real = runtime.store.read_events

    async def counted(session_id: str, *, after: int = 0, limit: int | None = None
                      ) -> Any:
        reads.append((session_id, after))
        return await real(session_id, after=after, limit=limit)

    runtime.store.read_events = counted  # type: ignore[method-assign]
    sent = await runtime.runs.send("a", "fresh", "hello", origin={"by": "test"})
    run = await runtime.wait(sent.run.id)
    assert run.status == "completed" and "hello" in (run.output or "")
    # No read of the log from its start (what starting the run would need). On a
    # shared store (PostgreSQL) a queued run may also be picked up by the poll for
    # other nodes' runs, which reads the log itself: only one node's store is exact.
    if runtime.exclusive:
        assert [r for r in reads if r[0] == sent.session.id and r[1] == 0] == []
