"""The OpenAI Agents SDK adapter (the optional ``openai-agents`` extra): an SDK agent
whose model calls go to the stub LLM server runs as an agentd agent, and the tool it
calls, with its arguments and output, lands in agentd's log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.testing.stub_llm import StubLLMServer

pytest.importorskip("agents", reason="the openai-agents extra is not installed")

MODEL = "adapter:tests.adapters.sample_openai_agents:Support"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StubLLMServer]:
    with StubLLMServer() as server:
        monkeypatch.setenv("AGENTD_TEST_STUB_URL", server.base_url)
        yield server


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", demo_agent=False, shutdown_grace_s=2.0,
                    adapters={"allow": ["tests.adapters.sample_openai_agents:*"]})


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as c:
        yield c


async def test_an_sdk_agents_tool_calls_land_in_the_log(
        client: httpx.AsyncClient, stub: StubLLMServer) -> None:
    made = await client.post("/v1/agents", json={"name": "sdk", "model": MODEL})
    assert made.status_code == 201, made.text
    stub.enqueue(tool_calls=[{"name": "get_weather", "arguments": {"city": "Lyon"}}],
                 usage={"input_tokens": 20, "output_tokens": 5})
    stub.enqueue(text="It is sunny in Lyon.", usage={"input_tokens": 30, "output_tokens": 6})
    sent = await client.post("/v1/agents/sdk/sessions/k/messages",
                             json={"content": "weather in Lyon?", "wait": True})
    assert sent.status_code == 200, sent.text
    run = sent.json()
    assert run["status"] == "completed", run.get("error")
    assert run["output"] == "It is sunny in Lyon."
    assert (run["usage"]["input_tokens"], run["usage"]["output_tokens"]) == (50, 11)
    events = (await client.get("/v1/agents/sdk/sessions/k/events")).json()["events"]
    started = next(e["data"] for e in events if e["kind"] == "tool.started")
    finished = next(e["data"] for e in events if e["kind"] == "tool.finished")
    assert (started["name"], started["arguments"]) == ("get_weather", {"city": "Lyon"})
    assert (finished["call_id"], finished["output"]) == (started["call_id"], "sunny in Lyon")
    # The SDK sent the tool's output back to the model.
    assert "sunny in Lyon" in str(stub.requests[1]["messages"])

    # The next turn's input holds the earlier turn from agentd's log.
    stub.enqueue(text="You asked about Lyon.")
    again = (await client.post("/v1/agents/sdk/sessions/k/messages",
                               json={"content": "what did I ask?", "wait": True})).json()
    assert again["output"] == "You asked about Lyon."
    sent_messages = str(stub.requests[2]["messages"])
    assert "weather in Lyon?" in sent_messages and "It is sunny in Lyon." in sent_messages
    # And the one after: the session's turns as they were, in order (agentd hands the
    # SDK the turns it converted once; the SDK changes nothing of them).
    stub.enqueue(text="Still Lyon.")
    third = (await client.post("/v1/agents/sdk/sessions/k/messages",
                               json={"content": "and now?", "wait": True})).json()
    assert third["output"] == "Still Lyon."
    assert [(m["role"], m["content"]) for m in stub.requests[3]["messages"]
            if m["role"] != "system"] == [
        ("user", "weather in Lyon?"), ("assistant", "It is sunny in Lyon."),
        ("user", "what did I ask?"), ("assistant", "You asked about Lyon."),
        ("user", "and now?")]
