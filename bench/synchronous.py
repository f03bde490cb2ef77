"""What each durability level costs: turns/s of the real daemon at each ``[store]
synchronous`` level, in one run, and what an fsync costs on this machine's disk.

    .venv/bin/python bench/synchronous.py                    # SQLite NORMAL and FULL
    .venv/bin/python bench/synchronous.py --postgres postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/synchronous.py --clients 1,8 --seconds 10 --rounds 2

For each round, each level in turn (the order reversed every other round, so that a
drift of the machine's load falls on both sides), a fresh ``agentd serve`` (``python
-m agentd serve``, a new AGENTD_HOME whose agentd.toml says ``[store] synchronous =
LEVEL``; on PostgreSQL a new schema of the given database) is started, the level is
read back from ``GET /v1/overview`` (``store.synchronous``: what the daemon's own
connection reports), and closed-loop clients, each on a session of its own, send
turns (``stream: false``: the reply is the finished run, two commits from the
message: three before issue 30's "a turn is two commits"):

* ``echo:N``, N clients (``--clients``, default 1 and 8), on the scripted echo model,
  which answers at once: the store is then the whole cost of a turn, the worst case
  for a level that syncs;
* ``model:8``, 8 clients on a scripted model answering in ``--model-ms`` (200 ms):
  what the level costs when a turn waits on a model, as a real one does.

Figures per phase: turns/s, p50 and p99 latency, and the daemon's CPU per turn (user +
system, from ``/proc``: the figure that other work on the machine moves least; a
PostgreSQL server's CPU is not in it). Before the daemons, the disk under a temporary
directory is timed: a 4 KiB write and its ``fdatasync`` (what SQLite's FULL does at
each commit on Linux), 500 times.

Prints one JSON line (``levels[STORE:LEVEL][PHASE][FIGURE]`` is a list of one value
per round, ``median`` their medians); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from _load import LocalDaemon, TurnResult, info, percentile, run_phase

TOKEN = "synchronous-bench-" + secrets.token_hex(8)
JSON = {"Content-Type": "application/json"}


def disk_sync(directory: Path, times: int = 500) -> dict[str, float]:
    """Latency of a 4 KiB append and its fdatasync in ``directory``, in ms."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        spent = []
        for _ in range(times):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            spent.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    spent.sort()
    return {"fdatasync_p50_ms": round(percentile(spent, 50) or 0, 3),
            "fdatasync_p99_ms": round(percentile(spent, 99) or 0, 3)}


class Schema:
    """A new PostgreSQL schema for one daemon, dropped after."""

    def __init__(self, url: str) -> None:
        self.base = url
        self.name = f"bench_sync_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options={quote(f'-csearch_path={self.name}')}"

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.name} CASCADE")


async def load(daemon: LocalDaemon, level: str, args: argparse.Namespace
               ) -> dict[str, dict[str, Any]]:
    """The level read back, then one phase per client count on the echo model, and one
    on a model that takes ``--model-ms``: each phase's figures."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=max(*args.clients, args.model_clients),
                                     keepalive_timeout=60)
    async with aiohttp.ClientSession(daemon.base, headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.get("/v1/overview") as reply:
            overview = orjson.loads(await reply.read())
        running = overview["store"]["synchronous"]
        if running.lower() != level.lower():
            raise RuntimeError(f"asked for {level}, the daemon runs at {running}")
        phases = [("echo", n, {}) for n in args.clients]
        if args.model_ms > 0:
            phases.append(("model", args.model_clients, {"script": [
                {"text": "answered after a while", "delay_ms": args.model_ms}]}))
        for agent, settings in {(a, orjson.dumps(s)) for a, _, s in phases}:
            body = {"name": agent, "model": "scripted", "settings": orjson.loads(settings)}
            async with http.post("/v1/agents", data=orjson.dumps(body), headers=JSON) as reply:
                if reply.status != 201:
                    raise RuntimeError(f"creating the agent: {await reply.text()}")
        out: dict[str, dict[str, Any]] = {}
        for agent, n, _ in phases:
            tag = uuid.uuid4().hex[:6]
            counter = 0

            async def turn(index: int, agent: str = agent, tag: str = tag) -> TurnResult:
                nonlocal counter
                counter += 1
                t0 = time.perf_counter()
                async with http.post(f"/v1/agents/{agent}/sessions/s-{tag}-{index}/messages",
                                     data=orjson.dumps({"content": f"hello {counter}"}),
                                     headers=JSON) as reply:
                    body = await reply.read()
                    ms = (time.perf_counter() - t0) * 1000
                    if reply.status != 200:
                        return TurnResult(False, ms, error=f"HTTP {reply.status}")
                    run = orjson.loads(body)
                    if run.get("status") != "completed":
                        return TurnResult(False, ms, error=str(run)[:200])
                    return TurnResult(True, ms)

            name = f"{agent}:{n}"
            if args.warmup > 0:
                await run_phase(f"{level} {name} warm-up", n, turn, seconds=args.warmup,
                                server=daemon.server)
            stats = await run_phase(f"{level} {name}", n, turn, seconds=args.seconds,
                                    server=daemon.server)
            if stats.errors:
                raise RuntimeError(f"{level}, {name}: {stats.error_samples}")
            figures = stats.figures("", streamed=False)
            out[name] = {k: figures[k] for k in (
                "turns_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_turn")}
            info(f"{running}, {name}: {orjson.dumps(out[name]).decode()}")
        return out


def measure(store: str, level: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="agentd-sync-") as tmp, \
            contextlib.ExitStack() as stack:
        home = Path(tmp)
        (home / "agentd.toml").write_text(f'[store]\nsynchronous = "{level}"\n')
        env: dict[str, str] = {}
        if store == "postgresql":
            env["AGENTD_DATABASE_URL"] = stack.enter_context(Schema(args.postgres))
        with LocalDaemon(home, TOKEN, env) as daemon:
            return asyncio.run(load(daemon, level, args))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", default="NORMAL,FULL",
                        help="SQLite levels (default NORMAL,FULL; empty: none)")
    parser.add_argument("--postgres", default=None,
                        help="a PostgreSQL URL: measure its levels too (a schema each)")
    parser.add_argument("--postgres-levels", default="on,off",
                        help="PostgreSQL levels (default on,off)")
    parser.add_argument("--clients", default="1,8",
                        help="client counts, one phase each (default 1,8)")
    parser.add_argument("--model-ms", type=int, default=200,
                        help="one more phase on a model answering in this many ms "
                             "(scripted, delay_ms; default 200; 0: none)")
    parser.add_argument("--model-clients", type=int, default=8,
                        help="clients of that phase (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    levels = [("sqlite", level) for level in args.sqlite.split(",") if level]
    if args.postgres:
        levels += [("postgresql", level) for level in args.postgres_levels.split(",")]
    t0 = time.monotonic()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="agentd-sync-disk-") as tmp:
        disk = disk_sync(Path(tmp))
    info(f"disk: {disk}")
    figures: dict[str, dict[str, dict[str, list[float]]]] = {}
    for round_ in range(args.rounds):
        for store, level in (levels if round_ % 2 == 0 else levels[::-1]):
            info(f"round {round_ + 1}: {store} {level}")
            for n, values in measure(store, level, args).items():
                slot = figures.setdefault(f"{store}:{level}", {}).setdefault(n, {})
                for key, value in values.items():
                    slot.setdefault(key, []).append(value)
    median = {name: {n: {k: round(statistics.median(v), 3) for k, v in per.items()}
                     for n, per in by_clients.items()}
              for name, by_clients in figures.items()}
    print(orjson.dumps({
        "bench": "synchronous", "clients": args.clients, "seconds": args.seconds,
        "rounds": args.rounds, "disk": disk, "levels": figures, "median": median,
        "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"cpus": len(os.sched_getaffinity(0)),
                    "python": platform.python_version()},
    }).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
