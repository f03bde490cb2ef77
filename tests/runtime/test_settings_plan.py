"""The runtime reading agents' settings through the typed model: the priority of a run
sent without one, string fallbacks sharing the agent's model settings, and stored
settings this version refuses named when an embedded runtime starts."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.testing import StubLLMServer


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                    retry_base_s=0.01, retry_max_s=0.05)


def _write_settings(settings: Settings, name: str, raw: str) -> None:
    """Store an agent's settings behind the daemon's back, as an older version might."""
    with sqlite3.connect(settings.home / "agentd.db") as conn:
        changed = conn.execute("UPDATE agents SET settings = ? WHERE name = ?",
                               (raw, name)).rowcount
    assert changed == 1


@pytest.fixture
def stubs() -> Iterator[tuple[StubLLMServer, StubLLMServer]]:
    with StubLLMServer() as first, StubLLMServer() as second:
        yield first, second


async def test_a_run_sent_without_a_priority_takes_the_agents(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="a", settings={
            "priority": "batch", "script": [{"text": "one"}, {"text": "two"}]})
        sent = await rt.send("a", "k", "hi")
        assert sent.run.priority == "batch"
        assert (await rt.wait(sent.run.id)).status == "completed"
        chosen = await rt.send("a", "k", "hi", priority="interactive")
        assert chosen.run.priority == "interactive"
        await rt.wait(chosen.run.id)
    finally:
        await rt.close()

    # Stored settings this version refuses: the message is still taken (not a 500),
    # its run is "background" and fails naming the field.
    _write_settings(settings, "a", '{"priority": "batch", "max_step": 3}')
    rt = await Runtime.open(settings)
    try:
        sent = await rt.send("a", "k2", "hi")
        assert sent.run.priority == "background"
        run = await rt.wait(sent.run.id)
        assert (run.status, run.error["code"]) == ("failed", "invalid_settings")
        assert [e["field"] for e in run.error["details"]["errors"]] == [
            "settings.max_step"]
    finally:
        await rt.close()


async def test_string_fallbacks_share_the_agents_model_settings(
        tmp_path: Path, stubs: tuple[StubLLMServer, StubLLMServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    stub_a, stub_b = stubs
    # Another provider's fallback does not take the primary's base_url (it would reach
    # stub_a): it finds its server here, and takes max_tokens from the agent's.
    monkeypatch.setenv("AGENTD_ANTHROPIC_BASE_URL", stub_b.root_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    rt = await Runtime.open(_settings(tmp_path))
    try:
        agent: dict[str, Any] = {"model": "openai-compatible:stub-a", "settings": {
            "base_url": stub_a.base_url, "max_tokens": 321, "max_retries": 0,
            "fallbacks": ["openai-compatible:stub-same",
                          "anthropic:claude-haiku-4-5"]}}
        await rt.create_agent(name="a", **agent)
        stub_a.enqueue(fault="http_400")  # the primary: a lasting failure
        stub_a.enqueue(text="from the same provider")
        sent = await rt.send("a", "k", "hi")
        run = await rt.wait(sent.run.id)
        assert (run.status, run.output) == ("completed", "from the same provider")
        # The same provider's fallback shared all of the agent's settings.
        assert [r["model"] for r in stub_a.requests] == ["stub-a", "stub-same"]
        assert stub_a.requests[-1]["max_tokens"] == 321

        stub_a.enqueue(fault="http_400")
        stub_a.enqueue(fault="http_400")
        stub_b.enqueue(text="from the other provider")
        sent = await rt.send("a", "k", "again")
        run = await rt.wait(sent.run.id)
        assert (run.status, run.output) == ("completed", "from the other provider")
        assert stub_b.requests[-1]["max_tokens"] == 321
    finally:
        await rt.close()


async def test_an_embedded_runtime_names_refused_stored_settings_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path)
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="old", settings={"max_steps": 3})
        await rt.create_agent(name="fine", settings={"max_steps": 3})
    finally:
        await rt.close()
    _write_settings(settings, "old", '{"max_step": 3}')

    with caplog.at_level(logging.WARNING, logger="agentd"):
        rt = await Runtime.open(settings)
    try:
        warned = [r.getMessage() for r in caplog.records if "'old'" in r.getMessage()]
        assert len(warned) == 1 and "settings.max_step" in warned[0]
        assert not [r for r in caplog.records if "'fine'" in r.getMessage()]
        old = await rt.get_agent("old")
        assert old.settings == {"max_step": 3}  # reported, not changed
        assert [e["field"] for e in rt.settings_errors(old)] == ["settings.max_step"]
        assert rt.settings_errors(await rt.get_agent("fine")) == []
    finally:
        await rt.close()
