"""A stub LLM HTTP server speaking the real wire formats, with fault injection.

Tests point a real provider (and its real SDK) at it, so the whole path from the
neutral request to HTTP and back is exercised without a network or a key::

    with StubLLMServer() as stub:
        stub.enqueue(text="hello", usage={"input_tokens": 7, "output_tokens": 2})
        stub.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expr": "1+1"}}])
        stub.enqueue(fault="http_429")
        model = resolve_model("openai-compatible:stub", settings={"base_url": stub.base_url})

Responses are served in the order they were queued; with the queue empty the server
echoes the last user message as ``stub: <text>``. ``stub.requests`` holds every JSON
body received, for asserting what a provider sent.

Wire formats, streaming and not: OpenAI Chat Completions (``POST /v1/chat/completions``;
point a provider at :attr:`StubLLMServer.base_url`) and Anthropic Messages
(``POST /v1/messages``; point the ``anthropic`` provider at
:attr:`StubLLMServer.root_url`, since that SDK adds ``/v1`` itself). A turn's
``thinking`` is rendered as signed thinking blocks by the Anthropic format (and
ignored by OpenAI's); a thinking block sent back with a wrong signature is refused,
as the real API does. A format is a ``Wire`` (in ``_wire.py``); faults are
format-neutral functions in :data:`FAULTS` that ask the wire for its error bodies and
frames, so adding a format or a fault is adding one class or one function.

Faults: ``http_<status>`` (any status, with the format's error body; ``Retry-After``
on 429 and 503; ``http_529`` is Anthropic's "overloaded"), ``spend_limit`` (a 429 for
a spent quota, with ``x-should-retry: false``: waiting does not help),
``error_mid_stream`` (some chunks, then the format's in-stream error, "overloaded"),
``malformed_json`` (a stream chunk that is not JSON),
``reset_mid_stream`` (some chunks, then the connection drops), ``truncated_stream``
(some chunks, then a clean end with no finish and no ``[DONE]``) and ``stall`` (some
chunks, then silence until the client gives up or the server stops).
"""

from __future__ import annotations

import asyncio
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

from agentd.testing._wire import AnthropicMessages, OpenAIChat, StubTurn, Wire
from agentd.testing._wire import Call as _Call

__all__ = ["FAULTS", "StubLLMServer", "StubTurn"]

logger = logging.getLogger(__name__)

_HTTP_FAULT = re.compile(r"^http_([1-5]\d\d)$")
_USAGE_KEYS = frozenset({"input_tokens", "output_tokens", "cached_tokens"})
# How long a stalled response waits at most, so a test that forgets a timeout still ends.
_STALL_LIMIT_S = 30.0


async def _aiter(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
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
    """An in-process LLM server on a free 127.0.0.1 port, run by uvicorn in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[StubTurn] = deque()
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
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
    ) -> None:
        """Queue the next response.

        Args:
            text: Assistant text, streamed word by word.
            tool_calls: ``[{"name": ..., "arguments": {...}}]``; arguments are streamed
                in several fragments.
            usage: ``{"input_tokens", "output_tokens", "cached_tokens"}``; missing
                counts are estimated from the request and the text.
            fault: A name in :data:`FAULTS` or ``http_<status>``.
            finish_reason: Overrides the wire finish reason (for example ``length``, or
                ``max_tokens`` for Anthropic).
            thinking: Reasoning text, or one text per block, sent before the answer as
                signed thinking blocks by formats that have them (Anthropic).
        """
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
        )
        with self._lock:
            self._queue.append(turn)

    def clear(self) -> None:
        """Forget queued responses and recorded requests."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._headers.clear()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """JSON bodies received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        """Request headers received so far (lower-cased names), parallel to requests."""
        with self._lock:
            return list(self._headers)

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
            ]
        )

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
                self._headers.append(dict(request.headers))
                turn = self._queue.popleft() if self._queue else None
            problem = wire.validate(body)
            if problem is not None:
                return JSONResponse(wire.error_body(400, problem), 400)
            if turn is None:
                turn = StubTurn(text=f"stub: {wire.last_user_text(body)}")
            call = _Call(
                wire=wire, turn=turn, body=body, number=next(self._numbers),
                stopping=self._stopping,
            )
            if turn.fault is not None:
                match = _HTTP_FAULT.match(turn.fault)
                if match:
                    return _http_fault(call, int(match.group(1)))
                return FAULTS[turn.fault](call)
            if wire.wants_stream(body):
                return StreamingResponse(_aiter(wire.frames(call)), media_type=wire.media_type)
            return JSONResponse(wire.completion(call))

        return endpoint

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("StubLLMServer already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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
