"""Liveness while hostile tool calls run, and what the tool workers cost per call.

    PYTHONPATH=src python bench/stall.py [--seconds 20]

Prints one JSON line:

- ``health_p50_ms`` / ``health_p99_ms`` / ``health_max_ms``: ``GET /health`` of a live
  daemon (real socket) polled every 20 ms while two agents keep making hostile calls
  (``grep`` with ``(a+)+$`` on a line of ``a``, killed at the tool timeout, and
  ``calculator`` with ``(9**9999)**2000``); target p99 < 100 ms;
- ``hostile_greps`` / ``hostile_powers``: how many hostile calls ran meanwhile (a grep
  runs to its 3 s limit; the power is refused at once by the calculator's bound);
- ``read_file_ms`` / ``grep_ms``: mean time of one call in a worker process and in a
  thread (the old way), on a small workspace, and the difference (``*_overhead_ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from agentd.client import Client
from agentd.config import Settings
from agentd.llm.scripted import enqueue
from agentd.testing.live import LiveServer
from agentd.tools import FILE_TOOLS, ToolContext
from agentd.tools._workers import WorkerPool


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


TOKEN = "bench-token-0123456789abcdef"


def liveness(seconds: float) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="agentd-bench-stall-"))
    settings = Settings(home=home, demo_agent=False, tool_timeout_s=3.0, tokens=[TOKEN],
                        database_url=f"sqlite:///{home / 'agentd.db'}")
    stop = threading.Event()
    latencies: list[float] = []
    calls = {"grepper": 0, "counter": 0}

    def poll() -> None:
        with httpx.Client(base_url=live.url, timeout=120) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.get("/health")
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    def attack(name: str, turn: dict[str, Any]) -> None:
        with Client(live.url, timeout=120, token=TOKEN) as client:
            n = 0
            while not stop.is_set():
                n += 1
                enqueue(turn, {"text": "done"}, agent=name)
                client.send(name, f"k{n}", "go")
                calls[name] += 1

    with LiveServer(settings) as live:
        with Client(live.url, token=TOKEN) as client:
            client.create_agent("grepper", model="scripted", tools=["grep", "write_file"])
            client.create_agent("counter", model="scripted", tools=["calculator"])
            enqueue({"tool_calls": [{"name": "write_file", "arguments": {
                "path": "line", "content": "a" * 30 + "!\n"}}]}, {"text": "ok"},
                agent="grepper")
            client.send("grepper", "setup", "go")
        threads = [threading.Thread(target=poll),
                   threading.Thread(target=attack, args=("grepper", {"tool_calls": [
                       {"name": "grep", "arguments": {"pattern": "(a+)+$"}}]})),
                   threading.Thread(target=attack, args=("counter", {"tool_calls": [
                       {"name": "calculator",
                        "arguments": {"expression": "(9**9999)**2000"}}]}))]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
    return {"health_requests": len(latencies),
            "health_p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
            "health_p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
            "health_max_ms": round(max(latencies) * 1000, 2),
            "hostile_greps": calls["grepper"], "hostile_powers": calls["counter"]}


async def overhead(rounds: int) -> dict[str, Any]:
    workspace = Path(tempfile.mkdtemp(prefix="agentd-bench-ws-"))
    for i in range(20):
        (workspace / f"f{i}.py").write_text("import os\n" * 200)
    ctx = ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                      workspace=workspace)
    pool = WorkerPool(size=2)
    out: dict[str, Any] = {}
    try:
        for name, arguments in (("read_file", {"path": "f0.py"}),
                                ("grep", {"pattern": "os$"})):
            tool = FILE_TOOLS[name]
            await tool.call(arguments, ctx, 30, pool)  # the worker starts
            timings: dict[str, float] = {}
            for mode, workers in (("worker", pool), ("thread", None)):
                samples = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    await tool.call(arguments, ctx, 30, workers)
                    samples.append(time.perf_counter() - started)
                timings[mode] = statistics.mean(samples) * 1000
            out[f"{name}_worker_ms"] = round(timings["worker"], 3)
            out[f"{name}_thread_ms"] = round(timings["thread"], 3)
            out[f"{name}_overhead_ms"] = round(timings["worker"] - timings["thread"], 3)
    finally:
        await pool.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    result = {"bench": "stall", **asyncio.run(overhead(args.rounds)),
              **liveness(args.seconds)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
