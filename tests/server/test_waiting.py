"""What a run waits for, as a client of the streamed API sees it: ``waiting`` frames
(model retries, an unreachable model, an outage, an approval), the same state in the
log for a client that comes later, and a failed run that names its model and the cause.
Real providers over HTTP to the stub LLM server (or to a port nobody listens on)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import bearer
from tests.server.test_api import parse_sse

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.events import WAITING_REASONS
from agentd.server.app import create_app
from agentd.testing import StubLLMServer

MODEL = "openai-compatible:stub"
CONTRACT = {"run_id", "reason", "model", "cause", "retry_in_s"}


@pytest.fixture(scope="module")
def stub_server() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def stub(stub_server: StubLLMServer) -> Iterator[StubLLMServer]:
    stub_server.clear()
    yield stub_server
    stub_server.clear()


@asynccontextmanager
async def _api(tmp_path: Path, **kernel: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                        retry_base_s=0.01, retry_max_s=0.05, **kernel)
    runtime = await Runtime.open(settings)
    app = create_app(settings, runtime)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t",
                headers=bearer(settings)) as client:
            yield client
    finally:
        await runtime.close()


async def _agent(client: httpx.AsyncClient, base_url: str, **settings: Any) -> None:
    r = await client.post("/v1/agents", json={
        "name": "a", "model": MODEL, "settings": {"base_url": base_url, **settings}})
    assert r.status_code == 201, r.text


async def _stream(client: httpx.AsyncClient, content: str = "hi") -> list[dict[str, Any]]:
    r = await client.post("/v1/agents/a/sessions/k/messages",
                          json={"content": content, "stream": True})
    assert r.status_code == 200, r.text
    return parse_sse(r.text)


async def _log(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/v1/agents/a/sessions/k/events")
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


def _waiting(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [f["data"] for f in frames if f.get("event") == "waiting"]
    for data in found:
        assert set(data) >= CONTRACT, data
        assert data["reason"] in WAITING_REASONS
    return found


async def _until(check: Callable[[], Awaitable[Any]]) -> Any:
    """Poll ``check`` until it returns something true (bounded: a stuck run fails)."""
    for _ in range(1500):
        if result := await check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError("gave up waiting")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_retried_model_call_says_what_it_waits_for(tmp_path: Path,
                                                          stub: StubLLMServer) -> None:
    stub.enqueue(fault="http_503")
    stub.enqueue(fault="http_503")
    stub.enqueue(text="third time lucky")
    async with _api(tmp_path) as client:
        await _agent(client, stub.base_url)
        frames = await _stream(client)
        assert frames[-1]["event"] == "done"
        run_id = frames[-1]["data"]["run_id"]
        # Two retries of the same model for the same reason: said once.
        [waiting] = _waiting(frames)
        assert waiting["run_id"] == run_id and waiting["reason"] == "model_retry"
        assert waiting["model"] == MODEL and "503" in waiting["cause"]
        assert isinstance(waiting["retry_in_s"], float)
        names = [f["event"] for f in frames]
        assert names.index("run.started") < names.index("waiting") < names.index(
            "message.assistant")
        # A client that comes later reads the same from the log.
        logged = [e for e in await _log(client) if e["kind"] == "run.waiting"]
        assert [{**e["data"], "run_id": e["run_id"]} for e in logged] == [
            {k: waiting[k] for k in CONTRACT}]


async def test_an_unreachable_model_is_named_with_the_cause(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}/v1"
    async with _api(tmp_path) as client:
        await _agent(client, base_url, on_outage="fail")
        frames = await _stream(client)
        waiting = _waiting(frames)
        assert waiting and waiting[0]["reason"] == "model_retry"
        assert waiting[0]["model"] == MODEL and "connect" in waiting[0]["cause"].lower()
        assert frames[-1]["event"] == "error"
        error = frames[-1]["data"]["data"]["error"]
        assert MODEL in error["message"] and "connect" in error["message"].lower()
        assert error["details"]["model"] == MODEL
        run = (await client.get(f"/v1/runs/{frames[-1]['data']['run_id']}")).json()
        assert run["status"] == "failed" and run["error"] == error


async def test_a_parked_run_is_seen_waiting_by_a_late_client(tmp_path: Path,
                                                           stub: StubLLMServer) -> None:
    for _ in range(200):
        stub.enqueue(fault="http_503")
    async with _api(tmp_path, breaker_failures=2, breaker_cooldown_s=0.2) as client:
        await _agent(client, stub.base_url)
        sent = await client.post("/v1/agents/a/sessions/k/messages",
                                 json={"content": "hi", "wait": False})
        run_id = sent.json()["id"]
        async def parked() -> bool:
            return any(e["kind"] == "model.outage" for e in await _log(client))

        await _until(parked)
        log = await _log(client)
        kinds = [e["kind"] for e in log]
        outage = [e for e in log if e["kind"] == "run.waiting"
                  and e["data"]["reason"] == "model_outage"]
        assert len(outage) == 1 and kinds.index("model.outage") < log.index(outage[0])
        assert outage[0]["run_id"] == run_id and outage[0]["data"]["model"] == MODEL
        assert "503" in outage[0]["data"]["cause"]
        # The provider comes back: the run goes on; no more waiting was logged.
        stub.clear()
        stub.enqueue(text="back")
        async def completed() -> bool:
            return bool((await client.get(f"/v1/runs/{run_id}")).json()["status"]
                        == "completed")

        await _until(completed)
        later = [e["data"]["reason"] for e in await _log(client) if e["kind"] == "run.waiting"]
        assert later.count("model_outage") == 1


async def test_an_approval_is_a_waiting_frame(tmp_path: Path) -> None:
    async with _api(tmp_path) as client:
        r = await client.post("/v1/agents", json={
            "name": "a", "model": "scripted", "tools": ["calculator"], "settings": {
                "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
                "script": [{"tool_calls": [{"name": "calculator",
                                            "arguments": {"expression": "6*7"}}]},
                           {"text": "42"}]}})
        assert r.status_code == 201, r.text
        stream = asyncio.create_task(_stream(client))
        async def asked() -> list[dict[str, Any]]:
            return list((await client.get("/v1/approvals")).json()["approvals"])

        pending = await _until(asked)
        decided = await client.post(f"/v1/approvals/{pending[0]['approval_id']}",
                                    json={"action": "approve"})
        assert decided.status_code == 200, decided.text
        frames = await stream
        [waiting] = _waiting(frames)
        assert waiting["reason"] == "approval" and waiting["model"] is None
        assert "calculator" in waiting["cause"]
        names = [f["event"] for f in frames]
        assert names.index("approval.requested") < names.index("waiting") < names.index(
            "approval.decided")
        assert frames[-1]["event"] == "done"


async def test_the_event_catalogue_is_published(tmp_path: Path) -> None:
    async with _api(tmp_path) as client:
        r = await client.get("/v1/events/schema")
        assert r.status_code == 200, r.text
        schema = r.json()
        assert "run.waiting" in schema["discriminator"]["mapping"]
        assert "message.assistant" in schema["discriminator"]["mapping"]
        waiting = schema["$defs"]["RunWaitingData"]
        assert set(waiting["required"]) == CONTRACT - {"run_id"}
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert "/v1/events/schema" in paths
