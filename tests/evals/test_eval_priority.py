"""10,000 cases at once are 10,000 queued rows, not 10,000 runs: an eval run forks at
most its concurrency's worth at a time, and its model calls wait in the kernel's
scheduler at the batch class, so an interactive turn sent meanwhile takes the next
free slot of the lane. Decided by admission order (the model is held by the test and
let go one call at a time), not by timing. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import eventually, settings_in

from agentd.assembly import Runtime
from agentd.config import EvalsConfig, ProviderLimits
from agentd.evals.cases import case_from_run
from agentd.llm.scripted import ScriptedModel

EVAL_ANSWER = "an eval answer"


@pytest.fixture
async def runtime(tmp_path: Path, store_url: str) -> AsyncIterator[Runtime]:
    settings = settings_in(tmp_path)
    settings.database_url = store_url
    # One model call at a time on the scripted lane; two cases at a time.
    settings.providers = {"scripted": ProviderLimits(concurrency=1)}
    settings.evals = EvalsConfig(concurrency=2)
    rt = await Runtime.open(settings)
    yield rt
    await rt.close()


async def test_a_big_suite_is_queued_and_an_interactive_turn_goes_first(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    permits = asyncio.Semaphore(0)
    original = ScriptedModel.stream

    async def stream(self: ScriptedModel, request: Any) -> Any:
        evaluated = bool(self.script) and self.script[0].get("text") == EVAL_ANSWER
        started.append("eval" if evaluated else "chat")
        if evaluated:
            await permits.acquire()  # (held until the test lets it answer)
        async for event in original(self, request):
            yield event

    monkeypatch.setattr(ScriptedModel, "stream", stream)
    await runtime.create_agent(name="a")
    await runtime.create_agent(name="chat")
    sent = await runtime.send("a", "s", "hello")
    run = await runtime.wait(sent.run.id)
    started.clear()
    suite = await runtime.evals.create_suite("a", "big")
    case = await case_from_run(runtime.store, run.id)
    case["graders"] = [{"kind": "exact"}]
    case["source"]["baseline"] = {"status": "completed"}
    await runtime.store.add_cases(suite.id, [case] * 10_000, max_cases=100_000)
    eval_run = await runtime.evals.start_run(
        suite.id, settings={"script": [{"text": EVAL_ANSWER}]})
    assert eval_run.cases == 10_000

    lanes = runtime.kernel.scheduler

    def lane() -> dict[str, Any]:
        return lanes.metrics()["lanes"].get("scripted") or {}

    # Two cases under way: one call in the lane, one waiting; the rest queued rows.
    await eventually(lambda: lane().get("in_flight") == 1 and lane().get("queued") == 1,
                     what=lambda: f"two cases' calls in the lane: {lane()}")
    now = await runtime.evals.eval_run(eval_run.id)
    assert (now.counts["running"], now.counts["queued"]) == (2, 9_998), now.counts
    forks = [s.key for s in await runtime.list_sessions("a") if s.key.startswith("fork:")]
    assert len(forks) == 2, forks
    # An interactive turn joins the lane behind them.
    chat = await runtime.send("chat", "c", "are you there?", priority="interactive")
    await eventually(lambda: lane().get("queued") == 2, what="the chat call waiting")
    # One eval call answers: the lane's next slot is the interactive call's, not the
    # batch call that was waiting before it.
    permits.release()
    await eventually(lambda: len(started) >= 2, what="the next call admitted")
    assert started[:2] == ["eval", "chat"], started
    done = await runtime.wait(chat.run.id)
    assert done.status == "completed" and done.output == "echo: are you there?"
    # The interactive turn did not wait for the suite: cases are still queued.
    later = await runtime.evals.eval_run(eval_run.id)
    assert later.counts["queued"] >= 9_990 and not later.ended, later.counts
    # Cancelled: queued cases are not run, the case held in its model call stops.
    await runtime.evals.cancel_run(eval_run.id)
    for _ in range(4):
        permits.release()
    ended = await runtime.evals.wait(eval_run.id)
    assert ended.status == "cancelled", ended.counts
    assert ended.counts["cancelled"] >= 9_997 and not ended.counts.get("queued")
