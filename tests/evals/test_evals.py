"""Evaluations through the runtime: suites of cases picked from real runs, forked onto a
candidate, graded against the candidate and the recorded baseline, reported and
compared with the suite's last run. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.errors import Conflict, InvalidInput, NotFound
from agentd.evals.cases import case_from_run
from agentd.store.evals import EvalRunRecord
from agentd.tools import tool

CALLS: list[str] = []


@tool(read_only=True)
def lookup(city: str) -> str:
    """The weather in a city."""
    CALLS.append(city)
    return f"sunny in {city}"


@pytest.fixture
def runtime(runtime: Runtime) -> Runtime:
    runtime.tools.register(lookup)
    CALLS.clear()
    return runtime


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


async def _seeded(rt: Runtime, texts: list[str]) -> list[str]:
    """An agent ``a`` that echoes; a finished run per text (each its own session)."""
    await rt.create_agent(name="a", tools=["lookup"])
    ids = []
    for i, text in enumerate(texts):
        sent = await rt.send("a", f"user:{i}", text)
        run = await rt.wait(sent.run.id)
        assert run.status == "completed"
        ids.append(run.id)
    return ids


async def _run(rt: Runtime, suite_id: str, **candidate: Any) -> EvalRunRecord:
    run = await rt.evals.start_run(suite_id, **candidate)
    return await rt.evals.wait(run.id)


async def test_a_suite_from_real_runs_passes_on_the_same_config_and_gates_a_change(
        runtime: Runtime) -> None:
    runs = await _seeded(runtime, ["hello", "bonjour", "hola"])
    suite = await runtime.evals.create_suite("a", "smoke")
    for run_id in runs:
        await runtime.evals.add_from_run(suite.id, run_id)
    cases = await runtime.evals.cases(suite.id)
    assert [c.name for c in cases] == ["hello", "bonjour", "hola"]
    assert [c.to_api()["baseline"]["output"] for c in cases] == [
        "echo: hello", "echo: bonjour", "echo: hola"]
    # The same configuration: every case passes, as the baseline did.
    same = await _run(runtime, suite.id)
    assert same.status == "completed" and same.summary is not None
    assert same.summary["passed"] == 3 and same.summary["pass_rate"] == 1.0
    assert same.summary["gate"]["passed"] is True
    assert same.summary["baseline"]["passed"] == 3 and same.summary["previous"] is None
    # A candidate that answers otherwise fails every case: the gate fails, and the
    # comparison with the last run names the regressions.
    changed = await _run(runtime, suite.id, settings={"script": [{"text": "no"}]})
    summary = changed.summary
    assert summary is not None and summary["failed"] == 3 and summary["pass_rate"] == 0.0
    assert summary["gate"]["passed"] is False and summary["gate"]["reasons"]
    assert summary["previous"]["eval_run_id"] == same.id
    assert sorted(summary["previous"]["regressions"]) == ["bonjour", "hello", "hola"]
    assert sorted(summary["baseline"]["worse"]) == ["bonjour", "hello", "hola"]
    results = await runtime.evals.results(changed.id)
    first = results[0].to_api()
    assert first["status"] == "failed" and first["output"] == "no"
    assert first["grades"][0]["passed"] is False and "echo: hello" in first[
        "grades"][0]["reason"]
    assert first["baseline"]["status"] == "passed"
    assert first["divergence"]["first_divergence"]["step"] == 1
    # The scratch sessions are gone once graded (keep_sessions is off).
    keys = [s.key for s in await runtime.list_sessions("a")]
    assert not [k for k in keys if k.startswith("fork:")], keys


async def test_a_case_keeps_what_it_needs_when_its_run_is_deleted(runtime: Runtime) -> None:
    runs = await _seeded(runtime, ["first", "second"])
    suite = await runtime.evals.create_suite("a", "kept")
    case = await runtime.evals.add_from_run(suite.id, runs[1], graders=[
        {"kind": "regex", "pattern": "^echo: second$"}])
    # The run's session (and so the run) is deleted: the case still runs.
    await runtime.delete_session("a", "user:1")
    with pytest.raises(NotFound):
        await runtime.get_run(runs[1])
    done = await _run(runtime, suite.id)
    assert done.summary is not None and done.summary["passed"] == 1, done.summary
    got = await runtime.evals.results(done.id)
    assert got[0].case_id == case.id and got[0].to_api()["output"] == "echo: second"


async def test_graders(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["lookup"], settings={"script": [
        {"tool_calls": [_call("lookup", city="Paris")]},
        {"json": {"city": "Paris", "weather": "sunny"}}]})
    sent = await runtime.send("a", "u", "weather?")
    run = await runtime.wait(sent.run.id)
    assert run.status == "completed" and CALLS == ["Paris"]
    suite = await runtime.evals.create_suite("a", "graders")
    schema = {"type": "object", "required": ["city"],
              "properties": {"city": {"const": "Paris"}}}
    await runtime.evals.add_from_run(suite.id, run.id, graders=[
        {"kind": "json_schema", "schema": schema},
        {"kind": "tool_called", "tool": "lookup", "arguments": {"city": "Paris"}},
        {"kind": "tool_not_called", "tool": "lookup", "arguments": {"city": "Rome"}},
        {"kind": "max_steps", "steps": 2},
        {"kind": "max_tokens", "tokens": 100_000},
        {"kind": "regex", "pattern": "sunny", "name": "mentions the weather"}])
    done = await _run(runtime, suite.id)
    [result] = [r.to_api() for r in await runtime.evals.results(done.id)]
    assert result["status"] == "passed", result
    assert [g["passed"] for g in result["grades"]] == [True] * 6
    assert result["grades"][5]["name"] == "mentions the weather"
    assert CALLS == ["Paris"], "a recorded eval ran a tool"
    # A candidate that calls Rome and takes three steps fails three of them.
    worse = await _run(runtime, suite.id, settings={"script": [
        {"tool_calls": [_call("lookup", city="Rome")]},
        {"tool_calls": [_call("lookup", city="Rome")]},
        {"text": "cloudy"}]})
    [result] = [r.to_api() for r in await runtime.evals.results(worse.id)]
    assert result["status"] == "failed"
    passed = {g.get("name") or g["kind"]: g["passed"] for g in result["grades"]}
    assert passed == {"json_schema": False, "tool_called": False, "tool_not_called": False,
                      "max_steps": False, "max_tokens": True,
                      "mentions the weather": False}
    assert result["divergence"]["unrecorded_calls"], result["divergence"]


async def test_bad_input_is_refused_and_writes_nothing(runtime: Runtime) -> None:
    runs = await _seeded(runtime, ["hi"])
    await runtime.create_agent(name="b")
    suite = await runtime.evals.create_suite("a", "s")
    with pytest.raises(Conflict):
        await runtime.evals.create_suite("a", "s")
    with pytest.raises(InvalidInput):
        await runtime.evals.create_suite("a", "no spaces")
    other = await runtime.evals.create_suite("b", "s")  # (another agent's: its own name)
    with pytest.raises(InvalidInput) as wrong_agent:
        await runtime.evals.add_from_run(other.id, runs[0])
    assert "agent 'a'" in wrong_agent.value.message
    for graders, field in (([{"kind": "regex", "pattern": "(a+)+$"}],
                            "body.graders[0].pattern"),
                           ([{"kind": "json_schema", "schema": {"type": "nope"}}],
                            "body.graders[0].schema"),
                           ([{"kind": "exact", "expectd": "x"}], "body.graders[0].expectd"),
                           ([{"kind": "rubric", "rubric": "ok", "model": "nosuch:x"}],
                            "body.model")):
        with pytest.raises(InvalidInput) as bad:
            await runtime.evals.add_from_run(suite.id, runs[0], graders=graders)
        fields = [e["field"] for e in bad.value.details.get("errors", [])]
        assert any(f.startswith(field) for f in fields), (field, bad.value.details)
    with pytest.raises(InvalidInput) as steps:
        await runtime.evals.add_from_run(suite.id, runs[0], from_step=3)
    assert steps.value.code == "step_out_of_range"
    with pytest.raises(InvalidInput) as empty:
        await runtime.evals.start_run(suite.id)
    assert empty.value.code == "suite_empty"
    with pytest.raises(InvalidInput):
        await runtime.evals.start_run(suite.id, model="nosuch:model")
    with pytest.raises(InvalidInput) as typo:  # (a known provider, an unknown model)
        await runtime.evals.start_run(suite.id, model="anthropic:claude-sonet-4-5")
    assert "not in the model catalog" in typo.value.message
    assert await runtime.evals.cases(suite.id) == []
    assert await runtime.evals.eval_runs(suite.id) == []


async def test_a_case_that_cannot_be_forked_errors_with_its_error(runtime: Runtime) -> None:
    """A result's ``error`` is an error object (``code``, ``message``), as a run's is,
    whether the fork's run failed or the case could not be forked at all; JUnit XML
    says ``code: message``."""
    runs = await _seeded(runtime, ["hello"])
    suite = await runtime.evals.create_suite("a", "errs")
    # Imported: it holds no workspace, so live tools (a file tool's) cannot have one.
    await runtime.update_agent("a", {"tools": ["lookup", "read_file"]})
    await runtime.evals.import_cases(suite.id, [await case_from_run(runtime.store, runs[0])])
    done = await _run(runtime, suite.id, tools="live")
    [result] = [r.to_api() for r in await runtime.evals.results(done.id)]
    assert result["status"] == "errored", result
    assert result["error"]["code"] == "fork_workspace_unknown", result["error"]
    assert "cannot be reconstructed" in result["error"]["message"]
    assert done.summary is not None and done.summary["errored"] == 1
    junit = (await runtime.evals.junit(done.id)).decode()
    assert 'message="fork_workspace_unknown: the workspace' in junit, junit


async def test_a_spent_budget_errors_the_cases_instead_of_failing_the_candidate(
        runtime: Runtime) -> None:
    runs = await _seeded(runtime, ["hello"])
    suite = await runtime.evals.create_suite("a", "budgeted")
    await runtime.evals.add_from_run(suite.id, runs[0])
    # The agent's day is spent (the seeding run used more than this).
    await runtime.update_agent("a", {"settings": {"budget": {"day": {"tokens": 1}}}})
    done = await _run(runtime, suite.id)
    [result] = [r.to_api() for r in await runtime.evals.results(done.id)]
    assert result["status"] == "errored", result
    assert result["error"]["code"] == "budget_exceeded"
    # A step budget of the candidate's own is the candidate failing, not an error.
    await runtime.update_agent("a", {"settings": {}})
    done = await _run(runtime, suite.id, settings={"budget": {"run": {"steps": 1}},
                                                   "script": [
        {"tool_calls": [_call("lookup", city="Oslo")]}, {"text": "echo: hello"}]})
    [result] = [r.to_api() for r in await runtime.evals.results(done.id)]
    assert result["status"] == "failed", result
    assert result["error"]["details"]["scope"] == "run"
