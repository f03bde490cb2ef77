"""Sessions of an agent: messages in, events out (JSON or Server-Sent Events).

Session keys are opaque client strings and may contain '/', so they are matched
with a path converter; the more specific routes are declared first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agentd.doors.access import access_of, require_agent, require_right
from agentd.doors.http import (
    INT64_MAX,
    json_response,
    loads_strict,
    model_response,
    read_body,
    traceparent_origin,
)
from agentd.doors.sse import follow_frames, parse_last_event_id, sse_response
from agentd.errors import InvalidInput, ModelError, PayloadTooLarge
from agentd.llm.messages import messages_adapter
from agentd.media import SHA256, Attachments
from agentd.memory.compaction import conversation_tokens
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.routes._parts import form_message, raw_parts
from agentd.server.schemas import (
    CheckpointIn,
    CheckpointList,
    CheckpointOut,
    EventList,
    ForkIn,
    MediaPartIn,
    MessageIn,
    RestoreIn,
    RestoreOut,
    RunOut,
    SessionList,
    SessionOut,
    SseEvent,
    TextPartIn,
    TraceOut,
)
from agentd.store.sessions_query import MAX_SESSION_PAGE

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents/{name}/sessions", tags=["sessions"])

MAX_EVENTS_PAGE = 10_000
#: A page of sessions when a client pages without saying how many.
DEFAULT_SESSION_PAGE = 100
_STREAM = {"text/event-stream": {"schema": SseEvent.model_json_schema()}}
#: A message as a multipart upload: MessageIn's fields as form fields, files as parts.
_FORM = {"type": "object", "properties": {
    "content": {"type": "string", "description": "The message's text."},
    "file": {"type": "array", "items": {"type": "string", "format": "binary"},
             "description": "Images and files (any field name), in order after the text."},
    "stream": {"type": "string", "enum": ["true", "false"]},
    "wait": {"type": "string", "enum": ["true", "false"]},
    "mode": {"type": "string", "enum": ["enqueue", "reject", "interrupt", "steer"]},
    "priority": {"type": "string", "enum": ["interactive", "background", "batch"]}}}
# What parse_last_event_id takes (the schema says so; the handler says why not).
_EVENT_ID = r"^[0-9]{1,19}(@[^@]+)?$"


@router.get("", response_model=SessionList, responses=ERRORS(404, 422))
async def list_sessions(
    name: str,
    request: Request,
    limit: int | None = Query(default=None, ge=1, le=MAX_SESSION_PAGE,
                              description="At most this many sessions (a page; 100 when "
                                          "only after or q is given)."),
    after: str | None = Query(default=None, max_length=512,
                              description="Only sessions after this cursor: next_after "
                                          "of the page before."),
    q: str | None = Query(default=None, max_length=256,
                          description="Only sessions whose keys contain this (any case)."),
) -> Response:
    """The agent's sessions, most recent activity first. Without parameters: every
    session. With any of ``limit``, ``after``, ``q``: a page of the matching sessions
    and ``next_after`` (the cursor to give as ``after`` for the next page; null on the
    last). A session untouched while a client pages is never repeated or skipped; one
    with new activity meanwhile moves to the top (the next first page)."""
    runtime = runtime_of(request)
    if limit is None and after is None and q is None:
        sessions = await runtime.list_sessions(name)
        return model_response(SessionList,
                              {"sessions": [s.to_api(name) for s in sessions]})
    page = await runtime.session_page(name, limit=limit or DEFAULT_SESSION_PAGE,
                                      after=after, q=q)
    return model_response(SessionList, {
        "sessions": [s.to_api(name) for s in page.sessions],
        "next_after": page.next_after})


@dataclass(slots=True)
class _Message:
    """A message body checked as :class:`MessageIn`: the fields the route reads."""

    content: str | list[TextPartIn | MediaPartIn]
    stream: bool
    wait: bool
    mode: str
    priority: str | None
    output_schema: dict[str, Any] | None


#: The fields of a text message :func:`_message_body` checks itself, and the values
#: MessageIn takes for the two named ones.
_PLAIN_FIELDS = frozenset({"content", "stream", "wait", "mode", "priority"})
_MODES = frozenset({"enqueue", "reject", "interrupt", "steer"})
_PRIORITIES = frozenset({"interactive", "background", "batch"})


def _message_body(data: Any) -> _Message:
    """Check the body by hand: FastAPI's per-request dependency solving costs more than
    the rest of a turn. The schema is published through ``openapi_extra``.

    The usual body, a text with some of stream, wait, mode and priority, each as
    MessageIn takes it (a non-empty string, JSON booleans, a mode or priority by its
    name), is taken here: MessageIn's validation and the reads of its model's fields
    cost a turn about 12,000 instructions. Any other body (parts, an output schema, a
    field MessageIn would refuse) is MessageIn's to check, and to say what is wrong
    with it."""
    if type(data) is dict and _PLAIN_FIELDS.issuperset(data):
        content = data.get("content")
        stream = data.get("stream", False)
        wait = data.get("wait", True)
        mode = data.get("mode", "enqueue")
        priority = data.get("priority")
        if (type(content) is str and content and type(stream) is bool
                and type(wait) is bool and type(mode) is str and mode in _MODES
                and (priority is None
                     or (type(priority) is str and priority in _PRIORITIES))):
            return _Message(content, stream, wait, mode, priority, None)
    try:
        body = MessageIn.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    return _Message(body.content, body.stream, body.wait, body.mode, body.priority,
                    body.output_schema)


#: The request headers the message route reads (:func:`_headers`); a set, see
#: ``agentd.doors.http._TOKEN_HEADERS``.
_HEADERS = frozenset({b"content-type", b"idempotency-key", b"traceparent"})


def _headers(scope: Scope) -> dict[bytes, str]:
    """The headers of :data:`_HEADERS` the request carries, each as Starlette's
    ``request.headers.get`` reads it (the first one sent, latin-1), in one pass over
    them rather than a pass (and a Headers object) for each."""
    found: dict[bytes, str] = {}
    for name, value in reversed(scope["headers"]):
        if name in _HEADERS:
            found[name] = value.decode("latin-1")
    return found


async def _form_message(request: Request, runtime: Any
                        ) -> tuple[_Message, Attachments | None]:
    """The message a multipart upload sends, its parts checked (nothing is written
    before they pass)."""
    limits = runtime.media.limits
    fields, parts = await form_message(request, limits.max_parts, limits.max_part_bytes)
    body = _message_body({**fields, "content": "-"})
    return body, await runtime.media.prepare(parts, where="body.content")


@router.post(
    "/{key:path}/messages",
    response_model=RunOut,
    responses={200: {"description": "The finished run (wait=true), or with stream=true "
                                    "an SSE stream of the run's events",
                     "content": _STREAM},
               202: {"model": RunOut, "description": "queued (wait=false)"},
               **ERRORS(404, 409, 413, 422, 503)},
    openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": MessageIn.model_json_schema(
                ref_template="#/components/schemas/{model}")},
            "multipart/form-data": {"schema": _FORM}}},
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "maxLength": 256},
                        "description": "Send the same key again to get the same run."}],
    },
)
async def post_message(name: str, key: str, request: Request) -> Response:
    """Send a message to the session (created on first use).

    The message and its queued run are committed before any reply. With
    ``stream=true`` the reply is an SSE stream of the run that ends after its
    ``done`` or ``error`` frame; a client that leaves does not cancel the run.
    """
    return await _post_message(name, key, request)


async def serve_message(app: Any, scope: Scope, receive: Receive, send: Send,
                        name: str, key: str) -> None:
    """The message route served by the request layer's dispatch (``AgentdApp``), past
    FastAPI's routing and dependency solving, which cost about as much per request as
    the rest of a turn (docs/design-notes.md). Auth, the body limit and the error
    mapping are the same layers every route passes through. The FastAPI route above
    keeps the OpenAPI document and serves as the reference."""
    scope["app"] = app
    response = await _post_message(name, key, Request(scope, receive))
    await response(scope, receive, send)


async def _post_message(name: str, key: str, request: Request) -> Response:
    if not access_of(request.scope).everything:  # (an unscoped token: nothing to await)
        await require_agent(request, name)  # past FastAPI: the app's dependency is not run
    runtime = runtime_of(request)
    headers = _headers(request.scope)
    if headers.get(b"content-type", "").startswith("multipart/form-data"):
        body, attachments = await _form_message(request, runtime)
    else:
        # The JSON body; the usual one comes whole in one message, taken as it is
        # (no coroutine of read_body's a turn).
        first = await request.receive()
        raw = (first.get("body", b"") if first["type"] == "http.request"
               and not first.get("more_body", False)
               else await read_body(request.receive, first=first))
        if raw is None:
            raise ClientDisconnect  # (as request.body() says it)
        body = _message_body(loads_strict(raw))
        attachments = None if isinstance(body.content, str) else (
            await runtime.media.prepare(raw_parts(body.content), where="body.content"))
    idempotency_key = headers.get(b"idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
        raise InvalidInput("Idempotency-Key must be 1-256 characters")
    content = body.content if attachments is None else attachments.content
    assert isinstance(content, str)
    limit = runtime.settings.max_message_bytes
    if len(content) > limit // 4 and len(content.encode()) > limit:
        raise PayloadTooLarge(f"message content is over {limit} bytes")
    priority = body.priority or ("interactive" if body.stream or body.wait else None)
    origin: dict[str, Any] | None = traceparent_origin(headers.get(b"traceparent"))
    if body.output_schema is not None:
        origin = {**(origin or {}), "output_schema": body.output_schema}
    sent = await runtime.send(name, key, content, idempotency_key=idempotency_key,
                              mode=body.mode, priority=priority, stream=body.stream,
                              start=body.stream or body.wait, origin=origin,
                              attachments=attachments)
    run = sent.run
    if body.stream:
        sub = runtime.subscribe(sent.session.id)
        after = sent.events[0].seq - 1 if sent.events else 0
        return sse_response(follow_frames(sub, lambda seq: runtime.read_events(
            sent.session.id, after=seq), after, run_id=run.id, known=sent.events,
            waiting=sent.waiting()))
    if not body.wait:
        return json_response(run.to_api(name, key), 202)
    run = await runtime.wait(run.id)
    return json_response(run.to_api(name, key))


@router.get(
    "/{key:path}/events",
    response_model=EventList,
    responses={200: {"description": "A page of events, or with Accept: text/event-stream "
                                    "an SSE stream (replay, then live)",
                     "content": _STREAM},
               **ERRORS(404, 422)},
)
async def get_events(
    name: str,
    key: str,
    request: Request,
    after: int = Query(default=0, ge=0, le=INT64_MAX,
                       description="Return events with seq > after."),
    limit: int = Query(default=1000, ge=1, le=MAX_EVENTS_PAGE),
    before: int | None = Query(
        default=None, ge=1, le=INT64_MAX,
        description="Return the last `limit` events with seq < before (and > after), "
                    "oldest first: pages read backwards from the end of the log "
                    "(`before` = last_seq + 1 for the tail). Not with SSE."),
    last_event_id: str | None = Header(default=None,
                                       json_schema_extra={"pattern": _EVENT_ID}),
) -> Response:
    """The session's event log after ``after`` (with ``before``: the latest page below
    it); SSE (replay, then live) when the client sends ``Accept: text/event-stream``.
    ``Last-Event-ID`` takes precedence over ``after``."""
    runtime = runtime_of(request)
    _, session = await runtime.get_session(name, key)
    if last_event_id is not None:
        after = parse_last_event_id(last_event_id, tag=session.tag, last_seq=session.last_seq)
    if "text/event-stream" in request.headers.get("accept", ""):
        if before is not None:
            raise InvalidInput("before pages the log backwards; a stream follows it "
                               "forwards from after (or Last-Event-ID)",
                               field="query.before")
        sub = runtime.subscribe(session.id)
        return sse_response(follow_frames(
            sub, lambda seq: runtime.read_events(session.id, after=seq), after))
    events = await runtime.read_events(session.id, after=after, limit=limit, before=before)
    return json_response({"events": [e.to_api() for e in events],
                          "last_seq": session.last_seq})


@router.post("/{key:path}/checkpoints", response_model=CheckpointOut, status_code=201,
             responses=ERRORS(404, 409, 422))
async def create_checkpoint(name: str, key: str, body: CheckpointIn, request: Request
                            ) -> Response:
    """Checkpoint the session now: a named pointer to its current state (its last seq),
    logged as a ``checkpoint`` event. Names are unique within a session."""
    checkpoint = await runtime_of(request).create_checkpoint(name, key, body.name)
    return model_response(CheckpointOut, checkpoint.to_api(name, key), 201)


@router.get("/{key:path}/checkpoints", response_model=CheckpointList, responses=ERRORS(404))
async def list_checkpoints(name: str, key: str, request: Request) -> Response:
    """The session's checkpoints, oldest first (manual, auto, pause, stop, shutdown)."""
    checkpoints = await runtime_of(request).list_checkpoints(name, key)
    return model_response(CheckpointList,
                          {"checkpoints": [c.to_api(name, key) for c in checkpoints]})


@router.post("/{key:path}/restore", response_model=RestoreOut,
             responses=ERRORS(404, 409, 422))
async def restore_session(name: str, key: str, body: RestoreIn, request: Request
                          ) -> Response:
    """Set the session back to a checkpoint (id or name) or an event seq. Nothing is
    deleted: the later events stay in the log as its archive, after which a
    ``session.restored`` event says where the session's state now comes from. Refused
    (409 ``session_busy``) while a run is queued or under way."""
    session, event = await runtime_of(request).restore(
        name, key, seq=body.seq, checkpoint=body.checkpoint)
    return model_response(RestoreOut, {"session": session.to_api(name), "event": event.to_api()})


@router.post("/{key:path}/fork", response_model=SessionOut, status_code=201,
             responses=ERRORS(404, 409, 422))
async def fork_session(name: str, key: str, body: ForkIn, request: Request) -> Response:
    """A new session (``key``, or a generated one) holding this session's state at a
    checkpoint or seq; this session is untouched."""
    session = await runtime_of(request).fork(
        name, key, new_key=body.key, seq=body.seq, checkpoint=body.checkpoint)
    return model_response(SessionOut, session.to_api(name), 201)


class CompactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["summarize", "clear_tool_results"] | None = Field(
        default=None, description="Default: the agent's settings.memory.compaction.strategy.")
    keep_turns: int | None = Field(
        default=None, strict=True, ge=1, le=100,
        description="The latest turns kept verbatim. Default: the agent's "
                    "settings.memory.compaction.keep_turns.")


class CompactOut(BaseModel):
    seq: int = Field(description="The session.compacted event's seq.")
    from_seq: int
    to_seq: int
    strategy: Literal["summarize", "clear_tool_results"]
    summary: str | None
    messages: int = Field(description="Messages replaced, or tool results cleared.")
    model: str | None
    usage: dict[str, Any] | None
    estimated_tokens_before: int
    estimated_tokens_after: int


class ContextOut(BaseModel):
    summary: str | None = Field(description="The summary of the compacted turns (the "
                                            "model reads it after its instructions).")
    summary_range: dict[str, int] | None = Field(
        description="{from_seq, to_seq}: the events the summary replaces.")
    messages: list[dict[str, Any]] = Field(description="The messages the next model "
                                                       "call sends, oldest first.")
    last_seq: int
    estimated_tokens: int = Field(description="The messages and summary, estimated.")


#: Model failures that say "not now" rather than "no".
_UNAVAILABLE = frozenset({"model_unavailable", "model_outage", "model_rate_limited"})


@router.post("/{key:path}/compact", response_model=CompactOut,
             responses=ERRORS(404, 409, 422, 502, 503))
async def compact_session(name: str, key: str, request: Request,
                          body: CompactIn | None = None) -> Response:
    """Compact the session's older turns now: a summary written by the agent's
    compaction model replaces them in the model's view (``summarize``), or their tool
    results are cleared (``clear_tool_results``), logged as one ``session.compacted``
    event; the log keeps the originals. 409 ``nothing_to_compact`` when no turn older
    than the latest ``keep_turns`` is left, 409 ``session_changed`` when the session was
    restored or compacted meanwhile, 502/503 when the summary could not be written:
    each writes nothing."""
    body = body or CompactIn()
    try:
        done = await runtime_of(request).compact_session(
            name, key, strategy=body.strategy, keep_turns=body.keep_turns)
    except ModelError as exc:
        if exc.code in _UNAVAILABLE:
            exc.status = 503
        raise
    return model_response(CompactOut, done.to_api())


@router.get("/{key:path}/trace", response_model=TraceOut, responses=ERRORS(404))
async def get_session_trace(name: str, key: str, request: Request) -> Response:
    """The spans of the session's runs (its first 1,000), built from its log, as an
    OTLP/JSON ``ExportTraceServiceRequest`` (see ``GET /v1/runs/{id}/trace``)."""
    return model_response(TraceOut, await runtime_of(request).session_trace(name, key))


@router.get("/{key:path}/context", response_model=ContextOut, responses=ERRORS(404))
async def get_context(name: str, key: str, request: Request) -> Response:
    """The conversation as the model sees it now: compactions applied (the summary, the
    messages left, cleared tool results). The log (``.../events``) keeps every
    original."""
    history = await runtime_of(request).session_context(name, key)
    messages = history.for_model()
    low, high = history.summary_range
    return model_response(ContextOut, {
        "summary": history.summary,
        "summary_range": ({"from_seq": low, "to_seq": high} if history.summary is not None
                          else None),
        "messages": messages_adapter.dump_python(messages, mode="json"),
        "last_seq": history.last_seq,
        "estimated_tokens": conversation_tokens(history.summary, messages)})


@router.put("/{key:path}/policy", response_model=SessionOut, responses=ERRORS(404, 422))
async def set_session_policy(name: str, key: str, request: Request,
                             body: dict[str, Any] | None = None) -> Response:
    """Set the session's own policy layer (the top one: session < agent < daemon,
    except the daemon's deny rules); an empty body or ``null`` clears it."""
    who = require_right(request, "use", "changing a session's policy")
    session = await runtime_of(request).set_session_policy(name, key, body or None,
                                                           actor=who)
    return model_response(SessionOut, session.to_api(name))


@router.delete("/{key:path}/policy", response_model=SessionOut, responses=ERRORS(404))
async def clear_session_policy(name: str, key: str, request: Request) -> Response:
    who = require_right(request, "use", "changing a session's policy")
    session = await runtime_of(request).set_session_policy(name, key, None, actor=who)
    return model_response(SessionOut, session.to_api(name))


@router.get("/{key:path}/blobs/{blob}", responses={
    200: {"description": "The bytes, with their media type",
          "content": {"application/octet-stream": {"schema": {
              "type": "string", "format": "binary"}}}}, **ERRORS(404, 422)})
async def get_blob(name: str, key: str, blob: str, request: Request) -> Response:
    """An image or file the session's log refers to (a part's ``blob``), by its SHA-256:
    only through a session that refers to it, so a hash alone reads nothing. Served
    inert: its own media type, ``nosniff``, a sandboxing CSP, and files as
    attachments."""
    if not SHA256.fullmatch(blob):
        raise InvalidInput("a blob is the SHA-256 of its bytes (64 lower-case hex "
                           "digits)", field="path.blob")
    media_type, data = await runtime_of(request).session_blob(name, key, blob)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=86400",
               "Content-Security-Policy": "default-src 'none'; sandbox",
               "ETag": f'"{blob}"'}
    if not media_type.startswith("image/"):
        headers["Content-Disposition"] = f'attachment; filename="{blob[:16]}"'
    return Response(data, media_type=media_type, headers=headers)


@router.get("/{key:path}", response_model=SessionOut, responses=ERRORS(404))
async def get_session(name: str, key: str, request: Request) -> Response:
    _, session = await runtime_of(request).get_session(name, key)
    return model_response(SessionOut, session.to_api(name))


@router.delete("/{key:path}", status_code=204, responses=ERRORS(404))
async def delete_session(name: str, key: str, request: Request) -> Response:
    """Delete the session and its log (its active run is cancelled first)."""
    await runtime_of(request).delete_session(name, key)
    return Response(status_code=204)
