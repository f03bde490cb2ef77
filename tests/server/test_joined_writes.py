"""A response's head and body leave in one write (agentd.server._joined), over a real
socket to the daemon's uvicorn: the test records every write of the connection's
transport as the daemon's app makes it, then reads what the client got."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentd.config import Settings
from agentd.server._joined import JoinedWrites
from agentd.testing.live import LiveServer

TOKEN = "joined-writes-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class _Recorder:
    """The connection's transport, keeping each write (what the socket is sent)."""

    def __init__(self, real: Any, path: str) -> None:
        self.real = real
        self.path = path
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, list[_Recorder]]]:
    server = LiveServer(Settings(home=tmp_path / "home", tokens=[TOKEN]),
                        startup_timeout_s=30)
    recorders: list[_Recorder] = []
    app = server.app

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            cycle = send.__self__  # uvicorn's request cycle
            recorder = _Recorder(cycle.transport, scope["path"])
            cycle.transport = recorder
            recorders.append(recorder)
        await app(scope, receive, send)

    server._server.config.app = recording  # (loaded when the server runs)
    with server:
        yield server, recorders


def _of(recorders: list[_Recorder], path: str) -> _Recorder:
    [recorder] = [r for r in recorders if r.path == path]
    return recorder


def _read(sock: socket.socket, seen: bytes, until: bytes | None) -> bytes:
    """What ``sock`` sends after ``seen``, until ``until`` is in it (None: until the
    server closes the connection) or it closes."""
    while until is None or until not in seen:
        chunk = sock.recv(65536)
        if not chunk:
            break
        seen += chunk
    return seen


def _raw(live: LiveServer, request: bytes, until: bytes) -> bytes:
    """Send ``request`` on a new connection; read until ``until`` is in the reply."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        sock.sendall(request)
        return _read(sock, b"", until)


def test_a_waited_turn_is_answered_in_one_write(live: tuple[LiveServer, list[_Recorder]]
                                                ) -> None:
    server, recorders = live
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as api:
        api.post("/v1/agents", json={"name": "a", "model": "scripted"}).raise_for_status()
        reply = api.post("/v1/agents/a/sessions/s/messages",
                         json={"content": "hi", "wait": True})
    assert reply.status_code == 200, reply.text
    assert reply.json()["output"] == "echo: hi"
    [write] = _of(recorders, "/v1/agents/a/sessions/s/messages").writes
    head, _, body = write.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ncontent-length: " in head
    assert body == reply.content


def test_an_error_and_the_health_check_are_one_write_each(
        live: tuple[LiveServer, list[_Recorder]]) -> None:
    server, recorders = live
    with httpx.Client(base_url=server.url, timeout=30) as api:
        assert api.get("/health").status_code == 200
        refused = api.get("/v1/agents")  # no token
    assert refused.status_code == 401
    for path in ("/health", "/v1/agents"):
        [write] = _of(recorders, path).writes
        assert write.startswith(b"HTTP/1.1 ")


def test_a_head_request_gets_its_head_without_a_body(
        live: tuple[LiveServer, list[_Recorder]]) -> None:
    """No body follows a HEAD's head: it is written at once (held, it would wait for
    a body that never comes, and the client with it)."""
    server, recorders = live
    # (Kept alive: nothing but the head itself may end what the client waits for.)
    reply = _raw(server, b"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 ")
    [write] = _of(recorders, "/health").writes
    assert write.endswith(b"\r\n\r\n")


def test_100_continue_goes_out_before_the_answer(
        live: tuple[LiveServer, list[_Recorder]]) -> None:
    server, recorders = live
    body = b'{"name": "b", "model": "scripted"}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                     + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
        seen = _read(sock, b"", b"\r\n\r\n")
        assert seen.startswith(b"HTTP/1.1 100 "), seen
        sock.sendall(body)
        seen = _read(sock, seen, None)
    assert b"HTTP/1.1 201 " in seen, seen
    writes = _of(recorders, "/v1/agents").writes
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 100 ")
    assert writes[1].startswith(b"HTTP/1.1 201 ") and b'"name":"b"' in writes[1]


def test_a_stream_s_head_is_not_held(live: tuple[LiveServer, list[_Recorder]]) -> None:
    """A stream (SSE) announces no length: its head goes out on its own, before any
    event, so that its client knows at once it is following."""
    server, recorders = live
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as api:
        api.post("/v1/agents", json={"name": "a", "model": "scripted"}).raise_for_status()
        api.post("/v1/agents/a/sessions/s/messages",
                 json={"content": "hi", "wait": True}).raise_for_status()
    reply = _raw(server, b"GET /v1/agents/a/sessions/s/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                 b"Accept: text/event-stream\r\n\r\n", b"event: done")
    assert reply.startswith(b"HTTP/1.1 200 ")
    writes = _of(recorders, "/v1/agents/a/sessions/s/events").writes
    assert writes[0].startswith(b"HTTP/1.1 200 ") and writes[0].endswith(b"\r\n\r\n")
    assert b"\r\ntransfer-encoding: chunked" in writes[0]
    assert len(writes) > 1


def test_the_transport_stand_in_sends_a_held_head_when_closed() -> None:
    """A response whose body never comes (the app failed after its head): the head
    still goes out before the connection closes, as it would have without the join."""
    class _Sink:
        def __init__(self) -> None:
            self.out: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.out.append(data)

        def close(self) -> None:
            self.closed = True

        def is_closing(self) -> bool:
            return self.closed

    sink = _Sink()
    joined = JoinedWrites(sink)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    joined.write(head)
    assert sink.out == []
    joined.close()
    assert sink.out == [head] and sink.closed
    assert joined.is_closing()
    # Once a head went out, later ones pass straight through (one join a request).
    sink2 = _Sink()
    again = JoinedWrites(sink2)
    again.write(head)
    again.write(memoryview(b"ok"))  # (a body may come as any bytes-like object)
    again.write(head)
    assert sink2.out == [head + b"ok", head]
    # A head that is not held (chunked) ends the watch too: a body piece that reads
    # like a head is sent, not held (held, nothing would ever send it).
    sink3 = _Sink()
    streamed = JoinedWrites(sink3)
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    streamed.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    streamed.write(chunked)
    streamed.write(head)
    assert sink3.out == [b"HTTP/1.1 100 Continue\r\n\r\n", chunked, head]
