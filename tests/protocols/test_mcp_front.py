"""The MCP door's front (``tools/call`` served past the SDK's transport) answers as the
SDK does: each request is sent with the front on and off and the two answers compared
(status, content type, every JSON-RPC message), ids of runs, sessions and approvals
aside."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.server._scopes import ACME, ADMIN, GLOBEX, scoped_daemon, settings_for

from agentd.protocols.mcp._front import LEGACY_VERSION, MODERN_VERSION, MCPFront

VERSIONS = (LEGACY_VERSION, MODERN_VERSION)
_IDS = re.compile(r"\b(r|ap|mcp)[_:][0-9a-f]{8,}")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, MCPFront]]:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    async with scoped_daemon(settings) as (_, client):
        headers = {"Authorization": f"Bearer {ADMIN}"}
        for name, fields in (
                ("echo", {"tools": ["calculator"]}),
                ("careful", {"tools": ["calculator"], "settings": {
                    "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
                    "script": [{"tool_calls": [{"name": "calculator",
                                                "arguments": {"expression": "6*7"}}]},
                               {"text": "it is 42"}] * 8}}),
                ("broken", {"settings": {"script": [{"error": "the model broke"}] * 8}}),
                ("acme-bot", {"settings": {"tenant": "acme"}})):
            got = await client.post("/v1/agents", json={"name": name, **fields},
                                    headers=headers)
            assert got.status_code == 201, got.text
        transport = client._transport
        app = transport.app  # type: ignore[attr-defined]
        # The door is built by its first request (agentd.protocols._lazy): built here.
        _, front = await app.state.mcp.load()
        assert front is not None, "this mcp SDK has no fast path (see the daemon's log)"
        yield client, front


def _headers(version: str, token: str = ADMIN, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": version, **extra}


def _body(version: str, name: str, arguments: Any, *, token: int | None = None,
          session: str | None = None) -> dict[str, Any]:
    if isinstance(arguments, dict) and session is not None:
        arguments = {**arguments, "session": session}
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    meta: dict[str, Any] = {}
    if version == MODERN_VERSION:
        meta = {"io.modelcontextprotocol/protocolVersion": version,
                "io.modelcontextprotocol/clientCapabilities": {}}
    if token is not None:
        meta["progressToken"] = token
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


def _messages(response: httpx.Response) -> list[Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        out = []
        for frame in response.text.split("\r\n\r\n"):
            for line in frame.split("\r\n"):
                if line.startswith("data: "):
                    out.append(orjson.loads(line[6:]))
        return out
    if response.headers.get("content-type", "").startswith("application/json"):
        return [response.json()] if response.content else []
    return [response.text]


def _normal(response: httpx.Response) -> tuple[int, str, str, list[Any]]:
    raw = orjson.dumps(_messages(response)).decode()
    for run_id in re.findall(r'"run_id":"([^"]+)"', raw):
        raw = raw.replace(run_id, "RUN")
    raw = _IDS.sub("ID", raw)
    headers = sorted((k, v) for k, v in response.headers.items() if k != "content-length")
    return (response.status_code, response.headers.get("content-type", ""),
            repr(headers), orjson.loads(raw))


async def _both(client: httpx.AsyncClient, front: MCPFront, body: dict[str, Any],
                headers: dict[str, str], during: Any = None,
                expect_fast: bool = True) -> tuple[Any, Any, list[httpx.Response]]:
    answers = []
    if headers["MCP-Protocol-Version"] == MODERN_VERSION:
        # What the official client sends at this revision.
        headers = {**headers, "Mcp-Method": body["method"], "Mcp-Name": body["params"]["name"]}
    served = front.served
    for enabled in (True, False):
        front.enabled = enabled
        call = asyncio.create_task(client.post("/mcp", content=orjson.dumps(body),
                                               headers=headers))
        if during is not None:
            await during()
        answers.append(await call)
        if enabled:
            served = front.served - served
    front.enabled = True
    assert served == expect_fast, "the front did not serve the call" if expect_fast else \
        "the front served a call the SDK should have"
    return _normal(answers[0]), _normal(answers[1]), answers


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("progress", [None, 5])
async def test_a_call_answers_as_the_sdk_does(api: Any, version: str,
                                              progress: int | None) -> None:
    client, front = api
    fast, sdk, answers = await _both(client, front, _body(
        version, "echo", {"message": "/tool calculator {\"expression\": \"6*7\"}"},
        token=progress, session="s1"), _headers(version))
    assert fast == sdk
    messages = _messages(answers[0])
    assert "42" in messages[-1]["result"]["content"][0]["text"]
    notes = [m["params"]["message"] for m in messages[:-1]]
    assert notes == ([] if progress is None else
                     ["started", "calling calculator", "calculator done", "completed"])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "arguments"), [
    ("ghost", {"message": "x"}), ("echo", {}), ("echo", {"message": ""}),
    ("echo", {"message": 7}), ("echo", {"message": "x", "session": 3}),
    ("echo", {"message": "x", "extra": True}), ("broken", {"message": "hi"}),
    ("echo", ["not", "an", "object"]),  # the SDK's to refuse
])
async def test_refusals_and_failures_answer_as_the_sdk_does(
        api: Any, version: str, name: str, arguments: Any) -> None:
    client, front = api
    fast, sdk, answers = await _both(client, front, _body(version, name, arguments, token=3),
                                     _headers(version),
                                     expect_fast=isinstance(arguments, dict))
    assert fast == sdk
    message = _messages(answers[0])[-1]
    assert "error" in message or message["result"]["isError"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_token_out_of_scope_sees_no_tool(api: Any, version: str) -> None:
    client, front = api
    for token in (GLOBEX, ACME):
        fast, sdk, _ = await _both(client, front, _body(
            version, "acme-bot", {"message": "hi"}), _headers(version, token))
        assert fast == sdk
    _, ghost, _ = await _both(client, front, _body(version, "ghost", {"message": "hi"}),
                              _headers(version, GLOBEX))
    out, _, _ = await _both(client, front, _body(version, "acme-bot", {"message": "hi"}),
                            _headers(version, GLOBEX))
    # Outside the token's scope is what a missing agent is (the SDK's answer).
    assert out[3][-1]["error"]["message"].replace("acme-bot", "X") == \
        ghost[3][-1]["error"]["message"].replace("ghost", "X")


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_run_waiting_for_approval_answers_as_the_sdk_does(api: Any,
                                                                  version: str) -> None:
    client, front = api
    admin = {"Authorization": f"Bearer {ADMIN}"}

    async def approve() -> None:
        for _ in range(400):
            pending = (await client.get("/v1/approvals", headers=admin)).json()
            items = pending.get("approvals", pending) if isinstance(pending, dict) else pending
            if items:
                got = await client.post(f"/v1/approvals/{items[0]['approval_id']}",
                                        json={"action": "approve"}, headers=admin)
                assert got.status_code == 200, got.text
                return
            await asyncio.sleep(0.02)
        raise AssertionError("no approval came")

    fast, sdk, answers = await _both(client, front, _body(
        version, "careful", {"message": "compute"}, token=1), _headers(version),
        during=approve)
    assert fast == sdk
    assert _messages(answers[0])[-1]["result"]["content"][0]["text"] == "it is 42"


@pytest.mark.parametrize("body", [
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}',
    b'{"jsonrpc": "2.0", "method": "notifications/initialized"}',
    b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}]',
    b'{"jsonrpc": "2.0", "id": true, "method": "tools/call", "params": {"name": "echo"}}',
    b'{not json',
])
@pytest.mark.parametrize("version", [*VERSIONS, "2025-06-18"])
async def test_everything_else_is_the_sdks(api: Any, body: bytes, version: str) -> None:
    client, front = api
    served = front.served
    answers = []
    for enabled in (True, False):
        front.enabled = enabled
        answers.append(await client.post("/mcp", content=body, headers=_headers(version)))
    front.enabled = True
    assert _normal(answers[0]) == _normal(answers[1])
    assert front.served == served


@pytest.mark.parametrize("change", [
    {"MCP-Protocol-Version": None}, {"Accept": "application/json"},
    {"Accept": "text/event-stream"}, {"Content-Type": "text/plain"},
    {"Content-Type": "application/json-patch+json"}, {"Mcp-Session-Id": "abc"},
    {"Mcp-Param-Message": "x"}, {"Mcp-Name": "other"},
])
@pytest.mark.parametrize("version", VERSIONS)
async def test_headers_the_front_does_not_take_are_the_sdks(
        api: Any, change: dict[str, str | None], version: str) -> None:
    client, front = api
    headers: dict[str, str] = {"Mcp-Method": "tools/call", "Mcp-Name": "echo",
                               **_headers(version)}
    for name, value in change.items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    body = orjson.dumps(_body(version, "echo", {"message": "hi"}, token=2, session="h"))
    served = front.served
    answers = []
    for enabled in (True, False):
        front.enabled = enabled
        answers.append(await client.post("/mcp", content=body, headers=headers))
    front.enabled = True
    assert _normal(answers[0]) == _normal(answers[1])
    # The handshake era's transport does not read Mcp-Name: neither does the front.
    assert front.served - served == (version == LEGACY_VERSION and "Mcp-Name" in change)


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_quiet_call_is_kept_alive_as_the_sdk_does(
        api: Any, version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A call with no progress token waiting for a person: after the ping interval the
    # 2026-07-28 answer turns from JSON to SSE, and both eras ping while it waits.
    from mcp.server import _streamable_http_modern
    from sse_starlette import EventSourceResponse

    from agentd.protocols.mcp import _front

    monkeypatch.setattr(_front, "_PING_INTERVAL", 0.1)
    monkeypatch.setattr(_streamable_http_modern, "_SSE_PING_INTERVAL", 0.1)
    monkeypatch.setattr(EventSourceResponse, "DEFAULT_PING_INTERVAL", 0.1)
    client, front = api
    admin = {"Authorization": f"Bearer {ADMIN}"}

    async def approve_later() -> None:
        for _ in range(400):
            items = (await client.get("/v1/approvals", headers=admin)).json()
            items = items.get("approvals", items) if isinstance(items, dict) else items
            if items:
                await asyncio.sleep(0.45)
                got = await client.post(f"/v1/approvals/{items[0]['approval_id']}",
                                        json={"action": "approve"}, headers=admin)
                assert got.status_code == 200, got.text
                return
            await asyncio.sleep(0.02)
        raise AssertionError("no approval came")

    fast, sdk, answers = await _both(client, front, _body(
        version, "careful", {"message": "compute"}), _headers(version),
        during=approve_later)
    assert fast == sdk
    for answer in answers:
        assert answer.headers["content-type"] == "text/event-stream"
        pings = re.findall(r"^: ping.*$", answer.text, re.M)
        assert pings, answer.text
        shape = (r": ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+00:00\r"
                 if version == LEGACY_VERSION else r": ping\r")
        assert all(re.fullmatch(shape, p) for p in pings), pings


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_client_that_goes_away_ends_the_call_not_the_run(api: Any,
                                                                 version: str) -> None:
    client, _ = api
    app = client._transport.app  # type: ignore[attr-defined]
    body = _body(version, "careful", {"message": "compute"}, token=1)
    incoming = [{"type": "http.request", "body": orjson.dumps(body), "more_body": False}]
    gone = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if b"waiting for approval" in message.get("body", b""):
            gone.set()  # the client leaves while the run waits for a person

    headers = {**_headers(version), "Mcp-Method": "tools/call", "Mcp-Name": "careful"}
    scope = {"type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp",
             "query_string": b"", "http_version": "1.1", "scheme": "http",
             "server": ("test", 80), "client": ("127.0.0.1", 1), "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert gone.is_set() and sent[0]["status"] == 200
    assert not any(b'"result"' in m.get("body", b"") for m in sent)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    pending = (await client.get("/v1/approvals", headers=admin)).json()
    items = pending.get("approvals", pending) if isinstance(pending, dict) else pending
    assert [i["agent"] for i in items] == ["careful"]  # the run goes on waiting
