"""The A2A door with the official ``a2a-sdk`` client, unmodified, against the real
daemon process: the agent card, send (blocking and streamed), get, list, cancel,
resubscribe after a dropped stream, input-required answered by a decision, tasks that
outlive a restart (and a kill), 0.3 clients on the same endpoint, and bad input
answered in JSON-RPC's error format with nothing written."""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)
from a2a.utils.errors import A2AError
from tests.conftest import wait_until
from tests.daemons import TOOL_MESSAGE, Daemon, create_agent

pytestmark = pytest.mark.e2e

SLOW = [{"text": "slow reply", "delay_ms": 30000}]


def _daemon(root: Any, env: dict[str, str] | None = None) -> Daemon:
    return Daemon(root / "home", root / "agentd.log",
                  env={"AGENTD_DEMO_AGENT": "false", **(env or {})}, args=())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("a2a")
    process = _daemon(root).start()
    with process.client() as api:
        create_agent(api, "echo", tools=["calculator"])
        create_agent(api, "careful", tools=["calculator"], settings={
            "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
            "script": [{"tool_calls": [{"name": "calculator",
                                        "arguments": {"expression": "6*7"}}]},
                       {"text": "it is 42"}]})
        create_agent(api, "slow", settings={"script": SLOW})
        create_agent(api, "other")
        create_agent(api, "thrifty", settings={"budget": {"day": {"tokens": 1}}})
    try:
        yield process
    finally:
        process.cleanup()


@contextlib.asynccontextmanager
async def a2a(daemon: Daemon, agent: str, *, streaming: bool = False,
              token: str | None = None) -> AsyncIterator[Client]:
    async with httpx.AsyncClient(headers=daemon.auth(token), timeout=60) as http:
        client = await create_client(f"{daemon.url}/a2a/{agent}",
                                     client_config=ClientConfig(streaming=streaming,
                                                                httpx_client=http))
        async with client:
            yield client


def message(text: str, *, context_id: str = "", task_id: str = "",
            message_id: str | None = None) -> SendMessageRequest:
    return SendMessageRequest(message=Message(
        role=Role.ROLE_USER, message_id=message_id or uuid.uuid4().hex,
        context_id=context_id, task_id=task_id, parts=[Part(text=text)]))


async def send(client: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [event async for event in client.send_message(request)]


def streamed_reply(events: list[StreamResponse]) -> str:
    """The reply artifact as a client assembles it: a chunk appends, or starts over."""
    text = ""
    for event in events:
        if event.HasField("artifact_update"):
            update = event.artifact_update
            chunk = "".join(p.text for p in update.artifact.parts)
            text = text + chunk if update.append else chunk
    return text


def reply(task: Task) -> str:
    return "".join(p.text for a in task.artifacts for p in a.parts)


def runs(daemon: Daemon, agent: str) -> list[dict[str, Any]]:
    with daemon.client() as api:
        got = api.get("/v1/runs", params={"agent": agent, "limit": 200})
        assert got.status_code == 200, got.text
        found: list[dict[str, Any]] = got.json()["runs"]
        return found


async def test_the_card_describes_the_agent_and_its_endpoint(daemon: Daemon) -> None:
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as http:
        got = await http.get("/a2a/echo/.well-known/agent-card.json")
        assert got.status_code == 200, got.text
        card = got.json()
        assert card["name"] == "echo"
        assert card["capabilities"]["streaming"] is True
        urls = {(i["url"], i["protocolVersion"]) for i in card["supportedInterfaces"]}
        assert urls == {(f"{daemon.url}/a2a/echo", "1.0"), (f"{daemon.url}/a2a/echo", "0.3")}
        assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == \
            "bearer"
        # The card needs the token (it would name the daemon's agents) ...
        anonymous = await http.get("/a2a/echo/.well-known/agent-card.json",
                                   headers={"Authorization": ""})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == -32600
        # ... and an agent that is not there is a JSON-RPC "not found".
        missing = await http.get("/a2a/nobody/.well-known/agent-card.json")
        assert missing.status_code == 404
        assert missing.json()["error"]["data"]["code"] == "agent_not_found"


async def test_send_get_and_list(daemon: Daemon) -> None:
    async with a2a(daemon, "echo") as client:
        [first] = await send(client, message("hello", context_id="ctx/1"))
        task = first.task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert reply(task) == "echo: hello"
        assert task.context_id == "ctx/1"
        # A context is a session: the next message continues it.
        [second] = await send(client, message("again", context_id="ctx/1"))
        got = await client.get_task(GetTaskRequest(id=second.task.id))
        assert reply(got) == "echo: again"
        assert [m.parts[0].text for m in got.history] == ["again", "echo: again"]
        short = await client.get_task(GetTaskRequest(id=second.task.id, history_length=1))
        assert [m.parts[0].text for m in short.history] == ["echo: again"]
        listed = await client.list_tasks(ListTasksRequest(context_id="ctx/1"))
        assert [t.id for t in listed.tasks] == [second.task.id, task.id]
        # The same conversation on the native API.
        with daemon.client() as api:
            events = api.get("/v1/agents/echo/sessions/ctx%2F1/events").json()["events"]
        texts = [e["data"].get("content") or e["data"].get("text")
                 for e in events if e["kind"] in ("message.user", "message.assistant")]
        assert texts == ["hello", "echo: hello", "again", "echo: again"]
        # A tool call goes through the agent's tools as on the native API.
        [tool] = await send(client, message(TOOL_MESSAGE))
        assert "42" in reply(tool.task)
        assert tool.task.context_id.startswith("a2a:")


async def test_a_message_sent_twice_is_one_task(daemon: Daemon) -> None:
    before = len(runs(daemon, "echo"))
    async with a2a(daemon, "echo") as client:
        [one] = await send(client, message("once", context_id="idem", message_id="m-1"))
        [two] = await send(client, message("once", context_id="idem", message_id="m-1"))
    assert one.task.id == two.task.id
    assert len(runs(daemon, "echo")) == before + 1


async def test_streaming_and_resubscribe_after_a_dropped_stream(daemon: Daemon) -> None:
    async with a2a(daemon, "echo", streaming=True) as client:
        events = await send(client, message("streamed"))
        assert events[0].HasField("task")
        assert streamed_reply(events) == "echo: streamed"
        # Working, then completed, last: nothing claims the end before the text.
        states = [e.status_update.status.state for e in events
                  if e.HasField("status_update")]
        assert states[-1] == TaskState.TASK_STATE_COMPLETED
        assert set(states[:-1]) <= {TaskState.TASK_STATE_WORKING}
        assert events[-1].HasField("status_update")
        # A run of two steps (a tool call, then the answer): the artifact a client
        # assembles is the reply as stored.
        tooled = await send(client, message(TOOL_MESSAGE))
        stored = await client.get_task(GetTaskRequest(id=tooled[0].task.id))
        assert "42" in reply(stored)
        assert streamed_reply(tooled) == reply(stored)
    async with a2a(daemon, "slow", streaming=True) as client:
        stream = client.send_message(message("take your time"))
        first = await anext(stream)
        task_id = first.task.id
        await stream.aclose()  # the client drops the stream: the run goes on
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state in (TaskState.TASK_STATE_SUBMITTED,
                                    TaskState.TASK_STATE_WORKING)
        again = client.subscribe(SubscribeToTaskRequest(id=task_id))
        snapshot = await anext(again)
        assert snapshot.task.id == task_id
        cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        rest = [event async for event in again]
        assert rest[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
        with pytest.raises(A2AError):  # a task that ended cannot be cancelled
            await client.cancel_task(CancelTaskRequest(id=task_id))
        with pytest.raises(A2AError):  # nor subscribed to
            async for _ in client.subscribe(SubscribeToTaskRequest(id=task_id)):
                pass


async def test_input_required_is_an_approval_answered_by_a_message(daemon: Daemon
                                                                   ) -> None:
    async with a2a(daemon, "careful") as client:
        [first] = await send(client, message("compute"))
        task = first.task
        assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        asked = task.status.message
        assert asked.metadata["tool"] == "calculator"
        assert "approve" in list(asked.metadata["options"])
        with pytest.raises(A2AError, match="one of"):
            await send(client, message("maybe", task_id=task.id))
        [done] = await send(client, message("approve", task_id=task.id))
        assert done.task.id == task.id
        assert done.task.status.state == TaskState.TASK_STATE_COMPLETED
        assert reply(done.task) == "it is 42"
        with pytest.raises(A2AError, match="no more input"):
            await send(client, message("approve", task_id=task.id))


async def test_another_agents_task_is_not_found(daemon: Daemon) -> None:
    async with a2a(daemon, "echo") as client:
        [sent] = await send(client, message("mine"))
    async with a2a(daemon, "other") as client:
        with pytest.raises(A2AError, match="not found"):
            await client.get_task(GetTaskRequest(id=sent.task.id))
        with pytest.raises(A2AError, match="not found"):
            await client.cancel_task(CancelTaskRequest(id=sent.task.id))
        assert list((await client.list_tasks(ListTasksRequest())).tasks) == []


async def test_a_bad_token_gets_a_jsonrpc_401_and_writes_nothing(daemon: Daemon) -> None:
    before = len(runs(daemon, "echo"))
    async with httpx.AsyncClient(base_url=daemon.url) as http:
        got = await http.post("/a2a/echo", headers={"Authorization": "Bearer nope"},
                              json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage",
                                    "params": {}})
    assert got.status_code == 401
    assert got.json()["error"]["code"] == -32600
    assert len(runs(daemon, "echo")) == before


def _rpc(method: str, params: Any, **extra: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": "r1", "method": method, "params": params, **extra}


def _send_params(*parts: dict[str, Any], **message: Any) -> dict[str, Any]:
    return {"message": {"role": "ROLE_USER", "messageId": uuid.uuid4().hex,
                        "parts": list(parts), **message}}


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", -32700),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "GetTask"}]', -32600),
    (_rpc("NoSuchMethod", {}), -32601),
    (_rpc("SendMessage", {"message": {"parts": "nope"}}), -32602),
    # A file part: of a type the daemon does not take; or at a private address.
    (_rpc("SendMessage", _send_params({"raw": "UEsDBA==", "mediaType": "application/zip"})),
     -32005),
    (_rpc("SendMessage", _send_params({"url": "http://10.0.0.1/a.png"})), -32602),
    (_rpc("SendMessage", _send_params({"text": "   "})), -32602),
    (_rpc("SendMessage", _send_params({"text": "hi"}, messageId="")), -32602),
    (_rpc("SendMessage", _send_params({"text": "x" * 300_000})), -32600),  # > message
    (_rpc("SendMessage", _send_params({"text": "x" * 2_000_000})), -32600),  # > body
    (_rpc("SendMessage", _send_params({"text": "hi"}, metadata={"mode": 3})), -32602),
    (_rpc("SendMessage", _send_params({"text": "hi"}, contextId="\u0000bad")), -32602),
    (_rpc("SendMessage", _send_params({"text": "hi"}, taskId="no-such-run")), -32001),
    (_rpc("GetTask", {"id": "no-such-run"}), -32001),
    (_rpc("GetTask", {"id": "", "historyLength": 1}), -32602),
    (_rpc("ListTasks", {"pageSize": 1000}), -32602),
    # Found by the A2A TCK: 0 is not "unspecified" (the minimum is 1); a status
    # protobuf does not know was read as none; a negative history; no role.
    (_rpc("ListTasks", {"pageSize": 0}), -32602),
    (_rpc("ListTasks", {"status": "running"}), -32602),
    (_rpc("ListTasks", {"status": 99}), -32602),
    (_rpc("ListTasks", {"historyLength": -5}), -32602),
    (_rpc("SendMessage", {"message": {"messageId": "m", "parts": [{"text": "hi"}]}}),
     -32602),
    (_rpc("SendMessage", _send_params({"text": "hi"}, role="ROLE_NOBODY")), -32602),
    (_rpc("SendStreamingMessage", {"message": {"messageId": "m",
                                               "parts": [{"text": "hi"}]}}), -32602),
    # 0.3: the envelope sound, the params not: -32602, not the SDK's -32600.
    ({"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"": "x"}}, -32602),
    ({"jsonrpc": "2.0", "method": "message/send", "params": {"message": 5}}, -32602),
    ({"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": 7}}, -32602),
    ({"jsonrpc": "1.0", "id": 1, "method": "message/send", "params": {"": "x"}}, -32600),
    (_rpc("CreateTaskPushNotificationConfig", {"taskId": "x", "url": "http://x"}), -32003),
])
async def test_bad_input_is_a_jsonrpc_error_and_writes_nothing(
        daemon: Daemon, body: Any, code: int) -> None:
    before = len(runs(daemon, "echo"))
    content = body if isinstance(body, bytes) else None
    async with httpx.AsyncClient(base_url=daemon.url, headers={
            **daemon.auth(), "A2A-Version": "1.0"}, timeout=30) as http:
        got = await http.post("/a2a/echo", content=content,
                              json=None if content is not None else body,
                              headers={"Content-Type": "application/json"})
    assert got.status_code in (200, 400, 413), got.text
    answer = (json.loads(got.text.partition("data: ")[2])
              if got.headers["content-type"].startswith("text/event-stream")
              else got.json())
    assert answer["error"]["code"] == code, got.text
    assert len(runs(daemon, "echo")) == before
    with daemon.client() as api:
        assert api.get("/health").status_code == 200


async def test_a_10_method_without_the_version_header_is_served_as_10(daemon: Daemon
                                                                      ) -> None:
    """No 0.3 client sends a 1.0 method name, so one without ``A2A-Version`` is a 1.0
    client that left the header out (the A2A TCK's own client does); a header naming
    another version still gets VersionNotSupportedError, and writes nothing."""
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as http:
        got = await http.post("/a2a/echo", json=_rpc("SendMessage", _send_params(
            {"text": "hi"})))
        assert got.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        listed = await http.post("/a2a/echo", json=_rpc("ListTasks", {"pageSize": 1}))
        assert listed.json()["result"]["pageSize"] == 1, listed.text
        before = len(runs(daemon, "echo"))
        for version in ("0.3", "2.0"):
            refused = await http.post("/a2a/echo", headers={"A2A-Version": version},
                                      json=_rpc("SendMessage", _send_params({"text": "hi"})))
            assert refused.json()["error"]["code"] == -32009, refused.text
    assert len(runs(daemon, "echo")) == before


async def test_list_tasks_counts_every_match(daemon: Daemon) -> None:
    """totalSize is every task the filters match, "before pagination" (A2A 1.0); the
    page is at most pageSize, which the answer repeats."""
    context = f"count-{uuid.uuid4().hex}"
    async with a2a(daemon, "echo") as client:
        for n in range(3):
            await send(client, message(f"n{n}", context_id=context))
        page = await client.list_tasks(ListTasksRequest(context_id=context, page_size=2))
        assert (len(page.tasks), page.total_size, page.page_size) == (2, 3, 2)
        rest = await client.list_tasks(ListTasksRequest(
            context_id=context, page_size=2, page_token=page.next_page_token))
        assert (len(rest.tasks), rest.total_size, rest.next_page_token) == (1, 3, "")
        done = await client.list_tasks(ListTasksRequest(
            context_id=context, status=TaskState.TASK_STATE_COMPLETED))
        assert done.total_size == 3
        none = await client.list_tasks(ListTasksRequest(context_id=f"{context}-none"))
        assert (len(none.tasks), none.total_size) == (0, 0)


async def test_a_streaming_error_is_the_streams_one_event(daemon: Daemon) -> None:
    """A2A 1.0 §9.4.2: a streaming method answers 200 with an event stream, so an
    error before the first event is that stream's one event; the SDK's client raises
    it as the error it names."""
    async with httpx.AsyncClient(base_url=daemon.url, headers={
            **daemon.auth(), "A2A-Version": "1.0"}) as http:
        got = await http.post("/a2a/echo", json=_rpc("SubscribeToTask",
                                                      {"id": "no-such-task"}))
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("text/event-stream")
        frames = [json.loads(line[5:]) for line in got.text.splitlines()
                  if line.startswith("data:")]
        assert [f["error"]["code"] for f in frames] == [-32001], got.text
    async with a2a(daemon, "echo", streaming=True) as client:
        with pytest.raises(A2AError, match="not found"):
            async for _ in client.subscribe(SubscribeToTaskRequest(id="no-such-task")):
                pass


async def test_an_unknown_agent_is_a_jsonrpc_not_found(daemon: Daemon) -> None:
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as http:
        got = await http.post("/a2a/nobody", json=_rpc("GetTask", {"id": "x"}))
    assert got.status_code == 404
    assert got.json()["error"]["data"]["code"] == "agent_not_found"


async def test_a_v03_client_on_the_same_endpoint(daemon: Daemon) -> None:
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth()) as http:
        got = await http.post("/a2a/echo", json={
            "jsonrpc": "2.0", "id": 7, "method": "message/send", "params": {"message": {
                "kind": "message", "role": "user", "messageId": uuid.uuid4().hex,
                "parts": [{"kind": "text", "text": "old client"}]}}})
        assert got.status_code == 200, got.text
        result = got.json()["result"]
        assert result["status"]["state"] == "completed"
        assert result["artifacts"][0]["parts"][0]["text"] == "echo: old client"
        task = await http.post("/a2a/echo", json={
            "jsonrpc": "2.0", "id": 8, "method": "tasks/get", "params": {"id": result["id"]}})
        assert task.json()["result"]["id"] == result["id"]
        frames = []
        async with http.stream("POST", "/a2a/echo", json={
                "jsonrpc": "2.0", "id": 9, "method": "message/stream", "params": {"message": {
                    "kind": "message", "role": "user", "messageId": uuid.uuid4().hex,
                    "parts": [{"kind": "text", "text": "old stream"}]}}}) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    frames.append(json.loads(line[5:])["result"])
        kinds = [f["kind"] for f in frames]
        assert kinds[0] == "task" and kinds[-1] == "status-update", kinds
        assert frames[-1]["status"]["state"] == "completed" and frames[-1]["final"] is True
        assert "".join(p["text"] for f in frames if f["kind"] == "artifact-update"
                       for p in f["artifact"]["parts"]) == "echo: old stream"


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
async def test_tasks_outlive_a_kill(tmp_path: Any, store: str,
                                    request: pytest.FixtureRequest) -> None:
    """A task acknowledged (its run committed) survives kill -9: tasks/get answers it
    after the restart, and the run the kill interrupted completes."""
    db = {} if store == "sqlite" else {
        "AGENTD_DATABASE_URL": request.getfixturevalue("pg_url")}
    process = _daemon(tmp_path, db).start()
    try:
        with process.client() as api:
            create_agent(api, "late", settings={"script": [
                {"text": "done at last", "delay_ms": 1500}]})
            create_agent(api, "asks", tools=["calculator"], settings={
                "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
                "script": [{"tool_calls": [{"name": "calculator",
                                            "arguments": {"expression": "6*7"}}]},
                           {"text": "it is 42"}]})
        async with a2a(process, "asks") as client:
            [asked] = await send(client, message("compute"))
            assert asked.task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        async with a2a(process, "late") as client:
            request = message("work")
            request.configuration.return_immediately = True
            [sent] = await send(client, request)
            task_id = sent.task.id
            assert sent.task.status.state in (TaskState.TASK_STATE_SUBMITTED,
                                              TaskState.TASK_STATE_WORKING)
        process.signal_and_wait(signal.SIGKILL)
        process.start()
        async with a2a(process, "late") as client:
            got = await client.get_task(GetTaskRequest(id=task_id))
            assert got.id == task_id
            with process.client() as api:
                wait_until(lambda: api.get(f"/v1/runs/{task_id}").json()["status"]
                           == "completed", what="the run resumed after the kill")
            got = await client.get_task(GetTaskRequest(id=task_id))
            assert got.status.state == TaskState.TASK_STATE_COMPLETED, got
            assert reply(got) == "done at last"
        # The task that needed input still does, and the answer still goes through.
        async with a2a(process, "asks") as client:
            again = await client.get_task(GetTaskRequest(id=asked.task.id))
            assert again.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
            assert again.status.message.metadata["tool"] == "calculator"
            [done] = await send(client, message("approve", task_id=asked.task.id))
            assert reply(done.task) == "it is 42"
    finally:
        process.cleanup()


async def test_input_required_answered_on_a_stream(daemon: Daemon) -> None:
    async with a2a(daemon, "careful", streaming=True) as client:
        events = await send(client, message("compute again"))
        assert events[0].HasField("task")
        last = events[-1].status_update
        assert last.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        assert last.status.message.metadata["tool"] == "calculator"
        answered = await send(client, message("approve", task_id=last.task_id))
        assert answered[0].task.id == last.task_id
        assert streamed_reply(answered) == "it is 42"
        assert answered[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_session_modes_and_paging(daemon: Daemon) -> None:
    async with a2a(daemon, "slow") as client:
        first = message("busy", context_id="modes")
        first.configuration.return_immediately = True
        [busy] = await send(client, first)
        before = len(runs(daemon, "slow"))
        refused = message("not now", context_id="modes")
        refused.message.metadata.update({"mode": "reject"})
        with pytest.raises(A2AError, match="session"):
            await send(client, refused)
        unknown = message("hm", context_id="modes")
        unknown.message.metadata.update({"mode": "shout"})
        with pytest.raises(A2AError, match="unknown mode"):
            await send(client, unknown)
        assert len(runs(daemon, "slow")) == before  # nothing written
        queued = message("later", context_id="modes")
        queued.configuration.return_immediately = True
        [behind] = await send(client, queued)
        assert behind.task.status.state == TaskState.TASK_STATE_SUBMITTED
        page = await client.list_tasks(ListTasksRequest(context_id="modes", page_size=1))
        assert [t.id for t in page.tasks] == [behind.task.id]
        rest = await client.list_tasks(ListTasksRequest(
            context_id="modes", page_size=1, page_token=page.next_page_token))
        assert [t.id for t in rest.tasks] == [busy.task.id]
        submitted = await client.list_tasks(ListTasksRequest(
            context_id="modes", status=TaskState.TASK_STATE_SUBMITTED))
        assert [t.id for t in submitted.tasks] == [behind.task.id]
        for task_id in (behind.task.id, busy.task.id):
            await client.cancel_task(CancelTaskRequest(id=task_id))


async def test_a_budget_spent_fails_the_task_with_its_code(daemon: Daemon) -> None:
    async with a2a(daemon, "thrifty") as client:
        states = []
        for text in ("one", "two"):
            [sent] = await send(client, message(text, context_id="thrift"))
            states.append(sent.task.status.state)
        assert states[-1] == TaskState.TASK_STATE_FAILED, sent.task
        assert sent.task.status.message.metadata["code"] == "budget_exceeded"


def _kinds(raw: str) -> list[tuple[str, str]]:
    """A streamed turn's events: (kind, state or text), ids left out."""
    out = []
    for frame in raw.replace("\r\n", "\n").split("\n\n"):
        data = "".join(line[6:] for line in frame.split("\n") if line.startswith("data: "))
        if data:
            [(kind, event)] = json.loads(data)["result"].items()
            out.append((kind, event["status"]["state"] if "status" in event else
                        "".join(p["text"] for p in event.get("artifact", {}).get(
                            "parts", ()))))
    return out


async def test_turns_answered_by_the_front_as_by_the_sdks_dispatcher(daemon: Daemon
                                                                     ) -> None:
    """1.0 clients' turns are answered by the door's own JSON-RPC front; the SDK's
    dispatcher answers any other 1.x (A2A-Version 1.0.0 here): the same message
    answered by both is the same JSON, and a streamed turn the same events."""
    params = _send_params({"text": "same"}, contextId="front/1")
    async with httpx.AsyncClient(base_url=daemon.url, headers=daemon.auth(),
                                 timeout=60) as http:
        front = await http.post("/a2a/echo", json=_rpc("SendMessage", params),
                                headers={"A2A-Version": "1.0"})
        sdk = await http.post("/a2a/echo", json=_rpc("SendMessage", params),
                              headers={"A2A-Version": "1.0.0"})
        assert front.status_code == sdk.status_code == 200
        assert front.json() == sdk.json()
        assert front.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        streams = {}
        for version in ("1.0", "1.0.0"):
            got = await http.post("/a2a/echo", json=_rpc("SendStreamingMessage", _send_params(
                {"text": "streamed"}, contextId="front/2")),
                headers={"A2A-Version": version, "Accept": "text/event-stream"})
            assert got.status_code == 200
            assert got.headers["content-type"].startswith("text/event-stream")
            streams[version] = got.text
    # (sse-starlette, the SDK's, ends its lines with CRLF; the front with LF.)
    assert "\r\n" in streams["1.0.0"] and "\r\n" not in streams["1.0"]
    assert _kinds(streams["1.0"]) == _kinds(streams["1.0.0"])
    kinds = _kinds(streams["1.0"])
    assert kinds[0] == ("task", "TASK_STATE_SUBMITTED")
    assert kinds[-1] == ("statusUpdate", "TASK_STATE_COMPLETED")
    assert "".join(text for kind, text in kinds if kind == "artifactUpdate") == \
        "echo: streamed"
