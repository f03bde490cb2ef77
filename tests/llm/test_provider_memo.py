"""What a provider sends is the session's conversation as it is now, though each call
encodes only the messages the last one did not have (agentd.llm.memo).

Through the runtime, the real SDKs and the stub: a compaction that clears a tool
result in the middle of the conversation, and a restore to an earlier point, both
reach the next request; the request is the one a fresh encoding would make.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.testing import StubLLMServer

PROVIDERS = {
    "openai": ("openai-compatible:stub", "base_url"),
    "anthropic": ("anthropic:claude-test-model", "root_url"),
}


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLMServer]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    stub_server.clear()
    yield stub_server
    stub_server.clear()


def _tool_results(body: dict[str, Any]) -> list[str]:
    """The tool results' contents a request carried, in either wire format."""
    out = []
    for message in body["messages"]:
        if message["role"] == "tool":
            out.append(message["content"])
        elif isinstance(message.get("content"), list):
            out += [b["content"] for b in message["content"] if b["type"] == "tool_result"]
    return out


def _texts(body: dict[str, Any]) -> list[str]:
    out = []
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [b["text"] for b in content if b["type"] == "text"]
    return out


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_a_change_in_the_middle_reaches_the_next_request(
        stub: StubLLMServer, runtime: Runtime, provider: str) -> None:
    spec, url = PROVIDERS[provider]
    await runtime.create_agent(name="m", model=spec, tools=["calculator"], settings={
        "base_url": getattr(stub, url), "memory": {"compaction": {"auto": False}}})
    stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}])
    stub.enqueue(text="It is 42.")
    first = await runtime.wait((await runtime.send("m", "k", "what is 6*7?")).run.id)
    assert first.status == "completed", first.error
    for i in range(3):
        turn = await runtime.wait((await runtime.send("m", "k", f"and {i}?")).run.id)
        assert turn.status == "completed", turn.error
    assert _tool_results(stub.requests[-1]) == ["42"]

    # The calculator's result, in the first turn, is cleared by a compaction.
    await runtime.compact_session("m", "k", strategy="clear_tool_results", keep_turns=1)
    turn = await runtime.wait((await runtime.send("m", "k", "still there?")).run.id)
    assert turn.status == "completed", turn.error
    cleared = _tool_results(stub.requests[-1])
    assert len(cleared) == 1 and cleared[0].startswith("[tool result cleared by compaction")
    assert _texts(stub.requests[-1])[-1] == "still there?"

    # Restored to before the last two turns: the next request no longer has them.
    _, session = await runtime.get_session("m", "k")
    events = await runtime.read_events(session.id)
    point = next(e.seq for e in events if e.kind == "message.user"
                 and e.data["content"] == "and 2?") - 1
    await runtime.restore("m", "k", seq=point)
    turn = await runtime.wait((await runtime.send("m", "k", "after the restore")).run.id)
    assert turn.status == "completed", turn.error
    texts = _texts(stub.requests[-1])
    assert "still there?" not in texts and "and 2?" not in texts
    assert texts[-1] == "after the restore" and "and 1?" in texts
    assert _tool_results(stub.requests[-1]) == ["42"]  # the compaction was after it


#: About 2,500 tokens: above the prompt caches' minimums.
HANDBOOK = "Answer briefly and cite the handbook section you used. " * 180


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_a_conversation_is_read_from_the_providers_prompt_cache(
        stub: StubLLMServer, runtime: Runtime, provider: str) -> None:
    """The stub keeps each provider's prompt cache by its rules: after the first turns,
    nearly every input token of a turn is read from it (Anthropic only with the
    breakpoints agentd places), and the run's usage says so."""
    # Catalogued models: the stub's minimum cacheable lengths are per model.
    _, url = PROVIDERS[provider]
    spec = "openai:gpt-4.1-mini" if provider == "openai" else "anthropic:claude-sonnet-4-5"
    await runtime.create_agent(name="c", model=spec, instructions=HANDBOOK,
                               tools=["calculator"], settings={"base_url": getattr(stub, url)})
    shares = []
    for i in range(6):
        if i == 3:  # a step with a tool call in the middle of the session
            stub.enqueue(tool_calls=[{"name": "calculator",
                                      "arguments": {"expression": "6*7"}}])
        run = await runtime.wait((await runtime.send("c", "k", f"question {i}")).run.id)
        assert run.status == "completed", run.error
        shares.append(run.usage["cached_tokens"] / run.usage["input_tokens"])
    assert shares[0] == 0  # nothing to read yet
    assert all(share > 0.9 for share in shares[2:]), shares
    if provider == "anthropic":
        # What was read had been written: the writes are counted and priced.
        assert stub.cache_stats.cache_write_tokens > 0
