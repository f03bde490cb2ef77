"""The OpenAI-compatible door's routes: models, Chat Completions, Responses.

Each request goes through the Runtime facade like a native message: it is committed
(message + queued run) before the agent is asked anything, waits its session's turn,
obeys the agent's budgets, policy and approvals. How a request finds its session:

1. ``X-Agentd-Session: KEY`` (a header): that session of the agent;
2. Responses: ``previous_response_id``: the session of that response (a response's
   id names its run, and the run its session, so the chain is as durable as the log);
3. ``user``: the session ``openai:user:<user>``;
4. else, the conversation this door last answered for the same caller, when the
   request's earlier turns are exactly it (:mod:`._transcripts`: a stateless client
   resending its whole conversation goes on in one session);
5. else a new session (``openai:<random>``).

A session that already holds a conversation gets only the new turns (those after the
request's last assistant message); a new one gets the earlier turns too, as a
transcript in front of them. See docs/protocols/openai.md.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.assembly import Runtime
from agentd.doors.access import filter_agents, require_agent, require_owner, runtime_of
from agentd.doors.http import json_response, principal_of, trace_origin
from agentd.doors.sse import HEARTBEAT_S, is_silent, sse_response
from agentd.errors import (
    AgentdError,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RunNotFound,
    SessionNotFound,
)
from agentd.events import (
    TERMINAL_KINDS,
    ClientResultData,
    ClientToolData,
    MessageAdded,
    MessageProactive,
    MessageUser,
    RunCompleted,
    RunCompletedData,
    SessionRestored,
    ToolCallData,
    kind_of,
)
from agentd.protocols._common import json_body
from agentd.protocols.openai._transcripts import Chain, Continued, Transcripts
from agentd.protocols.openai._wire import (
    ChatRequest,
    Conversation,
    ResponsesRequest,
    chat_conversation,
    client_tools,
    output_schema,
    parse,
    responses_conversation,
)
from agentd.runtime import SendResult, Token
from agentd.store.records import RunRecord

__all__ = ["PREFIXES", "UNSERVED", "router"]

router = APIRouter(tags=["openai"], include_in_schema=False)

#: The paths this door answers (its errors are in OpenAI's shape).
PREFIXES = ("/v1/models", "/v1/chat/completions", "/v1/responses")
#: The rest of OpenAI's API, which agentd does not serve: an SDK pointed at agentd that
#: calls one (``client.embeddings.create``...) gets a 404 in OpenAI's shape, which it
#: raises as ``NotFoundError``, not agentd's. (From the resources of the official
#: ``openai`` package; ``/v1/agents``, ``/v1/skills`` and ``/v1/evals`` are agentd's own
#: API: its evaluations are not OpenAI's Evals API, whose SDK calls get agentd's 404s
#: and 422s there.)
UNSERVED = tuple(f"/v1/{name}" for name in (
    "assistants", "audio", "batches", "chatkit", "completions", "containers",
    "conversations", "embeddings", "files", "fine_tuning", "images", "moderations",
    "organization", "realtime", "threads", "uploads", "vector_stores", "videos"))
SESSION_HEADER = "x-agentd-session"
_RESPONSE_PREFIX = "resp_"
_COMPLETED = kind_of(RunCompleted)
_CHAT_PREFIX = "chatcmpl-"
#: What a stateless client's conversations ended with (:mod:`._transcripts`).
_transcripts = Transcripts()
#: What changes a session's conversation between runs: a stateless client's digest of
#: it no longer holds after one of these.
_MOVES = frozenset(kind_of(k) for k in (MessageUser, MessageAdded, MessageProactive,
                                        SessionRestored))


class RunDidNotComplete(AgentdError):
    """A run that ended other than completed, or waits for a person's decision."""

    status = 409
    code = "run_not_completed"


# -- models ------------------------------------------------------------------------


def _model(name: str, created_at: float) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created_at),
            "owned_by": "agentd"}


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """Every agent the token may use, as a model (its scope's: ``access``)."""
    agents = filter_agents(request, await runtime_of(request).list_agents())
    return json_response({"object": "list",
                          "data": [_model(a.name, a.created_at) for a in agents]})


@router.get("/v1/models/{model:path}")
async def get_model(model: str, request: Request) -> Response:
    await require_agent(request, model)
    agent = await runtime_of(request).stored_agent(model)
    return json_response(_model(agent.name, agent.created_at))


# -- sending -----------------------------------------------------------------------


async def _continued(runtime: Runtime, agent: str, chain: Chain) -> str | None:
    """The session a stateless request's earlier turns continue: the one that ended
    with exactly them, if it is still as it was then."""
    found = _transcripts.take(chain.digest)
    if found is None:
        return None
    try:
        _, session = await runtime.get_session(agent, found.key)
    except SessionNotFound:
        return None
    if session.id != found.session_id:
        return None  # deleted, and its key used again
    if session.last_seq != found.seq and any(
            e.kind in _MOVES for e in await runtime.read_events(session.id,
                                                                after=found.seq)):
        return None  # it went on without this client
    return session.key


def _chain(request: Request, agent: str, user: str | None, previous: str | None,
           conversation: Conversation) -> Chain | None:
    """The conversation's digests when the request names no session (a stateless
    client's), else None."""
    if previous is not None or user or SESSION_HEADER in request.headers:
        return None
    who = principal_of(request.scope)
    scope = (agent, who.source, who.name or "") if who is not None else (agent,)
    return Chain(scope, conversation.roles, conversation.texts, conversation.split)


def _answered_by(chain: Chain | None, sent: SendResult, run: RunRecord, seq: int,
                 reply: str | None = None) -> None:
    """Remember the conversation ``run`` answered (its end at ``seq``), for the
    stateless client's next request."""
    if chain is not None and run.status == "completed":
        _transcripts.keep(chain.answered(run.output or "" if reply is None else reply),
                          Continued(session_id=sent.session.id, key=sent.session.key,
                                    seq=seq))


async def _end_seq(runtime: Runtime, run: RunRecord) -> int:
    """The seq of the event that ended ``run`` (its own events are read)."""
    events = await runtime.read_events(run.session_id,
                                       after=max((run.queued_seq or 1) - 1, 0))
    return next((e.seq for e in reversed(events)
                 if e.run_id == run.id and e.kind in TERMINAL_KINDS), 0)


async def _session_for(request: Request, runtime: Runtime, agent: str,
                       user: str | None, previous: str | None,
                       conversation: Conversation, chain: Chain | None
                       ) -> tuple[str, bool]:
    """The session key of a request, and whether that session holds a conversation
    already (see the module's docstring; only looked up when the request has earlier
    turns to give a new session)."""
    header = request.headers.get(SESSION_HEADER)
    if previous is not None:
        _, owner, key = await _run_of_response(request, previous, "previous_response_id")
        if owner != agent:
            raise InvalidInput(f"previous_response_id {previous!r} is a response of "
                               f"another model ({owner!r})", field="previous_response_id")
        if header is not None and header != key:
            raise InvalidInput(f"the {SESSION_HEADER} header names another session than "
                               "previous_response_id", field="header." + SESSION_HEADER)
        return key, True
    if header is not None:
        key = header
    elif user:
        key = f"openai:user:{user}"
    else:
        continued = (await _continued(runtime, agent, chain)
                     if chain is not None and conversation.has_earlier else None)
        if continued is not None:
            return continued, True
        return f"openai:{secrets.token_hex(12)}", False
    if not conversation.has_earlier:
        return key, True  # nothing to add either way
    try:
        await runtime.get_session(agent, key)
    except SessionNotFound:
        return key, False
    return key, True


# -- the caller's tools ---------------------------------------------------------------

_CALL_PREFIX = "call_"


def _door_call_id(run_id: str, index: int) -> str:
    """The id the door gives the ``index``-th call run ``run_id`` handed to its caller:
    a stateless client's next request (the whole conversation, no session named)
    finds the run, and so the session, from its tool results' ids."""
    return f"{_CALL_PREFIX}{run_id}_{index}"


def _call_of(call_id: str) -> tuple[str, int] | None:
    if not call_id.startswith(_CALL_PREFIX):
        return None
    run_id, _, index = call_id.removeprefix(_CALL_PREFIX).rpartition("_")
    return (run_id, int(index)) if run_id and index.isdigit() else None


async def _handed(runtime: Runtime, run: RunRecord) -> list[ToolCallData]:
    """The calls ``run`` ended with for its caller to run (``client_tool_calls``)."""
    if run.status != "completed":
        return []
    events = await runtime.read_events(run.session_id, after=max((run.queued_seq or 1) - 1, 0))
    for event in reversed(events):
        if event.run_id == run.id and event.kind == _COMPLETED:
            return list(cast(RunCompletedData, event.data).get("client_tool_calls") or ())
    return []


async def _checked_tools(runtime: Runtime, agent: str, tools: list[ClientToolData]
                         ) -> list[ClientToolData]:
    """The caller's tools, none named as one of the agent's own."""
    if tools:
        own = set((await runtime.stored_agent(agent)).tools)
        for i, tool in enumerate(tools):
            if tool["name"] in own:
                raise InvalidInput(f"tools[{i}]: the agent has a tool named "
                                   f"{tool['name']!r} of its own", field=f"tools[{i}].name")
    return tools


async def _answered(runtime: Runtime, agent: str, conversation: Conversation, param: str
                    ) -> tuple[str, list[ClientResultData]] | None:
    """The session and the results, when the conversation's tool results answer calls
    a response of ``agent`` handed to its caller (ids the door gave: ``call_RUN_N``);
    None when they are not such results (they stay text, as any tool message)."""
    found: tuple[RunRecord, str, list[ToolCallData]] | None = None
    out: list[ClientResultData] = []
    for call_id, output in conversation.results:
        parsed = _call_of(call_id)
        if parsed is None:
            return None
        run_id, index = parsed
        if found is None:
            try:
                run, owner, key = await runtime.get_run(run_id)
            except RunNotFound:
                return None
            if owner != agent:
                # Another agent's calls (an openai-agents handoff moved the conversation
                # here): this agent's session has none of them; they are text.
                return None
            found = (run, key, await _handed(runtime, run))
        run, key, calls = found
        if run.id != run_id or index >= len(calls):
            raise InvalidInput(f"{call_id!r} is not a call of the response the other "
                               "results answer", field=param)
        out.append({"call_id": calls[index]["id"], "name": calls[index]["name"],
                    "output": output})
    return None if found is None else (found[1], out)


async def _session_and_results(request: Request, runtime: Runtime, agent: str,
                               user: str | None, previous: str | None,
                               conversation: Conversation, param: str, chain: Chain | None
                               ) -> tuple[str, bool, Conversation, list[ClientResultData]]:
    """The session a request goes to, whether it holds a conversation already, the
    conversation to send, and the tool results it carries for the run's model."""
    answered = None if previous is not None else await _answered(
        runtime, agent, conversation, param)
    if answered is None:
        key, known = await _session_for(request, runtime, agent, user, previous,
                                        conversation, chain)
        if previous is None or not conversation.results:
            return key, known, conversation, []
        # Responses: results of the previous response's calls.
        run, _, _ = await _run_of_response(request, previous, "previous_response_id")
        calls = {_door_call_id(run.id, i): c
                 for i, c in enumerate(await _handed(runtime, run))}
        if not all(call_id in calls for call_id, _ in conversation.results):
            return key, known, conversation, []
        return key, known, conversation.without_results(), [
            {"call_id": calls[call_id]["id"], "name": calls[call_id]["name"], "output": text}
            for call_id, text in conversation.results]
    key, results = answered
    header = request.headers.get(SESSION_HEADER)
    if header is not None and header != key:
        raise InvalidInput(f"the {SESSION_HEADER} header names another session than the "
                           "tool results' calls", field="header." + SESSION_HEADER)
    return key, True, conversation.without_results(), results


async def _send(request: Request, runtime: Runtime, agent: str, key: str,
                conversation: Conversation, *, known: bool, stream: bool,
                tools: list[ClientToolData] | None = None,
                results: list[ClientResultData] | None = None,
                schema: dict[str, Any] | None = None) -> SendResult:
    content = conversation.content(with_earlier=not known)
    parts = conversation.parts(with_earlier=not known)
    # (Checked before anything else is: a bad image is a 4xx with nothing written.)
    attachments = (await runtime.media.prepare(parts, where="content")
                   if parts is not None else None)
    if attachments is not None:
        content = attachments.content
    limit = runtime.settings.max_message_bytes
    if (len(content.encode()) + len(conversation.instructions.encode())
            + sum(len(r["output"].encode()) for r in results or ())) > limit:
        raise PayloadTooLarge(f"the message is over {limit} bytes")
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
        raise InvalidInput("Idempotency-Key must be 1-256 characters",
                           field="header.idempotency-key")
    # The request's system prompt, tools and tool results: in the run's message (so a
    # resumed run has them too).
    origin: dict[str, Any] = {}
    if conversation.instructions:
        origin["instructions"] = conversation.instructions
    if tools:
        origin["client_tools"] = tools
    if results:
        origin["tool_results"] = results
    if schema is not None:
        origin["output_schema"] = schema
    origin.update(trace_origin(request) or {})
    return await runtime.send(agent, key, content, idempotency_key=idempotency_key,
                              mode="enqueue", priority="interactive", stream=stream,
                              origin=origin or None, start=True, follow=stream,
                              attachments=attachments)


def _finished(run: RunRecord) -> RunRecord:
    """``run`` if it completed; else the error its client is told."""
    if run.status == "completed":
        return run
    if run.status == "waiting_approval":
        raise RunDidNotComplete(
            f"run {run.id} waits for a decision on a tool call (approve or deny it: "
            f"POST /v1/runs/{run.id}/decision, or in `agentd approvals`)",
            code="approval_required", details={"run_id": run.id})
    error = run.error or {}
    message = error.get("message") or f"the run ended {run.status}"
    code = str(error.get("code") or f"run_{run.status}")
    if code == "budget_exceeded":
        exc = AgentdError(message, code="insufficient_quota", details={"run_id": run.id})
        exc.status = 429
        raise exc
    raise RunDidNotComplete(f"run {run.id} {run.status}: {message}", code=code,
                            details={"run_id": run.id})


def _usage(run: RunRecord) -> tuple[int, int]:
    return int(run.usage.get("input_tokens", 0)), int(run.usage.get("output_tokens", 0))


async def _follow_run(runtime: Runtime, sent: SendResult, structured: bool = False
                      ) -> AsyncIterator[str | tuple[RunRecord, int] | None]:
    """The run's text deltas as they come (none for a run with an output schema: its
    answer is known only once it matched), ``None`` for a heartbeat, then the run as
    stored once it ended, with the seq of its end."""
    after = sent.events[0].seq - 1 if sent.events and not sent.duplicate else 0
    run_id = sent.run.id
    async for item in runtime.follow(sent.session.id, after,
                                     known=None if sent.duplicate else sent.events,
                                     heartbeat_s=HEARTBEAT_S,
                                     subscription=sent.subscription):
        if item is None:
            yield None
        elif isinstance(item, Token):
            if item.run_id == run_id and item.text and not structured:
                yield item.text
        elif item.run_id == run_id and item.kind in TERMINAL_KINDS and not is_silent(item):
            run, _, _ = await runtime.get_run(run_id)
            yield run, item.seq
            return


def _sse(data: Any, event: str | None = None) -> bytes:
    head = b"event: %s\n" % event.encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def _error_frame(exc: AgentdError) -> dict[str, Any]:
    return {"message": exc.message, "type": "server_error", "param": None,
            "code": exc.code}


# -- Chat Completions --------------------------------------------------------------


def _chat_calls(run: RunRecord, calls: list[ToolCallData]) -> list[dict[str, Any]]:
    return [{"id": _door_call_id(run.id, i), "type": "function",
             "function": {"name": c["name"], "arguments": orjson.dumps(c["arguments"]).decode()}}
            for i, c in enumerate(calls)]


def _completion(run: RunRecord, agent: str, calls: list[ToolCallData]) -> dict[str, Any]:
    prompt, completion = _usage(run)
    message: dict[str, Any] = {"role": "assistant", "content": run.output or "",
                               "refusal": None}
    if calls:
        message["content"] = run.output or None
        message["tool_calls"] = _chat_calls(run, calls)
    return {
        "id": _CHAT_PREFIX + run.id, "object": "chat.completion",
        "created": int(run.created_at), "model": agent,
        "choices": [{"index": 0, "finish_reason": "tool_calls" if calls else "stop",
                     "logprobs": None, "message": message}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
    }


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    """OpenAI's Chat Completions, answered by the agent named as ``model``."""
    runtime = runtime_of(request)
    body: ChatRequest = parse(ChatRequest, await json_body(request))
    await require_agent(request, body.model)
    conversation = chat_conversation(body)
    schema = await asyncio.to_thread(output_schema, body.response_format,
                                     "response_format", flat=False)
    tools = await _checked_tools(runtime, body.model,
                                 client_tools(body.tools, body.tool_choice, flat=False))
    chain = _chain(request, body.model, body.user, None, conversation)
    key, known, conversation, results = await _session_and_results(
        request, runtime, body.model, body.user, None, conversation, "messages", chain)
    sent = await _send(request, runtime, body.model, key, conversation, known=known,
                       stream=body.stream, tools=tools, results=results, schema=schema)
    headers = {"x-agentd-session": key, "x-agentd-run": sent.run.id}
    if not body.stream:
        run = _finished(await runtime.wait(sent.run.id))
        calls = await _handed(runtime, run) if tools else []
        if chain is not None:
            _answered_by(chain, sent, run, await _end_seq(runtime, run))
        response = json_response(_completion(run, body.model, calls))
        response.headers.update(headers)
        return response
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    response = sse_response(_chat_chunks(runtime, sent, body.model, include_usage,
                                         bool(tools), chain, schema is not None))
    response.headers.update(headers)
    return response


async def _chat_chunks(runtime: Runtime, sent: SendResult, agent: str,
                       include_usage: bool, tools: bool, chain: Chain | None,
                       structured: bool = False) -> AsyncIterator[bytes]:
    base = {"id": _CHAT_PREFIX + sent.run.id, "object": "chat.completion.chunk",
            "created": int(sent.run.created_at or time.time()), "model": agent}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]})

    # Frames ready together go out in one write: the role chunk with the first text,
    # the last text with the end.
    # (With the caller's tools offered, the answer may be calls: no content yet, as
    # OpenAI's first chunk of calls has none, so a client does not open a text part.)
    pending = [chunk({"role": "assistant"} if tools else {"role": "assistant", "content": ""})]
    if sent.busy_run is not None:
        # Queued behind another run: say so now rather than with the first text.
        yield pending.pop()
    streamed = False
    async for item in _follow_run(runtime, sent, structured):
        if item is None:
            pending.append(b": ping\n\n")
        elif isinstance(item, str):
            streamed = True
            pending.append(chunk({"content": item}))
        else:
            try:
                run = _finished(item[0])
            except AgentdError as exc:
                pending.append(_sse({"error": _error_frame(exc)}))
                yield b"".join(pending)
                return
            _answered_by(chain, sent, run, item[1])
            if not streamed and run.output:
                pending.append(chunk({"content": run.output}))
            calls = await _handed(runtime, run) if tools else []
            if calls:
                pending.append(chunk({"tool_calls": [
                    {"index": i, **call} for i, call in enumerate(_chat_calls(run, calls))]}))
            pending.append(chunk({}, "tool_calls" if calls else "stop"))
            if include_usage:
                prompt, completion = _usage(run)
                pending.append(_sse({**base, "choices": [], "usage": {
                    "prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}}))
            pending.append(b"data: [DONE]\n\n")
            yield b"".join(pending)
            return
        yield b"".join(pending)
        pending = []


# -- Responses ---------------------------------------------------------------------


async def _run_of_response(request: Request, response_id: str, field: str
                           ) -> tuple[RunRecord, str, str]:
    """The run a response id names, with its agent and session key; 404
    ``response_not_found`` for none, or one of an agent outside the token's scope."""
    if not response_id.startswith(_RESPONSE_PREFIX):
        raise InvalidInput(f"{response_id!r} is not a response id", field=field)
    missing = NotFound(f"no response {response_id!r}", code="response_not_found",
                       details={"errors": [{"field": field, "message": "not found"}]})
    try:
        found = await runtime_of(request).get_run(
            response_id.removeprefix(_RESPONSE_PREFIX))
    except RunNotFound:
        raise missing from None
    await require_owner(request, found[1], missing)
    return found


_STATUS = {"queued": "queued", "running": "in_progress",
           "waiting_approval": "in_progress", "completed": "completed",
           "failed": "failed", "cancelled": "cancelled", "interrupted": "incomplete"}


def _message_item(run: RunRecord, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": "msg_" + run.id, "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}


def _function_items(run: RunRecord, calls: list[ToolCallData]) -> list[dict[str, Any]]:
    return [{"type": "function_call", "id": f"fc_{run.id}_{i}",
             "call_id": _door_call_id(run.id, i), "name": c["name"],
             "arguments": orjson.dumps(c["arguments"]).decode(), "status": "completed"}
            for i, c in enumerate(calls)]


def _response(run: RunRecord, agent: str, previous: str | None,
              calls: list[ToolCallData] | None = None) -> dict[str, Any]:
    prompt, completion = _usage(run)
    status = _STATUS.get(run.status, "in_progress")
    done = run.status == "completed"
    error = run.error if run.status == "failed" else None
    output: list[dict[str, Any]] = []
    if done and (run.output or not calls):
        output.append(_message_item(run, run.output or "", "completed"))
    if done and calls:
        output += _function_items(run, calls)
    return {
        "id": _RESPONSE_PREFIX + run.id, "object": "response",
        "created_at": int(run.created_at), "status": status, "model": agent,
        "output": output,
        "error": ({"code": str(error.get("code", "run_failed")),
                   "message": str(error.get("message", ""))} if error else None),
        "incomplete_details": None, "instructions": None, "metadata": {},
        "parallel_tool_calls": True, "temperature": None, "top_p": None,
        "tool_choice": "auto", "tools": [], "previous_response_id": previous,
        "usage": {"input_tokens": prompt, "output_tokens": completion,
                  "total_tokens": prompt + completion,
                  "input_tokens_details": {
                      "cached_tokens": int(run.usage.get("cached_tokens", 0)),
                      "cache_write_tokens": int(run.usage.get("cache_write_tokens", 0))},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    """OpenAI's Responses API: ``previous_response_id`` continues that response's
    session."""
    runtime = runtime_of(request)
    body: ResponsesRequest = parse(ResponsesRequest, await json_body(request))
    await require_agent(request, body.model)
    conversation = responses_conversation(body)
    schema = await asyncio.to_thread(output_schema, (body.text or {}).get("format"),
                                     "text.format", flat=True)
    tools = await _checked_tools(runtime, body.model,
                                 client_tools(body.tools, body.tool_choice, flat=True))
    chain = _chain(request, body.model, body.user, body.previous_response_id,
                   conversation)
    key, known, conversation, results = await _session_and_results(
        request, runtime, body.model, body.user, body.previous_response_id, conversation,
        "input", chain)
    sent = await _send(request, runtime, body.model, key, conversation, known=known,
                       stream=body.stream, tools=tools, results=results, schema=schema)
    headers = {"x-agentd-session": key, "x-agentd-run": sent.run.id}
    if not body.stream:
        run = await runtime.wait(sent.run.id)
        if run.status == "waiting_approval":
            _finished(run)
        calls = await _handed(runtime, run) if tools else []
        if chain is not None and run.status == "completed":
            _answered_by(chain, sent, run, await _end_seq(runtime, run))
        response = json_response(_response(run, body.model, body.previous_response_id,
                                           calls))
    else:
        response = sse_response(_response_events(runtime, sent, body.model,
                                                 body.previous_response_id, bool(tools),
                                                 chain, schema is not None))
    response.headers.update(headers)
    return response


async def _response_events(runtime: Runtime, sent: SendResult, agent: str,
                           previous: str | None, tools: bool, chain: Chain | None,
                           structured: bool = False) -> AsyncIterator[bytes]:
    seq = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        seq += 1
        return _sse({"type": kind, "sequence_number": seq, **fields}, kind)

    run = sent.run
    item_id = "msg_" + run.id
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    opened = False

    def open_message() -> list[bytes]:
        nonlocal opened
        opened = True
        return [event("response.output_item.added", output_index=0,
                      item={**_message_item(run, "", "in_progress"), "content": []}),
                event("response.content_part.added", item_id=item_id, output_index=0,
                      content_index=0, part=part)]

    # Frames ready together go out in one write (the opening four with the first text).
    # With the caller's tools offered, the answer may be calls only: the message item
    # opens with the first text, so no empty message comes before the calls.
    pending = [
        event("response.created", response=_response(run, agent, previous)),
        event("response.in_progress", response={
            **_response(run, agent, previous), "status": "in_progress"}),
        *(() if tools else open_message())]
    if sent.busy_run is not None:
        # Queued behind another run: say so now rather than with the first text.
        yield b"".join(pending)
        pending = []
    text: list[str] = []
    async for item in _follow_run(runtime, sent, structured):
        if item is None:
            pending.append(b": ping\n\n")
        elif isinstance(item, str):
            text.append(item)
            if not opened:
                pending += open_message()
            pending.append(event("response.output_text.delta", item_id=item_id,
                                 output_index=0, content_index=0, delta=item, logprobs=[]))
        else:
            ended, end_seq = item
            _answered_by(chain, sent, ended, end_seq)
            pending += _response_end(event, ended, agent, previous, text, opened,
                                     await _handed(runtime, ended) if tools else [],
                                     open_message)
            yield b"".join(pending)
            return
        yield b"".join(pending)
        pending = []


def _response_end(event: Callable[..., bytes], run: RunRecord, agent: str,
                  previous: str | None, text: list[str], opened: bool,
                  calls: list[ToolCallData], open_message: Callable[[], list[bytes]]
                  ) -> list[bytes]:
    """The events that end a Responses stream: the message item closed (opened first
    if no text was streamed), the caller's calls as ``function_call`` items, the
    response as it ended."""
    final = _response(run, agent, previous, calls)
    output = run.output or ""
    if calls and opened and not output:
        # (An empty message item was opened before the calls: it stays, empty.)
        final["output"].insert(0, _message_item(run, "", "completed"))
    if run.status != "completed":
        return [event("response.failed" if run.status == "failed" else
                      "response.incomplete", response=final)]
    item_id = "msg_" + run.id
    part = {"type": "output_text", "text": output, "annotations": [], "logprobs": []}
    out: list[bytes] = []
    if opened or output or not calls:
        if not opened:
            out += open_message()
        if not text and output:
            out.append(event("response.output_text.delta", item_id=item_id,
                             output_index=0, content_index=0, delta=output, logprobs=[]))
        out += [
            event("response.output_text.done", item_id=item_id, output_index=0,
                  content_index=0, text=output, logprobs=[]),
            event("response.content_part.done", item_id=item_id, output_index=0,
                  content_index=0, part=part),
            event("response.output_item.done", output_index=0,
                  item=_message_item(run, output, "completed"))]
    first = 1 if out else 0
    for index, call in enumerate(_function_items(run, calls), start=first):
        out += [
            event("response.output_item.added", output_index=index,
                  item={**call, "arguments": "", "status": "in_progress"}),
            event("response.function_call_arguments.delta", item_id=call["id"],
                  output_index=index, delta=call["arguments"]),
            event("response.function_call_arguments.done", item_id=call["id"],
                  output_index=index, name=call["name"], arguments=call["arguments"]),
            event("response.output_item.done", output_index=index, item=call)]
    out.append(event("response.completed", response=final))
    return out


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request) -> Response:
    """A response (its run) as it is now."""
    run, agent, _ = await _run_of_response(request, response_id, "response_id")
    return json_response(_response(run, agent, None))


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request) -> Response:
    """Cancel the response's run (a run already ended is answered as it is)."""
    runtime = runtime_of(request)
    run, agent, _ = await _run_of_response(request, response_id, "response_id")
    if not run.terminal:
        try:
            run, agent, _ = await runtime.cancel_run(run.id)
        except Conflict:
            run, agent, _ = await runtime.get_run(run.id)
    return json_response(_response(run, agent, None))
