"""Fitting a call into the model's window: whole turns dropped, oldest first, and a cut
that holds from one call to the next while the conversation grows into it (so that
the provider's prompt cache keeps the same prefix), with the session's memo."""

from __future__ import annotations

import itertools

import pytest

from agentd.errors import ModelError
from agentd.llm.catalog import ModelInfo, estimate_parts
from agentd.llm.memo import PrefixMemo
from agentd.llm.messages import (
    AssistantMessage,
    ModelRequest,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentd.runtime._context import HEADROOM, fit

INFO = ModelInfo(spec="x:small", context_window=2_000, max_output_tokens=100, input=1.0,
                 output=1.0)
Message = UserMessage | AssistantMessage | ToolResultMessage


def _turn(i: int) -> list[Message]:
    """A turn with a tool call in it: the cut must never part a call from its result."""
    call = ToolCall(id=f"c{i}", name="lookup", arguments={"q": i})
    return [UserMessage(content=f"question {i} " + "word " * 20),
            AssistantMessage(text="", tool_calls=[call]),
            ToolResultMessage(call_id=f"c{i}", name="lookup", content="result " * 15),
            AssistantMessage(text=f"answer {i} " + "word " * 20)]


def _prompt(request: ModelRequest) -> int:
    fixed, sizes = estimate_parts(ModelRequest(system=request.system,
                                               messages=request.messages))
    return fixed + sum(sizes)


def test_without_a_memo_the_fewest_turns_are_dropped() -> None:
    messages = [m for i in range(40) for m in _turn(i)]
    request = ModelRequest(system="Be brief.", messages=messages, max_tokens=100)
    fitted, trimmed, (estimate, _) = fit(request, INFO, counts_tokens=False)
    assert trimmed is not None and trimmed["dropped_messages"] > 0
    assert isinstance(fitted.messages[0], UserMessage)
    assert estimate == _prompt(fitted) <= INFO.context_window - 100
    # One turn more would not have fitted.
    start = trimmed["dropped_messages"]
    assert _prompt(ModelRequest(system="Be brief.", messages=messages[start - 4:])) > \
        INFO.context_window - 100


def test_with_a_memo_a_cut_holds_while_the_conversation_grows_into_it() -> None:
    memo = PrefixMemo()
    budget = INFO.context_window - 100
    messages: list[Message] = []
    cuts: list[int] = []
    for i in range(120):
        messages = [*messages, *_turn(i)]
        request = ModelRequest(system="Be brief.", messages=list(messages), max_tokens=100,
                               memo=memo)
        fitted, trimmed, (estimate, _) = fit(request, INFO, counts_tokens=False)
        assert estimate == _prompt(fitted) <= budget
        assert isinstance(fitted.messages[0], UserMessage)  # whole turns only
        assert fitted.messages == messages[len(messages) - len(fitted.messages):]
        if trimmed is None:
            continue
        if cuts and trimmed["dropped_messages"] != cuts[-1]:
            # A new cut leaves room to grow into.
            assert estimate <= HEADROOM * budget
        cuts.append(trimmed["dropped_messages"])
    moves = sum(1 for a, b in itertools.pairwise(cuts) if a != b)
    # Without the memo every call past the window moves the cut; with it, a cut lasts
    # about (1 - HEADROOM) of the window's worth of turns.
    assert len(cuts) > 80 and moves < len(cuts) / 3


def test_a_held_cut_is_dropped_when_the_conversation_changed_under_it() -> None:
    memo = PrefixMemo()
    messages = [m for i in range(60) for m in _turn(i)]
    _, trimmed, _ = fit(ModelRequest(messages=list(messages), memo=memo), INFO,
                        counts_tokens=False)
    assert trimmed is not None
    # Another conversation in the same memo (a session rebuilt from its log): the
    # held cut names a message that is not there; the cut is found anew.
    other = [m for i in range(100, 130) for m in _turn(i)]
    fitted, again, (estimate, _) = fit(ModelRequest(messages=other, memo=memo), INFO,
                                       counts_tokens=False)
    assert again is not None and estimate <= INFO.context_window
    assert fitted.messages[0] in other and isinstance(fitted.messages[0], UserMessage)


def test_a_latest_turn_that_cannot_fit_is_refused() -> None:
    huge = [UserMessage(content="word " * 3_000)]
    with pytest.raises(ModelError) as error:
        fit(ModelRequest(messages=[*_turn(0), *huge], memo=PrefixMemo()), INFO,
            counts_tokens=False)
    assert error.value.code == "context_overflow"
