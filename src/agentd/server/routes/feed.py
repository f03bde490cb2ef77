"""GET /v1/events: one live stream of every session's committed events (the activity
feed), each naming its agent and session.

The feed is live only: it starts with the events committed after it opens and has no
replay (the logs are per session; follow one session for a gap-free record). A reader
too slow for its buffer is told how many events it missed (a ``lagged`` frame) rather
than slowing anyone down. Every token sees every agent today, so the feed carries
every agent's events unless ``agent`` narrows it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from agentd.runtime import Runtime
from agentd.runtime.bus import Feed, Lagged
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import SseEvent
from agentd.server.sse import HEARTBEAT_S, is_silent, sse_response
from agentd.store import EventRecord
from agentd.store.records import session_tag

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


async def _feed_frames(feed: Feed, runtime: Runtime, agent: str | None
                       ) -> AsyncIterator[bytes]:
    names: OrderedDict[str, tuple[str, str] | None] = OrderedDict()
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
            unknown = {e.session_id for e in batch if e.session_id not in names}
            if unknown:
                found = await runtime.session_names(sorted(unknown))
                for session_id in unknown:
                    # None: the session was deleted since (its events are gone too).
                    names[session_id] = found.get(session_id)
            chunk = []
            for event in batch:
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
    own event stream to continue there). Live only, no replay; ``lagged`` frames
    (``{"dropped": n}``) say when a slow reader missed events."""
    runtime = runtime_of(request)
    if agent is not None:
        await runtime.stored_agent(agent)  # 404; it wakes nobody
    return sse_response(_feed_frames(runtime.subscribe_all(), runtime, agent))
