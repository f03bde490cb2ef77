"""The offline ``scripted`` model: rules, settings.script, the enqueue queue, faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import agentd.testing
from agentd.errors import InvalidModel, ModelError
from agentd.llm import scripted
from agentd.llm.messages import (
    AssistantMessage,
    Finish,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentd.llm.model import Model, StreamAccumulator
from agentd.llm.registry import resolve_model
from agentd.testing import scripted_clear, scripted_enqueue


@pytest.fixture(autouse=True)
def empty_queue() -> Iterator[None]:
    scripted_clear()
    yield
    scripted_clear()


def say(*texts: str) -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content=t) for t in texts])


def history(assistant_turns: int) -> ModelRequest:
    """A session in which the model has already answered ``assistant_turns`` times."""
    messages: list[UserMessage | AssistantMessage | ToolResultMessage] = []
    for i in range(assistant_turns):
        messages += [UserMessage(content=f"q{i}"), AssistantMessage(text=f"a{i}")]
    messages.append(UserMessage(content="next"))
    return ModelRequest(messages=messages)


def scripted_model(agent: str = "", **settings: Any) -> Model:
    return resolve_model("scripted", settings=settings, agent=agent)


# --- rules ------------------------------------------------------------------------


async def test_echoes_the_last_user_message() -> None:
    message = await scripted_model().complete(say("first", "hello there"))
    assert message.text == "echo: hello there"
    assert message.tool_calls == []
    assert message.finish_reason == "stop"
    assert message.model == "scripted"
    assert message.usage is not None and message.usage.input_tokens >= 1


async def test_greets_when_there_is_nothing_to_answer() -> None:
    message = await scripted_model().complete(ModelRequest())
    assert message.text == "Hello! I am the scripted model."


async def test_slash_tool_becomes_a_tool_call() -> None:
    message = await scripted_model().complete(say('/tool calculator {"expr": "6*7"}'))
    assert message.text == ""
    assert message.tool_calls == [
        ToolCall(id="call_0", name="calculator", arguments={"expr": "6*7"})
    ]
    assert message.finish_reason == "tool_calls"


async def test_slash_tool_without_arguments_calls_with_empty_object() -> None:
    message = await scripted_model().complete(say("/tool clock"))
    assert [(c.name, c.arguments) for c in message.tool_calls] == [("clock", {})]


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("/tool calculator {oops", "I could not parse the arguments for calculator: {oops"),
        ("/tool calculator [1, 2]", "Arguments for calculator must be a JSON object."),
    ],
)
async def test_slash_tool_with_bad_arguments_explains_instead_of_calling(
    line: str, reply: str
) -> None:
    message = await scripted_model().complete(say(line))
    assert message.tool_calls == []
    assert message.text == reply


async def test_tool_results_are_summarised() -> None:
    request = ModelRequest(
        messages=[
            UserMessage(content="do both"),
            AssistantMessage(
                tool_calls=[ToolCall(id="c1", name="calculator"), ToolCall(id="c2", name="fetch")]
            ),
            ToolResultMessage(call_id="c1", name="calculator", content="42"),
            ToolResultMessage(call_id="c2", name="fetch", content="timeout", is_error=True),
        ]
    )
    message = await scripted_model().complete(request)
    assert message.text == "calculator returned: 42; fetch failed: timeout"
    assert message.finish_reason == "stop"


# --- settings.script ----------------------------------------------------------------


SCRIPT = [
    {"text": "one"},
    {"tool_calls": [{"name": "calculator", "arguments": {"expr": "1+1"}}]},
    {"text": "three"},
]


async def test_script_plays_turns_in_order_and_cycles() -> None:
    model = scripted_model(script=SCRIPT)
    replies = [await model.complete(history(n)) for n in range(5)]
    assert [r.text for r in replies] == ["one", "", "three", "one", ""]
    assert [(c.name, c.arguments) for c in replies[1].tool_calls] == [
        ("calculator", {"expr": "1+1"})
    ]
    assert replies[4].finish_reason == "tool_calls"


async def test_script_position_comes_from_the_session_not_from_the_model() -> None:
    # Two fresh model objects (say, before and after a restart) agree on the turn.
    assert (await scripted_model(script=SCRIPT).complete(history(2))).text == "three"
    assert (await scripted_model(script=SCRIPT).complete(history(2))).text == "three"


# --- the enqueue queue --------------------------------------------------------------


async def test_queue_beats_script_and_rules() -> None:
    model = scripted_model(agent="a", script=SCRIPT)
    scripted_enqueue({"text": "queued"})
    assert (await model.complete(history(0))).text == "queued"
    assert (await model.complete(history(0))).text == "one"  # queue used up


async def test_queue_for_one_agent_is_not_served_to_another() -> None:
    scripted_enqueue({"text": "for a"}, agent="a")
    assert (await scripted_model(agent="b").complete(say("hi"))).text == "echo: hi"
    assert (await scripted_model(agent="a").complete(say("hi"))).text == "for a"


async def test_agent_queue_is_served_before_the_global_queue() -> None:
    scripted_enqueue({"text": "global"})
    scripted_enqueue({"text": "mine 1"}, {"text": "mine 2"}, agent="a")
    model = scripted_model(agent="a")
    texts = [(await model.complete(say("x"))).text for _ in range(4)]
    assert texts == ["mine 1", "mine 2", "global", "echo: x"]


async def test_clear_drops_queued_turns() -> None:
    scripted_enqueue({"text": "stale"})
    scripted_clear()
    assert (await scripted_model().complete(say("fresh"))).text == "echo: fresh"


def test_testing_package_reexports_the_queue() -> None:
    assert agentd.testing.scripted_enqueue is scripted.enqueue
    assert agentd.testing.scripted_clear is scripted.clear_queue
    assert agentd.testing.__all__ == sorted(agentd.testing.__all__)
    assert set(agentd.testing.__all__) == {
        "BotCall", "CacheResult", "CacheStats", "Capacity", "FakeClock", "StubBotAPI",
        "StubLLMServer", "StubSearch", "StubStats", "scripted_clear", "scripted_enqueue"}


# --- latency and failures -----------------------------------------------------------


async def test_delay_streams_text_word_by_word() -> None:
    scripted_enqueue({"text": "one two  three", "delay_ms": 15})
    events = [e async for e in scripted_model().stream(say("x"))]
    pieces = [e.text for e in events if isinstance(e, TextDelta)]
    assert pieces == ["one ", "two  ", "three"]
    assert events[-1] == Finish(reason="stop")


async def test_without_delay_text_comes_in_one_piece() -> None:
    scripted_enqueue({"text": "one two three"})
    events = [e async for e in scripted_model().stream(say("x"))]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["one two three"]


async def test_error_turn_raises_model_error() -> None:
    scripted_enqueue({"error": "provider exploded"})
    with pytest.raises(ModelError) as info:
        await scripted_model().complete(say("x"))
    assert info.value.message == "provider exploded"
    assert info.value.code == "model_error"


async def test_error_turn_in_a_script_fails_that_call_only() -> None:
    model = scripted_model(script=[{"text": "fine"}, {"error": "second call fails"}])
    assert (await model.complete(history(0))).text == "fine"
    with pytest.raises(ModelError, match="second call fails"):
        await model.complete(history(1))


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ([], "non-empty list"),
        ("say hi", "non-empty list"),
        (["hi"], "must be an object"),
        ([{"txt": "typo"}], "unknown keys: txt"),
        ([{"delay_ms": 5}], "needs 'text', 'json', 'tool_calls' or 'error'"),
        ([{"text": "x", "json": {}}], "both 'text' and 'json'"),
        ([{"text": 5}], "'text' must be a string"),
        ([{"text": "x", "delay_ms": -1}], "'delay_ms' must be a number"),
        ([{"tool_calls": {"name": "x"}}], "'tool_calls' must be a list"),
        ([{"tool_calls": [{"arguments": {}}]}], "needs a 'name'"),
        ([{"tool_calls": [{"name": "x", "arguments": "[]"}]}], "'arguments' must be an object"),
    ],
)
def test_invalid_scripts_are_invalid_model(script: Any, reason: str) -> None:
    with pytest.raises(InvalidModel) as info:
        scripted_model(script=script)
    assert reason in info.value.message
    assert info.value.status == 422


def test_enqueue_validates_turns() -> None:
    with pytest.raises(InvalidModel, match="unknown keys"):
        scripted_enqueue({"text": "ok", "colour": "red"})


# --- answered at once (Model.ready) -------------------------------------------------


async def _streamed(model: Model, request: ModelRequest) -> AssistantMessage:
    """The message the model's stream makes (what the kernel took before ``ready``)."""
    acc = StreamAccumulator(model=model.spec)
    async for event in model.stream(request):
        acc.add(event)
    return acc.message()


@pytest.mark.parametrize("turn", [
    {"text": "plain"}, {"text": ""}, {"json": {"a": [1, "b"]}},
    {"text": "cut off", "finish_reason": "length"}, {"text": "quick", "delay_ms": 0}])
async def test_a_text_turn_is_ready_as_its_stream_would_make_it(turn: dict[str, Any]
                                                              ) -> None:
    model = scripted_model(script=[turn])
    request = history(2)
    ready = model.ready(request)
    assert ready is not None
    assert ready == await _streamed(model, request)


async def test_the_rules_answer_is_ready_as_streamed() -> None:
    model = scripted_model()
    for request in (say("hi there"), say("/system"), ModelRequest(messages=[])):
        ready = model.ready(request)
        assert ready is not None and ready == await _streamed(model, request)


@pytest.mark.parametrize("turn", [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]},
    {"error": "down"}, {"text": "slow", "delay_ms": 5}])
async def test_tool_calls_errors_and_delays_are_streamed(turn: dict[str, Any]) -> None:
    assert scripted_model(script=[turn]).ready(say("x")) is None


async def test_a_queued_turn_is_streamed_and_stays_queued() -> None:
    model = scripted_model(agent="a")
    scripted_enqueue({"text": "queued"}, agent="a")
    assert model.ready(say("x")) is None
    assert (await model.complete(say("x"))).text == "queued"
    scripted_enqueue({"text": "for all"})
    assert model.ready(say("x")) is None
    assert (await model.complete(say("x"))).text == "for all"
    assert model.ready(say("x")) is not None


async def test_a_replaced_stream_is_what_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ModelRequest] = []
    original = scripted.ScriptedModel.stream

    async def stream(self: scripted.ScriptedModel, request: ModelRequest) -> Any:
        seen.append(request)
        async for event in original(self, request):
            yield event

    monkeypatch.setattr(scripted.ScriptedModel, "stream", stream)
    assert scripted_model().ready(say("x")) is None
