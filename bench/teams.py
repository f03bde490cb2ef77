"""Teams: what playing a pattern through member runs costs on top of the members.

    python bench/teams.py                                   # 10-step pipeline, 8-way fan-out
    python bench/teams.py --steps 20 --fan-out 16 --delay-ms 500 --runs 3
    python bench/teams.py --database-url postgresql://postgres@127.0.0.1/bench

An embedded runtime (a fresh AGENTD_HOME; SQLite unless --database-url), members on
the scripted model:

- ``pipeline``: a team of ``--steps`` members in a row, each answering at once (an
  echo); the figure is the team run's wall time per step: the whole overhead of one
  step (start the child run in its own session, link it, run it, wait for it, log its
  end), since the members' model takes no time.
- ``parallel``: a team of ``--fan-out`` members each answering after ``--delay-ms``;
  the makespan against the ideal (one ``delay_ms``: they run at once).

Each is run ``--runs`` times (the median reported, all listed). Also checked: every
run completed, with one child per step. Progress goes to stderr; stdout gets one JSON
line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentd.assembly import Runtime
from agentd.config import Settings


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def timed(runtime: Runtime, team: str, key: str, expect_children: int
                ) -> tuple[float, bool]:
    t0 = time.perf_counter()
    sent = await runtime.send(team, key, "go")
    run = await runtime.wait(sent.run.id)
    elapsed = time.perf_counter() - t0
    children = await runtime.list_subtasks(sent.run.id)
    ok = run.status == "completed" and len(children) == expect_children
    return elapsed, ok


async def bench(steps: int, fan_out: int, delay_ms: float, runs: int,
                database_url: str | None) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="agentd-teams-"))
    settings = Settings(home=home / "home", demo_agent=False,
                        database_url=database_url or f"sqlite:///{home / 'agentd.db'}")
    runtime = await Runtime.open(settings)
    try:
        limits = {"subtasks": {"max_children": max(steps, fan_out),
                               "max_concurrent": fan_out}}
        for i in range(steps):
            await runtime.create_agent(name=f"m{i}")
        await runtime.create_agent(name="pipe", settings={"delegation": limits, "team": {
            "pattern": "pipeline", "members": [f"m{i}" for i in range(steps)]}})
        for i in range(fan_out):
            await runtime.create_agent(name=f"w{i}", settings={
                "script": [{"text": f"part {i}", "delay_ms": delay_ms}]})
        await runtime.create_agent(name="fan", settings={"delegation": limits, "team": {
            "pattern": "parallel", "members": [f"w{i}" for i in range(fan_out)]}})
        pipe: list[float] = []
        fan: list[float] = []
        all_ok = True
        for n in range(runs):
            elapsed, ok = await timed(runtime, "pipe", f"p{n}", steps)
            pipe.append(elapsed)
            all_ok &= ok
            elapsed, ok = await timed(runtime, "fan", f"f{n}", fan_out)
            fan.append(elapsed)
            all_ok &= ok
            info(f"run {n + 1}/{runs}: pipeline {pipe[-1]:.3f} s, parallel {fan[-1]:.3f} s")
        per_step = [t / steps * 1000 for t in pipe]
        ideal = delay_ms / 1000
        return {
            "bench": "teams", "store": runtime.store.dialect, "runs": runs,
            "pipeline_steps": steps,
            "pipeline_ms_per_step": round(statistics.median(per_step), 2),
            "pipeline_ms_per_step_all": [round(v, 2) for v in per_step],
            "fan_out": fan_out, "delay_ms": delay_ms,
            "parallel_makespan_s": round(statistics.median(fan), 3),
            "parallel_makespan_all_s": [round(v, 3) for v in fan],
            "parallel_ideal_s": round(ideal, 3),
            "all_completed_with_one_child_per_step": all_ok,
        }
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fan-out", type=int, default=8)
    parser.add_argument("--delay-ms", type=float, default=500.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    figures = asyncio.run(bench(args.steps, args.fan_out, args.delay_ms, args.runs,
                                args.database_url))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
