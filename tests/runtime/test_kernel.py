"""The kernel's failure handling, end to end: real providers over HTTP to the stub
server, through the runtime: retries, Retry-After, breakers, fallbacks, streams that
fail midway, parking through an outage, output continuation, priorities."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import eventually

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import InvalidInput
from agentd.runtime import Token
from agentd.runtime.loop import CONTINUE_PROMPT
from agentd.store.records import EventRecord
from agentd.testing import StubLLMServer

TEXT = "one two three four five six seven eight"


@pytest.fixture(scope="module")
def stubs() -> Iterator[tuple[StubLLMServer, StubLLMServer]]:
    with StubLLMServer() as first, StubLLMServer() as second:
        yield first, second


@pytest.fixture
def stub_a(stubs: tuple[StubLLMServer, StubLLMServer]) -> Iterator[StubLLMServer]:
    stubs[0].clear()
    yield stubs[0]
    stubs[0].clear()


@pytest.fixture
def stub_b(stubs: tuple[StubLLMServer, StubLLMServer]) -> Iterator[StubLLMServer]:
    stubs[1].clear()
    yield stubs[1]
    stubs[1].clear()


def _settings(tmp_path: Path, **more: Any) -> Settings:
    base: dict[str, Any] = {
        "home": tmp_path / "home", "demo_agent": False, "shutdown_grace_s": 2.0,
        "retry_base_s": 0.01, "retry_max_s": 0.05, "breaker_failures": 3,
        "breaker_cooldown_s": 0.3}
    return Settings(**{**base, **more})


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(_settings(tmp_path))
    yield runtime
    await runtime.close()


def _primary(stub: StubLLMServer, **settings: Any) -> dict[str, Any]:
    return {"model": "openai-compatible:stub-a",
            "settings": {"base_url": stub.base_url, **settings}}


def _anthropic(stub: StubLLMServer) -> dict[str, Any]:
    return {"model": "anthropic:claude-haiku-4-5",
            "settings": {"base_url": stub.root_url, "api_key_env": "STUB_ANTHROPIC_KEY"}}


async def _send(rt: Runtime, agent: str, text: str = "hi", key: str = "k", **kw: Any
                ) -> tuple[Any, list[EventRecord]]:
    sent = await rt.send(agent, key, text, **kw)
    run = await rt.wait(sent.run.id)
    events = [e for e in await rt.read_events(sent.session.id) if e.run_id == run.id]
    return run, events


def _steps(events: list[EventRecord]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == "message.assistant"]


async def test_transient_failures_are_retried_by_the_kernel(rt: Runtime,
                                                            stub_a: StubLLMServer) -> None:
    await rt.create_agent(name="a", **_primary(stub_a))
    stub_a.enqueue(fault="http_500")
    stub_a.enqueue(fault="http_529")
    stub_a.enqueue(text="third time lucky")
    run, events = await _send(rt, "a")
    assert (run.status, run.output) == ("completed", "third time lucky")
    assert len(stub_a.requests) == 3
    step = _steps(events)[0]
    assert [(a["code"], a["status"]) for a in step["attempts"]] == [
        ("model_unavailable", 500), ("model_unavailable", 529)]
    assert all("retry_in_s" in a for a in step["attempts"])
    assert step["queue"]["class"] == "background" and step["queue"]["lane"]
    assert "fallback" not in step and rt.kernel.counters["retries"] == 2


async def test_retry_after_is_honoured_and_pauses_the_lane(rt: Runtime,
                                                           stub_a: StubLLMServer) -> None:
    await rt.create_agent(name="a", **_primary(stub_a))
    stub_a.enqueue(fault="http_429")  # the stub sends Retry-After: 1
    stub_a.enqueue(text="after the pause")
    run, events = await _send(rt, "a")
    assert run.output == "after the pause"
    attempt = _steps(events)[0]["attempts"][0]
    assert attempt["code"] == "model_rate_limited" and attempt["retry_in_s"] >= 1.0
    # The retry waited its turn behind the lane's pause rather than its own backoff.
    assert _steps(events)[0]["queue"]["wait_ms"] > 0


@pytest.mark.parametrize(("fault", "code"), [("http_401", "model_auth"),
                                             ("http_400", "model_bad_request"),
                                             ("spend_limit", "model_rate_limited")])
async def test_lasting_failures_are_not_retried(rt: Runtime, stub_a: StubLLMServer,
                                                fault: str, code: str) -> None:
    await rt.create_agent(name="a", **_primary(stub_a))
    stub_a.enqueue(fault=fault)
    stub_a.enqueue(text="must not be asked for")
    run, _ = await _send(rt, "a")
    assert run.status == "failed" and run.error["code"] == code
    assert run.error["retryable"] is False
    assert len(stub_a.requests) == 1


async def test_fallback_takes_over_when_retries_are_spent(
        rt: Runtime, stub_a: StubLLMServer, stub_b: StubLLMServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_ANTHROPIC_KEY", "sk-test")
    agent = _primary(stub_a)
    agent["settings"]["fallbacks"] = [_anthropic(stub_b)]
    await rt.create_agent(name="a", **agent)
    for _ in range(3):
        stub_a.enqueue(fault="http_503")
    stub_b.enqueue(text="from the fallback")
    run, events = await _send(rt, "a")
    assert (run.status, run.output) == ("completed", "from the fallback")
    step = _steps(events)[0]
    assert step["fallback"] is True and step["model"] == "anthropic:claude-haiku-4-5"
    assert [a["model"] for a in step["attempts"]] == ["openai-compatible:stub-a"] * 3
    assert len(stub_a.requests) == 3 and len(stub_b.requests) == 1


async def test_a_spent_quota_falls_back_at_once(rt: Runtime, stub_a: StubLLMServer,
                                                stub_b: StubLLMServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_ANTHROPIC_KEY", "sk-test")
    agent = _primary(stub_a)
    agent["settings"]["fallbacks"] = [_anthropic(stub_b)]
    await rt.create_agent(name="a", **agent)
    stub_a.enqueue(fault="spend_limit")
    stub_b.enqueue(text="paid by the other provider")
    run, _ = await _send(rt, "a")
    assert run.output == "paid by the other provider"
    assert len(stub_a.requests) == 1


async def test_an_open_breaker_skips_the_provider(tmp_path: Path, stub_a: StubLLMServer,
                                                  stub_b: StubLLMServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUB_ANTHROPIC_KEY", "sk-test")
    runtime = await Runtime.open(_settings(tmp_path, breaker_cooldown_s=60.0))
    try:
        agent = _primary(stub_a)
        agent["settings"]["fallbacks"] = [_anthropic(stub_b)]
        await runtime.create_agent(name="a", **agent)
        for _ in range(3):
            stub_a.enqueue(fault="http_500")
        stub_b.enqueue(text="fallback 1")
        stub_b.enqueue(text="fallback 2")
        first, _ = await _send(runtime, "a", key="k1")
        assert first.output == "fallback 1"
        breaker = runtime.kernel.breakers[f"openai-compatible@{stub_a.base_url}/"]
        assert breaker.state == "open"
        # While it is open the provider is not called at all.
        second, events = await _send(runtime, "a", key="k2")
        assert second.output == "fallback 2"
        assert len(stub_a.requests) == 3
        assert _steps(events)[0]["attempts"] == [
            {"model": "openai-compatible:stub-a", "code": "breaker_open"}]
        assert runtime.kernel.metrics()["breakers"][breaker.name]["state"] == "open"
    finally:
        await runtime.close()


async def _tokens_of_next_run(rt: Runtime, agent: str, key: str = "k"
                              ) -> tuple[Any, list[Token]]:
    """Send a message on an existing session and collect its live token frames."""
    _, session = await rt.get_session(agent, key)
    sub = rt.subscribe(session.id)
    try:
        sent = await rt.send(agent, key, "again")
        tokens: list[Token] = []
        while True:
            item = await asyncio.wait_for(sub.queue.get(), 10)
            if isinstance(item, Token):
                if item.run_id == sent.run.id:
                    tokens.append(item)
            elif item.kind in ("run.completed", "run.failed") and item.run_id == sent.run.id:
                break
        return await rt.wait(sent.run.id), tokens
    finally:
        sub.close()


async def test_a_stream_retried_midway_shows_no_text_twice(rt: Runtime,
                                                           stub_a: StubLLMServer) -> None:
    await rt.create_agent(name="a", **_primary(stub_a))
    stub_a.enqueue(text="warm up")
    await _send(rt, "a")
    stub_a.enqueue(text=TEXT, fault="error_mid_stream")
    stub_a.enqueue(text=TEXT)
    run, tokens = await _tokens_of_next_run(rt, "a")
    assert run.output == TEXT
    assert not any(t.reset for t in tokens)
    assert "".join(t.text for t in tokens) == TEXT  # the retry continued silently
    assert len(stub_a.requests) == 3


async def test_a_retry_that_answers_differently_resets_the_stream(
        rt: Runtime, stub_a: StubLLMServer) -> None:
    await rt.create_agent(name="a", **_primary(stub_a))
    stub_a.enqueue(text="warm up")
    await _send(rt, "a")
    stub_a.enqueue(text=TEXT, fault="reset_mid_stream")
    stub_a.enqueue(text="a different answer")
    run, tokens = await _tokens_of_next_run(rt, "a")
    assert run.output == "a different answer"
    resets = [i for i, t in enumerate(tokens) if t.reset]
    assert len(resets) == 1
    shown_before = "".join(t.text for t in tokens[:resets[0]])
    assert shown_before and TEXT.startswith(shown_before)
    assert "".join(t.text for t in tokens[resets[0]:]) == "a different answer"
    session = (await rt.get_session("a", "k"))[1]
    step = [e for e in await rt.read_events(session.id)
            if e.kind == "message.assistant"][-1].data
    assert step["stream_resets"] == 1 and step["attempts"][0]["code"] == "model_unavailable"


async def test_a_full_outage_parks_the_run_until_the_provider_answers(
        tmp_path: Path, stub_a: StubLLMServer) -> None:
    # The breaker's cooldown doubles at each failed probe: from 20 ms, the five probes
    # of this outage wait 0.6 s in all (9 s from the other tests' 0.3 s).
    rt = await Runtime.open(_settings(tmp_path, breaker_cooldown_s=0.02))
    try:
        await rt.create_agent(name="a", **_primary(stub_a))
        for _ in range(8):
            stub_a.enqueue(fault="http_503")
        stub_a.enqueue(text="back again")
        run, events = await _send(rt, "a")
    finally:
        await rt.close()
    assert (run.status, run.output) == ("completed", "back again")
    kinds = [e.kind for e in events]
    assert kinds.index("model.outage") < kinds.index("model.recovered") < kinds.index(
        "message.assistant")
    outage = next(e.data for e in events if e.kind == "model.outage")
    assert outage["models"] == ["openai-compatible:stub-a"]
    assert outage["error"]["details"]["status"] == 503
    assert _steps(events)[0]["outage_s"] > 0
    assert run.steps == 1  # parking spends no steps
    assert len(stub_a.requests) == 9


async def test_a_parked_run_can_be_cancelled(tmp_path: Path, stub_a: StubLLMServer) -> None:
    runtime = await Runtime.open(_settings(tmp_path, breaker_cooldown_s=60.0))
    try:
        await runtime.create_agent(name="a", **_primary(stub_a))
        for _ in range(3):
            stub_a.enqueue(fault="http_503")
        sent = await runtime.send("a", "k", "hi")

        async def parked() -> bool:
            events = await runtime.read_events(sent.session.id)
            return any(e.kind == "model.outage" for e in events)

        await eventually(parked, what="the run parked on the outage")
        await runtime.cancel_run(sent.run.id)
        run = await runtime.wait(sent.run.id)
        assert run.status == "cancelled"
    finally:
        await runtime.close()


async def test_on_outage_fail_fails_instead_of_parking(rt: Runtime,
                                                       stub_a: StubLLMServer) -> None:
    await rt.create_agent(name="a", **_primary(stub_a, on_outage="fail"))
    for _ in range(3):
        stub_a.enqueue(fault="http_503")
    run, events = await _send(rt, "a")
    assert run.status == "failed" and run.error["code"] == "model_unavailable"
    assert run.error["details"]["status"] == 503
    assert "model.outage" not in [e.kind for e in events]


async def test_garbage_fails_the_run_with_the_provider_s_error(
        rt: Runtime, stub_a: StubLLMServer) -> None:
    await rt.create_agent(name="a", **_primary(stub_a))
    for _ in range(3):
        stub_a.enqueue(fault="malformed_json")
    run, events = await _send(rt, "a")
    assert run.status == "failed" and run.error["code"] == "model_bad_output"
    assert "openai-compatible" in run.error["message"]
    assert events[-1].kind == "run.failed" and events[-1].data["error"] == run.error
    # The daemon is fine: the next message works.
    stub_a.enqueue(text="fine")
    again, _ = await _send(rt, "a", key="k2")
    assert again.output == "fine"


async def test_an_answer_cut_off_by_the_output_limit_is_continued(
        rt: Runtime, stub_a: StubLLMServer) -> None:
    await rt.create_agent(name="a", **_primary(stub_a))
    stub_a.enqueue(text="The first half, ", finish_reason="length")
    stub_a.enqueue(text="and the second.")
    run, events = await _send(rt, "a")
    assert (run.status, run.output) == ("completed", "The first half, and the second.")
    steps = _steps(events)
    assert [s["finish_reason"] for s in steps] == ["length", "stop"]
    assert steps[1]["continuation"] == 1 and run.steps == 2
    last = stub_a.requests[-1]["messages"]
    assert last[-2] == {"role": "assistant", "content": "The first half, "}
    assert last[-1] == {"role": "user", "content": CONTINUE_PROMPT}


async def test_continuations_stop_at_the_setting(rt: Runtime) -> None:
    await rt.create_agent(name="a", settings={"max_continuations": 1, "script": [
        {"text": "a", "finish_reason": "length"}, {"text": "b", "finish_reason": "length"}]})
    run, _ = await _send(rt, "a")
    # One continuation, then the cut-off answer is taken as it is.
    assert (run.status, run.output, run.steps) == ("completed", "ab", 2)


async def test_interactive_messages_overtake_background_ones(tmp_path: Path) -> None:
    runtime = await Runtime.open(_settings(
        tmp_path, providers={"scripted": {"concurrency": 1}}))
    try:
        # (each call holds the lane long enough that the chat, sent 10 ms in, is queued
        # while the first background call is under way, even on a loaded machine)
        script = {"script": [{"text": "done", "delay_ms": 150}]}
        for name in ("bg", "chat"):
            await runtime.create_agent(name=name, settings=script)
        background = [await runtime.send("bg", f"k{i}", "work", priority="background")
                      for i in range(6)]
        await asyncio.sleep(0.01)
        chat = await runtime.send("chat", "user", "hello", priority="interactive")
        finished: list[str] = []

        async def watch(run_id: str, label: str) -> None:
            await runtime.wait(run_id)
            finished.append(label)

        await asyncio.gather(watch(chat.run.id, "chat"),
                             *(watch(s.run.id, f"bg{i}") for i, s in enumerate(background)))
        # The chat waited for the call under way at most, not for the queue.
        assert finished.index("chat") <= 1
        run, _, _ = await runtime.get_run(chat.run.id)
        assert run.priority == "interactive"
        events = await runtime.read_events(chat.session.id)
        queue = next(e.data["queue"] for e in events if e.kind == "message.assistant")
        assert queue["class"] == "interactive" and queue["lane"] == "scripted"
        metrics = runtime.kernel.metrics()["scheduler"]
        assert metrics["lanes"]["scripted"]["granted"] == 7
    finally:
        await runtime.close()


async def test_priority_is_checked(rt: Runtime) -> None:
    await rt.create_agent(name="a")
    with pytest.raises(InvalidInput) as info:
        await rt.send("a", "k", "hi", priority="urgent")
    assert info.value.details["errors"][0]["field"] == "body.priority"


# -- budgets -------------------------------------------------------------------------
# The scripted model reports input 1 + len(system)/4 + 8 per message + len(last)/4
# tokens and output max(1, len(text)/4): small, exact and repeatable.


async def test_a_run_budget_warns_then_stops_the_run(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["calculator"], settings={
        "budget": {"run": {"tokens": 60}, "warn_at": [0.25]},
        "script": [{"tool_calls": [{"name": "calculator",
                                    "arguments": {"expression": "1+1"}}]}]})
    run, events = await _send(runtime, "a")
    assert run.status == "failed" and run.error["code"] == "budget_exceeded"
    details = run.error["details"]
    assert (details["scope"], details["metric"], details["limit"]) == ("run", "tokens", 60)
    assert details["used"] >= 60
    assert "this run's limit of 60 tokens" in run.error["message"]
    warnings = [e.data for e in events if e.kind == "budget.warning"]
    assert len(warnings) == 1 and warnings[0]["threshold"] == 0.25
    assert warnings[0]["used"] >= 15
    # The step that crossed the limit was committed; the next one was never asked for.
    assert run.steps == len(_steps(events)) and run.usage["input_tokens"] > 0


async def test_a_step_budget_stops_the_run(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["calculator"], settings={
        "budget": {"run": {"steps": 2}},
        "script": [{"tool_calls": [{"name": "calculator",
                                    "arguments": {"expression": "1+1"}}]}]})
    run, _ = await _send(runtime, "a")
    assert run.error["code"] == "budget_exceeded" and run.steps == 2
    assert run.error["details"]["metric"] == "steps"


async def test_an_agent_day_budget_spans_runs_and_is_recorded(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"budget": {"day": {"tokens": 40}}})
    outcomes = []
    for i in range(10):
        run, _ = await _send(runtime, "a", f"message number {i}")
        outcomes.append(run.status)
        if run.status == "failed":
            break
    assert outcomes[0] == "completed" and outcomes[-1] == "failed"
    assert run.error["code"] == "budget_exceeded" and run.steps == 0
    assert (run.error["details"]["scope"], run.error["details"]["period"]) == (
        "agent", "day")
    # What was spent is in the ledger, per agent and model.
    rows = await runtime.store.usage_report(group_by=["agent", "model"])
    assert rows[0]["agent"] == "a" and rows[0]["model"] == "scripted"
    assert rows[0]["calls"] == len(outcomes) - 1
    assert rows[0]["input_tokens"] + rows[0]["output_tokens"] >= 40


async def test_a_tenant_budget_covers_all_its_agents(tmp_path: Path, store_url: str) -> None:
    settings = _settings(tmp_path, database_url=store_url, tenants={
        "acme": {"weight": 2, "budget": {"month": {"tokens": 30}, "warn_at": [0.5]}}})
    runtime = await Runtime.open(settings)
    try:
        for name in ("a", "b"):
            await runtime.create_agent(name=name, settings={"tenant": "acme"})
        await runtime.create_agent(name="other")
        statuses = []
        for i in range(8):
            run, _ = await _send(runtime, "ab"[i % 2], f"hello {i}")
            statuses.append(run.status)
            if run.status == "failed":
                break
        assert statuses[-1] == "failed" and run.error["details"]["scope"] == "tenant"
        assert run.error["details"]["name"] == "acme"
        # Another tenant's agent is not held back.
        free, _ = await _send(runtime, "other")
        assert free.status == "completed"
        report = await runtime.store.usage_report(group_by=["tenant"])
        assert {r["tenant"] for r in report} >= {"acme", "default"}
    finally:
        await runtime.close()


@pytest.mark.parametrize(("settings", "field"), [
    ({"budget": {"day": {"cost_usd": -1}}}, "body.settings.budget.day.cost_usd"),
    ({"budget": {"run": {"tokens": 0}}}, "body.settings.budget.run.tokens"),
    ({"budget": {"week": {"tokens": 5}}}, "body.settings.budget.week"),
    ({"weight": 0}, "body.settings.weight"),
    ({"priority": "urgent"}, "body.settings.priority"),
    ({"fallbacks": "openai:gpt-4.1"}, "body.settings.fallbacks"),
    ({"fallbacks": ["nope:model"]}, "body.settings.fallbacks[0]"),
    ({"fallbacks": ["scripted", "openai:gpt-4.1-typo"]}, "body.settings.fallbacks[1]"),
    ({"on_outage": "retry"}, "body.settings.on_outage"),
    ({"max_continuations": -1}, "body.settings.max_continuations"),
])
async def test_bad_kernel_settings_are_refused_naming_the_field(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any],
        field: str) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(InvalidInput) as info:
        await rt.create_agent(name="a", settings=settings)
    assert info.value.details["errors"][0]["field"] == field
    assert await rt.list_agents() == []


async def test_a_missing_fallback_key_is_not_told_when_saved(rt: Runtime,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """Saving says nothing of which variables the daemon has (any token could ask):
    the fallback's calls fail ``model_auth`` instead (the log names the variable)."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    agent = await rt.create_agent(name="a", settings={
        "fallbacks": ["anthropic:claude-haiku-4-5"]})
    assert agent.settings["fallbacks"] == ["anthropic:claude-haiku-4-5"]


@pytest.mark.parametrize(("config", "where"), [
    ({"providers": {"openai": {"rpm": 0}}}, "providers.openai.rpm"),
    ({"providers": {"openai": {"concurrency": 0}}}, "providers.openai.concurrency"),
    ({"providers": {"openai": {"tpm": -5}}}, "providers.openai.tpm"),
    ({"providers": {"nope": {"rpm": 5}}}, "providers"),
    ({"tenants": {"acme": {"budget": {"day": {"cost_usd": -1}}}}},
     "tenants.acme.budget.day.cost_usd"),
    ({"tenants": {"acme": {"weight": 0}}}, "tenants.acme.weight"),
    ({"priority_weights": {"urgent": 5}}, "priority_weights"),
])
def test_bad_daemon_kernel_settings_name_the_setting(tmp_path: Path, config: dict[str, Any],
                                                     where: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        _settings(tmp_path, **config)
    assert where in str(info.value)


# -- provider data kept through the log ----------------------------------------------


async def test_gemini_thought_signatures_survive_the_log(rt: Runtime, stub_a: StubLLMServer,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Gemini 3 refuses a tool-call turn replayed without its thought signature (the
    stub does too): it is kept with the call in the log and sent back."""
    monkeypatch.setenv("GEMINI_API_KEY", "g-test")
    await rt.create_agent(name="g", model="gemini:gemini-2.5-flash", tools=["calculator"],
                          settings={"base_url": stub_a.base_url})
    stub_a.enqueue(tool_calls=[{"name": "calculator", "arguments": {"expression": "2+3"}}])
    stub_a.enqueue(text="five")
    run, events = await _send(rt, "g")
    assert (run.status, run.output) == ("completed", "five")
    call = _steps(events)[0]["tool_calls"][0]
    signature = call["extra"]["extra_content"]["google"]["thought_signature"]
    replayed = stub_a.requests[1]["messages"][-2]["tool_calls"][0]
    assert replayed["extra_content"]["google"]["thought_signature"] == signature
    # And after a restart the history comes from the log alone.
    rt.histories.drop(run.session_id)
    stub_a.enqueue(text="still fine")
    again, _ = await _send(rt, "g", "and now?")
    assert again.status == "completed", again.error


async def test_rate_limits_do_not_open_the_breaker(tmp_path: Path,
                                                   stub_a: StubLLMServer) -> None:
    runtime = await Runtime.open(_settings(tmp_path, breaker_failures=2))
    try:
        await runtime.create_agent(name="a", **_primary(stub_a))
        stub_a.enqueue(fault="http_429")
        stub_a.enqueue(fault="http_429")
        stub_a.enqueue(text="patience")
        run, _ = await _send(runtime, "a")
        assert run.output == "patience"
        breaker = runtime.kernel.breakers[f"openai-compatible@{stub_a.base_url}/"]
        assert (breaker.state, breaker.opened) == ("closed", 0)
        assert runtime.kernel.counters["rate_limited"] == 2
    finally:
        await runtime.close()
