"""Fan-out of subtasks: one run starts N children and waits for them all.

    python bench/autonomy_fanout.py                         # 100 children, 500 ms each
    python bench/autonomy_fanout.py --children 200 --delay-ms 1000
    python bench/autonomy_fanout.py --database-url postgresql://postgres@127.0.0.1/bench

An embedded runtime (a fresh AGENTD_HOME; SQLite unless --database-url) with two
agents on the scripted model: ``boss`` calls ``subtask_start`` N times in one step (the
children run as ``worker``), then ``subtask_wait`` for all, then answers; ``worker``
answers each child after ``delay_ms``. The makespan is from sending the message to
the parent's completion; the ideal is what it would be if nothing but the children's
model latency took time (one ``delay_ms``: they all run at once). Also reported: when
the last child was started and when the last one ended, and the invariants (each
child started once, linked once, its end logged once in the parent's session, the
parent's usage including every child's). Progress goes to stderr; stdout gets one
JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentd.assembly import Runtime
from agentd.config import Settings


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def fan_out(children: int, delay_ms: float, database_url: str | None) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="agentd-fanout-"))
    settings = Settings(home=home / "home", demo_agent=False,
                        database_url=database_url or f"sqlite:///{home / 'agentd.db'}")
    runtime = await Runtime.open(settings)
    try:
        await runtime.create_agent(name="worker", settings={
            "script": [{"text": "done", "delay_ms": delay_ms}]})
        starts = [{"name": "subtask_start", "arguments": {
            "title": f"part {i}", "instructions": f"do part {i}", "agent": "worker"}}
            for i in range(children)]
        await runtime.create_agent(name="boss", tools=["subtask_start", "subtask_wait"],
                                   settings={
            "max_steps": 10,
            "delegation": {"calls": {"allow": ["worker"]}, "subtasks": {
                "max_children": children, "max_concurrent": children,
                "max_wait_s": 600}},
            "script": [{"tool_calls": starts},
                       {"tool_calls": [{"name": "subtask_wait",
                                        "arguments": {"timeout_s": 600}}]},
                       {"text": "merged"}]})
        info(f"fan-out of {children} subtasks, {delay_ms:g} ms each ...")
        t0 = time.time()
        sent = await runtime.send("boss", "bench", "go")
        run = await runtime.wait(sent.run.id)
        makespan = time.time() - t0
        assert run.status == "completed", (run.status, run.error)
        found = await runtime.list_subtasks(sent.run.id)
        child_runs = {c.child_run: await runtime.store.get_run(c.child_run) for c in found}
        last_start = max(r.created_at for r in child_runs.values()) - t0
        last_end = max(r.finished_at or 0.0 for r in child_runs.values()) - t0
        # subtask.finished is logged right after each child ends: give it a moment.
        deadline = time.monotonic() + 30
        while True:
            events = await runtime.read_events(sent.session.id)
            ended = [e for e in events if e.kind == "subtask.finished"]
            if len(ended) >= children or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        child_tokens = sum(int((r.usage or {}).get("input_tokens", 0))
                           for r in child_runs.values())
        own_tokens = sum(int(e.data["usage"]["input_tokens"]) for e in events
                         if e.kind == "message.assistant")
        ideal = delay_ms / 1000.0
        return {
            "bench": "autonomy_fanout", "store": runtime.store.dialect,
            "children": children, "delay_ms": delay_ms,
            "makespan_s": round(makespan, 3), "ideal_s": round(ideal, 3),
            "overhead_s": round(makespan - ideal, 3),
            "ratio": round(makespan / ideal, 3) if ideal else None,
            "last_child_started_s": round(last_start, 3),
            "last_child_ended_s": round(last_end, 3),
            "completed_children": sum(r.status == "completed" for r in child_runs.values()),
            "linked_once": len(found) == children == len(child_runs),
            "started_events": sum(e.kind == "subtask.started" for e in events),
            "finished_events_once": len({e.data["subtask_id"] for e in ended}) == len(ended)
                                    == children,
            "usage_includes_children": run.usage.get("input_tokens") == own_tokens
                                       + child_tokens,
        }
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=500.0)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    figures = asyncio.run(fan_out(args.children, args.delay_ms, args.database_url))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
