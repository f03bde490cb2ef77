"""Proof by killing, for autonomy (issue 14): schedules, subtasks and agent calls
across hundreds of SIGKILLs.

The harness starts a real daemon (``python -m agentd serve``) on a fresh
``AGENTD_HOME`` with the agents of ``bench/_killtest_autonomy_setup.py``:

- three agents with schedules firing every 2 s (into a fixed session) and every 3 s
  (a new session per fire; one jittered), and a cron schedule (``* * * * *``), all
  ``missed: "all"`` with a catch-up window covering the test and ``overlap:
  "enqueue"``, so every fire time must run, once, whatever the kills did;
- a boss agent whose runs start three subtasks (run by a worker agent, slow) with
  ``subtask_start`` in one step, wait for them (``subtask_wait``) and answer;
- a caller agent whose runs call a callee agent (``agent_call``) and answer.

Client threads (those of ``bench/killtest.py``) send messages to boss and caller
sessions across kills; every 20-400 ms (random) the daemon gets SIGKILL and is
started again on the same home. After the last restart the clients finish, the
harness waits until every schedule's next fire time is past the moment of the final
check, pauses the schedules, lets every run end (bounded) and reads the store back
with read-only SQL. Invariants, one counter each:

1. ``fire_once``: every fire time of every schedule, from its first to the last one
   due before the final check, has exactly one claim (a ``schedule_fires`` row,
   ``fired`` with its run; rows older than the newest 256 are pruned by design), and
   none other; the schedule's ``fires`` count matches. (A schedule more than 100 fire
   times behind fires only the latest 100, ``MAX_CATCHUP``, counting the rest as
   missed: a store too slow for the kill rate shows up here, and in the figure
   ``fires_missed_counted``; ``--interval-scale`` slows the schedules down);
2. ``fire_run_once``: each such fire time has exactly one run whose ``message.user``
   carries ``{schedule_id, fire_at}``, the claim's run; no run for any other time;
3. ``fire_stalled``: no schedule's next fire time is before the final check;
4. ``subtask_once``: each subtask row has one child run, alone in its session, whose
   ``message.user`` names the row and the parent, and one ``subtask.started`` in the
   parent's session; every run of the worker and callee agents is some row's child
   (no child started twice for one effect); a completed boss run made one row per
   ``subtask_start`` call (three) and each call answered with its row's id;
5. ``result_once``: each child's end is logged once (``subtask.finished``, its status
   the child run's) in the parent's session, and a completed boss run's one
   ``subtask_wait`` result lists each of its children once, completed, with the
   child run's output;
6. ``call_once``: each completed caller run made one call, and its ``agent_call`` has
   one result: the callee run's output;
7. ``run_terminal``: every run is terminal with one terminal event, its last;
8. ``run_outcome``: every run completed (none failed, cancelled, interrupted);
9. ``seq_dense``: each session's seqs are 1..last_seq;
10. ``ack_once``: every acknowledged client message is logged once, as the run
    answered; none logged twice;
11. ``step_once``: in each run the model steps are 1, 2, 3... (no recorded model
    call made again) and no tool call has two results.

``--every-1s`` adds a schedule every second (the finest interval: issue 29's), and
``--cpu-hogs N`` runs N processes spinning on the CPU beside the daemon for the whole
run (a loaded machine; ``tests/e2e/test_killtest_autonomy.py`` runs with both). Fire
times read back are matched to the expected ones within a millisecond
(:func:`_killtest_autonomy_check.snapper`), not rounded to one.

Stdout gets one JSON line of figures; progress goes to stderr. Exit status 1 when any
invariant is violated (or the harness failed). Loopback only; every wait is bounded;
every process started here is stopped in ``finally``.

    PYTHONPATH=src .venv/bin/python bench/killtest_autonomy.py --kills 100
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# bench/ is sys.path[0] when this file runs as a script: its modules import as top-level.
from _killtest_autonomy_check import (
    Violations,
    check_acks,
    check_runs,
    check_schedules,
    check_subtasks,
)
from _killtest_autonomy_setup import BOSS, CALLER, Db, parse_iso, setup
from _killtest_common import AUTH, info
from _killtest_daemon import Daemon
from _killtest_load import Client, Shared
from killtest import _pg_drop, _pg_schema


def wait_schedules_past(base: str, ids: list[str], t_check: float, deadline: float
                        ) -> None:
    """Until every schedule's next fire time is after ``t_check`` (all fire times due
    before it handled), then pause them all: no fire after the check."""
    with httpx.Client(headers=AUTH, base_url=base, timeout=30.0) as http:
        waiting = set(ids)
        while waiting:
            for sid in sorted(waiting):
                got = http.get(f"/v1/schedules/{sid}").raise_for_status().json()
                nxt = got["next_fire_at"]
                if nxt is not None and parse_iso(nxt) > t_check:
                    waiting.discard(sid)
            if waiting and time.monotonic() > deadline:
                info(f"schedules still behind the final check: {sorted(waiting)}")
                break  # fire_stalled counts them
            time.sleep(0.2)
        for sid in ids:
            http.patch(f"/v1/schedules/{sid}", json={"enabled": False}).raise_for_status()


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that spin on the CPU beside the daemon until stopped: a
    loaded machine, where a daemon's clock reads and its commits drift apart (issue
    29: a fire time lost only under load)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             stdin=subprocess.DEVNULL, start_new_session=True)
            for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait(10.0)


def settle(db: Db, deadline: float) -> tuple[int, int]:
    """Until no run is active and every subtask's end is logged (or ``deadline``)."""
    while True:
        pending = db.pending()
        if pending == (0, 0) or time.monotonic() > deadline:
            return pending
        time.sleep(0.2)


def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], Violations]:
    t0 = time.monotonic()
    home, effects_dir = workdir / "home", workdir / "effects"
    home.mkdir(parents=True, exist_ok=True)
    effects_dir.mkdir(parents=True, exist_ok=True)
    kill_rng = random.Random(f"{args.seed}/kills")
    sessions = ([(BOSS, f"boss:{i}") for i in range(args.boss_sessions)]
                + [(CALLER, f"caller:{i}") for i in range(args.caller_sessions)])
    daemon = Daemon(workdir, home, effects_dir, database_url=args.store_url)
    db = Db(pg_url=args.store_url) if args.store_url else Db(sqlite_path=home / "agentd.db")
    shared = Shared(daemon, sessions, args.backlog)
    clients = [Client(i, shared, args.seed, args.idem_share) for i in range(args.clients)]
    violations = Violations()
    out: dict[str, Any] = {"bench": "killtest_autonomy", "seed": args.seed, "kills": 0,
                           "restarts": 0, "cpu_hogs": args.cpu_hogs}
    hogs = start_hogs(args.cpu_hogs)
    try:
        daemon.start(args.startup_timeout)
        created = setup(daemon.url, args.interval_scale, args.every_1s)
        info(f"agentd at {daemon.url}, home {home}; {len(created)} schedules, "
             f"{args.clients} clients on {len(sessions)} sessions, {args.kills} kills")
        for thread in clients:
            thread.start()
        time.sleep(args.warmup_s)
        for k in range(args.kills):
            time.sleep(kill_rng.uniform(args.min_kill_ms, args.max_kill_ms) / 1000.0)
            daemon.kill()
            with shared.lock:
                shared.epoch += 1
            out["kills"] += 1
            if k == args.kills - 1:
                shared.drain.set()
            daemon.start(args.startup_timeout)
            out["restarts"] += 1
            if (k + 1) % 20 == 0 or k + 1 == args.kills:
                info(f"{k + 1}/{args.kills} kills, {shared.counts['acknowledged']} "
                     f"messages acknowledged, {time.monotonic() - t0:.0f}s")
        if args.kills == 0:
            time.sleep(args.min_run_s)
            shared.drain.set()
        deadline = time.monotonic() + args.drain_timeout
        for client in clients:
            client.join(max(0.0, deadline - time.monotonic()))
        stuck = [c.name for c in clients if c.is_alive()]
        if stuck:
            raise RuntimeError(f"clients still busy after {args.drain_timeout:.0f}s: {stuck}")
        for client in clients:
            if client.error is not None:
                raise RuntimeError(f"{client.name} crashed: {client.error!r}")

        t_check = time.time()
        info("every message sent; waiting for the schedules to pass the final check")
        wait_schedules_past(daemon.url, sorted(created), t_check,
                            time.monotonic() + args.settle_timeout)
        info("schedules paused; waiting for every run to end")
        pending = settle(db, time.monotonic() + args.settle_timeout)
        if pending != (0, 0):
            info(f"not settled: {pending[0]} active runs, {pending[1]} unreported subtasks")
        health = httpx.get(f"{daemon.url}/health", timeout=10.0).json()
        tables = db.read()
        out.update(check_schedules(tables, created, t_check, violations))
        out.update(check_subtasks(tables, violations))
        out.update(check_runs(tables, violations))
        out["messages_sent"] = len(shared.msgs)
        out["acknowledged"] = check_acks(tables, shared.msgs, violations)
        out["requests"] = shared.counts["requests"]
        out["connect_errors"] = shared.counts["connect_errors"]
        out["requests_cut"] = shared.counts["requests_cut"]
        out["final_active_runs"] = health.get("active_runs")
        out["final_queued_runs"] = health.get("queued_runs")
        out["daemon_start_s_median"] = round(
            sorted(daemon.start_s)[len(daemon.start_s) // 2], 3)
    finally:
        stop_hogs(hogs)
        shared.stop.set()
        out["final_exit"] = daemon.stop()
        for thread in clients:
            if thread.ident is not None:
                thread.join(5.0)
        out["duration_s"] = round(time.monotonic() - t0, 1)
    return out, violations


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="kill -9 the daemon while schedules fire and "
                                "runs start subtasks and call agents, then check that "
                                "every fire, subtask and call ran exactly once")
    p.add_argument("--kills", type=int, default=100, help="SIGKILLs (default 100)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--clients", type=int, default=2, help="client threads (default 2)")
    p.add_argument("--boss-sessions", type=int, default=4)
    p.add_argument("--caller-sessions", type=int, default=2)
    p.add_argument("--backlog", type=int, default=2,
                   help="unfinished runs a session may have before clients pick another")
    p.add_argument("--idem-share", type=float, default=0.3,
                   help="share of messages sent with an Idempotency-Key (default 0.3)")
    p.add_argument("--min-kill-ms", type=float, default=20.0)
    p.add_argument("--max-kill-ms", type=float, default=400.0)
    p.add_argument("--interval-scale", type=int, default=1,
                   help="the interval schedules fire every 2 and 3 s times this (default "
                        "1): a store too slow to keep up with the kills falls behind, and "
                        "missed: all fires at most the latest 100 times (MAX_CATCHUP)")
    p.add_argument("--every-1s", action="store_true",
                   help="one more schedule, every 1 s (the finest interval) into a fixed "
                        "session")
    p.add_argument("--cpu-hogs", type=int, default=0,
                   help="processes spinning on the CPU beside the daemon for the whole "
                        "run (default 0): the harness under load")
    p.add_argument("--warmup-s", type=float, default=2.0,
                   help="load before the first kill (default 2)")
    p.add_argument("--min-run-s", type=float, default=10.0,
                   help="with --kills 0: how long the load runs")
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--settle-timeout", type=float, default=120.0)
    p.add_argument("--postgres", metavar="URL", default=None,
                   help="run the daemon on PostgreSQL at URL (a fresh schema, dropped "
                        "afterwards unless --keep), instead of SQLite in its home")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args(argv)
    if args.kills < 0 or args.clients < 1 or args.boss_sessions + args.caller_sessions < 1:
        p.error("--kills must be >= 0, --clients and the sessions >= 1")
    if not 0 <= args.min_kill_ms <= args.max_kill_ms:
        p.error("need 0 <= --min-kill-ms <= --max-kill-ms")
    if args.cpu_hogs < 0:
        p.error("--cpu-hogs must be >= 0")
    if args.interval_scale < 1:
        p.error("--interval-scale must be >= 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="agentd-killauto-"))
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    failed = False
    violations = Violations()
    schema = None
    args.store_url = None
    if args.postgres:
        schema, args.store_url = _pg_schema(args.postgres)
    try:
        out, violations = run(args, workdir)
    except (RuntimeError, OSError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        failed = True
        out = {"bench": "killtest_autonomy", "seed": args.seed, "error": str(exc)[:2000]}
        info(f"harness failed: {exc}")
    out["violations"] = violations.total
    out["violations_by_invariant"] = dict(violations.counts)
    if violations.examples:
        out["violation_examples"] = [x[:400] for x in violations.examples[:5]]
        (workdir / "violations.txt").write_text("\n".join(violations.examples) + "\n")
        info("VIOLATIONS:\n" + "\n".join(violations.examples))
    out["ok"] = not failed and violations.total == 0
    keep = args.keep or not out["ok"]
    out["store"] = "postgresql" if schema else "sqlite"
    if schema and not keep:
        _pg_drop(args.postgres, schema)
    elif schema:
        info(f"kept PostgreSQL schema {schema}")
    if keep:
        info(f"kept {workdir}")
        out["workdir"] = str(workdir)
    elif args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
