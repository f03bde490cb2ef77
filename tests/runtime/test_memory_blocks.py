"""Core memory blocks through the runtime: rendered into the model's context, edited by
the agent's tools in a real run (scripted model), shared between agents."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentd.errors import NotFound
from agentd.llm.scripted import enqueue
from agentd.memory.blocks import render_blocks
from agentd.runtime import Runtime

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
    from agentd.store._blocks import BlockRecord

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
