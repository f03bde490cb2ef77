"""The providers' wire (agentd.llm.providers._wire): what it sends is what each SDK's
own ``post()`` sends, its connections are kept between calls, a stream that does not
end after its last event costs a bounded wait, and its SSE reading follows the spec.

The server here is a raw asyncio one on a real socket that records each request as
the bytes it received (the request line, the headers, the body) and answers with the
SSE body a test gives it."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentd.errors import ModelError
from agentd.llm.messages import ModelRequest, TextDelta, UserMessage
from agentd.llm.model import Model
from agentd.llm.providers import _wire
from agentd.llm.providers._wire import DRAIN_S, SseEvent, SseTooLarge, sse_events
from agentd.llm.registry import resolve_model

OPENAI_SSE = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
              b'\n\ndata: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
              b"data: [DONE]\n\n")
ANTHROPIC_SSE = b"".join(
    b"event: " + kind + b"\ndata: " + data + b"\n\n" for kind, data in [
        (b"message_start", b'{"type":"message_start","message":{"id":"m","type":"message",'
         b'"role":"assistant","model":"c","content":[],"stop_reason":null,'
         b'"usage":{"input_tokens":3,"output_tokens":0}}}'),
        (b"content_block_start", b'{"type":"content_block_start","index":0,'
         b'"content_block":{"type":"text","text":""}}'),
        (b"ping", b'{"type":"ping"}'),
        (b"content_block_delta", b'{"type":"content_block_delta","index":0,'
         b'"delta":{"type":"text_delta","text":"hi"}}'),
        (b"content_block_stop", b'{"type":"content_block_stop","index":0}'),
        (b"message_delta", b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
         b'"usage":{"output_tokens":1}}'),
        (b"message_stop", b'{"type":"message_stop"}')])


@dataclass
class Recorder:
    """A server that keeps each request (line, headers, body) and answers its
    provider's (``kind``) SSE body chunked, the body's end in the same write (so that
    nothing here depends on when a second write arrives); ``hold``: the body's end
    (its last chunk) is not sent, as by a server that keeps a stream open after its
    last event. ``body`` replaces the answer."""

    kind: str
    hold: bool = False
    body: bytes = b""
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    #: With ``hold``: set when the body may end (the test is done with it).
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.body = self.body or (OPENAI_SSE if self.kind == "openai" else ANTHROPIC_SSE)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *rest = head.decode("latin-1").split("\r\n")
                headers = {}
                for item in rest:
                    if item:
                        name, _, value = item.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((line, headers, body))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (len(self.body), self.body)
                if self.hold:
                    writer.write(chunk)
                    await writer.drain()
                    await self.released.wait()
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(chunk + b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def recorder(request: pytest.FixtureRequest) -> AsyncIterator[Recorder]:
    kind, hold = request.param
    rec = Recorder(kind, hold=hold)
    server = await asyncio.start_server(rec.serve, "127.0.0.1", 0)
    rec.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield rec
    rec.released.set()
    server.close()


def ask() -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content="hello")], system="be brief")


#: Per provider: the model, the key's variable and value, the base URL's path, the
#: SDK's client and the path its post() takes.
SDKS: dict[str, tuple[str, str, str, str, Any, str]] = {
    "openai": ("openai:gpt-4.1-mini", "OPENAI_API_KEY", "sk-wire-test", "/v1",
               openai, "/chat/completions"),
    "anthropic": ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY", "sk-ant-wire-test",
                  "", anthropic, "/v1/messages"),
}


async def _failed_call(model: Model, *servers: asyncio.Server) -> ModelError:
    """The error a call of ``model`` fails with (the model, then ``servers``, closed)."""
    try:
        with pytest.raises(ModelError) as info:
            await model.complete(ask())
    finally:
        await model.aclose()
        for server in servers:
            server.close()
    return info.value


@pytest.mark.parametrize("recorder", [("openai", False), ("anthropic", False)],
                         indirect=True)
async def test_requests_are_what_the_sdk_sends(recorder: Recorder,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One call through the wire, then its body through the SDK's own ``post()``."""
    spec, variable, key, base, module, path = SDKS[recorder.kind]
    monkeypatch.setenv(variable, key)
    model = resolve_model(spec, settings={"base_url": recorder.url + base})
    client = (module.AsyncOpenAI if module is openai else module.AsyncAnthropic)(
        api_key=key, base_url=recorder.url + base, max_retries=0)
    try:
        text = "".join([e.text async for e in model.stream(ask())
                        if isinstance(e, TextDelta)])
        stream = await client.post(path, content=recorder.requests[0][2], cast_to=object,
                                   stream=True, stream_cls=module.AsyncStream[object])
        [_ async for _ in stream]
    finally:
        await model.aclose()
        await client.close()
    assert text == "hi"
    _same_request(recorder)


def _same_request(recorder: Recorder) -> None:
    """The wire's request (first) and the SDK's (second): the same line, body and
    headers (the SDK's telemetry of the call aside: its retry count and timeout are
    the same here, both first tries with the same limits)."""
    (line, headers, body), (sdk_line, sdk_headers, sdk_body) = recorder.requests
    assert line == sdk_line and line.startswith("POST ")
    assert body == sdk_body
    assert headers == sdk_headers


@pytest.mark.parametrize("recorder", [("openai", False), ("anthropic", False)],
                         indirect=True)
async def test_calls_keep_their_connection(recorder: Recorder,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """After its last event a stream is read to its end: the next call goes out on
    the same connection."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wire-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wire-test")
    openai_like = recorder.kind == "openai"
    model = resolve_model(
        "openai:gpt-4.1-mini" if openai_like else "anthropic:claude-sonnet-4-5",
        settings={"base_url": recorder.url + ("/v1" if openai_like else "")})
    try:
        for _ in range(5):
            assert (await model.complete(ask())).text == "hi"
    finally:
        await model.aclose()
    assert (len(recorder.requests), recorder.connections) == (5, 1)


@pytest.mark.parametrize("recorder", [("openai", True)], indirect=True)
async def test_a_stream_left_open_after_done_costs_a_bounded_wait(
        recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that keeps the body open after ``[DONE]``: the call ends once the
    drain's bound has passed, and the next call opens a new connection. (The body ends
    only once both calls are done: a drain without its bound would never end.)"""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wire-test")
    model = resolve_model("openai:gpt-4.1-mini", settings={"base_url": recorder.url + "/v1"})
    try:
        assert (await model.complete(ask())).text == "hi"
        assert (await model.complete(ask())).text == "hi"
    finally:
        recorder.released.set()
        await model.aclose()
    assert (len(recorder.requests), recorder.connections) == (2, 2)
    assert DRAIN_S < 1


# --- Server-Sent Events, as the spec reads them --------------------------------------


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(parts: list[bytes]) -> list[SseEvent]:
    return [event async for event in sse_events(_chunks(parts))]


STREAM = (b": a comment\r\nevent: first\r\ndata: one\r\ndata:two\r\n\r\n"
          b"data:  three spaces kept but one\n\n"
          b"id: 7\nretry: 10\nevent: no data\n\n"
          b"event: x\rdata: {\"a\": 1}\r\r"
          b"data: unfinished at the end")
EXPECTED = [SseEvent("first", "one\ntwo"), SseEvent(None, " three spaces kept but one"),
            SseEvent("x", '{"a": 1}')]


async def test_sse_fields_line_ends_and_dispatch_follow_the_spec() -> None:
    assert await _read([STREAM]) == EXPECTED


def _read_now(parts: list[bytes]) -> list[SseEvent]:
    """:func:`_read` run to its end in one step (it never waits)."""
    reading = _read(parts)
    with pytest.raises(StopIteration) as done:
        reading.send(None)
    events: list[SseEvent] = done.value.value
    return events


def test_sse_reads_the_same_wherever_the_chunks_are_cut() -> None:
    for cut in range(1, len(STREAM)):
        assert _read_now([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
def test_sse_reads_the_same_in_any_number_of_pieces(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    assert _read_now([STREAM[a:b] for a, b in itertools.pairwise(bounds)]) == EXPECTED


async def test_sse_byte_by_byte_and_a_final_cr_ending_the_last_event() -> None:
    data = b"data: a\r\n\r\ndata: b\r\r"
    assert await _read([data[i:i + 1] for i in range(len(data))]) == [
        SseEvent(None, "a"), SseEvent(None, "b")]


# --- a hostile model server ---------------------------------------------------------


async def test_a_line_that_never_ends_is_refused_once_over_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A line with no end, in small pieces: refused once it passes the bound, with
    each piece kept once (not copied again with every piece that follows)."""
    monkeypatch.setattr(_wire, "MAX_EVENT_BYTES", 1 << 20)
    pieces = [b"data: " + b"x" * 1024 for _ in range(2048)]
    with pytest.raises(SseTooLarge, match="line"):
        await _read(pieces)


async def test_an_event_of_many_data_lines_is_refused_once_over_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_wire, "MAX_EVENT_BYTES", 1 << 16)
    with pytest.raises(SseTooLarge, match="event"):
        await _read([b"data: " + b"y" * 1000 + b"\n" for _ in range(100)])
    # One byte under the bound is read.
    assert await _read([b"data: " + b"z" * ((1 << 16) - 1) + b"\n\n"]) == [
        SseEvent(None, "z" * ((1 << 16) - 1))]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_oversized_event_fails_the_call_clearly(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_wire, "MAX_EVENT_BYTES", 1 << 16)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wire-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wire-test")
    rec = Recorder(kind, body=b"event: message_start\ndata: " + b"w" * (1 << 17) + b"\n\n")
    server = await asyncio.start_server(rec.serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    model = resolve_model("openai:gpt-4.1-mini" if kind == "openai"
                          else "anthropic:claude-sonnet-4-5",
                          settings={"base_url": url + ("/v1" if kind == "openai" else "")})
    error = await _failed_call(model, server)
    assert (error.code, error.retryable) == ("model_bad_output", False)
    assert "stream event over" in error.message


async def test_an_error_body_is_read_only_up_to_its_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 500 whose body runs on: the call fails as the status says once a bounded part
    of the body is read. (The body never ends until the call has failed: a call that
    read it to its end would not end.)"""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wire-test")
    failed = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
                     b"content-length: 1000000000\r\n\r\n")
        try:
            for _ in range(400):  # 4 MB, then the server goes quiet, never ending it
                writer.write(b"e" * 10_000)
                await writer.drain()
            await failed.wait()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    model = resolve_model("openai:gpt-4.1-mini", settings={"base_url": url})
    try:
        error = await _failed_call(model, server)
    finally:
        failed.set()
    assert (error.code, error.details["status"]) == ("model_unavailable", 500)
    assert len(error.message) < 2000


# --- proxies, as the SDK's client honoured them ---------------------------------------


@pytest.mark.parametrize("recorder", [("openai", False)], indirect=True)
async def test_calls_go_through_the_proxy_the_environment_names(
        recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTP_PROXY`` (with credentials) is where the calls go, as the SDK's aiohttp
    client sent them: the proxy gets the absolute URL and the credentials; a host in
    ``NO_PROXY`` is called directly."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
                 "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wire-test")
    monkeypatch.setenv("HTTP_PROXY", recorder.url.replace("http://", "http://ops:pw%21@"))
    nowhere = "http://127.0.0.1:9/v1"  # (the discard port: nothing answers there)
    model = resolve_model("openai:gpt-4.1-mini", settings={"base_url": nowhere})
    try:
        assert (await model.complete(ask())).text == "hi"
    finally:
        await model.aclose()
    [(line, headers, _)] = recorder.requests
    assert line == "POST http://127.0.0.1:9/v1/chat/completions HTTP/1.1"
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"ops:pw!").decode()
    assert headers["authorization"] == "Bearer sk-wire-test"

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = resolve_model("openai:gpt-4.1-mini", settings={"base_url": nowhere})
    error = await _failed_call(direct)
    assert error.code == "model_unavailable" and len(recorder.requests) == 1


async def test_an_https_call_tunnels_through_the_proxy_with_its_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTPS_PROXY``: the call asks the proxy for a tunnel (CONNECT), the credentials
    with that ask; this proxy refuses, and the call fails as a connection that failed."""
    heads: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    for name in ("HTTP_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wire-test")
    monkeypatch.setenv("HTTPS_PROXY", f"http://ops:pw@127.0.0.1:{port}")
    model = resolve_model("openai:gpt-4.1-mini", settings={"base_url": "https://127.0.0.1:9/v1"})
    assert (await _failed_call(model, proxy)).code == "model_unavailable"
    [head] = heads
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "CONNECT 127.0.0.1:9 HTTP/1.1"
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'ops:pw').decode()}" in lines
    assert not any(line.lower().startswith("authorization") for line in lines)
