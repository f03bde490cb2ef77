"""The door's front for ``POST /mcp``: a ``tools/call`` the front is sure of is served
here; every other request goes to the SDK's streamable HTTP manager as it came.

Why: in stateless mode the SDK builds, for every POST, a transport, a JSON-RPC
dispatcher, anyio task groups and memory streams and an ``sse-starlette`` response,
and runs them as tasks of its own (docs/protocols/mcp.md has the profile): more CPU
than the whole native turn. The front keeps what decides the answer the SDK's: the
request runs through the SDK's own ``serve_one`` (its params validation, the door's
``on_call_tool`` handler, its result shaping and its exception-to-error ladder), with
a dispatch context of the front's, and the answer is framed as the SDK's transport
frames it for the request's protocol version:

- the handshake era (``MCP-Protocol-Version: 2025-11-25``): an SSE stream answered at
  once, ``event: message`` frames (progress notifications, then the response),
  serialised by the SDK's models as its transport does, a ping every 15 s;
- 2026-07-28 (the per-request envelope, classified by the SDK's own ladder): JSON
  with the status the SDK's table maps an error to, unless a notification comes (or
  15 s pass) first, then SSE, as the SDK's single-exchange entry does.

A request the front is not sure of (another method or version, no version header,
a notification, a batch, an envelope or params the SDK might refuse, ``Mcp-Param-*``
or session headers, an Accept or Content-Type the SDK would refuse, a body over the
SDK's limit, the SDK's JSON-response mode) goes to the SDK, so each refusal is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from mcp.server._streamable_http_modern import (
    _SSE_HEADERS,
    _SingleExchangeDispatchContext,
    _sse_event,
    _to_jsonrpc_response,
    _write,
)
from mcp.server.connection import Connection
from mcp.server.runner import serve_one
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import ErrorData, JSONRPCError, JSONRPCNotification, JSONRPCResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from agentd.doors.http import is_json_body, loads_strict, read_body, replay
from agentd.protocols.mcp.server import MCPDoor

__all__ = ["LEGACY_VERSION", "MODERN_VERSION", "MCPFront"]

log = logging.getLogger(__name__)

LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
_ENVELOPE = frozenset({"jsonrpc", "id", "method", "params"})
_PARAMS = frozenset({"name", "arguments", "_meta"})
_PING_INTERVAL = 15.0
#: The headers of the handshake era's SSE answer (the SDK's transport's, as
#: ``sse-starlette`` sends them).
_LEGACY_SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"content-type", b"text/event-stream"),
    (b"x-accel-buffering", b"no"),
]


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The request's headers, None when one the front cares about is repeated or
    the request carries one only the SDK handles (a session id, ``Mcp-Param-*``)."""
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name.startswith((b"mcp-", b"last-event-id")):
            if name.startswith((b"mcp-session-id", b"mcp-param-", b"last-event-id")):
                return None
            if name in out:
                return None
        elif name in (b"content-type", b"accept") and name in out:
            return None
        out[name] = value
    return out


def _accepts_both(accept: bytes) -> bool:
    """The SDK's check_accept_headers, both JSON and SSE (the SDK's SSE mode)."""
    types = [t.strip().split(b";")[0].strip().lower() for t in accept.split(b",")]
    wildcard = b"*/*" in types
    return (wildcard or any(t in (b"application/json", b"application/*") for t in types)) and (
        wildcard or any(t in (b"text/event-stream", b"text/*") for t in types))


def _call(body: Any) -> tuple[int | str, dict[str, Any]] | None:
    """(id, params) of a ``tools/call`` whose envelope and params the SDK takes."""
    if type(body) is not dict or not body.keys() <= _ENVELOPE:
        return None
    request_id, params = body.get("id"), body.get("params")
    if (body.get("jsonrpc") != "2.0" or body.get("method") != "tools/call"
            or type(request_id) not in (int, str) or type(params) is not dict
            or not params.keys() <= _PARAMS or type(params.get("name")) is not str
            or type(params.get("arguments", {})) is not dict):
        return None
    return cast(int | str, request_id), params


def _legacy_meta_ok(params: dict[str, Any]) -> bool:
    meta = params.get("_meta")
    if meta is None:
        return "_meta" not in params
    return (type(meta) is dict and meta.keys() <= {"progressToken"}
            and type(meta.get("progressToken", 0)) in (int, str))


class _Answer:
    """One POST's answer, written as the SDK's transports write it: SSE frames once
    committed (at once, or at the first frame, or when ``PING_INTERVAL`` passes
    with nothing sent), then a ping after each quiet ``PING_INTERVAL``. The pings
    are timers (a task only when one fires), not a task per answer."""

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]],
                 ping: Callable[[], bytes]) -> None:
        self._send = send
        self._headers = headers
        self._ping = ping
        self.started = False
        self._done = False
        self._pinging: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(_PING_INTERVAL, self._tick)

    async def commit(self) -> None:
        if not self.started:
            self.started = True
            await self._send({"type": "http.response.start", "status": 200,
                              "headers": self._headers})

    async def frame(self, data: bytes) -> None:
        if self._done:
            return
        await self.commit()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    def _tick(self) -> None:
        if not self._done:
            self._pinging = asyncio.create_task(self._ping_once())

    async def _ping_once(self) -> None:
        with contextlib.suppress(Exception):
            await self.frame(self._ping())
        if not self._done:
            self._timer = asyncio.get_running_loop().call_later(_PING_INTERVAL, self._tick)

    async def stop(self) -> None:
        """No more pings (one being sent is let finish, so frames stay whole)."""
        self._done = True
        self._timer.cancel()
        if self._pinging is not None and not self._pinging.done():
            await asyncio.wait((self._pinging,))

    async def end(self, data: bytes) -> None:
        await self.stop()
        await self._send({"type": "http.response.body", "body": data, "more_body": False})


class _LegacyContext:
    """The dispatch context of a handshake-era request (the SDK's JSON-RPC
    dispatcher's, for a stateless transport): a notification goes out as the SDK's
    transport frames one."""

    can_send_request = False

    def __init__(self, request: Request, request_id: int | str,
                 token: int | str | None, answer: _Answer) -> None:
        self.transport = TransportContext(kind="streamable-http", can_send_request=False)
        self.request_id = request_id
        self.message_metadata = ServerMessageMetadata(request_context=request,
                                                      can_send_request=True)
        self.cancel_requested = asyncio.Event()
        self._token = token
        self._answer = answer

    async def send_raw_request(self, method: str, params: Mapping[str, Any] | None,
                               opts: Any = None) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None,
                     opts: Any = None) -> None:
        message = (JSONRPCNotification(jsonrpc="2.0", method=method, params=dict(params))
                   if params is not None else JSONRPCNotification(jsonrpc="2.0", method=method))
        await self._answer.frame(_legacy_frame(message))

    async def progress(self, progress: float, total: float | None = None,
                       message: str | None = None) -> None:
        if self._token is None:
            return
        params: dict[str, Any] = {"progressToken": self._token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)


def _legacy_frame(message: JSONRPCNotification | JSONRPCResponse | JSONRPCError) -> bytes:
    """An ``event: message`` frame as the SDK's transport (through sse-starlette)
    writes one."""
    data = message.model_dump_json(by_alias=True, exclude_unset=True)
    return b"event: message\r\ndata: " + data.encode() + b"\r\n\r\n"


def _legacy_ping() -> bytes:
    return f": ping - {datetime.now(UTC)}\r\n\r\n".encode()


def _modern_ping() -> bytes:
    return b": ping\r\n\r\n"


class _Sink:
    """The single-exchange context's sink (the SDK's: a memory stream its writer
    loop reads)."""

    def __init__(self, answer: _Answer) -> None:
        self._answer = answer

    async def send(self, item: bytes) -> None:
        await self._answer.frame(item)


class MCPFront:
    """The fast route of ``POST /mcp`` (see the module's docstring)."""

    def __init__(self, door: MCPDoor, *, enabled: bool = True) -> None:
        self.door = door
        self.enabled = enabled
        #: Calls answered here (not by the SDK).
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send, match: Any) -> None:
        raw = await read_body(receive)
        if raw is None:
            return  # the client went away
        # Strict as the request layer is for every JSON body (what it did before the
        # SDK saw the request when /mcp went through the router).
        body = loads_strict(raw) if raw and is_json_body(scope) else None
        headers = _headers(scope) if self.enabled else None
        call = _call(body) if headers is not None else None
        if (call is None or headers is None
                or len(raw) > self.door.manager.max_request_body_size
                or self.door.manager.json_response
                or self.door.manager.security_settings is not None
                or headers.get(b"content-type", b"").split(b";")[0].strip()
                != b"application/json"
                or not _accepts_both(headers.get(b"accept", b""))):
            await self.door(scope, replay(raw, receive), send)
            return
        request_id, params = call
        version = headers.get(b"mcp-protocol-version")
        verdict: Any = None
        if version == MODERN_VERSION.encode():
            verdict = classify_inbound_request(cast(dict[str, Any], body),
                                               headers=_folded(headers))
            if isinstance(verdict, InboundLadderRejection):
                verdict = None
        elif version != LEGACY_VERSION.encode() or not _legacy_meta_ok(params):
            version = None
        if version is None or (version == MODERN_VERSION.encode() and verdict is None):
            await self.door(scope, replay(raw, receive), send)
            return
        await self.door.start()
        self.served += 1
        request = Request(scope, receive)
        work = asyncio.create_task(
            self._legacy(send, request, request_id, params) if verdict is None else
            self._modern(scope, receive, send, request, request_id, params, verdict))
        # The SDK cancels a call whose client went away (its follower of the run,
        # never the run): so does the front.
        watcher = asyncio.create_task(_watch(receive, work))
        try:
            await work
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not work.cancelled() or (task is not None and task.cancelling()):
                raise  # the server's cancellation, not the client's going away
        finally:
            watcher.cancel()

    async def _legacy(self, send: Send, request: Request, request_id: int | str,
                      params: dict[str, Any]) -> None:
        answer = _Answer(send, _LEGACY_SSE_HEADERS, _legacy_ping)
        try:
            await answer.commit()  # the SDK's transport answers 200 before the call runs
            meta = params.get("_meta") or {}
            dctx = _LegacyContext(request, request_id, meta.get("progressToken"), answer)
            try:
                result = await serve_one(
                    self.door.server, cast(Any, dctx), "tools/call", params,
                    connection=Connection.from_envelope(LEGACY_VERSION, None, None),
                    lifespan_state=self.door.manager._lifespan_state)
                reply: JSONRPCResponse | JSONRPCError = JSONRPCResponse(
                    jsonrpc="2.0", id=request_id, result=result)
            except Exception as exc:  # the SDK's dispatcher's ladder
                error = handler_exception_to_error_data(exc)
                if error is None:
                    log.exception("handler for 'tools/call' raised")
                    error = ErrorData(code=0, message=str(exc))
                reply = JSONRPCError(jsonrpc="2.0", id=request_id, error=error)
            await answer.frame(_legacy_frame(reply))
            await answer.end(b"")
        finally:
            await answer.stop()

    async def _modern(self, scope: Scope, receive: Receive, send: Send, request: Request,
                      request_id: int | str, params: dict[str, Any], verdict: Any) -> None:
        answer = _Answer(send, _SSE_HEADERS, _modern_ping)
        try:
            meta = params.get("_meta") or {}
            token = meta.get("progressToken")
            dctx = _SingleExchangeDispatchContext(
                transport=TransportContext(kind="streamable-http", can_send_request=False,
                                           headers=request.headers),
                request_id=request_id,
                message_metadata=ServerMessageMetadata(request_context=request),
                progress_token=token if type(token) in (int, str) else None,
                sink=cast(Any, _Sink(answer)))
            connection = Connection.from_envelope(
                verdict.protocol_version, verdict.client_info, verdict.client_capabilities)
            reply = await _to_jsonrpc_response(request_id, serve_one(
                self.door.server, dctx, "tools/call", params, connection=connection,
                lifespan_state=self.door.manager._lifespan_state))
            await answer.stop()
            if answer.started:
                await answer.end(_sse_event(reply))
            else:
                # Done within the ping interval with nothing sent: JSON, with the
                # status the SDK's table gives an error.
                await _write(reply, scope, receive, send)
        finally:
            await answer.stop()


def _folded(headers: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}


async def _watch(receive: Receive, work: asyncio.Task[None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if not work.done():
        work.cancel()
