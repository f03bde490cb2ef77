"""Forking a finished run onto another configuration from one of its steps, through the
runtime's facade: the steps before the fork's come from the log (no model call, no tool
run), from there the candidate runs for real, and the report compares the two.
SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from tests.runtime.recording import CALLS, MODEL_CALLS, call, count_calls, with_tools

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import Conflict, InvalidInput, InvalidModel
from agentd.llm.scripted import enqueue
from agentd.runtime.fork import ForkRequest
from agentd.store.records import RunRecord


@pytest.fixture
def runtime(runtime: Runtime) -> Runtime:
    """The conftest's runtime, with the tools of tests/runtime/recording.py."""
    return with_tools(runtime)


@pytest.fixture(autouse=True)
def _counting(monkeypatch: pytest.MonkeyPatch) -> None:
    count_calls(monkeypatch)


_call = call


SCRIPT = [
    {"tool_calls": [_call("peek", key="x")]},
    {"tool_calls": [_call("put", key="x")]},
    {"tool_calls": [_call("peek", key="y")]},
    {"text": "all done"},
]


async def _run(rt: Runtime, text: str = "go", key: str = "k") -> RunRecord:
    sent = await rt.send("a", key, text)
    return await rt.wait(sent.run.id)


async def _sessions(rt: Runtime) -> list[str]:
    return sorted(s.key for s in await rt.list_sessions("a"))


async def test_fork_serves_the_prefix_and_runs_the_candidate(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["peek", "put"], settings={"script": SCRIPT})
    run = await _run(runtime)
    assert run.status == "completed" and run.steps == 4 and len(MODEL_CALLS) == 4
    original = await runtime.read_events((await runtime.get_session("a", "k"))[1].id)
    CALLS.clear()
    MODEL_CALLS.clear()
    # From step 3 the candidate plays another script (its position: the assistant
    # messages already in the session, two by then).
    candidate = [*SCRIPT[:2], {"tool_calls": [_call("peek", key="x"),
                                              _call("peek", key="z")]},
                 {"text": "done differently"}]
    report = await runtime.fork_run(run.id, ForkRequest(
        from_step=3, settings={"script": candidate}))
    assert MODEL_CALLS == ["scripted", "scripted"], "the prefix called a model"
    assert CALLS == [], "a recorded fork ran a tool"
    assert report["status"] == "completed" and report["session"] == f"fork:{run.id}:1"
    assert report["fork"]["output"] == "done differently"
    assert report["original"]["output"] == "all done" and report["same_output"] is False
    assert report["first_divergence"]["step"] == 3, report["first_divergence"]
    assert report["tool_calls_added"] == [{"name": "peek", "arguments": {"key": "x"}},
                                          {"name": "peek", "arguments": {"key": "z"}}]
    assert report["tool_calls_removed"] == [{"name": "peek", "arguments": {"key": "y"}}]
    # peek x was made by the original (answered from it); peek z was not.
    assert [c["name"] for c in report["unrecorded_calls"]] == ["peek"]
    assert report["fork"]["steps"] == 4
    # The fork's usage is its own steps' (two calls): the answers it served carry none.
    fork_run, _, _ = await runtime.get_run(report["run_id"])
    answers = [e for e in await runtime.read_events(fork_run.session_id)
               if e.kind == "message.assistant" and e.run_id == fork_run.id]
    assert [a.data["usage"] is None for a in answers] == [True, True, False, False]
    assert report["fork"]["usage"]["input_tokens"] == sum(
        a.data["usage"]["input_tokens"] for a in answers[2:]) > 0
    assert 0 < report["original"]["usage_from_step"]["input_tokens"] < run.usage[
        "input_tokens"]
    # The original session is untouched.
    assert await runtime.read_events((await runtime.get_session("a", "k"))[1].id) == original


async def test_the_report_has_both_runs_tokens_and_cost(settings: Settings,
                                                         store_url: str) -> None:
    """Where the catalog prices the models: the original's cost (whole, and from the
    fork step) and the fork's, beside their tokens."""
    settings.database_url = store_url
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "models.toml").write_text(
        '[models."scripted:priced"]\ncontext_window = 100000\nmax_output_tokens = 1000\n'
        'input = 2\noutput = 4\n')
    rt = with_tools(await Runtime.open(settings))
    try:
        await rt.create_agent(name="a", model="scripted:priced", tools=["peek", "put"],
                              settings={"script": SCRIPT})
        run = await _run(rt)
        assert run.status == "completed" and run.usage["cost_usd"] > 0
        report = await rt.fork_run(run.id, ForkRequest(from_step=3, settings={
            "script": [*SCRIPT[:2], {"text": "no more peeking"}]}))
        original, fork = report["original"], report["fork"]
        assert original["usage"] == run.usage
        assert 0 < original["usage_from_step"]["cost_usd"] < original["usage"]["cost_usd"]
        assert fork["usage"]["cost_usd"] > 0 and fork["usage"]["input_tokens"] > 0
        # The fork's own steps (3 on) only: one answer, priced as the catalog says.
        answers = [e.data["usage"] for e in await rt.read_events(
            (await rt.get_run(report["run_id"]))[0].session_id)
            if e.kind == "message.assistant" and e.run_id == report["run_id"]
            and e.data["usage"]]
        assert len(answers) == 1 and fork["usage"]["cost_usd"] == answers[0]["cost_usd"]
    finally:
        await rt.close()


async def test_live_tools_run_for_real_from_the_fork_step(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["peek", "put"], settings={"script": SCRIPT})
    run = await _run(runtime)
    CALLS.clear()
    report = await runtime.fork_run(run.id, ForkRequest(from_step=2, tools="live"))
    assert report["status"] == "completed", report
    # Step 1 (peek x) came from the log; put x and peek y ran again.
    assert CALLS == ["put x", "peek y"]
    assert report["first_divergence"] is None and report["same_output"] is True


async def test_checks_of_the_served_steps_are_given_their_verdicts(
        runtime: Runtime) -> None:
    """The steps before the fork's come from the log, their checks' verdicts too (no
    check is asked, none fails for want of a runner); from the fork step the
    candidate's checks are asked."""
    await runtime.create_agent(name="a", tools=["peek", "put"], settings={
        "hooks": {"checks": [{"name": "judge", "point": "tool_call", "kind": "model",
                              "rule": "anything goes", "tools": ["put"]}]}})
    enqueue(*SCRIPT[:2], {"text": '{"verdict": "allow"}'}, *SCRIPT[2:], agent="a")
    run = await _run(runtime)
    assert run.status == "completed" and run.output == "all done", run
    assert CALLS == ["peek x", "put x", "peek y"]
    enqueue(*SCRIPT[2:], agent="a")  # (the candidate's steps: the same)
    report = await runtime.fork_run(run.id, ForkRequest(from_step=3))
    assert report["status"] == "completed", report
    assert report["first_divergence"] is None and report["same_output"] is True
    assert MODEL_CALLS[-2:] == ["scripted", "scripted"]


async def test_refusals_write_nothing(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["peek", "put"], settings={"script": SCRIPT})
    run = await _run(runtime)
    before = await _sessions(runtime)
    with pytest.raises(InvalidInput) as bad:
        await runtime.fork_run(run.id, ForkRequest(from_step=5))
    assert bad.value.code == "step_out_of_range" and "1 to 4" in bad.value.message
    with pytest.raises(InvalidInput):
        await runtime.fork_run(run.id, ForkRequest(from_step=0))
    with pytest.raises(InvalidModel) as unknown:
        await runtime.fork_run(run.id, ForkRequest(from_step=1, model="nosuch:model-9"))
    assert "nosuch" in unknown.value.message
    # A provider that exists, a model that does not (not in the catalog): as a
    # fallback's, refused before anything is written.
    with pytest.raises(InvalidModel) as typo:
        await runtime.fork_run(run.id, ForkRequest(from_step=1, model="openai:gpt-4.1-mni"))
    assert "'openai:gpt-4.1-mni'" in typo.value.message and "catalog" in typo.value.message
    assert typo.value.details["errors"][0]["field"] == "body.model"
    with pytest.raises(InvalidInput) as tenant:
        await runtime.fork_run(run.id, ForkRequest(from_step=1,
                                                   settings={"tenant": "other"}))
    assert "tenant" in tenant.value.message
    assert await _sessions(runtime) == before


async def test_a_run_in_flight_is_refused(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["deploy"], settings={"script": [
        {"tool_calls": [_call("deploy", target="prod")]}, {"text": "ok"}]})
    sent = await runtime.send("a", "k", "ship")
    waiting = await runtime.wait(sent.run.id)
    assert waiting.status == "waiting_approval"
    with pytest.raises(Conflict) as busy:
        await runtime.fork_run(sent.run.id, ForkRequest(from_step=1))
    assert busy.value.code == "run_in_flight"
    await runtime.decide(sent.run.id, "approve")
    done = await runtime.wait(sent.run.id)
    assert done.status == "completed" and CALLS == ["deploy prod"]
    CALLS.clear()
    # Live from step 1: the same call is decided as the original's was (approved);
    # no one is asked.
    report = await runtime.fork_run(done.id, ForkRequest(from_step=1, tools="live"))
    assert report["status"] == "completed" and CALLS == ["deploy prod"]
    assert await runtime.store.pending_approvals("a") == []
    # Another call than the original's is refused, not waited on.
    CALLS.clear()
    report = await runtime.fork_run(done.id, ForkRequest(from_step=1, tools="live", settings={
        "script": [{"tool_calls": [_call("deploy", target="staging")]}, {"text": "ok"}]}))
    assert report["status"] == "completed" and CALLS == []
    assert report["tool_calls_added"] == [{"name": "deploy",
                                           "arguments": {"target": "staging"}}]


async def test_live_tools_work_in_a_copy_of_the_workspace_at_the_fork_step(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["read_file", "write_file"], settings={
        "script": [
            {"tool_calls": [_call("write_file", path="a.txt", content="one")]},
            {"tool_calls": [_call("write_file", path="a.txt", content="two")]},
            {"tool_calls": [_call("read_file", path="a.txt")]},
            {"text": "read it"}]})
    run = await _run(runtime)
    assert run.status == "completed"
    agent = await runtime.get_agent("a")
    workspace = runtime.agents.workspace_of(agent)
    assert (workspace / "a.txt").read_text() == "two"
    # From step 2 the candidate reads first: it finds the file as step 2 began.
    report = await runtime.fork_run(run.id, ForkRequest(from_step=2, tools="live", settings={
        "script": [{"text": "unused"}, {"tool_calls": [_call("read_file", path="a.txt")]},
                   {"tool_calls": [_call("write_file", path="b.txt", content="fork")]},
                   {"text": "forked"}]}))
    assert report["status"] == "completed", report
    fork_run, _, _ = await runtime.get_run(report["run_id"])
    results = [e.data["output"] for e in await runtime.read_events(fork_run.session_id)
               if e.kind == "tool.finished" and e.run_id == fork_run.id]
    assert results[1].endswith("one"), results
    # The agent's own workspace is as the original left it; the copy is gone.
    assert (workspace / "a.txt").read_text() == "two"
    assert not (workspace / "b.txt").exists()
    assert list((runtime.settings.home / "forks").iterdir()) == []


async def test_live_tools_need_the_workspace_at_the_step(runtime: Runtime,
                                                          settings: Any) -> None:
    await runtime.create_agent(name="a", tools=["write_file"], settings={"script": [
        {"tool_calls": [_call("write_file", path="a.txt", content="one")]},
        {"text": "ok"}]})
    run = await _run(runtime)
    keeper = runtime.executors.workspaces
    runtime.executors.workspaces = None  # (as with [sandbox] snapshots = false)
    try:
        with pytest.raises(InvalidInput) as off:
            await runtime.fork_run(run.id, ForkRequest(from_step=2, tools="live"))
    finally:
        runtime.executors.workspaces = keeper
    assert off.value.code == "fork_workspace_unknown" and "snapshots" in off.value.message
    # Recorded tools need no workspace.
    report = await runtime.fork_run(run.id, ForkRequest(from_step=2))
    assert report["status"] == "completed" and report["same_output"] is True


async def test_scratch_workspaces_of_forks_that_will_not_run_are_swept(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["peek"], settings={
        "script": [*SCRIPT[:1], {"text": "done"}]})
    run = await _run(runtime)
    report = await runtime.fork_run(run.id, ForkRequest(from_step=1))  # (recorded)
    root = runtime.settings.home / "forks"
    ended = root / report["fork_id"]  # as a copy left by a fork cancelled in the queue
    stray, fresh = root / "fk_gone", root / "fk_being_made"
    for folder in (ended, stray, fresh):
        folder.mkdir(parents=True)
        (folder / "file.txt").write_text("x")
    old = time.time() - 7200
    os.utime(stray, (old, old))
    assert await runtime.forks.sweep() == 2
    assert sorted(p.name for p in root.iterdir()) == ["fk_being_made"]
