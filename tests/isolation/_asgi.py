"""The app's streams in process: an SSE response read as it comes, and a WebSocket.

``httpx.ASGITransport`` hands back a response only once the app has finished it, so a
live stream (the feed, a session's events with ``Accept: text/event-stream``) never
comes back through it; and Starlette's ``TestClient`` runs the app on a loop of its
own, away from the runtime the test holds. These speak ASGI to the same app object on
the test's loop: the request path (auth, scopes, the doors) is the daemon's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from tests.conftest import PATIENCE_S

__all__ = ["Socket", "Stream", "stream", "websocket"]


def _scope(kind: str, path: str, headers: dict[str, str], query: dict[str, str]
           ) -> dict[str, Any]:
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
            **({"method": "GET"} if kind == "http" else {}),
            "scheme": "http" if kind == "http" else "ws", "path": path,
            "raw_path": path.encode(), "root_path": "",
            "query_string": urlencode(query).encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in
                        {"host": "test", **headers}.items()],
            "server": ("test", 80), "client": ("127.0.0.1", 50000)}


async def _first(task: asyncio.Task[None], event: asyncio.Event) -> None:
    """Wait until ``event`` is set or ``task`` ended."""
    waiter = asyncio.create_task(event.wait())
    try:
        async with asyncio.timeout(PATIENCE_S):
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


@dataclass
class Stream:
    """A GET whose body is read as it comes (SSE frames)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    text: str = ""
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def frames(self) -> list[dict[str, Any]]:
        """The ``data:`` payloads read so far (JSON)."""
        return [orjson.loads(line[6:]) for line in self.text.splitlines()
                if line.startswith("data: ")]

    async def read_until(self, done: Callable[[Stream], bool]) -> None:
        """Read until ``done(self)`` or the body ends (a liveness bound, not a check of
        time: a stuck stream fails the test)."""
        async with asyncio.timeout(PATIENCE_S):
            while not done(self):
                chunk = await self.chunks.get()
                if chunk is None:
                    return
                self.text += chunk.decode()


@contextlib.asynccontextmanager
async def stream(app: Any, path: str, headers: dict[str, str],
                 query: dict[str, str] | None = None) -> AsyncIterator[Stream]:
    """Open ``GET path``; once the response has started, yield it; leaving the block
    disconnects (as a client that goes away) and waits for the app to end."""
    out = Stream()
    gone = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            out.started.set()
        elif message["type"] == "http.response.body":
            if message.get("body"):
                out.chunks.put_nowait(message["body"])
            if not message.get("more_body", False):
                out.chunks.put_nowait(None)

    task = asyncio.create_task(app(_scope("http", path, {"accept": "text/event-stream",
                                                        **headers}, query or {}),
                                   receive, send))
    try:
        await _first(task, out.started)
        if task.done():
            task.result()  # an error the app raised, raised here
        yield out
    finally:
        gone.set()
        async with asyncio.timeout(PATIENCE_S):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not out.chunks.empty():
            chunk = out.chunks.get_nowait()
            if chunk is not None:
                out.text += chunk.decode()


@dataclass
class Socket:
    """A WebSocket to the app: accepted, what it sent, how it closed."""

    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    outbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    accepted: bool = False
    close_code: int | None = None

    async def send(self, frame: dict[str, Any]) -> None:
        await self.inbox.put({"type": "websocket.receive",
                              "text": orjson.dumps(frame).decode()})

    async def receive(self) -> dict[str, Any] | None:
        """The next JSON frame the app sent; None once it closed."""
        async with asyncio.timeout(PATIENCE_S):
            message = await self.outbox.get()
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            return None
        payload = message.get("text") or message.get("bytes") or b"{}"
        frame: dict[str, Any] = orjson.loads(payload)
        return frame


@contextlib.asynccontextmanager
async def websocket(app: Any, path: str, headers: dict[str, str]
                    ) -> AsyncIterator[Socket]:
    """Open a WebSocket to ``path``; yield once the app accepted or refused it (a
    refusal before accepting is ``accepted`` False with ``close_code`` set)."""
    socket = Socket()
    await socket.inbox.put({"type": "websocket.connect"})

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.accept":
            socket.accepted = True
        elif message["type"] == "websocket.close" and not socket.accepted:
            socket.close_code = message.get("code", 1000)
        else:
            await socket.outbox.put(message)
        if message["type"] in ("websocket.accept", "websocket.close"):
            decided.set()

    decided = asyncio.Event()
    task = asyncio.create_task(app(_scope("websocket", path, headers, {}),
                                   socket.inbox.get, send))
    try:
        await _first(task, decided)
        if task.done():
            task.result()
        yield socket
    finally:
        await socket.inbox.put({"type": "websocket.disconnect", "code": 1000})
        async with asyncio.timeout(PATIENCE_S):
            with contextlib.suppress(asyncio.CancelledError):
                await task
