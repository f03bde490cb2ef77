"""A child's end is logged in its parent's session before the wait that got its result
answers, so never after the parent's run has ended (found by bench/killtest_autonomy.py
on PostgreSQL: the hook's ``subtask.finished`` committed after the caller's
``run.completed``, breaking "a run's terminal event is its last")."""

from __future__ import annotations

import asyncio

import pytest

from agentd.assembly import Runtime


@pytest.mark.parametrize("tool", ["agent_call", "subtask_wait"])
async def test_a_childs_end_is_logged_before_the_wait_answers(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tool: str) -> None:
    service = runtime.subtasks
    hook_report = service._report_child

    async def slow_report(run_id: str) -> None:
        # The hook's report commits late (a busy store): the wait must not outrun it.
        await asyncio.sleep(0.5)
        await hook_report(run_id)

    monkeypatch.setattr(service, "_report_child", slow_report)
    await runtime.create_agent(name="helper", settings={"script": [{"text": "done"}]})
    if tool == "agent_call":
        script = [{"tool_calls": [{"name": "agent_call",
                                   "arguments": {"agent": "helper", "message": "hi"}}]},
                  {"text": "thanks"}]
    else:
        script = [{"tool_calls": [{"name": "subtask_start", "arguments": {
                      "title": "t", "instructions": "do it", "agent": "helper"}}]},
                  {"tool_calls": [{"name": "subtask_wait", "arguments": {}}]},
                  {"text": "thanks"}]
    await runtime.create_agent(
        name="asker", tools=["agent_call", "subtask_start", "subtask_wait"],
        settings={"delegation": {"calls": {"allow": ["helper"]}}, "script": script})
    sent = await runtime.send("asker", "k", "go")
    run = await runtime.wait(sent.run.id)
    assert run.status == "completed"
    await asyncio.sleep(0.8)  # the delayed hook has run (and found it logged)
    events = [e for e in await runtime.read_events(sent.session.id)
              if e.run_id == sent.run.id]
    kinds = [e.kind for e in events]
    assert kinds[-1] == "run.completed", kinds
    assert kinds.count("subtask.finished") == 1, kinds
    answered = max(i for i, e in enumerate(events)
                   if e.kind == "tool.finished" and e.data["name"] == tool)
    assert kinds.index("subtask.finished") < answered, kinds
