"""Agent settings through the real app over ASGI: bad ones refused with a 422 naming
each field, valid ones stored as sent and acted on, the OpenAPI schema documenting
them, and stored settings that no longer validate reported (at start, by the API and
by ``agentd show``) rather than changed."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.conftest import bearer

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app

TERMINAL = {"completed", "failed", "cancelled", "interrupted"}


@asynccontextmanager
async def daemon(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app as ``agentd serve`` runs it: its own runtime, opened in the lifespan."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=bearer(settings)) as client:
        yield client


async def _create(client: httpx.AsyncClient, settings: Any, name: str = "a"
                  ) -> httpx.Response:
    return await client.post("/v1/agents", json={"name": name, "settings": settings})


async def _run(client: httpx.AsyncClient, name: str, content: str = "go") -> dict[str, Any]:
    reply = await client.post(f"/v1/agents/{name}/sessions/k/messages",
                              json={"content": content, "wait": False})
    assert reply.status_code == 202, reply.text
    run_id = reply.json()["id"]
    for _ in range(500):
        run: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}")).json()
        if run["status"] in TERMINAL:
            return run
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} did not end: {run}")


def _fields(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 422, reply.text
    assert "Traceback" not in reply.text
    return [e["field"] for e in reply.json()["error"]["details"]["errors"]]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with daemon(settings) as c:
        yield c


# The examples of issue 12, each accepted before; all refused now, naming the field.
@pytest.mark.parametrize(("raw", "field"), [
    ({"max_step": 3}, "max_step"),
    ({"loop_gaurd": {"repeats": 3}}, "loop_gaurd"),
    ({"on_unknown_outcome": "pray"}, "on_unknown_outcome"),
    ({"temperature": "hot"}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"timeout_s": -1}, "timeout_s"),
    ({"max_steps": 2**64}, "max_steps"),
    ({"sandbox": {"limits": {"memory_mb": 10_000_000}}}, "sandbox.limits.memory_mb"),
    ({"api_key": "sk-live"}, "api_key"),
    ({"password": "hunter2"}, "password"),
    ({"max_steps": True}, "max_steps"),
    ({"loop_guard": {"repeats": "3"}}, "loop_guard.repeats"),
])
async def test_bad_settings_get_a_422_naming_the_field(client: httpx.AsyncClient,
                                                       raw: dict[str, Any], field: str
                                                       ) -> None:
    reply = await _create(client, raw)
    assert _fields(reply) == [f"body.settings.{field}"]
    assert reply.json()["error"]["code"] in ("invalid_input", "invalid_model")
    assert (await client.get("/v1/agents/a")).status_code == 404  # nothing stored


@pytest.mark.parametrize(("body", "field"), [
    (b'{"name": "a", "settings": {"weight": 1e309}}', "weight"),
    (b'{"name": "a", "settings": {"max_steps": 99999999999999999999999}}', "max_steps"),
    (b'{"name": "a", "settings": {"budget": {"day": {"cost_usd": -1e400}}}}',
     "budget.day.cost_usd"),
])
async def test_numbers_json_lets_through_are_refused(client: httpx.AsyncClient,
                                                     body: bytes, field: str) -> None:
    # Sent as raw JSON text: 1e309 parses to infinity, the integer beyond 64 bits.
    reply = await client.post("/v1/agents", content=body,
                              headers={"Content-Type": "application/json"})
    assert _fields(reply) == [f"body.settings.{field}"]


async def test_every_bad_field_is_listed(client: httpx.AsyncClient) -> None:
    reply = await _create(client, {"max_step": 3, "loop_gaurd": {}, "temperature": "hot",
                                   "on_unknown_outcome": "pray"})
    assert sorted(_fields(reply)) == sorted(f"body.settings.{f}" for f in (
        "max_step", "loop_gaurd", "temperature", "on_unknown_outcome"))
    error = reply.json()["error"]
    assert "did you mean 'max_steps'" in error["message"]
    assert "did you mean 'loop_guard'" in error["message"]


async def test_settings_that_are_not_an_object_are_refused(client: httpx.AsyncClient
                                                           ) -> None:
    assert _fields(await _create(client, ["max_steps", 3])) == ["body.settings"]


async def test_a_bad_patch_changes_nothing(client: httpx.AsyncClient) -> None:
    created = await _create(client, {"max_steps": 4})
    assert created.status_code == 201, created.text
    reply = await client.patch("/v1/agents/a", json={"settings": {"max_stpes": 5}})
    assert _fields(reply) == ["body.settings.max_stpes"]
    agent = (await client.get("/v1/agents/a")).json()
    assert agent["settings"] == {"max_steps": 4}


async def test_valid_settings_are_stored_as_sent_and_acted_on(client: httpx.AsyncClient
                                                             ) -> None:
    calls = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}]
    sent = {"script": calls * 3 + [{"text": "done"}], "temperature": 0,
            "loop_guard": {"repeats": 2, "action": "stop"}, "priority": "batch",
            "budget": {"warn_at": [0.9, 0.5]}, "sandbox": {"limits": {"wall_s": 5}}}
    reply = await client.post("/v1/agents", json={"name": "a", "tools": ["calculator"],
                                                  "settings": sent})
    assert reply.status_code == 201, reply.text
    assert reply.json()["settings"] == sent  # as sent: not normalised, no defaults added
    assert reply.json()["settings_errors"] == []
    run = await _run(client, "a")
    assert (run["status"], run["error"]["code"]) == ("failed", "loop_detected")

    # max_steps still ends a run that keeps calling tools.
    patched = await client.patch("/v1/agents/a", json={"settings": {
        "script": calls, "max_steps": 2}})
    assert patched.status_code == 200, patched.text
    run = await _run(client, "a")
    assert (run["status"], run["error"]["code"]) == ("failed", "max_steps")


async def test_the_openapi_schema_documents_every_setting(client: httpx.AsyncClient
                                                         ) -> None:
    from agentd.settings import AgentSettings

    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    settings = components["AgentSettings"]
    assert set(settings["properties"]) == set(AgentSettings.model_fields)
    assert settings["additionalProperties"] is False
    assert "Literal" not in orjson.dumps(settings).decode()
    outcome = settings["properties"]["on_unknown_outcome"]
    assert outcome["enum"] == ["ask", "interrupt"]
    for body in ("AgentCreate", "AgentPatch"):
        assert "#/components/schemas/AgentSettings" in orjson.dumps(
            components[body]["properties"]["settings"]).decode()
    for nested in ("Budget", "PolicyConfig", "AgentSandbox", "MCPServer", "LoopGuard",
                   "FallbackModel", "ModelSettings"):
        assert nested in components
    assert "settings_errors" in components["AgentOut"]["properties"]


# -- settings stored by an older version, or by hand ----------------------------------


def _write_settings(settings: Settings, name: str, raw: str) -> None:
    """Write an agent's settings straight into the SQLite store, as an older version
    (or a person with sqlite3) might have."""
    db = settings.home / "agentd.db"
    with sqlite3.connect(db) as conn:
        changed = conn.execute("UPDATE agents SET settings = ? WHERE name = ?",
                               (raw, name)).rowcount
    assert changed == 1


def _stored(settings: Settings, name: str) -> str:
    with sqlite3.connect(settings.home / "agentd.db") as conn:
        row = conn.execute("SELECT settings FROM agents WHERE name = ?", (name,)).fetchone()
    return str(row[0])


BAD = '{"max_step": 3, "on_unknown_outcome": "pray", "script": [{"text": "hi"}]}'


async def test_stored_settings_that_no_longer_validate_are_reported(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    async with daemon(settings) as client:
        for name in ("old", "fine"):
            reply = await _create(client, {"script": [{"text": "hi"}]}, name=name)
            assert reply.status_code == 201, reply.text
    _write_settings(settings, "old", BAD)

    with caplog.at_level(logging.WARNING, logger="agentd"):
        async with daemon(settings) as client:
            warned = [r.getMessage() for r in caplog.records if "'old'" in r.getMessage()]
            assert len(warned) == 1
            assert "settings.max_step" in warned[0]
            assert "settings.on_unknown_outcome" in warned[0]
            assert not [r for r in caplog.records if "'fine'" in r.getMessage()]

            agent = (await client.get("/v1/agents/old")).json()
            assert agent["settings"] == orjson.loads(BAD)  # shown as stored
            errors = {e["field"]: e["message"] for e in agent["settings_errors"]}
            assert set(errors) == {"settings.max_step", "settings.on_unknown_outcome"}
            assert "did you mean 'max_steps'" in errors["settings.max_step"]
            listed = {a["name"]: a["settings_errors"]
                      for a in (await client.get("/v1/agents")).json()["agents"]}
            assert listed["fine"] == [] and listed["old"] == agent["settings_errors"]

            # A run fails naming the fields: not a 500, not a silent default.
            run = await _run(client, "old")
            assert run["status"] == "failed"
            assert run["error"]["code"] == "invalid_settings"
            assert {e["field"] for e in run["error"]["details"]["errors"]} == {
                "settings.max_step", "settings.on_unknown_outcome"}
            assert "settings.max_step" in run["error"]["message"]
            assert (await _run(client, "fine"))["status"] == "completed"

            # Nothing was rewritten: not by the start, the reads or the run.
            assert orjson.loads(_stored(settings, "old")) == orjson.loads(BAD)

            # A PATCH that keeps them is refused; one that fixes them is taken.
            kept = await client.patch("/v1/agents/old", json={"instructions": "x"})
            assert "body.settings.max_step" in _fields(kept)
            fixed = await client.patch("/v1/agents/old", json={"settings": {
                "max_steps": 3, "script": [{"text": "fixed"}]}})
            assert fixed.status_code == 200, fixed.text
            assert fixed.json()["settings_errors"] == []
            resumed = await client.post("/v1/agents/old/resume")
            assert resumed.status_code == 200, resumed.text
            run = await _run(client, "old")
            assert (run["status"], run["output"]) == ("completed", "fixed")


async def test_a_stored_limit_above_a_lowered_cap_is_reported_and_capped(
        settings: Settings, tmp_path: Path) -> None:
    async with daemon(settings) as client:
        reply = await _create(client, {"sandbox": {"limits": {"wall_s": 50}}})
        assert reply.status_code == 201, reply.text
    # The operator lowers the daemon's cap under the agent.
    lowered = settings.model_copy(update={"sandbox": settings.sandbox.model_copy(
        update={"limits": settings.sandbox.limits.model_copy(update={"wall_s": 20.0})})})
    async with daemon(lowered) as client:
        agent = (await client.get("/v1/agents/a")).json()
        [error] = agent["settings_errors"]
        assert error["field"] == "settings.sandbox.limits.wall_s"
        assert "above the daemon's limit of 20" in error["message"]
        # Its runs go on, under the daemon's cap (the operator's choice).
        assert (await _run(client, "a"))["status"] == "completed"


def test_agentd_show_prints_the_settings_errors(tmp_path: Path) -> None:
    from tests.cli.conftest import serve
    from typer.testing import CliRunner

    from agentd.cli import app

    home = tmp_path / "home"

    async def make() -> None:
        rt = await Runtime.open(Settings(home=home, demo_agent=False))
        try:
            await rt.create_agent(name="old", settings={"max_steps": 3})
        finally:
            await rt.close()

    asyncio.run(make())
    _write_settings(Settings(home=home), "old", '{"max_step": 3}')
    with serve(home) as url, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTD_HOME", str(home))
        result = CliRunner().invoke(app, ["--url", url, "show", "old"])
        fine = CliRunner().invoke(app, ["--url", url, "show", "old", "--json"])
    assert result.exit_code == 0, result.output
    assert "settings errors" in result.stdout
    assert "settings.max_step: unknown setting; did you mean 'max_steps'?" in result.stdout
    shown = orjson.loads(fine.stdout)  # (the Agent itself: docs/cli.md, "JSON output")
    assert shown["settings_errors"][0]["field"] == "settings.max_step"
