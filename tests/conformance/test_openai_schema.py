"""Every answer and stream event of agentd's OpenAI doors, validated against OpenAI's
own OpenAPI document (``tests/conformance/openai_openapi``, a pinned copy): chat
completions and their chunks, responses and their stream events, the model list and
errors.

The document is OpenAPI 3.1 (JSON Schema 2020-12), but 21 of its schemas still say
``nullable: true`` in 3.0's way, which 2020-12 ignores: such a schema is read as
allowing null too (``{"type": [T, "null"]}``, and null among its ``enum``), as OpenAI
means it (a chunk's ``finish_reason`` is null until the last). Nothing else is
changed.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import Settings

SPEC = Path(__file__).resolve().parent / "openai_openapi" / "openai.slice.json"
ROOT = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False) is True:
            kind = node.get("type")
            if isinstance(kind, str):
                node["type"] = [kind, "null"]
            elif kind is None:
                node = {"anyOf": [node, {"type": "null"}]}
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@cache
def _validator(schema: str) -> Draft202012Validator:
    document = _nullable(json.loads(SPEC.read_text()))
    registry: Registry = Registry().with_resource(
        ROOT, Resource.from_contents(document, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{ROOT}#/components/schemas/{schema}"},
                                registry=registry)


def conforms(schema: str, value: Any) -> None:
    errors = sorted(_validator(schema).iter_errors(value), key=lambda e: list(e.path))
    assert not errors, f"{schema}: " + "; ".join(
        f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message[:200]}" for e in errors[:5])


def _events(body: str) -> list[Any]:
    return [json.loads(line[5:]) for line in body.splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> Any:
    async with asgi_client(settings, runtime) as client:
        got = await client.post("/v1/agents", json={"name": "bot"})
        assert got.status_code == 201, got.text
        yield client


def test_the_validator_refuses_what_the_schema_does() -> None:
    """The check can fail: a chunk without its id, a null content where a string must
    be, a deprecated field of the wrong type."""
    good = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    conforms("CreateChatCompletionStreamResponse", good)
    for bad in ({k: v for k, v in good.items() if k != "id"},
                {**good, "system_fingerprint": None},
                {**good, "choices": [{"index": "0", "delta": {}, "finish_reason": None}]}):
        with pytest.raises(AssertionError):
            conforms("CreateChatCompletionStreamResponse", bad)


async def test_chat_completions_and_their_chunks(client: httpx.AsyncClient) -> None:
    ask = {"model": "bot", "messages": [{"role": "user", "content": "hello"}]}
    answer = await client.post("/v1/chat/completions", json=ask)
    assert answer.status_code == 200, answer.text
    conforms("CreateChatCompletionResponse", answer.json())
    streamed = await client.post("/v1/chat/completions", json={
        **ask, "stream": True, "stream_options": {"include_usage": True}})
    chunks = _events(streamed.text)
    assert len(chunks) >= 3 and chunks[-1]["usage"]["total_tokens"] > 0
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)


async def test_responses_and_their_stream_events(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/responses", json={"model": "bot", "input": "hello"})
    assert answer.status_code == 200, answer.text
    response = answer.json()
    conforms("Response", response)
    assert response["usage"]["input_tokens_details"] == {"cached_tokens": 0,
                                                         "cache_write_tokens": 0}
    again = await client.get(f"/v1/responses/{response['id']}")
    conforms("Response", again.json())
    streamed = await client.post("/v1/responses", json={
        "model": "bot", "input": "more", "stream": True,
        "previous_response_id": response["id"]})
    events = _events(streamed.text)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    for event in events:
        conforms("ResponseStreamEvent", event)


async def test_the_model_list_and_errors(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    conforms("ListModelsResponse", models.json())
    for got in (await client.post("/v1/chat/completions", json={"model": "nobody",
                                                                 "messages": []}),
                await client.post("/v1/responses", json={"model": "bot", "input": 5}),
                await client.get("/v1/responses/resp_nothing")):
        assert 400 <= got.status_code < 500, got.text
        conforms("ErrorResponse", got.json())


_TOOL = {"name": "get_weather", "description": "The weather in a city.",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
_ASK = '/tool get_weather {"city": "Paris"}'


async def test_client_tool_calls_and_their_chunks(client: httpx.AsyncClient) -> None:
    ask = {"model": "bot", "tools": [{"type": "function", "function": _TOOL}],
           "messages": [{"role": "user", "content": _ASK}]}
    answer = await client.post("/v1/chat/completions", json=ask)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    conforms("CreateChatCompletionResponse", body)
    streamed = await client.post("/v1/chat/completions", json={**ask, "stream": True})
    chunks = _events(streamed.text)
    assert any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
    result = await client.post("/v1/chat/completions", json={**ask, "messages": [
        *ask["messages"], body["choices"][0]["message"],
        {"role": "tool", "tool_call_id": body["choices"][0]["message"]["tool_calls"][0]["id"],
         "content": "sunny"}]})
    assert result.json()["choices"][0]["message"]["content"] == "get_weather returned: sunny"
    conforms("CreateChatCompletionResponse", result.json())


async def test_function_calls_and_their_stream_events(client: httpx.AsyncClient) -> None:
    ask = {"model": "bot", "tools": [{"type": "function", **_TOOL}], "input": _ASK}
    answer = await client.post("/v1/responses", json=ask)
    assert answer.status_code == 200, answer.text
    response = answer.json()
    assert [item["type"] for item in response["output"]] == ["function_call"]
    conforms("Response", response)
    streamed = await client.post("/v1/responses", json={**ask, "stream": True})
    events = _events(streamed.text)
    assert any(e["type"] == "response.function_call_arguments.done" for e in events)
    for event in events:
        conforms("ResponseStreamEvent", event)
    result = await client.post("/v1/responses", json={
        **ask, "previous_response_id": response["id"], "input": [
            {"type": "function_call_output", "call_id": response["output"][0]["call_id"],
             "output": "sunny"}]})
    conforms("Response", result.json())
    assert result.json()["output"][0]["content"][0]["text"] == "get_weather returned: sunny"
