"""The HTTP API as a client sees it, through the ASGI app (no socket).

Every test runs on SQLite and, with AGENTD_TEST_POSTGRES_URL, on PostgreSQL (the
``runtime`` fixture). ASGITransport buffers whole responses, so only SSE streams that
end (message streams) are read here; live-following event streams are in tests/e2e.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import orjson
import pytest
from tests.conftest import asgi_client, under_way, wait_for_run

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.llm.scripted import enqueue
from agentd.media.config import AttachmentsConfig
from agentd.server.app import create_app

TOOL_MESSAGE = '/tool calculator {"expression": "6*7"}'

ClientFactory = Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_client(settings: Settings, runtime: Runtime) -> ClientFactory:
    """A client for ``create_app(settings, runtime)``; build it after changing settings.

    The lifespan is entered the way a server enters it: create_app publishes the
    runtime only there (see test_app_serves_a_passed_runtime_without_lifespan).
    """

    return lambda: asgi_client(settings, runtime)


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


# -- helpers ------------------------------------------------------------------------


def parse_sse(body: str) -> list[dict[str, Any]]:
    """Frames of an SSE body as dicts with ``id``, ``event`` and decoded ``data``."""
    frames = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        frame: dict[str, Any] = {}
        data_lines = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data_lines.append(value)
            else:
                frame[field] = value
        if data_lines:
            frame["data"] = orjson.loads("\n".join(data_lines))
        if frame:
            frames.append(frame)
    return frames


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "retryable"} <= set(body["error"]), body
    code: str = body["error"]["code"]
    return code


async def create_agent(client: httpx.AsyncClient, name: str = "a", **fields: Any
                       ) -> dict[str, Any]:
    response = await client.post("/v1/agents", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


async def send(client: httpx.AsyncClient, content: str, *, agent: str = "a",
               key: str = "k", headers: dict[str, str] | None = None, **body: Any
               ) -> httpx.Response:
    return await client.post(f"/v1/agents/{agent}/sessions/{key}/messages",
                             json={"content": content, **body}, headers=headers)


async def events(client: httpx.AsyncClient, key: str = "k", agent: str = "a",
                 **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/agents/{agent}/sessions/{key}/events", params=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["events"]
    return result


# -- the app itself -------------------------------------------------------------------


async def test_app_serves_a_passed_runtime_without_lifespan(settings: Settings,
                                                            runtime: Runtime) -> None:
    # ASGITransport (and any ASGI server run with lifespan="off") never sends the
    # lifespan events; a runtime handed to create_app is already open.
    app = create_app(settings, runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_health(client: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["store"] == runtime.store.dialect
    assert {"version", "sandbox", "agents", "active_runs"} <= set(body)


# -- agents ---------------------------------------------------------------------------


async def test_agent_crud(client: httpx.AsyncClient) -> None:
    created = await create_agent(client, "helper", instructions="be brief",
                                 tools=["calculator"], settings={"max_steps": 4})
    assert created["name"] == "helper"
    assert created["model"] == "scripted"  # the default model
    assert created["instructions"] == "be brief"
    assert created["tools"] == ["calculator"]
    assert created["settings"] == {"max_steps": 4}
    assert created["state"] == "created"
    assert created["created_at"].endswith("Z") and created["updated_at"]

    again = await client.post("/v1/agents", json={"name": "helper"})
    assert again.status_code == 409 and error_code(again) == "agent_exists"

    await create_agent(client, "other")
    listed = await client.get("/v1/agents")
    assert listed.status_code == 200
    assert sorted(a["name"] for a in listed.json()["agents"]) == ["helper", "other"]

    got = await client.get("/v1/agents/helper")
    assert got.status_code == 200 and got.json() == created

    patched = await client.patch("/v1/agents/helper",
                                 json={"instructions": "be thorough", "tools": []})
    assert patched.status_code == 200, patched.text
    assert patched.json()["instructions"] == "be thorough"
    assert patched.json()["tools"] == []
    assert patched.json()["settings"] == {"max_steps": 4}  # untouched fields stay
    assert (await client.get("/v1/agents/helper")).json()["instructions"] == "be thorough"

    deleted = await client.delete("/v1/agents/helper")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await client.get("/v1/agents/helper")
    assert gone.status_code == 404 and error_code(gone) == "agent_not_found"
    again = await client.delete("/v1/agents/helper")
    assert again.status_code == 404 and error_code(again) == "agent_not_found"
    assert [a["name"] for a in (await client.get("/v1/agents")).json()["agents"]] == ["other"]


async def test_deleting_an_agent_removes_its_sessions_and_runs(
        client: httpx.AsyncClient) -> None:
    await create_agent(client)
    run = (await send(client, "hi")).json()
    assert (await client.delete("/v1/agents/a")).status_code == 204
    missing = await client.get(f"/v1/runs/{run['id']}")
    assert missing.status_code == 404 and error_code(missing) == "run_not_found"
    # A new agent of the same name starts with no sessions.
    await create_agent(client)
    assert (await client.get("/v1/agents/a/sessions")).json() == {"sessions": []}


async def test_patch_validates_like_create(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    bad_tool = await client.patch("/v1/agents/a", json={"tools": ["no_such_tool"]})
    assert bad_tool.status_code == 422 and error_code(bad_tool) == "invalid_input"
    assert "no_such_tool" in bad_tool.json()["error"]["message"]
    bad_model = await client.patch("/v1/agents/a", json={"model": "nosuchprovider:x"})
    assert bad_model.status_code == 422 and error_code(bad_model) == "invalid_model"
    missing = await client.patch("/v1/agents/nobody", json={"instructions": "x"})
    assert missing.status_code == 404 and error_code(missing) == "agent_not_found"
    # Nothing changed.
    agent = (await client.get("/v1/agents/a")).json()
    assert (agent["tools"], agent["model"]) == ([], "scripted")


async def test_lifecycle_pause_resume_stop(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    assert (await send(client, "first")).json()["status"] == "completed"
    assert (await client.get("/v1/agents/a")).json()["state"] == "running"

    paused = await client.post("/v1/agents/a/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    refused = await send(client, "while paused")
    assert refused.status_code == 409 and error_code(refused) == "agent_paused"

    resumed = await client.post("/v1/agents/a/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "running"
    ok = await send(client, "after resume")
    assert ok.status_code == 200 and ok.json()["output"] == "echo: after resume"

    stopped = await client.post("/v1/agents/a/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    refused = await send(client, "while stopped")
    assert refused.status_code == 409 and error_code(refused) == "agent_stopped"
    cannot_pause = await client.post("/v1/agents/a/pause")
    assert cannot_pause.status_code == 409 and error_code(cannot_pause) == "agent_stopped"

    # Refused messages left nothing in the log.
    contents = [e["data"]["content"] for e in await events(client)
                if e["kind"] == "message.user"]
    assert contents == ["first", "after resume"]

    for action in ("pause", "resume", "stop"):
        missing = await client.post(f"/v1/agents/nobody/{action}")
        assert missing.status_code == 404 and error_code(missing) == "agent_not_found"


# -- messages -------------------------------------------------------------------------


async def test_message_wait_returns_the_finished_run(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    response = await send(client, "hello")
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["id"].startswith("r_")
    assert (run["agent"], run["session"], run["input"]) == ("a", "k", "hello")
    assert run["status"] == "completed"
    assert run["output"] == "echo: hello"
    assert run["error"] is None
    assert run["steps"] == 1
    assert run["usage"]["input_tokens"] > 0 and run["usage"]["output_tokens"] > 0
    assert run["started_at"] and run["finished_at"]
    assert (await client.get(f"/v1/runs/{run['id']}")).json() == run
    assert [e["kind"] for e in await events(client)] == [
        "message.user", "run.queued", "run.started", "message.assistant", "run.completed"]


async def test_message_tool_call(client: httpx.AsyncClient) -> None:
    await create_agent(client, tools=["calculator"])
    run = (await send(client, TOOL_MESSAGE)).json()
    assert run["status"] == "completed"
    assert run["output"] == "calculator returned: 42"
    assert run["steps"] == 2
    log = await events(client)
    finished = [e for e in log if e["kind"] == "tool.finished"]
    assert len(finished) == 1
    assert finished[0]["data"]["name"] == "calculator"
    assert finished[0]["data"]["output"] == "42" and finished[0]["data"]["is_error"] is False


async def test_message_no_wait_is_queued_then_completes(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    response = await send(client, "later", wait=False)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued"
    assert queued["output"] is None and queued["finished_at"] is None
    run = await wait_for_run(client, queued["id"])
    assert run["status"] == "completed"
    assert run["output"] == "echo: later"


async def test_message_stream(client: httpx.AsyncClient) -> None:
    # The reply streams word by word over a few hundred ms, so its tokens are sent live.
    # (Tokens are previews: a run that commits before the stream starts shows only
    # its committed events.)
    reply = "streamed word by word"
    await create_agent(client, settings={"script": [{"text": reply, "delay_ms": 400}]})
    await send(client, "before")  # seqs of the streamed run start after these
    response = await send(client, "hi", stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(response.text)
    names = [f["event"] for f in frames]
    assert names[:3] == ["message.user", "run.queued", "run.started"]
    assert "token" in names
    assert names[-2:] == ["message.assistant", "done"]  # nothing after done
    assert names.index("token") < names.index("message.assistant")

    committed = [f for f in frames if f["event"] != "token"]
    tag = (await client.get("/v1/agents/a/sessions/k")).json()["tag"]
    for frame in committed:
        assert frame["id"] == f"{frame['data']['seq']}@{tag}"
    assert [f["data"]["seq"] for f in committed] == list(range(6, 6 + len(committed)))
    run_id = frames[0]["data"]["run_id"]
    assert all(f["data"]["run_id"] == run_id for f in frames)
    assert frames[0]["data"]["data"] == {"content": "hi"}

    tokens = [f for f in frames if f["event"] == "token"]
    assert "".join(t["data"]["text"] for t in tokens) == reply
    for token in tokens:
        # A token's id is the seq of the last committed event before it.
        before = [f for f in frames[:frames.index(token)] if f["event"] != "token"]
        assert token["id"] == before[-1]["id"]
    assistant = frames[names.index("message.assistant")]["data"]
    assert assistant["data"]["text"] == reply

    done = frames[-1]["data"]
    assert done["kind"] == "run.completed"
    assert done["data"]["output"] == reply
    # The stream is the log: the same events are stored.
    stored = await events(client, after=5)
    assert [e["seq"] for e in stored] == [f["data"]["seq"] for f in committed]
    assert stored == [f["data"] for f in committed]


async def test_message_stream_echo(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    response = await send(client, "hello", stream=True)
    frames = parse_sse(response.text)
    committed = [f["event"] for f in frames if f["event"] != "token"]
    assert committed == ["message.user", "run.queued", "run.started", "message.assistant",
                         "done"]
    assert frames[-1]["data"]["data"]["output"] == "echo: hello"
    tag = (await client.get("/v1/agents/a/sessions/k")).json()["tag"]
    assert [f["id"] for f in frames if f["event"] != "token"] == [
        f"{seq}@{tag}" for seq in (1, 2, 3, 4, 5)]


async def test_message_stream_with_a_tool_call(client: httpx.AsyncClient) -> None:
    await create_agent(client, tools=["calculator"])
    response = await send(client, TOOL_MESSAGE, stream=True)
    frames = parse_sse(response.text)
    names = [f["event"] for f in frames]
    assert names.count("tool_start") == 1 and names.count("tool_end") == 1
    assert names.index("tool_start") < names.index("tool_end") < names.index("done")
    assert names[-1] == "done"
    start = frames[names.index("tool_start")]["data"]
    end = frames[names.index("tool_end")]["data"]
    assert start["kind"] == "tool.started" and start["data"]["name"] == "calculator"
    assert end["kind"] == "tool.finished" and end["data"]["output"] == "42"
    assert frames[-1]["data"]["data"]["output"] == "calculator returned: 42"


async def test_failing_model(client: httpx.AsyncClient) -> None:
    await create_agent(client, settings={"script": [{"error": "boom"}]})
    streamed = await send(client, "hi", stream=True)
    frames = parse_sse(streamed.text)
    assert frames[-1]["event"] == "error"
    assert "done" not in [f["event"] for f in frames]
    failed = frames[-1]["data"]
    assert failed["kind"] == "run.failed"
    assert failed["data"]["error"]["code"] == "model_error"
    assert "boom" in failed["data"]["error"]["message"]

    run = (await client.get(f"/v1/runs/{failed['run_id']}")).json()
    assert run["status"] == "failed" and run["output"] is None
    assert run["error"]["code"] == "model_error"
    assert {"message", "retryable"} <= set(run["error"])

    waited = await send(client, "again")
    assert waited.status_code == 200  # the request worked; the run failed
    assert waited.json()["status"] == "failed"
    assert waited.json()["error"]["code"] == "model_error"


async def test_idempotency_key(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    headers = {"Idempotency-Key": "msg-1"}
    first = await send(client, "once", headers=headers, wait=False)
    second = await send(client, "once", headers=headers)
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["output"] == "echo: once"
    log = await events(client)
    assert [e["kind"] for e in log].count("message.user") == 1
    assert [e["kind"] for e in log].count("run.completed") == 1
    # A different key is a different message.
    third = await send(client, "once", headers={"Idempotency-Key": "msg-2"})
    assert third.json()["id"] != first.json()["id"]

    too_long = await send(client, "x", headers={"Idempotency-Key": "k" * 257})
    assert too_long.status_code == 422 and error_code(too_long) == "invalid_input"


# -- sessions and events --------------------------------------------------------------


async def test_session_keys_with_colon_and_slash(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    key, encoded = "telegram:42/thread", "telegram%3A42%2Fthread"
    response = await send(client, "hi", key=encoded)
    assert response.status_code == 200, response.text
    assert response.json()["session"] == key
    await send(client, "hi", key="other")

    session = await client.get(f"/v1/agents/a/sessions/{encoded}")
    assert session.status_code == 200
    assert session.json()["key"] == key and session.json()["agent"] == "a"
    assert session.json()["last_seq"] == 5

    log = await events(client, key=encoded)
    assert [e["seq"] for e in log] == [1, 2, 3, 4, 5]
    assert log[0]["data"] == {"content": "hi"}

    keys = [s["key"] for s in (await client.get("/v1/agents/a/sessions")).json()["sessions"]]
    assert sorted(keys) == ["other", key]

    deleted = await client.delete(f"/v1/agents/a/sessions/{encoded}")
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/agents/a/sessions/{encoded}")
    assert gone.status_code == 404 and error_code(gone) == "session_not_found"
    gone = await client.get(f"/v1/agents/a/sessions/{encoded}/events")
    assert gone.status_code == 404 and error_code(gone) == "session_not_found"
    keys = [s["key"] for s in (await client.get("/v1/agents/a/sessions")).json()["sessions"]]
    assert keys == ["other"]
    # Sending again starts a new, empty session.
    await send(client, "new", key=encoded)
    assert (await events(client, key=encoded))[0]["seq"] == 1


async def test_sessions_list(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    assert (await client.get("/v1/agents/a/sessions")).json() == {"sessions": []}
    await send(client, "one", key="user:1")
    await send(client, "two", key="user:2")
    await send(client, "three", key="user:2")
    sessions = (await client.get("/v1/agents/a/sessions")).json()["sessions"]
    by_key = {s["key"]: s for s in sessions}
    assert set(by_key) == {"user:1", "user:2"}
    assert by_key["user:1"]["last_seq"] == 5 and by_key["user:2"]["last_seq"] == 10
    assert all(s["agent"] == "a" and s["created_at"] and s["updated_at"] for s in sessions)
    missing = await client.get("/v1/agents/nobody/sessions")
    assert missing.status_code == 404 and error_code(missing) == "agent_not_found"


async def test_events_after_and_limit(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    for text in ("one", "two"):
        await send(client, text)
    response = await client.get("/v1/agents/a/sessions/k/events")
    body = response.json()
    assert body["last_seq"] == 10
    assert [e["seq"] for e in body["events"]] == list(range(1, 11))
    first = body["events"][0]
    assert set(first) == {"seq", "run_id", "kind", "data", "at"}

    page = (await client.get("/v1/agents/a/sessions/k/events",
                             params={"after": 3, "limit": 4})).json()
    assert [e["seq"] for e in page["events"]] == [4, 5, 6, 7]
    assert page["last_seq"] == 10
    assert page["events"] == body["events"][3:7]
    assert await events(client, after=10) == []

    for bad in ({"after": -1}, {"limit": 0}, {"after": "x"}):
        response = await client.get("/v1/agents/a/sessions/k/events", params=bad)
        assert response.status_code == 422 and error_code(response) == "invalid_input"
        assert next(iter(bad)) in response.json()["error"]["message"]


async def test_last_event_id_takes_precedence(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    await send(client, "one")
    response = await client.get("/v1/agents/a/sessions/k/events", params={"after": 1},
                                headers={"Last-Event-ID": "3"})
    assert response.status_code == 200
    assert [e["seq"] for e in response.json()["events"]] == [4, 5]

    # The full frame id form, <seq>@<tag>, names the same point.
    tag = (await client.get("/v1/agents/a/sessions/k")).json()["tag"]
    response = await client.get("/v1/agents/a/sessions/k/events",
                                headers={"Last-Event-ID": f"3@{tag}"})
    assert [e["seq"] for e in response.json()["events"]] == [4, 5]

    for bad in ("abc", "1.5", "-1", "@x"):
        response = await client.get("/v1/agents/a/sessions/k/events",
                                    headers={"Last-Event-ID": bad})
        assert response.status_code == 422, bad
        assert error_code(response) == "invalid_input"
        assert "Last-Event-ID" in response.json()["error"]["message"]


async def test_last_event_id_from_another_session_is_refused(
        client: httpx.AsyncClient) -> None:
    await create_agent(client)
    await send(client, "one", key="k")
    await send(client, "two", key="other")
    other = (await client.get("/v1/agents/a/sessions/other")).json()
    mine = (await client.get("/v1/agents/a/sessions/k")).json()
    assert other["tag"] != mine["tag"]
    for stream in (False, True):
        headers = {"Last-Event-ID": f"2@{other['tag']}"}
        if stream:
            headers["Accept"] = "text/event-stream"
        response = await client.get("/v1/agents/a/sessions/k/events", headers=headers)
        assert response.status_code == 422, response.text
        assert error_code(response) == "wrong_session"
        assert "another session" in response.json()["error"]["message"]
    # A bare seq past this session's log cannot be this session's either.
    response = await client.get("/v1/agents/a/sessions/k/events",
                                headers={"Last-Event-ID": "99"})
    assert response.status_code == 422 and error_code(response) == "invalid_input"
    assert "past this session's log" in response.json()["error"]["message"]
    # Nothing changed.
    assert (await client.get("/v1/agents/a/sessions/k")).json() == mine


# -- runs -----------------------------------------------------------------------------


SLOW = {"script": [{"text": "slow", "delay_ms": 60_000}]}  # runs until cancelled


async def test_cancel_a_running_run(client: httpx.AsyncClient) -> None:
    await create_agent(client, settings=SLOW)
    queued = (await send(client, "go", wait=False)).json()
    await wait_for_run(client, queued["id"], "running")
    response = await client.post(f"/v1/runs/{queued['id']}/cancel")
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["id"] == queued["id"]
    assert run["status"] == "cancelled"
    assert run["output"] is None and run["finished_at"]
    assert (await client.get(f"/v1/runs/{run['id']}")).json() == run
    log = await events(client)
    assert log[-1]["kind"] == "run.cancelled"
    assert log[-1]["data"]["reason"]
    assert "run.completed" not in [e["kind"] for e in log]

    # Cancelling a finished run changes nothing.
    again = await client.post(f"/v1/runs/{run['id']}/cancel")
    assert again.status_code == 200 and again.json() == run
    assert await events(client) == log


async def test_cancel_a_run_queued_behind_another(client: httpx.AsyncClient) -> None:
    await create_agent(client, settings=SLOW)
    first = (await send(client, "first", wait=False)).json()
    await wait_for_run(client, first["id"], "running")
    second = (await send(client, "second", wait=False)).json()
    assert (await client.get(f"/v1/runs/{second['id']}")).json()["status"] == "queued"

    cancelled = (await client.post(f"/v1/runs/{second['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None
    assert (await client.get(f"/v1/runs/{first['id']}")).json()["status"] == "running"
    assert (await client.post(f"/v1/runs/{first['id']}/cancel")).json()["status"] == \
        "cancelled"
    second_kinds = [e["kind"] for e in await events(client) if e["run_id"] == second["id"]]
    assert second_kinds == ["message.user", "run.queued", "run.cancelled"]


async def test_cancel_right_after_sending(client: httpx.AsyncClient) -> None:
    # The natural "oops" cancel: send, then cancel at once. Whether the cancel lands
    # in the worker's blind spot depends on scheduling, so the cancel is sent after
    # 0, 1, 2, ... turns of the event loop (the app runs on this loop).
    await create_agent(client, settings=SLOW)
    run_ids = []
    for i in range(100):
        run = (await send(client, "go", key=f"k{i}", wait=False)).json()
        for _ in range(i % 25):
            await asyncio.sleep(0)
        response = await client.post(f"/v1/runs/{run['id']}/cancel")
        assert response.status_code == 200
        run_ids.append(run["id"])
    await asyncio.sleep(0.2)  # let a wrongly started run show itself (no timing asserted)
    outcomes = []
    for i, run_id in enumerate(run_ids):
        status = (await client.get(f"/v1/runs/{run_id}")).json()["status"]
        kinds = [e["kind"] for e in await events(client, key=f"k{i}")]
        outcomes.append((status, kinds[-1]))
    assert outcomes == [("cancelled", "run.cancelled")] * len(run_ids)


async def test_cancel_a_completed_run_changes_nothing(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    run = (await send(client, "hi")).json()
    response = await client.post(f"/v1/runs/{run['id']}/cancel")
    assert response.status_code == 200 and response.json() == run


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "code"), [
    ("GET", "/v1/agents/nobody", "agent_not_found"),
    ("GET", "/v1/agents/nobody/sessions/k", "agent_not_found"),
    ("POST", "/v1/agents/nobody/sessions/k/messages", "agent_not_found"),
    ("GET", "/v1/agents/a/sessions/nobody", "session_not_found"),
    ("GET", "/v1/agents/a/sessions/nobody/events", "session_not_found"),
    ("DELETE", "/v1/agents/a/sessions/nobody", "session_not_found"),
    ("GET", "/v1/runs/r_nope", "run_not_found"),
    ("POST", "/v1/runs/r_nope/cancel", "run_not_found"),
    ("GET", "/v1/nothing/here", "not_found"),
    ("GET", "/nowhere", "not_found"),
])
async def test_not_found(client: httpx.AsyncClient, method: str, path: str, code: str
                         ) -> None:
    await create_agent(client)
    kwargs: dict[str, Any] = {"json": {"content": "x"}} if method == "POST" else {}
    response = await client.request(method, path, **kwargs)
    assert response.status_code == 404, response.text
    assert error_code(response) == code
    assert response.json()["error"]["retryable"] is False


@pytest.mark.parametrize(("body", "field"), [
    ({}, "content"),
    ({"content": ""}, "content"),
    ({"content": 5}, "content"),
    ({"content": "x", "stream": "maybe"}, "stream"),
    ({"content": "x", "wait": []}, "wait"),
    ({"content": "x", "bogus": 1}, "bogus"),
    ({"content": "x", "mode": "shout"}, "mode"),
    (["content"], "body"),
])
async def test_invalid_message_body(client: httpx.AsyncClient, body: Any, field: str
                                    ) -> None:
    await create_agent(client)
    response = await client.post("/v1/agents/a/sessions/k/messages", json=body)
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_input"
    error = response.json()["error"]
    assert field in error["message"]
    assert any(field in e["field"] for e in error["details"]["errors"])
    # Nothing was accepted.
    missing = await client.get("/v1/agents/a/sessions/k")
    assert missing.status_code == 404


@pytest.mark.parametrize("path", ["/v1/agents", "/v1/agents/a/sessions/k/messages"])
async def test_invalid_json(client: httpx.AsyncClient, path: str) -> None:
    await create_agent(client)
    response = await client.post(path, content=b'{"content": "x",',
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_input"
    assert "JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": 5}, "name"),
    ({"name": "x", "tools": "calculator"}, "tools"),
    ({"name": "x", "settings": []}, "settings"),
    ({"name": "x", "colour": "blue"}, "colour"),
])
async def test_invalid_agent_body(client: httpx.AsyncClient, body: Any, field: str) -> None:
    response = await client.post("/v1/agents", json=body)
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_input"
    assert field in response.json()["error"]["message"]
    assert (await client.get("/v1/agents")).json() == {"agents": []}


@pytest.mark.parametrize("name", ["-dash", "has space", "slash/name", "x" * 65, "é"])
async def test_invalid_agent_name(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/v1/agents", json={"name": name})
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_input"
    assert "name" in response.json()["error"]["message"]
    assert (await client.get("/v1/agents")).json() == {"agents": []}


async def test_invalid_agent_name_lists_the_field(client: httpx.AsyncClient) -> None:
    # docs/api.md: validation errors "list every problem in details.errors".
    response = await client.post("/v1/agents", json={"name": "-dash"})
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["error"].get("details", {}).get("errors", [])]
    assert fields == ["body.name"]


async def test_unknown_model_provider(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agents", json={"name": "x", "model": "nosuch:model"})
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_model"
    assert "nosuch" in response.json()["error"]["message"]
    bad_script = await client.post("/v1/agents",
                                   json={"name": "x", "settings": {"script": "not a list"}})
    assert bad_script.status_code == 422 and error_code(bad_script) == "invalid_model"
    assert (await client.get("/v1/agents")).json() == {"agents": []}


async def test_unknown_tool(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/agents", json={"name": "x", "tools": ["teleport"]})
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_input"
    assert "teleport" in response.json()["error"]["message"]
    assert (await client.get("/v1/agents")).json() == {"agents": []}


async def test_message_over_max_message_bytes(settings: Settings,
                                              make_client: ClientFactory) -> None:
    settings.max_message_bytes = 64
    async with make_client() as client:
        await create_agent(client)
        fits = await send(client, "x" * 64)
        assert fits.status_code == 200, fits.text
        # 22 characters, 66 bytes in UTF-8: the limit is in bytes.
        for content in ("x" * 65, "€" * 22):
            response = await send(client, content)
            assert response.status_code == 413, response.text
            assert error_code(response) == "payload_too_large"
        contents = [e["data"]["content"] for e in await events(client)
                    if e["kind"] == "message.user"]
        assert contents == ["x" * 64]


async def test_body_over_max_body_bytes(settings: Settings,
                                        make_client: ClientFactory) -> None:
    settings.max_body_bytes = 2048
    # (The routes that take images and files add [attachments] max_message_mb.)
    settings.attachments = AttachmentsConfig(max_message_mb=0.001)
    async with make_client() as client:
        await create_agent(client)
        for path, body in [
            ("/v1/agents/a/sessions/k/messages", {"content": "x" * 4096}),
            ("/v1/agents", {"name": "big", "instructions": "x" * 4096}),
        ]:
            response = await client.post(path, json=body)
            assert response.status_code == 413, (path, response.text)
            assert error_code(response) == "payload_too_large"
        assert [a["name"] for a in (await client.get("/v1/agents")).json()["agents"]] == ["a"]


async def _chunked(data: bytes) -> AsyncIterator[bytes]:
    # No Content-Length: the limit has to be enforced while the body is read.
    for start in range(0, len(data), 1024):
        yield data[start:start + 1024]


async def test_chunked_message_body_over_max_body_bytes(settings: Settings,
                                                        make_client: ClientFactory) -> None:
    settings.max_body_bytes = 2048
    # (The routes that take images and files add [attachments] max_message_mb.)
    settings.attachments = AttachmentsConfig(max_message_mb=0.001)
    async with make_client() as client:
        await create_agent(client)
        response = await client.post(
            "/v1/agents/a/sessions/k/messages",
            content=_chunked(orjson.dumps({"content": "x" * 4096})))
        assert response.status_code == 413, response.text
        assert error_code(response) == "payload_too_large"


async def test_chunked_agent_body_over_max_body_bytes(settings: Settings,
                                                      make_client: ClientFactory) -> None:
    settings.max_body_bytes = 2048
    async with make_client() as client:
        response = await client.post(
            "/v1/agents",
            content=_chunked(orjson.dumps({"name": "big", "instructions": "x" * 4096})))
        assert response.status_code == 413, response.text
        assert error_code(response) == "payload_too_large"


# -- auth -----------------------------------------------------------------------------

V1_REQUESTS = [
    ("GET", "/v1/agents"),
    ("POST", "/v1/agents"),
    ("GET", "/v1/agents/a"),
    ("PATCH", "/v1/agents/a"),
    ("DELETE", "/v1/agents/a"),
    ("POST", "/v1/agents/a/pause"),
    ("POST", "/v1/agents/a/resume"),
    ("POST", "/v1/agents/a/stop"),
    ("GET", "/v1/agents/a/sessions"),
    ("GET", "/v1/agents/a/sessions/k"),
    ("DELETE", "/v1/agents/a/sessions/k"),
    ("POST", "/v1/agents/a/sessions/k/messages"),
    ("GET", "/v1/agents/a/sessions/k/events"),
    ("GET", "/v1/runs/r_1"),
    ("POST", "/v1/runs/r_1/cancel"),
    ("GET", "/v1/unknown"),
]


async def test_bearer_token_guards_every_v1_path(settings: Settings,
                                                 make_client: ClientFactory) -> None:
    settings.tokens = ["s3cret"]
    async with make_client() as client:
        for method, path in V1_REQUESTS:
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "s3cret"}, {"Authorization": "Basic s3cret"},
                            {"Authorization": "Bearer "}):
                response = await client.request(method, path, headers=headers,
                                                json={"content": "x", "name": "a"})
                assert response.status_code == 401, (method, path, headers)
                assert error_code(response) == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
        # Nothing got through: the agent named in the POST bodies does not exist.
        auth = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/agents", headers=auth)).json() == {"agents": []}

        health = await client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        for method, path in V1_REQUESTS:
            response = await client.request(method, path, headers=auth,
                                            json={"content": "x", "name": "a"})
            assert response.status_code != 401, (method, path)
        created = await client.post("/v1/agents", headers=auth, json={"name": "b"})
        assert created.status_code == 201
        run = await client.post("/v1/agents/b/sessions/k/messages", headers=auth,
                                json={"content": "hi"})
        assert run.status_code == 200 and run.json()["output"] == "echo: hi"


async def test_no_token_configured_means_the_bootstrap_token(
        settings: Settings, make_client: ClientFactory) -> None:
    async with make_client() as client:
        token = (settings.home / "token").read_text().strip()
        assert (await client.get("/v1/agents")).status_code == 200  # the client's header
        bare = await client.get("/v1/agents", headers={"Authorization": ""})
        assert bare.status_code == 401
        assert len(token) >= 40


# -- OpenAPI --------------------------------------------------------------------------

STABLE_PATHS = {
    "/health": {"get"},
    "/v1/agents": {"get", "post"},
    "/v1/agents/{name}": {"get", "patch", "delete"},
    "/v1/agents/{name}/pause": {"post"},
    "/v1/agents/{name}/resume": {"post"},
    "/v1/agents/{name}/stop": {"post"},
    "/v1/agents/{name}/sessions": {"get"},
    "/v1/agents/{name}/sessions/{key}": {"get", "delete"},
    "/v1/agents/{name}/sessions/{key}/messages": {"post"},
    "/v1/agents/{name}/sessions/{key}/events": {"get"},
    "/v1/runs/{run_id}": {"get"},
    "/v1/runs/{run_id}/cancel": {"post"},
}


async def test_openapi_lists_the_stable_paths(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    paths = doc["paths"]
    for path, methods in STABLE_PATHS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))

    message = paths["/v1/agents/{name}/sessions/{key}/messages"]["post"]
    schema = message["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert schema["required"] == ["content"]
    assert {"content", "stream", "wait"} <= set(schema["properties"])
    # Text, or parts (text, images, files); multipart uploads too.
    assert {"string", "array"} == {v["type"] for v in schema["properties"]["content"]["anyOf"]}
    assert "multipart/form-data" in message["requestBody"]["content"]
    assert {"200", "202", "404", "409", "413", "422"} <= set(message["responses"])

    events_op = paths["/v1/agents/{name}/sessions/{key}/events"]["get"]
    assert {"after", "limit"} <= {p["name"] for p in events_op["parameters"]}


async def test_modes_over_http(client: httpx.AsyncClient, runtime: Runtime) -> None:
    # The first run's model call outlasts the test (an interrupt abandons it at
    # once), however long the requests below take on a loaded machine; the next
    # run's answers at once. (It was 1.5 s each: under load the first run could end
    # before the interrupt came.)
    enqueue({"text": "slow", "delay_ms": 600_000}, {"text": "fast"}, agent="a")
    await create_agent(client)
    first = await client.post("/v1/agents/a/sessions/k/messages",
                              json={"content": "1", "wait": False})
    assert first.status_code == 202
    await under_way(runtime, first.json()["id"], in_model=True)  # the slow turn taken
    busy = await client.post("/v1/agents/a/sessions/k/messages",
                             json={"content": "2", "mode": "reject"})
    assert busy.status_code == 409, busy.text
    assert error_code(busy) == "session_busy"
    assert busy.json()["error"]["details"]["active_run"] == first.json()["id"]
    steered = await client.post("/v1/agents/a/sessions/k/messages",
                                json={"content": "3", "mode": "steer", "wait": False})
    assert steered.status_code == 202
    assert steered.json()["id"] == first.json()["id"]  # it joined the running run
    done = await client.post("/v1/agents/a/sessions/k/messages",
                             json={"content": "4", "mode": "interrupt"})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    ended = (await client.get(f"/v1/runs/{first.json()['id']}")).json()
    assert ended["status"] == "cancelled"
    users = [e["data"]["content"] for e in (await client.get(
        "/v1/agents/a/sessions/k/events")).json()["events"] if e["kind"] == "message.user"]
    assert users == ["1", "3", "4"]


async def test_decide_refuses_runs_that_are_not_waiting(client: httpx.AsyncClient) -> None:
    await create_agent(client)
    run = (await client.post("/v1/agents/a/sessions/k/messages", json={"content": "x"})).json()
    done = await client.post(f"/v1/runs/{run['id']}/decide", json={"action": "retry"})
    assert done.status_code == 409, done.text
    assert error_code(done) == "not_waiting"
    missing = await client.post("/v1/runs/r_nope/decide", json={"action": "retry"})
    assert missing.status_code == 404 and error_code(missing) == "run_not_found"
    bad = await client.post(f"/v1/runs/{run['id']}/decide", json={"action": "maybe"})
    assert bad.status_code == 422 and error_code(bad) == "invalid_input"
    assert "action" in bad.json()["error"]["message"]


# -- checkpoints, restore, fork ------------------------------------------------------------


async def test_checkpoint_restore_and_fork_over_http(client: httpx.AsyncClient) -> None:
    await create_agent(client, settings={"script": [{"text": "one"}, {"text": "two"}]})
    base = "/v1/agents/a/sessions/u%2F1"
    assert (await send(client, "1", key="u%2F1")).json()["output"] == "one"
    made = await client.post(f"{base}/checkpoints", json={"name": "first"})
    assert made.status_code == 201, made.text
    checkpoint = made.json()
    assert (checkpoint["agent"], checkpoint["session"], checkpoint["name"],
            checkpoint["kind"]) == ("a", "u/1", "first", "manual")
    assert (await client.get(f"/v1/checkpoints/{checkpoint['id']}")).json() == checkpoint
    assert (await send(client, "2", key="u%2F1")).json()["output"] == "two"
    listed = (await client.get(f"{base}/checkpoints")).json()["checkpoints"]
    assert listed == [checkpoint]
    log = (await client.get(f"{base}/events")).json()["events"]
    assert log[checkpoint["seq"] - 1]["kind"] == "checkpoint"

    restored = await client.post(f"{base}/restore", json={"checkpoint": "first"})
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["event"]["kind"] == "session.restored"
    assert body["event"]["data"]["to_seq"] == checkpoint["seq"]
    assert body["session"]["last_seq"] == body["event"]["seq"] == log[-1]["seq"] + 1
    assert (await send(client, "2 again", key="u%2F1")).json()["output"] == "two"

    forked = await client.post(f"{base}/fork", json={"seq": checkpoint["seq"], "key": "f"})
    assert forked.status_code == 201, forked.text
    assert forked.json()["key"] == "f" and forked.json()["agent"] == "a"
    assert (await send(client, "x", key="f")).json()["output"] == "two"
    by_id = await client.post(f"/v1/checkpoints/{checkpoint['id']}/fork", json={"key": "g"})
    assert by_id.status_code == 201 and by_id.json()["key"] == "g"
    again = await client.post(f"/v1/checkpoints/{checkpoint['id']}/restore")
    assert again.status_code == 200 and again.json()["event"]["data"]["checkpoint"] == \
        checkpoint["id"]


async def test_bad_checkpoint_requests_get_4xx_and_change_nothing(
        client: httpx.AsyncClient) -> None:
    await create_agent(client)
    await send(client, "1")
    await send(client, "1", key="other")
    theirs = (await client.post("/v1/agents/a/sessions/other/checkpoints", json={})).json()
    await client.post("/v1/agents/a/sessions/k/checkpoints", json={"name": "mine"})
    before = (await client.get("/v1/agents/a/sessions/k/events")).json()

    cases = [
        ("post", "/v1/agents/a/sessions/k/restore", {"checkpoint": "nope"}, 404,
         "checkpoint_not_found"),
        ("post", "/v1/agents/a/sessions/k/restore", {"checkpoint": theirs["id"]}, 404,
         "checkpoint_not_found"),
        ("post", "/v1/agents/a/sessions/k/restore", {"seq": 999}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/restore", {"seq": -1}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/restore", {}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/restore", {"seq": 1, "checkpoint": "mine"}, 422,
         "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/restore", {"seq": "x"}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/restore", {"seq": True}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/restore", {"seq": "1"}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/restore", {"when": 1}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/nope/restore", {"seq": 0}, 404, "session_not_found"),
        ("post", "/v1/agents/zz/sessions/k/restore", {"seq": 0}, 404, "agent_not_found"),
        ("post", "/v1/agents/a/sessions/k/fork", {"seq": 999}, 422, "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/fork", {"seq": 1, "key": "other"}, 409,
         "session_exists"),
        ("post", "/v1/agents/a/sessions/k/fork", {"seq": 1, "key": ""}, 422,
         "invalid_input"),
        ("post", "/v1/agents/a/sessions/k/checkpoints", {"name": "mine"}, 409,
         "checkpoint_exists"),
        ("post", "/v1/agents/a/sessions/k/checkpoints", {"name": "a b"}, 422,
         "invalid_input"),
        ("post", "/v1/agents/a/sessions/nope/checkpoints", {}, 404, "session_not_found"),
        ("get", "/v1/checkpoints/c_nope", None, 404, "checkpoint_not_found"),
        ("post", "/v1/checkpoints/c_nope/restore", None, 404, "checkpoint_not_found"),
        ("post", f"/v1/checkpoints/{theirs['id']}/fork", {"seq": 1}, 422, "invalid_input"),
    ]
    for method, path, body, status, code in cases:
        response = await client.request(method, path, json=body)
        assert response.status_code == status, (path, body, response.text)
        assert error_code(response) == code, (path, body, response.text)
    assert (await client.get("/v1/agents/a/sessions/k/events")).json() == before

    # A deleted session cannot be forked (or restored), and its checkpoints are gone.
    assert (await client.delete("/v1/agents/a/sessions/other")).status_code == 204
    gone = await client.post("/v1/agents/a/sessions/other/fork", json={"seq": 1})
    assert gone.status_code == 404 and error_code(gone) == "session_not_found"
    gone = await client.post(f"/v1/checkpoints/{theirs['id']}/fork", json={})
    assert gone.status_code == 404 and error_code(gone) == "checkpoint_not_found"


async def test_restore_of_a_busy_session_is_refused(client: httpx.AsyncClient) -> None:
    await create_agent(client, settings={"script": [{"text": "s", "delay_ms": 800}]})
    queued = (await send(client, "1", wait=False)).json()
    busy = await client.post("/v1/agents/a/sessions/k/restore", json={"seq": 0})
    assert busy.status_code == 409 and error_code(busy) == "session_busy"
    assert busy.json()["error"]["details"]["active_run"] == queued["id"]
    run = await wait_for_run(client, queued["id"])
    assert run["status"] == "completed"
    kinds = [e["kind"] for e in (await client.get("/v1/agents/a/sessions/k/events")).json()[
        "events"]]
    assert "session.restored" not in kinds


async def test_health_counts_awake_and_sleeping_agents(client: httpx.AsyncClient) -> None:
    await create_agent(client, "x")
    await create_agent(client, "y")
    health = (await client.get("/health")).json()
    assert health["agents"] == 2
    assert health["agents_awake"] + health["agents_sleeping"] == 2
    assert health["node"]


async def test_a_form_body_gets_422_and_stores_nothing(client: httpx.AsyncClient) -> None:
    for kwargs in ({"data": {"name": "formed", "model": "scripted"}},
                   {"content": b"name=formed", "headers": {"content-type": "text/plain"}}):
        response = await client.post("/v1/agents", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 422, response.text
        assert error_code(response) == "invalid_input"
    assert (await client.get("/v1/agents/formed")).status_code == 404
