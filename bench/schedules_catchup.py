"""Schedules catching up after a daemon was down (issue 33, item 5): ``missed: "all"``.

The runtime runs in this process (``Runtime.open``, as ``bench/autonomy_schedules.py``
does), on SQLite or on a fresh schema of a PostgreSQL database, with the offline
scripted model (each fire is a real run). ``--schedules`` schedules (``every_s``
``--every``, each into its own session, ``missed: "all"``, a one-hour catch-up
window, overlap ``enqueue``) are made; the runtime is closed, and the schedules are
set back ``--behind`` fire times (what a daemon down that long leaves due); then the
runtime is opened again: ``catch_up_s`` is the time from the first claim of a fire
time due when it opened to the last one (the claims' commit times), ``fires_per_s``
those fire times over it, while the runs they start run too. Then for ``--after-s``
seconds more it keeps up; the store is read back: every schedule's claims from its
first fire time to its last must be there once each (``gaps``, ``duplicates``: 0),
none counted missed (``missed``).

    PYTHONPATH=src .venv/bin/python bench/schedules_catchup.py \\
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--schedules 20] \\
        [--behind 60] [--every 1]

Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from agentd.assembly import Runtime
from agentd.autonomy.schedules import ScheduleIn
from agentd.config import Settings
from agentd.server.daemon import tune_gc
from agentd.store import open_store

FAST = {"schedules": {"min_interval_s": 1, "max_per_agent": 100_000}}


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _claims(rt: Runtime) -> dict[str, list[float]]:
    rows = await rt.store.engine.read(lambda tx: tx.all(
        "SELECT schedule_id, fire_at FROM schedule_fires WHERE status = 'fired' "
        "ORDER BY schedule_id, fire_at"))
    out: dict[str, list[float]] = {}
    for schedule_id, fire_at in rows:
        out.setdefault(str(schedule_id), []).append(float(fire_at))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="agentd-catchup-"))
    schema = None
    url = f"sqlite:///{home / 'agentd.db'}"
    if args.postgres:
        import psycopg

        schema = f"catchup_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in args.postgres else "?"
        url = f"{args.postgres}{sep}options={quote(f'-csearch_path={schema}')}"
    settings = Settings(home=home, database_url=url, demo_agent=False,
                        agent_idle_s=0, checkpoint_interval_s=0)
    try:
        rt = await Runtime.open(settings)
        try:
            await rt.create_agent(name="a", settings=FAST)
            ids = []
            for i in range(args.schedules):
                rec = await rt.schedules.create("a", ScheduleIn(
                    content="tick", every_s=args.every, session=f"s{i}", missed="all",
                    overlap="enqueue", catchup_s=3600), by="bench")
                ids.append(rec.id)
        finally:
            await rt.close()
        back = args.behind * args.every
        # A daemon down that long: every schedule's next fire time ``behind`` times ago.
        store = await open_store(url)
        try:
            await store.engine.write(lambda tx: tx.execute(
                "UPDATE schedules SET next_fire_at = next_fire_at - ?, "
                "next_due_at = next_due_at - ?", (back, back)))
            firsts = dict(await store.engine.read(lambda tx: tx.all(
                "SELECT id, next_fire_at FROM schedules")))
        finally:
            await store.close()
        info(f"{args.schedules} schedules, {args.behind} fire times behind each; opening")
        opened = time.time()
        rt = await Runtime.open(settings)
        try:
            deadline = time.monotonic() + args.timeout_s
            while time.monotonic() < deadline:
                rows = await rt.store.engine.read(lambda tx: tx.all(
                    "SELECT MIN(next_fire_at) FROM schedules"))
                if rows and rows[0][0] is not None and float(rows[0][0]) > opened:
                    break
                await asyncio.sleep(0.05)
            info(f"caught up; keeping up for {args.after_s} s")
            await asyncio.sleep(args.after_s)
            await rt.schedules.stop()
            claims = await _claims(rt)
            span = await rt.store.engine.read(lambda tx: tx.one(
                "SELECT MIN(at), MAX(at), COUNT(*) FROM schedule_fires WHERE "
                "status = 'fired' AND fire_at <= ?", (opened,)))
            missed = await rt.store.engine.read(lambda tx: tx.one(
                "SELECT SUM(missed_count), SUM(fires) FROM schedules"))
        finally:
            await rt.close()
    finally:
        if schema is not None:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    gaps = duplicates = 0
    for schedule_id, times in claims.items():
        first = float(firsts[schedule_id])
        want = round((times[-1] - first) / args.every) + 1
        duplicates += len(times) - len(set(times))
        gaps += want - len(set(times))
    caught_up = (float(span[1]) - float(span[0])) if span and span[0] is not None else None
    due_at_open = int(span[2]) if span else 0
    return {
        "bench": "schedules_catchup", "store": "postgresql" if schema else "sqlite",
        "schedules": args.schedules, "every_s": args.every, "behind": args.behind,
        "due_at_open": due_at_open,
        # From the first claim of a fire time due at the start to the last one.
        "catch_up_s": None if caught_up is None else round(caught_up, 3),
        "fires_per_s": None if not caught_up else round(due_at_open / caught_up, 1),
        "fire_times": sum(len(t) for t in claims.values()),
        "missed": int(missed[0] or 0) if missed else None, "gaps": gaps,
        "duplicates": duplicates,
        "machine": {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 1)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--postgres", metavar="URL", default=None)
    p.add_argument("--schedules", type=int, default=20)
    p.add_argument("--behind", type=int, default=60,
                   help="fire times each schedule is behind when the runtime opens")
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--after-s", type=float, default=5.0)
    p.add_argument("--timeout-s", type=float, default=300.0)
    args = p.parse_args(argv)
    tune_gc()
    print(orjson.dumps(asyncio.run(run(args))).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
