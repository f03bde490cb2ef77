"""agentd.client against an in-process fake daemon (httpx.MockTransport): paths,
headers, error mapping and SSE parsing and resumption."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from tests.conftest import free_port

import agentd.client
from agentd.client import APIError, Client, ClientError, ConnectionFailed, SSEEvent

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: object) -> Client:
    return Client("http://agentd.test", transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def sse_body(*frames: tuple[str, int, object]) -> bytes:
    return "".join(
        f"id: {seq}\nevent: {name}\ndata: {json.dumps(data)}\n\n" for name, seq, data in frames
    ).encode()


def sse_response(body: bytes | Iterator[bytes], status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body)


def test_all_is_sorted_and_complete() -> None:
    assert agentd.client.__all__ == sorted(agentd.client.__all__)
    for name in agentd.client.__all__:
        assert hasattr(agentd.client, name)


def test_errors_are_exceptions() -> None:
    assert issubclass(APIError, Exception)
    assert issubclass(ConnectionFailed, ClientError)


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    monkeypatch.setenv("AGENTD_URL", "http://elsewhere:9999/")
    monkeypatch.setenv("AGENTD_TOKEN", "s3cret")
    with Client(transport=httpx.MockTransport(handler)) as client:
        assert client.base_url == "http://elsewhere:9999"
        assert client.health() == {"status": "ok"}
    assert str(seen[0].url) == "http://elsewhere:9999/health"
    assert seen[0].headers["authorization"] == "Bearer s3cret"

    monkeypatch.delenv("AGENTD_URL")
    monkeypatch.delenv("AGENTD_TOKEN")
    with Client(transport=httpx.MockTransport(handler)) as client:
        client.health()
    assert str(seen[1].url) == "http://127.0.0.1:8721/health"
    assert "authorization" not in seen[1].headers


def test_names_and_keys_are_one_path_segment_each() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"events": [], "sessions": []})

    client = make_client(handler)
    client.get_session("demo", "user:1")
    client.get_session("demo", "a/b")
    client.events("my agent", "x?y#z%", after=5, limit=10)
    client.list_sessions("demo")
    assert paths == [
        "/v1/agents/demo/sessions/user%3A1",
        "/v1/agents/demo/sessions/a%2Fb",
        "/v1/agents/my%20agent/sessions/x%3Fy%23z%25/events?after=5&limit=10",
        "/v1/agents/demo/sessions",
    ]


def test_create_sends_only_given_fields() -> None:
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json={"name": "demo"})

    client = make_client(handler)
    client.create_agent("demo")
    client.create_agent("demo", model="scripted", tools=["calculator"], settings={"a": 1})
    assert bodies == [
        {"name": "demo"},
        {"name": "demo", "model": "scripted", "tools": ["calculator"], "settings": {"a": 1}},
    ]


def test_send_posts_the_message_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"id": "r_1", "status": "queued"})

    run = make_client(handler).send("demo", "k", "hi", wait=False, idempotency_key="once")
    assert run == {"id": "r_1", "status": "queued"}
    assert json.loads(seen[0].content) == {"content": "hi", "stream": False, "wait": False,
                                           "mode": "enqueue"}
    assert seen[0].headers["idempotency-key"] == "once"


def test_delete_returns_none_on_204() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    # An empty 204 body is not parsed as JSON; the agent's name is one path segment.
    assert make_client(handler).delete_agent("my agent/1") is None  # type: ignore[func-returns-value]
    [request] = seen
    assert (request.method, request.url.raw_path) == ("DELETE", b"/v1/agents/my%20agent%2F1")


def test_api_error_comes_from_the_error_body() -> None:
    body = {
        "error": {
            "code": "invalid_input",
            "message": "body.name: bad name",
            "retryable": False,
            "details": {"errors": [{"field": "body.name", "message": "bad name"}]},
        }
    }
    client = make_client(lambda request: httpx.Response(422, json=body))
    with pytest.raises(APIError) as info:
        client.create_agent("no such name!")
    err = info.value
    assert (err.status, err.code, err.retryable) == (422, "invalid_input", False)
    assert err.message == "body.name: bad name"
    assert err.details["errors"][0]["field"] == "body.name"
    assert "invalid_input" in str(err)


def test_api_error_from_a_body_that_is_not_agentds() -> None:
    client = make_client(lambda request: httpx.Response(502, text="Bad gateway from nginx"))
    with pytest.raises(APIError) as info:
        client.list_agents()
    assert info.value.status == 502
    assert info.value.code == "http_502"
    assert info.value.retryable
    assert "nginx" in info.value.message


def test_connection_failed_names_the_url_and_the_fix() -> None:
    port = free_port()  # nothing listens there
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(ConnectionFailed) as info:
        client.health()
    message = str(info.value)
    assert f"http://127.0.0.1:{port}" in message
    assert "not reachable" in message
    assert "agentd start" in message


def test_stream_parses_frames_and_stops_at_its_own_done() -> None:
    seen: list[httpx.Request] = []
    body = sse_body(
        ("message.user", 1, {"seq": 1, "run_id": "r_1", "kind": "message.user", "data": {}}),
        ("token", 1, {"run_id": "r_1", "text": "he"}),
        ("token", 1, {"run_id": "r_1", "text": "llo"}),
        ("done", 4, {"seq": 4, "run_id": "r_1", "kind": "run.completed", "data": {}}),
        ("token", 4, {"run_id": "r_2", "text": "not ours"}),
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(body)

    frames = list(make_client(handler).stream("demo", "k", "hello"))
    assert [f.event for f in frames] == ["message.user", "token", "token", "done"]
    assert frames[1] == SSEEvent(event="token", id=1, data={"run_id": "r_1", "text": "he"})
    assert frames[-1].run_id == "r_1"
    assert json.loads(seen[0].content) == {"content": "hello", "stream": True}
    assert seen[0].headers["accept"] == "text/event-stream"


def test_stream_error_status_raises_api_error() -> None:
    body = {
        "error": {"code": "agent_paused", "message": "agent demo is paused", "retryable": False}
    }
    client = make_client(lambda request: httpx.Response(409, json=body))
    with pytest.raises(APIError) as info:
        list(client.stream("demo", "k", "hi"))
    assert (info.value.status, info.value.code) == (409, "agent_paused")


def test_stream_resumes_from_the_log_after_a_dropped_connection() -> None:
    seen: list[httpx.Request] = []

    def torn() -> Iterator[bytes]:
        yield b"retry: 1\n\n"
        yield sse_body(
            ("message.user", 1, {"seq": 1, "run_id": "r_1", "kind": "message.user"}),
            ("run.started", 2, {"seq": 2, "run_id": "r_1", "kind": "run.started"}),
        )
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return sse_response(torn())
        return sse_response(
            sse_body(
                ("message.assistant", 3, {"seq": 3, "run_id": "r_1", "data": {"text": "hi"}}),
                ("done", 4, {"seq": 4, "run_id": "r_1", "kind": "run.completed"}),
            )
        )

    frames = list(make_client(handler).stream("demo", "k", "hello"))
    assert [f.id for f in frames] == [1, 2, 3, 4]
    assert frames[-1].event == "done"
    resumed = seen[1]
    assert resumed.method == "GET"
    assert resumed.url.params["after"] == "2"
    assert resumed.headers["last-event-id"] == "2"


def test_follow_reconnects_with_last_event_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return sse_response(b"retry: 1\n\n" + sse_body(("message.user", 6, {"seq": 6})))
        return sse_response(sse_body(("run.started", 7, {"seq": 7})))

    frames = make_client(handler).follow("demo", "k", after=5)
    assert next(frames).id == 6
    assert next(frames).id == 7
    frames.close()
    assert seen[0].url.params["after"] == "5"
    assert seen[1].url.params["after"] == "6"
    assert seen[1].headers["last-event-id"] == "6"


def test_follow_without_reconnect_ends_with_the_stream() -> None:
    client = make_client(lambda request: sse_response(sse_body(("message.user", 1, {"seq": 1}))))
    assert [f.id for f in client.follow("demo", "k", reconnect=False)] == [1]


def test_a_json_reply_where_a_stream_was_expected_is_a_client_error() -> None:
    client = make_client(lambda request: httpx.Response(200, json={"events": []}))
    with pytest.raises(ClientError, match="event stream"):
        list(client.follow("demo", "k"))


def test_checkpoint_restore_and_fork_paths_and_bodies() -> None:
    seen: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.raw_path.decode(), body))
        if request.url.raw_path.endswith(b"/checkpoints") and request.method == "GET":
            return httpx.Response(200, json={"checkpoints": [{"id": "c_1"}]})
        return httpx.Response(200, json={"ok": True})

    client = make_client(handler)
    client.checkpoint("demo", "a/b")
    client.checkpoint("demo", "a/b", name="first")
    assert client.checkpoints("demo", "a/b") == [{"id": "c_1"}]
    client.get_checkpoint("c_1/x")
    client.restore("demo", "a/b", checkpoint="first")
    client.restore("demo", "a/b", seq=0)
    client.restore_checkpoint("c_1")
    client.fork("demo", "a/b", seq=3)
    client.fork("demo", "a/b", checkpoint="c_1", new_key="x/y")
    client.fork_checkpoint("c_1")
    client.fork_checkpoint("c_1", new_key="x/y")
    session = "/v1/agents/demo/sessions/a%2Fb"
    assert seen == [
        ("POST", f"{session}/checkpoints", {}),
        ("POST", f"{session}/checkpoints", {"name": "first"}),
        ("GET", f"{session}/checkpoints", None),
        ("GET", "/v1/checkpoints/c_1%2Fx", None),
        ("POST", f"{session}/restore", {"checkpoint": "first"}),
        ("POST", f"{session}/restore", {"seq": 0}),
        ("POST", "/v1/checkpoints/c_1/restore", None),
        ("POST", f"{session}/fork", {"seq": 3}),
        ("POST", f"{session}/fork", {"checkpoint": "c_1", "key": "x/y"}),
        ("POST", "/v1/checkpoints/c_1/fork", {}),
        ("POST", "/v1/checkpoints/c_1/fork", {"key": "x/y"}),
    ]


def test_restore_errors_are_api_errors() -> None:
    body = {"error": {"code": "session_busy", "message": "the session has run r_1 queued",
                      "retryable": False, "details": {"active_run": "r_1"}}}
    client = make_client(lambda request: httpx.Response(409, json=body))
    with pytest.raises(APIError) as info:
        client.restore("demo", "k", seq=0)
    assert (info.value.status, info.value.code) == (409, "session_busy")
    assert info.value.details == {"active_run": "r_1"}


def tagged_sse_body(*frames: tuple[str, str, object]) -> bytes:
    return "".join(
        f"id: {raw}\nevent: {name}\ndata: {json.dumps(data)}\n\n" for name, raw, data in frames
    ).encode()


def test_frames_keep_their_raw_id_beside_the_seq() -> None:
    body = tagged_sse_body(("message.user", "6@3fa9c0d1", {"seq": 6}))
    frames = list(make_client(lambda r: sse_response(body)).follow("d", "k", reconnect=False))
    assert frames[0].id == 6
    assert frames[0].raw_id == "6@3fa9c0d1"
    # Equality (and so tests comparing frames) goes by the seq.
    assert frames[0] == SSEEvent(event="message.user", id=6, data={"seq": 6})


def test_follow_reconnects_with_the_full_frame_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return sse_response(
                b"retry: 1\n\n" + tagged_sse_body(("message.user", "6@3fa9c0d1", {"seq": 6}))
            )
        return sse_response(tagged_sse_body(("run.started", "7@3fa9c0d1", {"seq": 7})))

    frames = make_client(handler).follow("demo", "k", after=5)
    assert next(frames).id == 6
    assert next(frames).raw_id == "7@3fa9c0d1"
    frames.close()
    # ``after`` is only a query parameter: no frame id was received yet.
    assert "last-event-id" not in seen[0].headers
    assert seen[0].url.params["after"] == "5"
    assert seen[1].url.params["after"] == "6"
    assert seen[1].headers["last-event-id"] == "6@3fa9c0d1"


def test_follow_from_a_saved_frame_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response(tagged_sse_body(("run.started", "8@3fa9c0d1", {"seq": 8})))

    client = make_client(handler)
    frames = list(client.follow("demo", "k", reconnect=False, last_event_id="7@3fa9c0d1"))
    assert [f.id for f in frames] == [8]
    assert seen[0].url.params["after"] == "7"
    assert seen[0].headers["last-event-id"] == "7@3fa9c0d1"


def test_stream_resumes_with_the_full_frame_id() -> None:
    seen: list[httpx.Request] = []

    def torn() -> Iterator[bytes]:
        yield b"retry: 1\n\n"
        yield tagged_sse_body(
            ("message.user", "1@3fa9c0d1", {"seq": 1, "run_id": "r_1"}),
            ("token", "1@3fa9c0d1", {"run_id": "r_1", "text": "he"}),
        )
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return sse_response(torn())
        return sse_response(
            tagged_sse_body(("done", "4@3fa9c0d1", {"seq": 4, "run_id": "r_1"}))
        )

    frames = list(make_client(handler).stream("demo", "k", "hello"))
    assert [f.event for f in frames] == ["message.user", "token", "done"]
    assert seen[1].headers["last-event-id"] == "1@3fa9c0d1"
    assert seen[1].url.params["after"] == "1"
