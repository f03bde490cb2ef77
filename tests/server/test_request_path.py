"""One request path: auth, body limits and error mapping apply to every route, the
message fast path included; inputs the API cannot take get a 4xx, never a 500.

Through the ASGI app (no socket), on SQLite and, with AGENTD_TEST_POSTGRES_URL, on
PostgreSQL (the ``runtime`` fixture).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send
from tests.conftest import bearer

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.media.config import AttachmentsConfig
from agentd.server.app import create_app

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
MESSAGES = "/v1/agents/a/sessions/s/messages"


class Recorder:
    """A middleware added the ordinary way (``app.add_middleware``), as CORS or a
    rate limiter would be: it records every request it sees, with the status sent."""

    seen: list[tuple[str, str, int]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sender(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                Recorder.seen.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, sender)


@pytest.fixture
def make_client(settings: Settings, runtime: Runtime) -> ClientFactory:
    @asynccontextmanager
    async def factory(*, token: bool = True, middleware: type | None = None
                      ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings, runtime)
        if middleware is not None:
            app.add_middleware(middleware)
        headers = bearer(settings) if token else {}
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test",
                headers=headers) as client:
            yield client

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        assert (await c.post("/v1/agents", json={"name": "a"})).status_code == 201
        yield c


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["retryable"], bool)
    assert "Traceback" not in response.text
    return error


# -- one layer for every route ------------------------------------------------------


async def test_an_added_middleware_sees_the_message_route(make_client: ClientFactory
                                                          ) -> None:
    Recorder.seen = []
    async with make_client(middleware=Recorder) as c:
        assert (await c.post("/v1/agents", json={"name": "a"})).status_code == 201
        sent = await c.post(MESSAGES, json={"content": "hi"})
        assert sent.status_code == 200 and sent.json()["output"] == "echo: hi"
        streamed = await c.post(MESSAGES, json={"content": "yo", "stream": True})
        assert streamed.headers["content-type"].startswith("text/event-stream")
        bad = await c.post(MESSAGES, content=b"{")
        assert_error(bad, 422, "invalid_input")
    assert Recorder.seen == [("POST", "/v1/agents", 201), ("POST", MESSAGES, 200),
                             ("POST", MESSAGES, 200), ("POST", MESSAGES, 422)]


async def test_auth_applies_to_the_message_route_like_any_other(
        make_client: ClientFactory, runtime: Runtime) -> None:
    async with make_client() as c:
        assert (await c.post("/v1/agents", json={"name": "a"})).status_code == 201
    async with make_client(token=False) as anonymous:
        for response in (await anonymous.post(MESSAGES, json={"content": "hi"}),
                         await anonymous.get("/v1/agents/a"),
                         await anonymous.post(MESSAGES, json={"content": "hi"},
                                              headers={"Authorization": "Bearer nope"})):
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.get("/health")).status_code == 200
    sessions = await runtime.list_sessions("a")
    assert sessions == []  # nothing was accepted


async def test_body_limit_applies_to_the_message_route(
        settings: Settings, make_client: ClientFactory, runtime: Runtime) -> None:
    settings.max_body_bytes = 2048
    # (The routes that take images and files add [attachments] max_message_mb.)
    settings.attachments = AttachmentsConfig(max_message_mb=0.001)
    async with make_client() as c:
        assert (await c.post("/v1/agents", json={"name": "a"})).status_code == 201
        big = b'{"content": "' + b"x" * 4096 + b'"}'
        assert_error(await c.post(MESSAGES, content=big), 413, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            yield big[:1000]
            yield big[1000:]

        assert_error(await c.post(MESSAGES, content=chunks()), 413, "payload_too_large")

        async def small() -> AsyncIterator[bytes]:
            yield b'{"content": '
            yield b'"chunked"}'

        ok = await c.post(MESSAGES, content=small())
        assert ok.status_code == 200 and ok.json()["output"] == "echo: chunked"
        assert_error(await c.patch("/v1/agents/a", content=big,
                                   headers={"content-type": "application/json"}),
                     413, "payload_too_large")
    _, session = await runtime.get_session("a", "s")
    assert [e.data.get("content") for e in await runtime.read_events(session.id)
            if e.kind == "message.user"] == ["chunked"]


async def test_errors_have_one_shape_on_both_paths(client: httpx.AsyncClient) -> None:
    fast = assert_error(await client.post(MESSAGES, content=b"{nope"), 422, "invalid_input")
    slow = assert_error(await client.post("/v1/agents", content=b"{nope",
                                          headers={"content-type": "application/json"}),
                        422, "invalid_input")
    assert fast["message"].startswith("request body is not valid JSON")
    assert slow["message"].startswith("request body is not valid JSON")
    assert fast["details"]["errors"][0]["field"] == "body"
    assert_error(await client.post(MESSAGES, json={"content": "hi", "extra": 1}),
                 422, "invalid_input")
    for flag in ({"wait": 0}, {"stream": "true"}):  # the schema says boolean (fuzzer)
        assert_error(await client.post(MESSAGES, json={"content": "hi", **flag}),
                     422, "invalid_input")
    assert_error(await client.post("/v1/agents/nobody/sessions/s/messages",
                                   json={"content": "hi"}), 404, "agent_not_found")
    assert_error(await client.get("/v1/nowhere"), 404, "not_found")
    wrong = await client.put("/v1/agents/a/pause")
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    # Allow names every method of the path, not those of the first route that matched.
    several = await client.request("OPTIONS", "/v1/agents/a")
    assert_error(several, 405, "method_not_allowed")
    assert several.headers["allow"] == "GET, PATCH, DELETE"
    session = await client.put("/v1/agents/a/sessions/x%2Fy")
    assert session.headers["allow"] == "GET, DELETE"
    # A key may hold '/': .../x/events is the events route, not session "x/events".
    events = await client.delete("/v1/agents/a/sessions/x/events")
    assert events.status_code == 404  # no session "x/events", and none can be made
    assert (await client.put("/v1/agents/a/sessions/x/events")).headers["allow"] == "GET"


# -- JSON the store could not keep as sent ---------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"name": "b", "settings": {"n": 123456789012345678901234567890}}',
    b'{"name": "b", "settings": {"n": 9223372036854775808}}',
    b'{"name": "b", "settings": {"n": -9223372036854775809}}',
    b'{"name": "b", "settings": {"temperature": 1e309}}',
    b'{"name": "b", "settings": {"temperature": NaN}}',
    b'{"name": "b", "settings": {"temperature": -Infinity}}',
    b'{"name": "b", "instructions": "\\ud800"}',
    b'{"name": "b", "instructions": "\xff"}',
])
async def test_json_the_store_cannot_keep_is_refused(client: httpx.AsyncClient, raw: bytes
                                                     ) -> None:
    error = assert_error(await client.post("/v1/agents", content=raw,
                                           headers={"content-type": "application/json"}),
                         422, "invalid_input")
    assert error["message"].startswith("request body is not valid JSON")
    assert_error(await client.get("/v1/agents/b"), 404, "agent_not_found")


@pytest.mark.parametrize("depth", [1000, 1100, 100_000])
@pytest.mark.parametrize("path", ["/v1/agents", MESSAGES])
async def test_json_nested_too_deep_is_a_4xx(client: httpx.AsyncClient, path: str,
                                             depth: int) -> None:
    """Past orjson's depth limit (1024) the body was parsed again with the stdlib to
    say where it went wrong, which ran out of stack: a 500 with a RecursionError. At
    1,000, an integer past 64 bits inside took the stdlib's parse the same way."""
    before = (await client.get("/v1/agents")).json()
    deep = b"[" * depth + b"9223372036854775808" + b"]" * depth
    got = await client.post(path, content=b'{"name": "b", "content": "x", "settings": '
                            b'{"n": ' + deep + b"}}",
                            headers={"content-type": "application/json"})
    assert 400 <= got.status_code < 500, got.text
    assert (await client.get("/v1/agents")).json() == before


async def test_a_json_body_sent_as_a_form_says_what_content_type_it_needs(
        client: httpx.AsyncClient) -> None:
    """What `curl -d '{...}'` sends (docs/channels.md's example did): the 422 said
    only that the body is not an object."""
    got = await client.post("/v1/agents", content=b'{"name": "b"}', headers={
        "content-type": "application/x-www-form-urlencoded"})
    error = assert_error(got, 422, "invalid_input")
    assert "Content-Type: application/json" in error["message"], error
    assert "application/x-www-form-urlencoded" in error["message"]
    assert_error(await client.get("/v1/agents/b"), 404, "agent_not_found")


async def test_64_bit_integers_are_kept_exactly(client: httpx.AsyncClient) -> None:
    # A scripted turn's tool arguments are free-form JSON, stored as sent.
    raw = (b'{"name": "b", "settings": {"script": [{"tool_calls": [{"name": "calculator", '
           b'"arguments": {"big": 9223372036854775807, "small": -9223372036854775808, '
           b'"digits": "12345678901234567890123"}}]}]}}')
    created = await client.post("/v1/agents", content=raw,
                                headers={"content-type": "application/json"})
    assert created.status_code == 201, created.text
    settings = (await client.get("/v1/agents/b")).json()["settings"]
    arguments = settings["script"][0]["tool_calls"][0]["arguments"]
    assert arguments == {"big": 2**63 - 1, "small": -(2**63),
                         "digits": "12345678901234567890123"}


async def test_huge_numbers_in_message_and_restore_bodies(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(MESSAGES, content=b'{"content": "hi", "stream": '
                                                     b'123456789012345678901234567890}'),
                 422, "invalid_input")
    assert (await client.post(MESSAGES, json={"content": "12345678901234567890123"})
            ).json()["output"] == "echo: 12345678901234567890123"
    for seq in (b"9223372036854775808", b"1e309"):
        assert_error(await client.post("/v1/agents/a/sessions/s/restore",
                                       content=b'{"seq": ' + seq + b"}"),
                     422, "invalid_input")


# -- the event log's query and header -------------------------------------------------


async def test_after_beyond_64_bits_is_a_422(client: httpx.AsyncClient) -> None:
    await client.post(MESSAGES, json={"content": "hi"})
    events = "/v1/agents/a/sessions/s/events"
    assert_error(await client.get(events, params={"after": str(2**64)}), 422,
                 "invalid_input")
    assert_error(await client.get(events, params={"after": "9" * 5000}), 422,
                 "invalid_input")
    last = await client.get(events, params={"after": str(2**63 - 1)})
    assert last.status_code == 200 and last.json()["events"] == []
    for bad in (str(2**64), "9" * 5000, "1_0", "+1", "-1", "1@", "x@y"):
        error = assert_error(await client.get(events, headers={"Last-Event-ID": bad}),
                             422, "invalid_input")
        assert error["details"]["errors"][0]["field"] == "header.last-event-id"


# -- session keys ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["%2E", "%2E%2E", "a%2F..", "..%2Fb", "a%2F.%2Fb",
                                 "a%2Fevents", "a%2Fb%2Fcheckpoints", "x%2Fpolicy"])
async def test_unreachable_keys_are_refused(client: httpx.AsyncClient, runtime: Runtime,
                                            key: str) -> None:
    error = assert_error(await client.post(f"/v1/agents/a/sessions/{key}/messages",
                                           json={"content": "hi"}), 422, "invalid_input")
    assert error["details"]["errors"][0]["field"] == "path.key"
    assert await runtime.list_sessions("a") == []


async def test_keys_with_dots_that_are_not_segments_work(client: httpx.AsyncClient) -> None:
    for key in ("...", ".a", "a.", "a..b", "v1.2/x", "events", "a/events/b"):
        quoted = key.replace("/", "%2F")
        sent = await client.post(f"/v1/agents/a/sessions/{quoted}/messages",
                                 json={"content": "hi"})
        assert sent.status_code == 200, (key, sent.text)
        got = await client.get(f"/v1/agents/a/sessions/{quoted}")
        assert got.status_code == 200 and got.json()["key"] == key


async def test_keys_that_are_not_utf8_are_refused_not_merged(client: httpx.AsyncClient,
                                                             runtime: Runtime) -> None:
    for key in ("%FF", "%FE", "a%C3", "%C3%28"):
        for response in (
                await client.post(f"/v1/agents/a/sessions/{key}/messages",
                                  json={"content": "hi"}),
                await client.get(f"/v1/agents/a/sessions/{key}"),
                await client.delete(f"/v1/agents/a/sessions/{key}")):
            error = assert_error(response, 422, "invalid_input")
            assert "UTF-8" in error["message"]
    assert await runtime.list_sessions("a") == []
    ok = await client.post("/v1/agents/a/sessions/caf%C3%A9/messages", json={"content": "hi"})
    assert ok.status_code == 200 and ok.json()["session"] == "café"
    assert_error(await client.get("/v1/usage?agent=%FF"), 422, "invalid_input")


async def test_control_characters_in_a_key_are_a_422_everywhere(client: httpx.AsyncClient
                                                                ) -> None:
    for key in ("a%0Ab", "%0A", "a%00", "tab%09", "del%7F"):
        for response in (
                await client.post(f"/v1/agents/a/sessions/{key}/messages",
                                  json={"content": "hi"}),
                await client.get(f"/v1/agents/a/sessions/{key}"),
                await client.get(f"/v1/agents/a/sessions/{key}/events"),
                await client.delete(f"/v1/agents/a/sessions/{key}")):
            error = assert_error(response, 422, "invalid_input")
            assert "control characters" in error["message"]


async def test_apps_share_the_routes_their_includes_build_and_each_checks_scopes(
        tmp_path: Any) -> None:
    """Two apps of one process share what including a router built (AgentdApp.
    include_router), and a token scoped to one agent is still held to it on both."""
    apps = [create_app(Settings(home=tmp_path / f"home{i}", demo_agent=False,
                                tokens=["admin-token-0123456789"]))
            for i in range(2)]
    shared = [r for r in apps[0].router.routes if any(r is o for o in apps[1].router.routes)]
    assert len(shared) >= 20  # the API's routers, not only /health (which is each app's)
    for app in apps:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://agentd") as client:
            admin = {"Authorization": "Bearer admin-token-0123456789"}
            for name in ("mine", "theirs"):
                created = await client.post("/v1/agents", headers=admin,
                                            json={"name": name, "model": "scripted"})
                assert created.status_code == 201, created.text
            made = await client.post("/v1/tokens", headers=admin, json={
                "name": "scoped", "role": "member", "agents": ["mine"]})
            assert made.status_code == 201, made.text
            scoped = {"Authorization": f"Bearer {made.json()['token']}"}
            assert (await client.get("/v1/agents/mine", headers=scoped)).status_code == 200
            assert (await client.get("/v1/agents/theirs", headers=scoped)).status_code in (
                403, 404)


class PassThrough:
    """A middleware that does nothing: added, it leaves the request layer unfused."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def test_the_fused_front_answers_as_the_layers_one_by_one(
        settings: Settings, runtime: Runtime) -> None:
    """create_app's layers run in one frame for an HTTP request (``_Front``); with any
    other middleware they run one by one. Both answer every request alike (status,
    body, headers) and count it alike in the metrics."""
    from agentd.server.app import _Front

    settings.max_body_bytes = 2048
    settings.attachments = AttachmentsConfig(max_message_mb=0.001)
    big = b'{"content": "' + b"x" * 4096 + b'"}'

    async def chunked() -> AsyncIterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/agents", {"json": {"name": "a"}}),
        ("POST", MESSAGES, {"json": {"content": "hi"}}),
        ("POST", MESSAGES, {"json": {"content": "hi"}, "headers": {"Authorization": ""}}),
        ("POST", MESSAGES, {"json": {"content": "hi"},
                            "headers": {"Authorization": "Bearer nope"}}),
        ("GET", "/v1/agents", {"headers": {"Host": "evil.example"}}),
        ("POST", MESSAGES, {"json": {"content": "hi"},
                            "headers": {"Origin": "http://evil.example"}}),
        ("POST", MESSAGES, {"content": big}),
        ("POST", MESSAGES, {"content": chunked}),
        ("POST", MESSAGES, {"content": b"{"}),
        ("GET", "/v1/agents/a/sessions/%01", {}),
        ("GET", "/v1/agents/nope", {}),
        ("GET", "/nowhere", {}),
        ("PUT", MESSAGES, {"json": {}}),
        ("GET", "/health", {"headers": {"Authorization": ""}}),
    ]

    async def answers(middleware: type | None) -> tuple[list[Any], dict[str, float]]:
        app = create_app(settings, runtime)
        if middleware is not None:
            app.add_middleware(middleware)
        assert isinstance(app.build_middleware_stack(), _Front) is (middleware is None)
        got = []
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                headers=bearer(settings)) as c:
            before = await counts()
            for method, path, options in requests:
                if options.get("content") is chunked:
                    options = {**options, "content": chunked()}
                r = await c.request(method, path, **options)
                body = r.json()
                # (times, the run's id and the daemon's health: new each time)
                body = {k: v for k, v in body.items() if path != "/health" and k not in (
                    "id", "created_at", "started_at", "finished_at", "updated_at")}
                got.append((method, path, r.status_code, body,
                            {k: v for k, v in r.headers.items() if k != "content-length"}))
            after = await counts()
        await runtime.delete_agent("a")
        return got, {k: v - before.get(k, 0) for k, v in after.items()}

    async def counts() -> dict[str, float]:
        assert runtime.metrics is not None
        text = (await runtime.metrics.render()).decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line.startswith("agentd_http_requests_total")}

    fused, fused_counts = await answers(None)
    layered, layered_counts = await answers(PassThrough)
    assert fused == layered
    assert fused_counts == layered_counts
    assert sum(fused_counts.values()) == len(requests)
    assert [status for _, _, status, _, _ in fused] == [
        201, 200, 401, 401, 403, 403, 413, 413, 422, 422, 404, 404, 405, 200]
