"""Schedules at scale: 10,000 schedules firing every minute on one runtime.

The runtime runs in this process (``Runtime.open``: the same service, loop, store and
supervisor as the daemon, without HTTP, which schedules do not use), on SQLite, with
the offline scripted model (each fire is a real run: message, queued run, model call,
answer, all committed). ``--agents`` agents get ``--schedules`` schedules between them,
each ``every_s = 60`` into its own session, overlap ``enqueue``.

* ``--mode aligned`` (default): every schedule's fire times are on the same second (as
  ``* * * * *`` cron jobs all are): 10,000 fires due at once each minute.
* ``--mode spread``: fire times spread evenly over the minute (167 per second).

After one warm-up minute the fires of ``--minutes`` minutes are measured: lateness is
the time a fire's claim committed (``schedule_fires.at``, written in the transaction of
its run) minus its fire time; ``run_start_*`` is the same for the time each fire's run
started (a fire whose session has nothing else active starts its run in its claim's
transaction), ``run_end_*`` for the time it ended (the runs of a burst are 10,000
model calls, made one after another once the burst is claimed). Then the schedules
are moved an hour out and the CPU the process uses in ``--idle-s`` seconds with
10,000 schedules and nothing due is measured (``idle_cpu_s``), as is the time of one
due-query (``due_query_ms``). ``loadavg``:
the machine's load average at the start and the end (other processes' CPU);
``cpu_per_fire_ms``: this process's CPU over the measured minutes per fire (claim,
run and all), a figure other processes' load moves less than the lateness.
``--gc daemon`` (default) sets the garbage collector as the daemon's process does
(``agentd.server.daemon.tune_gc``: the runtime is in this process, not in a daemon);
``--gc python`` keeps Python's defaults.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/autonomy_schedules.py [--schedules 10000] [--minutes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.config import Settings
from agentd.server.daemon import tune_gc


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    if getattr(args, "gc", "daemon") == "daemon":
        tune_gc()  # as the daemon's process does (agentd.server.daemon)
    home = Path(tempfile.mkdtemp(prefix="agentd-sched-bench-"))
    settings = Settings(home=home, demo_agent=False, database_url=f"sqlite:///{home}/a.db",
                        agent_idle_s=0)
    runtime = await Runtime.open(settings)
    try:
        per_agent = -(-args.schedules // args.agents)
        for a in range(args.agents):
            await runtime.create_agent(name=f"a{a}", model="scripted", settings={
                "schedules": {"max_per_agent": per_agent, "min_interval_s": 60}})
        info(f"creating {args.schedules} schedules")
        made = await asyncio.gather(*(
            runtime.schedules.create(f"a{i % args.agents}", ScheduleIn(
                content=f"tick {i}", every_s=60.0, session=f"s{i}", overlap="enqueue"),
                by="bench")
            for i in range(args.schedules)))
        # Line the fire times up: the next whole minute + 30 s of slack, and (spread)
        # an even offset within the minute per schedule.
        start = (time.time() // 60 + 1) * 60 + 30 if args.schedules > 2000 else (
            time.time() // 60 + 1) * 60
        rows = [((start + (i * 60.0 / len(made) if args.mode == "spread" else 0.0)),
                 rec.id) for i, rec in enumerate(made)]
        await runtime.store.engine.write(lambda tx: tx.executemany(
            "UPDATE schedules SET next_fire_at = ?, next_due_at = ? WHERE id = ?",
            [(t, t, sid) for t, sid in rows]))
        made.clear()  # the daemon holds no such lists: the collector must not scan them
        rows.clear()
        runtime.schedules.wake()
        measure_from = start + 60  # the first minute warms up
        end = measure_from + 60 * args.minutes
        info(f"firing from {time.strftime('%H:%M:%S', time.localtime(start))}, "
             f"measuring {args.minutes} minute(s) after a warm-up minute")
        await asyncio.sleep(max(measure_from - 1 - time.time(), 0.0))
        cpu_from = cpu_s()
        await asyncio.sleep(max(end - 1 - time.time(), 0.0))
        cpu_measured = cpu_s() - cpu_from
        await asyncio.sleep(max(end + 5 - time.time(), 0.0))
        fires = await runtime.store.engine.read(lambda tx: tx.all(
            "SELECT f.fire_at, f.at, f.status, r.started_at, r.finished_at "
            "FROM schedule_fires f "
            "LEFT JOIN runs r ON r.id = f.run_id WHERE f.fire_at >= ? AND "
            "f.fire_at < ?", (measure_from, end)))
        lateness = [float(at) - float(fire_at) for fire_at, at, status, _, _ in fires
                    if status == "fired"]
        started = [float(s) - float(fire_at) for fire_at, _, status, s, _ in fires
                   if status == "fired" and s is not None]
        ended = [float(e) - float(fire_at) for fire_at, _, status, _, e in fires
                 if status == "fired" and e is not None]
        skipped = sum(1 for _, _, status, _, _ in fires if status != "fired")
        expected = args.schedules * args.minutes
        figures = dict(runtime.schedules.figures)

        # Idle: the same schedules, nothing due for an hour.
        await runtime.store.engine.write(lambda tx: tx.execute(
            "UPDATE schedules SET next_fire_at = next_fire_at + 3600, "
            "next_due_at = next_due_at + 3600"))
        runtime.schedules.wake()
        queued = await runtime.store.engine.read(lambda tx: tx.one(
            "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')"))
        while queued and queued[0]:
            await asyncio.sleep(1.0)
            queued = await runtime.store.engine.read(lambda tx: tx.one(
                "SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running')"))
        await asyncio.sleep(2.0)
        info(f"idle for {args.idle_s} s")
        before = cpu_s()
        await asyncio.sleep(args.idle_s)
        idle = cpu_s() - before
        t0 = time.perf_counter()
        for _ in range(100):
            await runtime.store.due_schedules(time.time(), 512)
        due_query_ms = (time.perf_counter() - t0) * 10
        return {
            "bench": "autonomy_schedules", "store": "sqlite", "mode": args.mode,
            "schedules": args.schedules, "agents": args.agents, "minutes": args.minutes,
            "fires_expected": expected, "fires": len(lateness), "skipped": skipped,
            "lateness_p50_s": round(percentile(lateness, 0.50), 4),
            "lateness_p99_s": round(percentile(lateness, 0.99), 4),
            "lateness_max_s": round(max(lateness, default=float("nan")), 4),
            "runs_started": len(started),
            "run_start_p50_s": round(percentile(started, 0.50), 3),
            "run_start_p99_s": round(percentile(started, 0.99), 3),
            "run_start_max_s": round(max(started, default=float("nan")), 3),
            "runs_ended": len(ended),
            "run_end_p50_s": round(percentile(ended, 0.50), 3),
            "run_end_p99_s": round(percentile(ended, 0.99), 3),
            "gc": getattr(args, "gc", "daemon"),
            "cpu_per_fire_ms": round(cpu_measured * 1000 / max(len(lateness), 1), 3),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "idle_s": args.idle_s, "idle_cpu_s": round(idle, 4),
            "due_query_ms": round(due_query_ms, 3),
            "passes": figures["passes"], "lost": figures["lost"],
            "loadavg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        }
    finally:
        await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument("--mode", choices=("aligned", "spread"), default="aligned")
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--gc", choices=("daemon", "python"), default="daemon",
                        help="the daemon's collector settings (default) or Python's")
    result = asyncio.run(main(parser.parse_args()))
    print(orjson.dumps(result).decode(), flush=True)
