"""Server-Sent Events: one mapping from log events to frames, used by every stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from starlette.responses import StreamingResponse

from agentd.runtime import Subscription, Token, follow
from agentd.runtime.bus import ReadAfter
from agentd.store.records import EventRecord

__all__ = ["SSE_NAMES", "event_frame", "follow_frames", "sse_response", "token_frame"]

SSE_NAMES = {
    "tool.started": "tool_start",
    "tool.finished": "tool_end",
    "run.completed": "done",
    "run.cancelled": "done",
    "run.interrupted": "done",
    "run.failed": "error",
}
TERMINAL_KINDS = frozenset({"run.completed", "run.cancelled", "run.interrupted", "run.failed"})
HEARTBEAT_S = 15.0


def event_frame(event: EventRecord) -> bytes:
    name = SSE_NAMES.get(event.kind, event.kind)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (
        event.seq, name.encode(), orjson.dumps(event.to_api()))


def token_frame(token: Token) -> bytes:
    return b"id: %d\nevent: token\ndata: %s\n\n" % (
        token.after, orjson.dumps({"run_id": token.run_id, "text": token.text}))


def sse_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(frames, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })


async def _with_heartbeat(items: AsyncIterator[EventRecord | Token]
                          ) -> AsyncIterator[EventRecord | Token | None]:
    """Yield ``None`` every HEARTBEAT_S of silence so proxies keep the stream open."""
    iterator = aiter(items)
    pending: asyncio.Task[EventRecord | Token] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()


async def follow_frames(sub: Subscription, read_after: ReadAfter, after: int, *,
                        run_id: str | None = None) -> AsyncIterator[bytes]:
    """Frames for a session's log after ``after``; with ``run_id``, that run only,
    ending after its terminal event."""
    try:
        async for item in _with_heartbeat(follow(sub, read_after, after)):
            if item is None:
                yield b": ping\n\n"
            elif isinstance(item, Token):
                if run_id is None or item.run_id == run_id:
                    yield token_frame(item)
            elif run_id is None or item.run_id == run_id:
                yield event_frame(item)
                if run_id is not None and item.kind in TERMINAL_KINDS:
                    return
    finally:
        sub.close()
