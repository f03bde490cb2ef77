"""A run's event stream ends with its last chunk (doors/sse.py, ``LastChunk``): the
frames of the run's terminal event are sent as the end of the body, in the write that
carries the chunked encoding's terminator, not followed by an empty one of their own.
A stream whose frames do not say where they end (a door's own generator) ends as
Starlette's does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.doors.sse import EventStream, LastChunk, follow_frames


async def _sent(frames: AsyncIterator[bytes], *, spec: str = "2.3") -> list[dict[str, Any]]:
    """The ASGI messages an EventStream of ``frames`` sends."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:  # (the client never leaves)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        messages.append(dict(message))

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec},
             "method": "POST", "path": "/", "headers": []}
    await EventStream(frames, media_type="text/event-stream")(scope, receive, send)
    return messages


def _bodies(messages: list[dict[str, Any]]) -> list[tuple[bytes, bool]]:
    assert messages[0]["type"] == "http.response.start"
    return [(m["body"], m["more_body"]) for m in messages[1:]]


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
async def test_a_last_chunk_ends_the_body(spec: str) -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"data: a\n\n"
        yield LastChunk(b"data: b\n\n")

    assert _bodies(await _sent(frames(), spec=spec)) == [
        (b"data: a\n\n", True), (b"data: b\n\n", False)]


async def test_frames_without_a_last_chunk_end_with_an_empty_body() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"data: a\n\n"

    assert _bodies(await _sent(frames())) == [(b"data: a\n\n", True), (b"", False)]


async def test_frames_after_the_last_chunk_are_refused() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield LastChunk(b"data: a\n\n")
        yield b"data: b\n\n"

    with pytest.raises(RuntimeError, match="after its last chunk"):
        await _sent(frames())


async def test_a_runs_stream_ends_with_its_terminal_frames(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", model="scripted")
    for turn in ("one", "two"):  # (the second turn's known events are a fresh run's)
        sent = await runtime.send("a", "k", turn, stream=True, start=True)
        sub = runtime.subscribe(sent.session.id)
        after = sent.events[0].seq - 1
        chunks = [chunk async for chunk in follow_frames(
            sub, lambda seq, sid=sent.session.id: runtime.read_events(sid, after=seq),
            after, run_id=sent.run.id, known=sent.events, waiting=sent.waiting())]
        *rest, last = chunks
        assert isinstance(last, LastChunk)
        assert b"event: done" in last and f"echo: {turn}".encode() in b"".join(chunks)
        assert not any(isinstance(c, LastChunk) or b"event: done" in c for c in rest)
        assert runtime.bus.followers() == 0  # the frames' end released the subscription
