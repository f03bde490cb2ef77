"""One aligned burst of schedule fires, in CPU: what claiming 10,000 fires and
starting their runs costs this process, a figure other processes' load moves less
than the wall-clock lateness of ``bench/autonomy_schedules.py``.

The runtime runs in this process on SQLite (scripted model) with its schedules task
stopped; ``--schedules`` schedules of ``--agents`` agents, each into its own session,
are all made due at once and fired by one :meth:`Schedules.fire_due` (as the task
would). Figures: ``claim_cpu_ms_per_fire`` (the claims: every fire's message, run and
claim committed; a fire whose session has nothing else active starts its run in
the same commit), ``start_cpu_ms_per_run`` (from then until every run has started:
about nothing now; before runs started with their claims, their executors were
built and the started runs' model calls made meanwhile, most of each run),
``end_cpu_ms_per_run`` (the rest: executors built, model calls, answers), and the
fires' claim and run-start lateness (``*_p99_s``: wall clock, moved by the machine's
load). ``--sessions existing`` fires
a first burst unmeasured, so that the measured one goes to sessions that have a log
(the steady state of a ``* * * * *`` schedule); ``new``: sessions the fires create.
``--gc daemon`` (default) sets the collector as the daemon's process does.

    PYTHONPATH=src .venv/bin/python bench/autonomy_burst.py [--sessions existing]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.config import Settings
from agentd.server.daemon import tune_gc


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _count(rt: Runtime, sql: str, *params: Any) -> int:
    row = await rt.store.engine.read(lambda tx: tx.one(sql, params))
    return int(row[0]) if row else 0


async def _burst(rt: Runtime, ids: list[str]) -> float:
    due = time.time() - 0.01
    await rt.store.engine.write(lambda tx: tx.executemany(
        "UPDATE schedules SET next_fire_at = ?, next_due_at = ? WHERE id = ?",
        [(due, due, i) for i in ids]))
    return due


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.gc == "daemon":
        tune_gc()
    load = os.getloadavg()[0]
    home = Path(tempfile.mkdtemp(prefix="agentd-burst-bench-"))
    rt = await Runtime.open(Settings(home=home, demo_agent=False, agent_idle_s=0,
                                     database_url=f"sqlite:///{home}/a.db"))
    try:
        await rt.schedules.stop()  # fired here, once
        n = args.schedules
        for a in range(args.agents):
            await rt.create_agent(name=f"a{a}", model="scripted", settings={"schedules": {
                "max_per_agent": -(-n // args.agents), "min_interval_s": 60}})
        ids = [r.id for r in await asyncio.gather(*(rt.schedules.create(
            f"a{i % args.agents}", ScheduleIn(content=f"tick {i}", every_s=60.0,
                                              session=f"s{i}", overlap="enqueue"), by="b")
            for i in range(n)))]
        active = "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')"
        if args.sessions == "existing":
            await _burst(rt, ids)
            await rt.schedules.fire_due()
            while await _count(rt, active):  # noqa: ASYNC110 (the store is polled)
                await asyncio.sleep(0.1)
        before = await _count(rt, "SELECT COUNT(*) FROM runs")
        due = await _burst(rt, ids)
        c0 = cpu_s()
        claimed = await rt.schedules.fire_due()
        c1 = cpu_s()
        while await _count(rt, "SELECT COUNT(*) FROM runs WHERE started_at IS NOT NULL"  # noqa: ASYNC110
                           ) < before + n:
            await asyncio.sleep(0.02)
        c2 = cpu_s()
        while await _count(rt, active):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        c3 = cpu_s()
        rows = await rt.store.engine.read(lambda tx: tx.all(
            "SELECT f.at - f.fire_at, r.started_at - f.fire_at FROM schedule_fires f "
            "JOIN runs r ON r.id = f.run_id WHERE f.fire_at = ?", (due,)))
        claims = sorted(float(r[0]) for r in rows)
        starts = sorted(float(r[1]) for r in rows)

        def p99(values: list[float]) -> float:
            return round(values[min(len(values) - 1, int(0.99 * len(values)))], 3)

        return {"bench": "autonomy_burst", "store": "sqlite", "schedules": n,
                "agents": args.agents, "sessions": args.sessions, "gc": args.gc,
                "claimed": claimed, "fires": len(rows),
                "claim_cpu_ms_per_fire": round((c1 - c0) * 1000 / n, 3),
                "start_cpu_ms_per_run": round((c2 - c1) * 1000 / n, 3),
                "end_cpu_ms_per_run": round((c3 - c2) * 1000 / n, 3),
                "claim_p99_s": p99(claims), "run_start_p99_s": p99(starts),
                "loadavg": [round(load, 2), round(os.getloadavg()[0], 2)]}
    finally:
        await rt.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--sessions", choices=("new", "existing"), default="new")
    parser.add_argument("--gc", choices=("daemon", "python"), default="daemon")
    print(orjson.dumps(asyncio.run(main(parser.parse_args()))).decode(), flush=True)
