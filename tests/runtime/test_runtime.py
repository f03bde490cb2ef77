"""The runtime through its facade: loop, tools, lifecycle, queueing, restarts.

Runs on SQLite and (with AGENTD_TEST_POSTGRES_URL) PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from tests.conftest import PATIENCE_S, under_way

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.errors import AgentNotAccepting, InvalidInput, InvalidModel, ShuttingDown
from agentd.llm.scripted import enqueue
from agentd.store import open_store
from agentd.store.records import EventRecord
from agentd.tools import Tool, ToolContext, tool


async def _kinds(rt: Runtime, session_id: str) -> list[str]:
    return [e.kind for e in await rt.read_events(session_id)]


async def _run_once(rt: Runtime, agent: str, text: str, key: str = "k") -> tuple:
    sent = await rt.send(agent, key, text)
    run = await rt.wait(sent.run.id)
    return run, sent.session.id


async def test_echo_turn_is_logged_step_by_step(runtime: Runtime) -> None:
    await runtime.create_agent(name="a")
    run, sid = await _run_once(runtime, "a", "hello")
    assert (run.status, run.output, run.steps) == ("completed", "echo: hello", 1)
    assert await _kinds(runtime, sid) == [
        "message.user", "run.queued", "run.started", "message.assistant", "run.completed"]
    assert (await runtime.get_agent("a")).state == "running"


async def test_tool_call_round_trip(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["calculator"])
    run, sid = await _run_once(runtime, "a", '/tool calculator {"expression": "6*7"}')
    assert run.status == "completed" and run.output == "calculator returned: 42"
    events = await runtime.read_events(sid)
    kinds = [e.kind for e in events]
    assert kinds == ["message.user", "run.queued", "run.started", "message.assistant",
                     "tool.started", "tool.finished", "message.assistant", "run.completed"]
    started = events[4].data
    assert started["name"] == "calculator" and started["effect_id"].startswith(run.id)
    assert events[5].data["output"] == "42" and events[5].data["is_error"] is False
    assert run.usage["input_tokens"] > 0


async def test_history_carries_across_runs(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "one"}, {"text": "two"},
                                                              {"text": "three"}]})
    outputs = [(await _run_once(runtime, "a", f"m{i}"))[0].output for i in range(4)]
    # The script advances by the number of assistant messages already in the session.
    assert outputs == ["one", "two", "three", "one"]
    other, _ = await _run_once(runtime, "a", "x", key="other")
    assert other.output == "one"


def _meeting(size: int) -> Callable[[], Awaitable[int]]:
    """A rendezvous of ``size`` callers: each waits until all have arrived, so callers
    run one after the other never meet (the first waits alone and fails). Returns how
    many were inside at once when the caller got in."""
    inside = 0
    everyone = asyncio.Event()

    async def meet() -> int:
        nonlocal inside
        inside += 1
        seen = inside
        if inside == size:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), PATIENCE_S)
        except TimeoutError:
            raise AssertionError(f"waited alone: {seen} of {size} arrived") from None
        return seen

    return meet


async def test_read_only_calls_of_one_step_run_concurrently(runtime: Runtime) -> None:
    meet = _meeting(4)

    @tool(read_only=True)
    async def slow_read(n: int) -> int:
        """Wait for the other calls of the step, then answer."""
        await meet()
        return n * 2

    runtime.tools.register(slow_read)
    await runtime.create_agent(name="a", tools=["slow_read"], settings={"script": [
        {"tool_calls": [{"name": "slow_read", "arguments": {"n": i}} for i in range(4)]},
        {"text": "done"}]})
    run, sid = await _run_once(runtime, "a", "go")
    assert run.status == "completed"
    events = await runtime.read_events(sid)
    finished = [e.data for e in events if e.kind == "tool.finished"]
    # Each call met the other three (one after the other, the first waits alone).
    assert [f["output"] for f in finished] == ["0", "2", "4", "6"], finished
    # All four starts were committed before any result.
    kinds = [e.kind for e in events]
    assert kinds.index("tool.finished") > max(i for i, k in enumerate(kinds)
                                              if k == "tool.started")


async def test_mutating_calls_run_in_order(runtime: Runtime) -> None:
    order: list[str] = []

    @tool
    async def write(tag: str) -> str:
        """Record a write."""
        order.append(f"start {tag}")
        await asyncio.sleep(0.05)
        order.append(f"end {tag}")
        return tag

    runtime.tools.register(write)
    await runtime.create_agent(name="a", tools=["write"], settings={"script": [
        {"tool_calls": [{"name": "write", "arguments": {"tag": t}} for t in "abc"]},
        {"text": "ok"}]})
    run, _ = await _run_once(runtime, "a", "go")
    assert run.status == "completed"
    assert order == ["start a", "end a", "start b", "end b", "start c", "end c"]


async def test_tool_errors_become_results_not_crashes(runtime: Runtime) -> None:
    @tool(timeout_s=0.2)
    async def hang() -> str:
        """Never answers."""
        await asyncio.sleep(30)
        return "never"

    @tool
    def boom() -> str:
        """Raises."""
        raise RuntimeError("kaput")

    runtime.tools.register(hang)
    runtime.tools.register(boom)
    await runtime.create_agent(name="a", tools=["hang", "boom", "calculator"], settings={
        "script": [{"tool_calls": [
            {"name": "hang", "arguments": {}},
            {"name": "boom", "arguments": {}},
            {"name": "calculator", "arguments": {"expression": "1/0"}},
            {"name": "calculator", "arguments": {"wrong": 1}},
            {"name": "nope", "arguments": {}},
        ]}, {"text": "recovered"}]})
    run, sid = await _run_once(runtime, "a", "go")
    assert run.status == "completed" and run.output == "recovered"
    results = [e.data for e in await runtime.read_events(sid) if e.kind == "tool.finished"]
    assert all(r["is_error"] for r in results)
    outputs = [r["output"] for r in results]
    assert "timed out" in outputs[0]
    assert "kaput" in outputs[1]
    assert "division by zero" in outputs[2]
    assert "expression" in outputs[3] and "wrong" in outputs[3]
    assert "unknown tool 'nope'" in outputs[4]


async def test_max_steps_fails_the_run(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", tools=["calculator"], settings={
        "max_steps": 3,
        "script": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]}]})
    run, sid = await _run_once(runtime, "a", "loop forever")
    assert run.status == "failed" and run.error and run.error["code"] == "max_steps"
    assert run.steps == 3
    assert (await _kinds(runtime, sid))[-1] == "run.failed"


async def test_model_error_fails_the_run_and_next_run_works(runtime: Runtime) -> None:
    await runtime.create_agent(name="a")
    enqueue({"error": "provider exploded"}, agent="a")
    run, _ = await _run_once(runtime, "a", "x")
    assert run.status == "failed"
    # A failure retrying cannot mend: no retry, no parking, the run fails at once.
    # The error names the model it came from (issue 12).
    assert run.error == {"code": "model_error", "message": "scripted: provider exploded",
                         "retryable": False,
                         "details": {"provider": "scripted", "model": "scripted"}}
    run2, _ = await _run_once(runtime, "a", "y")
    assert run2.status == "completed"


async def test_runs_of_one_session_are_serial_and_fifo(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "ok", "delay_ms": 5}]})
    sends = [await runtime.send("a", "k", f"m{i}") for i in range(8)]
    runs = await asyncio.gather(*(runtime.wait(s.run.id) for s in sends))
    assert all(r.status == "completed" for r in runs)
    events = await runtime.read_events(sends[0].session.id)
    # No interleaving: each run's events form one block, in the order the runs were sent.
    started_order = [e.run_id for e in events if e.kind == "run.started"]
    assert started_order == [s.run.id for s in sends]
    current = None
    for e in events:
        if e.kind in ("message.user", "run.queued"):
            continue
        if e.kind == "run.started":
            assert current is None
            current = e.run_id
        else:
            assert e.run_id == current
        if e.kind == "run.completed":
            current = None


async def test_different_sessions_run_in_parallel(runtime: Runtime) -> None:
    meet = _meeting(5)

    @tool
    async def rendezvous() -> str:
        """Wait for the other sessions' runs."""
        await meet()
        return "met"

    runtime.tools.register(rendezvous)
    await runtime.create_agent(name="a", tools=["rendezvous"], settings={"script": [
        {"tool_calls": [{"name": "rendezvous", "arguments": {}}]}, {"text": "ok"}]})
    sends = [await runtime.send("a", f"k{i}", "x") for i in range(5)]
    runs = await asyncio.gather(*(runtime.wait(s.run.id) for s in sends))
    assert [r.status for r in runs] == ["completed"] * 5
    # Every session's call met the four others: run in sequence, the first waits alone.
    for sent in sends:
        events = await runtime.read_events(sent.session.id)
        [finished] = [e.data for e in events if e.kind == "tool.finished"]
        assert finished["output"] == "met", finished


async def test_pause_holds_queued_runs_and_refuses_messages(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "ok", "delay_ms": 200}]})
    first = await runtime.send("a", "k", "1")
    second = await runtime.send("a", "k", "2")
    await under_way(runtime, first.run.id)
    await runtime.set_state("a", "pause")
    with pytest.raises(AgentNotAccepting) as info:
        await runtime.send("a", "k", "3")
    assert info.value.code == "agent_paused" and info.value.status == 409
    assert (await runtime.wait(first.run.id)).status == "completed"
    await runtime.wait_idle()
    assert (await runtime.store.get_run(second.run.id)).status == "queued"
    await runtime.set_state("a", "resume")
    assert (await runtime.wait(second.run.id)).status == "completed"


async def test_stop_cancels_active_and_queued_runs(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "slow", "delay_ms": 5000}]})
    first = await runtime.send("a", "k", "1")
    second = await runtime.send("a", "k", "2")
    await under_way(runtime, first.run.id)
    agent = await runtime.set_state("a", "stop")
    assert agent.state == "stopped"
    r1, r2 = await runtime.wait(first.run.id), await runtime.wait(second.run.id)
    assert (r1.status, r2.status) == ("cancelled", "cancelled")
    with pytest.raises(AgentNotAccepting):
        await runtime.send("a", "k", "3")
    await runtime.set_state("a", "resume")
    enqueue({"text": "back"}, agent="a")
    run, _ = await _run_once(runtime, "a", "4")
    # The cancelled run's unfinished step does not break the next request.
    assert (run.status, run.output) == ("completed", "back")


async def test_cancel_run(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "slow", "delay_ms": 5000}]})
    sent = await runtime.send("a", "k", "1")
    queued = await runtime.send("a", "k", "2")
    await under_way(runtime, sent.run.id)
    run, agent, key = await runtime.cancel_run(sent.run.id)
    assert (run.status, agent, key) == ("cancelled", "a", "k")
    qrun, _, _ = await runtime.cancel_run(queued.run.id)
    assert qrun.status == "cancelled"
    again, _, _ = await runtime.cancel_run(sent.run.id)
    assert again.status == "cancelled"
    kinds = await _kinds(runtime, sent.session.id)
    assert kinds.count("run.cancelled") == 2


async def test_bad_agent_definitions_are_refused_at_creation(runtime: Runtime) -> None:
    with pytest.raises(InvalidModel, match="unknown model provider"):
        await runtime.create_agent(name="a", model="nope:x")
    with pytest.raises(InvalidModel, match="base URL"):
        await runtime.create_agent(name="a", model="openai-compatible:m")
    with pytest.raises(InvalidInput, match="unknown tool"):
        await runtime.create_agent(name="a", tools=["rm_rf"])
    with pytest.raises(InvalidInput, match="agent name"):
        await runtime.create_agent(name="bad name")
    with pytest.raises(InvalidInput, match="agent name"):  # ('$' let a newline end it)
        await runtime.create_agent(name="bot\n")
    with pytest.raises(InvalidModel, match="script"):
        await runtime.create_agent(name="a", settings={"script": "not a list"})
    with pytest.raises(InvalidInput, match="max_steps"):
        await runtime.create_agent(name="a", settings={"max_steps": 0})
    assert await runtime.list_agents() == []


async def test_update_agent_changes_behaviour(runtime: Runtime) -> None:
    await runtime.create_agent(name="a")
    await runtime.update_agent("a", {"settings": {"script": [{"text": "patched"}]}})
    run, _ = await _run_once(runtime, "a", "x")
    assert run.output == "patched"
    with pytest.raises(InvalidModel):
        await runtime.update_agent("a", {"model": "bogus:1"})
    assert (await runtime.get_agent("a")).model == "scripted"


async def test_delete_agent_cancels_its_runs(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "s", "delay_ms": 5000}]})
    sent = await runtime.send("a", "k", "1")
    await under_way(runtime, sent.run.id)
    await runtime.delete_agent("a")
    assert runtime.supervisor.active_runs == 0
    assert await runtime.store.count("runs") == 0


async def test_a_stream_opened_while_its_agent_is_deleted_is_ended_too(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose stream ended as the deletion began reconnects at once: a stream
    it opens before the deletion is committed must end too (the console waited for
    its 'agent deleted' banner forever under load)."""
    await runtime.create_agent(name="a")
    sent = await runtime.send("a", "k", "hello")
    await runtime.wait(sent.run.id)
    reopened = []
    real_delete = runtime.agents.delete

    async def delete_after_a_reconnect(*args: object, **kwargs: object) -> None:
        reopened.append(runtime.subscribe(sent.session.id))
        await real_delete(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime.agents, "delete", delete_after_a_reconnect)
    await runtime.delete_agent("a")
    assert [sub.closed for sub in reopened] == [True]


async def test_subscribers_see_every_committed_event_in_order(runtime: Runtime) -> None:
    from agentd.runtime import Token, follow

    await runtime.create_agent(name="a", tools=["calculator"])
    first = await runtime.send("a", "k", "warm up")
    await runtime.wait(first.run.id)
    sid = first.session.id
    sub = runtime.subscribe(sid, buffer=2)  # small enough to force the lagging path
    seen: list[EventRecord] = []
    tokens = 0

    async def consume() -> None:
        nonlocal tokens
        async for item in follow(sub, lambda s: runtime.read_events(sid, after=s), after=0):
            if isinstance(item, Token):
                tokens += 1
                continue
            seen.append(item)
            if item.kind == "run.completed" and item.run_id == second.run.id:
                return

    second = await runtime.send("a", "k", '/tool calculator {"expression": "2+2"}')
    await asyncio.wait_for(consume(), 10)
    sub.close()
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert seen == await runtime.read_events(sid)


async def test_shutdown_parks_running_runs_and_restart_resumes_them(
        settings: Settings, store_url: str) -> None:
    settings.database_url = store_url
    settings.shutdown_grace_s = 0.1
    rt = await Runtime.open(settings)
    await rt.create_agent(name="a", settings={"script": [{"text": "slow", "delay_ms": 3000}]})
    first = await rt.send("a", "k", "1")
    second = await rt.send("a", "k", "2")
    await under_way(rt, first.run.id, in_model=True)
    await rt.close()
    # Parked, not ended: still running in the store; the queued one stays queued.
    assert (await _status(settings, first.run.id)) == "running"
    assert (await _status(settings, second.run.id)) == "queued"
    with pytest.raises(ShuttingDown):
        await rt.send("a", "k", "late")

    enqueue({"text": "fast 1"}, {"text": "fast 2"}, agent="a")
    rt2 = await Runtime.open(settings)
    try:
        run1 = await rt2.wait(first.run.id)
        run2 = await rt2.wait(second.run.id)
        assert (run1.status, run1.output) == ("completed", "fast 1")
        assert (run2.status, run2.output) == ("completed", "fast 2")
        kinds = [e.kind for e in await rt2.read_events(first.session.id)
                 if e.run_id == first.run.id]
        assert kinds == ["message.user", "run.queued", "run.started", "run.parked",
                         "run.resumed", "message.assistant", "run.completed"]
    finally:
        await rt2.close()


async def _crash_mid_step(settings: Settings, store_url: str, tool_name: str,
                          finished: bool) -> tuple[str, str]:
    """Write the log a daemon leaves when it dies after a step with a tool call:
    the assistant's tool call committed, the tool started, its result maybe not."""
    from agentd.store import NewEvent, RunUpdate, open_store

    store = await open_store(store_url)
    try:
        agent = await store.create_agent(
            name="a", model="scripted", instructions="", tools=[tool_name],
            settings={"script": [{"tool_calls": [{"name": tool_name, "arguments": {}}]},
                                 {"text": "after the tool"}]})
        accepted = await store.accept_message(agent_id=agent.id, key="k", content="go")
        run_id, sid = accepted.run.id, accepted.session.id
        events = [
            NewEvent(kind="run.started", run_id=run_id),
            NewEvent(kind="message.assistant", run_id=run_id, data={
                "text": "", "tool_calls": [{"id": "call_0", "name": tool_name,
                                            "arguments": {}}],
                "usage": {"input_tokens": 5, "output_tokens": 1, "cached_tokens": 0},
                "finish_reason": "tool_calls", "model": "scripted", "step": 1}),
            NewEvent(kind="tool.started", run_id=run_id, data={
                "call_id": "call_0", "name": tool_name, "arguments": {},
                "effect_id": f"{run_id}/1/call_0"}),
        ]
        if finished:
            events.append(NewEvent(kind="tool.finished", run_id=run_id, data={
                "call_id": "call_0", "name": tool_name, "output": "done before",
                "is_error": False, "duration_ms": 1.0}))
        await store.append(sid, events, run_id=run_id,
                           run=RunUpdate(status="running", started=True, steps=1))
        return run_id, sid
    finally:
        await store.close()


@pytest.mark.no_replay  # (_crash_mid_step writes the step the crash cut off)
@pytest.mark.parametrize("finished", [True, False])
async def test_resume_does_not_repeat_a_recorded_step(
        settings: Settings, store_url: str, finished: bool) -> None:
    """A crash after a committed tool call: the recorded model response is not asked
    for again; an idempotent tool whose result was lost runs again with the same
    effect id; one whose result was committed does not run again."""
    seen: list[str] = []

    @tool(idempotent=True)
    def lookup(ctx: ToolContext) -> str:
        """An idempotent lookup."""
        seen.append(ctx.effect_id)
        return "looked up"

    run_id, sid = await _crash_mid_step(settings, store_url, "lookup", finished)
    settings.database_url = store_url
    rt = Runtime(settings, await open_store(store_url))
    rt.tools.register(lookup)
    await rt.start()
    try:
        run = await rt.wait(run_id)
        assert (run.status, run.output, run.steps) == ("completed", "after the tool", 2)
        assert run.usage["input_tokens"] >= 5  # the recorded step's usage is kept
        events = [e for e in await rt.read_events(sid) if e.run_id == run_id]
        kinds = [e.kind for e in events]
        assert kinds.count("message.assistant") == 2
        assert "run.resumed" in kinds and kinds.count("run.started") == 1
        if finished:
            assert seen == []
        else:
            assert seen == [f"{run_id}/1/call_0"]
            retry = [e for e in events if e.kind == "tool.started"][-1]
            assert retry.data["retry"] is True
            assert retry.data["effect_id"] == f"{run_id}/1/call_0"
    finally:
        await rt.close()


def _email_tool(calls: list[str]) -> Tool:
    """A non-idempotent tool that records the effect id of every call it makes."""

    @tool
    def send_email(ctx: ToolContext) -> str:
        """Not idempotent."""
        calls.append(ctx.effect_id)
        return "sent"

    return send_email


@pytest.mark.parametrize("action", ["retry", "skip", "fail"])
async def test_an_unknown_outcome_waits_for_a_decision(
        settings: Settings, store_url: str, action: str) -> None:
    from agentd.errors import Conflict

    calls: list[str] = []
    send_email = _email_tool(calls)

    run_id, sid = await _crash_mid_step(settings, store_url, "send_email", finished=False)
    settings.database_url = store_url
    rt = Runtime(settings, await open_store(store_url))
    rt.tools.register(send_email)
    await rt.start()
    try:
        waiting = await rt.wait(run_id)  # returns as soon as the run waits
        assert waiting.status == "waiting_approval"
        assert calls == []  # never repeated on its own
        asked = [e for e in await rt.read_events(sid) if e.kind == "approval.requested"]
        assert asked[-1].data["effect_id"] == f"{run_id}/1/call_0"
        assert asked[-1].data["options"] == ["retry", "skip", "fail"]
        decided, _, _ = await rt.decide(run_id, action,
                                        "it went out" if action == "skip" else None)
        assert decided.id == run_id
        with pytest.raises(Conflict):
            await rt.decide(run_id, action)  # decided already
        final = await rt.wait(run_id)
        if action == "retry":
            assert calls == [f"{run_id}/1/call_0"]  # once, with the same effect id
            assert (final.status, final.output) == ("completed", "after the tool")
        elif action == "skip":
            assert calls == []
            results = [e.data for e in await rt.read_events(sid) if e.kind == "tool.finished"]
            assert results[-1]["output"] == "it went out" and results[-1]["skipped"]
            assert final.status == "completed"
        else:
            assert calls == []
            assert final.status == "failed" and final.error
            assert final.error["code"] == "unknown_outcome"
        with pytest.raises(Conflict):
            await rt.decide(run_id, "retry")  # not waiting any more
    finally:
        await rt.close()


async def test_a_waiting_run_still_waits_after_a_restart(
        settings: Settings, store_url: str) -> None:
    calls: list[str] = []
    send_email = _email_tool(calls)

    run_id, sid = await _crash_mid_step(settings, store_url, "send_email", finished=False)
    settings.database_url = store_url
    for round_ in range(2):
        rt = Runtime(settings, await open_store(store_url))
        rt.tools.register(send_email)
        await rt.start()
        try:
            assert (await rt.wait(run_id)).status == "waiting_approval"
            if round_ == 1:
                await rt.decide(run_id, "retry")
                assert (await rt.wait(run_id)).status == "completed"
        finally:
            await rt.close()
    assert calls == [f"{run_id}/1/call_0"]
    kinds = [e.kind for e in await _events(settings, sid)]
    assert kinds.count("approval.requested") == 1 and kinds.count("approval.decided") == 1


async def test_a_retried_call_cut_off_again_needs_a_new_decision(
        settings: Settings, store_url: str) -> None:
    """The decision to retry answers one start: if the daemon dies again during the
    retried call, the call is not run a third time on that old decision."""
    from agentd.store import NewEvent
    from agentd.store import open_store as _open

    calls: list[str] = []
    send_email = _email_tool(calls)
    run_id, sid = await _crash_mid_step(settings, store_url, "send_email", finished=False)
    effect = f"{run_id}/1/call_0"
    store = await _open(store_url)
    await store.append(sid, [
        NewEvent(kind="run.resumed", run_id=run_id, data={}),
        NewEvent(kind="approval.requested", run_id=run_id, data={
            "effect_id": effect, "reason": "unknown_outcome", "call_id": "call_0",
            "name": "send_email", "arguments": {}, "options": ["retry", "skip", "fail"]}),
        NewEvent(kind="approval.decided", run_id=run_id, data={
            "effect_id": effect, "action": "retry", "output": None}),
        NewEvent(kind="tool.started", run_id=run_id, data={
            "call_id": "call_0", "name": "send_email", "arguments": {},
            "effect_id": effect, "retry": True}),
    ])
    await store.close()
    settings.database_url = store_url
    rt = Runtime(settings, await open_store(store_url))
    rt.tools.register(send_email)
    await rt.start()
    try:
        assert (await rt.wait(run_id)).status == "waiting_approval"
        assert calls == []
        asked = [e for e in await rt.read_events(sid) if e.kind == "approval.requested"]
        assert len(asked) == 2  # asked again
        await rt.decide(run_id, "skip", "it went out")
        assert (await rt.wait(run_id)).status == "completed"
        assert calls == []
    finally:
        await rt.close()


async def test_on_unknown_outcome_interrupt_ends_the_run(
        settings: Settings, store_url: str) -> None:
    from agentd.store import open_store as _open

    calls: list[str] = []
    send_email = _email_tool(calls)

    run_id, sid = await _crash_mid_step(settings, store_url, "send_email", finished=False)
    store = await _open(store_url)
    await store.update_agent("a", {"settings": {"on_unknown_outcome": "interrupt",
                                                "script": [{"text": "x"}]}})
    await store.close()
    settings.database_url = store_url
    rt = Runtime(settings, await open_store(store_url))
    rt.tools.register(send_email)
    await rt.start()
    try:
        run = await rt.wait(run_id)
        assert run.status == "interrupted" and calls == []
        last = (await rt.read_events(sid))[-1]
        assert last.kind == "run.interrupted"
        assert "send_email" in last.data["reason"] and "not idempotent" in last.data["reason"]
        assert last.data["effect_id"] == f"{run_id}/1/call_0"
    finally:
        await rt.close()


async def _events(settings: Settings, session_id: str) -> list:
    store = await open_store(settings.database_url)
    try:
        return await store.read_events(session_id)
    finally:
        await store.close()


async def _status(settings: Settings, run_id: str) -> str:
    from agentd.store import open_store

    store = await open_store(settings.database_url)
    try:
        return (await store.get_run(run_id)).status
    finally:
        await store.close()


async def test_stop_after_pause_cancels_held_runs(runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "ok", "delay_ms": 200}]})
    first = await runtime.send("a", "k", "1")
    held = await runtime.send("a", "k", "2")
    await under_way(runtime, first.run.id)  # (a pause holds a run not yet started)
    await runtime.set_state("a", "pause")
    await runtime.wait(first.run.id)
    await runtime.set_state("a", "stop")
    assert (await runtime.store.get_run(held.run.id)).status == "cancelled"
    await runtime.set_state("a", "resume")
    await runtime.wait_idle()
    assert (await runtime.store.get_run(held.run.id)).status == "cancelled"


async def test_unstartable_model_fails_the_run_with_its_error(
        settings: Settings, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.database_url = store_url
    monkeypatch.setenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL", "http://127.0.0.1:9/v1")
    before = await Runtime.open(settings)
    try:
        await before.create_agent(name="a", model="openai-compatible:m")
    finally:
        await before.close()
    monkeypatch.delenv("AGENTD_OPENAI_COMPATIBLE_BASE_URL")
    runtime = await Runtime.open(settings)  # a restart: the model is built at run start
    try:
        sent = await runtime.send("a", "k", "hi")
        run = await runtime.wait(sent.run.id)
        assert run.status == "failed"
        assert run.error is not None and run.error["code"] == "invalid_model"
        assert "AGENTD_OPENAI_COMPATIBLE_BASE_URL" in run.error["message"]
        assert (await runtime.get_agent("a")).state == "error"
        with pytest.raises(AgentNotAccepting) as info:
            await runtime.send("a", "k", "again")
        assert info.value.code == "agent_error"
    finally:
        await runtime.close()


async def test_a_new_agents_first_send_keeps_an_error_set_meanwhile(runtime: Runtime) -> None:
    """The sender marks a new agent running after handing its first run over; the run
    may already have put the agent in error (a model that cannot be built): that
    state stays, even when this node's copy of the agent still says created."""
    await runtime.create_agent(name="a")
    await runtime.store.set_agent_state("a", "error")  # behind this node's copy
    assert (await runtime.agents.get("a")).state == "created"
    after = await runtime.agents.set_state_from("a", "created", "running")
    assert after.state == "error"
    assert (await runtime.get_agent("a")).state == "error"
    await runtime.create_agent(name="b")
    assert (await runtime.agents.set_state_from("b", "created", "running")).state == "running"
    assert (await runtime.store.get_agent("b")).state == "running"


async def test_the_newer_of_two_changes_stays_whatever_order_they_return_in(
        runtime: Runtime) -> None:
    """Two changes to an agent made at once (its first run setting ``error``, its
    sender setting ``running``) may come back from the store in the other order than
    they committed (on PostgreSQL, two connections): this node keeps the one that
    committed last, as the store does."""
    await runtime.create_agent(name="a")
    running = await runtime.store.set_agent_state("a", "running")
    error = await runtime.store.set_agent_state("a", "error")  # committed last
    assert runtime.agents.remember(error).state == "error"
    assert runtime.agents.remember(running).state == "error"  # returned last
    assert (await runtime.get_agent("a")).state == "error"
    # A record of the same name but another agent (deleted, made again) is taken.
    await runtime.delete_agent("a")
    again = await runtime.create_agent(name="a")
    assert runtime.agents.remember(again).id == again.id


async def test_a_closing_bus_delivers_what_was_published_first(runtime: Runtime) -> None:
    from agentd.runtime import follow

    await runtime.create_agent(name="a")
    sent = await runtime.send("a", "k", "hi")
    await runtime.wait(sent.run.id)
    sid = sent.session.id
    sub = runtime.subscribe(sid)
    extra = await runtime.store.append(sid, [])
    assert extra == []
    from agentd.store import NewEvent

    records = await runtime.store.append(sid, [NewEvent(kind="note", data={"n": 1})])
    runtime.bus.publish(records)
    runtime.bus.close_all()
    seen = [item async for item in follow(sub, lambda s: runtime.read_events(sid, after=s),
                                          after=records[0].seq - 1)]
    assert [e.seq for e in seen] == [records[0].seq]


async def test_tool_modules_add_tools_to_the_daemon(
        settings: Settings, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    settings.database_url = store_url
    settings.tool_modules = ["sample_tools"]
    rt = await Runtime.open(settings)
    try:
        await rt.create_agent(name="a", tools=["shout"])
        run, _ = await _run_once(rt, "a", '/tool shout {"text": "hi"}')
        assert run.output == "shout returned: HI"
    finally:
        await rt.close()
    for bad, message in (("no_such_module_x", "cannot import"), ("json", "defines no tools")):
        settings.tool_modules = [bad]
        with pytest.raises(InvalidInput, match=message):
            await Runtime.open(settings)


async def test_mode_reject_refuses_a_busy_session_and_writes_nothing(runtime: Runtime) -> None:
    from agentd.errors import SessionBusy

    await runtime.create_agent(name="a", settings={"script": [{"text": "ok", "delay_ms": 300}]})
    first = await runtime.send("a", "k", "1", mode="reject")  # idle session: accepted
    with pytest.raises(SessionBusy) as info:
        await runtime.send("a", "k", "2", mode="reject")
    assert info.value.status == 409 and info.value.details["active_run"] == first.run.id
    users = [e for e in await runtime.read_events(first.session.id)
             if e.kind == "message.user"]
    assert [e.data["content"] for e in users] == ["1"]
    assert await runtime.store.count("runs") == 1
    assert (await runtime.wait(first.run.id)).status == "completed"
    again = await runtime.send("a", "k", "3", mode="reject")
    assert (await runtime.wait(again.run.id)).status == "completed"
    with pytest.raises(InvalidInput, match="unknown mode"):
        await runtime.send("a", "k", "4", mode="shout")


async def test_mode_interrupt_cancels_the_active_run_then_runs_the_new_one(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [{"text": "slow", "delay_ms": 5000}]})
    first = await runtime.send("a", "k", "1")
    await under_way(runtime, first.run.id, in_model=True)  # answering "slow"
    enqueue({"text": "fresh"}, agent="a")
    second = await runtime.send("a", "k", "2", mode="interrupt")
    r1 = await runtime.wait(first.run.id)
    r2 = await runtime.wait(second.run.id)
    assert (r1.status, r2.status, r2.output) == ("cancelled", "completed", "fresh")
    cancelled = [e for e in await runtime.read_events(first.session.id)
                 if e.kind == "run.cancelled"]
    assert cancelled[0].data["reason"] == "interrupted by a newer message"


async def test_a_run_after_an_interrupted_one_runs_with_no_cancellation_pending(
        runtime: Runtime) -> None:
    """A session's runs execute one after another in its worker's task: the
    interrupted run's cancellation is spent with it, and the next run (here a tool
    of it, which runs in that task) sees none pending."""
    seen: list[object] = []

    @tool
    async def probe() -> str:
        """Reports the cancellations pending on the task it runs in."""
        task = asyncio.current_task()
        assert task is not None
        seen.append(task.cancelling())
        try:
            async with asyncio.timeout(0):
                await asyncio.sleep(PATIENCE_S)
        except TimeoutError:
            seen.append("timed out")
        return "probed"

    runtime.tools.register(probe)
    await runtime.create_agent(name="a", tools=["probe"],
                               settings={"script": [{"text": "slow", "delay_ms": 5000}]})
    first = await runtime.send("a", "k", "1")
    await under_way(runtime, first.run.id, in_model=True)
    enqueue({"tool_calls": [{"name": "probe", "arguments": {}}]}, {"text": "done"}, agent="a")
    second = await runtime.send("a", "k", "2", mode="interrupt")
    r1, r2 = await runtime.wait(first.run.id), await runtime.wait(second.run.id)
    assert (r1.status, r2.status, r2.output) == ("cancelled", "completed", "done")
    assert seen == [0, "timed out"]


async def test_a_cancel_that_comes_after_its_run_ended_leaves_the_next_run_alone(
        runtime: Runtime) -> None:
    """Cancelling an executor whose run is over does nothing: its session's worker,
    whose task the run executed in, has gone on to the next run."""
    release = asyncio.Event()
    entered = asyncio.Event()

    @tool
    async def gate() -> str:
        """Holds the run until the test lets it go."""
        entered.set()
        await release.wait()
        return "open"

    runtime.tools.register(gate)
    await runtime.create_agent(name="a", tools=["gate"])
    first = await runtime.send("a", "k", "/tool gate {}")
    second = await runtime.send("a", "k", "hello")  # queued behind the first
    await asyncio.wait_for(entered.wait(), PATIENCE_S)
    executor = runtime.supervisor.active_executor(first.session.id, first.run.id)
    assert executor is not None
    release.set()
    assert (await runtime.wait(first.run.id)).status == "completed"
    assert executor.cancel("too late") is False
    r2 = await runtime.wait(second.run.id)
    assert (r2.status, r2.output) == ("completed", "echo: hello")


async def test_mode_interrupt_waits_for_the_step_boundary_of_a_tool(runtime: Runtime) -> None:
    log: list[str] = []
    working, interrupted = asyncio.Event(), asyncio.Event()

    @tool
    async def work() -> str:
        """Goes on until the interrupt has been sent, and must not be cut off."""
        log.append("start")
        working.set()
        await interrupted.wait()
        log.append("end")
        return "worked"

    runtime.tools.register(work)
    await runtime.create_agent(name="a", tools=["work"], settings={"script": [
        {"tool_calls": [{"name": "work", "arguments": {}}]}, {"text": "never reached"}]})
    first = await runtime.send("a", "k", "1")
    await asyncio.wait_for(working.wait(), 10)
    enqueue({"text": "second"}, agent="a")
    second = await runtime.send("a", "k", "2", mode="interrupt")
    interrupted.set()
    r1, r2 = await runtime.wait(first.run.id), await runtime.wait(second.run.id)
    assert log == ["start", "end"]  # the tool finished: the run stopped after the step
    assert (r1.status, r2.output) == ("cancelled", "second")
    kinds = [e.kind for e in await runtime.read_events(first.session.id)
             if e.run_id == first.run.id]
    assert kinds[-2:] == ["tool.finished", "run.cancelled"]


async def test_mode_steer_joins_the_running_run(runtime: Runtime) -> None:
    started, steered = asyncio.Event(), asyncio.Event()

    @tool(read_only=True)
    async def think() -> str:
        """Holds the run in its tool call until the steer has been accepted."""
        started.set()
        await steered.wait()
        return "thought"

    runtime.tools.register(think)
    await runtime.create_agent(name="a", tools=["think"], settings={"script": [
        {"tool_calls": [{"name": "think", "arguments": {}}]}, {"text": "answer"}]})
    first = await runtime.send("a", "k", "plan a trip")
    await asyncio.wait_for(started.wait(), 60)
    steer = await runtime.send("a", "k", "make it cheap", mode="steer")
    steered.set()
    assert steer.run.id == first.run.id  # no new run
    run = await runtime.wait(first.run.id)
    assert run.status == "completed"
    history = (await runtime.histories.get(first.session.id)).for_model()
    texts = [getattr(m, "content", getattr(m, "text", "")) for m in history]
    # The steer joined after the tool result, before the final answer.
    assert texts == ["plan a trip", "", "thought", "make it cheap", "answer"]
    assert await runtime.store.count("runs") == 1


async def test_a_steer_that_arrives_during_the_final_answer_is_not_lost(
        runtime: Runtime) -> None:
    await runtime.create_agent(name="a", settings={"script": [
        {"text": "first answer", "delay_ms": 300}]})
    first = await runtime.send("a", "k", "hello")
    await under_way(runtime, first.run.id, in_model=True)  # producing its final answer
    enqueue({"text": "answer with the steer"}, agent="a")  # what the next call says
    await runtime.send("a", "k", "also this", mode="steer")
    run = await runtime.wait(first.run.id)
    # The first answer did not see the steer, so it was dropped and the model asked again.
    assert (run.status, run.output) == ("completed", "answer with the steer")
    events = [e for e in await runtime.read_events(first.session.id)
              if e.kind == "message.assistant"]
    assert [e.data["text"] for e in events] == ["answer with the steer"]


@pytest.mark.parametrize("action", ["warn", "stop"])
async def test_a_run_repeating_itself_is_caught_by_the_loop_guard(
        runtime: Runtime, action: str) -> None:
    # Two calls of one tool in a step: their signatures must order without comparing
    # the argument dicts (the kill test caught that).
    same = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}},
                           {"name": "calculator", "arguments": {"expression": "2+2"}}]}
    await runtime.create_agent(name="a", tools=["calculator"], settings={
        "script": [same] * 6 + [{"text": "done"}], "max_steps": 10,
        "loop_guard": {"repeats": 3, "action": action}})
    run, sid = await _run_once(runtime, "a", "go")
    events = await runtime.read_events(sid)
    detected = [e for e in events if e.kind == "loop.detected"]
    if action == "stop":
        assert run.status == "failed" and run.error is not None
        assert run.error["code"] == "loop_detected"
        assert run.error["details"] == {"repeats": 3, "tools": ["calculator"]}
        assert run.steps == 3 and detected == []
    else:
        assert (run.status, run.output, run.steps) == ("completed", "done", 7)
        # Once per streak: the 6 identical steps are one streak.
        assert [e.data for e in detected] == [
            {"repeats": 3, "tools": ["calculator"], "action": "warn"}]


async def test_different_results_are_progress_for_the_loop_guard(runtime: Runtime) -> None:
    calls = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i}+1"}}]}
             for i in range(5)]
    await runtime.create_agent(name="a", tools=["calculator"], settings={
        "script": [*calls, {"text": "done"}], "loop_guard": {"repeats": 2, "action": "stop"}})
    run, _ = await _run_once(runtime, "a", "go")
    assert (run.status, run.output) == ("completed", "done")


@pytest.mark.parametrize("guard", [
    {"repeats": 1}, {"repeats": 101}, {"repeats": "3"}, {"action": "halt"},
    {"repeats": 3, "extra": 1}, "stop", {"repeats": True}])
async def test_a_bad_loop_guard_is_refused(runtime: Runtime, guard: object) -> None:
    with pytest.raises(InvalidInput) as info:
        await runtime.create_agent(name="a", settings={"loop_guard": guard})
    assert info.value.details["errors"][0]["field"].startswith("body.settings.loop_guard")


async def test_a_run_killed_after_calling_a_client_tool_hands_it_over_on_resume(
        settings: Settings, store_url: str) -> None:
    """A crash after the model's call of a tool the sender runs (an OpenAI client's)
    was committed: the resumed run does not ask the model again, runs nothing, and
    ends handing the call to the sender, as it would have."""
    from agentd.store import NewEvent, RunUpdate

    store = await open_store(store_url)
    try:
        agent = await store.create_agent(name="a", model="scripted", instructions="",
                                         tools=[], settings={})
        accepted = await store.accept_message(
            agent_id=agent.id, key="k", content="weather?", origin={"client_tools": [
                {"name": "get_weather", "description": "", "parameters": {}}]})
        run_id, sid = accepted.run.id, accepted.session.id
        call = {"id": "call_0", "name": "get_weather", "arguments": {"city": "Oslo"}}
        await store.append(sid, [
            NewEvent(kind="run.started", run_id=run_id),
            NewEvent(kind="message.assistant", run_id=run_id, data={
                "text": "", "tool_calls": [call], "usage": None,
                "finish_reason": "tool_calls", "model": "scripted", "step": 1})],
            run_id=run_id, run=RunUpdate(status="running", started=True, steps=1))
    finally:
        await store.close()
    settings.database_url = store_url
    rt = await Runtime.open(settings)
    try:
        run = await rt.wait(run_id)
        assert (run.status, run.steps) == ("completed", 1)
        events = [e for e in await rt.read_events(sid) if e.run_id == run_id]
        kinds = [e.kind for e in events]
        assert kinds.count("message.assistant") == 1 and "tool.started" not in kinds
        assert events[-1].data["client_tool_calls"] == [call]
    finally:
        await rt.close()
