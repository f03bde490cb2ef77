"""The native Anthropic provider and the gemini route, over real HTTP against the stub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from tests.llm._streams import assert_broken_streams_released

from agentd.assembly import Runtime
from agentd.errors import InvalidModel, ModelError
from agentd.llm.messages import (
    AssistantMessage,
    Finish,
    FinishReason,
    ModelRequest,
    StreamEvent,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCallDelta,
    ToolResultMessage,
    ToolSpec,
    Usage,
    UsageEvent,
    UserMessage,
    message_adapter,
)
from agentd.llm.model import Model
from agentd.llm.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicModel, map_error
from agentd.llm.providers.openai import OpenAIChatModel
from agentd.llm.registry import resolve_model
from agentd.testing import StubLLMServer

SPEC = "anthropic:claude-test-model"
KEY = "sk-ant-test-SECRET"


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLMServer]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    stub_server.clear()
    yield stub_server
    stub_server.clear()


def settings(stub: StubLLMServer, **more: Any) -> dict[str, Any]:
    # No SDK retries unless a test asks: a fault must surface on the first call.
    return {"base_url": stub.root_url, "max_retries": 0, **more}


@pytest.fixture
async def model(stub: StubLLMServer) -> AsyncIterator[Model]:
    instance = resolve_model(SPEC, settings=settings(stub))
    yield instance
    await instance.aclose()


def ask(text: str = "hi") -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content=text)])


async def collect(model: Model, request: ModelRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


# --- streaming ----------------------------------------------------------------------


async def test_streams_text_in_pieces_and_ends_with_usage_then_one_finish(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(text="Hello brave new world")

    events = await collect(model, ask())

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == "Hello brave new world"
    assert [e for e in events if isinstance(e, Finish)] == [Finish(reason="stop")]
    assert isinstance(events[-1], Finish)
    assert isinstance(events[-2], UsageEvent)
    assert stub.headers[-1]["authorization"] == f"Bearer {KEY}"
    assert stub.requests[-1]["stream"] is True


async def test_complete_assembles_the_message_and_echoes_without_a_script(
    model: Model,
) -> None:
    request = ModelRequest(
        messages=[UserMessage(content="first"), AssistantMessage(text="ok"),
                  UserMessage(content="second")]
    )
    message = await model.complete(request)
    assert message.text == "stub: second"
    assert message.finish_reason == "stop"
    assert message.model == SPEC
    assert message.thinking == []


async def test_a_consumer_may_stop_early_and_call_again(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(text="a long answer that nobody reads to the end")
    stream = model.stream(ask())
    async for event in stream:
        assert isinstance(event, TextDelta)
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert (await model.complete(ask("again"))).text == "stub: again"


async def test_usage_counts_cache_reads_as_cached_input(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(text="ok", usage={"input_tokens": 120, "output_tokens": 7, "cached_tokens": 64})
    message = await model.complete(ask())
    assert message.usage == Usage(input_tokens=120, output_tokens=7, cached_tokens=64)


async def test_usage_counts_cache_writes_apart(stub: StubLLMServer, model: Model) -> None:
    """Anthropic's cache_creation_input_tokens: part of the input, kept apart (the
    OpenAI Responses door reports them as input_tokens_details.cache_write_tokens)."""
    usage = {"input_tokens": 120, "output_tokens": 7, "cached_tokens": 4,
             "cache_write_tokens": 100}
    stub.enqueue(text="ok", usage=usage)
    expected = Usage(input_tokens=120, output_tokens=7, cached_tokens=4,
                     cache_write_tokens=100)
    assert (await model.complete(ask())).usage == expected
    stub.enqueue(text="ok", usage=usage)
    events = [event async for event in model.stream(ask())]
    assert [e.usage for e in events if isinstance(e, UsageEvent)][-1] == expected


@pytest.mark.parametrize(
    ("wire", "neutral"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("tool_use", "tool_calls"),
    ],
)
async def test_stop_reasons_are_mapped(
    stub: StubLLMServer, model: Model, wire: str, neutral: FinishReason
) -> None:
    stub.enqueue(text="cut", finish_reason=wire)
    events = await collect(model, ask())
    assert [e for e in events if isinstance(e, Finish)] == [Finish(reason=neutral)]


# --- tools --------------------------------------------------------------------------


async def test_tool_use_input_arrives_in_fragments_and_is_assembled(
    stub: StubLLMServer, model: Model
) -> None:
    calls = [
        {"name": "calculator", "arguments": {"expr": "6*7", "precision": 2}},
        {"name": "web_fetch", "arguments": {"url": "https://example.com/a?b=c"}},
    ]
    stub.enqueue(text="Let me check.", tool_calls=calls)
    events = await collect(model, ask())
    pieces = [e.arguments for e in events if isinstance(e, ToolCallDelta) and e.arguments]
    assert len(pieces) > 2
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(pieces[0])

    stub.enqueue(text="Let me check.", tool_calls=calls)
    message = await model.complete(ask())
    assert message.text == "Let me check."
    assert [(c.name, c.arguments) for c in message.tool_calls] == [
        ("calculator", {"expr": "6*7", "precision": 2}),
        ("web_fetch", {"url": "https://example.com/a?b=c"}),
    ]
    assert all(c.id.startswith("toolu_") for c in message.tool_calls)
    assert message.finish_reason == "tool_calls"


async def test_a_tool_call_round_trips_as_tool_use_and_tool_result(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expr": "1+1"}},
                             {"name": "clock", "arguments": {}}])
    first = await model.complete(ask("add"))
    results = [
        ToolResultMessage(call_id=first.tool_calls[0].id, name="calculator", content="2"),
        ToolResultMessage(call_id=first.tool_calls[1].id, name="clock", content="down",
                          is_error=True),
        UserMessage(content="and now?"),  # steered in after the results: same user turn
    ]

    second = await model.complete(ModelRequest(messages=[UserMessage(content="add"), first,
                                                         *results]))

    assert second.text == "stub: and now?"  # the stub accepted the conversation
    sent = stub.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [
        {"type": "tool_use", "id": first.tool_calls[0].id, "name": "calculator",
         "input": {"expr": "1+1"}},
        {"type": "tool_use", "id": first.tool_calls[1].id, "name": "clock", "input": {}},
    ]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": first.tool_calls[0].id, "content": "2",
         "is_error": False},
        {"type": "tool_result", "tool_use_id": first.tool_calls[1].id, "content": "down",
         "is_error": True},
        # The conversation's end: the next call reads all of this one from the cache.
        {"type": "text", "text": "and now?", "cache_control": {"type": "ephemeral"}},
    ]


async def test_request_carries_system_tools_and_max_tokens(
    stub: StubLLMServer, model: Model
) -> None:
    request = ModelRequest(
        system="You are terse.",
        messages=[UserMessage(content="x")],
        tools=[ToolSpec(name="calculator", description="Evaluate arithmetic.",
                        parameters={"type": "object",
                                    "properties": {"expr": {"type": "string"}},
                                    "required": ["expr"]})],
        max_tokens=64,
    )
    await model.complete(request)
    body = stub.requests[-1]
    assert body["model"] == "claude-test-model"
    # A breakpoint of its own: instructions are cached apart from the conversation.
    assert body["system"] == [{"type": "text", "text": "You are terse.",
                               "cache_control": {"type": "ephemeral"}}]
    assert body["max_tokens"] == 64
    assert body["tools"] == [
        {"name": "calculator", "description": "Evaluate arithmetic.",
         "input_schema": {"type": "object", "properties": {"expr": {"type": "string"}},
                          "required": ["expr"]}}
    ]
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}]


async def test_max_tokens_defaults_and_settings_apply(stub: StubLLMServer, model: Model) -> None:
    await model.complete(ask())
    body = stub.requests[-1]
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert "system" not in body and "tools" not in body and "thinking" not in body

    configured = resolve_model(SPEC, settings=settings(stub, max_tokens=9000, thinking=2048))
    try:
        await configured.complete(ask())
    finally:
        await configured.aclose()
    assert stub.requests[-1]["max_tokens"] == 9000
    assert stub.requests[-1]["thinking"] == {"type": "enabled", "budget_tokens": 2048}


async def test_stub_refuses_what_the_real_api_refuses(stub: StubLLMServer, model: Model) -> None:
    orphan = ToolResultMessage(call_id="toolu_missing", name="calculator", content="2")
    with pytest.raises(ModelError) as info:
        await model.complete(ModelRequest(messages=[UserMessage(content="x"), orphan]))
    assert (info.value.code, info.value.retryable) == ("model_bad_request", False)
    assert "unexpected `tool_use_id`" in info.value.message

    client = anthropic.AsyncAnthropic(base_url=stub.root_url, api_key="x", max_retries=0)
    try:
        with pytest.raises(anthropic.BadRequestError, match="roles must alternate"):
            await client.messages.create(
                model="m", max_tokens=5,
                messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            )
        with pytest.raises(anthropic.BadRequestError, match="without `tool_result`"):
            await client.messages.create(model="m", max_tokens=5, messages=[
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
                {"role": "user", "content": "b"},
            ])
    finally:
        await client.close()
    raw = httpx2.post(f"{stub.root_url}/v1/messages",
                      json={"model": "m", "messages": [{"role": "user", "content": "a"}]})
    assert raw.status_code == 400
    assert raw.json()["type"] == "error"
    assert raw.json()["error"] == {"type": "invalid_request_error",
                                   "message": "max_tokens: Field required"}


# --- thinking -----------------------------------------------------------------------


async def test_thinking_is_streamed_kept_and_sent_back_with_its_signature(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(thinking=["First, 6*7.", "Then check it."], text="Calling.",
                 tool_calls=[{"name": "calculator", "arguments": {"expr": "6*7"}}])
    events = await collect(model, ask("6*7?"))
    assert any(isinstance(e, ThinkingDelta) and e.text for e in events)
    assert any(isinstance(e, ThinkingDelta) and e.signature for e in events)
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(not isinstance(e, ThinkingDelta) for e in events[first_text:])

    stub.enqueue(thinking=["First, 6*7.", "Then check it."], text="Calling.",
                 tool_calls=[{"name": "calculator", "arguments": {"expr": "6*7"}}])
    first = await model.complete(ask("6*7?"))
    assert [t.text for t in first.thinking] == ["First, 6*7.", "Then check it."]
    assert all(t.signature.startswith("stubsig-") for t in first.thinking)
    # Through the same serialisation the log uses, and back.
    restored = message_adapter.validate_python(message_adapter.dump_python(first))
    assert restored == first

    result = ToolResultMessage(call_id=first.tool_calls[0].id, name="calculator", content="42")
    await model.complete(ModelRequest(messages=[UserMessage(content="6*7?"), restored, result]))
    sent = stub.requests[-1]["messages"][1]["content"]
    assert sent[:2] == [
        {"type": "thinking", "thinking": t.text, "signature": t.signature}
        for t in first.thinking
    ]
    assert [b["type"] for b in sent[2:]] == ["text", "tool_use"]


async def test_thinking_with_a_wrong_signature_is_refused(model: Model) -> None:
    forged = AssistantMessage(text="ok", thinking=[Thinking(text="hm", signature="forged")])
    with pytest.raises(ModelError) as info:
        await model.complete(ModelRequest(messages=[UserMessage(content="a"), forged,
                                                    UserMessage(content="b")]))
    assert info.value.code == "model_bad_request"
    assert "signature" in info.value.message


async def test_redacted_thinking_is_sent_back_as_is(stub: StubLLMServer, model: Model) -> None:
    sealed = AssistantMessage(text="ok", thinking=[Thinking(redacted="opaque==")])
    await model.complete(ModelRequest(messages=[UserMessage(content="a"), sealed,
                                                UserMessage(content="b")]))
    assert stub.requests[-1]["messages"][1]["content"][0] == {
        "type": "redacted_thinking", "data": "opaque=="}


def test_an_assistant_message_stored_before_thinking_existed_still_loads() -> None:
    old = {"kind": "assistant", "text": "hi", "tool_calls": [], "usage": None,
           "finish_reason": "stop", "model": "openai:x"}
    message = message_adapter.validate_python(old)
    assert isinstance(message, AssistantMessage)
    assert message.thinking == []


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        ("http_429", "model_rate_limited", True),
        ("http_500", "model_unavailable", True),
        ("http_503", "model_unavailable", True),
        ("http_529", "model_unavailable", True),
        ("http_401", "model_auth", False),
        ("http_403", "model_auth", False),
        ("http_400", "model_bad_request", False),
        ("http_404", "model_bad_request", False),
        ("http_413", "model_bad_request", False),
    ],
)
async def test_http_faults_map_to_model_errors(
    stub: StubLLMServer, model: Model, fault: str, code: str, retryable: bool
) -> None:
    stub.enqueue(text="never seen", fault=fault)
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    error, status = info.value, int(fault.removeprefix("http_"))
    assert (error.code, error.retryable) == (code, retryable)
    assert error.message == f"anthropic returned HTTP {status}: stub fault: HTTP {status}"
    assert error.details["status"] == status
    assert error.details["provider"] == "anthropic"


async def test_rate_limit_carries_retry_after(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(fault="http_429")
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    assert info.value.details["retry_after"] == 1.0


@pytest.mark.parametrize("fault", ["http_529", "http_429", "http_500"])
async def test_passing_faults_are_left_to_the_kernel(stub: StubLLMServer, fault: str) -> None:
    """The SDK's own retries are off whatever settings.max_retries says: the kernel
    retries (through the scheduler and the breaker), so the provider sends once and
    says the failure is worth retrying."""
    stub.enqueue(fault=fault)
    stub.enqueue(text="second try")
    once = resolve_model(SPEC, settings=settings(stub, max_retries=3))
    try:
        with pytest.raises(ModelError) as info:
            await once.complete(ask())
    finally:
        await once.aclose()
    assert info.value.retryable is True
    assert len(stub.requests) == 1


@pytest.mark.parametrize(
    ("fault", "code"),
    [("http_401", "model_auth"), ("http_400", "model_bad_request"),
     ("spend_limit", "model_rate_limited")],
)
async def test_lasting_faults_are_not_retried(stub: StubLLMServer, fault: str, code: str) -> None:
    stub.enqueue(fault=fault)
    stub.enqueue(text="must not be reached")
    retrying = resolve_model(SPEC, settings=settings(stub, max_retries=2))
    try:
        with pytest.raises(ModelError) as info:
            await retrying.complete(ask())
    finally:
        await retrying.aclose()
    assert (info.value.code, info.value.retryable) == (code, False)
    assert len(stub.requests) == 1


async def test_spend_limit_names_its_cause(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(fault="spend_limit")
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    assert info.value.details["error_code"] == "enforced_spend_limit_reached"
    assert "spend limit" in info.value.message


async def test_an_error_event_mid_stream_is_unavailable(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(text="one two three four five six", fault="error_mid_stream")
    seen: list[StreamEvent] = []
    with pytest.raises(ModelError) as info:
        async for event in model.stream(ask()):
            seen.append(event)
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert "mid-stream" in info.value.message and "Overloaded" in info.value.message
    assert not any(isinstance(e, Finish) for e in seen)


async def test_malformed_stream_event_is_bad_output(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(text="a b c d", fault="malformed_json")
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    assert (info.value.code, info.value.retryable) == ("model_bad_output", True)


async def test_connection_reset_mid_stream_is_retryable_and_never_finishes(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(text="one two three four five six seven eight", fault="reset_mid_stream")
    seen: list[StreamEvent] = []
    with pytest.raises(ModelError) as info:
        async for event in model.stream(ask()):
            seen.append(event)
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert any(isinstance(e, TextDelta) for e in seen)
    assert not any(isinstance(e, Finish) for e in seen)


async def test_stream_that_ends_without_a_stop_reason_is_not_an_answer(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(text="one two three four five six", fault="truncated_stream")
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert "ended before the model finished" in info.value.message


async def test_stalled_stream_times_out_as_unavailable(stub: StubLLMServer) -> None:
    stub.enqueue(text="slow words", fault="stall")
    slow = resolve_model(SPEC, settings=settings(stub, timeout_s=0.3))
    try:
        with pytest.raises(ModelError) as info:
            await slow.complete(ask())
    finally:
        await slow.aclose()
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert "timed out" in info.value.message


def test_error_messages_never_contain_the_api_key() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    body = {"type": "error", "error": {"type": "authentication_error",
                                       "message": f"invalid x-api-key: {KEY}"}}
    response = httpx2.Response(401, request=request, json=body)
    exc = anthropic.AuthenticationError("Error code: 401", response=response, body=body)

    error = map_error(exc, provider="anthropic", secret=KEY)

    assert KEY not in orjson.dumps(error.to_dict()).decode()
    assert error.message == "anthropic returned HTTP 401: invalid x-api-key: ***"
    assert (error.code, error.details["status"]) == ("model_auth", 401)


# --- configuration and the registry -------------------------------------------------


def test_anthropic_resolves_to_the_native_provider(stub: StubLLMServer) -> None:
    model = resolve_model("anthropic:claude-haiku-4-5", settings={"base_url": stub.root_url})
    assert isinstance(model, AnthropicModel)
    assert (model.model, model.spec) == ("claude-haiku-4-5", "anthropic:claude-haiku-4-5")


@pytest.mark.parametrize(
    ("spec", "variable"),
    [("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY"), ("gemini:gemini-2.5-flash",
                                                           "GEMINI_API_KEY")],
)
async def test_a_missing_key_fails_the_calls_and_the_log_names_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, spec: str,
    variable: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    model = resolve_model(spec)  # (saving an agent tells nothing of the variable)
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert info.value.code == "model_auth" and variable not in info.value.message
    assert variable in caplog.text


def test_gemini_uses_googles_openai_compatible_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    monkeypatch.delenv("AGENTD_GEMINI_BASE_URL", raising=False)
    model = resolve_model("gemini:gemini-2.5-flash")
    assert isinstance(model, OpenAIChatModel)
    assert model.model == "gemini-2.5-flash"
    assert model.endpoint == (
        "https://generativelanguage.googleapis.com/v1beta/openai/"
    )


async def test_gemini_base_url_and_key_variable_are_overridable(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_GEMINI_KEY", "g-secret")
    model = resolve_model("gemini:gemini-2.5-pro",
                          settings={"base_url": stub.base_url, "api_key_env": "MY_GEMINI_KEY"})
    try:
        assert (await model.complete(ask("gem"))).text == "stub: gem"
    finally:
        await model.aclose()
    assert stub.headers[-1]["authorization"] == "Bearer g-secret"
    assert stub.requests[-1]["model"] == "gemini-2.5-pro"


async def test_api_key_env_setting_names_the_key_variable(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidModel, match="AGENTD_"):  # (the daemon's own: never)
        resolve_model(SPEC, settings=settings(stub, api_key_env="AGENTD_TOKEN"))
    monkeypatch.setenv("TEST_CLAUDE_KEY", "other-key")
    model = resolve_model(SPEC, settings=settings(stub, api_key_env="TEST_CLAUDE_KEY"))
    try:
        await model.complete(ask())
    finally:
        await model.aclose()
    assert stub.headers[-1]["authorization"] == "Bearer other-key"


async def test_base_url_from_environment(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTD_ANTHROPIC_BASE_URL", stub.root_url)
    model = resolve_model(SPEC)
    try:
        assert (await model.complete(ask("env"))).text == "stub: env"
    finally:
        await model.aclose()


@pytest.mark.parametrize(
    "bad",
    [
        {"api_key": "sk-oops"},
        {"max_tokens": 0},
        {"timeout_s": -1},
        {"max_retries": -1},
        {"thinking": 100},
        {"thinking": True},
        {"thinking": "lots"},
        {"thinking": 8000, "max_tokens": 4096},
        {"base_url": ""},
    ],
)
def test_bad_settings_are_invalid_model(stub: StubLLMServer, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidModel):
        resolve_model(SPEC, settings={**settings(stub), **bad})


def test_adaptive_thinking_setting(stub: StubLLMServer) -> None:
    model = resolve_model(SPEC, settings=settings(stub, thinking="adaptive"))
    assert isinstance(model, AnthropicModel)
    assert model.thinking == {"type": "adaptive"}


# --- the stub speaks the wire format the real SDK expects ---------------------------


async def test_stub_non_streaming_message_parses_with_the_sdk(stub: StubLLMServer) -> None:
    stub.enqueue(
        thinking="hmm", text="calling",
        tool_calls=[{"name": "calculator", "arguments": {"expr": "2+2"}}],
        usage={"input_tokens": 9, "output_tokens": 4, "cached_tokens": 3},
    )
    client = anthropic.AsyncAnthropic(base_url=stub.root_url, api_key="x", max_retries=0)
    try:
        message = await client.messages.create(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "go"}]
        )
    finally:
        await client.close()
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool = message.content
    assert thinking.type == "thinking" and thinking.thinking == "hmm" and thinking.signature
    assert text.type == "text" and text.text == "calling"
    assert tool.type == "tool_use" and tool.input == {"expr": "2+2"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (6, 3)
    assert message.usage.output_tokens == 4


async def test_stub_stream_follows_the_real_event_sequence(stub: StubLLMServer) -> None:
    stub.enqueue(thinking="hmm", text="a b", tool_calls=[{"name": "t", "arguments": {"k": 1}}])
    client = anthropic.AsyncAnthropic(base_url=stub.root_url, api_key="x", max_retries=0)
    try:
        stream = await client.messages.create(
            model="claude-x", max_tokens=100, stream=True,
            messages=[{"role": "user", "content": "go"}],
        )
        events = [event async for event in stream]
    finally:
        await client.close()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    deltas = {e.delta.type for e in events if e.type == "content_block_delta"}
    assert deltas == {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"}
    assert kinds.count("content_block_stop") == 3


# --- through the runtime ------------------------------------------------------------


async def test_runtime_runs_an_anthropic_agent_with_a_tool_end_to_end(
    stub: StubLLMServer, runtime: Runtime
) -> None:
    stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}])
    stub.enqueue(text="It is 42.")
    await runtime.create_agent(name="claude", model=SPEC, tools=["calculator"],
                               instructions="Be exact.", settings=settings(stub))

    sent = await runtime.send("claude", "k", "what is 6*7?")
    run = await runtime.wait(sent.run.id)

    assert (run.status, run.output) == ("completed", "It is 42.")
    second = stub.requests[-1]
    assert second["system"] == [{"type": "text", "text": "Be exact.",
                                 "cache_control": {"type": "ephemeral"}}]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    call_id = second["messages"][1]["content"][0]["id"]
    assert second["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call_id, "content": "42", "is_error": False,
         "cache_control": {"type": "ephemeral"}}]
    # The first call's end (the question) keeps a breakpoint of its own.
    assert second["messages"][0]["content"] == [
        {"type": "text", "text": "what is 6*7?", "cache_control": {"type": "ephemeral"}}]


async def test_thinking_is_logged_and_sent_back_after_a_tool_call(
    stub: StubLLMServer, runtime: Runtime
) -> None:
    """A thinking + tool-use turn is committed with its signed thinking blocks, and the
    next request replays them (the Messages API rejects a tool-use turn without them);
    they survive a fresh fold of the log too (a restart)."""
    stub.enqueue(thinking="Multiply first.",
                 tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}])
    stub.enqueue(text="It is 42.")
    await runtime.create_agent(name="thinker", model=SPEC, tools=["calculator"],
                               settings=settings(stub))
    sent = await runtime.send("thinker", "k", "what is 6*7?")
    run = await runtime.wait(sent.run.id)
    assert (run.status, run.output) == ("completed", "It is 42.")

    logged = [e for e in await runtime.read_events(sent.session.id)
              if e.kind == "message.assistant"]
    thinking = logged[0].data["thinking"]
    assert thinking[0]["text"] == "Multiply first." and thinking[0]["signature"]
    assert "thinking" not in logged[1].data

    replayed = stub.requests[-1]["messages"][1]["content"]
    assert replayed[0] == {"type": "thinking", "thinking": "Multiply first.",
                           "signature": thinking[0]["signature"]}
    assert replayed[1]["type"] == "tool_use"

    from agentd.runtime.history import SessionHistory

    folded = SessionHistory.from_log(sent.session.id,
                                     await runtime.read_events(sent.session.id))
    assistant = next(m for m in folded.messages if getattr(m, "tool_calls", None))
    assert [t.text for t in assistant.thinking] == ["Multiply first."]


async def test_a_broken_stream_is_released_at_once_not_by_the_collector(
        stub: StubLLMServer, model: Model) -> None:
    await assert_broken_streams_released(stub, model, ask())


# --- hostile events ---------------------------------------------------------------
# The provider reads each event as the JSON it was sent (the SDK builds no model of
# it), so a server at the endpoint that sends the wrong shapes must get a clear model
# error, never a crash or a wrong value passed on.


async def _serve_events(events: list[tuple[str, bytes]]) -> tuple[Any, str]:
    """A server on a real socket answering every request with these named SSE events."""
    import asyncio

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        body = b"".join(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
                        for name, data in events)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def _event(kind: str, **fields: Any) -> tuple[str, bytes]:
    return kind, orjson.dumps({"type": kind, **fields})


_START = _event("message_start", message={
    "id": "m", "type": "message", "role": "assistant", "content": [], "model": "x",
    "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 1}})
_STOP = [_event("message_delta", delta={"stop_reason": "end_turn"},
                usage={"output_tokens": 2}), _event("message_stop")]
HOSTILE_EVENTS = {
    "event not an object": [_START, ("content_block_delta", b"[1, 2]"), *_STOP],
    "index a string": [_START, _event("content_block_start", index="0",
                                      content_block={"type": "text", "text": ""}), *_STOP],
    "text a number": [_START, _event("content_block_delta", index=0,
                                     delta={"type": "text_delta", "text": 5}), *_STOP],
    "tool input a list": [_START, _event("content_block_start", index=0, content_block={
        "type": "tool_use", "id": "t", "name": "f", "input": [1]}), *_STOP],
    "partial json an object": [_START, _event("content_block_delta", index=0, delta={
        "type": "input_json_delta", "partial_json": {"a": 1}}), *_STOP],
    "stop reason a list": [_START, _event("message_delta", delta={"stop_reason": ["x"]},
                                          usage={"output_tokens": 1})],
    "usage a string": [_event("message_start", message={"usage": "lots"}), *_STOP],
    "token count negative": [_event("message_start", message={"usage": {
        "input_tokens": -4, "output_tokens": 1}}), *_STOP],
    "token count a boolean": [_START, _event("message_delta", delta={
        "stop_reason": "end_turn"}, usage={"output_tokens": True})],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_EVENTS))
async def test_an_event_of_the_wrong_shape_is_a_clear_model_error(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    server, url = await _serve_events(HOSTILE_EVENTS[case])
    model = resolve_model(SPEC, settings={"base_url": url, "max_retries": 0})
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
        assert (info.value.code, info.value.retryable) == ("model_bad_output", True)
        assert "not a Messages API event" in info.value.message
    finally:
        await model.aclose()
        server.close()
        await server.wait_closed()


async def test_odd_but_valid_events_are_read_as_the_sdk_read_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings, unknown event and block kinds, fields left out, a tool input given at
    its start, cumulative usage: what is there is read, the rest is as if absent."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    events = [
        _START,
        ("ping", b'{"type": "ping"}'),
        _event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        _event("content_block_delta", index=0, delta={"type": "text_delta", "text": "he"}),
        _event("content_block_delta", index=0, delta={"type": "citations_delta"}),
        _event("content_block_delta", index=0, delta={"type": "text_delta", "text": "llo"}),
        _event("content_block_stop", index=0),
        _event("content_block_start", index=1, content_block={"type": "server_tool_use"}),
        _event("content_block_stop", index=1),
        _event("content_block_start", index=2, content_block={
            "type": "tool_use", "id": "tu_1", "name": "f", "input": {"a": 1}}),
        _event("content_block_stop", index=2),
        _event("some_future_event", anything=[1, 2]),
        _event("message_delta", delta={"stop_reason": "tool_use"}, usage={
            "output_tokens": 9, "input_tokens": 3, "cache_read_input_tokens": 5}),
        _event("message_stop"),
    ]
    server, url = await _serve_events(events)
    model = resolve_model(SPEC, settings={"base_url": url, "max_retries": 0})
    try:
        got = await collect(model, ask())
    finally:
        await model.aclose()
        server.close()
        await server.wait_closed()
    assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "hello"
    calls = [(e.index, e.id, e.name, e.arguments) for e in got
             if isinstance(e, ToolCallDelta)]
    assert calls == [(2, "tu_1", "f", ""), (2, None, None, '{"a":1}')]
    usage = [e.usage for e in got if isinstance(e, UsageEvent)]
    assert [(u.input_tokens, u.output_tokens, u.cached_tokens) for u in usage] == [(8, 9, 5)]
    assert [e.reason for e in got if isinstance(e, Finish)] == ["tool_calls"]
