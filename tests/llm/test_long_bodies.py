"""A long session's request body, made from the session's memo, is byte for byte the
body a fresh encoding of the conversation makes (Anthropic's: but for the breakpoint
where the last call ended) (agentd.llm.memo: each call encodes
only the new messages and joins what stayed the same as one string, folding in more
every 64 parts).

Each provider's body function over a conversation that grows past the fold several
times, as the runtime makes its requests: the history's messages with their
provenance, sometimes a message that is not the history's at the end (a tool call
without its result), sometimes trimmed at the start (the context's fit), and once
rewritten (a compaction: a new generation).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentd.llm.memo import PrefixMemo, trimmed
from agentd.llm.messages import (
    AssistantMessage,
    MediaPart,
    ModelRequest,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentd.llm.registry import resolve_model

Message = UserMessage | AssistantMessage | ToolResultMessage


#: A 1x1 PNG, as a tool's screenshot.
_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def _message(i: int, images: bool = False) -> Message:
    kind = i % 5
    if kind in (0, 3):
        return UserMessage(content=f"question {i}")
    if kind == 1:
        return AssistantMessage(text="", tool_calls=[ToolCall(id=f"c{i}", name="t",
                                                              arguments={"n": i})])
    if kind == 2:
        parts = [MediaPart(kind="image", blob=f"{i:064x}", media_type="image/png",
                           size=len(_PNG), width=1, height=1, data=_PNG)] if images else []
        return ToolResultMessage(call_id=f"c{i - 1}", name="t", content=f"result {i}",
                                 parts=parts)
    return AssistantMessage(text=f"answer {i}")


@pytest.fixture(params=["openai", "anthropic"])
def body_of(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    spec = ("openai:gpt-4.1-mini" if request.param == "openai"
            else "anthropic:claude-sonnet-4-5")
    model: Any = resolve_model(spec)
    return lambda r: model._body(r, None, 1024)


@pytest.mark.parametrize("system", ["", "You are terse."])
@pytest.mark.parametrize("images", [False, True])
def test_a_long_conversation_s_body_is_a_fresh_encoding_s(body_of: Any, system: str,
                                                          images: bool) -> None:
    """(With ``images``, a tool returns a screenshot now and then, from the 200th
    message to the 300th: OpenAI's body then places them in user messages, and the
    parts joined once are made again after.)"""
    memo = PrefixMemo()
    history: list[Message] = []
    for i in range(600):
        history.append(_message(i, images and 200 <= i < 300 and i % 15 == 2))
        if i == 400:
            # A compaction rewrites the start: the memo's generation moves on.
            history = [UserMessage(content="summary"), *history[320:]]
            memo.rewritten()
        messages = list(history)
        provenance: tuple[int, int, int] | None = (memo.generation, 0, len(history))
        if i % 7 == 0:
            messages.append(ToolResultMessage(call_id="late", name="t", content="none"))
        if images and 440 <= i < 470:
            # A screenshot at the end of these calls only (not the history's): while it
            # is there the parts are placed afresh, and the requests are trimmed.
            messages.append(_message(2, images=True))
        if (i % 11 == 0 or 440 <= i < 480) and len(messages) > 10:
            messages, provenance = messages[3:], trimmed(provenance, 3)
        request = ModelRequest(system=system, messages=messages, memo=memo,
                               provenance=provenance)
        got = body_of(request)
        fresh = body_of(ModelRequest(system=system, messages=messages))
        if b'"cache_control"' in got:
            # Anthropic: the memo's body also marks where the last call ended (a
            # prompt-cache breakpoint a fresh one cannot know): the same otherwise.
            assert _unmarked(got) == _unmarked(fresh), f"call {i}"
        else:
            assert got == fresh, f"call {i}"


def _unmarked(body: bytes) -> Any:
    """A Messages API body without its conversation's breakpoints."""
    data = orjson.loads(body)
    for message in data["messages"]:
        for block in message["content"]:
            block.pop("cache_control", None)
    return data


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_long_conversation_crosses_a_real_socket_whole(
        provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body of megabytes, its pieces handed to the transport as they are (aiohttp's
    ``writelines``, switched on where Python's own is that join:
    providers.settings.send_bodies_whole), reaches the server whole, in order, and
    every call of a growing conversation too."""
    import sys

    from aiohttp import http_writer

    from agentd.testing import StubLLMServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    with StubLLMServer(prompt_cache=False) as stub:
        spec, base = (("openai:gpt-4.1-mini", stub.base_url) if provider == "openai"
                      else ("anthropic:claude-sonnet-4-5", stub.root_url))
        model = resolve_model(spec, settings={"base_url": base})
        if sys.version_info < (3, 12):
            assert http_writer.SKIP_WRITELINES is False
        memo = PrefixMemo()
        history: list[Message] = []
        filler = "x" * 200
        for i in range(12_000):
            history.append(UserMessage(content=f"q{i} {filler}") if i % 2 == 0
                           else AssistantMessage(text=f"a{i} {filler}"))
        try:
            for call in range(3):
                history.append(UserMessage(content=f"turn {call}"))
                request = ModelRequest(system="s", messages=list(history), memo=memo,
                                       provenance=(memo.generation, 0, len(history)))
                answer = await model.complete(request)
                assert answer.text == f"stub: turn {call}"
                sent = [m for m in stub.requests[-1]["messages"] if m["role"] != "system"]
                assert len(sent) == len(history)
                texts = [m["content"] if isinstance(m["content"], str)
                         else m["content"][0]["text"] for m in sent]
                assert texts[0] == f"q0 {filler}" and texts[-1] == f"turn {call}"
                assert texts[11_999] == f"a11999 {filler}"
                history.append(AssistantMessage(text=answer.text))
        finally:
            await model.aclose()
