"""The OpenAI Chat Completions provider, over real HTTP against the stub LLM server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest
from tests.llm._streams import assert_broken_streams_released

from agentd.errors import InvalidModel, ModelError
from agentd.llm.messages import (
    AssistantMessage,
    Finish,
    FinishReason,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolResultMessage,
    ToolSpec,
    Usage,
    UsageEvent,
    UserMessage,
)
from agentd.llm.model import Model
from agentd.llm.providers.openai import map_error
from agentd.llm.registry import resolve_model
from agentd.testing import StubLLMServer

SPEC = "openai-compatible:stub-model"


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer) -> Iterator[StubLLMServer]:
    # One server per module (stopping uvicorn takes a few ticks); a clean slate per test.
    stub_server.clear()
    yield stub_server
    stub_server.clear()


@pytest.fixture
async def model(stub: StubLLMServer) -> AsyncIterator[Model]:
    # No SDK retries: a fault must surface on the first call.
    instance = resolve_model(SPEC, settings={"base_url": stub.base_url, "max_retries": 0})
    yield instance
    await instance.aclose()


def ask(text: str = "hi") -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content=text)])


async def collect(model: Model, request: ModelRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


# --- streaming ----------------------------------------------------------------------


async def test_streams_text_in_pieces_and_ends_with_one_finish(
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


async def test_a_consumer_may_stop_early_and_call_again(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(text="a long answer that nobody reads to the end")
    stream = model.stream(ask())
    async for event in stream:
        assert isinstance(event, TextDelta)
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert (await model.complete(ask("again"))).text == "stub: again"


async def test_empty_queue_echoes_last_user_message(model: Model) -> None:
    request = ModelRequest(
        messages=[UserMessage(content="first"), AssistantMessage(text="ok"),
                  UserMessage(content="second")]
    )
    message = await model.complete(request)
    assert message.text == "stub: second"
    assert message.finish_reason == "stop"
    assert message.model == SPEC


async def test_a_response_queued_for_a_model_goes_only_to_that_model(
        stub: StubLLMServer, model: Model) -> None:
    other = resolve_model("openai-compatible:other-model",
                          settings={"base_url": stub.base_url, "max_retries": 0})
    try:
        stub.enqueue("for the other one", model="other-model")
        stub.enqueue("shared")
        # stub-model has nothing of its own: the shared queue, then the echo.
        assert (await model.complete(ask("a"))).text == "shared"
        assert (await model.complete(ask("b"))).text == "stub: b"
        assert (await other.complete(ask("c"))).text == "for the other one"
        assert (await other.complete(ask("d"))).text == "stub: d"
    finally:
        await other.aclose()


async def test_tool_call_arguments_arrive_in_fragments_and_are_assembled(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(
        tool_calls=[
            {"name": "calculator", "arguments": {"expr": "6*7", "precision": 2}},
            {"name": "web_fetch", "arguments": {"url": "https://example.com/a?b=c"}},
        ]
    )

    events = await collect(model, ask())
    first_call = [e for e in events if isinstance(e, ToolCallDelta) and e.index == 0]
    fragments = [e.arguments for e in first_call if e.arguments]
    assert len(fragments) > 1
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(fragments[0])

    stub.enqueue(
        tool_calls=[
            {"name": "calculator", "arguments": {"expr": "6*7", "precision": 2}},
            {"name": "web_fetch", "arguments": {"url": "https://example.com/a?b=c"}},
        ]
    )
    message = await model.complete(ask())
    assert [(c.name, c.arguments) for c in message.tool_calls] == [
        ("calculator", {"expr": "6*7", "precision": 2}),
        ("web_fetch", {"url": "https://example.com/a?b=c"}),
    ]
    assert all(c.id.startswith("call_") for c in message.tool_calls)
    assert len({c.id for c in message.tool_calls}) == 2
    assert message.finish_reason == "tool_calls"
    assert message.text == ""


async def test_usage_is_mapped_including_cached_tokens(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(text="ok", usage={"input_tokens": 120, "output_tokens": 7, "cached_tokens": 64})
    message = await model.complete(ask())
    assert message.usage == Usage(input_tokens=120, output_tokens=7, cached_tokens=64)


@pytest.mark.parametrize(
    ("wire", "neutral"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
    ],
)
async def test_finish_reasons_are_mapped(
    stub: StubLLMServer, model: Model, wire: str, neutral: FinishReason
) -> None:
    stub.enqueue(text="cut", finish_reason=wire)
    events = await collect(model, ask())
    finishes = [e for e in events if isinstance(e, Finish)]
    assert finishes == [Finish(reason=neutral)]


# --- what the provider sends --------------------------------------------------------


async def test_request_body_carries_mapped_messages_and_tools(
    stub: StubLLMServer, model: Model
) -> None:
    request = ModelRequest(
        system="You are terse.",
        messages=[
            UserMessage(content="what is 6*7, and fetch x"),
            AssistantMessage(
                text="",
                tool_calls=[
                    ToolCall(id="call_a", name="calculator", arguments={"expr": "6*7"}),
                    ToolCall(id="call_b", name="fetch", arguments={}),
                ],
            ),
            ToolResultMessage(call_id="call_a", name="calculator", content="42"),
            ToolResultMessage(call_id="call_b", name="fetch", content="404", is_error=True),
            AssistantMessage(text="42; fetch failed"),
            UserMessage(content="thanks"),
        ],
        tools=[
            ToolSpec(
                name="calculator",
                description="Evaluate arithmetic.",
                parameters={"type": "object", "properties": {"expr": {"type": "string"}},
                            "required": ["expr"]},
            )
        ],
        temperature=0.25,
        max_tokens=64,
    )

    message = await model.complete(request)

    assert message.text == "stub: thanks"  # the stub accepted the conversation
    body = stub.requests[-1]
    assert body["model"] == "stub-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "what is 6*7, and fetch x"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "calculator", "arguments": '{"expr":"6*7"}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "fetch", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "42"},
        {"role": "tool", "tool_call_id": "call_b", "content": "error: 404"},
        {"role": "assistant", "content": "42; fetch failed"},
        {"role": "user", "content": "thanks"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": "Evaluate arithmetic.",
                "parameters": {"type": "object", "properties": {"expr": {"type": "string"}},
                               "required": ["expr"]},
            },
        }
    ]


async def test_a_tool_call_round_trips_through_the_wire(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expr": "1+1"}}])
    first = await model.complete(ask("add"))
    call = first.tool_calls[0]
    result = ToolResultMessage(call_id=call.id, name=call.name, content="2")

    await model.complete(ModelRequest(messages=[UserMessage(content="add"), first, result]))

    sent = stub.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert orjson.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"expr": "1+1"}
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "2"}


async def test_no_system_message_and_no_tools_when_there_are_none(
    stub: StubLLMServer, model: Model
) -> None:
    await model.complete(ask())
    body = stub.requests[-1]
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert "tools" not in body
    assert "temperature" not in body
    assert "max_tokens" not in body


async def test_settings_supply_temperature_and_max_tokens(stub: StubLLMServer) -> None:
    settings = {"base_url": stub.base_url, "temperature": 0.5, "max_tokens": 10}
    model = resolve_model(SPEC, settings=settings)
    try:
        await model.complete(ask())
        await model.complete(ModelRequest(messages=[UserMessage(content="x")], max_tokens=3))
    finally:
        await model.aclose()
    assert (stub.requests[0]["temperature"], stub.requests[0]["max_tokens"]) == (0.5, 10)
    assert stub.requests[1]["max_tokens"] == 3  # the request wins over settings


async def test_openai_provider_sends_its_key_and_max_completion_tokens(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    model = resolve_model("openai:gpt-4.1-mini", settings={"base_url": stub.base_url})
    try:
        await model.complete(ModelRequest(messages=[UserMessage(content="x")], max_tokens=5))
    finally:
        await model.aclose()
    assert stub.headers[-1]["authorization"] == "Bearer sk-test-123"
    assert stub.requests[-1]["model"] == "gpt-4.1-mini"
    assert stub.requests[-1]["max_completion_tokens"] == 5
    assert "max_tokens" not in stub.requests[-1]


async def test_keyless_provider_sends_a_placeholder_key(stub: StubLLMServer, model: Model) -> None:
    await model.complete(ask())
    assert stub.headers[-1]["authorization"] == "Bearer not-needed"


async def test_api_key_env_setting_names_the_key_variable(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"base_url": stub.base_url, "api_key_env": "TEST_STUB_KEY"}
    monkeypatch.delenv("TEST_STUB_KEY", raising=False)
    missing = resolve_model(SPEC, settings=settings)  # (saving tells nothing of it)
    try:
        with pytest.raises(ModelError) as failed:
            await missing.complete(ask())
    finally:
        await missing.aclose()
    assert failed.value.code == "model_auth" and not failed.value.retryable
    assert "TEST_STUB_KEY" not in failed.value.message and stub.requests == []

    monkeypatch.setenv("TEST_STUB_KEY", "local-secret")
    model = resolve_model(SPEC, settings=settings)
    try:
        await model.complete(ask())
    finally:
        await model.aclose()
    assert stub.headers[-1]["authorization"] == "Bearer local-secret"


async def test_the_sdk_never_retries_on_its_own(stub: StubLLMServer) -> None:
    """Retries are the kernel's: one request, whatever settings.max_retries says."""
    stub.enqueue(fault="http_500")
    stub.enqueue(text="second try")
    model = resolve_model(SPEC, settings={"base_url": stub.base_url, "max_retries": 3})
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert len(stub.requests) == 1


async def test_a_spent_quota_is_not_retried(stub: StubLLMServer) -> None:
    """OpenAI answers a spent quota with 429 ``insufficient_quota``: waiting does not
    lift it, so neither the SDK nor the run retries it."""
    stub.enqueue(fault="spend_limit")
    model = resolve_model(SPEC, settings={"base_url": stub.base_url, "max_retries": 2})
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert len(stub.requests) == 1
    error = info.value
    assert (error.code, error.retryable) == ("model_rate_limited", False)
    assert error.details["error_code"] == "insufficient_quota"


def test_a_spent_quota_without_the_header_is_not_retryable() -> None:
    """The body alone (no ``x-should-retry``) tells a spent quota; a plain rate limit
    stays retryable."""
    import httpx2

    sdk = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    spent = httpx2.Response(429, request=request, json={"error": {
        "message": "You exceeded your current quota", "type": "insufficient_quota",
        "code": "insufficient_quota"}})
    error = map_error(sdk._make_status_error_from_response(spent), provider="openai")
    assert (error.code, error.retryable) == ("model_rate_limited", False)
    assert error.details["error_code"] == "insufficient_quota"
    limited = httpx2.Response(429, request=request, json={"error": {
        "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
    error = map_error(sdk._make_status_error_from_response(limited), provider="openai")
    assert (error.code, error.retryable) == ("model_rate_limited", True)


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "retryable"),
    [
        ("http_429", "model_rate_limited", True),
        ("http_500", "model_unavailable", True),
        ("http_503", "model_unavailable", True),
        ("http_401", "model_auth", False),
        ("http_403", "model_auth", False),
        ("http_400", "model_bad_request", False),
        ("http_404", "model_bad_request", False),
        ("http_422", "model_bad_request", False),
    ],
)
async def test_http_faults_map_to_model_errors(
    stub: StubLLMServer, model: Model, fault: str, code: str, retryable: bool
) -> None:
    stub.enqueue(text="never seen", fault=fault)
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    error = info.value
    status = fault.removeprefix("http_")
    assert (error.code, error.retryable) == (code, retryable)
    assert f"HTTP {status}" in error.message
    assert f"stub fault: HTTP {status}" in error.message  # the provider's own message
    assert error.details["status"] == int(status)
    assert error.to_dict()["code"] == code


async def test_rate_limit_carries_retry_after(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(fault="http_429")
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    assert info.value.details["retry_after"] == 1.0


async def test_malformed_stream_chunk_is_a_model_error(stub: StubLLMServer, model: Model) -> None:
    stub.enqueue(text="a b c d", fault="malformed_json")
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    assert info.value.code == "model_bad_output"
    assert info.value.retryable is True
    assert "not valid JSON" in info.value.message


async def test_connection_reset_mid_stream_is_retryable_and_never_finishes(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(text="one two three four five six seven eight", fault="reset_mid_stream")
    seen: list[StreamEvent] = []
    with pytest.raises(ModelError) as info:
        async for event in model.stream(ask()):
            seen.append(event)
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert any(isinstance(e, TextDelta) for e in seen)  # it really was mid-stream
    assert not any(isinstance(e, Finish) for e in seen)


async def test_stream_that_ends_without_finishing_is_not_a_complete_answer(
    stub: StubLLMServer, model: Model
) -> None:
    stub.enqueue(text="one two three four five six", fault="truncated_stream")
    with pytest.raises(ModelError) as info:
        await model.complete(ask())
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert "ended before the model finished" in info.value.message


async def test_stalled_stream_times_out_as_unavailable(stub: StubLLMServer) -> None:
    stub.enqueue(text="slow words", fault="stall")
    settings = {"base_url": stub.base_url, "timeout_s": 0.3, "max_retries": 0}
    model = resolve_model(SPEC, settings=settings)
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)
    assert "timed out" in info.value.message


async def test_stub_rejects_orphan_tool_results_like_the_real_api(model: Model) -> None:
    orphan = ToolResultMessage(call_id="call_missing", name="calculator", content="2")
    with pytest.raises(ModelError) as info:
        await model.complete(ModelRequest(messages=[UserMessage(content="x"), orphan]))
    assert (info.value.code, info.value.retryable) == ("model_bad_request", False)
    assert "HTTP 400" in info.value.message


async def test_connection_refused_is_unavailable() -> None:
    with StubLLMServer() as server:
        url = server.base_url  # a port that was just free and is now closed again
    model = resolve_model(SPEC, settings={"base_url": url, "max_retries": 0})
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert (info.value.code, info.value.retryable) == ("model_unavailable", True)


def test_error_messages_never_contain_the_api_key() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    body = {"message": "Incorrect API key provided: sk-live-SECRET", "type": "x"}
    response = httpx2.Response(401, request=request, json={"error": body})
    exc = openai.AuthenticationError("Error code: 401", response=response, body=body)

    error = map_error(exc, provider="openai", secret="sk-live-SECRET")

    assert "sk-live-SECRET" not in error.message
    assert "sk-live-SECRET" not in orjson.dumps(error.to_dict()).decode()
    assert error.message == "openai returned HTTP 401: Incorrect API key provided: ***"


# --- configuration ------------------------------------------------------------------


async def test_a_missing_openai_key_fails_the_calls_and_the_log_names_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Saving an agent does not say whether a variable exists (any token could ask);
    its calls fail ``model_auth`` without naming it, and the operator's log does."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = resolve_model("openai:gpt-4.1-mini")
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
    assert info.value.code == "model_auth"
    assert "OPENAI_API_KEY" not in info.value.message
    assert "OPENAI_API_KEY" in caplog.text

    with pytest.raises(InvalidModel, match="AGENTD_"):
        resolve_model(SPEC, settings={"base_url": "http://127.0.0.1:9/v1",
                                      "api_key_env": "AGENTD_TOKEN"})


def test_openai_compatible_without_base_url_is_invalid_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL", raising=False)
    with pytest.raises(InvalidModel) as info:
        resolve_model(SPEC)
    assert "settings.base_url" in info.value.message
    assert "AGENTD_OPENAI_COMPATIBLE_BASE_URL" in info.value.message


def test_api_key_in_settings_is_refused(stub: StubLLMServer) -> None:
    with pytest.raises(InvalidModel, match="api_key_env"):
        resolve_model(SPEC, settings={"base_url": stub.base_url, "api_key": "sk-oops"})


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": "hot"},
        {"max_tokens": 0},
        {"max_tokens": 1.5},
        {"timeout_s": -1},
        {"max_retries": -1},
        {"max_retries": True},
        {"base_url": ""},
        {"api_key_env": ""},
    ],
)
def test_bad_settings_are_invalid_model(stub: StubLLMServer, settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidModel):
        resolve_model(SPEC, settings={"base_url": stub.base_url, **settings})


async def test_base_url_from_environment(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL", stub.base_url)
    model = resolve_model(SPEC)
    try:
        assert (await model.complete(ask("env"))).text == "stub: env"
    finally:
        await model.aclose()


async def test_settings_base_url_beats_environment(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL", "http://127.0.0.1:9/v1")
    model = resolve_model(SPEC, settings={"base_url": stub.base_url})
    try:
        assert (await model.complete(ask("settings"))).text == "stub: settings"
    finally:
        await model.aclose()


async def test_environment_base_url_beats_provider_default(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ollama's default is 127.0.0.1:11434; the variable must redirect it to the stub.
    monkeypatch.setenv("AGENTD_OLLAMA_BASE_URL", stub.base_url)
    model = resolve_model("ollama:llama3.2")
    try:
        assert (await model.complete(ask("local"))).text == "stub: local"
    finally:
        await model.aclose()
    assert stub.requests[-1]["model"] == "llama3.2"


# --- the stub speaks the wire format the real SDK expects ---------------------------


async def test_stub_non_streaming_completion_parses_with_the_sdk(stub: StubLLMServer) -> None:
    stub.enqueue(
        text="calling",
        tool_calls=[{"name": "calculator", "arguments": {"expr": "2+2"}}],
        usage={"input_tokens": 9, "output_tokens": 4, "cached_tokens": 1},
    )
    client = openai.AsyncOpenAI(base_url=stub.base_url, api_key="x", max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="stub-model", messages=[{"role": "user", "content": "go"}]
        )
    finally:
        await client.close()
    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert choice.message.content == "calling"
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "calculator"
    assert orjson.loads(calls[0].function.arguments) == {"expr": "2+2"}
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 4)


async def test_stub_stream_without_usage_option_has_no_usage_chunk(stub: StubLLMServer) -> None:
    client = openai.AsyncOpenAI(base_url=stub.base_url, api_key="x", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="stub-model", messages=[{"role": "user", "content": "go"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    finally:
        await client.close()
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "stub: go"


def test_stub_refuses_unknown_faults(stub: StubLLMServer) -> None:
    with pytest.raises(ValueError, match="reset_mid_stream"):
        stub.enqueue(fault="gremlins")


async def test_a_broken_stream_is_released_at_once_not_by_the_collector(
        stub: StubLLMServer, model: Model) -> None:
    await assert_broken_streams_released(stub, model, ask())


# --- hostile chunks ---------------------------------------------------------------
# The provider reads each chunk as the JSON it was sent (the SDK builds no model of
# it), so a compatible server that sends the wrong shapes must get a clear model
# error, never a crash or a wrong value passed on.


async def _serve_sse(chunks: list[bytes]) -> tuple[asyncio.AbstractServer, str]:
    """A server on a real socket that answers every request with these SSE events."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        body = b"".join(b"data: " + c + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


def _chunk(delta: Any = None, finish: Any = None, **fields: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "delta": {} if delta is None else delta,
                              "finish_reason": finish}
    return orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1,
                         "model": "m", "choices": [choice], **fields})


HOSTILE = {
    "chunk not an object": [b"[1, 2]"],
    "choices not a list": [orjson.dumps({"choices": {"0": {}}})],
    "content a number": [_chunk({"content": 5}, "stop")],
    "finish reason a list": [_chunk({"content": "x"}, ["stop"])],
    "tool call index a string": [_chunk({"tool_calls": [
        {"index": "0", "id": "t", "function": {"name": "f", "arguments": "{}"}}]}, "tool_calls")],
    "tool call arguments an object": [_chunk({"tool_calls": [
        {"index": 0, "id": "t", "function": {"name": "f", "arguments": {"a": 1}}}]},
        "tool_calls")],
    "usage a string": [_chunk({"content": "x"}, "stop", usage="lots")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_chunk_of_the_wrong_shape_is_a_clear_model_error(case: str) -> None:
    server, url = await _serve_sse(HOSTILE[case])
    model = resolve_model(SPEC, settings={"base_url": url, "max_retries": 0})
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
        assert (info.value.code, info.value.retryable) == ("model_bad_output", True)
        assert "not a chat completion chunk" in info.value.message
    finally:
        await model.aclose()
        server.close()
        await server.wait_closed()


async def test_odd_but_valid_chunks_are_read_as_the_sdk_read_them() -> None:
    """Fields left out, nulls, other choices, negative or boolean token counts, a
    running usage total: what is there is read, the rest is as if absent."""
    chunks = [
        orjson.dumps({"choices": []}),
        _chunk({"role": "assistant", "content": None}),
        orjson.dumps({"choices": [{"index": 1, "delta": {"content": "other choice"}}]}),
        _chunk({"content": "he"}, usage={"prompt_tokens": 3, "completion_tokens": True}),
        _chunk({"content": "llo", "refusal": None, "tool_calls": None}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "extra_content": {"g": 1},
                                "function": {"name": "f", "arguments": "{\"a\""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
               "tool_calls"),
        orjson.dumps({"choices": [], "usage": {
            "prompt_tokens": 7, "completion_tokens": -1,
            "prompt_tokens_details": {"cached_tokens": 4}}}),
    ]
    server, url = await _serve_sse(chunks)
    model = resolve_model(SPEC, settings={"base_url": url, "max_retries": 0})
    try:
        events = await collect(model, ask())
    finally:
        await model.aclose()
        server.close()
        await server.wait_closed()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello"
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(c.index, c.id, c.name, c.arguments, c.extra) for c in calls] == [
        (0, "call_1", "f", '{"a"', {"extra_content": {"g": 1}}), (0, None, None, ": 1}", None)]
    usage = [e for e in events if isinstance(e, UsageEvent)]
    assert [(u.usage.input_tokens, u.usage.output_tokens, u.usage.cached_tokens)
            for u in usage] == [(7, 0, 4)]
    assert isinstance(events[-1], Finish) and events[-1].reason == "tool_calls"
