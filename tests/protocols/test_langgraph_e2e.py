"""The Agent Protocol door with the official ``langgraph-sdk`` client, unmodified,
against the real daemon process over a socket: assistants, threads, runs (wait,
stream, background + join, cancel), interrupts for approvals resumed with a command,
the store over agent memory, auth, and every refusal in LangGraph's error shape with
nothing written."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
)
from tests.daemons import Daemon, create_agent

from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("langgraph")
    process = Daemon(root / "home", root / "agentd.log",
                     env={"AGENTD_DEMO_AGENT": "false"}, args=()).start()
    with process.client() as api:
        create_agent(api, "echo")
        create_agent(api, "other")
        create_agent(api, "support")  # the docs' example talks to it
        create_agent(api, "spender", tools=["calculator"], settings={
            "budget": {"run": {"steps": 2}},
            "script": [{"tool_calls": [{"name": "calculator",
                                        "arguments": {"expression": "1+1"}}]}]})
        create_agent(api, "poet", settings={"script": [
            {"text": "roses are red, violets are blue", "delay_ms": 200}]})
        create_agent(api, "slow", settings={"script": [
            {"text": "a slow and steady answer", "delay_ms": 20000}]})
        create_agent(api, "broken", settings={"script": [{"error": "the model broke"}]})
        create_agent(api, "careful", tools=["calculator"], settings={
            "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
            "script": [{"tool_calls": [{"name": "calculator",
                                        "arguments": {"expression": "6*7"}}]},
                       {"text": "it is 42"}]})
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[LangGraphClient]:
    sdk = get_client(url=f"{daemon.url}/langgraph", api_key=read_token(daemon.home),
                     timeout=60)
    try:
        yield sdk
    finally:
        await sdk.aclose()


@pytest.fixture
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as native:
        yield native


def user_messages(api: httpx.Client, agent: str, key: str) -> list[str]:
    got = api.get(f"/v1/agents/{agent}/sessions/{key}/events")
    if got.status_code == 404:
        return []
    return [e["data"]["content"] for e in got.json()["events"] if e["kind"] == "message.user"]


def total_runs(api: httpx.Client) -> int:
    return len(api.get("/v1/runs", params={"limit": 200}).json()["runs"])


def contents(values: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in values["messages"]]


def test_remote_graph_drives_an_agent(daemon: Daemon) -> None:
    """LangGraph's own RemoteGraph, unmodified: invoke, stream, get_state (which posts
    the checkpoint it was given: it was not routed), the history, and async."""
    from langgraph.pregel.remote import RemoteGraph

    remote = RemoteGraph("echo", url=f"{daemon.url}/langgraph",
                         api_key=read_token(daemon.home))
    thread = remote.sync_client.threads.create(graph_id="echo")
    assert thread["created_at"] > "2026"  # it said 1970-01-01 for a thread not run yet
    config: Any = {"configurable": {"thread_id": thread["thread_id"]}}
    out = remote.invoke({"messages": [{"role": "user", "content": "one"}]}, config)
    assert [m["content"] for m in out["messages"]] == ["one", "echo: one"]
    chunks = list(remote.stream({"messages": [{"role": "user", "content": "two"}]},
                                config, stream_mode="values"))
    assert chunks[-1]["messages"][-1]["content"] == "echo: two"
    state = remote.get_state(config)
    assert [m["content"] for m in state.values["messages"]][-2:] == ["two", "echo: two"]
    assert not state.next and state.config["configurable"]["checkpoint_id"]
    # The state at the checkpoint it names: the same; at another, not kept.
    assert remote.get_state(state.config).values == state.values
    gone = {"configurable": {**config["configurable"], "checkpoint_id": "1"}}
    with pytest.raises(Exception, match="not kept"):
        remote.get_state(gone)
    history = list(remote.get_state_history(config))
    assert history and history[0].values == state.values

    async def asynchronous() -> dict[str, Any]:
        result: dict[str, Any] = await remote.ainvoke(
            {"messages": [{"role": "user", "content": "three"}]}, config)
        return result

    assert asyncio.run(asynchronous())["messages"][-1]["content"] == "echo: three"


async def test_the_docs_example_runs(daemon: Daemon, tmp_path: Path) -> None:
    """docs/protocols/langgraph.md's example, as written but for the port, with a home
    whose ~/.agentd is the daemon's."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "protocols" / "langgraph.md"
            ).read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    assert "http://127.0.0.1:8721/langgraph" in code
    code = code.replace("http://127.0.0.1:8721", daemon.url)
    (tmp_path / ".agentd").symlink_to(daemon.home)
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = out.decode().splitlines()
    assert "support" in lines[0]  # the assistants
    assert lines[1].startswith("echo")  # the echo model's reply
    assert "'key': 'tone'" in lines[-1]  # the store item found by its value


async def test_assistants_are_the_agents(client: LangGraphClient) -> None:
    found = {a["assistant_id"] for a in await client.assistants.search(limit=100)}
    assert {"echo", "poet", "careful"} <= found
    poet = await client.assistants.get("poet")
    assert poet["graph_id"] == "poet"
    assert [a["assistant_id"] for a in await client.assistants.search(graph_id="poet")
            ] == ["poet"]
    with pytest.raises(NotFoundError) as caught:
        await client.assistants.get("nobody")
    assert caught.value.code == "assistant_not_found"


async def test_a_thread_is_a_session_of_the_agent(client: LangGraphClient,
                                                  api: httpx.Client) -> None:
    thread = await client.threads.create()
    thread_id = thread["thread_id"]
    values = await client.runs.wait(thread_id, "poet", input={
        "messages": [{"role": "user", "content": "a poem please"}]})
    assert contents(values) == [("human", "a poem please"),
                                ("ai", "roses are red, violets are blue")]
    # The run went through the runtime: a session of the agent, keyed by the thread.
    assert user_messages(api, "poet", f"lg:{thread_id}") == ["a poem please"]
    again = await client.runs.wait(thread_id, "poet", input={"messages": "and another"})
    assert [c for _, c in contents(again)][-2:] == ["and another",
                                                    "roses are red, violets are blue"]
    got = await client.threads.get(thread_id)
    assert got["status"] == "idle" and got["metadata"]["graph_id"] == "poet"
    assert len(got["values"]["messages"]) == 4
    state = await client.threads.get_state(thread_id)
    assert contents(state["values"]) == contents(again)
    runs = await client.runs.list(thread_id)
    assert [r["status"] for r in runs] == ["success", "success"]
    one = await client.runs.get(thread_id, runs[0]["run_id"])
    assert one["assistant_id"] == "poet" and one["thread_id"] == thread_id
    listed = await client.threads.search(metadata={"graph_id": "poet"}, limit=100)
    assert thread_id in {t["thread_id"] for t in listed}
    assert await client.threads.count(metadata={"graph_id": "poet"}) == len(listed)
    assert await client.threads.search(metadata={"user": "x"}) == []
    # Another assistant cannot take the thread over.
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(thread_id, "echo", input={"messages": "mine now"})
    assert caught.value.response.status_code == 409
    assert user_messages(api, "echo", f"lg:{thread_id}") == []
    await client.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        await client.threads.get(thread_id)


async def test_a_thread_created_for_an_assistant(client: LangGraphClient) -> None:
    thread = await client.threads.create(graph_id="echo")
    assert thread["thread_id"].startswith("echo:")
    fresh = await client.threads.get(thread["thread_id"])
    assert fresh["status"] == "idle" and fresh["values"] == {"messages": []}
    with pytest.raises(ConflictError):
        await client.runs.create(thread["thread_id"], "poet", input={"messages": "hi"})
    with pytest.raises(NotFoundError):
        await client.threads.create(graph_id="nobody")


async def test_thread_ids_the_client_chooses(client: LangGraphClient) -> None:
    # "user:42" names no agent: a thread id like any other (bound by its first run).
    made = await client.threads.create(thread_id="user:42")
    assert made["thread_id"] == "user:42"
    await client.runs.wait("user:42", "poet", input={"messages": "hello"})
    assert (await client.threads.get("user:42"))["metadata"]["graph_id"] == "poet"
    with pytest.raises(ConflictError) as caught:
        await client.threads.create(thread_id="user:42")
    assert caught.value.code == "thread_exists"
    same = await client.threads.create(thread_id="user:42", if_exists="do_nothing")
    assert len(same["values"]["messages"]) == 2
    # "echo:..." names an agent: that agent's thread, for another assistant a conflict.
    await client.threads.create(thread_id="echo:mine")
    with pytest.raises(ConflictError):
        await client.runs.create("echo:mine", "poet", input={"messages": "hi"})


async def test_if_not_exists_reject(client: LangGraphClient, api: httpx.Client) -> None:
    # A thread nobody ran on: refused, and nothing written for it (an id that is the
    # assistant's name too: only "<assistant>:..." is the assistant's own).
    for thread_id in ("never-seen", "echo"):
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await client.runs.wait(thread_id, "echo", input={"messages": "hi"},
                                   if_not_exists="reject")
        assert caught.value.response.status_code == 404
        assert user_messages(api, "echo", f"lg:{thread_id}") == []
    # One created for the assistant exists (though nothing is stored until it runs),
    # as does one that ran: both take the run.
    made = await client.threads.create(graph_id="echo")
    for _ in range(2):
        got = await client.runs.wait(made["thread_id"], "echo", if_not_exists="reject",
                                     input={"messages": "here"})
        assert contents(got)[-1] == ("ai", "echo: here")
    # Another assistant's thread stays its own, whatever the strategy.
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await client.runs.wait(made["thread_id"], "other", input={"messages": "x"},
                               if_not_exists="reject")
    assert caught.value.response.status_code == 409
    assert user_messages(api, "other", f"lg:{made['thread_id']}") == []


async def test_streamed_values_messages_and_updates(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    parts = [part async for part in client.runs.stream(
        thread["thread_id"], "poet", input={"messages": [("user", "stream it")]},
        stream_mode=["values", "messages", "updates", "messages-tuple"])]
    events = [p.event for p in parts]
    assert events[0] == "metadata" and events[-1] == "end"
    partial = [p.data[0]["content"] for p in parts if p.event == "messages/partial"]
    assert partial and partial[-1] == "roses are red, violets are blue"
    chunks = "".join(p.data[0]["content"] for p in parts if p.event == "messages")
    assert chunks == "roses are red, violets are blue"
    updates = [p.data for p in parts if p.event == "updates"]
    assert updates[-1]["agent"]["messages"][0]["content"] == chunks
    values = [p.data for p in parts if p.event == "values"]
    assert contents(values[0]) == [("human", "stream it")]
    assert contents(values[-1])[-1] == ("ai", chunks)


async def test_a_big_threads_values_stream_whole(client: LangGraphClient) -> None:
    # Values of a few hundred kilobytes go out in writes of their own: each frame is
    # still whole, with every message in order.
    thread = (await client.threads.create(graph_id="echo"))["thread_id"]
    big = [{"type": "human" if i % 2 == 0 else "ai", "content": f"{i} " + "x" * 40_000}
           for i in range(6)]
    await client.threads.update_state(thread, {"messages": big})
    parts = [part async for part in client.runs.stream(
        thread, "echo", input={"messages": "and now?"}, stream_mode=["values", "updates"])]
    assert [p.event for p in parts] == ["metadata", "values", "updates", "values", "end"]
    first, last = (p.data for p in parts if p.event == "values")
    want = [(m["type"], m["content"]) for m in big] + [("human", "and now?")]
    assert contents(first) == want
    assert contents(last) == [*want, ("ai", "echo: and now?")]
    waited = await client.runs.wait(thread, "echo", input={"messages": "again"})
    assert contents(waited) == [*contents(last), ("human", "again"), ("ai", "echo: again")]


async def test_a_thread_restored_through_the_native_api_has_its_restored_state(
        client: LangGraphClient, daemon: Daemon) -> None:
    thread = (await client.threads.create(graph_id="echo"))["thread_id"]
    key = quote(f"lg:{thread}", safe="")
    await client.runs.wait(thread, "echo", input={"messages": "kept"})
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as api:
        made = await api.post(f"/v1/agents/echo/sessions/{key}/checkpoints",
                              json={"name": "c"})
        assert made.status_code == 201, made.text
        undone = await client.runs.wait(thread, "echo", input={"messages": "undone"})
        assert contents(undone)[-1] == ("ai", "echo: undone")
        restored = await api.post(f"/v1/checkpoints/{made.json()['id']}/restore")
        assert restored.status_code == 200, restored.text
    kept = [("human", "kept"), ("ai", "echo: kept")]
    assert contents((await client.threads.get_state(thread))["values"]) == kept
    assert contents((await client.threads.get(thread))["values"]) == kept
    after = await client.runs.wait(thread, "echo", input={"messages": "after"})
    assert contents(after) == [*kept, ("human", "after"), ("ai", "echo: after")]
    parts = [part async for part in client.runs.stream(
        thread, "echo", input={"messages": "streamed"}, stream_mode="values")]
    assert contents(parts[-2].data) == [*contents(after), ("human", "streamed"),
                                        ("ai", "echo: streamed")]


async def test_a_stateless_run(client: LangGraphClient) -> None:
    values = await client.runs.wait(None, "poet", input={"messages": "once"})
    assert contents(values)[-1] == ("ai", "roses are red, violets are blue")


async def test_background_run_joined_and_a_failed_run(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "poet",
                                   input={"messages": "later"})
    assert run["status"] in ("pending", "running")
    joined = await client.runs.join(thread["thread_id"], run["run_id"])
    assert contents(joined)[-1][1] == "roses are red, violets are blue"
    assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"
    broken = await client.threads.create()
    with pytest.raises(Exception, match="the model broke"):
        await client.runs.wait(broken["thread_id"], "broken", input={"messages": "x"})
    assert (await client.threads.get(broken["thread_id"]))["status"] == "error"
    parts = [p async for p in client.runs.stream(None, "broken", input={"messages": "y"})]
    assert parts[-1].event == "error" and "the model broke" in parts[-1].data["message"]


async def test_a_budget_stops_the_run_as_an_error(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    with pytest.raises(Exception, match="budget_exceeded"):
        await client.runs.wait(thread["thread_id"], "spender", input={"messages": "go"})
    parts = [p async for p in client.runs.stream(thread["thread_id"], "spender",
                                                 input={"messages": "again"})]
    assert parts[-1].event == "error" and parts[-1].data["error"] == "budget_exceeded"
    runs = await client.runs.list(thread["thread_id"])
    assert [r["status"] for r in runs] == ["error", "error"]


async def test_a_request_dropped_mid_body_writes_nothing(daemon: Daemon,
                                                         api: httpx.Client) -> None:
    before = total_runs(api)
    token = read_token(daemon.home)
    body = b'{"assistant_id": "echo", "input": {"messages": "half'
    _reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(b"POST /langgraph/threads/t-dropped/runs/wait HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"x-api-key: " + token.encode() + b"\r\ncontent-type: application/json"
                 b"\r\ncontent-length: 500\r\n\r\n" + body)
    await writer.drain()
    writer.close()  # gone before the body is whole
    await writer.wait_closed()
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as native:
        assert (await native.get("/health")).status_code == 200
        got = await native.get("/v1/agents/echo/sessions/lg:t-dropped")
    assert got.status_code == 404
    assert total_runs(api) == before


async def test_cancel_a_run(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "slow", input={"messages": "go"})
    cancelled = await client.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
    assert cancelled["status"] == "interrupted"


async def test_an_approval_is_an_interrupt_resumed_by_a_command(
        client: LangGraphClient) -> None:
    thread = await client.threads.create()
    values = await client.runs.wait(thread["thread_id"], "careful",
                                    input={"messages": "what is 6*7?"})
    asked = values["__interrupt__"][0]["value"]
    assert asked["name"] == "calculator" and asked["arguments"] == {"expression": "6*7"}
    assert set(asked["options"]) >= {"approve", "deny"}
    got = await client.threads.get(thread["thread_id"])
    assert got["status"] == "interrupted" and got["interrupts"]
    # An action the request does not offer decides nothing.
    with pytest.raises(UnprocessableEntityError):
        await client.runs.create(thread["thread_id"], "careful",
                                 command={"resume": "launch"})
    assert (await client.threads.get(thread["thread_id"]))["status"] == "interrupted"
    resumed = await client.runs.wait(thread["thread_id"], "careful",
                                     command={"resume": "approve"})
    assert contents(resumed)[-1] == ("ai", "it is 42")
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"
    with pytest.raises(ConflictError) as caught:
        await client.runs.create(thread["thread_id"], "careful",
                                 command={"resume": "approve"})
    assert caught.value.code == "not_waiting"


async def test_reject_strategy_on_a_busy_thread(client: LangGraphClient,
                                               api: httpx.Client) -> None:
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "slow", input={"messages": "one"})
    assert (await client.threads.get(thread["thread_id"]))["status"] == "busy"
    with pytest.raises(ConflictError) as caught:
        await client.runs.create(thread["thread_id"], "slow", input={"messages": "two"},
                                 multitask_strategy="reject")
    assert caught.value.code == "session_busy"
    assert user_messages(api, "slow", f"lg:{thread['thread_id']}") == ["one"]
    await client.runs.cancel(thread["thread_id"], run["run_id"], wait=True)


async def test_interrupt_strategy_stops_the_run_under_way(client: LangGraphClient
                                                          ) -> None:
    thread = await client.threads.create()
    first = await client.runs.create(thread["thread_id"], "slow", input={"messages": "a"})
    second = await client.runs.create(thread["thread_id"], "slow", input={"messages": "b"},
                                      multitask_strategy="interrupt")
    await client.runs.join(thread["thread_id"], first["run_id"])  # waits for its end
    got = await client.runs.get(thread["thread_id"], first["run_id"])
    assert got["status"] == "interrupted"
    await client.runs.cancel(thread["thread_id"], second["run_id"], wait=True)


async def test_a_denied_tool_call_resumes_the_run(client: LangGraphClient) -> None:
    thread = await client.threads.create()
    parts = [p async for p in client.runs.stream(
        thread["thread_id"], "careful", input={"messages": "6*7?"},
        stream_mode="updates")]
    assert parts[-2].event == "updates" and "__interrupt__" in parts[-2].data
    assert (await client.threads.get_state(thread["thread_id"]))["next"] == ["agent"]
    resumed = [p async for p in client.runs.stream(
        thread["thread_id"], "careful", command={"resume": "deny"},
        stream_mode="values")]
    assert resumed[-1].event == "end"
    assert resumed[-1].data["status"] == "success"
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"


async def test_resuming_needs_a_person_even_without_auth(tmp_path: Path) -> None:
    process = Daemon(tmp_path / "home", tmp_path / "agentd.log",
                     env={"AGENTD_DEMO_AGENT": "false", "AGENTD_AUTH": "none"},
                     args=()).start()
    try:
        async with httpx.AsyncClient(base_url=process.url,
                                     headers=process.auth()) as native:
            made = await native.post("/v1/agents", json={
                "name": "careful", "tools": ["calculator"], "settings": {
                    "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
                    "script": [{"tool_calls": [{"name": "calculator",
                                                "arguments": {"expression": "1"}}]},
                               {"text": "done"}]}})
            assert made.status_code == 201, made.text
        sdk = get_client(url=f"{process.url}/langgraph", api_key="", timeout=60)
        thread = await sdk.threads.create()
        values = await sdk.runs.wait(thread["thread_id"], "careful",
                                     input={"messages": "go"})
        assert values["__interrupt__"]  # sending needs no token here
        with pytest.raises(AuthenticationError):
            await sdk.runs.create(thread["thread_id"], "careful",
                                  command={"resume": "approve"})
        assert (await sdk.threads.get(thread["thread_id"]))["status"] == "interrupted"
        await sdk.aclose()
        # With the daemon's token, a person decides (and is named in the decision).
        sdk = get_client(url=f"{process.url}/langgraph", api_key=read_token(process.home),
                         timeout=60)
        resumed = await sdk.runs.wait(thread["thread_id"], "careful",
                                      command={"resume": "approve"})
        assert resumed["messages"][-1]["content"] == "done"
        await sdk.aclose()
        async with httpx.AsyncClient(base_url=process.url,
                                     headers=process.auth()) as native:
            events = (await native.get(
                f"/v1/agents/careful/sessions/lg:{thread['thread_id']}/events")).json()
        decided = [e["data"] for e in events["events"] if e["kind"] == "approval.decided"]
        assert [(d["action"], d.get("by")) for d in decided] == [("approve", "bootstrap")]
    finally:
        process.cleanup()


async def test_idempotency_key_sends_once(client: LangGraphClient, api: httpx.Client
                                          ) -> None:
    thread = await client.threads.create()
    for _ in range(2):
        await client.runs.wait(thread["thread_id"], "poet", input={"messages": "once"},
                               headers={"Idempotency-Key": "lg-once-1"})
    assert user_messages(api, "poet", f"lg:{thread['thread_id']}") == ["once"]


async def test_a_token_without_access_is_refused(daemon: Daemon, api: httpx.Client
                                                 ) -> None:
    before = total_runs(api)
    for key in ("wrong", None):
        sdk = get_client(url=f"{daemon.url}/langgraph", api_key=key or "", timeout=30)
        try:
            with pytest.raises(AuthenticationError):
                await sdk.assistants.search()
            with pytest.raises(AuthenticationError):
                await sdk.runs.create(None, "poet", input={"messages": "sneak"})
            with pytest.raises(httpx.HTTPStatusError) as caught:
                await sdk.runs.wait(None, "poet", input={"messages": "sneak"})
            assert caught.value.response.status_code == 401
        finally:
            await sdk.aclose()
    # x-api-key opens the door's paths only, never the native API.
    async with httpx.AsyncClient() as plain:
        native = await plain.get(f"{daemon.url}/v1/agents",
                                 headers={"x-api-key": read_token(daemon.home)})
    assert native.status_code == 401
    assert total_runs(api) == before


async def test_api_key_cannot_walk_out_of_the_door(daemon: Daemon) -> None:
    # x-api-key is honoured on /langgraph/ paths only: a path that walks back out
    # (sent raw: clients normalise dot segments) reaches no native route.
    token = read_token(daemon.home)
    for path in ("/langgraph/../v1/agents", "/langgraph/%2e%2e/v1/agents",
                 "/langgraph//v1/agents"):
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        answer = (await reader.read()).decode(errors="replace")
        writer.close()
        status = int(answer.split(" ", 2)[1])
        assert status in (404, 405), answer[:300]
        assert '"agents"' not in answer and '"detail"' in answer


@pytest.mark.parametrize(("body", "code"), [
    ({"assistant_id": "nobody", "input": {"messages": "hi"}}, "assistant_not_found"),
    ({"assistant_id": "echo", "input": {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}},
     "unsupported"),
    ({"assistant_id": "echo", "input": {"messages": [{"role": "system",
                                                      "content": "obey"}]}},
     "unsupported"),
    ({"assistant_id": "echo", "input": {"messages": []}}, "invalid_input"),
    ({"assistant_id": "echo", "input": {"todo": 1}}, "unsupported"),
    ({"assistant_id": "echo", "input": {"messages": "hi"}, "stream_mode": "debug"},
     "unsupported"),
    ({"assistant_id": "echo", "input": {"messages": "hi"}, "interrupt_before": ["a"]},
     "unsupported"),
    ({"assistant_id": "echo"}, "invalid_input"),
    ({"assistant_id": 5, "input": {"messages": "hi"}}, "invalid_input"),
    ({"assistant_id": "echo", "input": {"messages": "x" * 2_000_000}},
     "payload_too_large"),
])
def test_bad_runs_are_refused_in_langgraph_shape(daemon: Daemon, api: httpx.Client,
                                                 body: dict[str, Any], code: str) -> None:
    before = total_runs(api)
    token = read_token(daemon.home)
    got = httpx.post(f"{daemon.url}/langgraph/threads/t-bad/runs/wait", json=body,
                     headers={"x-api-key": token}, timeout=30)
    assert 400 <= got.status_code < 500, got.text
    assert got.json()["code"] == code and got.json()["detail"]
    assert total_runs(api) == before
    assert user_messages(api, "echo", "lg:t-bad") == []


def test_malformed_json_and_unknown_routes(daemon: Daemon) -> None:
    headers = {"x-api-key": read_token(daemon.home), "content-type": "application/json"}
    bad = httpx.post(f"{daemon.url}/langgraph/threads", content=b"{nope",
                     headers=headers)
    assert bad.status_code == 422 and "not valid JSON" in bad.json()["detail"]
    missing = httpx.get(f"{daemon.url}/langgraph/crons/search", headers=headers)
    assert missing.status_code in (404, 405) and "detail" in missing.json()
    gone = httpx.get(f"{daemon.url}/langgraph/threads/never-made", headers=headers)
    assert gone.status_code == 404 and gone.json()["code"] == "thread_not_found"


async def test_a_dropped_stream_keeps_the_run(daemon: Daemon, client: LangGraphClient
                                              ) -> None:
    thread = await client.threads.create()
    token = read_token(daemon.home)
    async with httpx.AsyncClient(base_url=f"{daemon.url}/langgraph",
                                 headers={"x-api-key": token}) as raw, raw.stream(
            "POST", f"/threads/{thread['thread_id']}/runs/stream",
            json={"assistant_id": "poet", "input": {"messages": "drop me"}}) as response:
        assert response.status_code == 200
        run_id = response.headers["x-agentd-run"]
        async for _ in response.aiter_lines():
            break  # the client goes away mid-stream
    joined = await client.runs.join(thread["thread_id"], run_id)
    assert contents(joined)[-1] == ("ai", "roses are red, violets are blue")


@pytest.mark.parametrize("dialect", ["sqlite",
                                     pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_threads_and_items_survive_a_kill(tmp_path: Any, dialect: str,
                                                request: pytest.FixtureRequest) -> None:
    env = {"AGENTD_DEMO_AGENT": "false"}
    if dialect == "postgresql":
        env["AGENTD_DATABASE_URL"] = request.getfixturevalue("pg_url")
    process = Daemon(tmp_path / "home", tmp_path / "agentd.log", env=env, args=()).start()
    try:
        with process.client() as native:
            create_agent(native, "poet", settings={"script": [{"text": "still here"}]})
        sdk = get_client(url=f"{process.url}/langgraph",
                         api_key=read_token(process.home), timeout=60)
        thread = await sdk.threads.create()
        await sdk.runs.wait(thread["thread_id"], "poet", input={"messages": "remember"})
        await sdk.store.put_item(["poet", "facts"], "sky", {"colour": "blue sky"})
        await sdk.aclose()
        # Killed, not stopped: the thread and the item must come from the store alone.
        process.signal_and_wait(signal.SIGKILL)
        process.start()
        sdk = get_client(url=f"{process.url}/langgraph",
                         api_key=read_token(process.home), timeout=60)
        state = await sdk.threads.get_state(thread["thread_id"])
        assert contents(state["values"]) == [("human", "remember"), ("ai", "still here")]
        assert (await sdk.threads.get(thread["thread_id"]))["metadata"]["graph_id"] == "poet"
        item = await sdk.store.get_item(["poet", "facts"], "sky")
        assert item["value"] == {"colour": "blue sky"}
        found = await sdk.store.search_items(["poet"], query="sky")
        assert [i["key"] for i in found["items"]] == ["sky"]
        again = await sdk.runs.wait(thread["thread_id"], "poet",
                                    input={"messages": "still?"})
        assert len(again["messages"]) == 4
        await sdk.aclose()
    finally:
        process.cleanup()


# -- update_state: messages added without a run ----------------------------------------


def session_events(api: httpx.Client, agent: str, key: str) -> list[dict[str, Any]]:
    got = api.get(f"/v1/agents/{agent}/sessions/{key}/events")
    return [] if got.status_code == 404 else list(got.json()["events"])


@pytest.mark.parametrize("dialect", ["sqlite",
                                     pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_update_state_adds_messages_the_next_run_sees(
        tmp_path: Path, dialect: str, request: pytest.FixtureRequest) -> None:
    """``threads.update_state`` and RemoteGraph's ``update_state`` append messages to
    the thread without a run; the next run's model call holds them, in order, and the
    state and history show them at the new checkpoint."""
    from langchain_core.messages import HumanMessage
    from langgraph.pregel.remote import RemoteGraph

    from agentd.testing import StubLLMServer

    env = {"AGENTD_DEMO_AGENT": "false"}
    if dialect == "postgresql":
        env["AGENTD_DATABASE_URL"] = request.getfixturevalue("pg_url")
    with StubLLMServer() as stub:
        process = Daemon(tmp_path / "home", tmp_path / "agentd.log", env=env,
                         args=()).start()
        try:
            with process.client() as native:
                create_agent(native, "recorder", model="openai-compatible:stub",
                             settings={"base_url": stub.base_url})
            remote = RemoteGraph("recorder", url=f"{process.url}/langgraph",
                                 api_key=read_token(process.home))
            sdk = remote.sync_client
            assert sdk is not None
            thread_id = sdk.threads.create(graph_id="recorder")["thread_id"]
            # Seeding a thread with a conversation it never ran: no run, no model call.
            seeded = sdk.threads.update_state(thread_id, {"messages": [
                {"role": "user", "content": "my name is Ada"},
                {"type": "ai", "content": "noted, Ada", "id": "seed-1"}]})
            assert seeded["checkpoint"]["thread_id"] == thread_id
            assert seeded["checkpoint"]["checkpoint_ns"] == ""
            state = sdk.threads.get_state(thread_id)
            assert state["checkpoint"]["checkpoint_id"] == seeded["checkpoint"][
                "checkpoint_id"]
            assert contents(state["values"]) == [("human", "my name is Ada"),
                                                 ("ai", "noted, Ada")]
            assert state["values"]["messages"][1]["id"] == "seed-1"
            assert sdk.runs.list(thread_id) == [] and stub.requests == []
            # RemoteGraph, as LangGraph users call it: a message object, as the node.
            config: Any = {"configurable": {"thread_id": thread_id}}
            updated = remote.update_state(config, {"messages": [
                HumanMessage("I live in Paris")]}, as_node="agent")
            assert updated["configurable"]["thread_id"] == thread_id
            assert int(updated["configurable"]["checkpoint_id"]) > int(
                seeded["checkpoint"]["checkpoint_id"])
            after = remote.get_state(updated)  # the checkpoint it answered is the latest
            assert [m["content"] for m in after.values["messages"]][-1] == "I live in Paris"
            # The seeded state's checkpoint is gone by now: updating from it is refused.
            with pytest.raises(NotFoundError) as stale:
                sdk.threads.update_state(thread_id, {"messages": "late"},
                                         checkpoint_id=seeded["checkpoint"]["checkpoint_id"])
            assert stale.value.code == "checkpoint_not_found"
            # The next run's model call holds every added message, in order.
            out = remote.invoke({"messages": [{"role": "user",
                                               "content": "where do I live?"}]}, config)
            assert out["messages"][-1]["content"] == "stub: where do I live?"
            [call] = stub.requests
            said = [(m["role"], m["content"]) for m in call["messages"]
                    if m["role"] != "system"]
            assert said == [("user", "my name is Ada"), ("assistant", "noted, Ada"),
                            ("user", "I live in Paris"), ("user", "where do I live?")]
            history = list(remote.get_state_history(config))
            assert [m["content"] for m in history[0].values["messages"]] == [
                "my name is Ada", "noted, Ada", "I live in Paris", "where do I live?",
                "stub: where do I live?"]
            # In agentd's own log: message.added events, with no run, by the token.
            with process.client() as native:
                added = [e for e in session_events(native, "recorder", f"lg:{thread_id}")
                         if e["kind"] == "message.added"]
            assert [(e["data"]["role"], e["run_id"]) for e in added] == [
                ("user", None), ("assistant", None), ("user", None)]
            assert all(e["data"]["by"] for e in added)
        finally:
            process.cleanup()


@pytest.mark.parametrize(("values", "extra", "status", "code"), [
    ({"messages": [{"type": "remove", "id": "seed-1"}]}, {}, 422, "unsupported"),
    ({"messages": [{"type": "ai", "content": "again", "id": "seed-1"}]}, {}, 422,
     "unsupported"),
    ({"messages": [{"role": "user", "content": "a", "id": "x"},
                   {"role": "user", "content": "b", "id": "x"}]}, {}, 422, "unsupported"),
    ({"messages": [{"role": "system", "content": "obey"}]}, {}, 422, "unsupported"),
    ({"messages": [{"type": "tool", "content": "42", "tool_call_id": "c"}]}, {}, 422,
     "unsupported"),
    ({"messages": [{"type": "ai", "content": "", "tool_calls": [
        {"name": "calculator", "args": {}, "id": "c"}]}]}, {}, 422, "unsupported"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": "x"}]}]}, {}, 422,
     "unsupported"),
    ({"messages": "hi", "todo": [1]}, {}, 422, "unsupported"),
    ({"messages": []}, {}, 422, "invalid_input"),
    ({"messages": [{"role": "user", "content": "  "}]}, {}, 422, "invalid_input"),
    ([{"messages": "hi"}], {}, 422, "unsupported"),
    (None, {}, 422, "invalid_input"),
    ({"messages": "hi"}, {"as_node": "tools"}, 422, "unsupported"),
    ({"messages": "hi"}, {"checkpoint_id": "1000"}, 404, "checkpoint_not_found"),
    ({"messages": "x" * 2_000_000}, {}, 413, "payload_too_large"),
])
def test_bad_state_updates_write_nothing(daemon: Daemon, api: httpx.Client,
                                         values: Any, extra: dict[str, Any], status: int,
                                         code: str) -> None:
    token = read_token(daemon.home)
    url = f"{daemon.url}/langgraph/threads/echo:t-update-bad/state"
    seed = httpx.post(url, json={"values": {"messages": [
        {"type": "ai", "content": "hello", "id": "seed-1"}]}},
        headers={"x-api-key": token}, timeout=30)
    if seed.status_code != 200:  # seeded by an earlier case (ids are kept once)
        assert seed.json()["code"] == "unsupported", seed.text
    before = session_events(api, "echo", "lg:echo:t-update-bad")
    assert before and before[-1]["kind"] == "message.added"
    got = httpx.post(url, json={"values": values, **extra},
                     headers={"x-api-key": token}, timeout=30)
    assert got.status_code == status, got.text
    assert got.json()["code"] == code and got.json()["detail"]
    assert session_events(api, "echo", "lg:echo:t-update-bad") == before


async def test_update_state_waits_for_the_threads_turn(client: LangGraphClient,
                                                      api: httpx.Client) -> None:
    """A thread whose run is under way (or waits for a decision) is busy: 409, and
    nothing is added into the run; once it is over the update goes in. A thread no
    agent holds yet is not found."""
    thread = await client.threads.create(graph_id="slow")
    thread_id = thread["thread_id"]
    run = await client.runs.create(thread_id, "slow", input={"messages": "go"})
    with pytest.raises(ConflictError) as busy:
        await client.threads.update_state(thread_id, {"messages": "meanwhile"})
    assert busy.value.code == "session_busy"
    await client.runs.cancel(thread_id, run["run_id"], wait=True)
    done = await client.threads.update_state(thread_id, {"messages": "afterwards"})
    state = await client.threads.get_state(thread_id)
    assert state["checkpoint"]["checkpoint_id"] == done["checkpoint"]["checkpoint_id"]
    assert contents(state["values"]) == [("human", "go"), ("human", "afterwards")]
    assert "meanwhile" not in str(session_events(api, "slow", f"lg:{thread_id}"))
    with pytest.raises(NotFoundError) as missing:
        await client.threads.update_state("no-agent-holds-this", {"messages": "hi"})
    assert missing.value.code == "thread_not_found"


# -- the store: agent memory ----------------------------------------------------------


def memory_contents(api: httpx.Client, agent: str) -> list[str]:
    got = api.get(f"/v1/agents/{agent}/memory/entries", params={"limit": 200})
    assert got.status_code == 200, got.text
    return [e["content"] for e in got.json()["entries"]]


async def test_the_store_is_the_agents_memory(client: LangGraphClient, api: httpx.Client
                                              ) -> None:
    await client.store.put_item(["other", "prefs"], "colour", {"likes": "teal"})
    await client.store.put_item(["other", "prefs", "food"], "lunch", {"likes": "soup"})
    await client.store.put_item(["other"], "name", {"name": "Ada"})
    got = await client.store.get_item(["other", "prefs"], "colour")
    assert got["value"] == {"likes": "teal"} and got["namespace"] == ["other", "prefs"]
    # An item is a memory entry of the agent (its recall and search find it).
    assert '{"likes":"teal"}' in memory_contents(api, "other")
    await client.store.put_item(["other", "prefs"], "colour", {"likes": "crimson"})
    assert (await client.store.get_item(["other", "prefs"], "colour"))["value"] == {
        "likes": "crimson"}
    assert sum('"likes"' in c for c in memory_contents(api, "other")) == 2
    under = await client.store.search_items(["other", "prefs"])
    assert {i["key"] for i in under["items"]} == {"colour", "lunch"}
    filtered = await client.store.search_items(["other"], filter={"likes": "soup"})
    assert [i["key"] for i in filtered["items"]] == ["lunch"]
    by_query = await client.store.search_items(["other"], query="crimson")
    assert by_query["items"][0]["key"] == "colour"
    spaces = await client.store.list_namespaces(prefix=["other"])
    assert spaces["namespaces"] == [["other"], ["other", "prefs"],
                                    ["other", "prefs", "food"]]
    shallow = await client.store.list_namespaces(prefix=["other"], max_depth=2)
    assert shallow["namespaces"] == [["other"], ["other", "prefs"]]
    await client.store.delete_item(["other", "prefs"], "colour")
    with pytest.raises(NotFoundError) as caught:
        await client.store.get_item(["other", "prefs"], "colour")
    assert caught.value.code == "item_not_found"
    assert not any("crimson" in c for c in memory_contents(api, "other"))


async def test_a_tainted_entry_says_so(client: LangGraphClient, daemon: Daemon) -> None:
    # What an agent (or an import) wrote from untrusted input keeps its mark here.
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as native:
        made = await native.post("/v1/agents/other/memory/entries", json={
            "content": '{"note": "from a web page"}', "tags": ["langgraph"],
            "tainted": True, "metadata": {"lg_ns": "web", "lg_key": "page"}})
    assert made.status_code in (200, 201), made.text
    item = await client.store.get_item(["other", "web"], "page")
    assert item["value"] == {"note": "from a web page"} and item["tainted"]
    await client.store.put_item(["other", "web"], "clean", {"note": "mine"})
    assert "tainted" not in await client.store.get_item(["other", "web"], "clean")


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"namespace": [], "key": "k", "value": {"a": 1}}, 422, "invalid_input"),
    ({"namespace": ["nobody"], "key": "k", "value": {"a": 1}}, 404, "namespace_not_found"),
    ({"namespace": ["other", ""], "key": "k", "value": {"a": 1}}, 422, "invalid_input"),
    ({"namespace": ["other"], "key": "k", "value": "text"}, 422, "invalid_input"),
    ({"namespace": ["other"], "key": "k", "value": {"a": 1}, "ttl": 5}, 422,
     "unsupported"),
    ({"namespace": ["other"], "key": "k", "value": {"a": "x" * 3_000_000}}, 413,
     "payload_too_large"),
    ({"namespace": ["other"], "key": "k" * 201, "value": {"a": 1}}, 422, "invalid_input"),
    ({"namespace": ["other", "a.b"], "key": "k", "value": {"a": 1}}, 422,
     "invalid_input"),
])
def test_bad_store_writes_are_refused(daemon: Daemon, api: httpx.Client,
                                      body: dict[str, Any], status: int, code: str) -> None:
    before = memory_contents(api, "other")
    got = httpx.put(f"{daemon.url}/langgraph/store/items", json=body,
                    headers={"x-api-key": read_token(daemon.home)}, timeout=30)
    assert got.status_code == status, got.text
    assert got.json()["code"] == code
    assert memory_contents(api, "other") == before
