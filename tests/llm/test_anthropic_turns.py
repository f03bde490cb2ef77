"""The Messages API's turns, built a little at a time from a session's memo, are the
turns of the whole conversation, with their prompt-cache breakpoints where they pay.

Anthropic's turns must alternate, so consecutive messages of one role merge into one
turn (tool results and a message steered in after them). The provider keeps the
closed turns of the last call and groups only what follows: over random
conversations that grow, change in the middle, lose their start or are restored, the
turns sent are compared with those of a fresh grouping (a reference written here).
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.llm.memo import PrefixMemo
from agentd.llm.messages import (
    AssistantMessage,
    ModelRequest,
    Thinking,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentd.llm.providers.anthropic import _turns

Message = UserMessage | AssistantMessage | ToolResultMessage
EPHEMERAL = {"type": "ephemeral"}


def _reference(messages: list[Message]) -> list[dict[str, Any]]:
    """The turns, grouped afresh: each message's blocks, merged while the role holds."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, UserMessage):
            role, blocks = "user", ([{"type": "text", "text": m.content}] if m.content
                                    else [])
        elif isinstance(m, ToolResultMessage):
            role, blocks = "user", [{"type": "tool_result", "tool_use_id": m.call_id,
                                     "content": m.content, "is_error": m.is_error}]
        else:
            role = "assistant"
            blocks = [{"type": "thinking", "thinking": t.text, "signature": t.signature}
                      for t in m.thinking]
            blocks += [{"type": "text", "text": m.text}] if m.text else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                       for c in m.tool_calls]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _sent(request: ModelRequest) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = orjson.loads(b"[" + b"".join(_turns(request)) + b"]")
    return turns


def _unmarked(turns: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The turns without their breakpoints, and where the breakpoints were."""
    marks = []
    for t, turn in enumerate(turns):
        for b, block in enumerate(turn["content"]):
            if block.pop("cache_control", None) is not None:
                marks.append((t, b))
    return turns, marks


def _message(i: int, kind: int) -> Message:
    if kind == 0:
        return UserMessage(content=f"u{i}")
    if kind == 1:
        return UserMessage(content="")  # nothing to send: skipped
    if kind == 2:
        return AssistantMessage(text=f"a{i}")
    if kind == 3:
        return AssistantMessage(text="", tool_calls=[ToolCall(id=f"c{i}", name="t",
                                                              arguments={"n": i})],
                                thinking=[Thinking(text="hm", signature="s")])
    return ToolResultMessage(call_id=f"c{i}", name="t", content=f"r{i}")


_op = st.tuples(st.sampled_from(["append", "append", "change", "drop_head", "truncate",
                                 "repeat"]),
                st.integers(0, 50), st.integers(1, 8))


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=25),
       kinds=st.lists(st.integers(0, 4), min_size=80, max_size=80))
def test_turns_from_the_memo_are_those_of_the_whole_conversation(
        ops: list[tuple[str, int, int]], kinds: list[int]) -> None:
    memo = PrefixMemo()
    messages: list[Message] = []
    counter = 0
    previous: list[Message] = []
    for what, where, count in ops:
        if what == "append" or not messages:
            for _ in range(count):
                messages.append(_message(counter, kinds[counter % len(kinds)]))
                counter += 1
        elif what == "change":
            at = where % len(messages)
            messages[at] = _message(counter, kinds[(at + 1) % len(kinds)])
            counter += 1
        elif what == "drop_head":
            del messages[:min(count, len(messages))]
        elif what == "truncate":
            del messages[max(len(messages) - count, 0):]
        request = ModelRequest(messages=list(messages), memo=memo)
        turns, marks = _unmarked(_sent(request))
        assert turns == _reference(messages)
        fresh, fresh_marks = _unmarked(_sent(ModelRequest(messages=list(messages))))
        assert fresh == turns
        # The end of the conversation is always marked; at most one mark more.
        assert fresh_marks == marks[-1:] if turns else not marks
        assert len(marks) <= 2
        if len(marks) == 2:
            # The other is where the last call ended: it extended that call.
            assert previous and messages[:len(previous)] == previous
        previous = list(messages)


def test_a_long_step_keeps_the_previous_calls_end_marked() -> None:
    """A step that adds more blocks than the API looks back over still reads what the
    last call wrote: the last call's end keeps a breakpoint."""
    memo = PrefixMemo()
    first: list[Message] = [UserMessage(content="start"), AssistantMessage(text="ok"),
                            UserMessage(content="do it all")]
    _sent(ModelRequest(messages=first, memo=memo))
    calls = [ToolCall(id=f"c{i}", name="t", arguments={}) for i in range(30)]
    step = [*first, AssistantMessage(text="", tool_calls=calls),
            *[ToolResultMessage(call_id=c.id, name="t", content="x") for c in calls]]
    turns, marks = _unmarked(_sent(ModelRequest(messages=step, memo=memo)))
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    # "do it all" (turn 2's only block) and the last tool result (turn 4's last).
    assert marks == [(2, 0), (4, 29)]


def test_a_thinking_block_is_not_marked() -> None:
    _, marks = _unmarked(_sent(ModelRequest(messages=[
        UserMessage(content="q"),
        AssistantMessage(text="", thinking=[Thinking(text="t", signature="s")],
                         tool_calls=[ToolCall(id="c", name="t", arguments={})])])))
    assert marks == [(1, 1)]  # the tool_use after it
    _, marks = _unmarked(_sent(ModelRequest(messages=[
        UserMessage(content="q"),
        AssistantMessage(text="", thinking=[Thinking(text="t", signature="s")])])))
    assert marks == []  # nothing in the last turn may carry one
