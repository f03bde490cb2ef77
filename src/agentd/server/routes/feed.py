"""GET /v1/events: one live stream of every session's committed events (the activity
feed), each naming its agent and session, and of every committed change to an agent
(``agent.created``, ``agent.updated``, ``agent.state``, ``agent.deleted``).

The feed is live only: it starts with the events committed after it opens and has no
replay (the logs are per session; follow one session for a gap-free record). A reader
too slow for its buffer is told how many events it missed (a ``lagged`` frame) rather
than slowing anyone down. The feed carries the events of every agent the request's
token may use (all of them for an unscoped token) unless ``agent`` narrows it; an
agent's place in a scope is decided when its session is first seen by the feed.

An agent change is decided on the record it made (a deleted agent: the record as it
was when deleted; an update that moved an agent to another tenant: either tenant), so
a scoped token never learns of another tenant's agent. Agent frames have no id: they
are in no session's log, and a frame without an id leaves the last id a client holds
as it was (a client that gives it back as ``Last-Event-ID`` gives a session event's).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from agentd.assembly import Runtime
from agentd.doors.access import access_of, require_agent
from agentd.doors.sse import HEARTBEAT_S, is_silent, sse_response
from agentd.errors import AgentNotFound
from agentd.runtime.bus import Feed, FeedItem, Lagged
from agentd.security.access import Access
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import SseEvent
from agentd.store import EventRecord
from agentd.store.records import AgentChange, session_tag

__all__ = ["router"]

router = APIRouter(prefix="/v1/events", tags=["events"])

#: Sessions whose names a feed remembers.
_NAMES = 4096
#: Events read from the buffer and named together (one query for their sessions).
_BATCH = 256


def _frame(event: EventRecord, agent: str, key: str) -> bytes:
    data = {"agent": agent, "session": key, **event.to_api()}
    return b"id: %d@%s\nevent: %s\ndata: %s\n\n" % (
        event.seq, session_tag(event.session_id).encode(), event.kind.encode(),
        orjson.dumps(data))


def _change_frame(change: AgentChange) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (change.kind.encode(),
                                           orjson.dumps(change.to_api()))


def _change_allowed(access: Access, change: AgentChange) -> bool:
    return access.everything or any(access.allows(change.agent, tenant)
                                    for tenant in change.tenants)


async def _in_scope(runtime: Runtime, access: Access, found: dict[str, tuple[str, str]],
                    known: dict[str, bool]) -> set[str]:
    """The agents named in ``found`` (sessions' agent and key) the access may use;
    ``known``: the feed's answers so far, by agent name (bounded by the caller)."""
    names = {agent for agent, _ in found.values()}
    if access.everything:
        return names
    for name in names - known.keys():
        allowed = access.allows_name(name)
        if allowed and access.needs_tenant:
            try:
                allowed = access.allows_agent(await runtime.stored_agent(name))
            except AgentNotFound:
                allowed = False
        known[name] = allowed
    return {n for n in names if known[n]}


# complexity: the feed's loop: one branch per item kind (event, agent change, lag,
# heartbeat) with the scope check each needs; its caches are local to the stream.
async def _feed_frames(feed: Feed[FeedItem], runtime: Runtime, agent: str | None,
                       access: Access) -> AsyncIterator[bytes]:
    names: OrderedDict[str, tuple[str, str] | None] = OrderedDict()
    scoped: dict[str, bool] = {}
    try:
        # A first comment so that clients see the stream open before any event.
        yield b": feed\n\n"
        while True:
            item = await feed.next(HEARTBEAT_S)
            if item is None:
                if feed.closed:
                    return
                yield b": ping\n\n"
                continue
            if isinstance(item, Lagged):
                yield b"event: lagged\ndata: %s\n\n" % orjson.dumps({"dropped": item.dropped})
                continue
            batch = [item]
            while len(batch) < _BATCH and not feed.queue.empty():
                more = feed.queue.get_nowait()
                if more is None:
                    break
                batch.append(more)
            unknown = {e.session_id for e in batch
                       if isinstance(e, EventRecord) and e.session_id not in names}
            if unknown:
                found = await runtime.session_names(sorted(unknown))
                if len(scoped) > _NAMES:
                    scoped.clear()
                allowed = await _in_scope(runtime, access, found, scoped)
                for session_id in unknown:
                    # None: the session was deleted since (its events are gone too),
                    # or its agent is outside the token's scope.
                    named = found.get(session_id)
                    names[session_id] = (named if named is not None
                                         and named[0] in allowed else None)
            chunk = []
            for event in batch:
                if isinstance(event, AgentChange):
                    if event.kind != "agent.state":
                        _forget(event.agent, names, scoped)
                    if (agent is None or event.agent == agent) and _change_allowed(
                            access, event):
                        chunk.append(_change_frame(event))
                    continue
                named = names.get(event.session_id)
                names.move_to_end(event.session_id)
                if named is not None and (agent is None or named[0] == agent) and (
                        not is_silent(event)):
                    chunk.append(_frame(event, *named))
            while len(names) > _NAMES:
                names.popitem(last=False)
            if chunk:
                yield b"".join(chunk)
    finally:
        feed.close()


def _forget(name: str, names: OrderedDict[str, tuple[str, str] | None],
            scoped: dict[str, bool]) -> None:
    """Forget what the feed decided about the agent ``name`` (and the sessions it left
    out): the agent was created, changed (its tenant, maybe) or deleted."""
    scoped.pop(name, None)
    for session_id in [s for s, n in names.items() if n is None or n[0] == name]:
        del names[session_id]


@router.get("", responses={200: {"content": {"text/event-stream": {
                                     "schema": SseEvent.model_json_schema()}},
                                 "description": "Server-Sent Events, until the client "
                                                "leaves or the daemon stops."},
                           **ERRORS(404, 422)})
async def feed(
    request: Request,
    agent: str | None = Query(default=None, max_length=256,
                              description="Only this agent's events (404 if unknown)."),
) -> Response:
    """Every session's events as they are committed, as Server-Sent Events: each
    frame's name is the event's kind, its data the event with ``agent`` and
    ``session`` (the key), its id ``<seq>@<session tag>`` (give it to the session's
    own event stream to continue there). Changes to agents come as ``agent.created``,
    ``agent.updated``, ``agent.state`` and ``agent.deleted`` frames with data
    ``{"agent", "state", "updated_at"}`` and no id. Live only, no replay; ``lagged``
    frames (``{"dropped": n}``) say when a slow reader missed some."""
    runtime = runtime_of(request)
    if agent is not None:
        await require_agent(request, agent)
        await runtime.stored_agent(agent)  # 404; it wakes nobody
    return sse_response(_feed_frames(runtime.subscribe_activity(), runtime, agent,
                                     access_of(request.scope)))
