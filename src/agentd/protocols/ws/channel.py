"""One WebSocket per session: messages in (with a mode), steer, interrupt, cancel,
decide approvals; the session's event stream out, with the same ids, names and replay
as its SSE stream.

``GET /v1/agents/{name}/sessions/{key}/ws`` upgrades. The daemon's token comes in the
``Authorization`` header, or, for browsers (which cannot set headers on a WebSocket),
as the subprotocol ``agentd.token.<token>`` next to ``agentd.v1`` (the one the server
answers with): never in the URL, which lands in logs. The request layer refuses the
handshake without one (HTTP 403).

Client -> server, one JSON object per text message (``id`` is the client's, echoed in
the answer; for ``send`` it is also the idempotency key):

- ``{"type": "send", "content", "mode"?, "priority"?, "id"?}``: a message
  (``mode`` enqueue | reject | interrupt | steer, as ``POST .../messages``)
  -> ``{"type": "ack", "id", "run", "duplicate"}``;
- ``{"type": "steer" | "interrupt", "content", "id"?}``: ``send`` with that mode;
- ``{"type": "cancel", "run_id"?, "id"?}``: cancel that run, else the session's runs
  under way or queued -> ``{"type": "cancelled", "id", "runs"}``; a ``run_id`` that is
  not one of this session's runs is ``run_not_found``, whether it exists elsewhere or
  not (the same frame, word for word);
- ``{"type": "decide", "approval_id", "action", "arguments"?, "remember"?, "reason"?,
  "output"?, "id"?}`` -> ``{"type": "decided", "id", "decision"}``; an approval of
  another session is ``approval_not_found``, as one that does not exist;
- ``{"type": "ping", "id"?}`` -> ``{"type": "pong", "id"}``.

Server -> client: ``{"type": "event", "id": "<seq>@<tag>", "event": NAME, "data"}``
for each event (``NAME`` and ``data`` as the SSE frame's; tokens too, with the id of
the last committed event), and ``{"type": "error", "id", "error": {"code",
"message", ...}}`` for a request refused (nothing written then); the socket stays
open. Replay: ``?after=SEQ`` or ``?last_event_id=<seq>@<tag>`` (else live from the
connection on). A dropped socket cancels nothing: the runs go on, and a new socket
replays what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.assembly import Runtime
from agentd.doors.access import require_agent
from agentd.doors.http import actor, trace_origin, traceparent_origin
from agentd.doors.sse import SSE_NAMES, is_silent, parse_last_event_id
from agentd.errors import (
    AgentdError,
    InvalidInput,
    PayloadTooLarge,
    RunNotFound,
    SessionNotFound,
)
from agentd.runtime import Token
from agentd.runtime.approvals import ApprovalNotFound
from agentd.runtime.runs import MODES
from agentd.store.records import EventRecord, SessionRecord, session_tag

__all__ = ["SUBPROTOCOL", "router"]

log = logging.getLogger(__name__)

router = APIRouter()
SUBPROTOCOL = "agentd.v1"
TOKEN_PREFIX = "agentd.token."
_ACTIVE = ["queued", "running", "waiting_approval"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    id: str | None = Field(default=None, max_length=256)


class SendIn(_In):
    content: str
    mode: str = "enqueue"
    priority: str | None = None
    #: The W3C trace context this message's run continues (else the socket's upgrade
    #: request's ``traceparent`` header, if any); an invalid one is ignored.
    traceparent: str | None = Field(default=None, max_length=256)


class CancelIn(_In):
    run_id: str | None = Field(default=None, max_length=200)


class DecideIn(_In):
    approval_id: str = Field(max_length=200)
    action: str
    arguments: dict[str, Any] | None = None
    remember: str | None = None
    reason: str | None = Field(default=None, max_length=2000)
    output: str | None = Field(default=None, max_length=1_000_000)


_MESSAGES: dict[str, type[_In]] = {
    "send": SendIn, "steer": SendIn, "interrupt": SendIn, "cancel": CancelIn,
    "decide": DecideIn, "ping": _In}


class _Channel:
    def __init__(self, socket: WebSocket, runtime: Runtime, name: str, key: str) -> None:
        self.socket = socket
        self.runtime = runtime
        self.name = name
        self.key = key
        self._lock = asyncio.Lock()
        self.session: SessionRecord | None = None
        self._pump: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self.socket.send_text(orjson.dumps(message, default=str).decode())

    async def error(self, request_id: str | None, exc: AgentdError) -> None:
        await self.send({"type": "error", "id": request_id, "error": exc.to_dict()})

    # -- events out ------------------------------------------------------------------

    def follow_from(self, session: SessionRecord, after: int) -> None:
        if self._pump is None:
            self.session = session
            self._pump = asyncio.create_task(self._events(session, after),
                                             name=f"ws-{session.id}")

    async def _events(self, session: SessionRecord, after: int) -> None:
        tag = session_tag(session.id)
        async for item in self.runtime.follow(session.id, after):
            if isinstance(item, Token):
                data: dict[str, Any] = {"run_id": item.run_id, "text": item.text}
                if item.reset:
                    data["reset"] = True
                await self.send({"type": "event", "id": f"{item.after}@{tag}",
                                 "event": "token", "data": data})
            elif isinstance(item, EventRecord) and not is_silent(item):
                await self.send({"type": "event", "id": f"{item.seq}@{tag}",
                                 "event": SSE_NAMES.get(item.kind, item.kind),
                                 "data": item.to_api()})

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump

    # -- requests in -----------------------------------------------------------------

    async def handle(self, raw: str) -> None:
        request_id: str | None = None
        try:
            if len(raw) > self.runtime.settings.max_body_bytes:
                raise PayloadTooLarge(
                    f"a message over {self.runtime.settings.max_body_bytes} bytes")
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise InvalidInput("a message must be a JSON object")
            if isinstance(data.get("id"), str):
                request_id = data["id"]
            kind = data.get("type")
            model = _MESSAGES.get(kind) if isinstance(kind, str) else None
            if model is None:
                raise InvalidInput(f"unknown message type {kind!r} (one of "
                                   f"{', '.join(_MESSAGES)})", field="type")
            try:
                message = model.model_validate(data)
            except ValidationError as exc:
                raise InvalidInput.of(exc, "message", "message") from None
            await self._dispatch(message)
        except AgentdError as exc:
            await self.error(request_id, exc)

    async def _dispatch(self, message: _In) -> None:
        if isinstance(message, SendIn):
            mode = message.type if message.type in ("steer", "interrupt") else message.mode
            if mode not in MODES:
                raise InvalidInput(f"mode must be one of {', '.join(MODES)}", field="mode")
            limit = self.runtime.settings.max_message_bytes
            if len(message.content.encode()) > limit:
                raise PayloadTooLarge(f"message content is over {limit} bytes")
            sent = await self.runtime.send(self.name, self.key, message.content,
                                           idempotency_key=message.id, mode=mode,
                                           priority=message.priority or "interactive",
                                           origin=traceparent_origin(message.traceparent)
                                           or trace_origin(self.socket))
            if self._pump is None:
                # The session began with this message: stream it from its start.
                self.follow_from(sent.session, 0)
            await self.send({"type": "ack", "id": message.id, "duplicate": sent.duplicate,
                             "run": sent.run.to_api(self.name, self.key)})
        elif isinstance(message, CancelIn):
            await self._cancel(message)
        elif isinstance(message, DecideIn):
            who = actor(self.socket.scope, "deciding an approval")
            # As for cancel: an approval of another session (another agent's, one
            # outside the token's scope) is unknown here, in the desk's own words for
            # an id it does not hold. (The socket's agent is in the scope: checked at
            # the handshake.)
            pending = await self.runtime.approvals.get(message.approval_id)
            if (pending.get("agent"), pending.get("session")) != (self.name, self.key):
                raise ApprovalNotFound(
                    f"no pending approval {message.approval_id!r} (it was decided, "
                    "expired, or never existed)")
            decision = await self.runtime.approvals.decide(
                message.approval_id, message.action, arguments=message.arguments,
                output=message.output, remember=message.remember, reason=message.reason,
                actor=who)
            await self.send({"type": "decided", "id": message.id, "decision": decision})
        else:
            await self.send({"type": "pong", "id": message.id})

    async def _cancel(self, message: CancelIn) -> None:
        if message.run_id is not None:
            # A socket acts on its own session's runs. Any other id (another session's,
            # another agent's, one outside the token's scope) gets the store's answer
            # for an id it does not hold, word for word: the frame must not tell a run
            # that exists elsewhere from one that never did.
            try:
                _, agent, key = await self.runtime.get_run(message.run_id)
            except RunNotFound:
                agent, key = "", ""
            if (agent, key) != (self.name, self.key):
                raise RunNotFound(f"run {message.run_id!r} not found")
            targets = [message.run_id]
        else:
            page = await self.runtime.list_runs(agent=self.name, session=self.key,
                                                statuses=_ACTIVE, limit=100)
            targets = [run.id for run, _, _ in page.runs]
        cancelled = []
        for run_id in targets:
            run, _, _ = await self.runtime.cancel_run(run_id)
            cancelled.append(run.to_api(self.name, self.key))
        await self.send({"type": "cancelled", "id": message.id, "runs": cancelled})


@router.websocket("/v1/agents/{name}/sessions/{key:path}/ws")
async def session_socket(socket: WebSocket, name: str, key: str) -> None:
    """The session's control channel (see the module's docstring)."""
    runtime: Runtime = socket.app.state.runtime
    offered = [p.strip() for p in socket.headers.get("sec-websocket-protocol", "").split(",")]
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    try:
        await require_agent(socket, name)  # outside the token's scope: as unknown
        await runtime.stored_agent(name)
        session: SessionRecord | None
        try:
            _, session = await runtime.get_session(name, key)
        except SessionNotFound:
            session = None
        after = _after(socket, session)
    except AgentdError as exc:
        # Refused before the upgrade's answer: close with the reason.
        await socket.accept(subprotocol=subprotocol)
        await socket.send_text(orjson.dumps({"type": "error", "id": None,
                                             "error": exc.to_dict()}).decode())
        await socket.close(code=4000 + exc.status if exc.status < 1000 else 1011,
                           reason=exc.message[:120])
        return
    await socket.accept(subprotocol=subprotocol)
    channel = _Channel(socket, runtime, name, key)
    if session is not None:
        channel.follow_from(session, after)
    try:
        while True:
            raw = await socket.receive_text()
            await channel.handle(raw)
    except WebSocketDisconnect:
        pass
    finally:
        await channel.close()


def _after(socket: WebSocket, session: SessionRecord | None) -> int:
    """Where the event stream starts: ``last_event_id``, ``after``, else now."""
    last_seq = session.last_seq if session is not None else 0
    last_event_id = socket.query_params.get("last_event_id")
    if last_event_id is not None:
        if session is None:
            raise InvalidInput("last_event_id names an event of a session that does not "
                               "exist", field="query.last_event_id")
        return parse_last_event_id(last_event_id, tag=session.tag, last_seq=last_seq)
    after = socket.query_params.get("after")
    if after is None:
        return last_seq
    if not after.isdigit() or len(after) > 19:
        raise InvalidInput("after must be an event seq", field="query.after")
    return min(int(after), last_seq)
