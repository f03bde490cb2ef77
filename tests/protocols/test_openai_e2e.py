"""The OpenAI-compatible door with the official ``openai`` SDK, unmodified, against the
real daemon process over a socket: models, Chat Completions and Responses (streamed
and not), how requests map to sessions, tools running on the server, and every refusal
in OpenAI's error shape with nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from tests.conftest import wait_until
from tests.daemons import TOOL_MESSAGE, Daemon, create_agent

from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e

#: The "guide" agent's own instructions (the operator's).
GUIDE = "You are the operator's guide."


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
        create_agent(api, "guide", instructions=GUIDE)
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
    # The system message is the caller's instructions for the run, not a turn.
    assert "be brief" not in first
    client.chat.completions.create(model="echo", user="ada", messages=[
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "and then"}])
    assert user_messages(api, "echo", "openai:user:ada")[1] == "and then"


def _stateless(client: openai.OpenAI, messages: list[dict[str, Any]], *,
               stream: bool = False) -> tuple[str, str]:
    """One turn of a client that names no session: (the reply, the session it went to);
    the reply is added to ``messages``, as such a client keeps its conversation."""
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=messages, stream=stream)
    if stream:
        reply = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        reply = raw.parse().choices[0].message.content or ""
    messages.append({"role": "assistant", "content": reply})
    return reply, raw.headers["x-agentd-session"]


def test_a_stateless_client_goes_on_in_one_session(client: openai.OpenAI,
                                                   api: httpx.Client) -> None:
    # As the SDK's users send it: the whole conversation each turn, no session named.
    # Messages of 60 KB: by the third turn the conversation is past max_message_bytes
    # (256 KB), so it could not go to a new session as a transcript any more.
    messages: list[dict[str, Any]] = []
    keys = set()
    for turn in range(3):
        text = f"turn {turn} " + "x" * 60_000
        messages.append({"role": "user", "content": text})
        reply, key = _stateless(client, messages, stream=turn == 1)
        assert reply == f"echo: {text}"
        keys.add(key)
    (key,) = keys
    # Each turn sent the session only its new message (the session had the rest).
    assert user_messages(api, "echo", key) == [
        m["content"] for m in messages if m["role"] == "user"]
    # The Responses API without previous_response_id, the whole input each time, too.
    items: list[dict[str, Any]] = [{"role": "user", "content": "responses, first"}]
    first = client.responses.create(model="echo", input=items)  # type: ignore[arg-type]
    items += [{"role": "assistant", "content": first.output_text},
              {"role": "user", "content": "responses, second"}]
    second = client.responses.create(model="echo", input=items)  # type: ignore[arg-type]
    assert second.output_text == "echo: responses, second"
    session = api.get(f"/v1/runs/{first.id.removeprefix('resp_')}").json()["session"]
    assert api.get(f"/v1/runs/{second.id.removeprefix('resp_')}").json()[
        "session"] == session
    assert user_messages(api, "echo", session) == ["responses, first", "responses, second"]


def test_a_stateless_conversation_goes_on_only_in_its_own_session(
        daemon: Daemon, client: openai.OpenAI, api: httpx.Client) -> None:
    def start(text: str) -> tuple[list[dict[str, Any]], str]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
        return messages, _stateless(client, messages)[1]

    def fresh(key: str, earlier: str) -> None:
        """``key`` is a new session that got the conversation as a transcript."""
        first = user_messages(api, "echo", key)[0]
        assert f"[user]: {earlier}" in first, first

    # Two people behind one token who said the same and got the same answer: neither
    # goes on in the other's session (each holds what its own runs did).
    same, one = start("the same start")
    _, two = start("the same start")
    assert one != two
    same.append({"role": "user", "content": "mine, not theirs"})
    _, went = _stateless(client, same)
    assert went not in (one, two)
    fresh(went, "the same start")
    assert user_messages(api, "echo", one) == user_messages(api, "echo", two) == [
        "the same start"]
    # The same conversation sent again from an earlier point (a regenerated answer):
    # the session went on since, so a new one.
    messages, key = start("regenerate me")
    messages.append({"role": "user", "content": "first try"})
    assert _stateless(client, messages)[1] == key
    again = [*messages[:2], {"role": "user", "content": "second try"}]
    _, other_key = _stateless(client, again)
    assert other_key != key
    assert user_messages(api, "echo", key) == ["regenerate me", "first try"]
    # A session deleted meanwhile: a new one, with the transcript.
    messages, key = start("to be deleted")
    assert api.delete(f"/v1/agents/echo/sessions/{key}").status_code == 204
    messages.append({"role": "user", "content": "after the delete"})
    reply, went = _stateless(client, messages)
    assert reply.endswith("after the delete") and went != key
    fresh(went, "to be deleted")
    # A session that went on without this client (a message through its header).
    messages, key = start("moved on")
    client.chat.completions.create(model="echo", extra_headers={"X-Agentd-Session": key},
                                   messages=[{"role": "user", "content": "someone else"}])
    messages.append({"role": "user", "content": "mine"})
    _, went = _stateless(client, messages)
    assert went != key
    fresh(went, "moved on")
    # Another token's request with the same conversation: never this one's session.
    messages, key = start("my token's")
    made = api.post("/v1/tokens", json={"name": "stateless-other", "role": "member",
                                        "agents": ["echo"]})
    assert made.status_code == 201, made.text
    with openai.OpenAI(base_url=f"{daemon.url}/v1", api_key=made.json()["token"],
                       timeout=60) as theirs:
        messages.append({"role": "user", "content": "theirs"})
        _, went = _stateless(theirs, messages)
    assert went != key
    assert user_messages(api, "echo", key) == ["my token's"]


def _caller_block(system: str) -> str:
    """The caller's instructions in a system prompt the scripted model echoed."""
    assert system.startswith("system: "), system
    _, found, block = system.partition("<caller_instructions>")
    return block.partition("</caller_instructions>")[0] if found else ""


def test_a_system_prompt_is_the_callers_instructions_for_that_run(
        client: openai.OpenAI, api: httpx.Client) -> None:
    headers = {"X-Agentd-Session": "framework/1"}
    answer = client.chat.completions.create(model="guide", extra_headers=headers, messages=[
        {"role": "system", "content": "Answer in French."},
        {"role": "developer", "content": "Never name prices."},
        {"role": "user", "content": "/system"}])
    system = answer.choices[0].message.content or ""
    # The agent's own instructions first, then the caller's, said to be theirs.
    assert system.index(GUIDE) < system.index("<caller_instructions>")
    block = _caller_block(system)
    assert "Answer in French.\n\nNever name prices." in block
    # Kept in the run's message (a resumed run has them), not in the conversation.
    events = api.get("/v1/agents/guide/sessions/framework%2F1/events").json()["events"]
    (user,) = [e for e in events if e["kind"] == "message.user"]
    assert user["data"]["content"] == "/system"
    assert user["data"]["instructions"] == "Answer in French.\n\nNever name prices."
    # That run only: the next request sends its own (here none).
    plain = client.chat.completions.create(model="guide", extra_headers=headers, messages=[
        {"role": "user", "content": "/system"}])
    assert plain.choices[0].message.content == f"system: {GUIDE}"
    # Streamed, and on the Responses API (``instructions``, and system input items).
    chunks = client.chat.completions.create(model="guide", stream=True, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "/system"}])
    assert _caller_block("".join(c.choices[0].delta.content or "" for c in chunks
                                 if c.choices)).strip().endswith("Be brief.")
    response = client.responses.create(model="guide", instructions="Use lists.",
                                       input="/system")
    assert _caller_block(response.output_text).strip().endswith("Use lists.")
    items = client.responses.create(model="guide", input=[
        {"role": "developer", "content": "Cite sources."},
        {"role": "user", "content": "/system"}])
    assert _caller_block(items.output_text).strip().endswith("Cite sources.")


def test_the_openai_agents_sdk_instructions_reach_the_model(daemon: Daemon) -> None:
    """openai-agents, unmodified, on both doors: an Agent's ``instructions`` (which the
    SDK sends as the system prompt) reach the agentd agent's model after its own."""
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    async def ask(model_class: Any) -> str:
        sdk = AsyncOpenAI(base_url=f"{daemon.url}/v1", api_key=read_token(daemon.home))
        try:
            agent = agents.Agent(name="pirate", instructions="Speak like a pirate.",
                                 model=model_class(model="guide", openai_client=sdk))
            result = await agents.Runner.run(agent, "/system")
            return str(result.final_output)
        finally:
            await sdk.close()

    for model_class in (agents.OpenAIChatCompletionsModel, agents.OpenAIResponsesModel):
        system = asyncio.run(ask(model_class))
        assert GUIDE in system, system
        assert "Speak like a pirate." in _caller_block(system), system


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def test_client_tools_end_the_turn_and_their_results_continue_it(
        client: openai.OpenAI, api: httpx.Client) -> None:
    ask = [{"role": "user", "content": '/tool get_weather {"city": "Paris"}'}]
    first = client.chat.completions.create(model="echo", messages=ask, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    # Stateless, as the SDK's users send it: the whole conversation, no session named;
    # the call's id leads back to the session.
    second = client.chat.completions.create(model="echo", tools=[WEATHER], messages=[
        *ask, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "get_weather returned: sunny"
    key = api.get(f"/v1/runs/{first.id.removeprefix('chatcmpl-')}").json()["session"]
    assert api.get(f"/v1/runs/{second.id.removeprefix('chatcmpl-')}").json()["session"] == key
    events = api.get(f"/v1/agents/echo/sessions/{key}/events").json()["events"]
    ended = [e["data"] for e in events if e["kind"] == "run.completed"]
    assert ended[0]["client_tool_calls"][0]["name"] == "get_weather"
    given = [e["data"] for e in events if e["kind"] == "message.user"][1]
    assert given["content"] == ""
    assert given["tool_results"] == [{
        "call_id": ended[0]["client_tool_calls"][0]["id"], "name": "get_weather",
        "output": "sunny"}]
    assert given["client_tools"][0]["name"] == "get_weather"
    # The agent's own tools still run on the server, beside the caller's.
    own = client.chat.completions.create(model="echo", tools=[WEATHER], messages=[
        {"role": "user", "content": TOOL_MESSAGE}])
    assert own.choices[0].finish_reason == "stop" and "42" in (
        own.choices[0].message.content or "")


def test_client_tool_calls_stream(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="echo", stream=True, tools=[WEATHER],
        messages=[{"role": "user", "content": '/tool get_weather {"city": "Oslo"}'}]))
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert orjson.loads(calls[0].function.arguments or "") == {"city": "Oslo"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


WEATHER_FLAT = {"type": "function", **WEATHER["function"]}


def test_client_tools_on_the_responses_api(client: openai.OpenAI, api: httpx.Client
                                           ) -> None:
    ask = '/tool get_weather {"city": "Lima"}'
    first = client.responses.create(model="echo", input=ask, tools=[WEATHER_FLAT])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "Lima"}
    # With previous_response_id: the results of its calls.
    chained = client.responses.create(
        model="echo", previous_response_id=first.id, tools=[WEATHER_FLAT],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "fog"}])
    assert chained.output_text == "get_weather returned: fog"
    # Stateless (the whole input again, as openai-agents sends it), and streamed.
    again = client.responses.create(model="echo", input=ask, tools=[WEATHER_FLAT])
    (call,) = [item for item in again.output if item.type == "function_call"]
    events = list(client.responses.create(model="echo", tools=[WEATHER_FLAT], stream=True,
                                          input=[{"role": "user", "content": ask},
                                                 call.model_dump(exclude_none=True),
                                                 {"type": "function_call_output",
                                                  "call_id": call.call_id, "output": "sun"}]))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "get_weather returned: sun"  # type: ignore[union-attr]
    streamed = list(client.responses.create(model="echo", input=ask, tools=[WEATHER_FLAT],
                                            stream=True))
    kinds = [e.type for e in streamed]
    assert "response.function_call_arguments.done" in kinds
    final = streamed[-1].response  # type: ignore[union-attr]
    # Calls alone: no (empty) message item before them, streamed or not.
    assert [item.type for item in final.output] == ["function_call"]
    assert "response.content_part.added" not in kinds
    key = api.get(f"/v1/runs/{again.id.removeprefix('resp_')}").json()["session"]
    assert user_messages(api, "echo", key) == [ask, ""]


def test_the_openai_agents_sdk_runs_function_tools_and_handoffs(daemon: Daemon) -> None:
    """openai-agents, unmodified, on both doors, run and streamed: a function tool runs
    in the SDK's process and its result continues the agentd agent's turn; a handoff
    moves the conversation to another agentd agent."""
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI

    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"warm in {city}"

    async def run(model_class: Any) -> tuple[Any, Any]:
        sdk = AsyncOpenAI(base_url=f"{daemon.url}/v1", api_key=read_token(daemon.home))
        try:
            def model(name: str) -> Any:
                return model_class(model=name, openai_client=sdk)

            weather = agents.Agent(name="weather", model=model("echo"), tools=[get_weather])
            tooled = await agents.Runner.run(weather, '/tool get_weather {"city": "Nice"}')
            poet = agents.Agent(name="poet", model=model("poet"))
            triage = agents.Agent(name="triage", model=model("echo"), handoffs=[poet])
            handed = await agents.Runner.run(triage, "/tool transfer_to_poet {}")
            return tooled, handed
        finally:
            await sdk.close()

    async def streamed(model_class: Any) -> tuple[str, list[str]]:
        sdk = AsyncOpenAI(base_url=f"{daemon.url}/v1", api_key=read_token(daemon.home))
        try:
            weather = agents.Agent(name="weather", tools=[get_weather],
                                   model=model_class(model="echo", openai_client=sdk))
            result = agents.Runner.run_streamed(weather, '/tool get_weather {"city": "Bonn"}')
            kinds = [event.item.type async for event in result.stream_events()
                     if event.type == "run_item_stream_event"]
            return str(result.final_output), kinds
        finally:
            await sdk.close()

    for model_class in (agents.OpenAIChatCompletionsModel, agents.OpenAIResponsesModel):
        tooled, handed = asyncio.run(run(model_class))
        assert tooled.final_output == "get_weather returned: warm in Nice"
        assert handed.last_agent.name == "poet"
        assert handed.final_output == "roses are red, violets are blue"
        final, kinds = asyncio.run(streamed(model_class))
        assert final == "get_weather returned: warm in Bonn"
        assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert asked == ["Nice", "Bonn", "Nice", "Bonn"]


def test_bad_client_tools_are_refused_naming_the_parameter(
        client: openai.OpenAI, api: httpx.Client) -> None:
    before = runs(api, "echo")
    say = [{"role": "user", "content": "hi"}]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "function", "function": {"name": "no spaces"}}]},
         "tools[0].name"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"tools": [{**WEATHER, "function": {**WEATHER["function"], "name": "calculator"}}]},
         "tools[0].name"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
    ]
    for extra, param in bad:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="echo", messages=say, **extra)
        assert caught.value.param == param, (extra, caught.value)
    # A result for a call the response did not make.
    first = client.chat.completions.create(model="echo", tools=[WEATHER], messages=[
        {"role": "user", "content": '/tool get_weather {"city": "Rome"}'}])
    call = (first.choices[0].message.tool_calls or [])[0]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo", messages=[
            {"role": "user", "content": "x"}, first.choices[0].message.model_dump(),
            {"role": "tool", "tool_call_id": call.id[:-1] + "7", "content": "rain"}])
    assert caught.value.param == "messages"
    assert len(runs(api, "echo")) == len(before) + 1


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
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[1]"),
    ({"messages": [{"role": "user", "content": "x"}], "functions": [
        {"name": "f", "parameters": {"type": "object"}}]}, "functions"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function",
      "function": {"name": "f"}}], "tool_choice": {"type": "function",
                                                   "function": {"name": "f"}}},
     "tool_choice"),
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


def test_a_responses_item_whose_content_is_not_text_parts_is_refused(
        client: openai.OpenAI, api: httpx.Client) -> None:
    before = sessions(api, "echo")
    for content in ({"text": "hi"}, ["hi"], 3):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="echo", input=[  # type: ignore[misc,list-item]
                {"role": "user", "content": content}])
        assert caught.value.param == "input[0].content", caught.value
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
