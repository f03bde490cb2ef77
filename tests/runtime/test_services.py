"""The runtime's services: registered housekeeping jobs, a resume read from the log,
and the streams of a session that goes away."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.runtime import follow
from agentd.runtime._recovery import Recovery
from agentd.runtime.housekeeping import Housekeeper, Job
from agentd.store.records import EventRecord


async def test_a_registered_job_runs_on_its_period_and_its_figures_add_up() -> None:
    keeper = Housekeeper()
    ran = asyncio.Event()
    count = 0

    async def job() -> int:
        nonlocal count
        count += 1
        if count >= 3:
            ran.set()
        return 2

    keeper.register(Job(name="tick", period_s=0.01, run=job))
    with pytest.raises(ValueError, match="registered"):
        keeper.register(Job(name="tick", period_s=1.0, run=job))
    with pytest.raises(ValueError, match="period"):
        keeper.register(Job(name="never", period_s=0, run=job))
    keeper.start()
    try:
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        await keeper.stop()
    figures = keeper.figures["tick"]
    assert figures["runs"] == count and figures["total"] == 2 * count
    assert figures["failures"] == 0 and keeper.jobs == ["tick"]


async def test_a_failing_job_is_counted_and_runs_again() -> None:
    keeper = Housekeeper()
    calls = 0
    again = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first run fails")
        again.set()

    keeper.register(Job(name="flaky", period_s=0.01, run=flaky))
    keeper.start()
    try:
        await asyncio.wait_for(again.wait(), 10)
    finally:
        await keeper.stop()
    assert keeper.figures["flaky"]["failures"] == 1
    assert keeper.figures["flaky"]["runs"] >= 1


async def test_the_runtime_registers_its_jobs_by_what_is_configured(
        settings: Settings, store_url: str) -> None:
    settings.database_url = store_url
    settings.agent_idle_s = 0
    settings.session_ttl_s = 60
    rt = Runtime(settings, await _store(store_url))
    try:
        assert "sleep" not in rt.housekeeper.jobs
        assert {"renew", "take_over", "expire", "shells"} <= set(rt.housekeeper.jobs)
        assert await rt.housekeeper.run("renew") == 0
    finally:
        await rt.store.close()


async def _store(url: str) -> Any:
    from agentd.store import open_store
    return await open_store(url)


def _ev(seq: int, event_kind: str, **data: Any) -> EventRecord:
    return EventRecord(session_id="s", seq=seq, run_id="r", kind=event_kind, data=data,
                       at=0.0)


def test_recovery_reads_steps_usage_and_the_calls_left_unfinished() -> None:
    calls = [{"id": "c1", "name": "a", "arguments": {}},
             {"id": "c2", "name": "b", "arguments": {"x": 1}},
             {"id": "c3", "name": "c", "arguments": {}}]
    events = [
        _ev(1, "run.started"),
        _ev(2, "message.assistant", text="", tool_calls=[], step=1, finish_reason="length",
            usage={"input_tokens": 3, "output_tokens": 4, "cost_usd": 0.5}),
        _ev(3, "message.assistant", text="", tool_calls=calls, step=2,
            finish_reason="tool_calls",
            usage={"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.25}),
        _ev(4, "tool.started", call_id="c1", effect_id="r/2/c1"),
        _ev(5, "tool.finished", call_id="c1", output="ok"),
        _ev(6, "tool.started", call_id="c2", effect_id="r/2/c2"),
        _ev(7, "approval.requested", effect_id="r/2/c2", name="b"),
        _ev(8, "approval.decided", effect_id="r/2/c2", action="retry"),
        # Retried, cut off again: the old decision no longer answers it.
        _ev(9, "tool.started", call_id="c2", effect_id="r/2/c2", retry=True),
    ]
    state = Recovery.of(events)
    assert (state.steps, state.cost_usd) == (2, 0.75)
    assert (state.usage.input_tokens, state.usage.output_tokens) == (4, 5)
    assert state.pieces == []  # the cut-off answer was followed by a tool step
    unfinished = {u.call.id: u for u in state.unfinished}
    assert list(unfinished) == ["c2", "c3"]
    assert unfinished["c2"].started and unfinished["c2"].decision is None
    assert unfinished["c2"].pending is None
    assert not unfinished["c3"].started
    assert [e.seq for e in state.after_last_step] == [4, 5, 6, 7, 8, 9]


def test_recovery_keeps_the_pieces_of_an_answer_being_continued() -> None:
    events = [
        _ev(1, "message.assistant", text="Once upon", tool_calls=[], step=1,
            finish_reason="length"),
        _ev(2, "message.assistant", text=" a time", tool_calls=[], step=2,
            finish_reason="length"),
    ]
    state = Recovery.of(events)
    assert state.pieces == ["Once upon", " a time"] and state.unfinished == []


@pytest.mark.parametrize("how", ["deleted", "agent deleted"])
async def test_the_streams_of_a_session_that_goes_away_end(runtime: Runtime,
                                                           how: str) -> None:
    await runtime.create_agent(name="a")
    sent = await runtime.send("a", "k", "hi")
    await runtime.wait(sent.run.id)
    sid = sent.session.id
    last = (await runtime.read_events(sid))[-1].seq
    sub = runtime.subscribe(sid)
    seen: list[Any] = []

    async def read_after(after: int) -> list[EventRecord]:
        return await runtime.read_events(sid, after=after)

    async def stream() -> None:
        async for item in follow(sub, read_after, last):
            seen.append(item)

    task = asyncio.create_task(stream())
    await asyncio.sleep(0.05)
    assert not task.done()  # a live session's stream waits for more
    if how == "deleted":
        await runtime.delete_session("a", "k")
    else:
        await runtime.delete_agent("a")
    await asyncio.wait_for(task, 10)
    assert seen == []


async def test_a_steered_away_answer_is_reset_for_streaming_clients(
        runtime: Runtime) -> None:
    """Clients streaming the answer a steer throws away get a reset before the new one
    (else a chat shows both texts)."""
    from agentd.llm.scripted import enqueue
    from agentd.runtime import Token

    await runtime.create_agent(name="a", settings={"script": [
        {"text": "first answer here", "delay_ms": 300}]})
    first = await runtime.send("a", "k", "hello")
    sub = runtime.subscribe(first.session.id)
    await asyncio.sleep(0.1)  # the model is streaming its final answer
    enqueue({"text": "answer with the steer"}, agent="a")
    await runtime.send("a", "k", "also this", mode="steer")
    await runtime.wait(first.run.id)
    tokens = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        if isinstance(item, Token):
            tokens.append(item)
    sub.close()
    resets = [i for i, t in enumerate(tokens) if t.reset]
    assert resets, "no reset token"
    before = "".join(t.text for t in tokens[:resets[-1]])
    after = "".join(t.text for t in tokens[resets[-1]:])
    assert "first" in before and after == "answer with the steer"
