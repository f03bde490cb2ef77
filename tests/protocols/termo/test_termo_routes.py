"""The termo door in process (ASGI), on SQLite and PostgreSQL: an adapter with no
hooks of its own gets agentd's equivalents (memory block and search, heartbeat, the
agent's definition as config, restart); bad input gets termo-agent's error shape and
stores nothing; the door's pieces (hook detection, aiohttp paths and answers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response
from tests.conftest import asgi_client

from agentd.adapters import AdapterBase
from agentd.assembly import Runtime
from agentd.config import Settings, TermoConfig
from agentd.protocols.termo._hooks import compile_path, own_hook, to_response
from agentd.testing.termo_adapter import Adapter

MINIMAL = "agentd.testing.termo_adapter:Minimal"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                    max_body_bytes=64 * 1024,
                    termo={"adapter": MINIMAL, "agent": "bot", "token": "tt"})


@pytest.fixture
async def api(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as client:
        yield client


async def test_the_agent_is_made_at_start_and_allowed_by_naming_it(
        api: httpx.AsyncClient, settings: Settings) -> None:
    assert settings.adapters.allow == [MINIMAL]  # named, so allowed: nothing else
    agent = (await api.get("/v1/agents/bot")).json()
    assert agent["model"] == f"adapter:{MINIMAL}"
    sent = await api.post("/api/send", json={"message": "hi", "session_key": "u:1"})
    assert sent.json() == {"response": "minimal: hi", "session_key": "u:1"}
    # Another adapter is still refused to agents created through the API.
    refused = await api.post("/v1/agents", json={
        "name": "other", "model": "adapter:agentd.testing.termo_adapter:Adapter"})
    assert refused.status_code == 422


async def test_memory_falls_back_to_a_block_and_memory_search(api: httpx.AsyncClient
                                                              ) -> None:
    assert (await api.get("/api/memory")).json() == {"content": None}
    assert (await api.patch("/api/memory", json={"content": "likes owls"})).json() == {
        "status": "ok"}
    assert (await api.get("/api/memory")).json() == {"content": "likes owls"}
    block = await api.get("/v1/agents/bot/memory/blocks/memory")
    assert block.status_code == 200 and block.json()["value"] == "likes owls"
    assert (await api.patch("/api/memory", json={"content": 5})).status_code == 400
    added = await api.post("/v1/agents/bot/memory/entries", json={"entries": [
        {"content": "the user's cat is called Mog", "tags": ["fact"]},
        {"content": "meeting with Ana on Friday", "tags": ["plan"]}]})
    assert added.status_code in (200, 201), added.text
    found = (await api.post("/api/memory/search",
                            json={"query": "cat called Mog", "limit": 1})).json()
    assert [m["content"] for m in found["memories"]] == ["the user's cat is called Mog"]
    assert found["memories"][0]["category"] == "fact"
    only_plans = (await api.post("/api/memory/search", json={
        "query": "cat called Mog", "category": "plan"})).json()["memories"]
    assert [m["content"] for m in only_plans] == ["meeting with Ana on Friday"]
    for bad, why in (({}, "query is required"), ({"query": 3}, "query must be a string"),
                     ({"query": "x", "limit": 0}, "limit"),
                     ({"query": "x", "limit": True}, "limit")):
        got = await api.post("/api/memory/search", json=bad)
        assert got.status_code == 400 and why in got.json()["error"]


async def test_heartbeat_config_tools_update_restart_fall_back(api: httpx.AsyncClient
                                                               ) -> None:
    beat = (await api.get("/api/heartbeat")).json()
    assert (beat["content"], beat["enabled"], beat["interval_s"]) == (None, False, 1800)
    assert (await api.patch("/api/heartbeat", json={"content": "check mail"})).json() == {
        "status": "ok"}
    beat = (await api.get("/api/heartbeat")).json()
    assert (beat["content"], beat["enabled"]) == ("check mail", True)
    native = (await api.get("/v1/agents/bot/heartbeat")).json()
    assert native["settings"]["document"] == "check mail" and native["settings"]["enabled"]
    await api.patch("/api/heartbeat", json={"content": "  "})
    assert (await api.get("/api/heartbeat")).json()["enabled"] is False

    config = (await api.get("/api/config")).json()
    assert config["name"] == "bot" and config["model"] == f"adapter:{MINIMAL}"
    assert (await api.patch("/api/config", json={"instructions": "be brief"})).json() == {
        "status": "ok"}
    assert (await api.get("/api/config")).json()["instructions"] == "be brief"
    refused = await api.patch("/api/config", json={"model": "scripted"})
    assert refused.status_code == 400 and "model" in refused.json()["error"]
    assert (await api.get("/api/config")).json()["model"] == f"adapter:{MINIMAL}"
    bad = await api.patch("/api/config", json={"settings": {"timeout_s": "soon"}})
    assert bad.status_code == 422 and bad.json()["error"]

    assert (await api.get("/api/tools")).json() == []
    assert (await api.post("/api/update")).json() == {"status": "not supported"}
    assert (await api.post("/api/restart")).json() == {"status": "restarting"}
    # A fresh adapter answers after the restart.
    sent = await api.post("/api/send", json={"message": "back?"})
    assert sent.json()["response"] == "minimal: back?"


async def test_the_termo_token_changes_no_agent_definition(api: httpx.AsyncClient
                                                           ) -> None:
    termo = {"Authorization": "Bearer tt"}
    sent = await api.post("/api/send", json={"message": "hi"}, headers=termo)
    assert sent.status_code == 200
    refused = await api.patch("/api/config", headers=termo,
                              json={"settings": {"team": {"mode": "pipeline"}}})
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert (await api.get("/api/config")).json()["settings"] == {}
    assert (await api.patch("/api/heartbeat", headers=termo,
                            json={"content": "ping"})).status_code == 200
    assert (await api.get("/v1/agents", headers=termo)).status_code == 401


async def test_bad_input_gets_termo_errors_and_stores_nothing(api: httpx.AsyncClient
                                                              ) -> None:
    cases: list[tuple[Any, int, str]] = [
        (b"{oops", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b'"text"', 400, "JSON object"),
        (b"", 400, "JSON object"),
        (b'{"message": 12}', 400, "message must be a string"),
        (b'{"message": ["a"]}', 400, "message must be a string"),
        (b'{"message": "x", "session_key": 5}', 400, "session_key"),
        (b'{"message": "x", "session_key": ""}', 400, "session_key"),
        (b'{"message": "x", "session_key": "a\\u0000b"}', 422, "session"),
        (b'{"message": "' + b"x" * 70_000 + b'"}', 413, "over"),
    ]
    for body, status, why in cases:
        got = await api.post("/api/send", content=body,
                             headers={"Content-Type": "application/json"})
        assert got.status_code == status, (body[:40], got.text)
        assert why in got.json()["error"], (body[:40], got.text)
    assert (await api.get("/api/sessions")).json() == []
    assert (await api.get("/v1/agents/bot/sessions")).json()["sessions"] == []


async def test_unknown_paths_are_agentds(api: httpx.AsyncClient) -> None:
    got = await api.get("/api/nothing-here")
    assert got.status_code == 404
    assert got.json()["error"]["code"] == "not_found"  # agentd's shape: not the door's


def test_own_hooks_are_told_from_the_defaults() -> None:
    class Mine(AdapterBase):
        async def get_config(self) -> dict[str, Any]:
            return {"a": 1}

    mine = Mine()
    assert own_hook(mine, "get_config") is not None
    assert own_hook(mine, "list_tools") is None  # AdapterBase's default
    assert own_hook(mine, "get_memory") is None  # absent
    assert own_hook(Adapter(), "get_memory") is not None
    termo = pytest.importorskip("termo_agent")

    class Theirs(termo.AgentAdapter):  # type: ignore[misc, name-defined]
        async def initialize(self, config_path: str | None = None) -> None: ...
        async def shutdown(self) -> None: ...
        async def send_message(self, message: str, session_key: str) -> str:
            return ""
        async def send_message_stream(self, message: str, session_key: str) -> Any:
            yield None
        async def get_history(self, session_key: str) -> list[dict[str, Any]]:
            return []
        async def health(self) -> dict[str, Any]:
            return {"status": "fine"}

    theirs = Theirs()
    assert own_hook(theirs, "health") is not None
    assert own_hook(theirs, "get_memory") is None  # termo-agent's default


def test_aiohttp_paths_and_answers() -> None:
    pattern = compile_path("/files/{path:.*}")
    found = pattern.fullmatch("/files/a/b.txt")
    assert found is not None and found.group("path") == "a/b.txt"
    one = compile_path("/api/x/{name}")
    assert one.fullmatch("/api/x/a/b") is None
    matched = one.fullmatch("/api/x/a.b")
    assert matched is not None and matched.group("name") == "a.b"
    assert compile_path("/a.b").fullmatch("/aXb") is None  # literal dots
    with pytest.raises(ValueError):
        compile_path("relative")
    web = pytest.importorskip("aiohttp.web")
    answer = to_response(web.json_response({"a": 1}, status=201))
    assert answer.status_code == 201 and answer.body == b'{"a": 1}'
    assert answer.headers["content-type"].startswith("application/json")
    assert to_response(web.HTTPNotFound()).status_code == 404
    assert to_response({"b": 2}).body == b'{"b": 2}'
    same = Response(b"x")
    assert to_response(same) is same
    with pytest.raises(TypeError):
        to_response(3.5)


def test_termo_settings() -> None:
    assert TermoConfig(adapter="my_agent").adapter == "my_agent:Adapter"
    assert TermoConfig(adapter="adapter:pkg.mod:Obj").adapter == "pkg.mod:Obj"
    assert TermoConfig().adapter is None
    with pytest.raises(ValueError):
        TermoConfig(token="")


def test_serve_refuses_an_agent_without_an_adapter() -> None:
    from typer.testing import CliRunner

    from agentd.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--agent", "x"])
    assert result.exit_code == 2  # a usage error
    assert "--agent names the agent --adapter or --termo serves" in result.output
    result = runner.invoke(app, ["serve", "--adapter", "not a name!"])
    assert result.exit_code == 2  # a usage error, refused before anything starts
    assert "invalid adapter name" in result.output


async def test_failing_hooks_and_routes_are_answered_and_contained(
        tmp_path: Path, store_url: str) -> None:
    settings = Settings(home=tmp_path / "home2", demo_agent=False, database_url=store_url,
                        shutdown_grace_s=2.0, adapters={"timeout_s": 0.5},
                        termo={"adapter": "agentd.testing.termo_adapter:Broken"})
    runtime = await Runtime.open(settings)
    try:
        async with asgi_client(settings, runtime) as api:
            raised = await api.get("/api/config")
            assert raised.status_code == 502
            assert "config store unreachable" in raised.json()["error"]
            hung = await api.get("/api/tools")
            assert hung.status_code == 504 and "0.5s" in hung.json()["error"]
            boom = await api.get("/api/boom")
            assert boom.status_code == 500
            assert boom.json() == {"error": "the adapter's route raised KeyError"}
            assert (await api.get("/api/odd")).status_code == 500
            # The daemon goes on.
            sent = await api.post("/api/send", json={"message": "still here"})
            assert sent.json()["response"] == "echo[0]: still here"
    finally:
        await runtime.close()


async def test_the_served_agent_is_never_put_to_sleep(tmp_path: Path, store_url: str
                                                      ) -> None:
    settings = Settings(home=tmp_path / "home3", demo_agent=False, database_url=store_url,
                        shutdown_grace_s=2.0,
                        termo={"adapter": "agentd.testing.termo_adapter"})
    runtime = await Runtime.open(settings)
    try:
        async with asgi_client(settings, runtime) as api:
            await api.post("/v1/agents", json={"name": "other", "model": "scripted"})
            first = await api.post("/api/send", json={"message": "one"})
            assert first.json()["response"] == "echo[0]: one"
            # Every idle agent sleeps now, but the one the termo routes serve.
            assert runtime.sleep_idle_agents(0.0) == ["other"]
            # Its adapter (and what it keeps in memory) is the same one.
            second = await api.post("/api/send", json={"message": "two"})
            assert second.json()["response"] == "echo[1]: two"
            assert (await api.get("/health")).json()["restarts"] == 0
    finally:
        await runtime.close()


async def test_a_send_continues_its_callers_trace(api: httpx.AsyncClient) -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for stream in (False, True):
        sent = await api.post("/api/send", headers={"traceparent": caller},
                              json={"message": "hi", "session_key": f"tp:{stream}",
                                    "stream": stream})
        assert sent.status_code == 200, sent.text
        runs = (await api.get("/v1/runs", params={"agent": "bot",
                                                  "session": f"tp:{stream}"})).json()["runs"]
        trace = (await api.get(f"/v1/runs/{runs[0]['id']}/trace")).json()
        root = trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert (root["traceId"], root["parentSpanId"]) == (caller[3:35], caller[36:52])
