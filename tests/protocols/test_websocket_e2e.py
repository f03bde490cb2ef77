"""The WebSocket control channel of a session, against the real daemon process over a
socket (the ``websockets`` client): auth at the handshake, messages with a mode, the
event stream with the SSE stream's ids and replay, cancel, steer, approvals decided on
the socket, a dropped socket that cancels nothing, and bad input answered with an
error frame on a socket that stays open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from tests.conftest import wait_until
from tests.daemons import Daemon, create_agent
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("ws")
    process = Daemon(root / "home", root / "agentd.log",
                     env={"AGENTD_DEMO_AGENT": "false"}, args=()).start()
    with process.client() as api:
        create_agent(api, "echo")
        create_agent(api, "slow", settings={"script": [
            {"text": "a slow and steady answer", "delay_ms": 3000}]})
        create_agent(api, "careful", tools=["calculator"], settings={
            "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
            "script": [{"tool_calls": [{"name": "calculator",
                                        "arguments": {"expression": "6*7"}}]},
                       {"text": "it is 42"}]})
    try:
        yield process
    finally:
        process.cleanup()


def ws_url(daemon: Daemon, agent: str, key: str, query: str = "") -> str:
    base = daemon.url.replace("http://", "ws://")
    return f"{base}/v1/agents/{agent}/sessions/{quote(key, safe='')}/ws{query}"


async def open_socket(daemon: Daemon, agent: str, key: str, query: str = ""
                      ) -> ClientConnection:
    return await connect(ws_url(daemon, agent, key, query),
                         additional_headers={"Authorization":
                                             f"Bearer {read_token(daemon.home)}"})


async def frames(socket: ClientConnection, until: str) -> list[dict[str, Any]]:
    """Frames up to and including the first whose event (or type) is ``until``."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async for raw in socket:
            frame = orjson.loads(raw)
            out.append(frame)
            if until in (frame.get("event"), frame.get("type")):
                return out
    raise AssertionError(f"the socket closed before {until!r}: {out}")


async def request(socket: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message`` and return the answer with its id (events in between skipped)."""
    await socket.send(orjson.dumps(message).decode())
    async with asyncio.timeout(30):
        async for raw in socket:
            frame = orjson.loads(raw)
            if frame.get("type") != "event" and frame.get("id") == message.get("id"):
                return frame  # type: ignore[no-any-return]
    raise AssertionError("the socket closed")


@pytest.fixture
async def echo(daemon: Daemon) -> AsyncIterator[ClientConnection]:
    socket = await open_socket(daemon, "echo", "chat")
    try:
        yield socket
    finally:
        await socket.close()


def log(daemon: Daemon, agent: str, key: str) -> list[dict[str, Any]]:
    with daemon.client() as api:
        got = api.get(f"/v1/agents/{agent}/sessions/{quote(key, safe='')}/events")
        return got.json()["events"] if got.status_code == 200 else []  # type: ignore[no-any-return]


async def test_a_message_and_its_events_with_the_sse_ids(daemon: Daemon,
                                                         echo: ClientConnection) -> None:
    ack = await request(echo, {"type": "send", "content": "hello", "id": "m1"})
    assert ack["type"] == "ack" and ack["run"]["status"] in ("queued", "running")
    got = await frames(echo, "done")
    names = [f["event"] for f in got]
    assert names[0] == "message.user" and "message.assistant" in names
    assert got[-1]["data"]["kind"] == "run.completed"
    # The same ids as the session's SSE stream: <seq>@<tag>, seqs of the log.
    seqs = [int(f["id"].split("@")[0]) for f in got if f["event"] != "token"]
    assert seqs == [e["seq"] for e in log(daemon, "echo", "chat")]
    # The same id again is the same run (the idempotency key).
    again = await request(echo, {"type": "send", "content": "hello", "id": "m1"})
    assert again["duplicate"] and again["run"]["id"] == ack["run"]["id"]


async def test_replay_from_a_last_event_id(daemon: Daemon) -> None:
    first = await open_socket(daemon, "echo", "replay")
    await request(first, {"type": "send", "content": "one", "id": "a"})
    done = await frames(first, "done")
    await first.close()
    second_id = next(f["id"] for f in done if f["event"] != "token"
                     and int(f["id"].split("@")[0]) == 2)
    again = await open_socket(daemon, "echo", "replay", f"?last_event_id={second_id}")
    replayed = await frames(again, "done")
    await again.close()
    assert int(replayed[0]["id"].split("@")[0]) == 3
    assert replayed[-1]["data"]["kind"] == "run.completed"


async def test_the_subprotocol_carries_the_token_and_none_is_refused(daemon: Daemon
                                                                     ) -> None:
    token = read_token(daemon.home)
    async with connect(ws_url(daemon, "echo", "sub"),
                       subprotocols=["agentd.v1", f"agentd.token.{token}"]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "agentd.v1"
        pong = await request(socket, {"type": "ping", "id": "p"})
        assert pong["type"] == "pong"
    for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}},
                   {"subprotocols": ["agentd.v1", "agentd.token.wrong"]}):
        with pytest.raises(InvalidStatus) as caught:
            await connect(ws_url(daemon, "echo", "sub"), **kwargs)
        assert caught.value.response.status_code == 403


async def test_a_dropped_socket_cancels_nothing(daemon: Daemon) -> None:
    socket = await open_socket(daemon, "slow", "dropped")
    ack = await request(socket, {"type": "send", "content": "go", "id": "x"})
    await socket.close()
    run_id = ack["run"]["id"]
    with daemon.client() as api:
        wait_until(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "completed",
                   what="the run to finish without its socket")


async def test_cancel_and_interrupt(daemon: Daemon) -> None:
    socket = await open_socket(daemon, "slow", "steering")
    first = await request(socket, {"type": "send", "content": "one", "id": "1"})
    second = await request(socket, {"type": "interrupt", "content": "two", "id": "2"})
    assert second["type"] == "ack"
    with daemon.client() as api:
        # Cancelled at its next step boundary (its model call abandoned).
        wait_until(lambda: api.get(f"/v1/runs/{first['run']['id']}").json()["status"]
                   == "cancelled", what="the first run cancelled by the interrupt")
    cancelled = await request(socket, {"type": "cancel", "id": "3"})
    assert cancelled["type"] == "cancelled"
    assert [r["id"] for r in cancelled["runs"]] == [second["run"]["id"]]
    with daemon.client() as api:
        wait_until(lambda: api.get(f"/v1/runs/{second['run']['id']}").json()["status"]
                   == "cancelled", what="the second run cancelled")
    await socket.close()


async def test_an_approval_decided_on_the_socket(daemon: Daemon) -> None:
    socket = await open_socket(daemon, "careful", "ask")
    await request(socket, {"type": "send", "content": "compute", "id": "c"})
    asked = (await frames(socket, "approval.requested"))[-1]["data"]["data"]
    decided = await request(socket, {"type": "decide", "id": "d", "action": "approve",
                                     "approval_id": asked["approval_id"]})
    assert decided["type"] == "decided" and decided["decision"]["action"] == "approve"
    done = await frames(socket, "done")
    assert done[-1]["data"]["kind"] == "run.completed"
    await socket.close()


@pytest.mark.parametrize(("raw", "code"), [
    ("{not json", "invalid_input"),
    ("[1, 2]", "invalid_input"),
    ('{"type": "dance"}', "invalid_input"),
    ('{"type": "send"}', "invalid_input"),
    ('{"type": "send", "content": "x", "mode": "shout"}', "invalid_input"),
    ('{"type": "send", "content": "x", "extra": 1}', "invalid_input"),
    ('{"type": "decide", "approval_id": "nope", "action": "approve"}',
     "approval_not_found"),
    ('{"type": "cancel", "run_id": "r_nope"}', "run_not_found"),
])
async def test_bad_input_is_an_error_frame_and_the_socket_goes_on(
        daemon: Daemon, echo: ClientConnection, raw: str, code: str) -> None:
    before = log(daemon, "echo", "chat")
    await echo.send(raw)
    frame = orjson.loads(await asyncio.wait_for(echo.recv(), 30))
    assert frame["type"] == "error", frame
    assert frame["error"]["code"] == code, frame
    pong = await request(echo, {"type": "ping", "id": "after"})
    assert pong["type"] == "pong"
    assert log(daemon, "echo", "chat") == before


async def test_an_unknown_agent_closes_with_the_reason(daemon: Daemon) -> None:
    socket = await open_socket(daemon, "nobody", "k")
    frame = orjson.loads(await asyncio.wait_for(socket.recv(), 30))
    assert frame["error"]["code"] == "agent_not_found"
    await asyncio.wait_for(socket.wait_closed(), 30)
    assert socket.close_code == 4404


def test_the_http_api_is_unchanged_for_a_plain_get(daemon: Daemon) -> None:
    got = httpx.get(ws_url(daemon, "echo", "chat").replace("ws://", "http://"),
                    headers=daemon.auth())
    assert got.status_code in (404, 405)


async def test_a_message_continues_its_callers_trace(daemon: Daemon) -> None:
    """A ``traceparent`` on the message (or, without one, on the upgrade request)
    makes the run a child of the caller's span; an invalid one is ignored."""
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    upgrade = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    socket = await connect(ws_url(daemon, "echo", "traced"), additional_headers={
        "Authorization": f"Bearer {read_token(daemon.home)}", "traceparent": upgrade})
    try:
        runs = []
        for i, extra in enumerate(({"traceparent": caller}, {}, {"traceparent": "00-bad"})):
            ack = await request(socket, {"type": "send", "content": "hi", "id": f"t{i}",
                                         **extra})
            assert ack["type"] == "ack", ack
            await frames(socket, "done")
            runs.append(ack["run"]["id"])
    finally:
        await socket.close()
    with daemon.client() as api:
        roots = [api.get(f"/v1/runs/{run}/trace").json()["resourceSpans"][0]["scopeSpans"]
                 [0]["spans"][0] for run in runs]
    assert (roots[0]["traceId"], roots[0]["parentSpanId"]) == (caller[3:35], caller[36:52])
    assert (roots[1]["traceId"], roots[1]["parentSpanId"]) == (upgrade[3:35], upgrade[36:52])
    # An invalid one on the message is ignored: the upgrade request's is taken.
    assert roots[2]["traceId"] == upgrade[3:35]
