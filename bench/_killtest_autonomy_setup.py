"""The agents, schedules and store reader of the autonomy kill test
(``bench/killtest_autonomy.py``).

Agents (all on the scripted model):

- ``ka-sched-<i>``: fired by schedules only; each fire's run is one slow model call.
  Their ``settings.schedules`` lower ``min_interval_s`` to its minimum (1 s) and turn
  off the failure backoff and pausing, so every fire time is due and fired.
- ``ka-boss``: a client's message starts three subtasks run by ``ka-worker``
  (``subtask_start`` x3 in one step), waits for them all (``subtask_wait``), answers.
- ``ka-worker``: answers a subtask after a delay.
- ``ka-caller``: a client's message calls ``ka-callee`` (``agent_call``), then answers.
- ``ka-callee``: answers a call after a delay.

The store is read with plain read-only SQL (SQLite ``mode=ro``, or the PostgreSQL
schema the daemon uses): every table the checks need, whole.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _killtest_common import AUTH

SCHED_AGENTS = ("ka-sched-0", "ka-sched-1", "ka-sched-2")
BOSS, WORKER, CALLER, CALLEE = "ka-boss", "ka-worker", "ka-caller", "ka-callee"
#: Subtasks one boss run starts.
FANOUT = 3
WORKER_TEXT = "part done"
CALLEE_TEXT = "pong from the callee"


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


_SCHEDULE_SETTINGS = {"min_interval_s": 1, "backoff_s": 0, "pause_after_failures": 0,
                      "catchup_s": 3600, "missed": "all", "overlap": "enqueue"}


def agent_bodies() -> list[dict[str, Any]]:
    """The ``POST /v1/agents`` bodies."""
    bodies: list[dict[str, Any]] = [
        {"name": name, "model": "scripted", "settings": {
            "schedules": _SCHEDULE_SETTINGS,
            "script": [{"text": "tick handled", "delay_ms": 60}]}}
        for name in SCHED_AGENTS]
    starts = [_call("subtask_start", title=f"part {j}", instructions=f"do part {j}",
                    agent=WORKER) for j in range(FANOUT)]
    bodies += [
        {"name": WORKER, "model": "scripted", "settings": {
            "script": [{"text": WORKER_TEXT, "delay_ms": 150}]}},
        {"name": BOSS, "model": "scripted", "tools": ["subtask_start", "subtask_wait"],
         "settings": {
             "delegation": {"calls": {"allow": [WORKER]},
                            "subtasks": {"max_wait_s": 300}},
             "script": [{"tool_calls": starts, "delay_ms": 40},
                        {"tool_calls": [_call("subtask_wait", timeout_s=300)]},
                        {"text": "merged the parts", "delay_ms": 40}]}},
        {"name": CALLEE, "model": "scripted", "settings": {
            "script": [{"text": CALLEE_TEXT, "delay_ms": 100}]}},
        {"name": CALLER, "model": "scripted", "tools": ["agent_call"], "settings": {
            "delegation": {"calls": {"allow": [CALLEE], "timeout_s": 300}},
            "script": [{"tool_calls": [_call("agent_call", agent=CALLEE, message="ping")],
                        "delay_ms": 20},
                       {"text": "got the reply"}]}},
    ]
    return bodies


def schedule_bodies(scale: int = 1, every_1s: bool = False
                    ) -> list[tuple[str, dict[str, Any]]]:
    """``(agent, POST /v1/agents/{agent}/schedules body)``: per scheduled agent one
    interval schedule into a fixed session and one into a new session per fire
    (jittered on the first agent), every 2 and 3 s times ``scale``, and one cron
    schedule (every minute: the finest a cron expression has). ``every_1s``: one more,
    every second (the finest an interval may be) into a fixed session (issue 29)."""
    common = {"missed": "all", "overlap": "enqueue", "catchup_s": 3600}
    out: list[tuple[str, dict[str, Any]]] = []
    if every_1s:
        out.append((SCHED_AGENTS[1], {"every_s": 1, "session": "second:1",
                                      "content": "second", **common}))
    for i, agent in enumerate(SCHED_AGENTS):
        out.append((agent, {"every_s": 2 * scale, "session": f"tick:{i}", "content": f"tick {i}",
                            **common}))
        out.append((agent, {"every_s": 3 * scale, "content": f"tock {i}",
                            "jitter_s": 0.5 if i == 0 else 0, **common}))
    out.append((SCHED_AGENTS[0], {"cron": "* * * * *", "session": "cron:0",
                                  "content": "minute", **common}))
    return out


def parse_iso(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def setup(base: str, scale: int = 1, every_1s: bool = False) -> dict[str, dict[str, Any]]:
    """Create the agents and schedules; the schedules as created, by id."""
    schedules: dict[str, dict[str, Any]] = {}
    with httpx.Client(headers=AUTH, base_url=base, timeout=30.0) as http:
        for body in agent_bodies():
            response = http.post("/v1/agents", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"creating agent {body['name']}: HTTP "
                                   f"{response.status_code} {response.text[:500]}")
        for agent, body in schedule_bodies(scale, every_1s):
            response = http.post(f"/v1/agents/{agent}/schedules", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"creating a schedule of {agent}: HTTP "
                                   f"{response.status_code} {response.text[:500]}")
            made = response.json()
            made["first_fire_at"] = parse_iso(made["next_fire_at"])
            schedules[made["id"]] = made
    return schedules


# --------------------------------------------------------------------------- the store


@dataclass
class Tables:
    """Every row the checks read, keyed for them."""

    agents: dict[str, str]  # id -> name
    sessions: dict[str, dict[str, Any]]  # id -> row (+ "agent")
    runs: dict[str, dict[str, Any]]  # id -> row (+ "agent")
    events: dict[str, list[dict[str, Any]]]  # session id -> events by seq
    subtasks: list[dict[str, Any]]
    schedules: dict[str, dict[str, Any]]
    fires: dict[str, list[dict[str, Any]]]  # schedule id -> rows by fire_at
    by_run: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for log in self.events.values():
            for e in log:
                if e["run_id"]:
                    self.by_run.setdefault(e["run_id"], []).append(e)


class Db:
    """Read-only SQL on the daemon's store (SQLite file or PostgreSQL URL)."""

    def __init__(self, *, sqlite_path: Path | None = None, pg_url: str | None = None
                 ) -> None:
        self.sqlite_path = sqlite_path
        self.pg_url = pg_url

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.pg_url is not None:
            import psycopg
            with psycopg.connect(self.pg_url) as conn:
                conn.read_only = True
                return list(conn.execute(sql).fetchall())
        assert self.sqlite_path is not None
        conn = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=30.0)
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()

    def pending(self) -> tuple[int, int]:
        """Runs not terminal, subtasks whose end is not logged in the parent yet."""
        active = self._query("SELECT COUNT(*) FROM runs WHERE status IN "
                             "('queued', 'running', 'waiting_approval')")[0][0]
        unreported = self._query("SELECT COUNT(*) FROM subtasks WHERE reported = 0")[0][0]
        return int(active), int(unreported)

    def read(self) -> Tables:
        agents = {r[0]: r[1] for r in self._query("SELECT id, name FROM agents")}
        sessions = {r[0]: {"id": r[0], "agent": agents.get(r[1], "?"), "key": r[2],
                           "last_seq": int(r[3])}
                    for r in self._query("SELECT id, agent_id, key, last_seq FROM sessions")}
        runs = {r[0]: {"id": r[0], "session_id": r[1], "agent": agents.get(r[2], "?"),
                       "status": r[3], "output": r[4],
                       "error": json.loads(r[5]) if r[5] else None}
                for r in self._query("SELECT id, session_id, agent_id, status, output, "
                                     "error FROM runs")}
        events: dict[str, list[dict[str, Any]]] = {s: [] for s in sessions}
        for r in self._query("SELECT session_id, seq, run_id, kind, data FROM events "
                             "ORDER BY session_id, seq"):
            events.setdefault(r[0], []).append(
                {"seq": int(r[1]), "run_id": r[2], "kind": r[3], "data": json.loads(r[4])})
        cols = ("id", "type", "parent_run", "parent_session", "n", "effect_id",
                "child_run", "child_session", "child_agent", "child_key", "reported")
        subtasks = [dict(zip(cols, r, strict=True)) for r in self._query(
            f"SELECT {', '.join(cols)} FROM subtasks")]
        scols = ("id", "every_s", "cron", "timezone", "session", "next_fire_at",
                 "enabled", "fires", "missed_count", "skipped_count")
        schedules = {r[0]: dict(zip(scols, r, strict=True)) for r in self._query(
            f"SELECT {', '.join(scols)} FROM schedules")}
        fires: dict[str, list[dict[str, Any]]] = {s: [] for s in schedules}
        for r in self._query("SELECT schedule_id, fire_at, run_id, status, reason FROM "
                             "schedule_fires ORDER BY schedule_id, fire_at"):
            fires.setdefault(r[0], []).append(
                {"fire_at": float(r[1]), "run_id": r[2], "status": r[3], "reason": r[4]})
        return Tables(agents=agents, sessions=sessions, runs=runs, events=events,
                      subtasks=subtasks, schedules=schedules, fires=fires)
