"""The model-judged rubric: through the kernel, its usage on the agent's ledger; and a
grader that raises or hangs errors its case while the suite goes on (the time limit on
the daemon's clock: a FakeClock here, moved by the test). SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentd.assembly import Runtime
from agentd.config import EvalsConfig, Settings
from agentd.evals.judge import Judge
from agentd.testing import FakeClock

VERDICT = {"pass": True, "reason": "polite and on topic"}


async def _suite(rt: Runtime, graders_of: list[list[dict[str, Any]]]) -> str:
    await rt.create_agent(name="a")
    suite = await rt.evals.create_suite("a", "judged")
    for i, graders in enumerate(graders_of):
        sent = await rt.send("a", f"u{i}", f"question {i}")
        run = await rt.wait(sent.run.id)
        await rt.evals.add_from_run(suite.id, run.id, graders=graders)
    return suite.id


def _rubric(**judge: Any) -> dict[str, Any]:
    return {"kind": "rubric", "rubric": "The answer repeats the question.", **judge}


async def test_a_rubric_is_judged_by_a_model_and_counted_in_usage(runtime: Runtime) -> None:
    suite = await _suite(runtime, [
        [_rubric(settings={"script": [{"json": VERDICT}]})],
        [_rubric(settings={"script": [{"json": {"pass": False, "reason": "rude"}}]})]])
    before = await runtime.usage_report(group_by=["agent"])
    run = await runtime.evals.start_run(suite)
    done = await runtime.evals.wait(run.id)
    results = [r.to_api() for r in await runtime.evals.results(done.id)]
    assert [r["status"] for r in results] == ["passed", "failed"]
    assert results[0]["grades"][0]["reason"].endswith("polite and on topic")
    assert results[1]["grades"][0]["passed"] is False
    # The judges' calls are on the agent's ledger (the forks' own calls too).
    assert results[0]["judge_usage"]["calls"] == 1
    assert done.summary is not None and done.summary["judge_usage"]["input_tokens"] > 0
    after = await runtime.usage_report(group_by=["agent"])
    calls = {row["agent"]: row["calls"] for row in after}
    was = {row["agent"]: row["calls"] for row in before}
    assert calls["a"] - was.get("a", 0) == 4  # two forks, two judges
    # The baseline is not judged (a judge's call costs): said so.
    assert results[0]["baseline"]["grades"][0]["reason"] == "not judged"


async def test_a_grader_that_raises_errors_its_case_and_the_suite_goes_on(
        runtime: Runtime) -> None:
    suite = await _suite(runtime, [
        [_rubric(settings={"script": [{"error": "the judge fell over"}]})],
        [{"kind": "exact"}],
        [_rubric(settings={"script": [{"text": "I think it is fine"}]})]])
    done = await runtime.evals.wait((await runtime.evals.start_run(suite)).id)
    results = [r.to_api() for r in await runtime.evals.results(done.id)]
    assert [r["status"] for r in results] == ["errored", "passed", "errored"]
    assert "the judge fell over" in results[0]["grades"][0]["error"]
    assert "no verdict" in results[2]["grades"][0]["error"]
    assert done.summary is not None and done.summary["errored"] == 2
    assert done.summary["gate"]["passed"] is False


@pytest.fixture
async def clocked(tmp_path: Any, store_url: str) -> AsyncIterator[tuple[Runtime, FakeClock]]:
    from tests.conftest import settings_in

    settings: Settings = settings_in(tmp_path)
    settings.database_url = store_url
    settings.evals = EvalsConfig(grader_timeout_s=60.0)
    clock = FakeClock()
    rt = await Runtime.open(settings, clock=clock)
    yield rt, clock
    await rt.close()


async def test_a_grader_that_hangs_errors_its_case_at_the_time_limit(
        clocked: tuple[Runtime, FakeClock], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, clock = clocked
    judging = asyncio.Event()
    grade = Judge.grade

    async def noted(self: Judge, *args: Any, **kwargs: Any) -> Any:
        judging.set()
        return await grade(self, *args, **kwargs)

    monkeypatch.setattr(Judge, "grade", noted)
    # The judge takes ten minutes of real time to answer: far past the limit.
    suite = await _suite(runtime, [
        [_rubric(settings={"script": [{"json": VERDICT, "delay_ms": 600_000}]})],
        [{"kind": "exact"}]])
    run = await runtime.evals.start_run(suite, concurrency=1)
    await judging.wait()
    await clock.advance(59.0)
    assert (await runtime.evals.eval_run(run.id)).counts["running"] == 1
    await clock.advance(1.0)
    done = await runtime.evals.wait(run.id)
    results = [r.to_api() for r in await runtime.evals.results(done.id)]
    assert [r["status"] for r in results] == ["errored", "passed"]
    assert "did not finish within 60s" in results[0]["grades"][0]["error"]
