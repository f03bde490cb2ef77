"""A stub LLM HTTP server speaking the real wire formats, with fault injection.

Tests point a real provider (and its real SDK) at it, so the whole path from the
neutral request to HTTP and back is exercised without a network or a key::

    with StubLLMServer() as stub:
        stub.enqueue(text="hello", usage={"input_tokens": 7, "output_tokens": 2})
        stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expr": "1+1"}}])
        stub.enqueue(fault="http_429")
        model = resolve_model("openai-compatible:stub", settings={"base_url": stub.base_url})

Responses are served in the order they were queued. A response queued with
``model=`` goes only to a request naming that model, ahead of the shared queue: a
test whose agents call at once keeps each agent's conversation apart by giving each
its own model name. With no response queued for a request the server
echoes the last user message as ``stub: <text>`` (a request for structured output,
OpenAI's ``response_format`` or Anthropic's ``output_config.format``, gets a small
value of its schema instead; both are checked as the real APIs check them, strict
mode's closed objects included). ``stub.requests`` holds every JSON
body received, for asserting what a provider sent, and ``stub.request_times`` when each
arrived (``time.monotonic()``, in the same order): what a rate limit let through when.
A turn queued with ``interval_s`` streams its frames that far apart (a word of text
each) and records when each left in ``stub.emitted``: the start of a token's way to a
client, for latency benchmarks.

Wire formats, streaming and not: OpenAI Chat Completions (``POST /v1/chat/completions``;
point a provider at :attr:`StubLLMServer.base_url`) and Anthropic Messages
(``POST /v1/messages``; point the ``anthropic`` provider at
:attr:`StubLLMServer.root_url`, since that SDK adds ``/v1`` itself). A turn's
``thinking`` is rendered as signed thinking blocks by the Anthropic format (and
ignored by OpenAI's); a thinking block sent back with a wrong signature is refused,
as the real API does. A format is a ``Wire`` (in ``_wire.py``); faults are
format-neutral functions in :data:`FAULTS` that ask the wire for its error bodies and
frames, so adding a format or a fault is adding one class or one function.

Prompt caching: the server keeps each provider's prompt cache as its documentation
describes it, for the whole server as one organisation, so a request agentd sends is
judged by the provider's own rules and a request that would miss in production
misses here. Usage then reports the cache as each provider does: OpenAI
``usage.prompt_tokens_details.cached_tokens`` (part of ``prompt_tokens``); Anthropic
``cache_read_input_tokens`` and ``cache_creation_input_tokens`` (with their
``cache_creation`` split by TTL) apart from ``input_tokens``, which is what follows
the last breakpoint. Tokens are a quarter of the bytes of each part's JSON, rounded
up: the prompt's count (tools, system and messages) and its prefixes' lengths come
from one estimate. (The capacity model's admission estimate below is its own.)

- OpenAI (Chat Completions): automatic, on the exact prefix of tools, a
  ``json_schema`` response format, then the messages in order (a message's keys in a
  fixed order, values exact). Only a prompt of 1,024 tokens or more is cached, in
  whole 128-token steps: ``cached_tokens`` is 1,024 + 128·k, the longest such prefix
  an earlier request (same model) held. Requests are routed by prefix and
  ``prompt_cache_key``, so entries are kept per model and key: a different key (or
  none against one) misses. An entry lives 5 minutes from its last use, at most an
  hour (``prompt_cache_retention: "24h"``: 24 hours). OpenAI charges no write, so no
  write is reported. The key each request sent is in ``stub.cache_results``.
- Anthropic (Messages): only at breakpoints: ``cache_control: {"type":
  "ephemeral"}`` (``"ttl": "1h"`` for an hour, else 5 minutes, refreshed by each read)
  on tool definitions, system blocks and message content blocks, plus the top-level
  ``cache_control`` field, which puts one on the last block that can hold one (not a
  thinking block, not empty text) and takes one of the four slots (a no-op when that
  block is marked with the same TTL). More than four breakpoints, a top-level TTL
  that differs from an explicit one on the same block, a 1-hour breakpoint after a
  5-minute one, or ``cache_control`` on a thinking block are 400s with the API's
  messages. The prefix is tools → system → messages, ``cache_control`` itself not part
  of it; a different ``tool_choice`` or ``thinking`` leaves the tools' and system's
  entries valid and misses the messages'. Each breakpoint whose prefix reaches the
  model's minimum (1,024 tokens; 2,048 for the Haiku 3 models; 4,096 for Opus 4.5 and
  4.6 and Haiku 4.5) writes an entry; a read looks back from each breakpoint over at
  most 20 blocks (itself included) for the longest prefix an earlier request wrote
  (same model). ``cache_read_input_tokens`` is that prefix, ``cache_creation_input_tokens``
  what lies between it and the last breakpoint written. Not simulated: thinking
  blocks dropped from the prefix after a new user turn, and images.

A turn queued with ``usage`` reports it as given (the cache still reads and writes,
so later requests see it); a turn queued without it, and the echo, report what the
cache made of the request. A faulted call neither reads nor writes.
``StubLLMServer(prompt_cache=False)`` caches nothing. ``stub.cache_results`` has each
answered request's result (prompt tokens, read, written, the key or breakpoints) and
``stub.cache_stats`` their sums (``cached_share``); ``stub.clear()`` empties the
caches too. Lifetimes run on ``StubLLMServer(clock=...)`` (``time.monotonic`` by
default), so a test expires entries by moving its own clock.

Embeddings: ``POST /v1/embeddings`` (OpenAI's format; ``encoding_format`` ``float`` or
``base64`` and ``dimensions`` honoured) answers a hashed bag of words, normalised, so
texts sharing words are similar; 64 dimensions unless ``dimensions`` or an OpenAI model
name says otherwise. A call is recorded in ``stub.requests``, takes a queued response
only if it is an ``http_<status>`` fault, and is not subject to the capacity model.

Faults: ``http_<status>`` (any status, with the format's error body; ``Retry-After``
on 429 and 503; ``http_529`` is Anthropic's "overloaded"), ``spend_limit`` (a 429 for
a spent quota, with ``x-should-retry: false``: waiting does not help),
``error_mid_stream`` (some chunks, then the format's in-stream error, "overloaded"),
``malformed_json`` (a stream chunk that is not JSON),
``reset_mid_stream`` (some chunks, then the connection drops), ``truncated_stream``
(some chunks, then a clean end with no finish and no ``[DONE]``) and ``stall`` (some
chunks, then silence until the client gives up or the server stops).

Capacity: ``StubLLMServer(capacity=Capacity(concurrency=4, latency_s=0.5, rpm=600,
tpm=100_000))``, or ``stub.capacity = Capacity(...)`` at any time (which starts the
buckets full; ``None`` turns the model off), makes the server admit calls the way a
rate-limited provider does. The capacity model decides only admission and delay; what
an admitted call gets is still decided by the queue, the faults and the echo.

- ``concurrency``: calls served at once. An admitted call holds its slot through
  ``latency_s`` until its response is fully sent or its client disconnects.
- ``latency_s``: the wait before the first byte of any admitted answer (streamed or
  not, faults included); the rest follows at once.
- ``rpm`` and ``tpm``: token buckets refilled at ``limit / 60`` a second that hold
  ``burst_s`` seconds of it (at least one request, or the request's tokens): providers
  enforce per-minute limits over short windows. They refill on the server's clock
  (``StubLLMServer(clock=...)``): a test that moves its own refills them by hand.
  A request's tokens are estimated at admission as the characters of its
  JSON-encoded ``messages`` (and Anthropic's ``system``) divided by 4, plus its
  ``max_completion_tokens`` or ``max_tokens``.
- ``count_rejected``: a rejected call still takes a request token, as OpenAI's do;
  the debt this builds is capped at one bucket, so a client that keeps resending stays
  shut out and one that stops recovers.

Limits are checked in the order concurrency, rpm, tpm; the first one a call is over
names it in ``stub.stats.rejected_by``. It gets a 429 with the format's rate-limit
body (OpenAI ``rate_limit_exceeded``, Anthropic ``rate_limit_error``) and
``retry-after``: whole seconds, at least 1, rounded up from the time until it could
be admitted. A call whose tokens exceed ``tpm`` itself could never be admitted: it is
refused as that before anything else (counted under ``tpm``), with OpenAI's "request
too large" message, ``x-should-retry: false`` and no ``retry-after``. Answers and
429s carry the format's rate-limit headers when rpm or tpm is set
(``x-ratelimit-limit|remaining|reset-requests|tokens`` for OpenAI,
``anthropic-ratelimit-requests|tokens-limit|remaining|reset`` for Anthropic). A
rejected call is recorded in ``stub.requests`` but takes no queued response.
``stub.stats`` counts calls accepted and rejected, and calls in flight now and at
most (counted with or without a capacity model); ``stub.reset_stats()`` starts over.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agentd.llm.output import example
from agentd.testing._cache import CacheResult, CacheStats, PromptCache
from agentd.testing._capacity import Admitted, Capacity, Limiter, StubStats
from agentd.testing._embeddings import embeddings_problem, embeddings_response
from agentd.testing._wire import AnthropicMessages, OpenAIChat, StubTurn, Wire
from agentd.testing._wire import Call as _Call

__all__ = ["FAULTS", "CacheResult", "CacheStats", "Capacity", "StubLLMServer", "StubStats",
           "StubTurn"]

logger = logging.getLogger(__name__)

_HTTP_FAULT = re.compile(r"^http_([1-5]\d\d)$")
_USAGE_KEYS = frozenset({"input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens"})
# How long a stalled response waits at most, so a test that forgets a timeout still ends.
_STALL_LIMIT_S = 30.0


async def _aiter(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _paced(parts: list[bytes], interval_s: float,
                 emitted: Callable[[float, bytes], None]) -> AsyncIterator[bytes]:
    """The frames ``interval_s`` apart, each recorded (wall-clock time, frame) as it is
    handed to the server to write."""
    for i, part in enumerate(parts):
        if i and interval_s > 0:
            await asyncio.sleep(interval_s)
        emitted(time.time(), part)
        yield part


# --- faults -----------------------------------------------------------------------

Fault = Callable[[_Call], Response]

#: Named faults. Each builds the whole response for one call from the call's wire
#: format, so it works for every format. ``http_<status>`` is handled generically.
FAULTS: dict[str, Fault] = {}


def _fault(name: str) -> Callable[[Fault], Fault]:
    def register(fn: Fault) -> Fault:
        FAULTS[name] = fn
        return fn

    return register


def _http_fault(call: _Call, status: int) -> Response:
    headers = {"retry-after": "1"} if status in (429, 503) else {}
    message = f"stub fault: HTTP {status}"
    return JSONResponse(call.wire.error_body(status, message), status, headers=headers)


def _body_parts(call: _Call) -> tuple[list[bytes], dict[str, str]]:
    """The normal response as byte parts, and the headers it would be sent with."""
    if call.wire.wants_stream(call.body):
        return call.wire.frames(call), {"content-type": call.wire.media_type}
    raw = orjson.dumps(call.wire.completion(call))
    half = len(raw) // 2
    return [raw[:half], raw[half:]], {"content-type": "application/json"}


@_fault("malformed_json")
def _malformed_json(call: _Call) -> Response:
    parts, headers = _body_parts(call)
    if not call.wire.wants_stream(call.body):
        return Response(parts[0], 200, headers=headers)
    # A frame cut short, as a broken proxy might deliver it, between two good ones.
    broken = call.wire.broken_frame()
    return Response(b"".join([parts[0], broken, *parts[1:]]), 200, headers=headers)


@_fault("spend_limit")
def _spend_limit(call: _Call) -> Response:
    body = call.wire.spend_limit_body("stub fault: spend limit reached for this month")
    return JSONResponse(body, 429, headers={"x-should-retry": "false"})


@_fault("error_mid_stream")
def _error_mid_stream(call: _Call) -> Response:
    parts, headers = _body_parts(call)
    if not call.wire.wants_stream(call.body):
        return _http_fault(call, 529)
    keep = parts[: max(1, len(parts) // 2)]
    error = call.wire.error_frame("stub fault: Overloaded")
    return Response(b"".join([*keep, error]), 200, headers=headers)


@_fault("reset_mid_stream")
def _reset_mid_stream(call: _Call) -> Response:
    parts, headers = _body_parts(call)
    keep = max(1, len(parts) // 2)
    if not call.wire.wants_stream(call.body):
        headers["content-length"] = str(sum(map(len, parts)))
    return _DroppedResponse(parts[:keep], headers)


@_fault("truncated_stream")
def _truncated_stream(call: _Call) -> Response:
    parts, headers = _body_parts(call)
    # The body ends cleanly (no reset) before the finish chunk and [DONE]: what a proxy
    # that gives up politely looks like.
    return Response(b"".join(parts[: max(1, len(parts) // 2)]), 200, headers=headers)


@_fault("stall")
def _stall(call: _Call) -> Response:
    parts, headers = _body_parts(call)

    async def body() -> AsyncIterator[bytes]:
        yield parts[0]
        deadline = time.monotonic() + _STALL_LIMIT_S
        # Polled: the flag is set from the test's thread, not this event loop.
        while not call.stopping.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    return StreamingResponse(body(), 200, headers=headers)


class _DroppedResponse(Response):
    """Sends the status, headers and some body, then closes the connection mid-body."""

    def __init__(self, parts: list[bytes], headers: dict[str, str]) -> None:
        # Not Response.__init__: it would add content-length: 0 to a chunked stream.
        self.status_code = 200
        self.background = None
        self.parts = parts
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        for part in self.parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        # Returning without the final body message makes uvicorn close the socket, and
        # the client sees a body cut short, the same as a connection reset mid-response.


# --- server -----------------------------------------------------------------------


class StubLLMServer:
    """An in-process LLM server on a free 127.0.0.1 port, run by uvicorn in a thread.

    Args:
        capacity: A capacity model to admit calls by (see the module docstring); also
            settable later through :attr:`capacity`.
        prompt_cache: Simulate the providers' prompt caches (see the module
            docstring); False: nothing is ever cached, prompts are still counted.
        clock: Monotonic seconds the prompt caches' lifetimes and the capacity model's
            rpm and tpm buckets are measured on; a test moves its own clock to expire
            entries or refill buckets without sleeping (``latency_s`` stays a real wait).
    """

    def __init__(self, *, capacity: Capacity | None = None, prompt_cache: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._limiter = Limiter(capacity, clock)
        self._cache = PromptCache(clock, enabled=prompt_cache)
        self._queue: deque[StubTurn] = deque()
        self._by_model: dict[str, deque[StubTurn]] = {}
        self._requests: list[dict[str, Any]] = []
        self._times: list[float] = []
        self._headers: list[dict[str, str]] = []
        self._emitted: list[tuple[float, bytes]] = []
        self._numbers = itertools.count(1)
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- queue and records ---------------------------------------------------------

    def enqueue(
        self,
        text: str | None = None,
        *,
        tool_calls: list[dict[str, Any]] | None = None,
        usage: dict[str, int] | None = None,
        fault: str | None = None,
        finish_reason: str | None = None,
        thinking: str | list[str] | None = None,
        interval_s: float = 0.0,
        model: str | None = None,
    ) -> None:
        """Queue the next response.

        Args:
            text: Assistant text, streamed word by word.
            tool_calls: ``[{"name": ..., "arguments": {...}}]``; arguments are streamed
                in several fragments.
            usage: ``{"input_tokens", "output_tokens", "cached_tokens",
                "cache_write_tokens"}``, reported as given (the prompt cache is still
                read and written, but does not change the figures); left out, the
                input counts come from the prompt cache, the output from the text.
            fault: A name in :data:`FAULTS` or ``http_<status>``.
            finish_reason: Overrides the wire finish reason (for example ``length``, or
                ``max_tokens`` for Anthropic).
            thinking: Reasoning text, or one text per block, sent before the answer as
                signed thinking blocks by formats that have them (Anthropic).
            interval_s: Seconds between a streamed answer's frames (each word of the
                text is a frame); each frame's send time is in :attr:`emitted`.
            model: Serve this response only to a request whose ``model`` is this name
                (before anything in the shared queue); None: the shared queue.
        """
        if interval_s < 0:
            raise ValueError("interval_s must be >= 0")
        if text is None and not tool_calls and fault is None:
            raise ValueError("enqueue needs text, tool_calls or fault")
        if fault is not None and fault not in FAULTS and not _HTTP_FAULT.match(fault):
            known = ", ".join(sorted([*FAULTS, "http_<status>"]))
            raise ValueError(f"unknown fault {fault!r}; known faults: {known}")
        for call in tool_calls or []:
            if not isinstance(call.get("name"), str) or not isinstance(
                call.get("arguments", {}), dict
            ):
                raise ValueError("each tool call needs a 'name' and object 'arguments'")
        if usage is not None and not set(usage) <= _USAGE_KEYS:
            raise ValueError(f"usage keys must be among {sorted(_USAGE_KEYS)}")
        turn = StubTurn(
            text=text or "",
            tool_calls=list(tool_calls or []),
            usage=dict(usage) if usage is not None else None,
            fault=fault,
            finish_reason=finish_reason,
            thinking=[thinking] if isinstance(thinking, str) else list(thinking or []),
            interval_s=interval_s,
        )
        with self._lock:
            if model is None:
                self._queue.append(turn)
            else:
                self._by_model.setdefault(model, deque()).append(turn)

    def clear(self) -> None:
        """Forget queued responses, recorded requests, emitted frames and the prompt
        caches' entries and results: a fresh provider."""
        with self._lock:
            self._queue.clear()
            self._by_model.clear()
            self._requests.clear()
            self._times.clear()
            self._headers.clear()
            self._emitted.clear()
        self._cache.clear()

    @property
    def cache_results(self) -> list[CacheResult]:
        """What the prompt cache made of each answered request, oldest first: the
        prompt's tokens, those read from the cache and those written to it."""
        return self._cache.results

    @property
    def cache_stats(self) -> CacheStats:
        """The prompt cache's sums over :attr:`cache_results`."""
        return self._cache.stats()

    @property
    def emitted(self) -> list[tuple[float, bytes]]:
        """``(time.time(), frame)`` of every frame of paced streams (a turn queued with
        ``interval_s``), in the order sent: when each piece of text left the model, for
        measuring how long it takes to reach a reader."""
        with self._lock:
            return list(self._emitted)

    def _emit(self, at: float, frame: bytes) -> None:
        with self._lock:
            self._emitted.append((at, frame))

    @property
    def requests(self) -> list[dict[str, Any]]:
        """JSON bodies received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def request_times(self) -> list[float]:
        """When each of :attr:`requests` arrived (``time.monotonic()``), oldest first."""
        with self._lock:
            return list(self._times)

    @property
    def headers(self) -> list[dict[str, str]]:
        """Request headers received so far (lower-cased names), parallel to requests."""
        with self._lock:
            return list(self._headers)

    @property
    def capacity(self) -> Capacity | None:
        """The capacity model calls are admitted by, or None to admit every call."""
        return self._limiter.capacity

    @capacity.setter
    def capacity(self, capacity: Capacity | None) -> None:
        # Setting one (even the same again) starts its buckets full.
        self._limiter.capacity = capacity

    @property
    def stats(self) -> StubStats:
        """A consistent snapshot of the admission counts."""
        return self._limiter.stats()

    def reset_stats(self) -> None:
        """Zero the counts; ``max_in_flight`` restarts from the calls in flight now."""
        self._limiter.reset_stats()

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("StubLLMServer is not running; use it as a context manager")
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        """The server's root, for SDKs that add ``/v1`` themselves (Anthropic's)."""
        if not self._port:
            raise RuntimeError("StubLLMServer is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._port}"

    # -- HTTP ----------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._serve(OpenAIChat()), methods=["POST"]),
                Route("/v1/messages", self._serve(AnthropicMessages()), methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )

    async def _embeddings(self, request: Request) -> Response:
        wire = OpenAIChat()
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse(wire.error_body(400, "request body must be a JSON object"), 400)
        with self._lock:
            self._requests.append(body)
            self._times.append(time.monotonic())
            self._headers.append(dict(request.headers))
            fault = _HTTP_FAULT.match(self._queue[0].fault or "") if self._queue else None
            turn = self._queue.popleft() if fault else None
        if fault and turn is not None:
            call = _Call(wire=wire, turn=turn, body=body, number=next(self._numbers),
                         stopping=self._stopping)
            return _http_fault(call, int(fault.group(1)))
        problem = embeddings_problem(body)
        if problem is not None:
            return JSONResponse(wire.error_body(400, problem), 400)
        return JSONResponse(embeddings_response(body))

    async def _models(self, request: Request) -> Response:
        del request
        model = {"id": "stub-model", "object": "model", "owned_by": "stub"}
        return JSONResponse({"object": "list", "data": [model]})

    def _serve(self, wire: Wire) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return JSONResponse(wire.error_body(400, "request body is not valid JSON"), 400)
            if not isinstance(body, dict):
                return JSONResponse(wire.error_body(400, "request body must be an object"), 400)
            with self._lock:
                self._requests.append(body)
                self._times.append(time.monotonic())
                self._headers.append(dict(request.headers))
                verdict = self._limiter.admit(wire, body)
                turn = None if verdict.slot is None else self._next_turn(body.get("model"))
            if verdict.slot is None:
                body_429 = wire.error_body(429, verdict.message)
                return JSONResponse(body_429, 429, headers=verdict.headers)
            release = functools.partial(self._limiter.release, verdict.slot)
            try:
                answer = self._answer(wire, body, turn)
            except BaseException:
                release()
                raise
            return Admitted(answer, latency_s=verdict.latency_s, headers=verdict.headers,
                             release=release)

        return endpoint

    def _next_turn(self, model: Any) -> StubTurn | None:
        """The response for a request naming ``model``: its own queue's first, else the
        shared queue's, else none (the echo). Called under the lock."""
        own = self._by_model.get(model) if isinstance(model, str) else None
        if own:
            return own.popleft()
        return self._queue.popleft() if self._queue else None

    def _answer(self, wire: Wire, body: dict[str, Any], turn: StubTurn | None) -> Response:
        problem = wire.validate(body)
        if problem is not None:
            return JSONResponse(wire.error_body(400, problem), 400)
        if turn is None:
            schema = wire.output_schema(body)
            # Asked for structured output: the echo is a small value of the schema.
            turn = StubTurn(text=orjson.dumps(example(schema)).decode() if schema is not None
                            else f"stub: {wire.last_user_text(body)}")
        # A faulted call is not answered as asked: the cache neither reads nor writes.
        cache = (self._cache.answer(wire.provider, body) if turn.fault is None
                 else self._cache.measure(wire.provider, body))
        call = _Call(
            wire=wire, turn=turn, body=body, number=next(self._numbers),
            stopping=self._stopping, cache=cache,
        )
        if turn.fault is not None:
            match = _HTTP_FAULT.match(turn.fault)
            if match:
                return _http_fault(call, int(match.group(1)))
            return FAULTS[turn.fault](call)
        if wire.wants_stream(body):
            frames = wire.frames(call)
            parts = (_paced(frames, turn.interval_s, self._emit) if turn.interval_s > 0
                     else _aiter(frames))
            return StreamingResponse(parts, media_type=wire.media_type)
        return JSONResponse(wire.completion(call))

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("StubLLMServer already started")
        # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
        # proto says TCP, and with it on an answer on a kept-alive connection waits for
        # the client's delayed ACK (about 40 ms).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_config=None,  # leave the host's logging alone
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]},
            name=f"stub-llm-{self._port}", daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("stub LLM server failed to start")
            time.sleep(0.01)
        logger.debug("stub LLM server listening on %s", self.base_url)

    def close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        self._port = 0

    def __enter__(self) -> StubLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
