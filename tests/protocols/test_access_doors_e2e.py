"""Token scopes through every protocol door, with each protocol's official client,
against the real daemon process (its tokens and scopes given in the environment:
``AGENTD_TOKENS``, ``AGENTD_ACCESS``): a token whose scope leaves ``globex-bot`` out
cannot list, read, drive or learn of it through OpenAI, MCP, A2A, LangGraph, the
WebSocket channel or the live feed; each door answers exactly as for an agent that
does not exist, and nothing is written. The unscoped token still sees everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import httpx2
import openai
import orjson
import pytest
from a2a.client import create_client
from a2a.client.client import ClientConfig
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from tests.daemons import TOOL_MESSAGE, Daemon, create_agent
from websockets.asyncio.client import connect

from agentd.protocols.mcp import session_uri

pytestmark = pytest.mark.e2e

ACME, GLOBEX, ADMIN = "acme-door-token-0123", "globex-door-token-0123", "admin-door-tok"
ACCESS = {"token-1": {"tenants": ["acme"]}, "token-2": {"agents": ["globex-*"]}}
GHOST = "nobody-bot"


def _agent_settings(tenant: str) -> dict[str, Any]:
    return {"tenant": tenant, "policy": {"rules": [{"tool": "calculator",
                                                     "action": "ask"}]}}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("access")
    process = Daemon(root / "home", root / "agentd.log", env={
        "AGENTD_DEMO_AGENT": "false", "AGENTD_TOKENS": json.dumps([ACME, GLOBEX, ADMIN]),
        "AGENTD_ACCESS": json.dumps(ACCESS)}, args=()).start()
    with process.client(ADMIN) as api:
        for name, tenant in (("acme-bot", "acme"), ("globex-bot", "globex")):
            create_agent(api, name, tools=["calculator"], settings=_agent_settings(tenant))
            done = api.post(f"/v1/agents/{name}/sessions/chat/messages",
                            json={"content": "hello", "wait": True})
            assert done.json()["status"] == "completed", done.text
            asked = api.post(f"/v1/agents/{name}/sessions/ask/messages",
                             json={"content": TOOL_MESSAGE, "wait": True})
            assert asked.json()["status"] == "waiting_approval", asked.text
    try:
        yield process
    finally:
        process.cleanup()


def state(daemon: Daemon) -> dict[str, Any]:
    """What the admin token sees of both agents: what a refused request must not
    change."""
    with daemon.client(ADMIN) as api:
        out: dict[str, Any] = {}
        for name in ("acme-bot", "globex-bot"):
            out[name] = {
                "agent": api.get(f"/v1/agents/{name}").json(),
                "sessions": api.get(f"/v1/agents/{name}/sessions").json(),
                "runs": api.get("/v1/runs", params={"agent": name, "limit": 200}).json(),
                "entries": api.get(f"/v1/agents/{name}/memory/entries").json(),
            }
        out["approvals"] = api.get("/v1/approvals").json()
        return out


def globex_run(daemon: Daemon) -> str:
    with daemon.client(ADMIN) as api:
        runs = api.get("/v1/runs", params={"agent": "globex-bot"}).json()["runs"]
        return str(runs[-1]["id"])


def same(one: str, other: str) -> bool:
    """Two answers alike once the names (or ids) in them are made the same."""
    return one.replace("globex-bot", "<X>") == other.replace(GHOST, "<X>")


# -- OpenAI ----------------------------------------------------------------------------


def test_openai_lists_and_answers_only_the_tokens_agents(daemon: Daemon) -> None:
    before = state(daemon)
    with openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=ACME, timeout=60,
                       max_retries=0) as sdk, openai.OpenAI(
            base_url=f"{daemon.url}/v1", api_key=ADMIN, timeout=60) as admin:
        assert {m.id for m in sdk.models.list()} == {"acme-bot"}
        assert {m.id for m in admin.models.list()} == {"acme-bot", "globex-bot"}
        errors: dict[str, list[openai.APIStatusError]] = {"globex-bot": [], GHOST: []}
        for model in errors:
            for call in (
                lambda m=model: sdk.models.retrieve(m),
                lambda m=model: sdk.chat.completions.create(
                    model=m, messages=[{"role": "user", "content": "hi"}]),
                lambda m=model: sdk.chat.completions.create(
                    model=m, messages=[{"role": "user", "content": "hi"}], stream=True),
                lambda m=model: sdk.responses.create(model=m, input="hi"),
            ):
                with pytest.raises(openai.NotFoundError) as caught:
                    call()
                assert caught.value.code == "model_not_found"
                errors[model].append(caught.value)
        for theirs, none in zip(errors["globex-bot"], errors[GHOST], strict=True):
            assert same(theirs.response.text, none.response.text)
        # A response (a run) of an agent outside the scope is no response.
        run = globex_run(daemon)
        for response_id in ("resp_" + run, "resp_r_0000ghost"):
            with pytest.raises(openai.NotFoundError) as caught:
                sdk.responses.retrieve(response_id)
            assert caught.value.code == "response_not_found"
            with pytest.raises(openai.NotFoundError):
                sdk.responses.create(model="acme-bot", input="hi",
                                     previous_response_id=response_id)
        assert admin.responses.retrieve("resp_" + run).model == "globex-bot"
    assert state(daemon) == before
    with openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=ACME, timeout=60) as sdk:
        reply = sdk.chat.completions.create(
            model="acme-bot", messages=[{"role": "user", "content": "in scope"}])
        assert reply.choices[0].message.content == "echo: in scope"


# -- MCP -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mcp_client(daemon: Daemon, token: str) -> AsyncIterator[Client]:
    @contextlib.asynccontextmanager
    async def transport() -> AsyncIterator[Any]:
        async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                       timeout=60) as http,
                    streamable_http_client(f"{daemon.url}/mcp", http_client=http) as streams):
            yield streams

    async with Client(transport(), cache=None) as client:
        yield client


async def test_mcp_tools_and_resources_are_the_scopes(daemon: Daemon) -> None:
    before = state(daemon)
    async with mcp_client(daemon, ACME) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"acme-bot"}
        messages: dict[str, list[str]] = {"globex-bot": [], GHOST: []}
        for name in messages:
            with pytest.raises(MCPError) as caught:
                await client.call_tool(name, {"message": "hi", "session": "chat"})
            messages[name].append(str(caught.value))
            with pytest.raises(MCPError) as caught:
                await client.read_resource(session_uri(name, "chat"))
            messages[name].append(str(caught.value))
        for theirs, none in zip(messages["globex-bot"], messages[GHOST], strict=True):
            assert same(theirs, none), (theirs, none)
        approvals = orjson.loads((await client.read_resource("agentd://approvals"))
                                 .contents[0].text)  # type: ignore[union-attr]
        assert {a["agent"] for a in approvals["approvals"]} == {"acme-bot"}
    async with mcp_client(daemon, ADMIN) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"acme-bot",
                                                                        "globex-bot"}
        approvals = orjson.loads((await client.read_resource("agentd://approvals"))
                                 .contents[0].text)  # type: ignore[union-attr]
        assert {a["agent"] for a in approvals["approvals"]} == {"acme-bot", "globex-bot"}
    assert state(daemon) == before


# -- A2A -------------------------------------------------------------------------------


def _rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


async def test_a2a_cards_and_calls_of_agents_outside_the_scope_are_not_found(
        daemon: Daemon) -> None:
    before = state(daemon)
    send = _rpc("SendMessage", {"message": {
        "role": "ROLE_USER", "messageId": uuid.uuid4().hex, "parts": [{"text": "hi"}]}})
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth(ACME)) as http:
        answers: dict[str, list[httpx.Response]] = {"globex-bot": [], GHOST: []}
        for name in answers:
            answers[name] += [
                await http.get(f"/a2a/{name}/.well-known/agent-card.json"),
                await http.post(f"/a2a/{name}", json=send),
                await http.post(f"/a2a/{name}", json=_rpc("GetTask", {"id": "x"}))]
        for theirs, none in zip(answers["globex-bot"], answers[GHOST], strict=True):
            assert theirs.status_code == 404, theirs.text
            assert same(theirs.text, none.text)
        # The official client cannot get past the card either.
        for name in answers:
            with pytest.raises(Exception) as caught:
                await create_client(f"{daemon.url}/a2a/{name}",
                                    client_config=ClientConfig(httpx_client=http))
            assert "404" in str(caught.value)
        # Through an agent of its scope, another agent's task is no task.
        # Through an agent of its scope, another agent's task is answered exactly as
        # a task that never existed (code, message, data).
        errors = []
        for method in ("GetTask", "CancelTask"):
            for task in (globex_run(daemon), "r_0000ghost"):
                got = await http.post("/a2a/acme-bot", json=_rpc(method, {"id": task}))
                errors.append(got.text.replace(task, "<X>"))
        assert errors[0] == errors[1] and errors[2] == errors[3], errors
        assert "-32001" in errors[0]
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth(ADMIN)) as http:
        assert (await http.get("/a2a/globex-bot/.well-known/agent-card.json")
                ).status_code == 200
    assert state(daemon) == before


# -- LangGraph (Agent Protocol) --------------------------------------------------------


async def test_langgraph_assistants_threads_runs_and_store_are_the_scopes(
        daemon: Daemon) -> None:
    admin = get_client(url=f"{daemon.url}/langgraph", api_key=ADMIN, timeout=60)
    sdk = get_client(url=f"{daemon.url}/langgraph", api_key=ACME, timeout=60)
    try:
        thread = await admin.threads.create(graph_id="globex-bot")
        await admin.runs.wait(thread["thread_id"], "globex-bot",
                              input={"messages": "a globex secret"})
        await admin.store.put_item(["globex-bot", "notes"], "k", {"secret": 1})
        before = state(daemon)
        assert {a["assistant_id"] for a in await sdk.assistants.search()} == {"acme-bot"}
        assert await sdk.assistants.count() == 1
        assert await admin.assistants.count() == 2
        assert not [t for t in await sdk.threads.search(limit=100)
                    if "globex" in json.dumps(t)]
        assert [t for t in await admin.threads.search(limit=100)
                if t["thread_id"] == thread["thread_id"]]
        assert not [n for n in (await sdk.store.list_namespaces())["namespaces"]
                    if n[0] == "globex-bot"]
        ghost_thread = f"{GHOST}:{uuid.uuid4()}"
        texts: dict[str, list[str]] = {"globex-bot": [], GHOST: []}
        for name, thread_id in (("globex-bot", thread["thread_id"]),
                                (GHOST, ghost_thread)):
            for call in (
                lambda n=name: sdk.assistants.get(n),
                lambda t=thread_id: sdk.threads.get(t),
                lambda t=thread_id: sdk.threads.get_state(t),
                lambda t=thread_id: sdk.threads.update_state(t, {"messages": "sneak"}),
                lambda n=name: sdk.runs.wait(None, n, input={"messages": "hi"}),
                lambda n=name: sdk.store.search_items([n]),
                lambda n=name: sdk.store.get_item([n, "notes"], "k"),
                lambda n=name: sdk.store.put_item([n, "notes"], "k", {"mine": 1}),
            ):
                # runs.wait raises httpx's own error (the SDK's reconnecting path).
                with pytest.raises((NotFoundError, httpx.HTTPStatusError)) as caught:
                    await call()
                assert caught.value.response.status_code == 404
                texts[name].append(caught.value.response.text.replace(
                    thread_id.partition(":")[2], "<id>"))
        for theirs, none in zip(texts["globex-bot"], texts[GHOST], strict=True):
            assert same(theirs, none), (theirs, none)
        assert state(daemon) == before
    finally:
        await admin.aclose()
        await sdk.aclose()


# -- WebSocket -------------------------------------------------------------------------


def _ws(daemon: Daemon, agent: str, key: str) -> str:
    return (f"{daemon.url.replace('http://', 'ws://')}/v1/agents/{agent}/sessions/"
            f"{quote(key, safe='')}/ws")


async def test_a_websocket_to_an_agent_outside_the_scope_closes_as_for_none(
        daemon: Daemon) -> None:
    before = state(daemon)
    closed: dict[str, tuple[Any, ...]] = {}
    for name in ("globex-bot", GHOST):
        socket = await connect(_ws(daemon, name, "chat"),
                               additional_headers=daemon.auth(ACME))
        frame = orjson.loads(await asyncio.wait_for(socket.recv(), 30))
        await asyncio.wait_for(socket.wait_closed(), 30)
        closed[name] = (frame["error"]["code"],
                        frame["error"]["message"].replace(name, "<X>"), socket.close_code)
    assert closed["globex-bot"] == closed[GHOST]
    assert closed[GHOST][0] == "agent_not_found" and closed[GHOST][2] == 4404
    # On a socket of its own agent, another agent's approval is unknown.
    with daemon.client(ADMIN) as api:
        theirs = [a["approval_id"] for a in api.get(
            "/v1/approvals", params={"agent": "globex-bot"}).json()["approvals"]]
    socket = await connect(_ws(daemon, "acme-bot", "ws"), additional_headers=daemon.auth(ACME))
    answers = []
    for approval in (theirs[0], "ap_nothere"):
        await socket.send(orjson.dumps({"type": "decide", "id": "d", "action": "approve",
                                        "approval_id": approval}).decode())
        frame = orjson.loads(await asyncio.wait_for(socket.recv(), 30))
        answers.append((frame["error"]["code"],
                        frame["error"]["message"].replace(approval, "<X>")))
    await socket.close()
    assert answers[0] == answers[1] and answers[0][0] == "approval_not_found"
    assert state(daemon) == before


def _runs_of(daemon: Daemon, agent: str, session: str) -> list[str]:
    with daemon.client(ADMIN) as api:
        return [r["id"] for r in api.get("/v1/runs", params={
            "agent": agent, "session": session}).json()["runs"]]


def _approvals_of(daemon: Daemon, agent: str) -> list[str]:
    with daemon.client(ADMIN) as api:
        return [a["approval_id"] for a in api.get(
            "/v1/approvals", params={"agent": agent}).json()["approvals"]]


async def _error_frames(daemon: Daemon, token: str, frames: list[tuple[str, dict[str, Any]]]
                        ) -> list[tuple[Any, ...]]:
    """The error frame each (id, message) gets on acme-bot's session "ws", with the id
    made the same, so that only what differs besides it shows."""
    socket = await connect(_ws(daemon, "acme-bot", "ws"), additional_headers=daemon.auth(token))
    out = []
    for named, message in frames:
        await socket.send(orjson.dumps({**message, "id": "x"}).decode())
        frame = orjson.loads(await asyncio.wait_for(socket.recv(), 30))
        assert frame["type"] == "error", frame
        error = frame["error"]
        out.append((frame["id"], error.pop("code"), error.pop("message").replace(named, "<X>"),
                    orjson.dumps(error, option=orjson.OPT_SORT_KEYS)))
    await socket.close()
    return out


async def test_a_websocket_frame_tells_no_object_of_elsewhere_from_none(daemon: Daemon
                                                                        ) -> None:
    """A cancel or decide frame names only a run or approval of its socket's session:
    another agent's (outside the token's scope or not), another session's of the same
    agent, and an id that never existed all get the same frame, and nothing changes."""
    before = state(daemon)
    # acme-bot's "ask" run waits for approval: another session's, cancellable, decidable.
    runs = [globex_run(daemon), *_runs_of(daemon, "acme-bot", "ask"),
            *_runs_of(daemon, "globex-bot", "ask"), "r_0000ghost"]
    approvals = [*_approvals_of(daemon, "acme-bot"), *_approvals_of(daemon, "globex-bot"),
                 "ap_0000ghost"]
    assert len(runs) == 4 and len(approvals) == 3
    for token in (ACME, ADMIN):
        cancels = await _error_frames(daemon, token, [
            (run, {"type": "cancel", "run_id": run}) for run in runs])
        assert len(set(cancels)) == 1, cancels
        assert cancels[0][1] == "run_not_found"
        decides = await _error_frames(daemon, token, [
            (approval, {"type": "decide", "action": "approve", "approval_id": approval})
            for approval in approvals])
        assert len(set(decides)) == 1, decides
        assert decides[0][1] == "approval_not_found"
    assert state(daemon) == before


# -- the live feed ---------------------------------------------------------------------


async def test_the_feed_carries_only_the_scopes_agents(daemon: Daemon) -> None:
    seen: dict[str, list[dict[str, Any]]] = {ACME: [], ADMIN: []}

    async def read(token: str, http: httpx.AsyncClient, opened: asyncio.Event) -> None:
        async with http.stream("GET", "/v1/events", headers=daemon.auth(token)) as got:
            assert got.status_code == 200
            async for line in got.aiter_lines():
                if line.startswith(": feed"):
                    opened.set()
                if line.startswith("data: "):
                    frame = orjson.loads(line[6:])
                    seen[token].append(frame)
                    if frame["agent"] == "acme-bot" and frame["kind"] == "run.completed":
                        return

    async with httpx.AsyncClient(base_url=daemon.url, timeout=60) as http:
        opened = {token: asyncio.Event() for token in seen}
        readers = [asyncio.create_task(read(t, http, opened[t])) for t in seen]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened.values())), 30)
        admin = daemon.auth(ADMIN)
        # globex-bot's run first, to its end: its events come before acme-bot's.
        for name in ("globex-bot", "acme-bot"):
            done = await http.post(f"/v1/agents/{name}/sessions/feed/messages",
                                   headers=admin, json={"content": "x", "wait": True})
            assert done.json()["status"] == "completed"
        await asyncio.wait_for(asyncio.gather(*readers), 60)
    assert {f["agent"] for f in seen[ADMIN]} == {"globex-bot", "acme-bot"}
    assert {f["agent"] for f in seen[ACME]} == {"acme-bot"}
