"""What replay, forks and evaluations cost (issue 35, item 5), in one process on
SQLite at the product's durability:

    PYTHONPATH=src .venv/bin/python bench/evals.py
    PYTHONPATH=src .venv/bin/python bench/evals.py --cases 100 --big 2000 --turns 40

1. **Replay**: a 20-step run (``bench/replay.py``'s: 19 tool steps, reads in parallel
   and writes, then the answer) replayed ``--replays`` times: wall ms (p50, max),
   tokens charged (0) and model calls (0).
2. **An eval of ``--cases`` cases on the scripted model**: as many real runs of an
   agent (a tool step, then the answer; each its own session) made into a suite, then
   an eval run forking every case onto a candidate (other instructions, tools
   answered from the recording): seconds from queued to its report, cases a second.
3. **Interactive turns while a big suite runs**: a suite of ``--big`` cases (copies
   of one case) runs at the batch class, each case's model call holding the scripted
   lane for ``--case-ms``, the lane limited to ``--lane`` calls at once (a provider's
   concurrency); meanwhile ``--turns`` interactive turns of another agent on the same
   lane, one after another: their latency (p50, p90, max ms) against the same turns
   with no suite running, and how many cases the suite had done when they ended.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from agentd.assembly import Runtime
from agentd.config import EvalsConfig, ProviderLimits, Settings
from agentd.evals.cases import case_from_run
from agentd.llm.scripted import ScriptedModel
from replay import peek, put, script

MODEL_CALLS = [0]


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p90": round(ordered[max(0, int(len(ordered) * 0.9) - 1)], 1),
            "max": round(ordered[-1], 1)}


async def _replays(runtime: Runtime, replays: int) -> dict[str, Any]:
    for t in (peek, put):
        runtime.tools.register(t)
    await runtime.create_agent(name="replayed", tools=["peek", "put"],
                               settings={"script": script(20), "max_steps": 100})
    sent = await runtime.send("replayed", "k", "go")
    run = await runtime.wait(sent.run.id)
    assert run.status == "completed" and run.steps == 20, run
    ledger = await runtime.usage_report(group_by=["agent"])
    calls = MODEL_CALLS[0]
    times = []
    for _ in range(replays):
        began = time.perf_counter()
        answer = await runtime.replay(run.id)
        times.append((time.perf_counter() - began) * 1000)
        assert answer["matches"], answer
    return {"steps": 20, "replays": replays, "ms": _ms(times),
            "model_calls": MODEL_CALLS[0] - calls,
            "tokens_charged": 0 if await runtime.usage_report(group_by=["agent"]) == ledger
            else "some"}


async def _eval(runtime: Runtime, cases: int) -> dict[str, Any]:
    await runtime.create_agent(name="graded", tools=["peek"], settings={"script": [
        {"tool_calls": [{"name": "peek", "arguments": {"key": "x"}}]},
        {"text": "the answer"}]})
    suite = await runtime.evals.create_suite("graded", "bench")
    runs = await asyncio.gather(*(runtime.send("graded", f"u{i}", f"question {i}")
                                  for i in range(cases)))
    for sent in runs:
        done = await runtime.wait(sent.run.id)
        await runtime.evals.add_from_run(suite.id, done.id, graders=[
            {"kind": "exact"}, {"kind": "tool_called", "tool": "peek"},
            {"kind": "max_steps", "steps": 2}])
    began = time.perf_counter()
    run = await runtime.evals.start_run(suite.id, instructions="Answer briefly.")
    done_run = await runtime.evals.wait(run.id)
    seconds = time.perf_counter() - began
    assert done_run.summary is not None and done_run.summary["passed"] == cases, \
        done_run.summary
    return {"cases": cases, "seconds": round(seconds, 2),
            "cases_per_s": round(cases / seconds, 1),
            "concurrency": runtime.settings.evals.concurrency,
            "passed": done_run.summary["passed"]}


async def _turns(runtime: Runtime, n: int) -> list[float]:
    times = []
    for i in range(n):
        began = time.perf_counter()
        sent = await runtime.send("chat", "c", f"hello {i}", priority="interactive",
                                  start=True)
        run = await runtime.wait(sent.run.id)
        assert run.status == "completed", run
        times.append((time.perf_counter() - began) * 1000)
    return times


async def _under_load(runtime: Runtime, big: int, turns: int, case_ms: int
                      ) -> dict[str, Any]:
    await runtime.create_agent(name="chat")
    await runtime.create_agent(name="loaded")
    sent = await runtime.send("loaded", "s", "hello")
    run = await runtime.wait(sent.run.id)
    idle = await _turns(runtime, turns)
    suite = await runtime.evals.create_suite("loaded", "big")
    case = await case_from_run(runtime.store, run.id)
    case["graders"] = [{"kind": "regex", "pattern": "^echo"}]
    case["source"]["baseline"] = {"status": "completed"}
    began = time.perf_counter()
    await runtime.store.add_cases(suite.id, [case] * big, max_cases=big)
    queued_s = time.perf_counter() - began
    started = time.perf_counter()
    eval_run = await runtime.evals.start_run(suite.id, settings={
        "script": [{"text": "echo: slow", "delay_ms": case_ms}]})
    for _ in range(2000):  # (the suite under way: some cases done)
        if (await runtime.evals.eval_run(eval_run.id)).counts.get("passed", 0) >= 4:
            break
        await asyncio.sleep(0.05)
    loaded = await _turns(runtime, turns)
    during = await runtime.evals.eval_run(eval_run.id)
    await runtime.evals.cancel_run(eval_run.id)
    ended = await runtime.evals.wait(eval_run.id)
    return {"big_cases": big, "add_cases_s": round(queued_s, 2),
            "case_model_ms": case_ms, "turns": turns,
            "turn_ms_idle": _ms(idle), "turn_ms_during_suite": _ms(loaded),
            "suite_cases_done_meanwhile": during.counts.get("passed", 0),
            "suite_cases_queued_meanwhile": during.counts.get("queued", 0),
            "suite_s_before_cancel": round(time.perf_counter() - started, 1),
            "suite_status": ended.status}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    original = ScriptedModel.stream

    async def counted(self: ScriptedModel, request: Any) -> Any:
        MODEL_CALLS[0] += 1
        async for event in original(self, request):
            yield event

    ScriptedModel.stream = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), demo_agent=False,
                            providers={"scripted": ProviderLimits(concurrency=args.lane)},
                            evals=EvalsConfig(concurrency=args.concurrency, poll_s=0.5))
        runtime = await Runtime.open(settings)
        try:
            return {"bench": "evals",
                    "replay": await _replays(runtime, args.replays),
                    "eval": await _eval(runtime, args.cases),
                    "interactive": await _under_load(runtime, args.big, args.turns,
                                                     args.case_ms)}
        finally:
            await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replays", type=int, default=20)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--big", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--case-ms", type=int, default=20)
    parser.add_argument("--lane", type=int, default=4,
                        help="the scripted lane's concurrency (a provider's limit)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="[evals] concurrency: cases at once")
    print(orjson.dumps(asyncio.run(main(parser.parse_args()))).decode())
    sys.exit(0)
