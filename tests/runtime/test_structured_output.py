"""Structured output in the run loop: an answer held to a JSON Schema, repaired a
bounded number of times, failed with ``output_invalid``; every repair a step of the
log, resumed after a crash without calling the model again for a step recorded; usage
charged for every answer. On SQLite and PostgreSQL (the ``runtime`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import InvalidInput
from agentd.store import Lease, NewEvent, RunUpdate, open_store
from agentd.store.records import EventRecord, RunRecord
from agentd.testing import StubLLMServer

POINT = {"type": "object", "title": "Point",
         "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
         "required": ["x", "y"], "additionalProperties": False}


async def _run(rt: Runtime, agent: str, text: str = "where?", key: str = "k",
               **origin: Any) -> tuple[RunRecord, list[EventRecord]]:
    sent = await rt.send(agent, key, text, origin=origin or None)
    run = await rt.wait(sent.run.id)
    events = [e for e in await rt.read_events(sent.session.id) if e.run_id == run.id]
    return run, events


def _kinds(events: list[EventRecord]) -> list[str]:
    return [e.kind for e in events]


async def test_a_matching_answer_is_the_run_s_output_as_json(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={
        "output": {"json_schema": POINT},
        "script": [{"text": '```json\n{"y": 2, "x": 1}\n```'}]})
    run, events = await _run(runtime, "a")
    assert run.status == "completed"
    assert orjson.loads(run.output or "") == {"x": 1, "y": 2}
    assert "output.invalid" not in _kinds(events)


async def test_a_wrong_answer_is_sent_back_with_its_first_error(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={
        "output": {"json_schema": POINT},
        "script": [{"text": "The point is (1, 2)."}, {"json": {"x": "1", "y": 2}},
                   {"json": {"x": 1, "y": 2}}]})
    run, events = await _run(runtime, "a")
    assert (run.status, orjson.loads(run.output or "")) == ("completed", {"x": 1, "y": 2})
    assert _kinds(events) == [
        "message.user", "run.queued", "run.started",
        "message.assistant", "output.invalid",
        "message.assistant", "output.invalid",
        "message.assistant", "run.completed"]
    first, second = [e.data for e in events if e.kind == "output.invalid"]
    assert (first["path"], first["repair"], first["max_repairs"]) == ("$", 1, 2)
    assert "not JSON" in first["message"]
    assert (second["path"], second["repair"]) == ("$.x", 2)
    assert second["message"] == "'1' is not of type 'integer'"
    # Every answer is a step, and the run's usage is the sum of its steps'.
    steps = [e.data for e in events if e.kind == "message.assistant"]
    assert run.steps == 3 and [s["step"] for s in steps] == [1, 2, 3]
    for key in ("input_tokens", "output_tokens"):
        assert run.usage[key] == sum(s["usage"][key] for s in steps) > 0


async def test_repairs_run_out_and_the_run_fails_with_output_invalid(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={
        "output": {"json_schema": POINT, "max_repairs": 1},
        "script": [{"json": {"x": 1}}]})
    run, events = await _run(runtime, "a")
    assert run.status == "failed" and run.error is not None
    assert run.error["code"] == "output_invalid"
    assert run.error["details"]["path"] == "$"
    assert "'y' is a required property" in run.error["message"]
    assert "after 1 repair" in run.error["message"]
    invalid = [e.data for e in events if e.kind == "output.invalid"]
    assert len(invalid) == 2 and "prompt" in invalid[0] and "prompt" not in invalid[1]
    assert _kinds(events)[-3:] == ["message.assistant", "output.invalid", "run.failed"]
    steps = [e.data for e in events if e.kind == "message.assistant"]
    assert run.usage["output_tokens"] == sum(s["usage"]["output_tokens"] for s in steps)
    # Zero repairs: the first wrong answer fails the run.
    await runtime.create_agent(name="b", settings={
        "output": {"json_schema": POINT, "max_repairs": 0}, "script": [{"text": "no"}]})
    run, events = await _run(runtime, "b")
    assert run.error is not None and run.error["code"] == "output_invalid"
    assert run.steps == 1 and "after" not in run.error["message"]


async def test_a_message_s_schema_replaces_the_agent_s(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"output": {"json_schema": POINT}})
    names = {"type": "array", "items": {"type": "string"}, "minItems": 2}
    run, _ = await _run(runtime, "a", output_schema=names)
    # The offline model answers a structured request with a value of its schema.
    assert run.status == "completed" and orjson.loads(run.output or "") == ["", ""]
    run, _ = await _run(runtime, "a", key="k2")
    assert orjson.loads(run.output or "") == {"x": 0, "y": 0}
    # Without a schema the same model echoes, as always.
    await runtime.create_agent(name="plain")
    run, _ = await _run(runtime, "plain", text="hello")
    assert run.output == "echo: hello"


async def test_the_schema_is_asked_for_in_the_prompt_of_a_model_without_native_support(
        runtime: Runtime, systems: list[str]) -> None:
    await runtime.create_agent(name="a", instructions="Be brief.",
                               settings={"output": {"json_schema": POINT}})
    await _run(runtime, "a")
    assert systems[-1].startswith("Be brief.\n\nYour final answer")
    assert orjson.dumps(POINT).decode() in systems[-1]


@pytest.mark.parametrize("schema, says", [
    ([1, 2], "object"),
    ({"type": "strin"}, "not a valid JSON Schema"),
    ({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "refers back"),
    ({"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]},
     "recursive without end"),
    ({"$ref": "http://example.com/schema"}, "not a local reference"),
    ({"type": "string", "pattern": "^(a+)+$"}, "catastrophic backtracking"),
])
async def test_bad_schemas_are_refused_and_nothing_is_written(
        runtime: Runtime, schema: Any, says: str) -> None:
    with pytest.raises(InvalidInput, match="json_schema") as settings_error:
        await runtime.create_agent(name="a", settings={"output": {"json_schema": schema}})
    assert says in settings_error.value.message
    assert not [a.name for a in await runtime.list_agents() if a.name == "a"]
    await runtime.create_agent(name="a")
    with pytest.raises(InvalidInput, match=says):
        await runtime.send("a", "k", "hi", origin={"output_schema": schema})
    with pytest.raises(Exception):  # noqa: B017 - no session was made
        await runtime.get_session("a", "k")


async def test_a_steered_message_cannot_bring_a_schema(runtime: Runtime) -> None:
    await runtime.create_agent(name="a")
    with pytest.raises(InvalidInput, match="steer"):
        await runtime.send("a", "k", "hi", mode="steer", origin={"output_schema": POINT})


async def test_a_hostile_model_s_answers_are_errors_to_repair_not_crashes(
        runtime: Runtime) -> None:
    deep = "[" * 5000 + "]" * 5000
    huge = '{"x": 1, "y": 2, "pad": "' + "a" * (2 * 1024 * 1024) + '"}'
    await runtime.create_agent(name="a", settings={
        "output": {"json_schema": POINT, "max_repairs": 3},
        "script": [{"text": deep}, {"text": huge}, {"text": "\x00\ufffd{"},
                   {"json": {"x": 7, "y": 8}}]})
    run, events = await _run(runtime, "a")
    assert (run.status, orjson.loads(run.output or "")) == ("completed", {"x": 7, "y": 8})
    messages = [e.data["message"] for e in events if e.kind == "output.invalid"]
    assert len(messages) == 3
    assert "not JSON" in messages[0] or "deeper" in messages[0]
    assert "over" in messages[1] and "bytes" in messages[1]
    assert all(len(m) <= 300 for m in messages)


# -- a daemon killed between a repair request and the answer ----------------------------


@pytest.mark.no_replay  # (the dead daemon's steps are written by hand)
@pytest.mark.parametrize("answer", [{"json": {"x": 3, "y": 4}}, {"text": "still not"}])
async def test_a_run_stopped_after_a_repair_request_resumes_from_the_log(
        settings: Settings, tmp_path: Path, answer: dict[str, Any]) -> None:
    # A dead daemon's log: the wrong answer and the repair request committed, the
    # model not yet answered. The next daemon asks once more (one model call), and
    # counts the repair already made (max_repairs 1: a second wrong answer fails).
    url = f"sqlite:///{tmp_path / 'agentd.db'}"
    script = [{"text": "not json"}, answer]
    store = await open_store(url)
    try:
        agent = await store.create_agent(
            name="a", model="scripted", instructions="", tools=[],
            settings={"output": {"json_schema": POINT, "max_repairs": 1}, "script": script})
        accepted = await store.accept_message(agent_id=agent.id, key="k", content="go",
                                              start=Lease(owner="dead:1", ttl=3600))
        lease = Lease(owner="dead:1", ttl=3600)
        usage = {"input_tokens": 10, "output_tokens": 3}
        await store.append(accepted.session.id, [
            NewEvent(kind="message.assistant", data={
                "text": "not json", "tool_calls": [], "usage": usage,
                "finish_reason": "stop", "model": "scripted", "step": 1},
                run_id=accepted.run.id),
            NewEvent(kind="output.invalid", data={
                "step": 1, "path": "$", "message": "the answer is not JSON",
                "repair": 1, "max_repairs": 1, "prompt": "[Answer in JSON.]"},
                run_id=accepted.run.id)],
            run_id=accepted.run.id, run=RunUpdate(steps=1), lease=lease)
    finally:
        await store.close()
    settings.database_url = url
    rt = await Runtime.open(settings)
    try:
        run = await asyncio.wait_for(rt.wait(accepted.run.id), 10)
        events = [e for e in await rt.read_events(accepted.session.id)
                  if e.run_id == run.id]
        if "json" in answer:
            assert (run.status, orjson.loads(run.output or "")) == ("completed",
                                                                     {"x": 3, "y": 4})
            assert _kinds(events)[-5:] == ["message.assistant", "output.invalid",
                                          "run.resumed", "message.assistant",
                                          "run.completed"]
        else:
            # The repair made before the crash counts: none is left.
            assert run.status == "failed" and run.error is not None
            assert run.error["code"] == "output_invalid"
            assert "after 1 repair" in run.error["message"]
            assert _kinds(events)[-3:] == ["message.assistant", "output.invalid",
                                          "run.failed"]
            events = events[:-1]
        # Usage: the recorded step's and the new one's, each counted once.
        last = events[-2].data["usage"]
        assert run.usage["input_tokens"] == 10 + last["input_tokens"]
        assert run.usage["output_tokens"] == 3 + last["output_tokens"]
        assert run.steps == 2
    finally:
        await rt.close()


# -- native structured output, over real sockets with the official SDKs ------------------


@pytest.fixture(scope="module")
def stub() -> Iterator[StubLLMServer]:
    with StubLLMServer() as server:
        yield server


@pytest.fixture
def llm(stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubLLMServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-stub")
    monkeypatch.setenv("STUB_ANTHROPIC_KEY", "sk-ant-stub")
    stub.clear()
    yield stub
    stub.clear()


async def test_openai_models_get_the_schema_natively(runtime: Runtime,
                                                      llm: StubLLMServer) -> None:
    await runtime.create_agent(name="a", model="openai:gpt-4.1-mini", instructions="Hi.",
                               settings={"base_url": llm.base_url,
                                         "output": {"json_schema": POINT}})
    llm.enqueue(text='{"x": "one", "y": 2}')  # a model may still be wrong: repaired
    run, events = await _run(runtime, "a")
    # Unqueued, the stub answers a value of the schema it was sent.
    assert (run.status, orjson.loads(run.output or "")) == ("completed", {"x": 0, "y": 0})
    first, second = llm.requests
    for body in (first, second):
        assert body["response_format"] == {"type": "json_schema", "json_schema": {
            "name": "Point", "schema": POINT, "strict": True}}
        # Not asked for in the prompt as well.
        assert body["messages"][0] == {"role": "system", "content": "Hi."}
    assert second["messages"][-1]["role"] == "user"
    assert "at $.x: 'one' is not of type 'integer'" in second["messages"][-1]["content"]
    assert [e.data["path"] for e in events if e.kind == "output.invalid"] == ["$.x"]


async def test_a_loose_schema_goes_to_openai_unstrict_and_to_anthropic_in_the_prompt(
        runtime: Runtime, llm: StubLLMServer) -> None:
    loose = {"type": "object", "properties": {"name": {"type": "string"}},
             "required": ["name"]}
    await runtime.create_agent(name="o", model="openai:gpt-4.1-mini",
                               settings={"base_url": llm.base_url,
                                         "output": {"json_schema": loose}})
    run, _ = await _run(runtime, "o")
    assert orjson.loads(run.output or "") == {"name": ""}
    assert llm.requests[-1]["response_format"]["json_schema"]["strict"] is False
    await runtime.create_agent(
        name="c", model="anthropic:claude-haiku-4-5",
        settings={"base_url": llm.root_url, "api_key_env": "STUB_ANTHROPIC_KEY",
                  "output": {"json_schema": loose}})
    llm.enqueue(text='Here you go: {"name": "Ada"}')
    llm.enqueue(text='{"name": "Ada"}')
    run, _ = await _run(runtime, "c")
    assert orjson.loads(run.output or "") == {"name": "Ada"}
    body = llm.requests[-1]
    assert "output_config" not in body
    assert "must be one JSON value that matches this JSON Schema" in \
        body["system"][0]["text"]


async def test_anthropic_models_get_a_strict_schema_natively(
        runtime: Runtime, llm: StubLLMServer) -> None:
    await runtime.create_agent(
        name="c", model="anthropic:claude-haiku-4-5",
        settings={"base_url": llm.root_url, "api_key_env": "STUB_ANTHROPIC_KEY",
                  "output": {"json_schema": POINT}})
    run, _ = await _run(runtime, "c")
    assert orjson.loads(run.output or "") == {"x": 0, "y": 0}
    body = llm.requests[-1]
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": POINT}}
    assert "system" not in body


async def test_a_compatible_server_without_a_catalog_entry_is_asked_in_the_prompt(
        runtime: Runtime, llm: StubLLMServer) -> None:
    await runtime.create_agent(name="v", model="openai-compatible:local",
                               settings={"base_url": llm.base_url,
                                         "output": {"json_schema": POINT}})
    llm.enqueue(text='{"x": 1, "y": 2}')
    run, _ = await _run(runtime, "v")
    assert orjson.loads(run.output or "") == {"x": 1, "y": 2}
    body = llm.requests[-1]
    assert "response_format" not in body
    assert orjson.dumps(POINT).decode() in body["messages"][0]["content"]
