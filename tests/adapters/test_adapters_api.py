"""Adapter-backed agents (``model = "adapter:MODULE:OBJECT"``) through the HTTP API, on
SQLite and PostgreSQL: wait / no-wait / stream, the log, history across turns, session
modes, budgets, a raising, erroring and hanging adapter, and names the operator did
not allow refused naming the field with nothing created."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.adapters import sample_adapters as sample
from tests.conftest import asgi_client, eventually, wait_for_run
from tests.server.test_api import parse_sse

from agentd.assembly import Runtime
from agentd.config import Settings

MOD = "tests.adapters.sample_adapters"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                    adapters={"allow": [f"{MOD}:*"], "timeout_s": 5.0})


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as c:
        yield c


async def make(c: httpx.AsyncClient, name: str, obj: str, **settings: Any
               ) -> dict[str, Any]:
    made = await c.post("/v1/agents", json={"name": name, "model": f"adapter:{MOD}:{obj}",
                                            "settings": settings})
    assert made.status_code == 201, made.text
    out: dict[str, Any] = made.json()
    return out


async def say(c: httpx.AsyncClient, agent: str, content: str, key: str = "k",
              **body: Any) -> httpx.Response:
    return await c.post(f"/v1/agents/{agent}/sessions/{key}/messages",
                        json={"content": content, **body})


async def log(c: httpx.AsyncClient, agent: str, key: str = "k") -> list[dict[str, Any]]:
    got = await c.get(f"/v1/agents/{agent}/sessions/{key}/events")
    assert got.status_code == 200, got.text
    out: list[dict[str, Any]] = got.json()["events"]
    return out


async def test_function_adapter_wait_and_history(client: httpx.AsyncClient) -> None:
    await make(client, "fn", "echo")
    first = await say(client, "fn", "hello", wait=True)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "completed"
    assert first.json()["output"] == "echo hello after 0 turns"
    # The function sees the earlier turns, read from the durable log.
    second = (await say(client, "fn", "again", wait=True)).json()
    assert second["output"] == "echo again after 2 turns"
    other = (await say(client, "fn", "x", key="other", wait=True)).json()
    assert other["output"] == "echo x after 0 turns"  # sessions are apart
    kinds = [(e["kind"], e["data"].get("content") or e["data"].get("text"))
             for e in await log(client, "fn")]
    assert [k for k in kinds if k[0] in ("message.user", "message.assistant")] == [
        ("message.user", "hello"), ("message.assistant", "echo hello after 0 turns"),
        ("message.user", "again"), ("message.assistant", "echo again after 2 turns")]
    assistant = next(e for e in await log(client, "fn") if e["kind"] == "message.assistant")
    assert assistant["data"]["model"] == f"adapter:{MOD}:echo"


async def test_an_adapter_agents_run_is_neither_replayed_nor_forked(
        client: httpx.AsyncClient) -> None:
    """Its framework ran it, not agentd's loop: there is nothing to decide again.
    Refused (422), with nothing written."""
    await make(client, "fn", "echo")
    run = (await say(client, "fn", "hello", wait=True)).json()
    assert run["status"] == "completed", run
    replay = await client.post(f"/v1/runs/{run['id']}/replay")
    assert replay.status_code == 422, replay.text
    assert replay.json()["error"]["code"] == "replay_unsupported"
    fork = await client.post(f"/v1/runs/{run['id']}/fork", json={"from_step": 1})
    assert fork.status_code == 422, fork.text
    assert fork.json()["error"]["code"] == "fork_unsupported"
    sessions = (await client.get("/v1/agents/fn/sessions")).json()["sessions"]
    assert [s["key"] for s in sessions] == ["k"]


async def test_no_wait_then_run(client: httpx.AsyncClient) -> None:
    await make(client, "blk", "blocking")
    sent = await say(client, "blk", "zzz", wait=False)
    assert sent.status_code == 202, sent.text
    # The blocking function runs in a thread: the daemon answers meanwhile.
    assert (await client.get("/health")).status_code == 200
    run = await wait_for_run(client, sent.json()["id"])
    assert run["status"] == "completed" and run["output"] == "slept on zzz"


async def test_stream_tokens_and_tool_events(client: httpx.AsyncClient) -> None:
    await make(client, "w", "words")
    streamed = await say(client, "w", "hi there", stream=True)
    assert streamed.status_code == 200, streamed.text
    frames = parse_sse(streamed.text)
    names = [f["event"] for f in frames]
    assert names[-2:] == ["message.assistant", "done"]
    tokens = "".join(f["data"]["text"] for f in frames if f["event"] == "token")
    assert tokens == "you said hi there "
    assert frames[-1]["data"]["data"]["output"] == "you said hi there "

    await make(client, "t", "ToolUser")
    streamed = await say(client, "t", "cats", stream=True)
    frames = parse_sse(streamed.text)
    # (The SSE event names of tool events are tool_start / tool_end; kinds in data.)
    names = [f["data"].get("kind", f["event"]) for f in frames]
    assert names.index("tool.started") < names.index("tool.finished") < names.index(
        "message.assistant")
    started = frames[names.index("tool.started")]["data"]["data"]
    finished = frames[names.index("tool.finished")]["data"]["data"]
    assert (started["name"], started["arguments"]) == ("lookup", {"q": "cats"})
    assert finished["call_id"] == started["call_id"]
    assert (finished["output"], finished["is_error"]) == ("found cats", False)
    done = frames[-1]["data"]["data"]
    assert done["output"] == "found cats"
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (30, 12)
    # The stream is the log.
    stored = [e["kind"] for e in await log(client, "t")]
    assert stored == [n for n in names if n != "token"]
    assert stored[-1] == "run.completed"


async def test_budget_counts_reported_usage(client: httpx.AsyncClient) -> None:
    await make(client, "b", "ToolUser", budget={"run": {"tokens": 1000},
                                                "day": {"tokens": 50}})
    assert (await say(client, "b", "one", wait=True)).json()["status"] == "completed"
    # 42 tokens used of the day's 50: the next turn is allowed, the one after is not.
    assert (await say(client, "b", "two", wait=True)).json()["status"] == "completed"
    third = (await say(client, "b", "three", wait=True)).json()
    assert third["status"] == "failed"
    assert third["error"]["code"] == "budget_exceeded"
    # Charged to the agent like a model call's (the usage ledger).
    usage = await client.get("/v1/usage", params={"agent": "b"})
    assert usage.status_code == 200, usage.text
    assert usage.json()["totals"]["calls"] == 2
    assert (usage.json()["totals"]["input_tokens"],
            usage.json()["totals"]["output_tokens"]) == (60, 24)


async def test_raising_erroring_and_hanging_adapters_fail_the_run(
        client: httpx.AsyncClient) -> None:
    await make(client, "r", "Raising")
    failed = (await say(client, "r", "boom", wait=True)).json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "adapter_error"
    assert "RuntimeError" in failed["error"]["message"]
    assert "framework exploded on 'boom'" in failed["error"]["message"]

    await make(client, "e", "ErrorEvent")
    failed = (await say(client, "e", "x", wait=True)).json()
    assert failed["error"]["code"] == "adapter_error"
    assert "upstream said no" in failed["error"]["message"]

    await make(client, "n", "NotText")
    failed = (await say(client, "n", "x", wait=True)).json()
    assert failed["error"]["code"] == "adapter_error"
    assert "not str" in failed["error"]["message"]

    await make(client, "h", "Hanging", timeout_s=0.5)
    failed = (await say(client, "h", "x", wait=True)).json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "adapter_timeout"
    assert "0.5s" in failed["error"]["message"]
    # The daemon goes on, and the session takes the next message.
    assert (await say(client, "h", "y", wait=False)).status_code == 202
    # Nothing was lost: every message is in the log.
    users = [e["data"]["content"] for e in await log(client, "h")
             if e["kind"] == "message.user"]
    assert users == ["x", "y"]


async def test_session_modes(client: httpx.AsyncClient) -> None:
    sample.GATE["open"] = asyncio.Event()
    sample.SEEN.clear()
    sample.HISTORIES.clear()
    await make(client, "g", "Gated")
    first = await say(client, "g", "1", wait=False)
    assert first.status_code == 202
    await eventually(lambda: sample.SEEN == ["1"], what="the adapter got message 1")
    busy = await say(client, "g", "2", mode="reject")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy"
    steered = await say(client, "g", "3", mode="steer", wait=False)
    assert steered.status_code == 202 and steered.json()["id"] == first.json()["id"]
    queued = await say(client, "g", "4", wait=False)  # enqueue: its own run, after
    assert queued.json()["id"] != first.json()["id"]
    sample.GATE["open"].set()
    run = await wait_for_run(client, first.json()["id"])
    # The steered message is the adapter's next turn in the same run.
    assert run["status"] == "completed", run["error"]
    assert run["status"] == "completed" and run["output"] == "re 3 (2)"
    later = await wait_for_run(client, queued.json()["id"])
    assert later["output"] == "re 4 (4)"
    assert sample.SEEN == ["1", "3", "4"]
    texts = [(e["kind"], e["data"].get("content") or e["data"].get("text"))
             for e in await log(client, "g")
             if e["kind"] in ("message.user", "message.assistant")]
    # (A run's replies are committed with its end, after the messages it answered.)
    assert texts == [("message.user", "1"), ("message.user", "3"), ("message.user", "4"),
                     ("message.assistant", "re 1 (0)"), ("message.assistant", "re 3 (2)"),
                     ("message.assistant", "re 4 (4)")]
    assert sample.HISTORIES == [
        [], ["user:1", "assistant:re 1 (0)"],
        ["user:1", "user:3", "assistant:re 1 (0)", "assistant:re 3 (2)"]]


async def test_cancel_stops_a_turn_under_way(client: httpx.AsyncClient) -> None:
    await make(client, "hc", "Hanging")
    sent = await say(client, "hc", "x", wait=False)
    run_id = sent.json()["id"]

    async def running() -> bool:
        got = (await client.get(f"/v1/runs/{run_id}")).json()
        return bool(got["status"] == "running")

    await eventually(running, what="the run started")
    cancelled = await client.post(f"/v1/runs/{run_id}/cancel")
    assert cancelled.status_code in (200, 202), cancelled.text
    run = await wait_for_run(client, run_id)
    assert run["status"] == "cancelled"


@pytest.mark.parametrize(("model", "says"), [
    (f"adapter:{MOD}:NoSuchThing", "has no 'NoSuchThing'"),
    ("adapter:os:system", "not allowed"),
    ("adapter:tests.adapters.no_such_module:x", "not allowed"),
    ("adapter:not a module:x", "invalid adapter name"),
    ("adapter:justamodule", "invalid adapter name"),
    ("adapter:", "invalid adapter name"),
    (f"adapter:{MOD}:NOT_AN_ADAPTER", "not an adapter"),
])
async def test_bad_or_not_allowed_names_are_refused(client: httpx.AsyncClient, model: str,
                                                    says: str) -> None:
    made = await client.post("/v1/agents", json={"name": "x", "model": model})
    assert made.status_code == 422, made.text
    error = made.json()["error"]
    assert error["code"] == "invalid_model"
    assert says in error["message"]
    fields = [e["field"] for e in error.get("details", {}).get("errors", [])] or [
        error.get("details", {}).get("field")]
    assert "body.model" in fields, error
    assert (await client.get("/v1/agents")).json() == {"agents": []}


async def test_patching_to_a_not_allowed_adapter_is_refused(
        client: httpx.AsyncClient) -> None:
    await make(client, "p", "echo")
    patched = await client.patch("/v1/agents/p", json={"model": "adapter:subprocess:run"})
    assert patched.status_code == 422 and "not allowed" in patched.text
    assert (await client.get("/v1/agents/p")).json()["model"] == f"adapter:{MOD}:echo"
    fallbacks = await client.patch("/v1/agents/p", json={"settings": {
        "fallbacks": ["scripted"]}})
    assert fallbacks.status_code == 422 and "fallbacks" in fallbacks.text


async def test_nothing_allowed_by_default(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home2", demo_agent=False,
                        database_url=f"sqlite:///{tmp_path / 'd.db'}")
    runtime = await Runtime.open(settings)
    try:
        async with asgi_client(settings, runtime) as c:
            made = await c.post("/v1/agents", json={"name": "x",
                                                    "model": f"adapter:{MOD}:echo"})
            assert made.status_code == 422 and "not allowed" in made.text
    finally:
        await runtime.close()


async def test_interrupt_mode_cancels_the_turn(client: httpx.AsyncClient) -> None:
    sample.GATE["open"] = asyncio.Event()  # never opened: the first turn hangs
    sample.SEEN.clear()
    await make(client, "gi", "Gated")
    first = await say(client, "gi", "1", wait=False)
    await eventually(lambda: sample.SEEN == ["1"], what="the adapter got message 1")
    # Turns from now on find an open gate; the first one waits on its closed one.
    sample.GATE["open"] = asyncio.Event()
    sample.GATE["open"].set()
    interrupting = await say(client, "gi", "2", mode="interrupt", wait=True)
    assert interrupting.status_code == 200, interrupting.text
    assert interrupting.json()["status"] == "completed"
    assert interrupting.json()["output"] == "re 2 (0)"
    assert (await wait_for_run(client, first.json()["id"]))["status"] == "cancelled"


async def test_an_adapter_no_longer_allowed_fails_its_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    allowed = Settings(home=tmp_path / "h", demo_agent=False, database_url=url,
                       adapters={"allow": [f"{MOD}:echo"]})
    runtime = await Runtime.open(allowed)
    try:
        async with asgi_client(allowed, runtime) as c:
            await make(c, "fn", "echo")
            assert (await say(c, "fn", "hi", wait=True)).json()["status"] == "completed"
    finally:
        await runtime.close()
    # The operator removes it: the agent's next run fails, naming why; nothing lost.
    removed = Settings(home=tmp_path / "h", demo_agent=False, database_url=url)
    runtime = await Runtime.open(removed)
    try:
        async with asgi_client(removed, runtime) as c:
            run = (await say(c, "fn", "again", wait=True)).json()
            assert run["status"] == "failed"
            assert run["error"]["code"] == "invalid_model"
            assert "not allowed" in run["error"]["message"]
            users = [e["data"]["content"] for e in await log(c, "fn")
                     if e["kind"] == "message.user"]
            assert users == ["hi", "again"]
    finally:
        await runtime.close()


async def test_the_examples_run(client: httpx.AsyncClient, settings: Settings,
                                runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    monkeypatch.syspath_prepend(str(examples))
    allow = [*settings.adapters.allow, "echo_adapter:*"]
    settings.adapters = settings.adapters.model_copy(update={"allow": allow})
    made = await client.post("/v1/agents", json={"name": "shouty",
                                                 "model": "adapter:echo_adapter:shout"})
    assert made.status_code == 201, made.text
    assert (await say(client, "shouty", "hi", wait=True)).json()["output"] == "HI! (turn 1)"
    assert (await say(client, "shouty", "yo", wait=True)).json()["output"] == "YO! (turn 2)"
    made = await client.post("/v1/agents", json={
        "name": "counter", "model": "adapter:echo_adapter:CountingAdapter"})
    assert made.status_code == 201, made.text
    run = (await say(client, "counter", "one two three", wait=True)).json()
    assert run["output"] == "3 words; 0 earlier messages in k"
    kinds = [e["kind"] for e in await log(client, "counter")]
    assert "tool.started" in kinds and "tool.finished" in kinds


async def test_a_heartbeats_ok_reply_is_silent(client: httpx.AsyncClient,
                                               runtime: Runtime) -> None:
    await make(client, "hb", "nothing_to_report")
    sent = await runtime.send("hb", "heartbeat", "anything to do?",
                              origin={"ok_token": "HEARTBEAT_OK"})
    run = await runtime.wait(sent.run.id)
    assert run.status == "completed"
    replies = [e for e in await log(client, "hb", "heartbeat")
               if e["kind"] in ("message.assistant", "run.completed")]
    assert [e["data"].get("silent") for e in replies] == [True, True]
    # A client's message with the same reply is not silent.
    await say(client, "hb", "hi", key="other", wait=True)
    replies = [e for e in await log(client, "hb", "other")
               if e["kind"] == "message.assistant"]
    assert "silent" not in replies[0]["data"]


async def test_what_an_adapter_relays_is_bounded(client: httpx.AsyncClient) -> None:
    await make(client, "hx", "Hostile")
    run = (await say(client, "hx", "go", wait=True)).json()
    assert run["status"] == "completed" and run["output"] == "survived"
    assert run["usage"]["input_tokens"] == 0  # a negative or non-integer count is not one
    events = await log(client, "hx")
    started = [e["data"] for e in events if e["kind"] == "tool.started"]
    finished = [e["data"] for e in events if e["kind"] == "tool.finished"]
    assert [len(s["name"]) for s in started] == [200, 4, 3]  # cut; "" named "tool"
    assert started[0]["arguments"] == {"input": "{1, 2}"}  # not JSON: its text
    assert started[1]["arguments"] == {"input": "just text"}
    assert started[2]["arguments"]["cut"] > 64 * 1024  # cut, and says by how much
    assert len(finished) == 2  # the end without a start is dropped
    assert len(finished[0]["output"]) == 64 * 1024
    assert (finished[1]["output"], finished[1]["is_error"]) == ("", True)


async def test_an_adapter_that_fails_to_initialise(client: httpx.AsyncClient) -> None:
    await make(client, "fi", "FailingInit")
    run = (await say(client, "fi", "hi", wait=True)).json()
    assert run["status"] == "failed" and run["error"]["code"] == "adapter_error"
    assert "failed to initialise: ValueError: no API key configured" in run[
        "error"]["message"]


async def test_a_blocking_function_past_its_timeout(client: httpx.AsyncClient) -> None:
    await make(client, "sl", "sleepy", timeout_s=0.3)
    run = (await say(client, "sl", "hi", wait=True)).json()
    assert run["status"] == "failed" and run["error"]["code"] == "adapter_timeout"
    # The event loop was free meanwhile, and is now.
    assert (await client.get("/health")).status_code == 200


async def test_history_follows_a_restore_and_a_long_session(client: httpx.AsyncClient
                                                            ) -> None:
    # The adapter's history is converted incrementally per session: a restore (the
    # conversation cut back) must start it over, and growth must add each turn once.
    await make(client, "fnr", "echo")
    assert (await say(client, "fnr", "one", wait=True)).json()["output"] == (
        "echo one after 0 turns")
    made = await client.post("/v1/agents/fnr/sessions/k/checkpoints", json={"name": "c1"})
    assert made.status_code == 201, made.text
    for n in range(3):
        reply = (await say(client, "fnr", f"more {n}", wait=True)).json()
        assert reply["output"] == f"echo more {n} after {2 * (n + 1)} turns"
    restored = await client.post(f"/v1/checkpoints/{made.json()['id']}/restore")
    assert restored.status_code == 200, restored.text
    after = (await say(client, "fnr", "back", wait=True)).json()
    assert after["output"] == "echo back after 2 turns"
    again = (await say(client, "fnr", "on", wait=True)).json()
    assert again["output"] == "echo on after 4 turns"


async def test_an_adapter_on_termos_own_classes_logs_its_tool_calls(
        client: httpx.AsyncClient) -> None:
    """termo-agent's bundled adapters subclass its own ``AgentAdapter`` and yield its
    own ``StreamEvent``, which has no ``input`` or ``output`` (agentd read both: every
    turn with a tool call failed with AttributeError). Their input, output and call
    ids come in ``metadata``; two calls of one tool ending out of order are paired
    by id."""
    await make(client, "termo", "TermoTools")
    sent = await say(client, "termo", "owls", wait=True)
    assert sent.status_code == 200, sent.text
    assert sent.json()["output"] == "streamed: owls"
    events = await log(client, "termo")
    started = [e["data"] for e in events if e["kind"] == "tool.started"]
    finished = {e["data"]["call_id"]: e["data"] for e in events
                if e["kind"] == "tool.finished"}
    assert [(s["name"], s["arguments"], s["metadata"]["call_id"]) for s in started] == [
        ("search", {"q": "a"}, "c1"), ("search", {"q": "b"}, "c2")]
    first, second = (finished[s["call_id"]] for s in started)
    assert (first["output"], first["is_error"]) == ("no luck", True)
    assert (second["output"], second["is_error"]) == ("found b", False)
    assert second["metadata"] == {"call_id": "c2", "output": "found b"}


async def test_checks_and_schemas_only_the_run_loop_honours_are_refused_where_it_does_not_run(
        client: httpx.AsyncClient) -> None:
    """An adapter's runs are its framework's, a team's its members': neither goes
    through the run loop, which alone runs ``settings.hooks`` and holds answers to an
    output schema. A guardrail or a schema silently ignored would be worse than none,
    so saving one there, or sending such an agent a message with ``output_schema``, is
    refused (422, naming the field), nothing written."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    hooks = {"checks": [{"name": "c", "point": "output", "kind": "model",
                         "rule": "no secrets"}]}
    await make(client, "fw", "echo")
    await client.post("/v1/agents", json={"name": "m", "model": "scripted"})
    team = await client.post("/v1/agents", json={"name": "crew", "settings": {
        "team": {"pattern": "pipeline", "members": ["m"]}}})
    assert team.status_code == 201, team.text
    for body, field in (
            ({"name": "fw2", "model": f"adapter:{MOD}:echo",
              "settings": {"output": {"json_schema": schema}}},
             "body.settings.output.json_schema"),
            ({"name": "fw2", "model": f"adapter:{MOD}:echo", "settings": {"hooks": hooks}},
             "body.settings.hooks"),
            ({"name": "crew2", "settings": {"hooks": hooks, "team": {
                "pattern": "pipeline", "members": ["m"]}}}, "body.settings.hooks"),
            ({"name": "fw2", "model": f"adapter:{MOD}:echo",
              "settings": {"guardrails": hooks["checks"]}}, "body.settings.guardrails")):
        made = await client.post("/v1/agents", json=body)
        assert made.status_code == 422, made.text
        assert made.json()["error"]["details"]["errors"][0]["field"] == field, made.text
    crew_team = {"team": {"pattern": "pipeline", "members": ["m"]}}
    for name, kept in (("fw", {}), ("crew", crew_team)):
        patched = await client.patch(f"/v1/agents/{name}", json={  # (settings: replaced)
            "settings": {**kept, "output": {"json_schema": schema}}})
        assert patched.status_code == 422, patched.text
        sent = await client.post(f"/v1/agents/{name}/sessions/k/messages", json={
            "content": "hi", "output_schema": schema, "wait": True})
        assert sent.status_code == 422, sent.text
        assert "cannot be held to it" in sent.json()["error"]["message"], sent.text
        events = await client.get(f"/v1/agents/{name}/sessions/k/events")
        assert events.status_code == 404 or events.json()["events"] == [], events.text
    names = {a["name"] for a in (await client.get("/v1/agents")).json()["agents"]}
    assert "fw2" not in names and "crew2" not in names
    # The agents that call models may have both.
    ok = await client.patch("/v1/agents/m", json={"settings": {
        "output": {"json_schema": schema}, "hooks": hooks}})
    assert ok.status_code == 200, ok.text
