"""The invariants of the autonomy kill test (``bench/killtest_autonomy.py``; its
docstring lists them), checked on the store's tables read back after the kills."""

from __future__ import annotations

import bisect
import collections
import json
from collections.abc import Callable
from typing import Any

from _killtest_autonomy_setup import BOSS, CALLEE, CALLER, FANOUT, WORKER, Tables
from _killtest_load import Msg
from agentd.autonomy._cron import check_timezone, cron_after

INVARIANTS = ("fire_once", "fire_run_once", "fire_stalled", "subtask_once",
              "result_once", "call_once", "run_terminal", "run_outcome", "seq_dense",
              "ack_once", "step_once")
#: Claims a schedule keeps (``agentd.store.schedules.KEEP_FIRES``): older ones are
#: pruned, so only the newest this many fire times must still have their row.
KEEP_FIRES = 256
TERMINAL = frozenset({"completed", "failed", "cancelled", "interrupted"})
#: Fire times that differ by less than this are the same (they are computed, not parsed).
EPS = 1e-3


class Violations:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter(
            {name: 0 for name in INVARIANTS})
        self.examples: list[str] = []

    def add(self, invariant: str, text: str) -> None:
        assert invariant in INVARIANTS, invariant
        self.counts[invariant] += 1
        if len(self.examples) < 50:
            self.examples.append(f"{invariant}: {text}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _key(t: float) -> int:
    return round(t / EPS)


def snapper(times: list[float]) -> Callable[[float], int]:
    """The key of a fire time read from the store: that of the expected time it is
    within ``EPS`` of (``times``, sorted), else its own. Not a grid: the expected
    times come from the API's ISO string (microseconds), the stored ones are floats,
    and rounding both to the nearest millisecond splits them whenever a time's
    sub-millisecond part is about 0.5 (issue 29: a whole schedule "lost", each of its
    fire times claimed and run, under another key)."""
    keys = [_key(t) for t in times]

    def key(t: float) -> int:
        i = bisect.bisect_left(times, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(times)]
        if near:
            j = min(near, key=lambda j: abs(times[j] - t))
            if abs(times[j] - t) < EPS:
                return keys[j]
        return _key(t)

    return key


def expected_times(sched: dict[str, Any], first: float, until: float) -> list[float]:
    """The schedule's nominal fire times from ``first`` to before ``until``."""
    out: list[float] = []
    t: float | None = first
    if sched["every_s"] is not None:
        e = float(sched["every_s"])
        i = 0
        while (t := first + i * e) < until - EPS:
            out.append(t)
            i += 1
        return out
    zone = check_timezone(sched["timezone"])
    while t is not None and t < until - EPS:
        out.append(t)
        t = cron_after(sched["cron"], zone, t)
    return out


def check_schedules(tables: Tables, created: dict[str, dict[str, Any]], t_check: float,
                    v: Violations) -> dict[str, Any]:
    """Every fire time of every schedule, from its first to the last one due before
    the final check, has one claim (``schedule_fires``, fired) and one run whose
    ``message.user`` names it; nothing else claims or runs for the schedule."""
    fire_msgs: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for log in tables.events.values():
        for e in log:
            d = e["data"]
            if e["kind"] == "message.user" and "schedule_id" in d:
                fire_msgs[d["schedule_id"]].append((float(d["fire_at"]), e["run_id"]))
    fire_runs: dict[str, dict[int, list[str]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    total = pruned = lost = duplicated = 0
    for sid, made in created.items():
        sched = tables.schedules.get(sid)
        if sched is None:
            v.add("fire_once", f"schedule {sid} is gone")
            continue
        final = sched["next_fire_at"]
        if final is None or final < t_check:
            v.add("fire_stalled", f"schedule {sid}: next fire {final} is before the final "
                  f"check at {t_check:.3f}: due fire times were never fired")
            final = t_check if final is None else final
        times = expected_times(sched, made["first_fire_at"], final)
        total += len(times)
        key = snapper(times)
        for t, run_id in fire_msgs.get(sid, []):
            fire_runs[sid][key(t)].append(run_id)
        rows = {key(r["fire_at"]): r for r in tables.fires.get(sid, [])}
        kept = sorted(rows)[-KEEP_FIRES:] if len(rows) >= KEEP_FIRES else None
        expected = {_key(t) for t in times}
        for k in sorted(set(rows) - expected):
            v.add("fire_once", f"schedule {sid}: claim of fire time {k * EPS:.3f}, not one "
                  "of its fire times")
        for k in sorted(set(fire_runs[sid]) - expected):
            duplicated += len(fire_runs[sid][k])
            v.add("fire_run_once", f"schedule {sid}: runs {fire_runs[sid][k]} for fire "
                  f"time {k * EPS:.3f}, not one of its fire times")
        for t in times:
            k = _key(t)
            row = rows.get(k)
            runs = fire_runs[sid].get(k, [])
            if row is None:
                pruned += kept is not None and k < kept[0]
                if kept is None or k >= kept[0]:
                    v.add("fire_once", f"schedule {sid}: fire time {t:.3f} has no claim "
                          f"(runs {runs})")
            elif row["status"] != "fired" or row["run_id"] is None:
                v.add("fire_once", f"schedule {sid}: fire time {t:.3f} claimed "
                      f"{row['status']} ({row['reason']}) under overlap: enqueue")
            if len(runs) != 1:
                lost += not runs
                duplicated += max(len(runs) - 1, 0)
                v.add("fire_run_once", f"schedule {sid}: fire time {t:.3f} has {len(runs)} "
                      f"runs {runs}")
            else:
                if row is not None and row["run_id"] not in (None, runs[0]):
                    v.add("fire_run_once", f"schedule {sid}: fire time {t:.3f} claimed for "
                          f"run {row['run_id']}, ran as {runs[0]}")
                run = tables.runs.get(runs[0] or "")
                key = tables.sessions.get(run["session_id"], {}).get("key") if run else None
                want = sched["session"] or f"schedule:{sid}:"
                if key is None or not (key == want or (sched["session"] is None
                                                       and key.startswith(want))):
                    v.add("fire_run_once", f"schedule {sid}: fire time {t:.3f} ran in "
                          f"session {key!r}, not {want!r}")
        if sched["fires"] != len(times):
            v.add("fire_once", f"schedule {sid}: counts {sched['fires']} fires, "
                  f"{len(times)} fire times")
    return {"schedules": len(created), "fire_times": total, "fire_claims_pruned": pruned,
            # Fire times with no run at all, and runs beyond one for a fire time.
            "fires_lost": lost, "fires_duplicated": duplicated,
            # What the daemon itself counted as missed / skipped (missed: all drops
            # fire times older than the latest MAX_CATCHUP of a schedule far behind).
            "fires_missed_counted": sum(int(s["missed_count"]) for s in tables.schedules.values()),
            "fires_skipped_counted": sum(int(s["skipped_count"])
                                         for s in tables.schedules.values()),
            "fire_runs": sum(len(r) for by in fire_runs.values() for r in by.values())}


def _tool_events(tables: Tables, run_id: str, kind: str, name: str) -> list[dict[str, Any]]:
    return [e for e in tables.by_run.get(run_id, [])
            if e["kind"] == kind and e["data"].get("name") == name]


def results_by_effect(log: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each ``tool.finished`` of a run's log with its call's effect id (that of the
    latest ``tool.started`` of its call id: call ids repeat from step to step)."""
    effect_of: dict[str, str] = {}
    out: list[tuple[str, dict[str, Any]]] = []
    for e in log:
        if e["kind"] == "tool.started":
            effect_of[e["data"]["call_id"]] = e["data"]["effect_id"]
        elif e["kind"] == "tool.finished":
            out.append((effect_of.get(e["data"]["call_id"], "?" + e["data"]["call_id"]), e))
    return out


def _output(data: dict[str, Any]) -> Any:
    out = data.get("output")
    if isinstance(out, str):
        try:
            return json.loads(out)
        except ValueError:
            return out
    return out


def check_subtasks(tables: Tables, v: Violations) -> dict[str, Any]:
    """Each subtask row has one child run, terminal, linked once (one subtask.started)
    and reported once (one subtask.finished) in its parent's session; every run of the
    worker and callee agents is some row's child; each boss run's three
    ``subtask_start`` calls made three rows, and its wait got each child once, with
    its output; each ``agent_call`` answered with the callee's reply, once."""
    by_effect = {r["effect_id"]: r for r in tables.subtasks}
    by_child = collections.Counter(r["child_run"] for r in tables.subtasks)
    of_parent: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in tables.subtasks:
        of_parent[row["parent_run"]].append(row)
    marks: dict[str, collections.Counter[str]] = {
        k: collections.Counter() for k in ("subtask.started", "subtask.finished")}
    for log in tables.events.values():
        for e in log:
            if e["kind"] in marks:
                marks[e["kind"]][e["data"].get("subtask_id", "?")] += 1
    for row in tables.subtasks:
        sid, child = row["id"], tables.runs.get(row["child_run"])
        if child is None:
            v.add("subtask_once", f"subtask {sid}: child run {row['child_run']} missing")
            continue
        if by_child[row["child_run"]] != 1:
            v.add("subtask_once", f"subtask {sid}: its child run is the child of "
                  f"{by_child[row['child_run']]} rows")
        session_runs = [r for r in tables.runs.values()
                        if r["session_id"] == row["child_session"]]
        if len(session_runs) != 1:
            v.add("subtask_once", f"subtask {sid}: {len(session_runs)} runs in its child "
                  f"session {row['child_key']}")
        users = [e for e in tables.by_run.get(child["id"], []) if e["kind"] == "message.user"]
        if len(users) != 1 or users[0]["data"].get("subtask_id") != sid or (
                users[0]["data"].get("parent_run") != row["parent_run"]):
            v.add("subtask_once", f"subtask {sid}: child message.user events "
                  f"{[u['data'] for u in users]}")
        if marks["subtask.started"][sid] != 1:
            v.add("subtask_once", f"subtask {sid}: {marks['subtask.started'][sid]} "
                  "subtask.started events")
        if marks["subtask.finished"][sid] != 1:
            v.add("result_once", f"subtask {sid}: {marks['subtask.finished'][sid]} "
                  "subtask.finished events in its parent's session")
        else:
            ends = [e for e in tables.events.get(row["parent_session"], [])
                    if e["kind"] == "subtask.finished" and e["data"]["subtask_id"] == sid]
            if not ends:
                v.add("result_once", f"subtask {sid}: its subtask.finished is not in the "
                      "parent's session")
            elif ends[0]["data"].get("status") != child["status"]:
                v.add("result_once", f"subtask {sid}: subtask.finished says "
                      f"{ends[0]['data'].get('status')}, the run is {child['status']}")
    linked = set(by_child)
    for run in tables.runs.values():
        if run["agent"] in (WORKER, CALLEE) and run["id"] not in linked:
            v.add("subtask_once", f"run {run['id']} of {run['agent']} is no subtask's child "
                  "(started twice for one effect?)")
    boss_runs = calls = 0
    for run in tables.runs.values():
        if run["agent"] == BOSS:
            boss_runs += 1
            _check_boss(tables, run, of_parent.get(run["id"], []), by_effect, v)
        elif run["agent"] == CALLER:
            calls += _check_caller(tables, run, of_parent.get(run["id"], []), by_effect, v)
    # Where the kills landed: tool calls started again after a restart (the loop
    # re-runs these idempotent / read-only tools; a start finds the child it made).
    restarts: collections.Counter[str] = collections.Counter()
    for log in tables.events.values():
        per_effect = collections.Counter(
            (e["data"]["name"], e["data"]["effect_id"]) for e in log
            if e["kind"] == "tool.started"
            and e["data"]["name"] in ("subtask_start", "subtask_wait", "agent_call"))
        for (name, _), n in per_effect.items():
            restarts[name] += n - 1
    return {"tool_calls_started_again": dict(sorted(restarts.items())),
            "subtasks": sum(r["type"] == "subtask" for r in tables.subtasks),
            "calls": sum(r["type"] == "call" for r in tables.subtasks),
            "boss_runs": boss_runs, "caller_runs": calls,
            "subtask_finished_events": sum(marks["subtask.finished"].values())}


def _check_boss(tables: Tables, run: dict[str, Any], rows: list[dict[str, Any]],
                by_effect: dict[str, dict[str, Any]], v: Violations) -> None:
    rid = run["id"]
    starts = _tool_events(tables, rid, "tool.started", "subtask_start")
    effects = {e["data"]["effect_id"] for e in starts}
    row_effects = {r["effect_id"] for r in rows}
    if run["status"] == "completed" and (len(rows) != FANOUT or len(effects) != FANOUT):
        v.add("subtask_once", f"boss run {rid}: {len(rows)} subtask rows for "
              f"{len(effects)} subtask_start calls (expected {FANOUT})")
    if row_effects - effects:
        v.add("subtask_once", f"boss run {rid}: subtask rows of effects it never started: "
              f"{sorted(row_effects - effects)}")
    results = results_by_effect(tables.by_run.get(rid, []))
    for effect_id, e in results:
        if e["data"]["name"] != "subtask_start":
            continue
        row = by_effect.get(effect_id)
        out = _output(e["data"])
        if row is None or not isinstance(out, dict) or out.get("id") != row["id"]:
            v.add("subtask_once", f"boss run {rid}: subtask_start answered {out!r}, its "
                  f"row is {row and row['id']}")
    waits = _tool_events(tables, rid, "tool.finished", "subtask_wait")
    if run["status"] != "completed":
        return
    if len(waits) != 1:
        v.add("result_once", f"boss run {rid}: {len(waits)} subtask_wait results")
        return
    got = _output(waits[0]["data"])
    listed = got.get("subtasks", []) if isinstance(got, dict) else []
    if not isinstance(got, dict) or got.get("done") is not True:
        v.add("result_once", f"boss run {rid}: the wait answered {str(got)[:300]}")
    seen = collections.Counter(s.get("id") for s in listed)
    for row in rows:
        child = tables.runs.get(row["child_run"], {})
        if seen[row["id"]] != 1:
            v.add("result_once", f"boss run {rid}: subtask {row['id']} is {seen[row['id']]} "
                  "times in its wait's result")
            continue
        item = next(s for s in listed if s.get("id") == row["id"])
        if item.get("status") != "completed" or item.get("output") != child.get("output"):
            v.add("result_once", f"boss run {rid}: subtask {row['id']} reached it as "
                  f"{json.dumps(item)[:200]}, the child run is {child.get('status')} "
                  f"{child.get('output')!r}")
    if set(seen) - {r["id"] for r in rows}:
        v.add("result_once", f"boss run {rid}: its wait lists unknown subtasks "
              f"{sorted(set(seen) - {r['id'] for r in rows})}")


def _check_caller(tables: Tables, run: dict[str, Any], rows: list[dict[str, Any]],
                  by_effect: dict[str, dict[str, Any]], v: Violations) -> int:
    rid = run["id"]
    starts = _tool_events(tables, rid, "tool.started", "agent_call")
    ended = [(f, e) for f, e in results_by_effect(tables.by_run.get(rid, []))
             if e["data"]["name"] == "agent_call"]
    ends = [e for _, e in ended]
    for effect_id, n in collections.Counter(f for f, _ in ended).items():
        if n != 1:
            v.add("call_once", f"caller run {rid}: agent_call {effect_id} has {n} results")
    if len(rows) > 1 or len({s["data"]["effect_id"] for s in starts}) > 1:
        v.add("call_once", f"caller run {rid}: {len(rows)} calls for "
              f"{len(starts)} agent_call starts")
    if run["status"] != "completed":
        return 1
    if len(rows) != 1 or len(ends) != 1:
        v.add("call_once", f"caller run {rid}: {len(rows)} calls, {len(ends)} replies")
        return 1
    row = rows[0]
    if by_effect.get(ended[0][0]) is not row:
        v.add("call_once", f"caller run {rid}: its call {row['id']} is not its agent_call's")
    child = tables.runs.get(row["child_run"], {})
    reply = ends[0]["data"].get("output")
    if ends[0]["data"].get("is_error") or reply != child.get("output"):
        v.add("call_once", f"caller run {rid}: agent_call answered {reply!r}, the callee's "
              f"run {child.get('status')} {child.get('output')!r}")
    return 1


def check_runs(tables: Tables, v: Violations) -> dict[str, Any]:
    """Every run terminal (one terminal event, its last) and completed; every
    session's seqs dense; model steps 1, 2, 3... and no tool call with two results."""
    statuses = collections.Counter(r["status"] for r in tables.runs.values())
    for run in tables.runs.values():
        log = tables.by_run.get(run["id"], [])
        ends = [e for e in log if e["kind"] in ("run.completed", "run.failed",
                                                 "run.cancelled", "run.interrupted")]
        if run["status"] not in TERMINAL or len(ends) != 1 or log[-1] is not ends[0]:
            v.add("run_terminal", f"run {run['id']} of {run['agent']} is {run['status']} "
                  f"with {len(ends)} terminal events")
        elif run["status"] != "completed":
            v.add("run_outcome", f"run {run['id']} of {run['agent']} ended {run['status']}: "
                  f"{json.dumps(run['error'])[:300]}")
        steps = [e["data"].get("step") for e in log if e["kind"] == "message.assistant"]
        if steps != list(range(1, len(steps) + 1)):
            v.add("step_once", f"run {run['id']}: model steps {steps} (a recorded model "
                  "call made again?)")
        per_effect = collections.Counter(f for f, _ in results_by_effect(log))
        for effect_id, n in per_effect.items():
            if n > 1:
                v.add("step_once", f"run {run['id']}: tool call {effect_id} has {n} results")
    for sid, session in tables.sessions.items():
        seqs = [e["seq"] for e in tables.events.get(sid, [])]
        if seqs != list(range(1, session["last_seq"] + 1)):
            v.add("seq_dense", f"session {session['key']} of {session['agent']}: seqs "
                  f"{seqs[:5]}... ({len(seqs)}), last_seq {session['last_seq']}")
    return {"runs": len(tables.runs), "runs_by_status": dict(sorted(statuses.items())),
            "events": sum(len(log) for log in tables.events.values()),
            "runs_resumed": len({e["run_id"] for log in tables.events.values()
                                 for e in log if e["kind"] == "run.resumed"})}


def check_acks(tables: Tables, msgs: dict[str, Msg], v: Violations) -> int:
    """Every acknowledged client message has exactly one message.user, and one run."""
    found: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
    for sid, log in tables.events.items():
        session = tables.sessions[sid]
        for e in log:
            if e["kind"] == "message.user" and "content" in e["data"]:
                found[(session["agent"], session["key"], e["data"]["content"])].append(
                    e["run_id"])
    acked = 0
    for msg in msgs.values():
        runs = found.get((msg.agent, msg.key, msg.content), [])
        if msg.acked:
            acked += 1
            if len(runs) != 1:
                v.add("ack_once", f"acknowledged {msg.content!r} to {msg.agent}/{msg.key} "
                      f"has {len(runs)} message.user events")
            elif msg.run_ids and any(r != runs[0] for r in msg.run_ids):
                v.add("ack_once", f"{msg.content!r}: answered run(s) {msg.run_ids}, logged "
                      f"for {runs[0]}")
        elif len(runs) > 1:
            v.add("ack_once", f"{msg.content!r} logged {len(runs)} times")
    return acked
