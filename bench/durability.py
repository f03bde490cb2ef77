"""Resume and commit cost: how fast a restarted daemon picks up in-flight runs, and what
committing one step costs.

1. Resume: a SQLite home holding N runs left ``running`` exactly as a killed daemon
   leaves them (user message, ``run.queued``, ``run.started``, nothing else). The real
   daemon is started on it as a subprocess; from process start the script times
   ``/health`` answering, every run having a ``run.resumed`` event committed (one
   read-only SQL query on the database file, polled every 10 ms) and every run
   ``completed``.
2. Commit cost, in process: ``store.append`` of one ``message.assistant`` event plus a
   run update under the run's lease (one step's commit, as the executor makes it), on
   SQLite in WAL at ``--synchronous`` (default: the store's, FULL; the figures in
   docs/benchmarks.md before issue 30 are NORMAL's) and that level's writer:
   sequentially from one writer (with the process's CPU per commit, every thread's),
   then from 16 concurrent writers on 16 sessions.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/durability.py [--runs 1000] [--synchronous NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from _load import ServerProcess, free_port, info, percentile
from agentd.store import Lease, NewEvent, RunUpdate, StoreOptions, open_store

SCRIPT = [{"text": "done"}]


# --------------------------------------------------------------------------- resume


async def _build_crashed_home(home: Path, runs: int) -> None:
    store = await open_store(f"sqlite:///{home}/agentd.db")
    try:
        agent = await store.create_agent(name="a", model="scripted", instructions="",
                                         tools=[], settings={"script": SCRIPT})
        for i in range(runs):
            accepted = await store.accept_message(agent_id=agent.id, key=f"s{i}",
                                                  content="go")
            run_id = accepted.run.id
            await store.append(accepted.session.id,
                               [NewEvent(kind="run.started", run_id=run_id)],
                               run_id=run_id, run=RunUpdate(status="running", started=True))
    finally:
        await store.close()


def _health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def measure_resume(runs: int, timeout_s: float, level: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agentd-durability-") as tmp:
        home = Path(tmp)
        info(f"resume: writing {runs} runs left running into {home}")
        asyncio.run(_build_crashed_home(home, runs))
        db = home / "agentd.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            running = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0]
        conn.close()
        assert running == runs, (running, runs)

        port = free_port()
        env = {**os.environ, "AGENTD_HOME": str(home), "AGENTD_DEMO_AGENT": "false"}
        if level:
            env["AGENTD_STORE"] = orjson.dumps({"synchronous": level}).decode()
        server = ServerProcess(
            "agentd", [sys.executable, "-m", "agentd", "serve", "--port", str(port)],
            home / "daemon.log", env)
        health_url = f"http://127.0.0.1:{port}/health"
        health_s = resume_all_s = complete_all_s = None
        t0 = time.monotonic()
        server.start()
        # Read-only connection on the live database (WAL: readers do not block the
        # writer); opened once the daemon has the file, kept for the whole poll.
        ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
        try:
            health_done = False
            while time.monotonic() - t0 < timeout_s:
                if server.exited():
                    raise RuntimeError(f"daemon exited early; log tail:\n{server.log_tail()}")
                if not health_done and _health_ok(health_url):
                    health_s, health_done = time.monotonic() - t0, True
                    info(f"resume: /health answered at {health_s:.3f}s")
                now = time.monotonic() - t0  # the queries below see commits up to now
                if resume_all_s is None:
                    resumed = ro.execute("SELECT COUNT(DISTINCT run_id) FROM events "
                                         "WHERE kind = 'run.resumed'").fetchone()[0]
                    if resumed >= runs:
                        resume_all_s = now
                        info(f"resume: all {runs} runs resumed at {resume_all_s:.3f}s")
                if complete_all_s is None:
                    done = ro.execute("SELECT COUNT(*) FROM runs WHERE status = 'completed'"
                                      ).fetchone()[0]
                    if done >= runs:
                        complete_all_s = now
                        info(f"resume: all {runs} runs completed at {complete_all_s:.3f}s")
                if health_done and resume_all_s is not None and complete_all_s is not None:
                    break
                time.sleep(0.01)
            else:
                raise RuntimeError(f"not done after {timeout_s:.0f}s; log tail:\n"
                                   f"{server.log_tail()}")
        finally:
            ro.close()
            code = server.stop()
            info(f"resume: daemon stopped (exit {code}, {server.shutdown_s or 0:.2f}s)")
        return {"runs": runs, "health_s": round(health_s or 0, 3),
                "resume_all_s": round(resume_all_s or 0, 3),
                "complete_all_s": round(complete_all_s or 0, 3)}


# --------------------------------------------------------------------------- commit cost


def _payload(step: int) -> dict[str, Any]:
    return {"text": "Here is the answer to your question, in a sentence or two.",
            "tool_calls": [], "finish_reason": "stop", "model": "scripted", "step": step,
            "usage": {"input_tokens": 412, "output_tokens": 23, "cached_tokens": 256}}


async def _commit_cost(home: Path, sequential: int, writers: int, per_writer: int,
                       level: str | None) -> dict[str, Any]:
    store = await open_store(f"sqlite:///{home}/agentd.db", StoreOptions(synchronous=level))
    mode = f"WAL, synchronous={store.synchronous}"
    try:
        agent = await store.create_agent(name="a", model="scripted", instructions="",
                                         tools=[], settings={"script": SCRIPT})
        targets: list[tuple[str, str]] = []
        for i in range(writers):
            acc = await store.accept_message(agent_id=agent.id, key=f"s{i}", content="go")
            await store.append(acc.session.id, [NewEvent(kind="run.started", run_id=acc.run.id)],
                               run_id=acc.run.id, run=RunUpdate(status="running", started=True),
                               lease=Lease(owner="bench", ttl=30, acquire=True))
            targets.append((acc.session.id, acc.run.id))
        # As the executor commits a step: fenced by the run's lease, which it renews.
        lease = Lease(owner="bench", ttl=30)

        async def writer(sid: str, rid: str, count: int, out: list[float]) -> None:
            for k in range(1, count + 1):
                events = [NewEvent(kind="message.assistant", run_id=rid, data=_payload(k))]
                t = time.perf_counter()
                await store.append(sid, events, run_id=rid, run=RunUpdate(steps=k),
                                   lease=lease)
                out.append(time.perf_counter() - t)

        info(f"commit: {sequential} sequential appends")
        seq: list[float] = []
        await writer(*targets[0], 200, [])  # warm-up
        cpu0 = time.process_time()  # (every thread's: the writer thread's too)
        await writer(*targets[0], sequential, seq)
        cpu_us = (time.process_time() - cpu0) / sequential * 1e6
        seq.sort()

        info(f"commit: {writers} writers x {per_writer} appends")
        conc: list[float] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(writer(sid, rid, per_writer, conc) for sid, rid in targets))
        elapsed = time.perf_counter() - t0
        conc.sort()
    finally:
        await store.close()

    def us(values: list[float], q: float) -> float:
        return round((percentile(values, q) or 0) * 1e6, 1)

    return {"commit_p50_us": us(seq, 50), "commit_p99_us": us(seq, 99),
            "commit_cpu_us": round(cpu_us, 1),
            "commit_concurrent_p50_us": us(conc, 50), "commit_concurrent_p99_us": us(conc, 99),
            "commits_per_s": round(len(conc) / elapsed),
            "commit_writers": writers, "commit_sequential": sequential,
            "commit_concurrent": len(conc), "sqlite_mode": mode}


def measure_commit(sequential: int, writers: int, per_writer: int, level: str | None
                   ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agentd-commit-") as tmp:
        coro = _commit_cost(Path(tmp), sequential, writers, per_writer, level)
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro)
        return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in flight at restart")
    parser.add_argument("--timeout", type=float, default=120.0, help="resume time limit (s)")
    parser.add_argument("--sequential", type=int, default=5000)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--per-writer", type=int, default=2000)
    parser.add_argument("--synchronous", default=None,
                        help="[store] synchronous of the daemon and the store (default: "
                             "the store's, FULL)")
    args = parser.parse_args()

    result: dict[str, Any] = {"bench": "durability"}
    result.update(measure_resume(args.runs, args.timeout, args.synchronous))
    result.update(measure_commit(args.sequential, args.writers, args.per_writer,
                                 args.synchronous))
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

        result["loop"] = "uvloop"
    result.setdefault("loop", "asyncio")
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
