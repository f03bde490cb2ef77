"""The Agent Protocol door's assistants, threads and runs (``langgraph-sdk``'s paths
under ``/langgraph``).

Assistants are agents (``assistant_id`` = ``graph_id`` = the agent's name). A thread is
a session of one agent whose key is ``lg:<thread id>``: nothing is kept by the door,
so a restart (or another node) finds every thread in the store. A thread created with
a ``graph_id`` gets the id ``<agent>:<uuid>`` and is found in that agent directly;
one created without gets a bare uuid and is looked for in each agent's sessions (it
is bound to the first assistant that runs on it). A run is an agentd run of that
session; one waiting for a decision on a tool call is ``interrupted``, and a run with
``command: {"resume": ...}`` decides it. See docs/protocols/langgraph.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agentd.assembly import Runtime
from agentd.doors.access import filter_agents, may_use, require_agent, runtime_of
from agentd.doors.http import actor, json_response, principal_of, trace_origin
from agentd.doors.sse import HEARTBEAT_S, is_silent, sse_response
from agentd.errors import (
    AgentNotFound,
    CheckpointNotFound,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RunNotFound,
    SessionNotFound,
)
from agentd.events import TERMINAL_KINDS
from agentd.protocols._common import json_body
from agentd.protocols.langgraph._values import ThreadValues, Values
from agentd.protocols.langgraph._wire import (
    AssistantSearch,
    RunCreate,
    StateUpdate,
    ThreadCreate,
    ThreadSearch,
    added_messages,
    assistant,
    check_new_ids,
    input_text,
    iso,
    message,
    parse,
    run_status,
    run_view,
    thread_status,
    unsupported,
)
from agentd.runtime import Also, Subscription, Token
from agentd.store.records import EventRecord, RunRecord, SessionRecord

__all__ = ["KEY_PREFIX", "PREFIX", "RUN_PATH", "router", "serve_run"]

PREFIX = "/langgraph"
#: A thread's session key is this plus the thread's id.
KEY_PREFIX = "lg:"
router = APIRouter(prefix=PREFIX, tags=["langgraph"], include_in_schema=False)
_NODE = "agent"  # the one "node" an agent's steps are reported under


class ThreadNotFound(NotFound):
    code = "thread_not_found"


# -- assistants --------------------------------------------------------------------


async def _assistant(request: Request, assistant_id: str) -> str:
    """The agent an assistant id names; 404 for none, or one outside the token's scope
    (the same answer)."""
    try:
        await require_agent(request, assistant_id)
        return (await runtime_of(request).find_agent(assistant_id)).name
    except AgentNotFound:
        raise NotFound(f"no assistant {assistant_id!r} (assistants are agentd's agents)",
                       code="assistant_not_found") from None


@router.post("/assistants/search")
async def search_assistants(request: Request) -> Response:
    body: AssistantSearch = parse(AssistantSearch, await json_body(request))
    agents = filter_agents(request, await runtime_of(request).list_agents())
    wanted = body.graph_id or body.name
    found = [assistant(a) for a in agents if wanted is None or a.name == wanted]
    if body.metadata:
        found = []  # agents carry no assistant metadata: no metadata filter matches
    return json_response(found[body.offset:body.offset + body.limit])


@router.post("/assistants/count")
async def count_assistants(request: Request) -> Response:
    body: AssistantSearch = parse(AssistantSearch, await json_body(request))
    agents = filter_agents(request, await runtime_of(request).list_agents())
    wanted = body.graph_id or body.name
    return json_response(0 if body.metadata else
                         sum(1 for a in agents if wanted is None or a.name == wanted))


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, request: Request) -> Response:
    runtime = runtime_of(request)
    name = await _assistant(request, assistant_id)
    return json_response(assistant(await runtime.stored_agent(name)))


# -- threads -----------------------------------------------------------------------


def _check_thread_id(thread_id: str) -> None:
    if (not 0 < len(thread_id) <= 200 or any(c in thread_id for c in "/\\")
            or any(ord(c) < 32 or ord(c) == 127 for c in thread_id)):
        raise InvalidInput("a thread id is 1-200 characters with no slash or control "
                           "character", field="path.thread_id")


async def _locate(request: Request, thread_id: str
                  ) -> tuple[str, SessionRecord | None]:
    """The agent a thread belongs to and its session (None: a thread whose id names an
    agent, ``<agent>:...``, that has run nothing yet); ThreadNotFound otherwise. An id
    whose part before ``:`` names no agent is an id the client chose: looked for in
    every agent, like a bare uuid. Only the agents of the token's scope are looked in:
    a thread of another is "not found"."""
    runtime = runtime_of(request)
    _check_thread_id(thread_id)
    key = KEY_PREFIX + thread_id
    bound, sep, _ = thread_id.partition(":")
    if sep and await may_use(request, bound):
        try:
            _, session = await runtime.get_session(bound, key)
            return bound, session
        except SessionNotFound:
            return bound, None
        except AgentNotFound:
            pass
    for agent in filter_agents(request, await runtime.list_agents()):
        try:
            _, session = await runtime.get_session(agent.name, key)
        except (SessionNotFound, AgentNotFound):
            continue
        return agent.name, session
    raise ThreadNotFound(f"no thread {thread_id!r}")


_values = ThreadValues()


def _with_values(content: dict[str, Any]) -> Response:
    """A thread or its state as JSON, its ``values`` (a thread's :class:`Values`)
    written with one copy of them."""
    values = content.get("values")
    if not isinstance(values, Values):
        return json_response(content)
    rest = orjson.dumps({k: v for k, v in content.items() if k != "values"})
    return Response(b"".join([b'{"values":', *values.parts(),
                              b"," if len(rest) > 2 else b"", rest[1:]]),
                    media_type="application/json")


async def _last_run(runtime: Runtime, agent: str, key: str) -> RunRecord | None:
    page = await runtime.list_runs(agent=agent, session=key, limit=1)
    return page.runs[0][0] if page.runs else None


async def _thread(runtime: Runtime, thread_id: str, agent: str,
                  session: SessionRecord | None, *, with_values: bool) -> dict[str, Any]:
    last = await _last_run(runtime, agent, session.key) if session else None
    # A thread that has run nothing is not stored (its session begins with its first
    # message): it is as new as the request (it said 1970-01-01).
    created = session.created_at if session else time.time()
    values: Values | dict[str, Any] = {"messages": []}
    if with_values and session is not None:
        values = await _values.of(runtime, session.id)
    view: dict[str, Any] = {
        "thread_id": thread_id, "created_at": iso(created),
        "updated_at": iso(session.updated_at if session else created),
        "metadata": {"graph_id": agent, "assistant_id": agent},
        "status": thread_status(last), "values": values if with_values else None,
        "interrupts": {},
    }
    waiting = await _interrupts(runtime, agent, last)
    if waiting and last is not None:
        view["interrupts"] = {last.id: waiting}
    return view


async def _interrupts(runtime: Runtime, agent: str, run: RunRecord | None
                      ) -> list[dict[str, Any]]:
    """What ``run`` waits for, as LangGraph interrupts (none unless it waits)."""
    if run is None or run.status != "waiting_approval":
        return []
    asked = await _pending(runtime, agent, run.id)
    return [_interrupt(run, asked)]


async def _pending(runtime: Runtime, agent: str, run_id: str) -> dict[str, Any] | None:
    for asked in await runtime.approvals.pending(agent):
        if asked.get("run_id") == run_id:
            return asked
    return None


def _interrupt(run: RunRecord, asked: dict[str, Any] | None) -> dict[str, Any]:
    value: dict[str, Any] = {"run_id": run.id,
                             "resume": "command={'resume': <one of options>}"}
    if asked is not None:
        # The call as the model made it: untrusted text for the person who decides.
        value.update({k: asked.get(k) for k in ("approval_id", "kind", "name",
                                                 "arguments", "reason", "options")})
    return {"id": str(value.get("approval_id") or run.id), "value": value}


@router.post("/threads")
async def create_thread(request: Request) -> Response:
    """A new thread id (nothing is stored until its first run: a thread is a
    session, and a session begins with its first message)."""
    runtime = runtime_of(request)
    body: ThreadCreate = parse(ThreadCreate, await json_body(request))
    graph = body.graph_id or (body.metadata or {}).get("graph_id") or (
        body.metadata or {}).get("assistant_id")
    if graph is not None:
        graph = await _assistant(request, str(graph))
    thread_id = body.thread_id or (f"{graph}:{uuid.uuid4()}" if graph else
                                   str(uuid.uuid4()))
    _check_thread_id(thread_id)
    if body.thread_id is not None:
        try:
            agent, session = await _locate(request, thread_id)
        except ThreadNotFound:
            pass
        else:
            if session is not None:
                if body.if_exists == "do_nothing":
                    return _with_values(await _thread(runtime, thread_id, agent,
                                                      session, with_values=True))
                raise Conflict(f"thread {thread_id!r} exists", code="thread_exists")
    agent = graph or ""
    view = await _thread(runtime, thread_id, agent, None, with_values=True)
    if not graph:
        view["metadata"] = {}
    view["metadata"].update(body.metadata or {})
    return json_response(view)


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: str, request: Request) -> Response:
    runtime = runtime_of(request)
    agent, session = await _locate(request, thread_id)
    return _with_values(await _thread(runtime, thread_id, agent, session,
                                      with_values=True))


@router.delete("/threads/{thread_id}")
async def delete_thread(thread_id: str, request: Request) -> Response:
    runtime = runtime_of(request)
    agent, session = await _locate(request, thread_id)
    if session is not None:
        await runtime.delete_session(agent, session.key)
    return Response(status_code=204)


async def _found_threads(request: Request) -> tuple[ThreadSearch, list[dict[str, Any]]]:
    """The threads a search or count asks for, newest first."""
    runtime = runtime_of(request)
    body: ThreadSearch = parse(ThreadSearch, await json_body(request))
    metadata = dict(body.metadata or {})
    graph = metadata.pop("graph_id", None)
    graph = metadata.pop("assistant_id", None) if graph is None else graph
    if metadata:
        return body, []  # threads keep no other metadata
    agents = ([await _assistant(request, str(graph))] if graph else
              [a.name for a in filter_agents(request, await runtime.list_agents())])
    found: list[tuple[str, SessionRecord]] = []
    for agent in agents:
        found += [(agent, s) for s in await runtime.list_sessions(agent)
                  if s.key.startswith(KEY_PREFIX)]
    if body.ids is not None:
        ids = set(body.ids)
        found = [f for f in found if f[1].key.removeprefix(KEY_PREFIX) in ids]
    found.sort(key=lambda f: -f[1].updated_at)
    out: list[dict[str, Any]] = []
    for agent, session in found:
        view = await _thread(runtime, session.key.removeprefix(KEY_PREFIX), agent,
                             session, with_values=False)
        if body.status is None or view["status"] == body.status:
            out.append(view)
    return body, out


@router.post("/threads/search")
async def search_threads(request: Request) -> Response:
    """The threads of every agent (of one, with ``metadata.graph_id`` or
    ``assistant_id``), newest first."""
    body, found = await _found_threads(request)
    return json_response(found[body.offset:body.offset + body.limit])


@router.post("/threads/count")
async def count_threads(request: Request) -> Response:
    _, found = await _found_threads(request)
    return json_response(len(found))


async def _state(request: Request, thread_id: str) -> dict[str, Any]:
    runtime = runtime_of(request)
    agent, session = await _locate(request, thread_id)
    thread = await _thread(runtime, thread_id, agent, session, with_values=True)
    seq = session.last_seq if session else 0
    interrupts = [i for group in thread["interrupts"].values() for i in group]
    return {"values": thread["values"], "next": [_NODE] if interrupts else [],
            "tasks": [], "interrupts": interrupts,
            "checkpoint": {"thread_id": thread_id, "checkpoint_ns": "",
                           "checkpoint_id": str(seq), "checkpoint_map": None},
            "parent_checkpoint": None, "metadata": {"graph_id": agent, "step": seq},
            "created_at": thread["updated_at"], "checkpoint_id": str(seq)}


@router.get("/threads/{thread_id}/state")
async def get_state(thread_id: str, request: Request) -> Response:
    """The thread's messages (its state's ``values``); the checkpoint id is the
    session's last seq."""
    return _with_values(await _state(request, thread_id))


async def _state_at(request: Request, thread_id: str, checkpoint_id: str | None
                    ) -> dict[str, Any]:
    """The state at ``checkpoint_id``: only the latest is kept (its id is the
    session's last seq), so another is not found; none: the latest."""
    state = await _state(request, thread_id)
    if checkpoint_id not in (None, "", state["checkpoint_id"]):
        raise CheckpointNotFound(
            f"checkpoint {checkpoint_id!r} of thread {thread_id!r} is not kept: agentd "
            f"keeps a thread's latest state ({state['checkpoint_id']}); restore its "
            "session to any seq through agentd's own API")
    return state


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at(thread_id: str, checkpoint_id: str, request: Request) -> Response:
    """The state at a checkpoint, by id (the SDK's ``get_state(checkpoint_id=...)``)."""
    return _with_values(await _state_at(request, thread_id, checkpoint_id))


@router.post("/threads/{thread_id}/state/checkpoint")
async def post_state_at(thread_id: str, request: Request) -> Response:
    """The state at a checkpoint given whole (the SDK's ``get_state(checkpoint=...)``,
    which RemoteGraph's ``get_state`` sends)."""
    body = await json_body(request)
    checkpoint = body.get("checkpoint") if isinstance(body, dict) else None
    if not isinstance(checkpoint, dict):
        raise InvalidInput("checkpoint must be an object", field="body.checkpoint")
    wanted = checkpoint.get("checkpoint_id")
    if wanted is not None and not isinstance(wanted, str):
        raise InvalidInput("checkpoint.checkpoint_id must be a string",
                           field="body.checkpoint.checkpoint_id")
    return _with_values(await _state_at(request, thread_id, wanted))


@router.post("/threads/{thread_id}/state")
async def update_state(thread_id: str, request: Request) -> Response:
    """Add messages to the thread without running the agent (``update_state``: events
    the next run's model sees), answered with the new checkpoint; only appending,
    between runs (docs/protocols/langgraph.md, "Limits"), else nothing is written."""
    runtime = runtime_of(request)
    body: StateUpdate = parse(StateUpdate, await json_body(request))
    try:
        agent, session = await _locate(request, thread_id)
    except ThreadNotFound:
        raise ThreadNotFound(f"no thread {thread_id!r} (a thread that has not run is "
                             "an agent's when created with graph_id)") from None
    if body.as_node not in (None, _NODE):
        raise unsupported("body.as_node", f"as_node {body.as_node!r:.60} (the agent's one "
                          f"node is {_NODE!r})")
    seq = session.last_seq if session else 0
    wanted = body.checkpoint_id or (body.checkpoint or {}).get("checkpoint_id")
    if wanted not in (None, "", str(seq)):
        raise CheckpointNotFound(
            f"checkpoint {str(wanted)[:60]!r} of thread {thread_id!r} is not kept: agentd "
            f"updates a thread's latest state ({seq})")
    messages = added_messages(body.values)
    if session is not None and any("id" in m for m in messages):
        thread = await _values.of(runtime, session.id)
        check_new_ids(messages, {m["id"] for m in thread.messages()})
    who = principal_of(request.scope)
    if who is not None and who.name is not None:
        for message in messages:
            message["by"] = who.name

    def check(others: list[str]) -> None:
        if others:
            raise _another_assistant(thread_id, others[0], agent)

    try:
        _, events = await runtime.add_messages(
            agent, KEY_PREFIX + thread_id, messages, create=session is None,
            expect_seq=seq if wanted not in (None, "") else None, on_new_session=check)
    except SessionNotFound:
        raise ThreadNotFound(f"no thread {thread_id!r}") from None
    return json_response({"checkpoint": {
        "thread_id": thread_id, "checkpoint_ns": "",
        "checkpoint_id": str(events[-1].seq), "checkpoint_map": {}}})


@router.post("/threads/{thread_id}/history")
async def get_history(thread_id: str, request: Request) -> Response:
    """Only the latest state (agentd restores a session to any seq through its own
    API; LangGraph's checkpoints are not kept)."""
    state = await _state(request, thread_id)
    if isinstance(state["values"], Values):
        state["values"] = state["values"].fragment()
    return json_response([state])


# -- runs --------------------------------------------------------------------------


class _Started:
    """A run a request follows: one it started, or one it resumed."""

    def __init__(self, *, agent: str, thread_id: str, run: RunRecord, session_id: str,
                 after: int, known: list[EventRecord] | None,
                 sub: Subscription | None = None) -> None:
        self.agent, self.thread_id, self.run = agent, thread_id, run
        self.session_id, self.after, self.known = session_id, after, known
        #: The session's subscription, opened right after the send (runs/wait: the
        #: thread's values from it, with no read); closed by whoever answers.
        self.sub = sub


async def _run_target(request: Request, thread_id: str, assistant_id: str,
                      if_not_exists: str | None) -> tuple[str, SessionRecord | None]:
    """The agent a run on ``thread_id`` goes to, and the thread's session if any."""
    agent = await _assistant(request, assistant_id)
    try:
        owner, session = await _locate(request, thread_id)
    except ThreadNotFound:
        if if_not_exists == "reject":
            raise
        return agent, None
    if owner != agent:
        raise _another_assistant(thread_id, owner, agent)
    return agent, session


def _another_assistant(thread_id: str, owner: str, agent: str) -> Conflict:
    return Conflict(f"thread {thread_id!r} belongs to assistant {owner!r}, not {agent!r} "
                    "(a thread is one agent's session)", code="thread_of_another_assistant")


async def _thread_guard(runtime: Runtime, thread_id: str, agent: str,
                        if_not_exists: str | None) -> Also:
    """What a run's message to ``thread_id`` checks as it is committed (the send's
    ``also``), rather than a read per turn: a thread is one agent's session, so the
    message that would create the thread's session under ``agent`` is refused
    (nothing written) if another agent has it, or if ``if_not_exists`` is
    ``reject``. A thread id ``<agent>:...`` belongs to that agent whether or not it
    has run yet (``threads.create`` with a ``graph_id`` makes one)."""
    _check_thread_id(thread_id)
    bound, sep, _ = thread_id.partition(":")
    if sep and bound != agent:
        try:
            await runtime.find_agent(bound)
        except AgentNotFound:
            pass  # an id the client chose
        else:
            raise _another_assistant(thread_id, bound, agent)
    reject = if_not_exists == "reject" and not (sep and bound == agent)

    def check(others: list[str]) -> None:
        if others:
            raise _another_assistant(thread_id, others[0], agent)
        if reject:
            raise ThreadNotFound(f"no thread {thread_id!r}")

    return runtime.on_new_session(check)


def _resume_action(value: Any) -> tuple[str, str | None, str | None]:
    """(action, output, reason) from ``command.resume``."""
    if value is True:
        return "approve", None, None
    if value is False:
        return "deny", None, None
    if isinstance(value, str) and value:
        return value, None, None
    if isinstance(value, dict) and isinstance(value.get("action"), str):
        output, reason = value.get("output"), value.get("reason")
        return (value["action"], output if isinstance(output, str) else None,
                reason if isinstance(reason, str) else None)
    raise InvalidInput("command.resume is an action ('approve', 'deny', ...: the "
                       "interrupt's options), true, false or {\"action\", \"output\"?, "
                       "\"reason\"?}", field="body.command.resume")


async def _start(request: Request, thread_id: str | None, body: RunCreate,
                 *, stream: bool, wait: bool = False) -> _Started:
    runtime = runtime_of(request)
    body.check()
    guard = None
    if thread_id is None:
        agent = await _assistant(request, body.assistant_id)
        thread_id = f"{agent}:{uuid.uuid4()}"
        if body.command is not None:
            return await _resume(request, agent, thread_id, None, body.command)
    elif body.command is not None:
        agent, session = await _run_target(request, thread_id, body.assistant_id,
                                           body.if_not_exists)
        return await _resume(request, agent, thread_id, session, body.command)
    else:
        agent = await _assistant(request, body.assistant_id)
        guard = await _thread_guard(runtime, thread_id, agent, body.if_not_exists)
    content = input_text(body.input or {})
    limit = runtime.settings.max_message_bytes
    if len(content.encode()) > limit:
        raise PayloadTooLarge(f"the message is over {limit} bytes")
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
        raise InvalidInput("Idempotency-Key must be 1-256 characters",
                           field="header.idempotency-key")
    mode = body.multitask_strategy or "enqueue"
    sent = await runtime.send(agent, KEY_PREFIX + thread_id, content,
                              idempotency_key=idempotency_key, mode=mode,
                              priority="interactive", stream=stream, also=guard,
                              start=stream or wait, origin=trace_origin(request))
    after = sent.events[0].seq - 1 if sent.events and not sent.duplicate else 0
    # The run's events are followed from a subscription opened now, before the run
    # can commit anything more (runs/wait reads the values from it; a stream's body
    # follows it and closes it however it ends).
    sub = None if sent.duplicate else runtime.subscribe(sent.session.id)
    return _Started(agent=agent, thread_id=thread_id, run=sent.run,
                    session_id=sent.session.id, after=after,
                    known=None if sent.duplicate else sent.events, sub=sub)


async def _resume(request: Request, agent: str, thread_id: str,
                  session: SessionRecord | None, command: dict[str, Any]) -> _Started:
    """Decide what the thread's run waits for, as a person does on the native API
    (a daemon token is needed even with ``auth = "none"``; the decision's ``by`` is
    its name)."""
    runtime = runtime_of(request)
    unknown = sorted(set(command) - {"resume"})
    if unknown or "resume" not in command:
        raise unsupported("body.command", "a command other than resume")
    who = actor(request.scope, "resuming an interrupted run (deciding an approval)")
    action, output, reason = _resume_action(command["resume"])
    last = await _last_run(runtime, agent, session.key) if session else None
    asked = await _pending(runtime, agent, last.id) if last else None
    if session is None or last is None or asked is None:
        raise Conflict(f"thread {thread_id!r} is not interrupted: nothing to resume",
                       code="not_waiting")
    after = session.last_seq
    await runtime.approvals.decide(str(asked["approval_id"]), action, output=output,
                                   reason=reason, actor=who)
    run, _, _ = await runtime.get_run(last.id)
    return _Started(agent=agent, thread_id=thread_id, run=run, session_id=session.id,
                    after=after, known=None)


async def _wait_answer(runtime: Runtime, started: _Started) -> Response:
    sub = started.sub
    try:
        run = await runtime.wait(started.run.id)
        values = (_values.after_run(started.session_id, started.known, sub, run.id)
                  if sub is not None and run.terminal else None)
    finally:
        if sub is not None:
            sub.close()
    if values is None:
        values = await _values.of(runtime, started.session_id)
    if run.status == "waiting_approval":
        body = values.json({"__interrupt__": await _interrupts(runtime, started.agent,
                                                               run)})
    elif run.status == "failed":
        error = run.error or {}
        # What langgraph-api answers for a run that failed (the SDK raises it).
        body = orjson.dumps({"__error__": {
            "error": str(error.get("code") or "run_failed"),
            "message": str(error.get("message") or "the run failed")}})
    else:
        body = values.json()
    response = Response(body, media_type="application/json")
    response.headers.update(_headers(started))
    return response


def _headers(started: _Started) -> dict[str, str]:
    return {"content-location": f"{PREFIX}/threads/{started.thread_id}/runs/"
            f"{started.run.id}", "x-agentd-run": started.run.id,
            "x-agentd-session": KEY_PREFIX + started.thread_id}


async def _run_body(request: Request) -> RunCreate:
    body: RunCreate = parse(RunCreate, await json_body(request))
    body.modes()
    return body


@router.post("/threads/{thread_id}/runs")
async def create_run(thread_id: str, request: Request) -> Response:
    """A background run: answered at once, with the run."""
    body = await _run_body(request)
    started = await _start(request, thread_id, body, stream=False)
    response = json_response(run_view(started.run, started.thread_id, started.agent))
    response.headers.update(_headers(started))
    return response


@router.post("/runs")
async def create_stateless_run(request: Request) -> Response:
    body = await _run_body(request)
    started = await _start(request, None, body, stream=False)
    response = json_response(run_view(started.run, started.thread_id, started.agent))
    response.headers.update(_headers(started))
    return response


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(thread_id: str, request: Request) -> Response:
    body = await _run_body(request)
    started = await _start(request, thread_id, body, stream=False, wait=True)
    return await _wait_answer(runtime_of(request), started)


@router.post("/runs/wait")
async def wait_stateless_run(request: Request) -> Response:
    body = await _run_body(request)
    started = await _start(request, None, body, stream=False, wait=True)
    return await _wait_answer(runtime_of(request), started)


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(thread_id: str, request: Request) -> Response:
    body = await _run_body(request)
    started = await _start(request, thread_id, body, stream=True)
    response = sse_response(_frames(runtime_of(request), started, body.modes()))
    response.headers.update(_headers(started))
    return response


@router.post("/runs/stream")
async def stream_stateless_run(request: Request) -> Response:
    body = await _run_body(request)
    started = await _start(request, None, body, stream=True)
    response = sse_response(_frames(runtime_of(request), started, body.modes()))
    response.headers.update(_headers(started))
    return response


#: The run routes above that carry every turn (``add_fast_route``).
RUN_PATH = rf"^{PREFIX}(?:/threads/(?P<thread>[^/]+))?/runs/(?P<kind>wait|stream)$"


async def serve_run(scope: Scope, receive: Receive, send: Send, match: Any) -> None:
    """A ``RUN_PATH`` request served by the request layer, past FastAPI's routing and
    dependency solving (auth, the body limit and the door's error shape apply as to
    any route). The routes above stay in the router: another method on their paths
    gets its 405 there."""
    request = Request(scope, receive)
    thread_id, wait = match.group("thread"), match.group("kind") == "wait"
    if thread_id is None:
        response = await (wait_stateless_run if wait else stream_stateless_run)(request)
    else:
        response = await (wait_run if wait else stream_run)(thread_id, request)
    await response(scope, receive, send)


async def _run_of_thread(request: Request, thread_id: str, run_id: str
                         ) -> tuple[RunRecord, str, SessionRecord]:
    runtime = runtime_of(request)
    agent, session = await _locate(request, thread_id)
    try:
        run, owner, key = await runtime.get_run(run_id)
    except RunNotFound:
        run, owner, key = None, "", ""
    if run is None or session is None or (owner, key) != (agent, session.key):
        raise NotFound(f"no run {run_id!r} in thread {thread_id!r}",
                       code="run_not_found")
    return run, agent, session


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: str, request: Request) -> Response:
    runtime = runtime_of(request)
    params = request.query_params
    try:
        limit = int(params.get("limit", "10"))
        offset = int(params.get("offset", "0"))
    except ValueError:
        raise InvalidInput("limit and offset are integers", field="query.limit") from None
    if not 1 <= limit <= 200 or offset < 0:
        raise InvalidInput("limit is 1-200 and offset at least 0", field="query.limit")
    agent, session = await _locate(request, thread_id)
    if session is None:
        return json_response([])
    page = await runtime.list_runs(agent=agent, session=session.key,
                                   limit=min(200, limit + offset))
    views = [run_view(run, thread_id, agent) for run, _, _ in page.runs]
    status = params.get("status")
    if status:
        views = [v for v in views if v["status"] == status]
    return json_response(views[offset:offset + limit])


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(thread_id: str, run_id: str, request: Request) -> Response:
    run, agent, _ = await _run_of_thread(request, thread_id, run_id)
    return json_response(run_view(run, thread_id, agent))


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(thread_id: str, run_id: str, request: Request) -> Response:
    runtime = runtime_of(request)
    run, agent, session = await _run_of_thread(request, thread_id, run_id)
    started = _Started(agent=agent, thread_id=thread_id, run=run, session_id=session.id,
                       after=0, known=None)
    return await _wait_answer(runtime, started)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(thread_id: str, run_id: str, request: Request) -> Response:
    runtime = runtime_of(request)
    run, agent, _ = await _run_of_thread(request, thread_id, run_id)
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise InvalidInput("action is interrupt or rollback", field="query.action")
    if action == "rollback":
        raise unsupported("query.action", "cancelling with rollback")
    if not run.terminal:
        run, _, _ = await runtime.cancel_run(run_id)
    if request.query_params.get("wait") in ("1", "true", "True"):
        run = await runtime.wait(run_id)
    return json_response(run_view(run, thread_id, agent))


# -- streaming ---------------------------------------------------------------------


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


#: A frame this big goes out in a write of its own (a thread's values: joined with the
#: frames around it, it would be copied once more).
_ALONE = 64 * 1024


def _writes(frames: list[bytes]) -> list[bytes]:
    """``frames`` as writes, in order: the small ones together, a big one alone."""
    out: list[bytes] = []
    small: list[bytes] = []
    for frame in frames:
        if len(frame) < _ALONE:
            small.append(frame)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(frame)
    if small:
        out.append(b"".join(small))
    return out


async def _frames(runtime: Runtime, started: _Started, modes: list[str]
                  ) -> AsyncIterator[bytes]:
    """The run as LangGraph's stream modes tell it; a client that goes away drops its
    subscription, never the run. Frames ready together go out in one write (the
    first ones with the first text, the last text with the end)."""
    run_id, thread_id = started.run.id, started.thread_id
    meta = {"run_id": run_id, "thread_id": thread_id, "assistant_id": started.agent,
            "langgraph_node": _NODE}
    msg_id = f"run-{run_id}"
    sub = started.sub if started.sub is not None else runtime.subscribe(started.session_id)
    pending = [_sse("metadata", {"run_id": run_id, "thread_id": thread_id, "attempt": 1})]
    try:
        if "values" in modes:
            # The thread's state with the run's input: as it was when it was sent (the
            # run may have answered already).
            upto = started.known[-1].seq if started.known else None
            pending.append((await _values.of(runtime, started.session_id, upto)).frame(
                b"values"))
            if len(pending[-1]) >= _ALONE:
                for write in _writes(pending):
                    yield write
                pending = []
        if "messages" in modes:
            pending.append(_sse("messages/metadata", {msg_id: {"metadata": meta}}))
        text = ""
        async for item in runtime.follow(started.session_id, started.after,
                                         known=started.known, heartbeat_s=HEARTBEAT_S,
                                         subscription=sub):
            if item is None:
                pending.append(b": heartbeat\n\n")
            elif isinstance(item, Token):
                if item.run_id != run_id:
                    continue
                text = item.text if item.reset else text + item.text
                if "messages" in modes:
                    pending.append(_sse("messages/partial", [message("ai", text, msg_id)]))
                if "messages-tuple" in modes and item.text:
                    pending.append(_sse("messages", [
                        {**message("ai", item.text, msg_id), "type": "AIMessageChunk"},
                        meta]))
            elif item.run_id == run_id and (
                    (item.kind in TERMINAL_KINDS and not is_silent(item))
                    or item.kind == "approval.requested"):
                run, _, _ = await runtime.get_run(run_id)
                pending += [frame async for frame in _ending(runtime, started, run, modes,
                                                             text, meta)]
                for write in _writes(pending):
                    yield write
                return
            if pending and sub.queue.empty():
                yield b"".join(pending)
                pending = []
    finally:
        sub.close()


async def _ending(runtime: Runtime, started: _Started, run: RunRecord,
                  modes: list[str], streamed: str, meta: dict[str, Any]
                  ) -> AsyncIterator[bytes]:
    msg_id = f"run-{run.id}"
    if run.status == "failed":
        error = run.error or {}
        yield _sse("error", {"error": str(error.get("code") or "run_failed"),
                             "message": str(error.get("message") or "the run failed")})
        return
    reply = message("ai", run.output or "", msg_id)
    if run.status == "completed":
        if "messages" in modes:
            yield _sse("messages/complete", [reply])
        if "messages-tuple" in modes and not streamed and run.output:
            yield _sse("messages", [{**reply, "type": "AIMessageChunk"}, meta])
        if "updates" in modes:
            yield _sse("updates", {_NODE: {"messages": [reply]}})
    waiting = await _interrupts(runtime, started.agent, run)
    if waiting and "updates" in modes:
        yield _sse("updates", {"__interrupt__": waiting})
    if "values" in modes:
        values = await _values.of(runtime, started.session_id)
        yield values.frame(b"values", {"__interrupt__": waiting} if waiting else None)
    yield _sse("end", {"run_id": run.id, "status": run_status(run)})
