"""Structured output through the real daemon process over a socket: the OpenAI doors
(``response_format``, ``text.format``) with the official ``openai`` SDK's typed
``parse``, the native API's ``output_schema``, a daemon killed between a repair request
and the answer, and a tenant-scoped token sending every bad schema it can think of:
each refused with a clear 4xx and nothing written."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from pydantic import BaseModel
from tests.conftest import wait_until
from tests.daemons import Daemon, create_agent, send

from agentd.client import APIError, Client, RunFailed
from agentd.testing import StubLLMServer

pytestmark = pytest.mark.e2e

ADMIN, ACME = "admin-structured-token-01", "acme-structured-token-01"
ACCESS = {"token-2": {"tenants": ["acme"]}}


class City(BaseModel):
    name: str
    population: int


CITY = {"type": "object", "properties": {"name": {"type": "string"},
                                         "population": {"type": "integer"}},
        "required": ["name", "population"], "additionalProperties": False}
PARIS = {"name": "Paris", "population": 2100000}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("structured")
    process = Daemon(root / "home", root / "agentd.log", env={
        "AGENTD_DEMO_AGENT": "false", "AGENTD_TOKENS": json.dumps([ADMIN, ACME]),
        "AGENTD_ACCESS": json.dumps(ACCESS)}, args=()).start()
    with process.client(ADMIN) as api:
        # Wrong first (prose), then right: every request is a new session, so each
        # plays the script from its start.
        create_agent(api, "geo", settings={"script": [
            {"text": "Paris has about 2.1 million people."}, {"json": PARIS}]})
        create_agent(api, "liar", settings={"output": {"max_repairs": 1},
                                            "script": [{"text": "no JSON for you"}]})
        create_agent(api, "echo")
        create_agent(api, "acme-bot", settings={"tenant": "acme"})
        create_agent(api, "globex-bot", settings={"tenant": "globex"})
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=ADMIN, timeout=60) as sdk:
        yield sdk


@pytest.fixture
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client(ADMIN) as native:
        yield native


def _sessions(api: httpx.Client, agent: str) -> list[str]:
    got = api.get(f"/v1/agents/{agent}/sessions")
    assert got.status_code == 200, got.text
    return sorted(s["key"] for s in got.json()["sessions"])


def _ended(api: httpx.Client, run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = api.get(f"/v1/runs/{run_id}").json()
    return run if run["status"] in ("completed", "failed") else None


def _kinds(api: httpx.Client, agent: str, key: str) -> list[str]:
    events = api.get(f"/v1/agents/{agent}/sessions/{key}/events").json()["events"]
    return [e["kind"] for e in events]


# -- the OpenAI doors -------------------------------------------------------------------


def test_chat_completions_parse_gets_a_typed_value(client: openai.OpenAI,
                                                   api: httpx.Client) -> None:
    raw = client.chat.completions.with_raw_response.parse(
        model="geo", messages=[{"role": "user", "content": "Tell me about Paris"}],
        response_format=City)
    completion = raw.parse()
    message = completion.choices[0].message
    assert message.parsed == City(**PARIS)
    assert orjson.loads(message.content or "") == PARIS
    # The wrong first answer was repaired, in the log like any step.
    kinds = _kinds(api, "geo", raw.headers["x-agentd-session"])
    assert kinds.count("message.assistant") == 2 and kinds.count("output.invalid") == 1


def test_responses_parse_gets_a_typed_value(client: openai.OpenAI) -> None:
    response = client.responses.parse(model="geo", input="Tell me about Paris",
                                      text_format=City)
    assert response.status == "completed"
    assert response.output_parsed == City(**PARIS)


def test_a_structured_answer_streams_once_it_matched(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="geo", messages=[{"role": "user", "content": "Paris?"}], stream=True,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "City", "schema": CITY, "strict": True}}))
    contents = [c.choices[0].delta.content for c in chunks
                if c.choices and c.choices[0].delta.content]
    # The rejected prose never reached the client: one piece, the matching JSON.
    assert len(contents) == 1 and orjson.loads(contents[0]) == PARIS
    events = list(client.responses.create(
        model="geo", input="Paris?", stream=True,
        text={"format": {"type": "json_schema", "name": "City", "schema": CITY}}))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 1 and orjson.loads(deltas[0]) == PARIS


def test_json_object_mode_answers_a_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "anything"}],
        response_format={"type": "json_object"})
    assert orjson.loads(completion.choices[0].message.content or "") == {}


def test_an_answer_that_never_matches_is_output_invalid(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.parse(
            model="liar", messages=[{"role": "user", "content": "hi"}],
            response_format=City)
    assert caught.value.status_code == 409
    assert caught.value.code == "output_invalid"
    assert "does not match the output schema" in caught.value.message
    response = client.responses.create(
        model="liar", input="hi",
        text={"format": {"type": "json_schema", "name": "City", "schema": CITY}})
    assert response.status == "failed" and response.error is not None
    assert response.error.code == "output_invalid"  # type: ignore[comparison-overlap]


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


#: Schemas a hostile client might send, and what the refusal says.
BAD = [
    ({"type": "strng"}, "not a valid JSON Schema"),
    ({"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]},
     "recursive without end"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
      "$ref": "#/$defs/a"}, "refers back to itself"),
    ({"anyOf": [{"type": "null"}, {"$ref": "#"}]}, "refers back to itself"),
    ({"$ref": "file:///etc/passwd"}, "not a local reference"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 64}
                                       for i in range(1000)}}, "bytes as JSON"),
    (_deep(40), "deeper than 32"),
    ({"type": "string", "pattern": "(x+x+)+y"}, "catastrophic backtracking"),
]


@pytest.mark.parametrize(("schema", "says"), BAD)
def test_bad_schemas_are_refused_on_the_openai_doors(
        client: openai.OpenAI, api: httpx.Client, schema: dict[str, Any], says: str
        ) -> None:
    before = _sessions(api, "echo")
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "x", "schema": schema}})
    assert chat.value.param == "response_format.json_schema.schema"
    assert says in chat.value.message
    with pytest.raises(openai.BadRequestError) as responses:
        client.responses.create(model="echo", input="x", text={"format": {
            "type": "json_schema", "name": "x", "schema": schema}})
    assert responses.value.param == "text.format.schema"
    assert _sessions(api, "echo") == before


def test_response_formats_it_cannot_take_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}],
            response_format={"type": "grammar"})  # type: ignore[typeddict-item]
    assert caught.value.param == "response_format.type"
    with pytest.raises(openai.BadRequestError) as named:
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "no spaces allowed", "schema": CITY}})
    assert named.value.param == "response_format.json_schema.name"


# -- the native API, and a tenant's token -------------------------------------------------


def test_the_native_api_takes_an_output_schema(api: httpx.Client) -> None:
    got = send(api, "geo", "native", "Paris?", output_schema=CITY)
    assert got.status_code == 200, got.text
    run = got.json()
    assert run["status"] == "completed" and orjson.loads(run["output"]) == PARIS


@pytest.mark.parametrize(("schema", "says"), [
    *BAD, ([1], "valid dictionary"), ("x", "valid dictionary")])
def test_a_tenant_token_s_bad_schemas_are_refused_and_nothing_is_written(
        daemon: Daemon, api: httpx.Client, schema: Any, says: str) -> None:
    before = (_sessions(api, "acme-bot"), api.get("/v1/agents/acme-bot").json())
    with daemon.client(ACME) as tenant:
        got = send(tenant, "acme-bot", "k", "hi", output_schema=schema)
        assert got.status_code == 422, got.text
        assert says in got.json()["error"]["message"]
        changed = tenant.patch("/v1/agents/acme-bot", json={
            "settings": {"tenant": "acme", "output": {"json_schema": schema}}})
        assert changed.status_code == 422, changed.text
        assert "json_schema" in changed.json()["error"]["message"]
        # Another tenant's agent is not there at all for this token.
        other = send(tenant, "globex-bot", "k", "hi", output_schema=CITY)
        assert other.status_code == 404
    assert (_sessions(api, "acme-bot"), api.get("/v1/agents/acme-bot").json()) == before


def test_a_tenant_token_s_good_schema_works(daemon: Daemon) -> None:
    with daemon.client(ACME) as tenant:
        got = send(tenant, "acme-bot", "good", "hi", output_schema=CITY)
        assert got.status_code == 200, got.text
        assert orjson.loads(got.json()["output"]) == {"name": "", "population": 0}
        steered = send(tenant, "acme-bot", "good", "hi", mode="steer", output_schema=CITY)
        assert steered.status_code == 422 and "steer" in steered.text


# -- a daemon killed between a repair request and the answer -----------------------------


def test_a_daemon_killed_while_a_repair_is_asked_for_resumes_it(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("structured-kill")
    process = Daemon(root / "home", root / "agentd.log", env={
        "AGENTD_DEMO_AGENT": "false", "AGENTD_TOKENS": json.dumps([ADMIN])},
        args=()).start()
    with StubLLMServer() as llm:
        try:
            with process.client(ADMIN) as api:
                create_agent(api, "slow", model="openai-compatible:stub",
                             settings={"base_url": llm.base_url})
                llm.enqueue(text="Paris, of course.")
                llm.enqueue(fault="stall")  # the repair's answer never comes
                queued = send(api, "slow", "k", "Paris?", output_schema=CITY, wait=False)
                assert queued.status_code == 202, queued.text
                run_id = queued.json()["id"]
                wait_until(lambda: len(llm.requests) == 2, what="the repair asked for")
                assert "output.invalid" in _kinds(api, "slow", "k")
            process.signal_and_wait(signal.SIGKILL)
            llm.enqueue(text=orjson.dumps(PARIS).decode())
            process.start()
            with process.client(ADMIN) as api:
                run = wait_until(lambda: _ended(api, run_id), what="the resumed run's end")
                assert run["status"] == "completed", run
                assert orjson.loads(run["output"]) == PARIS
                kinds = _kinds(api, "slow", "k")
                assert kinds.count("output.invalid") == 1 and "run.resumed" in kinds
                # Two answers recorded; the repair was asked for again (the stalled
                # call recorded nothing), with the repair prompt still in context.
                assert kinds.count("message.assistant") == 2 and len(llm.requests) == 3
                repair = llm.requests[-1]["messages"][-1]
                assert repair["role"] == "user"
                assert "does not match the required JSON Schema" in repair["content"]
                steps = [e["data"] for e in api.get(
                    "/v1/agents/slow/sessions/k/events").json()["events"]
                    if e["kind"] == "message.assistant"]
                assert run["usage"]["output_tokens"] == sum(
                    s["usage"]["output_tokens"] for s in steps)
        finally:
            process.cleanup()


# -- the Python client ----------------------------------------------------------------------


def test_the_python_client_returns_a_typed_value(daemon: Daemon) -> None:
    with Client(daemon.url, token=ADMIN) as client:
        city = client.send_parsed("geo", "py", "Paris?", City)
        assert city == City(**PARIS)
        assert client.send_parsed("geo", "py-dict", "Paris?", CITY) == PARIS
        # send keeps its shape: the run, its output the matching JSON.
        run = client.send("geo", "py-run", "Paris?", output_schema=City)
        assert run["status"] == "completed" and orjson.loads(run["output"]) == PARIS
        with pytest.raises(RunFailed) as failed:
            client.send_parsed("liar", "py", "hi", City)
        assert failed.value.code == "output_invalid"
        assert failed.value.run["error"]["details"]["repairs"] == 1
        with pytest.raises(APIError) as refused:
            client.send_parsed("geo", "py-bad", "hi", {"$ref": "#"})
        assert refused.value.status == 422 and "refers back" in refused.value.message
        with pytest.raises(TypeError):
            client.send("geo", "py", "hi", output_schema=City(**PARIS))  # type: ignore[arg-type]


def test_the_python_client_streams_a_structured_run(daemon: Daemon) -> None:
    with Client(daemon.url, token=ADMIN) as client:
        frames = list(client.stream("geo", "py-stream", "Paris?", output_schema=City))
    kinds = [f.event for f in frames]
    assert "output.invalid" in kinds and kinds[-1] == "done"
    assert orjson.loads(frames[-1].data["data"]["output"]) == PARIS
