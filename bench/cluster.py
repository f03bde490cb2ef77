"""Proof by killing, for the cluster (issue 33, item 6): three nodes on one PostgreSQL
database under a mixed load, a random node killed every few seconds for minutes.

The harness starts three real daemons (``python -m agentd serve``, each with its own
home and port) on a fresh PostgreSQL schema, with the tools of
``bench/killtest_tools.py`` (every node appends to the same effect files, so each
side effect is counted wherever it ran) and the default lease and liveness settings
(``lease_ttl_s`` 30, ``node_check_s`` 1). The load, every request to a node drawn at
random among the live ones:

- turns with tools: the agents and client threads of ``bench/killtest.py`` (a
  non-idempotent ``record_once``, an idempotent ``record_idem``, slow model calls,
  plain chat; with and without ``Idempotency-Key``, ``wait``, ``stream``); a decider
  thread answers every run that waits for a decision about a call a kill cut (always
  ``skip``: a call is never run twice by a decision, so every repeat is a duplicate);
- schedules, subtasks and agent calls: the agents and schedules of
  ``bench/killtest_autonomy.py`` (every 2 s and 3 s, ``missed: all``, a cron one) and
  client threads sending to its boss (three subtasks per run) and caller agents;
- streams: follower threads read sessions over SSE and, every 1-4 s and whenever
  their node dies, reconnect to another node with ``Last-Event-ID``.

Every ``--min-kill-s``..``--max-kill-s`` (random) a random live node gets SIGKILL
(never the last one); it is started again ``--restart-delay-s`` later under a new
node id (a new process: what the other nodes see as another node), so its runs are
taken over by the others, never recovered by itself. At each kill the harness reads,
from the database, the runs the dead node held (running or waiting, under its lease).
With ``--pause-share``, that share of the blows SIGSTOPs a node for ``--pause-s``
instead (alive, its liveness lock held: its runs wait for their leases to expire),
then SIGCONTs it: whatever it would still write to the runs taken over from it must
be refused (``pause_*``: the same figures as ``failover_*``, from the stop).

After ``--duration-s`` the kills stop, the dead nodes come back, the clients finish,
the schedules are paused past a final check, every run ends (bounded) and the store
is read back. Figures (one JSON line on stdout; progress on stderr):

- ``lost``: acknowledged messages (a 2xx answer) with no ``message.user`` in their
  session, or whose run did not complete;
- ``duplicate_effects``: ``record_once`` effects written more than once, plus child
  runs (subtasks, agent calls) started more than once for one call;
- ``fires_lost`` / ``fires_duplicated``: fire times of the schedules, from the first
  to the last due before the final check, with no run / with more than one;
- ``stream_gaps``: frames a follower got out of order across its reconnections (a seq
  other than the last one plus one, a frame id or name that is wrong), plus followers
  whose stitched stream is not the stored log;
- ``failover_p50_s`` / ``failover_p99_s`` (and ``_max_s``): for each run a killed node
  held, the time from the kill to the run's next commit on another node (its
  ``run.resumed``: the first thing a node that takes a run over commits; a held run
  with none after the kill counts in ``failover_missing``);
- ``kills``, and every invariant of both kill tests (``violations_by_invariant``,
  ``kt.*`` for the turns, ``auto.*`` for schedules, subtasks and calls).

Exit status 1 when a figure above that must be 0 is not, or the harness failed.
Loopback only; every wait is bounded; every process started here is stopped.

    PYTHONPATH=src .venv/bin/python bench/cluster.py --postgres postgresql://...
    PYTHONPATH=src .venv/bin/python bench/cluster.py --quick --postgres ...   # ~1 min
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError

# bench/ is sys.path[0] when this file runs as a script: its modules import as top-level.
from _killtest_autonomy_check import Violations as AutoViolations
from _killtest_autonomy_check import check_acks as check_auto_acks
from _killtest_autonomy_check import check_runs, check_schedules, check_subtasks
from _killtest_autonomy_setup import BOSS, CALLEE, CALLER, WORKER, Db, Tables
from _killtest_autonomy_setup import setup as setup_autonomy
from _killtest_check import Violations, check, check_sse, read_effects, snapshot
from _killtest_common import AGENTS, AUTH, Session, info, session_path
from _killtest_daemon import Daemon
from _killtest_decide import Decider
from _killtest_load import Client, Msg, Shared
from _killtest_sse import frame_problem, iter_events
from killtest import _pg_drop, _pg_schema, setup_agents
from killtest_autonomy import settle, wait_schedules_past

# -------------------------------------------------------------------------- the nodes


class Cluster:
    """``size`` daemons on one database; what the load threads call ``daemon``: its
    :attr:`url` is a live node's, drawn at random at each request."""

    def __init__(self, workdir: Path, effects_dir: Path, database_url: str, size: int,
                 seed: int, startup_timeout: float, env: dict[str, str]) -> None:
        self.nodes: list[Daemon] = []
        for i in range(size):
            base = workdir / f"node-{i}"
            (base / "home").mkdir(parents=True, exist_ok=True)
            node = Daemon(base, base / "home", effects_dir, database_url=database_url)
            node.env.update(env)
            self.nodes.append(node)
        self.generation = [0] * size
        self.up_since = [0.0] * size
        self.alive: set[int] = set()
        self.lock = threading.Lock()
        self.rng = random.Random(f"{seed}/pick")
        self.startup_timeout = startup_timeout
        self.start_s: list[float] = []

    def node_id(self, i: int) -> str:
        return f"n{i}-g{self.generation[i]}"

    def start(self, i: int) -> None:
        """Start node ``i`` under a new node id (a new node, to the others)."""
        node = self.nodes[i]
        with self.lock:
            self.generation[i] += 1
            node.env["AGENTD_NODE_ID"] = self.node_id(i)
        t0 = time.monotonic()
        node.start(self.startup_timeout)
        with self.lock:
            self.start_s.append(time.monotonic() - t0)
            self.up_since[i] = time.monotonic()
            self.alive.add(i)

    def kill(self, i: int) -> tuple[str, float]:
        """SIGKILL node ``i``; its node id and the time it was killed at."""
        with self.lock:
            self.alive.discard(i)
            node_id = self.node_id(i)
        at = time.time()
        self.nodes[i].kill()
        return node_id, at

    def ages(self) -> dict[str, float]:
        """Each live node's id and how long it has been up."""
        with self.lock:
            now = time.monotonic()
            return {self.node_id(i): round(now - self.up_since[i], 1)
                    for i in sorted(self.alive)}

    def live(self) -> list[int]:
        with self.lock:
            return sorted(self.alive)

    @property
    def url(self) -> str:
        with self.lock:
            pool = sorted(self.alive) or list(range(len(self.nodes)))
            return self.nodes[self.rng.choice(pool)].url

    def other_url(self, than: str | None) -> str:
        """A live node's URL, another than ``than`` when there is one."""
        with self.lock:
            urls = [self.nodes[i].url for i in sorted(self.alive)]
            others = [u for u in urls if u != than] or urls or [self.nodes[0].url]
            return self.rng.choice(others)

    def stop(self) -> list[int | None]:
        return [node.stop() for node in self.nodes]


class HopFollower(threading.Thread):
    """Follows one session's SSE stream, reconnecting with ``Last-Event-ID`` to
    another node every 1-4 s and whenever its node dies; every frame must be the
    one after the last it got, whichever node sent it."""

    def __init__(self, shared: Shared, cluster: Cluster, session: Session, seed: int
                 ) -> None:
        super().__init__(name=f"follow-{session[1]}", daemon=True)
        self.shared = shared
        self.cluster = cluster
        self.session = session
        self.rng = random.Random(f"{seed}/follow/{session[1]}")
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.connects = 0
        self.hops = 0
        self.last_id = "0"
        self.target: int | None = None
        self.error: BaseException | None = None

    @property
    def last(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    def done(self) -> bool:
        return self.target is not None and self.last >= self.target

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc

    def _loop(self) -> None:
        path = session_path(*self.session) + "/events"
        timeout = httpx.Timeout(3.0, connect=2.0)
        base: str | None = None
        while not self.shared.stop.is_set() and not self.done():
            base = self.cluster.other_url(base)
            hop_at = time.monotonic() + self.rng.uniform(1.0, 4.0)
            try:
                with httpx.Client(headers=AUTH, timeout=timeout) as http, http.stream(
                        "GET", base + path, headers={"Accept": "text/event-stream",
                                                     "Last-Event-ID": self.last_id}
                        ) as response:
                    if response.status_code != 200:  # no session yet
                        response.read()
                        time.sleep(0.05)
                        continue
                    self.connects += 1
                    self.hops += self.connects > 1
                    for name, frame_id, event in iter_events(response):
                        problem = frame_problem(self.session, name, frame_id, event,
                                                self.shared.tags)
                        if problem is None and event.get("seq") != self.last + 1:
                            problem = f"after seq {self.last} came seq {event.get('seq')}"
                        if problem is not None:
                            self.problems.append(problem)
                        self.events.append(event)
                        self.last_id = frame_id or str(event.get("seq"))
                        if self.done() or self.shared.stop.is_set():
                            return
                        if time.monotonic() > hop_at:
                            break
            except (httpx.HTTPError, SSEError, ValueError):
                time.sleep(0.02)


# -------------------------------------------------------------------------- the kills


@dataclass
class Kill:
    node_id: str
    at: float
    #: The runs the node held when it died (running or waiting, under its lease).
    runs: list[str] = field(default_factory=list)
    #: The nodes left alive, and how long each had been up.
    left: dict[str, float] = field(default_factory=dict)


def held_runs(db: Db, node_id: str) -> list[str]:
    rows = db._query("SELECT id FROM runs WHERE lease_owner = '" + node_id.replace("'", "")
                     + "' AND status IN ('running', 'waiting_approval')")
    return [str(r[0]) for r in rows]


def pause_node(args: argparse.Namespace, cluster: Cluster, db: Db, i: int,
               pauses: list[Kill], t0: float) -> threading.Thread:
    """SIGSTOP node ``i`` for ``--pause-s`` (alive, its liveness lock held, doing
    nothing: its runs are taken over when their leases expire), then SIGCONT: what
    it would still write to them must be refused."""
    with cluster.lock:
        cluster.alive.discard(i)
        node_id = cluster.node_id(i)
    pid = cluster.nodes[i].proc.pid  # type: ignore[union-attr]
    at = time.time()
    os.kill(pid, signal.SIGSTOP)
    pauses.append(Kill(node_id, at, held_runs(db, node_id), cluster.ages()))
    info(f"{time.monotonic() - t0:5.1f}s: stopped {node_id} for {args.pause_s:.0f}s")

    def wake() -> None:
        time.sleep(args.pause_s)
        os.kill(pid, signal.SIGCONT)
        with cluster.lock:
            cluster.alive.add(i)
        info(f"{time.monotonic() - t0:5.1f}s: {node_id} goes on")

    thread = threading.Thread(target=wake, name=f"wake-{i}", daemon=True)
    thread.start()
    return thread


def kill_loop(args: argparse.Namespace, cluster: Cluster, db: Db, shareds: list[Shared],
              kills: list[Kill], pauses: list[Kill], errors: list[str]
              ) -> list[threading.Thread]:
    """Kill a random live node every few seconds until ``--duration-s`` has passed;
    each comes back ``--restart-delay-s`` later (or, ``--pause-share`` of the time,
    stop one for ``--pause-s``). Returns the restarting threads."""
    rng = random.Random(f"{args.seed}/kills")
    restarts: list[threading.Thread] = []
    end = time.monotonic() + args.duration_s
    t0 = time.monotonic()
    while True:
        pause = rng.uniform(args.min_kill_s, args.max_kill_s)
        if time.monotonic() + pause > end:
            break
        time.sleep(pause)
        live = cluster.live()
        if len(live) < 2:
            continue  # never the last node
        i = rng.choice(live)
        if rng.random() < args.pause_share:
            restarts.append(pause_node(args, cluster, db, i, pauses, t0))
            continue
        node_id, at = cluster.kill(i)
        kill = Kill(node_id, at, held_runs(db, node_id), cluster.ages())
        kills.append(kill)
        for shared in shareds:
            with shared.lock:
                shared.epoch += 1
        info(f"{time.monotonic() - t0:5.1f}s: killed {node_id} holding "
             f"{len(kill.runs)} run(s); {len(kills)} kills")

        def restart(i: int = i) -> None:
            time.sleep(args.restart_delay_s)
            try:
                cluster.start(i)
            except Exception as exc:  # reported by the harness
                errors.append(f"restarting node {i}: {exc}")

        thread = threading.Thread(target=restart, name=f"restart-{i}", daemon=True)
        thread.start()
        restarts.append(thread)
    time.sleep(max(0.0, end - time.monotonic()))
    return restarts


# -------------------------------------------------------------------------- the figures


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def failover(db: Db, kills: list[Kill]) -> dict[str, Any]:
    """For each run a killed node held: the time from the kill to its next commit on
    another node (its run.resumed: the first thing a node taking a run over commits)."""
    ids = sorted({r for k in kills for r in k.runs})
    resumes: dict[str, list[float]] = collections.defaultdict(list)
    for chunk in range(0, len(ids), 500):
        listed = ", ".join("'" + r.replace("'", "") + "'" for r in ids[chunk:chunk + 500])
        for run_id, at in db._query(f"SELECT run_id, at FROM events WHERE run_id IN "
                                    f"({listed}) AND kind = 'run.resumed' ORDER BY at"):
            resumes[str(run_id)].append(float(at))
    delays: list[float] = []
    slowest: list[tuple[float, Kill, str]] = []
    missing = 0
    for kill in kills:
        for run_id in kill.runs:
            at = next((t for t in resumes.get(run_id, []) if t > kill.at), None)
            if at is None:
                missing += 1
            else:
                delays.append(at - kill.at)
                slowest.append((at - kill.at, kill, run_id))
    slowest.sort(key=lambda x: -x[0])
    return {"failover_p50_s": percentile(delays, 0.5),
            "failover_p99_s": percentile(delays, 0.99),
            "failover_max_s": percentile(delays, 1.0),
            "failover_runs": len(delays), "failover_missing": missing,
            # The slowest takeovers: the dead node, the run, the nodes left alive
            # (node id: seconds up) at the kill.
            "failover_slowest": [{"s": round(d, 3), "node": k.node_id, "run": r,
                                  "left": k.left} for d, k, r in slowest[:3]]}


def lost_messages(tables: Tables, msgs: list[Msg]) -> tuple[int, int, list[str]]:
    """(acknowledged, lost, examples): a message is lost when it was acknowledged
    and its session has no message.user of it, or its run did not complete."""
    found: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
    for sid, log in tables.events.items():
        session = tables.sessions[sid]
        for e in log:
            if e["kind"] == "message.user" and "content" in e["data"]:
                found[(session["agent"], session["key"], e["data"]["content"])].append(
                    e["run_id"])
    acked = lost = 0
    examples: list[str] = []
    for msg in msgs:
        if not msg.acked:
            continue
        acked += 1
        runs = found.get((msg.agent, msg.key, msg.content), [])
        status = tables.runs.get(runs[0], {}).get("status") if runs else None
        if status != "completed":
            lost += 1
            if len(examples) < 5:
                examples.append(f"{msg.agent}/{msg.key} {msg.content!r}: runs {runs}, "
                                f"{status}")
    return acked, lost, examples


def duplicate_effects(tables: Tables, effects: list[str]) -> int:
    """record_once effects written more than once (no retry is ever decided here),
    and child runs (subtasks, calls) of no subtask row: started twice for one call."""
    repeated = sum(n - 1 for n in collections.Counter(effects).values() if n > 1)
    linked = {r["child_run"] for r in tables.subtasks}
    strays = sum(1 for r in tables.runs.values()
                 if r["agent"] in (WORKER, CALLEE) and r["id"] not in linked)
    return repeated + strays


# -------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, workdir: Path, url: str
        ) -> tuple[dict[str, Any], int]:
    t0 = time.monotonic()
    effects_dir = workdir / "effects"
    effects_dir.mkdir(parents=True, exist_ok=True)
    env = {} if args.node_check_s is None else {"AGENTD_NODE_CHECK_S": str(args.node_check_s)}
    cluster = Cluster(workdir, effects_dir, url, args.nodes, args.seed,
                      args.startup_timeout, env)
    db = Db(pg_url=url)
    names = list(AGENTS)
    kt_sessions = [(names[i % len(names)], f"kill:{i}") for i in range(args.sessions)]
    auto_sessions = ([(BOSS, f"boss:{i}") for i in range(args.boss_sessions)]
                     + [(CALLER, f"caller:{i}") for i in range(args.caller_sessions)])
    kt = Shared(cluster, kt_sessions, args.backlog)
    auto = Shared(cluster, auto_sessions, args.backlog)
    clients = ([Client(i, kt, args.seed, args.idem_share) for i in range(args.clients)]
               + [Client(100 + i, auto, args.seed, args.idem_share)
                  for i in range(args.auto_clients)])
    followers = [HopFollower(kt, cluster, s, args.seed) for s in kt_sessions[:args.followers]]
    decider = Decider(kt, args.seed, 0.0, 0.0, 0.3, poll_s=0.3)
    kills: list[Kill] = []
    pauses: list[Kill] = []
    errors: list[str] = []
    out: dict[str, Any] = {"bench": "cluster", "seed": args.seed, "nodes": args.nodes,
                           "quick": args.quick, "node_check_s": args.node_check_s,
                           "kills": 0}
    kt_v, auto_v = Violations(), AutoViolations()
    threads: list[threading.Thread] = [*clients, *followers, decider]
    try:
        starters = [threading.Thread(target=cluster.start, args=(i,))
                    for i in range(args.nodes)]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        if len(cluster.live()) != args.nodes:
            raise RuntimeError("not every node started; see the logs under "
                               f"{workdir}")
        first = cluster.nodes[0].url
        setup_agents(first, "decide")
        created = setup_autonomy(first, args.interval_scale)
        info(f"{args.nodes} nodes up ({', '.join(n.url for n in cluster.nodes)}); "
             f"{len(created)} schedules, {len(clients)} clients, {len(followers)} "
             f"followers; killing for {args.duration_s:.0f}s")
        for thread in threads:
            thread.start()
        time.sleep(args.warmup_s)
        restarts = kill_loop(args, cluster, db, [kt, auto], kills, pauses, errors)
        out["kills"], out["pauses"] = len(kills), len(pauses)
        for thread in restarts:
            thread.join(args.startup_timeout * 3 + args.restart_delay_s)
        for i in range(args.nodes):
            if i not in cluster.live():
                cluster.start(i)
        if errors:
            raise RuntimeError("; ".join(errors))
        info("kills over, every node up; the clients finish")
        kt.drain.set()
        auto.drain.set()
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
        wait_schedules_past(first, sorted(created), t_check,
                            time.monotonic() + args.settle_timeout)
        info("schedules paused; waiting for every run to end")
        pending = settle(db, time.monotonic() + args.settle_timeout)
        if pending != (0, 0):
            info(f"not settled: {pending[0]} active runs, {pending[1]} unreported subtasks")
        snap = snapshot(first, {}, time.monotonic() + args.settle_timeout,
                        on_waiting=decider.notice)
        for follower in followers:
            follower.target = len(snap.logs.get(follower.session, []))
        for follower in followers:
            follower.join(args.settle_timeout)
            if follower.error is not None:
                raise RuntimeError(f"{follower.name} crashed: {follower.error!r}")
        if decider.error is not None:
            raise RuntimeError(f"the decider crashed: {decider.error!r}")

        effects = read_effects(effects_dir / "effects.log")
        idem = read_effects(effects_dir / "idem.log")
        check(snap, kt, decider, effects, idem, kt_v, interrupt=False)
        check_sse(first, snap, followers, kt.tags, args.sse_sessions,
                  random.Random(f"{args.seed}/sse"), args.settle_timeout, kt_v)
        tables = db.read()
        fires = check_schedules(tables, created, t_check, auto_v)
        out.update(check_subtasks(tables, auto_v))
        out.update(check_runs(tables, auto_v))
        check_auto_acks(tables, auto.msgs, auto_v)

        acked, lost, lost_examples = lost_messages(
            tables, [*kt.msgs.values(), *auto.msgs.values()])
        gaps = sum(len(f.problems) for f in followers) + sum(
            f.events != snap.logs.get(f.session, []) for f in followers)
        out.update({
            "duration_s": args.duration_s,
            "acknowledged": acked,
            "lost": lost,
            "duplicate_effects": duplicate_effects(tables, effects),
            "fires_lost": fires["fires_lost"],
            "fires_duplicated": fires["fires_duplicated"],
            "fire_times": fires["fire_times"],
            "stream_gaps": gaps,
            "stream_frames": sum(len(f.events) for f in followers),
            "stream_reconnects": sum(f.connects for f in followers),
            "stream_node_hops": sum(f.hops for f in followers),
            **failover(db, kills),
            **{f"pause_{k.removeprefix('failover_')}": v
               for k, v in failover(db, pauses).items()},
            "runs_held_at_kills": sum(len(k.runs) for k in kills),
            "effects": len(effects),
            "idem_effects": len(idem),
            "decisions": decider.acked.total(),
            "requests": kt.counts["requests"] + auto.counts["requests"],
            "connect_errors": kt.counts["connect_errors"] + auto.counts["connect_errors"],
            "node_start_s_median": percentile(cluster.start_s, 0.5),
        })
        if lost_examples:
            out["lost_examples"] = lost_examples
    finally:
        kt.stop.set()
        auto.stop.set()
        out["final_exit"] = cluster.stop()
        for thread in threads:
            if thread.ident is not None:
                thread.join(5.0)
        out["wall_s"] = round(time.monotonic() - t0, 1)
    by_invariant = {f"kt.{k}": n for k, n in kt_v.counts.items()}
    by_invariant.update({f"auto.{k}": n for k, n in auto_v.counts.items()})
    out["violations"] = kt_v.total + auto_v.total
    out["violations_by_invariant"] = by_invariant
    examples = [f"kt.{v['invariant']}: {v['text']}"[:400] for v in kt_v.examples[:5]]
    examples += [f"auto.{x}"[:400] for x in auto_v.examples[:5]]
    if examples:
        out["violation_examples"] = examples
        (workdir / "violations.txt").write_text("\n".join(examples) + "\n")
    return out, kt_v.total + auto_v.total


MUST_BE_ZERO = ("lost", "duplicate_effects", "fires_lost", "fires_duplicated",
                "stream_gaps", "violations")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="kill random nodes of a three-node cluster "
                                "under load; check nothing is lost or done twice and "
                                "measure how fast a dead node's runs are taken over")
    p.add_argument("--postgres", metavar="URL",
                   default=os.environ.get("AGENTD_TEST_POSTGRES_URL"),
                   help="the PostgreSQL server (a fresh schema, dropped afterwards "
                   "unless --keep); default: $AGENTD_TEST_POSTGRES_URL")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: 30 s of kills every 3-4.5 s, a lighter load (CI)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--duration-s", type=float, default=300.0,
                   help="how long nodes are killed (default 300)")
    p.add_argument("--min-kill-s", type=float, default=3.0)
    p.add_argument("--max-kill-s", type=float, default=6.0)
    p.add_argument("--restart-delay-s", type=float, default=2.0,
                   help="a killed node starts again (as a new node) after this")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--pause-share", type=float, default=0.0,
                   help="share of the blows that SIGSTOP a node for --pause-s instead "
                   "of killing it (default 0): stalled, not dead")
    p.add_argument("--pause-s", type=float, default=40.0,
                   help="how long a stopped node stays stopped (default 40: longer than "
                   "a lease, so that its runs are taken over)")
    p.add_argument("--node-check-s", type=float, default=None,
                   help="the nodes' node_check_s (default: theirs, 1; 0: no liveness "
                   "lock, a dead node's runs wait for their leases: the A/B baseline)")
    p.add_argument("--clients", type=int, default=3, help="turn clients (default 3)")
    p.add_argument("--sessions", type=int, default=9)
    p.add_argument("--followers", type=int, default=3)
    p.add_argument("--auto-clients", type=int, default=1,
                   help="clients of the boss and caller agents (default 1)")
    p.add_argument("--boss-sessions", type=int, default=3)
    p.add_argument("--caller-sessions", type=int, default=2)
    p.add_argument("--backlog", type=int, default=2)
    p.add_argument("--idem-share", type=float, default=0.3)
    p.add_argument("--interval-scale", type=int, default=1,
                   help="the schedules fire every 2 and 3 s times this (default 1)")
    p.add_argument("--sse-sessions", type=int, default=0,
                   help="sessions replayed over SSE at the end (default 0: all)")
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--settle-timeout", type=float, default=120.0)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the work dir and schema")
    args = p.parse_args(argv)
    if args.quick:
        args.duration_s, args.min_kill_s, args.max_kill_s = 30.0, 3.0, 4.5
        args.restart_delay_s, args.warmup_s = 1.0, 2.0
        args.clients, args.sessions, args.followers = 2, 6, 2
        args.boss_sessions, args.caller_sessions = 2, 1
    if not args.postgres:
        p.error("needs --postgres URL (or AGENTD_TEST_POSTGRES_URL)")
    if args.nodes < 2:
        p.error("--nodes must be >= 2")
    if not 0 < args.min_kill_s <= args.max_kill_s:
        p.error("need 0 < --min-kill-s <= --max-kill-s")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    args.followers = min(args.followers, args.sessions)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="agentd-cluster-"))
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    schema, url = _pg_schema(args.postgres)
    failed = False
    try:
        out, _ = run(args, workdir, url)
    except (RuntimeError, OSError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
        failed = True
        out = {"bench": "cluster", "seed": args.seed, "error": str(exc)[:2000]}
        info(f"harness failed: {exc}")
    out["ok"] = not failed and all(out.get(k) == 0 for k in MUST_BE_ZERO)
    keep = args.keep or not out["ok"]
    if keep:
        info(f"kept {workdir} and PostgreSQL schema {schema}")
        out["workdir"], out["schema"] = str(workdir), schema
    else:
        _pg_drop(args.postgres, schema)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
