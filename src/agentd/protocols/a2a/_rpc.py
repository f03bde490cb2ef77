"""The door's JSON-RPC front: every turn (A2A 1.0's ``SendMessage`` and
``SendStreamingMessage``) and ``SubscribeToTask`` are answered here; everything else
goes to the SDK's dispatcher, after the checks it lacks (:mod:`._checks`).

Why not the SDK's dispatcher for every request: it costs more CPU per request than a
whole native turn (docs/protocols/a2a.md has the profile): the JSON body parsed again
with ``json``, the envelope checked by ``jsonrpc``, eight OpenTelemetry spans (no-op
ones, still built), the answer turned from protobuf to a dict by ``json_format`` (pure
Python, ~0.1 ms for a task, ~0.04 ms per streamed event) and serialised by ``json``,
and ``sse-starlette``'s task group per stream.

What stays the SDK's: the params are parsed into its own type
(``ParseDict(params, SendMessageRequest())``, as its dispatcher does: that is the wire
validation), the call context is its builder's, the request handler is the same
(:class:`~agentd.protocols.a2a._handler.A2AHandler`), errors are its
``build_error_response``, and the answer is the JSON its dispatcher would print for the
same task (:mod:`._tasks`). A request the front is not sure of (another method or
version, a notification, an envelope or params the SDK would refuse) goes to the SDK's
dispatcher as it came, so every refusal is the SDK's own, but for three: what
:mod:`._checks` refuses first, and an error before a stream's first event, which is
the stream's one event (A2A 1.0 §9.4.2), where the SDK answers a JSON body. A 1.0
method name without ``A2A-Version`` is served as 1.0 (:func:`_assume_v1`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.server.routes import ServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types.a2a_pb2 import SendMessageRequest, SubscribeToTaskRequest
from a2a.utils import constants
from a2a.utils.errors import A2AError, InternalError
from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import Response

from agentd.doors.http import is_json_body, json_response, loads_strict
from agentd.doors.sse import sse_response
from agentd.protocols.a2a._checks import refusal
from agentd.protocols.a2a._handler import A2AHandler, StreamItem

__all__ = ["JsonRpcFront"]

log = logging.getLogger(__name__)

_ENVELOPE = frozenset({"jsonrpc", "method", "params", "id"})
#: What the front answers itself, and the params' type of each.
_FRONT: dict[str, type[Any]] = {"SendMessage": SendMessageRequest,
                                "SendStreamingMessage": SendMessageRequest,
                                "SubscribeToTask": SubscribeToTaskRequest}
_VERSION_HEADER = constants.VERSION_HEADER.lower()
_VERSION_KEY = _VERSION_HEADER.encode()
#: The methods of A2A 1.0's JSON-RPC binding (0.3's are another set: message/send...).
_V1_METHODS = frozenset(JsonRpcDispatcher.METHOD_TO_MODEL)
_PING = b": ping\n\n"


def _turn(body: Any, request: Request) -> tuple[str, str | int | None, dict[str, Any]] | None:
    """(method, id, params) of a turn the front answers; None for anything else."""
    if type(body) is not dict or not body.keys() <= _ENVELOPE or "id" not in body:
        return None
    method, request_id, params = body.get("method"), body["id"], body.get("params")
    if (body.get("jsonrpc") != "2.0" or method not in _FRONT
            or type(params) is not dict
            or not (request_id is None or type(request_id) in (str, int))):
        return None
    # The SDK takes any 1.x; the front, what 1.0 clients send (the rest: the SDK).
    if request.headers.get(_VERSION_HEADER) != constants.PROTOCOL_VERSION_1_0:
        return None
    return method, request_id, params


async def _one(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


def _assume_v1(request: Request) -> None:
    """Serve a request as A2A 1.0: it names a method only 1.0 has, and no version.

    A2A 1.0 §3.2.6: clients MUST send ``A2A-Version``, "except for 0.3 Clients - 0.3
    will be assumed for empty header". The SDK's dispatcher assumes 0.3 for every
    method and refuses a 1.0 name (``SendMessage``) with VersionNotSupportedError;
    but no 0.3 client sends a 1.0 method name (0.3's are ``message/send``...), so
    such a request can only be a 1.0 client that left the header out, as the A2A
    TCK's own client does. A header naming any version is taken as it is."""
    request.scope["headers"] = [*request.scope["headers"], (_VERSION_KEY, b"1.0")]
    request.__dict__.pop("_headers", None)  # Starlette's cache of the old list


def _sound_envelope(body: dict[str, Any]) -> bool:
    """A request the dispatcher would take as far as its params (a notification too:
    the dispatcher answers one, with a null id)."""
    return (body.get("jsonrpc") == "2.0"
            and (body.get("id") is None or type(body["id"]) in (str, int)))


def _result(request_id: str | int | None, result: Any) -> bytes:
    return orjson.dumps({"result": result, "id": request_id, "jsonrpc": "2.0"})


def _error(request_id: str | int | None, error: A2AError) -> dict[str, Any]:
    answer: dict[str, Any] = build_error_response(request_id, error)
    return answer


class JsonRpcFront:
    """The door's endpoint: turns here, the rest to ``dispatcher``."""

    def __init__(self, handler: A2AHandler, dispatcher: JsonRpcDispatcher,
                 context_builder: ServerCallContextBuilder) -> None:
        self.handler = handler
        self.dispatcher = dispatcher
        self.context_builder = context_builder

    async def __call__(self, request: Request) -> Response:
        raw = await request.body()  # kept by the request: the SDK reads it again
        # Strict as the request layer is for every JSON body (NaN, 1e309, integers
        # beyond 64 bits: 400 with JSON-RPC's parse error, before the SDK sees it).
        body = loads_strict(raw) if raw and is_json_body(request.scope) else None
        if (type(body) is dict and body.get("method") in _V1_METHODS
                and not any(name == _VERSION_KEY for name, _ in request.scope["headers"])):
            _assume_v1(request)
        turn = _turn(body, request)
        if turn is None:
            if (type(body) is dict and _sound_envelope(body)
                    and (error := refusal(body)) is not None):
                return json_response(_error(body.get("id"), error))
            return await self.dispatcher.handle_requests(request)
        method, request_id, params = turn
        try:
            parsed = ParseDict(params, _FRONT[method](), ignore_unknown_fields=True)
        except Exception:  # the SDK's dispatcher answers it, saying why (-32602)
            return await self.dispatcher.handle_requests(request)
        context = self.context_builder.build(request)
        context.state["method"] = method
        context.state["request_id"] = request_id
        if method == "SendMessage":
            try:
                task = await self.handler.send_message(parsed, context)
            except A2AError as exc:
                return json_response(_error(request_id, exc))
            return Response(_result(request_id, {"task": task}),
                            media_type="application/json")
        stream = (self.handler.subscribe(parsed, context) if method == "SubscribeToTask"
                  else self.handler.stream_message(parsed, context))
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None
        except A2AError as exc:
            # A2A 1.0 §9.4.2: a streaming method's response is "HTTP 200 with
            # Content-Type: text/event-stream", so an error before the first event
            # is the stream's one event (the SDK's dispatcher answers it as a JSON
            # body; the SDK's client reads either).
            await stream.aclose()
            return sse_response(_one(b"data: " + orjson.dumps(_error(request_id, exc))
                                     + b"\n\n"))
        return sse_response(self._frames(request_id, first, stream))

    async def _frames(self, request_id: str | int | None, first: StreamItem,
                      stream: AsyncGenerator[StreamItem]) -> AsyncIterator[bytes]:
        """The stream's events as the SDK's dispatcher frames them (one ``data:`` of
        a JSON-RPC response each; an error as an ``error`` event), those ready
        together in one write, a ping after a quiet while."""
        pending = [] if first is None else [b"data: " + _result(request_id, first)
                                            + b"\n\n"]
        try:
            async for item in stream:
                if item is not None:
                    pending.append(b"data: " + _result(request_id, item) + b"\n\n")
                elif pending:
                    yield b"".join(pending)
                    pending = []
                else:
                    yield _PING
        except A2AError as exc:
            pending.append(b"event: error\ndata: " + orjson.dumps(_error(request_id, exc))
                           + b"\n\n")
        except Exception:
            log.exception("an A2A stream failed")
            pending.append(b"event: error\ndata: " + orjson.dumps(_error(
                request_id, InternalError("the stream failed; GetTask answers the task "
                                          "as it is"))) + b"\n\n")
        finally:
            await stream.aclose()  # its subscription closed, however the stream ends
        if pending:
            yield b"".join(pending)
