"""A client that finds nobody at an in-thread daemon's port is told what became of
its server (the refusal was once seen in CI at a test's first request, with nothing
more to go on): :meth:`agentd.testing.LiveServer.state`, which
:class:`tests.daemons.ThreadDaemon`'s clients add to a refused connection."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.daemons import ThreadDaemon

from agentd.testing.live import LiveServer

TOKEN = "live-state-token-0123456789abcdef"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[ThreadDaemon]:
    started = ThreadDaemon(tmp_path / "home", tmp_path / "agentd.log", token=TOKEN).start()
    try:
        yield started
    finally:
        started.cleanup()


def _server(daemon: ThreadDaemon) -> LiveServer:
    assert daemon._server is not None
    return daemon._server


def test_a_serving_daemon_says_it_listens(daemon: ThreadDaemon) -> None:
    with daemon.client() as client:
        assert client.get("/health").status_code == 200
    state = _server(daemon).state()
    assert "thread alive: True" in state and "listening: True" in state, state
    assert f"a listener on port {daemon.port} in this thread's network: True" in state
    assert "the same as the server thread's" in state, state


def test_a_stopped_server_is_named_in_the_refusal(daemon: ThreadDaemon) -> None:
    server = _server(daemon)
    with daemon.client() as client:
        assert client.get("/health").status_code == 200
        server._server.should_exit = True  # uvicorn stops; the thread ends
        server._thread.join(timeout=60)
        with pytest.raises(httpx.ConnectError) as refused:
            client.get("/health", headers={"Connection": "close"})
    said = str(refused.value)
    assert "thread alive: False" in said and "should_exit: True" in said, said
    assert f"a listener on port {daemon.port} in this thread's network: False" in said
    assert "-- its log:" in said


def test_a_descriptor_closed_under_the_server_is_named(daemon: ThreadDaemon) -> None:
    server = _server(daemon)
    fd = server._socket.fileno()
    # What a stray close(fd) elsewhere in the process would do: the number is given
    # to something else (dup2 swaps it in one step: no other thread can take it).
    spare = os.dup(fd)
    other = socket.socket()
    os.dup2(other.fileno(), fd)
    try:
        state = server.state()
        assert f"descriptor {fd}:" in state and "NOT the socket it bound" in state, state
    finally:
        os.dup2(spare, fd)  # the server's socket back, for its shutdown
        os.close(spare)
        other.close()
