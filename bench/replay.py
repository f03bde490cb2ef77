"""What replaying a run costs: a 20-step run (19 tool steps, reads in parallel and
writes, then the answer) replayed from its log, in process, SQLite at the product's
durability.

    PYTHONPATH=src .venv/bin/python bench/replay.py
    PYTHONPATH=src .venv/bin/python bench/replay.py --replays 50 --steps 20

One runtime (``agentd.assembly.Runtime``) on a fresh AGENTD_HOME; an agent on the
scripted model with ``peek`` (read-only) and ``put`` tools runs the run once, then it
is replayed ``--replays`` times one after another (``Runtime.replay``: a scratch
session forked, the run sent again, every answer and result served from the log, the
two logs compared). Checks that every replay matches, that the scripted model and the
tools were not called again and that no tokens were charged. Prints one JSON line:
the original run's wall time, the replays' p50 / p90 / max wall time and p50 CPU
time of the process (ms: the rest is waiting, for the disk mostly: each of the
replay's ~60 commits is an fsync at the product's ``synchronous=FULL``), model calls
and tool runs during the replays (0), tokens charged by them (0).
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
from agentd.config import Settings
from agentd.llm.scripted import ScriptedModel
from agentd.tools import tool

RAN: list[str] = []
MODEL_CALLS = [0]


@tool(read_only=True)
def peek(key: str) -> str:
    """A read."""
    RAN.append(key)
    return f"value of {key}"


@tool
def put(key: str) -> str:
    """A write."""
    RAN.append(key)
    return f"stored {key}"


def script(steps: int) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for i in range(steps - 1):
        if i % 2:
            turns.append({"tool_calls": [{"name": "put", "arguments": {"key": f"k{i}"}}]})
        else:
            turns.append({"tool_calls": [{"name": "peek", "arguments": {"key": f"k{i}.{j}"}}
                                         for j in range(3)]})
    return [*turns, {"text": "done"}]


async def main(steps: int, replays: int) -> dict[str, Any]:
    original = ScriptedModel.stream

    async def counted(self: ScriptedModel, request: Any) -> Any:
        MODEL_CALLS[0] += 1
        async for event in original(self, request):
            yield event

    ScriptedModel.stream = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), demo_agent=False)
        runtime = await Runtime.open(settings)
        try:
            for t in (peek, put):
                runtime.tools.register(t)
            await runtime.create_agent(name="a", tools=["peek", "put"],
                                       settings={"script": script(steps), "max_steps": 100})
            began = time.perf_counter()
            sent = await runtime.send("a", "k", "go")
            run = await runtime.wait(sent.run.id)
            run_ms = (time.perf_counter() - began) * 1000
            assert run.status == "completed" and run.steps == steps, run
            ledger = await runtime.usage_report(group_by=["agent"])
            calls, ran = MODEL_CALLS[0], len(RAN)
            times: list[float] = []
            cpu: list[float] = []
            for _ in range(replays):
                began, began_cpu = time.perf_counter(), time.process_time()
                answer = await runtime.replay(run.id)
                times.append((time.perf_counter() - began) * 1000)
                cpu.append((time.process_time() - began_cpu) * 1000)
                assert answer["matches"], answer
            charged = (await runtime.usage_report(group_by=["agent"])) != ledger
            times.sort()
            return {"bench": "replay", "steps": steps, "replays": replays,
                    "run_ms": round(run_ms, 1),
                    "replay_ms_p50": round(statistics.median(times), 1),
                    "replay_ms_p90": round(times[int(len(times) * 0.9) - 1], 1),
                    "replay_ms_max": round(times[-1], 1),
                    "replay_cpu_ms_p50": round(statistics.median(cpu), 1),
                    "model_calls": MODEL_CALLS[0] - calls, "tools_run": len(RAN) - ran,
                    "tokens_charged": 0 if not charged else "some"}
        finally:
            await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--replays", type=int, default=20)
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(main(args.steps, args.replays))).decode())
    sys.exit(0)
