"""Proof by killing (issue 3): kill -9 the daemon hundreds of times under load, then check.

The harness starts a real daemon (``python -m agentd serve``) on a fresh
``AGENTD_HOME`` with the tools of ``bench/killtest_tools.py``, whose side effects are
lines in files (``effects.log`` for the non-idempotent ``record_once``, ``idem.log``
for the idempotent ``record_idem``). Client threads send messages (``wait=false``,
``wait=true`` and ``stream=true``; some with an ``Idempotency-Key``) to sessions of
agents whose scripts call those tools, answer in plain text, and take their time
(``delay_ms``), so that kills land during model calls, during tool calls and between
steps. Two more threads follow sessions over SSE, reconnecting with ``Last-Event-ID``
after every kill. Every 20-400 ms (random) the daemon gets SIGKILL and is started
again on the same home.

A ``record_once`` call that a kill caught mid-way has an unknown outcome: its run waits
(``waiting_approval``, an ``approval.requested`` event), across restarts if need be,
for a decision. A decider thread plays the human, during the load and after it: it
finds waiting runs in the session logs (and among the runs the settle phase polls) and
posts ``skip`` (mostly), ``retry`` or ``fail`` to ``/v1/runs/{id}/decide`` (a seeded
draw, after a random pause so that kills also land on waiting runs). With
``--on-unknown-outcome interrupt`` the agents end such runs ``interrupted`` instead
(``settings.on_unknown_outcome``), as before decisions existed.

After the last kill it restarts once more, lets every run reach a terminal state
(bounded; the decider keeps deciding) and counts violations of these invariants:

1. ``ack_once``: every acknowledged message (a 2xx answer) has exactly one run, and its
   ``message.user`` event is in its session's log exactly once (no message is ever
   logged twice, acknowledged or not, and none that was never sent);
2. ``run_terminal``: every run is in a terminal state, with exactly one terminal event,
   its last, of the kind its status says;
3. ``seq_dense``: each session's seqs are 1..N with no gap or duplicate, N = last_seq;
4. ``effect_once``: each effect id is in effects.log at most as many times as it was
   started, each has a ``tool.started`` intent, ``record_once`` starts again for one
   effect id only after a ``retry`` decision logged for it (one decision, one more
   start, flagged ``retry``) and never after a ``skip``, and each ``record_once`` with a
   recorded result (not a skipped one) did its effect; ``idem_effects``: every
   ``record_idem`` effect of a completed run (or with a recorded result) is in idem.log;
5. ``sse_replay``: an SSE replay from seq 0 yields exactly the stored log (seqs, kinds,
   data, frame ids and names), and so does each follower's stream stitched across
   reconnections; a frame id is ``<seq>`` or ``<seq>@<tag>``, one tag per session;
6. ``idempotency_key``: every 2xx answer to one Idempotency-Key names the same run,
   including re-sends after a kill;
7. ``step_once``: in each run the model steps are 1, 2, 3... (no recorded model call
   made again) and no tool call has two results;
8. ``run_outcome``: no run was cancelled, a run failed only by a ``fail`` decision
   (code ``unknown_outcome``), and a run is interrupted only with
   ``--on-unknown-outcome interrupt``, for a non-idempotent tool;
9. ``decision``: each ``approval.requested`` names a started, unfinished non-idempotent
   call (reason ``unknown_outcome``, options retry/skip/fail; none with ``interrupt``),
   each ``approval.decided`` answers an open request with a decision the harness sent,
   every acknowledged decision is logged, a ``skip`` yields a ``skipped`` result with
   the decided output, and the decide endpoint answers only 2xx or 409 ``not_waiting``.

Events of other kinds (``checkpoint`` without a run, ``run.parked``...) are allowed.
Stdout gets one JSON line of figures; progress goes to stderr. Exit status 1 when any
invariant is violated (or the harness itself failed). Loopback only; every wait is
bounded; every process started here is stopped in ``finally``.

    .venv/bin/python bench/killtest.py --kills 200
"""

from __future__ import annotations

import argparse
import collections
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
from _killtest_check import (
    Snapshot,
    Violations,
    check,
    check_sse,
    decision_figures,
    read_effects,
    report,
    resume_points,
    snapshot,
)
from _killtest_common import AGENTS, AUTH, TOOLS, info
from _killtest_daemon import Daemon
from _killtest_decide import Decider
from _killtest_load import Client, Follower, Shared


def setup_agents(base: str, on_unknown_outcome: str) -> None:
    settings: dict[str, Any] = {}
    if on_unknown_outcome == "interrupt":
        # An unknown outcome ends the run (interrupted) instead of waiting for a
        # client's decision. Left unset, the daemon's default: wait.
        settings["on_unknown_outcome"] = "interrupt"
    with httpx.Client(headers=AUTH, base_url=base, timeout=30.0) as http:
        for name, script in AGENTS.items():
            response = http.post("/v1/agents", json={
                "name": name, "model": "scripted", "tools": TOOLS,
                "settings": {"script": script, **settings}})
            if response.status_code != 201:
                raise RuntimeError(f"creating agent {name}: HTTP {response.status_code} "
                                   f"{response.text[:500]}")


def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], Violations, str]:
    t0 = time.monotonic()
    home, effects_dir = workdir / "home", workdir / "effects"
    home.mkdir(parents=True, exist_ok=True)
    effects_dir.mkdir(parents=True, exist_ok=True)
    kill_rng = random.Random(f"{args.seed}/kills")
    names = list(AGENTS)
    sessions = [(names[i % len(names)], f"kill:{i}") for i in range(args.sessions)]
    daemon = Daemon(workdir, home, effects_dir, database_url=args.store_url)
    shared = Shared(daemon, sessions, args.backlog)
    clients = [Client(i, shared, args.seed, args.idem_share) for i in range(args.clients)]
    followers = [Follower(shared, s) for s in sessions[:args.followers]]
    decider = Decider(shared, args.seed, args.retry_share, args.fail_share,
                      args.decide_delay_ms / 1000.0)
    interrupt = args.on_unknown_outcome == "interrupt"
    violations = Violations()
    out: dict[str, Any] = {"bench": "killtest", "seed": args.seed,
                           "on_unknown_outcome": args.on_unknown_outcome, "kills": 0,
                           "restarts": 0}
    text = ""
    try:
        daemon.start(args.startup_timeout)
        setup_agents(daemon.url, args.on_unknown_outcome)
        info(f"agentd at {daemon.url}, home {home}; {args.clients} clients, "
             f"{len(sessions)} sessions, {args.kills} kills, unknown outcomes: "
             f"{args.on_unknown_outcome}")
        for thread in [*clients, *followers, decider]:
            thread.start()
        for k in range(args.kills):
            time.sleep(kill_rng.uniform(args.min_kill_ms, args.max_kill_ms) / 1000.0)
            daemon.kill()
            with shared.lock:
                shared.epoch += 1
            out["kills"] += 1
            if k == args.kills - 1:
                shared.drain.set()  # the last restart: no new messages after it
            daemon.start(args.startup_timeout)
            out["restarts"] += 1
            if (k + 1) % 20 == 0 or k + 1 == args.kills:
                with shared.lock:
                    acked = shared.counts["acknowledged"]
                    decided = shared.counts["decide_acknowledged"]
                info(f"{k + 1}/{args.kills} kills, {acked} messages acknowledged, "
                     f"{decided} decisions, {time.monotonic() - t0:.0f}s")
        if args.kills == 0:
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

        info("every message sent; waiting for every run to end")
        snap = snapshot(daemon.url, {}, time.monotonic() + args.settle_timeout,
                        on_waiting=decider.notice)
        for follower in followers:
            follower.target = len(snap.logs.get(follower.session, []))
        for follower in followers:
            follower.join(args.settle_timeout)
            if follower.error is not None:
                raise RuntimeError(f"{follower.name} crashed: {follower.error!r}")
        if decider.error is not None:
            raise RuntimeError(f"the decider crashed: {decider.error!r}")
        health = httpx.get(f"{daemon.url}/health", timeout=10.0).json()

        effects = read_effects(effects_dir / "effects.log")
        idem = read_effects(effects_dir / "idem.log")
        check(snap, shared, decider, effects, idem, violations, interrupt=interrupt)
        replayed = check_sse(daemon.url, snap, followers, shared.tags, args.sse_sessions,
                             random.Random(f"{args.seed}/sse"), args.settle_timeout,
                             violations)
        out.update(figures(args, snap, shared, followers, daemon, effects, idem, health))
        out["sse_sessions_replayed"] = replayed
        out["sse_sessions_tagged"] = shared.tags.tagged()
        text = report(snap, violations)
    finally:
        shared.stop.set()
        out["final_exit"] = daemon.stop()
        for thread in [*clients, *followers, decider]:
            if thread.ident is not None:  # started
                thread.join(5.0)
        out["duration_s"] = round(time.monotonic() - t0, 1)
    return out, violations, text


def figures(args: argparse.Namespace, snap: Snapshot, shared: Shared,
            followers: list[Follower], daemon: Daemon, effects: list[str], idem: list[str],
            health: dict[str, Any]) -> dict[str, Any]:
    events = [e for log in snap.logs.values() for e in log]
    statuses = collections.Counter(r.get("status") for r in snap.runs.values())
    counts = shared.counts
    return {
        "clients": args.clients,
        "sessions": len(snap.sessions),
        "messages_sent": len(shared.msgs),
        "requests": counts["requests"],
        "requests_by_mode": {m: counts[f"requests_{m}"] for m in ("nowait", "wait", "stream")},
        "acknowledged": counts["acknowledged"],
        "acknowledged_with_key": sum(m.acked and m.idem_key is not None
                                     for m in shared.msgs.values()),
        "connect_errors": counts["connect_errors"],
        "requests_cut": counts["requests_cut"],
        "requests_cut_after_ack": counts["requests_cut_after_ack"],
        "http_status": {k.removeprefix("http_"): v for k, v in sorted(counts.items())
                        if k.startswith("http_")},
        "idempotency_retries": counts["idempotency_retries"],
        "idempotency_resends": counts["idempotency_resends"],
        "idempotency_resends_abandoned": counts["idempotency_resends_abandoned"],
        "runs": len(snap.runs),
        "runs_by_status": dict(sorted(statuses.items(), key=lambda kv: str(kv[0]))),
        "runs_resumed": len({e["run_id"] for e in events if e["kind"] == "run.resumed"}),
        "resumes": sum(e["kind"] == "run.resumed" for e in events),
        # What each resumed run had last committed: where the kill found it.
        "resumed_after": dict(resume_points(snap).most_common()),
        "tool_retries": sum(e["kind"] == "tool.started" and bool(e["data"].get("retry"))
                            for e in events),
        # Decisions logged, by action; runs that waited for one (some across restarts).
        **decision_figures(snap),
        "decide_requests": counts["decide_requests"],
        "decide_acknowledged": counts["decide_acknowledged"],
        "decide_http": {k.removeprefix("decide_http_"): v for k, v in sorted(counts.items())
                        if k.startswith("decide_http_")},
        "decide_requests_cut": counts["decide_requests_cut"],
        "events": len(events),
        "event_kinds_other": dict(collections.Counter(
            e["kind"] for e in events if e["kind"] in ("checkpoint", "run.parked"))),
        "effects": len(effects),
        "effects_repeated": len(effects) - len(set(effects)),
        "idem_effects": len(idem),
        "idem_effects_repeated": len(idem) - len(set(idem)),
        "followed_events": sum(len(f.events) for f in followers),
        "follower_connects": sum(f.connects for f in followers),
        "final_active_runs": health.get("active_runs"),
        "final_queued_runs": health.get("queued_runs"),
        "daemon_start_s_median": round(sorted(daemon.start_s)[len(daemon.start_s) // 2], 3),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="kill -9 the daemon under load, then check "
                                "that nothing acknowledged was lost or repeated")
    p.add_argument("--kills", type=int, default=200, help="SIGKILLs (default 200)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--sessions", type=int, default=12, help="sessions (default 12)")
    p.add_argument("--followers", type=int, default=2,
                   help="sessions followed live over SSE across kills (default 2)")
    p.add_argument("--min-kill-ms", type=float, default=20.0)
    p.add_argument("--max-kill-ms", type=float, default=400.0)
    p.add_argument("--backlog", type=int, default=3,
                   help="unfinished runs a session may have before clients pick another")
    p.add_argument("--idem-share", type=float, default=0.35,
                   help="share of messages sent with an Idempotency-Key (default 0.35)")
    p.add_argument("--on-unknown-outcome", choices=("decide", "interrupt"), default="decide",
                   help="a non-idempotent call cut by a kill: its run waits for the "
                   "harness's decision (default), or ends interrupted")
    p.add_argument("--interrupt-unknown", dest="on_unknown_outcome", action="store_const",
                   const="interrupt", help="same as --on-unknown-outcome interrupt")
    p.add_argument("--retry-share", type=float, default=0.25,
                   help="share of decisions that retry the call (default 0.25)")
    p.add_argument("--fail-share", type=float, default=0.05,
                   help="share of decisions that fail the run (default 0.05); the rest "
                   "skip it")
    p.add_argument("--decide-delay-ms", type=float, default=300.0,
                   help="a waiting run is decided 0..this ms after it is seen (default 300)")
    p.add_argument("--sse-sessions", type=int, default=0,
                   help="sessions replayed over SSE at the end (default 0: all)")
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--settle-timeout", type=float, default=120.0)
    p.add_argument("--postgres", metavar="URL", default=None,
                   help="run the daemon on PostgreSQL at URL (a fresh schema, dropped "
                        "afterwards unless --keep), instead of SQLite in its home")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the home, logs and effect files go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args(argv)
    if args.kills < 0 or args.clients < 1 or args.sessions < 1:
        p.error("--kills must be >= 0, --clients and --sessions >= 1")
    if not 0 <= args.min_kill_ms <= args.max_kill_ms:
        p.error("need 0 <= --min-kill-ms <= --max-kill-ms")
    if args.retry_share < 0 or args.fail_share < 0 or args.retry_share + args.fail_share > 1:
        p.error("need 0 <= --retry-share, --fail-share and their sum <= 1")
    if args.decide_delay_ms < 0:
        p.error("need --decide-delay-ms >= 0")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    args.followers = min(args.followers, args.sessions)
    return args


def _pg_schema(url: str) -> tuple[str, str]:
    """A fresh schema on the PostgreSQL server at ``url``, and a URL that uses it."""
    import uuid
    from urllib.parse import quote

    import psycopg
    schema = f"killtest_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    return schema, f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def _pg_drop(url: str, schema: str) -> None:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="agentd-killtest-"))
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
        out, violations, text = run(args, workdir)
    except (RuntimeError, OSError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        failed = True
        out = {"bench": "killtest", "seed": args.seed, "error": str(exc)[:2000]}
        text = ""
        info(f"harness failed: {exc}")
    out["violations"] = violations.total
    out["violations_by_invariant"] = dict(violations.counts)
    if violations.examples:
        out["violation_examples"] = [f"{v['invariant']}: {v['text']}"[:400]
                                     for v in violations.examples[:5]]
    if text:
        (workdir / "violations.txt").write_text(text + "\n")
        info(f"VIOLATIONS:\n{text}")
    keep = args.keep or failed or violations.total > 0
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
    return 1 if failed or violations.total else 0


if __name__ == "__main__":
    sys.exit(main())
