"""What a configuration reload costs, and that it loses no model call (issue 33, item 7).

One process over ASGI, SQLite. agentd.toml gives the ``scripted`` provider's lane a
concurrency; ``--clients`` clients send turns (wait=true) to their own agents, whose
scripted answers take ``--delay-ms`` each, so that calls queue in the kernel's lane.
Meanwhile ``POST /v1/admin/reload`` is called ``--reloads`` times, the file
switching the lane's concurrency between 1 and 4 each time (a live change the
scheduler applies to a lane holding waiters), then as many times unchanged.

Reported: the reload's wall time over HTTP (ASGI) with a change and without, p50,
p99 and max in ms; the most calls queued in the lane when a reload began; the turns
sent, completed and failed, and ``lost`` (sent but neither: must be 0). stdout gets
one JSON line; progress goes to stderr.

    PYTHONPATH=src .venv/bin/python bench/reload.py [--clients 8] [--reloads 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson

from agentd.assembly import Runtime
from agentd.config import load_settings
from agentd.server.app import create_app

TOKEN = "bench-reload-admin-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _toml(concurrency: int) -> str:
    return (f'demo_agent = false\nagent_idle_s = 0\ntokens = ["{TOKEN}"]\n\n'
            f"[providers.scripted]\nconcurrency = {concurrency}\n")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def _client(api: httpx.AsyncClient, name: str, stop: asyncio.Event,
                  counts: dict[str, int]) -> None:
    turn = 0
    while not stop.is_set():
        turn += 1
        counts["sent"] += 1
        answer = await api.post(f"/v1/agents/{name}/sessions/s{turn % 4}/messages",
                                headers=AUTH, json={"content": "hi", "wait": True})
        status = answer.json().get("status") if answer.status_code == 200 else None
        counts["completed" if status == "completed" else "failed"] += 1


async def _reloads(api: httpx.AsyncClient, runtime: Runtime, file: Path, n: int, *,
                   change: bool) -> tuple[list[float], int]:
    times: list[float] = []
    most_queued = 0
    for i in range(n):
        if change:
            await asyncio.to_thread(file.write_text, _toml(1 if i % 2 == 0 else 4))
        most_queued = max(most_queued, runtime.kernel.scheduler.queued("scripted"))
        started = time.perf_counter()
        answer = await api.post("/v1/admin/reload", headers=AUTH)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
        assert answer.json()["unchanged"] is not change, answer.text
        await asyncio.sleep(0.01)  # (let turns move between reloads)
    return times, most_queued


async def main(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="agentd-bench-reload-")) / "home"
    home.mkdir()
    os.environ["AGENTD_HOME"] = str(home)
    file = home / "agentd.toml"
    file.write_text(_toml(4))  # (the first reload makes it 1)
    load = partial(load_settings, _env_file=None)
    settings = load()
    runtime = await Runtime.open(settings, reload_from=load)
    app = create_app(settings, runtime)
    counts = {"sent": 0, "completed": 0, "failed": 0}
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench",
                timeout=120) as api:
            script = [{"text": "ok", "delay_ms": args.delay_ms}]
            for i in range(args.clients):
                made = await api.post("/v1/agents", headers=AUTH, json={
                    "name": f"a{i}", "settings": {"script": script}})
                assert made.status_code == 201, made.text
            stop = asyncio.Event()
            clients = [asyncio.create_task(_client(api, f"a{i}", stop, counts))
                       for i in range(args.clients)]
            info(f"{args.clients} clients sending; {args.reloads} reloads with a change")
            changed, most_queued = await _reloads(api, runtime, file, args.reloads,
                                                  change=True)
            info(f"{args.reloads} reloads without a change")
            same, _ = await _reloads(api, runtime, file, args.reloads, change=False)
            stop.set()
            await asyncio.gather(*clients)
            await runtime.wait_idle()
    finally:
        await runtime.close()
    return {
        "bench": "reload", "clients": args.clients, "delay_ms": args.delay_ms,
        "reloads": args.reloads,
        "reload_ms": {"p50": _pct(changed, 0.5), "p99": _pct(changed, 0.99),
                      "max": round(max(changed), 3),
                      "mean": round(statistics.fmean(changed), 3)},
        "unchanged_ms": {"p50": _pct(same, 0.5), "p99": _pct(same, 0.99),
                         "max": round(max(same), 3)},
        "most_queued_at_reload": most_queued,
        "turns_sent": counts["sent"], "turns_completed": counts["completed"],
        "turns_failed": counts["failed"],
        "lost": counts["sent"] - counts["completed"] - counts["failed"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reloads", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=20)
    result = asyncio.run(main(parser.parse_args()))
    print(orjson.dumps(result).decode(), flush=True)
