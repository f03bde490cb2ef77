"""The floor of a durable echo turn on agentd's stack, next to agentd, in one run.

    python bench/floor.py                      # 16 clients, 8 s phases, two rounds
    python bench/floor.py --clients 1 --seconds 5 --rounds 3
    python bench/floor.py --commits 2,1 --skip-agentd   # what a turn's second hand-off costs

What does a turn cost that does only what agentd's durable echo must: one HTTP request
on uvicorn (httptools, uvloop) into a raw ASGI app, its JSON read, two SQLite
transactions before the answer (the message and its run started; then the reply and
the run's end: five events, a run row, the session's last seq), group-committed by one
writer thread at the store's durability level, and the reply as JSON? ``--serve`` runs
that server (this file is its own server: ``_floor_app``); the bench starts it and
``agentd serve`` (fresh homes, the scripted model, ``AGENTD_STORE`` inherited) one
after the other, round after round, and drives each with the same closed-loop aiohttp
clients (``_load.run_phase``: each client on its own session, waited turns), counting
each server's CPU (its process's CPU clock) per turn.

The floor is what no work of agentd's could go below on this stack; agentd's figure
over it is the price of everything else a turn does (tokens and scopes, the run's
lease, the supervisor and the executor, the kernel's scheduler, usage and cost, the
bus, metrics, the history fold). Prints one JSON line: per server, turns/s, p50/p99
and server CPU per turn (each round's and the median), and ``ratio`` (agentd's median
CPU per turn over the floor's).

``--commits 2,1`` also measures, in the same rounds, a floor that hands the turn's
writes to the writer thread once (``floor_one_commit``: the message, the run, the reply
and its end in one job, awaited once, after the reply is made): what the second
hand-off to the writer and back costs a turn, the part of a durable turn that only a
turn committed once could save. That server still answers only after its one commit,
but it makes its reply before its message is durable, which agentd cannot do without
deciding the message's outcome first (docs/design-notes.md, "A waited turn with one
hand-off"): it is a measure, not a design.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from _load import LocalDaemon, ServerProcess, TurnResult, free_port, info, run_phase

TOKEN = "floor-bench-token-0123456789abcdef"
JSON = {"Content-Type": "application/json"}

# --------------------------------------------------------------------------- the floor


class _Writer:
    """One writer thread: every write of a loop turn in one transaction, one commit."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.executescript(
            "CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, last_seq INTEGER);"
            "CREATE TABLE IF NOT EXISTS events (session TEXT, seq INTEGER, run TEXT, "
            "kind TEXT, data TEXT, at REAL, PRIMARY KEY (session, seq));"
            "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, session TEXT, "
            "status TEXT, output TEXT, at REAL);")
        threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: sqlite3.Connection) -> None:
        cur = conn.cursor()
        while True:
            batch = [self.jobs.get()]
            while True:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            cur.execute("BEGIN IMMEDIATE")
            done = [(loop, future, fn(cur)) for loop, future, fn in batch]
            cur.execute("COMMIT")
            for loop, future, value in done:
                loop.call_soon_threadsafe(future.set_result, value)

    def write(self, fn: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.jobs.put((loop, future, fn))
        return future


def _events(cur: sqlite3.Cursor, key: str, run: str, kinds: list[tuple[str, bytes]],
            at: float) -> None:
    cur.execute("INSERT INTO sessions (key, last_seq) VALUES (?, ?) ON CONFLICT (key) "
                "DO UPDATE SET last_seq = last_seq + ? RETURNING last_seq",
                (key, len(kinds), len(kinds)))
    last = cur.fetchone()[0]
    cur.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", [
        (key, last - len(kinds) + 1 + i, run, kind, data.decode(), at)
        for i, (kind, data) in enumerate(kinds)])


def _floor_app(writer: _Writer, commits: int = 2) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            reply, status = b'{"status":"ok"}', 200
        else:
            key = scope["path"].split("/")[-2]
            content = orjson.loads(body)["content"]
            run, at = uuid.uuid4().hex, time.time()
            message = orjson.dumps({"content": content})

            def accept(cur: sqlite3.Cursor) -> None:
                _events(cur, key, run, [("message.user", message), ("run.queued", b"{}"),
                                        ("run.started", b"{}")], at)
                cur.execute("INSERT INTO runs VALUES (?, ?, 'running', NULL, ?)",
                            (run, key, at))

            if commits == 2:  # (else accepted with the reply, below)
                await writer.write(accept)
            output = f"echo: {content}"
            done = time.time()

            def finish(cur: sqlite3.Cursor) -> None:
                _events(cur, key, run, [
                    ("message.assistant", orjson.dumps({"text": output})),
                    ("run.completed", orjson.dumps({"output": output}))], done)
                cur.execute("UPDATE runs SET status = 'completed', output = ?, at = ? "
                            "WHERE id = ?", (output, done, run))

            def both(cur: sqlite3.Cursor) -> None:
                accept(cur)
                finish(cur)

            await writer.write(finish if commits == 2 else both)
            reply, status = orjson.dumps({"id": run, "status": "completed",
                                          "output": output}), 200
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": reply})

    return app


def serve(port: int, home: Path, commits: int = 2) -> None:
    import uvicorn

    store = orjson.loads(os.environ.get("AGENTD_STORE") or "{}")
    writer = _Writer(str(home / "floor.db"), str(store.get("synchronous", "FULL")))
    uvicorn.run(_floor_app(writer, commits), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False, lifespan="on")


# --------------------------------------------------------------------------- the bench


async def _phase(name: str, base: str, server: ServerProcess, args: argparse.Namespace
                 ) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", **JSON}
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.clients), headers=headers) as http:
        if name == "agentd":
            async with http.post(f"{base}/v1/agents", data=orjson.dumps(
                    {"name": "floor", "model": "scripted"})) as made:
                if made.status not in (201, 409):
                    raise RuntimeError(f"agent not made: {made.status} {await made.text()}")
        round_id = uuid.uuid4().hex[:6]

        async def turn(index: int) -> TurnResult:
            url = f"{base}/v1/agents/floor/sessions/{round_id}-{index}/messages"
            began = time.perf_counter()
            async with http.post(url, data=orjson.dumps(
                    {"content": "hi", "wait": True})) as reply:
                data = orjson.loads(await reply.read())
            ms = (time.perf_counter() - began) * 1000
            if reply.status != 200 or data.get("output") != "echo: hi":
                return TurnResult(False, ms, error=f"{reply.status}: {str(data)[:200]}")
            return TurnResult(True, ms)

        await run_phase(f"{name} warm-up", args.clients, turn, seconds=args.warmup)
        stats = await run_phase(name, args.clients, turn, seconds=args.seconds,
                                server=server)
    figures = stats.figures("", streamed=False)
    info(f"{name}: {orjson.dumps(figures).decode()}")
    return figures


#: The floors ``--commits`` names, by how many times a turn hands its writes over.
FLOORS = {2: "floor", 1: "floor_one_commit"}


def _commits(text: str) -> list[int]:
    """``--commits``: a comma-separated list of 1 and 2, each once."""
    try:
        commits = [int(part) for part in text.split(",")]
    except ValueError:
        commits = []
    if not commits or len(set(commits)) != len(commits) or any(
            c not in FLOORS for c in commits):
        raise argparse.ArgumentTypeError(
            f"--commits takes 1, 2 or both (2,1), not {text!r}")
    return commits


def _floor(workdir: Path, commits: int) -> tuple[ServerProcess, str]:
    port = free_port()
    home = workdir / f"floor-{port}"
    home.mkdir()
    server = ServerProcess("floor", [sys.executable, __file__, "--serve", str(port),
                                     "--home", str(home), "--commits", str(commits)],
                           home / "floor.log", dict(os.environ))
    server.start()
    base = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"the floor server did not start: {server.log_tail()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--commits", type=_commits, default=[2],
                        help="the floors to measure, by how many times a turn hands its "
                             "writes to the writer: 2 (the default), 1, or 2,1")
    parser.add_argument("--skip-agentd", action="store_true",
                        help="measure the floors only")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.home, args.commits[0])
        return 0
    if args.clients < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--clients, --seconds and --rounds must be positive")
    rounds: dict[str, list[dict[str, Any]]] = {FLOORS[c]: [] for c in args.commits}
    if not args.skip_agentd:
        rounds["agentd"] = []
    with tempfile.TemporaryDirectory(prefix="agentd-floor-") as tmp:
        workdir = Path(tmp)
        for index in range(args.rounds):
            # (the floors in turn, their order reversed every round)
            for commits in args.commits[::-1] if index % 2 else args.commits:
                name = FLOORS[commits]
                server, base = _floor(workdir, commits)
                try:
                    rounds[name].append(asyncio.run(_phase(name, base, server, args)))
                finally:
                    server.stop()
            if args.skip_agentd:
                continue
            home = workdir / f"agentd-{index}"
            home.mkdir()
            with LocalDaemon(home, TOKEN) as daemon:
                rounds["agentd"].append(asyncio.run(
                    _phase("agentd", daemon.base, daemon.server, args)))
    out: dict[str, Any] = {"bench": "floor", "clients": args.clients,
                           "seconds": args.seconds, "rounds": args.rounds,
                           "store_synchronous": str(orjson.loads(
                               os.environ.get("AGENTD_STORE") or "{}").get(
                               "synchronous", "FULL"))}
    for name, figures in rounds.items():
        cpu = [f["server_cpu_ms_per_turn"] for f in figures]
        out[name] = {"turns_per_s": [f["turns_per_s"] for f in figures],
                     "p50_ms": [f["p50_ms"] for f in figures],
                     "p99_ms": [f["p99_ms"] for f in figures],
                     "errors": sum(f["errors"] for f in figures),
                     "server_cpu_ms_per_turn": cpu,
                     "server_cpu_ms_per_turn_median": round(statistics.median(cpu), 3)}
    if "agentd" in out and "floor" in out:
        out["ratio"] = round(out["agentd"]["server_cpu_ms_per_turn_median"]
                             / out["floor"]["server_cpu_ms_per_turn_median"], 2)
    if "floor" in out and "floor_one_commit" in out:
        out["one_commit_saves_ms"] = round(
            out["floor"]["server_cpu_ms_per_turn_median"]
            - out["floor_one_commit"]["server_cpu_ms_per_turn_median"], 3)
    out["machine"] = {"cpus": len(os.sched_getaffinity(0)),
                      "python": platform.python_version()}
    print(orjson.dumps(out).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
