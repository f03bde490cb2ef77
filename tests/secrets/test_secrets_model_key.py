"""A named model endpoint whose key is a secret (`[models.NAME] api_key_secret`): each
agent's calls carry its own secret's value (its own, else its tenant's), sent by the
official SDK to a stub server speaking the real wire format; an agent with none fails
its calls saying which secret; the use is audited. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import settings_in

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.testing import StubLLMServer


@pytest.fixture(scope="module")
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, stub: StubLLMServer) -> Settings:
    made = Settings(models={"corp": {"provider": "openai-compatible",
                                     "base_url": stub.base_url,
                                     "api_key_secret": "CORP_KEY"}}, tenants={"acme": {}})
    return settings_in(tmp_path).model_copy(update={"models": made.models,
                                                    "tenants": made.tenants})


async def _ask(rt: Runtime, agent: str) -> object:
    sent = await rt.send(agent, "k", "hello")
    return await asyncio.wait_for(rt.wait(sent.run.id), 60)


async def test_each_agent_calls_with_its_own_secret_key(runtime: Runtime,
                                                        stub: StubLLMServer) -> None:
    acme_key, own_key = "sk-acme-" + secrets.token_hex(8), "sk-own-" + secrets.token_hex(8)
    await runtime.secrets.set(name="CORP_KEY", value=acme_key, tenant="acme", agent=None,
                              actor="t", role="admin")
    await runtime.create_agent(name="acme.a", model="corp:m1", settings={"tenant": "acme"})
    await runtime.create_agent(name="b", model="corp:m1")
    await runtime.create_agent(name="c", model="corp:m1")
    await runtime.secrets.set(name="CORP_KEY", value=own_key, tenant="default", agent="b",
                              actor="t", role="admin")
    stub.clear()
    for agent in ("acme.a", "b"):
        run = await _ask(runtime, agent)
        assert run.status == "completed", run  # type: ignore[attr-defined]
    sent = [h["authorization"] for h in stub.headers]
    assert sent == [f"Bearer {acme_key}", f"Bearer {own_key}"]
    # Without a key of its own or its tenant's: its calls fail, saying which secret.
    failed = await _ask(runtime, "c")
    assert failed.status == "failed"  # type: ignore[attr-defined]
    assert "CORP_KEY" in str(failed.error)  # type: ignore[attr-defined]
    assert len(stub.headers) == 2  # (nothing was sent for c)
    await runtime.identity.audit.flush()
    uses = await runtime.identity.audit.page(action="secret.use")
    assert [(u.resource, u.details["use"]) for u in uses] == [
        ("secret:acme/CORP_KEY", "model:corp key"),
        ("secret:default/b/CORP_KEY", "model:corp key")]
    # A rotated key is used from the next run on.
    rotated = "sk-rotated-" + secrets.token_hex(8)
    await runtime.secrets.set(name="CORP_KEY", value=rotated, tenant="acme", agent=None,
                              actor="t", role="admin")
    await _ask(runtime, "acme.a")
    assert stub.headers[-1]["authorization"] == f"Bearer {rotated}"
