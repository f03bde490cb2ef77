"""The OpenAI-compatible door with the official ``openai`` SDK, unmodified, against the
real daemon process over a socket: models, Chat Completions and Responses (streamed
and not), how requests map to sessions, tools running on the server, and every refusal
in OpenAI's error shape with nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from tests.conftest import wait_until
from tests.daemons import TOOL_MESSAGE, Daemon, create_agent

from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("openai")
    process = Daemon(root / "home", root / "agentd.log",
                     env={"AGENTD_DEMO_AGENT": "false"}, args=()).start()
    with process.client() as api:
        create_agent(api, "echo", tools=["calculator"])
        create_agent(api, "poet", settings={"script": [
            {"text": "roses are red, violets are blue", "delay_ms": 200}]})
        create_agent(api, "broken", settings={"script": [{"error": "the model broke"}]})
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=read_token(daemon.home),
                       timeout=60) as sdk:
        yield sdk


@pytest.fixture
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as native:
        yield native


def sessions(api: httpx.Client, agent: str) -> dict[str, Any]:
    got = api.get(f"/v1/agents/{agent}/sessions")
    assert got.status_code == 200, got.text
    return {s["key"]: s for s in got.json()["sessions"]}


def user_messages(api: httpx.Client, agent: str, key: str) -> list[str]:
    events = api.get(f"/v1/agents/{agent}/sessions/{key}/events").json()["events"]
    return [e["data"]["content"] for e in events if e["kind"] == "message.user"]


def runs(api: httpx.Client, agent: str) -> list[dict[str, Any]]:
    got = api.get("/v1/runs", params={"agent": agent, "limit": 200})
    assert got.status_code == 200, got.text
    out: list[dict[str, Any]] = got.json()["runs"]
    return out


def test_models_are_the_agents(client: openai.OpenAI) -> None:
    names = {model.id for model in client.models.list()}
    assert {"echo", "poet", "broken"} <= names
    assert client.models.retrieve("poet").owned_by == "agentd"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nobody")
    assert caught.value.code == "model_not_found"


def test_chat_completion_through_the_agent(client: openai.OpenAI, api: httpx.Client
                                           ) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hello there"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)
    key = raw.headers["x-agentd-session"]
    assert key.startswith("openai:")
    # The same conversation, in agentd's durable log.
    assert user_messages(api, "echo", key) == ["hello there"]
    run = api.get(f"/v1/runs/{raw.headers['x-agentd-run']}").json()
    assert run["status"] == "completed" and run["output"] == "echo: hello there"


def test_the_agents_tools_run_on_the_server(client: openai.OpenAI, api: httpx.Client
                                            ) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": TOOL_MESSAGE}])
    assert "42" in (raw.parse().choices[0].message.content or "")
    key = raw.headers["x-agentd-session"]
    kinds = [e["kind"] for e in api.get(
        f"/v1/agents/echo/sessions/{key}/events").json()["events"]]
    assert "tool.started" in kinds and "tool.finished" in kinds


def test_streamed_chat(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="poet", messages=[{"role": "user", "content": "a poem"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "roses are red, violets are blue"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_a_session_header_continues_a_session(client: openai.OpenAI, api: httpx.Client
                                              ) -> None:
    headers = {"X-Agentd-Session": "support/ticket-1"}
    first = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "one"}], extra_headers=headers)
    reply = first.choices[0].message.content
    client.chat.completions.create(
        model="echo", extra_headers=headers,
        messages=[{"role": "user", "content": "one"},
                  {"role": "assistant", "content": reply},
                  {"role": "user", "content": "two"}])
    # Only the new turn went to the session, which held the rest already.
    assert user_messages(api, "echo", "support/ticket-1") == ["one", "two"]


def test_the_user_field_names_a_session_and_a_new_one_gets_the_transcript(
        client: openai.OpenAI, api: httpx.Client) -> None:
    client.chat.completions.create(
        model="echo", user="ada", messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": "now this"}])
    (first,) = user_messages(api, "echo", "openai:user:ada")
    assert first.endswith("now this")
    assert "[user]: earlier question" in first and "[assistant]: earlier answer" in first
    assert "[system]: be brief" in first
    client.chat.completions.create(model="echo", user="ada", messages=[
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "and then"}])
    assert user_messages(api, "echo", "openai:user:ada")[1] == "and then"


def test_an_idempotency_key_gets_the_same_run(client: openai.OpenAI, api: httpx.Client
                                              ) -> None:
    headers = {"Idempotency-Key": "req-77", "X-Agentd-Session": "idem"}
    one = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "once"}], extra_headers=headers)
    two = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "once"}], extra_headers=headers)
    assert one.id == two.id
    assert user_messages(api, "echo", "idem") == ["once"]


def test_responses_continue_with_previous_response_id(client: openai.OpenAI,
                                                       api: httpx.Client) -> None:
    first = client.responses.create(model="echo", input="first words")
    assert first.status == "completed" and first.output_text == "echo: first words"
    assert first.usage is not None and first.usage.total_tokens > 0
    second = client.responses.create(model="echo", input="second words",
                                     previous_response_id=first.id)
    assert second.output_text == "echo: second words"
    key = api.get(f"/v1/runs/{second.id.removeprefix('resp_')}").json()["session"]
    assert user_messages(api, "echo", key) == ["first words", "second words"]
    again = client.responses.retrieve(second.id)
    assert again.output_text == "echo: second words"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="poet", input="x", previous_response_id=first.id)
    assert caught.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_run_nope")


def test_streamed_response(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="poet", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "a poem"}]}],
        stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "roses are red, violets are blue"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == deltas
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))


def test_a_failed_run_is_an_error_the_sdk_does_not_retry(client: openai.OpenAI,
                                                         api: httpx.Client) -> None:
    before = len(runs(api, "broken"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 409
    assert "the model broke" in caught.value.message
    # One run: the SDK (which retries 409 and 5xx by itself) was told not to.
    assert len(runs(api, "broken")) == before + 1
    with pytest.raises(openai.APIError) as streamed:
        list(client.chat.completions.create(
            model="broken", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "the model broke" in str(streamed.value)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     "messages[0].content[1]"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
      "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
])
def test_requests_it_cannot_take_are_refused_naming_the_parameter(
        client: openai.OpenAI, api: httpx.Client, kwargs: dict[str, Any], param: str
        ) -> None:
    before = sessions(api, "echo")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo", **kwargs)
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert sessions(api, "echo") == before


def test_wrong_key_unknown_model_bad_json_too_large(daemon: Daemon, api: httpx.Client
                                                    ) -> None:
    before = sessions(api, "echo")
    with (openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="wrong", max_retries=0) as bad,
          pytest.raises(openai.AuthenticationError) as caught):
        bad.models.list()
    assert caught.value.code == "invalid_api_key"
    with openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=read_token(daemon.home),
                       max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.chat.completions.create(model="nobody", messages=[
                {"role": "user", "content": "x"}])
        assert missing.value.code == "model_not_found" and missing.value.param == "model"
    headers = daemon.auth()
    for body in (b"{not json", b"[1, 2]", b'{"model": "echo"}', b""):
        got = httpx.post(f"{daemon.url}/v1/chat/completions", content=body,
                         headers={**headers, "Content-Type": "application/json"})
        assert got.status_code == 400, (body, got.text)
        error = got.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
    big = httpx.post(f"{daemon.url}/v1/chat/completions", headers=headers, json={
        "model": "echo", "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
    assert sessions(api, "echo") == before
    # The native API keeps its own shape.
    native = httpx.get(f"{daemon.url}/v1/agents/nobody", headers=headers)
    assert native.status_code == 404 and "retryable" in native.json()["error"]


def test_the_parts_of_openais_api_agentd_does_not_serve_answer_in_openais_shape(
        daemon: Daemon, client: openai.OpenAI, api: httpx.Client) -> None:
    """An SDK pointed at agentd that calls what agentd does not serve gets OpenAI's 404
    (``NotFoundError``), not agentd's shape; nothing is written."""
    before = sessions(api, "echo")
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="echo", input="hello")
    assert caught.value.status_code == 404 and caught.value.type == "invalid_request_error"
    assert caught.value.code == "not_found"
    with pytest.raises(openai.NotFoundError):
        client.files.list()
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="echo", prompt="a cat")
    headers = daemon.auth()
    for path in ("/v1/embeddings", "/v1/completions", "/v1/audio/speech",
                 "/v1/vector_stores/vs_1/files"):
        got = httpx.post(f"{daemon.url}{path}", headers=headers, json={"model": "echo"})
        assert got.status_code == 404, (path, got.text)
        assert set(got.json()["error"]) == {"message", "type", "param", "code"}, got.text
    # Without a key: OpenAI's 401, which the SDK raises as AuthenticationError.
    with (openai.OpenAI(base_url=f"{daemon.url}/v1", api_key="wrong", max_retries=0) as bad,
          pytest.raises(openai.AuthenticationError)):
        bad.embeddings.create(model="echo", input="hello")
    # agentd's own unknown paths keep agentd's shape.
    native = httpx.get(f"{daemon.url}/v1/nothing-here", headers=headers)
    assert native.status_code == 404 and "retryable" in native.json()["error"]
    assert sessions(api, "echo") == before


def test_a_session_header_to_a_bad_key_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Agentd-Session": "a/../b"})


def test_cancel_a_response(client: openai.OpenAI, api: httpx.Client) -> None:
    create_agent(api, "slow", settings={"script": [{"text": "late", "delay_ms": 30_000}]})
    stream = client.responses.create(model="slow", input="wait", stream=True)
    first = next(iter(stream))
    assert first.type == "response.created"
    cancelled = client.responses.cancel(first.response.id)  # type: ignore[union-attr]
    assert cancelled.status in ("cancelled", "incomplete")
    stream.close()
    assert client.responses.retrieve(first.response.id).status == "cancelled"  # type: ignore[union-attr]


def test_a_run_waiting_for_approval(client: openai.OpenAI, api: httpx.Client) -> None:
    create_agent(api, "careful", tools=["calculator"], settings={
        "policy": {"rules": [{"tool": "calculator", "action": "ask"}]},
        "script": [{"tool_calls": [{"name": "calculator",
                                    "arguments": {"expression": "6*7"}}]},
                   {"text": "it is 42"}]})
    with pytest.raises(openai.ConflictError) as caught:
        client.chat.completions.create(
            model="careful", messages=[{"role": "user", "content": "compute"}],
            extra_headers={"X-Agentd-Session": "ask"})
    assert caught.value.code == "approval_required"
    [pending] = api.get("/v1/approvals").json()["approvals"]
    assert pending["agent"] == "careful"
    decided = api.post(f"/v1/approvals/{pending['approval_id']}", json={"action": "approve"})
    assert decided.status_code == 200, decided.text
    run_id = caught.value.response.headers["x-agentd-run"]
    wait_until(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "completed",
               what="the approved run to complete")
    assert api.get(f"/v1/runs/{run_id}").json()["output"] == "it is 42"


def test_a_stream_dropped_midway_cancels_nothing(daemon: Daemon, api: httpx.Client
                                                 ) -> None:
    create_agent(api, "teller", settings={"script": [
        {"text": "a long story told slowly word by word", "delay_ms": 1500}]})
    with httpx.stream("POST", f"{daemon.url}/v1/chat/completions", headers=daemon.auth(),
                      timeout=60, json={"model": "teller", "stream": True, "messages": [
                          {"role": "user", "content": "tell"}]}) as response:
        assert response.status_code == 200
        run_id = response.headers["x-agentd-run"]
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    # The client left after its first chunk; the run goes on to the end.
    wait_until(lambda: api.get(f"/v1/runs/{run_id}").json()["status"] == "completed",
               what="the run to complete without its client")
    assert api.get(f"/v1/runs/{run_id}").json()["output"] == (
        "a long story told slowly word by word")
