"""What building a run works out once per agent revision (``ExecutorFactory._shape``:
its executor class, keyed endpoints, workspace, whether it has tools or command
checks) follows every change that could alter it: the agent's tools and settings
changed, a reload that keys its model's endpoint with a secret; and what it does not
keep (the daemon's live settings) is read again at each run."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import settings_in

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.store.records import RunRecord
from agentd.testing import StubLLMServer

CALC = '/tool calculator {"expression": "6*7"}'


async def _ask(rt: Runtime, agent: str, text: str = "hello") -> RunRecord:
    sent = await rt.send(agent, "k", text)
    return await asyncio.wait_for(rt.wait(sent.run.id), 60)


async def test_an_agents_tools_and_settings_changed_reach_its_next_run(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="a")
    run = await _ask(runtime, "a", CALC)
    assert "calculator returned: 42" not in (run.output or "")
    await runtime.update_agent("a", {"tools": ["calculator"]})
    run = await _ask(runtime, "a", CALC)
    assert (run.status, run.output) == ("completed", "calculator returned: 42")
    await runtime.update_agent("a", {"tools": []})
    run = await _ask(runtime, "a", CALC)
    assert "calculator returned: 42" not in (run.output or "")
    # Settings changed alone (a new plan for the same tools): its runs follow them.
    await runtime.update_agent("a", {"tools": ["calculator"], "settings": {"max_steps": 1}})
    run = await _ask(runtime, "a", CALC)
    assert run.status == "failed" and run.steps == 1, run


async def test_a_reloaded_max_steps_reaches_the_next_run(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    new = settings.model_copy(update={"max_steps": 2})
    rt = await Runtime.open(settings, reload_from=lambda: new)
    try:
        await rt.create_agent(name="a", tools=["calculator"], settings={"script": [
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]}]})
        await rt.reload()
        run = await _ask(rt, "a")
        assert run.status == "failed" and run.steps == 2, run
    finally:
        await rt.close()


@pytest.fixture(scope="module")
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


async def test_a_reload_keying_an_endpoint_with_a_secret_reaches_the_next_run(
        tmp_path: Path, stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, keyed = "sk-plain-" + secrets.token_hex(8), "sk-keyed-" + secrets.token_hex(8)
    monkeypatch.setenv("CORP_PLAIN_KEY", plain)
    base = settings_in(tmp_path)
    settings = base.model_copy(update={"models": Settings(models={"corp": {
        "provider": "openai-compatible", "base_url": stub.base_url,
        "api_key_env": "CORP_PLAIN_KEY"}}).models})
    new = base.model_copy(update={"models": Settings(models={"corp": {
        "provider": "openai-compatible", "base_url": stub.base_url,
        "api_key_secret": "CORP_KEY"}}).models})
    rt = await Runtime.open(settings, reload_from=lambda: new)
    try:
        await rt.create_agent(name="a", model="corp:m1")
        await rt.secrets.set(name="CORP_KEY", value=keyed, tenant="default", agent="a",
                             actor="t", role="admin")
        stub.clear()
        assert (await _ask(rt, "a")).status == "completed"
        await rt.reload()
        assert (await _ask(rt, "a")).status == "completed"
        assert [h["authorization"] for h in stub.headers] == [
            f"Bearer {plain}", f"Bearer {keyed}"]
    finally:
        await rt.close()
