"""Server-Sent Events: one mapping from log events to frames, used by every stream."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agentd.errors import InvalidInput
from agentd.events import TERMINAL_KINDS, RunWaitingData
from agentd.runtime import Subscription, Token, follow
from agentd.runtime.bus import ReadAfter
from agentd.store.records import EventRecord, session_tag

__all__ = ["SSE_NAMES", "EventStream", "LastChunk", "event_frame", "follow_frames",
           "is_silent", "parse_last_event_id", "sse_response", "token_frame",
           "waiting_frame"]

#: Frame names that differ from the event's kind. A run's last frame is ``done``, or
#: ``error`` when it failed; what it waits for is ``waiting``.
SSE_NAMES = {
    "tool.started": "tool_start",
    "tool.finished": "tool_end",
    "run.waiting": "waiting",
    **{kind: "error" if status == "failed" else "done"
       for kind, status in TERMINAL_KINDS.items()},
}
HEARTBEAT_S = 15.0
_CHUNK_BYTES = 64 * 1024
_SEQ = re.compile(r"[0-9]{1,19}")


def is_silent(event: EventRecord) -> bool:
    """A heartbeat's reply that was only its OK token (``"silent": true``): logged, so
    ``GET .../events`` pages and restores have it, but no stream delivers it. Its run's
    ``run.completed`` (also marked ``silent``) is streamed: it ends the run's streams
    and says the run ended with nothing to deliver. SSE ids are seqs, so a client that
    resumes after the next frame's id skips it the same way, with nothing to misread:
    ids are ordered, not dense."""
    return event.kind == "message.assistant" and event.data.get("silent") is True


def event_frame(event: EventRecord, tag: bytes | None = None) -> bytes:
    """One event as a frame; its id is ``<seq>@<session tag>`` (see
    :func:`parse_last_event_id`)."""
    name = SSE_NAMES.get(event.kind, event.kind)
    body = event.to_api()
    if name == "waiting":
        # The Event JSON, with what the run waits for also at the top level:
        # {"run_id", "reason", "model", "cause", "retry_in_s", ...}.
        body = {**event.data, **body}
    return b"id: %d@%s\nevent: %s\ndata: %s\n\n" % (
        event.seq, tag or session_tag(event.session_id).encode(), name.encode(),
        orjson.dumps(body))


def token_frame(token: Token, tag: bytes) -> bytes:
    return b"id: %d@%s\nevent: token\ndata: %s\n\n" % (
        token.after, tag, orjson.dumps(
            {"run_id": token.run_id, "text": token.text, "reset": True} if token.reset
            else {"run_id": token.run_id, "text": token.text}))


def waiting_frame(data: RunWaitingData, run_id: str, after: int, tag: bytes) -> bytes:
    """A ``waiting`` frame that is not in the log (a run queued behind another: the
    state is plain from the log, so only the sender's stream is told). Its id is the
    last committed seq, like a token's."""
    return b"id: %d@%s\nevent: waiting\ndata: %s\n\n" % (
        after, tag, orjson.dumps({"run_id": run_id, **data}))


def parse_last_event_id(value: str, *, tag: str, last_seq: int) -> int:
    """The seq a ``Last-Event-ID`` names: ``<seq>`` or ``<seq>@<tag>``. A tag of another
    session, or a seq past this session's log, is refused (422)."""
    seq_text, at, given = value.strip().partition("@")
    # Digits only: int() would also take "+1", "1_0", " 1" and 5,000 digits (a seq no
    # log reaches; past 19 digits the store could not even compare it).
    if not _SEQ.fullmatch(seq_text) or (at and not given):
        raise InvalidInput("Last-Event-ID must be an event id (<seq> or <seq>@<tag>, "
                           "seq a number of at most 19 digits)",
                           field="header.last-event-id")
    seq = int(seq_text)
    if given and given != tag:
        raise InvalidInput(
            f"Last-Event-ID {value!r} is from another session (this session's events are "
            f"<seq>@{tag})", field="header.last-event-id", code="wrong_session")
    if seq > last_seq:
        raise InvalidInput(
            f"Last-Event-ID {value!r} is past this session's log (last seq {last_seq})",
            field="header.last-event-id",
            code="wrong_session" if given else "invalid_input")
    return seq


class LastChunk(bytes):
    """A stream's last chunk: :class:`EventStream` sends it as the end of the body,
    in the same write as the chunked encoding's terminator (one system call and one
    packet fewer per stream). The iterator that yields it must end after it."""


class EventStream(StreamingResponse):
    """Starlette's ``StreamingResponse`` for an event stream, without its task group.

    On an ASGI server older than spec 2.4 (uvicorn's is 2.3) a send to a client that
    left does not fail, so a stream must also watch ``receive`` for the disconnect to
    end. Starlette does that with an anyio task group, a cancel scope and two tasks
    per response, a tenth of the instructions of a streamed echo turn
    (docs/benchmarks.md). Here the request's own task sends the frames while one plain
    task waits for the disconnect; if that comes first it cancels the sending, and the
    frames' generator is closed (its ``finally`` releases the subscription); when the
    frames end first, the watcher is cancelled. A cancellation from elsewhere (the
    server shutting down) is not taken for a disconnect: it propagates.

    A :class:`LastChunk` from the frames ends the body with it."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        ended = False
        async for chunk in self.body_iterator:
            if ended:
                raise RuntimeError("an event stream's frames went on after its last chunk")
            if not isinstance(chunk, bytes | memoryview):
                chunk = chunk.encode(self.charset)
            ended = isinstance(chunk, LastChunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        if scope["type"] != "http" or tuple(map(int, spec.split("."))) >= (2, 4):
            await super().__call__(scope, receive, send)
            return
        sender = asyncio.current_task()
        assert sender is not None
        sending, left = True, False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            if sending:
                left = True
                sender.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not left or sender.uncancel() > 0:
                raise
        finally:
            sending = False
            watcher.cancel()
        if left and hasattr(self.body_iterator, "aclose"):
            await self.body_iterator.aclose()  # (cancelled in a send: still open)
        if self.background is not None:
            await self.background()


def sse_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return EventStream(frames, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })


async def follow_frames(sub: Subscription, read_after: ReadAfter, after: int, *,
                        run_id: str | None = None, known: list[EventRecord] | None = None,
                        waiting: tuple[int, RunWaitingData] | None = None
                        ) -> AsyncIterator[bytes]:
    """Frames for a session's log after ``after``; with ``run_id``, that run only,
    ending after its terminal event. ``known``: see :func:`follow`. ``waiting``
    (seq, data): a ``waiting`` frame of ``run_id`` to send right after event ``seq``.

    Frames that are ready together go out in one chunk (one write to the socket);
    a chunk is sent as soon as nothing more is waiting. A run's last chunk (its
    terminal event's) is a :class:`LastChunk`: it ends the response.
    """
    chunk: list[bytes] = []
    size = 0
    tag = session_tag(sub.session_id).encode()
    try:
        async for item in follow(sub, read_after, after, known, heartbeat_s=HEARTBEAT_S):
            end = False
            if item is None:
                chunk.append(b": ping\n\n")
            elif isinstance(item, Token):
                if run_id is None or item.run_id == run_id:
                    chunk.append(token_frame(item, tag))
            elif is_silent(item):
                pass
            elif run_id is None or item.run_id == run_id:
                chunk.append(event_frame(item, tag))
                end = run_id is not None and item.kind in TERMINAL_KINDS
                if waiting is not None and item.seq >= waiting[0] and run_id is not None:
                    if not end:
                        chunk.append(waiting_frame(waiting[1], run_id, item.seq, tag))
                    waiting = None
            if chunk:
                size += len(chunk[-1])
            if end:
                yield LastChunk(b"".join(chunk))
                return
            if chunk and (sub.queue.empty() or size > _CHUNK_BYTES):
                yield b"".join(chunk)
                chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)
    finally:
        sub.close()
