"""An event stream ends with its client (doors/sse.py, ``EventStream``), over a real
socket to uvicorn: a client that hangs up releases the stream's subscription, a run's
stream that ends leaves its connection usable, and a daemon that stops ends the
streams still open."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agentd.config import Settings
from agentd.testing.live import LiveServer

TOKEN = "event-stream-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(Settings(home=tmp_path / "home", tokens=[TOKEN]),
                    startup_timeout_s=30) as server:
        yield server


def _session(live: LiveServer) -> None:
    """Session ``s`` of agent ``a``, with one turn."""
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as api:
        api.post("/v1/agents", json={"name": "a", "model": "scripted"}).raise_for_status()
        api.post("/v1/agents/a/sessions/s/messages",
                 json={"content": "hi", "wait": True}).raise_for_status()


def _followers(live: LiveServer) -> int:
    """The subscriptions open in the daemon (this test's streams: nothing else
    follows a session here)."""
    count: int = live.app.state.runtime.bus.followers()
    return count


def _until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.01)


def _open_follow(live: LiveServer) -> socket.socket:
    """A raw connection following session ``s``'s events, past its replayed frames."""
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=30)
    sock.sendall(b"GET /v1/agents/a/sessions/s/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                 b"Accept: text/event-stream\r\n\r\n")
    seen = b""
    while b"event: done" not in seen:  # the replay ends with the turn's done frame
        chunk = sock.recv(65536)
        assert chunk, f"the stream closed early: {seen!r}"
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen[:200]
    return sock


def test_a_client_that_hangs_up_releases_its_subscription(live: LiveServer) -> None:
    _session(live)
    sock = _open_follow(live)
    assert _followers(live) == 1
    sock.close()
    _until(lambda: _followers(live) == 0, "the stream's subscription released")
    # The daemon serves on, and the session streams again.
    again = _open_follow(live)
    assert _followers(live) == 1
    again.shutdown(socket.SHUT_RDWR)
    again.close()
    _until(lambda: _followers(live) == 0, "the second one released too")


def test_a_run_stream_that_ends_leaves_its_connection_usable(live: LiveServer) -> None:
    _session(live)
    with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as api:
        for turn in range(3):  # one kept-alive connection
            with api.stream("POST", "/v1/agents/a/sessions/s/messages",
                            json={"content": f"turn {turn}", "stream": True}) as reply:
                assert reply.status_code == 200
                text = "".join(reply.iter_text())
            assert f"echo: turn {turn}" in text and "event: done" in text
            assert _followers(live) == 0
        assert api.get("/v1/agents/a/sessions/s").status_code == 200


def test_a_daemon_that_stops_ends_the_open_streams(tmp_path: Path) -> None:
    server = LiveServer(Settings(home=tmp_path / "home", tokens=[TOKEN]),
                        startup_timeout_s=30).__enter__()
    try:
        _session(server)
        sock = _open_follow(server)
        assert _followers(server) == 1
    finally:
        server.__exit__(None, None, None)
    sock.settimeout(30)
    while sock.recv(65536):  # the daemon closed the stream: EOF, not a hang (timeout)
        pass
    sock.close()
