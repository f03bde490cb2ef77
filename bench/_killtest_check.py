"""Reading everything back after the kills, and the invariants of the kill test
(``bench/killtest.py``; its docstring lists them)."""

from __future__ import annotations

import collections
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError

from _killtest_common import (
    AGENTS,
    AUTH,
    INVARIANTS,
    NON_IDEMPOTENT,
    TERMINAL,
    TERMINAL_KIND,
    Session,
    info,
    session_path,
)
from _killtest_decide import Decider
from _killtest_load import Follower, Msg, Shared
from _killtest_sse import FrameTags, sse_replay

Event = dict[str, Any]

# --------------------------------------------------------------------------- reading back


@dataclass
class Snapshot:
    sessions: dict[Session, dict[str, Any]]
    logs: dict[Session, list[Event]]
    runs: dict[str, dict[str, Any]]


def read_log(http: httpx.Client, agent: str, key: str) -> list[Event]:
    events: list[Event] = []
    after = 0
    while True:
        response = http.get(session_path(agent, key) + "/events",
                            params={"after": after, "limit": 10_000})
        response.raise_for_status()
        page = response.json()["events"]
        events.extend(page)
        if len(page) < 10_000:
            return events
        after = page[-1]["seq"]


def snapshot(base: str, runs: dict[str, dict[str, Any]], deadline: float,
             on_waiting: Callable[[str], None] | None = None) -> Snapshot:
    """Read every session, its log and its runs; poll until every run is terminal or
    ``deadline`` passes (``runs`` keeps the terminal ones between calls). Runs found
    ``waiting_approval`` are handed to ``on_waiting`` (the decider)."""
    with httpx.Client(headers=AUTH, base_url=base, timeout=30.0) as http:
        settled = False
        while True:
            sessions: dict[Session, dict[str, Any]] = {}
            for agent in AGENTS:
                response = http.get(f"/v1/agents/{agent}/sessions")
                response.raise_for_status()
                for s in response.json()["sessions"]:
                    sessions[(agent, s["key"])] = s
            logs = {s: read_log(http, *s) for s in sessions}
            run_ids = {e["run_id"] for log in logs.values() for e in log if e["run_id"]}
            if settled and all(runs.get(r, {}).get("status") in TERMINAL for r in run_ids):
                # Every run was terminal before these logs were read: they are final.
                return Snapshot(sessions, logs, {r: runs[r] for r in run_ids})
            for run_id in sorted(run_ids):
                if runs.get(run_id, {}).get("status") not in TERMINAL:
                    response = http.get(f"/v1/runs/{run_id}")
                    runs[run_id] = response.json() if response.status_code == 200 else {
                        "status": f"HTTP {response.status_code}"}
            unsettled = [r for r in run_ids if runs[r].get("status") not in TERMINAL]
            if unsettled and time.monotonic() > deadline:
                return Snapshot(sessions, logs, {r: runs[r] for r in run_ids})
            if not unsettled:
                settled = True  # read the logs once more, after the last run ended
                continue
            waiting = [r for r in unsettled if runs[r].get("status") == "waiting_approval"]
            if on_waiting is not None:
                for run_id in waiting:
                    on_waiting(run_id)
            info(f"{len(unsettled)} run(s) not terminal yet ({len(waiting)} waiting for a "
                 "decision)")
            time.sleep(0.5)


def resume_points(snap: Snapshot) -> collections.Counter[str]:
    """For each ``run.resumed``, the kind of the run's event before it: ``tool.started``
    means a kill during a tool call, ``run.started`` during the first model call..."""
    points: collections.Counter[str] = collections.Counter()
    for log in snap.logs.values():
        last: dict[str, str] = {}
        for e in log:
            if e["run_id"] is None:
                continue
            if e["kind"] == "run.resumed":
                points[last.get(e["run_id"], "?")] += 1
            last[e["run_id"]] = e["kind"]
    return points


def decision_figures(snap: Snapshot) -> dict[str, Any]:
    """Decisions logged (by action), runs that waited, and waits a restart went through."""
    decisions: collections.Counter[str] = collections.Counter()
    waited: set[str] = set()
    across: set[str] = set()
    for log in snap.logs.values():
        open_: set[str] = set()
        for e in log:
            run_id, kind = e["run_id"], e["kind"]
            if kind == "approval.requested":
                waited.add(run_id)
                open_.add(run_id)
            elif kind == "approval.decided":
                decisions[e["data"].get("action")] += 1
                open_.discard(run_id)
            elif kind == "run.resumed" and run_id in open_:
                across.add(run_id)
    return {"decisions": {a: decisions[a] for a in sorted(decisions)},
            "runs_waited": len(waited), "runs_waited_across_restarts": len(across),
            "approval_requests": sum(e["kind"] == "approval.requested"
                                     for log in snap.logs.values() for e in log)}


def read_effects(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- checks


class Violations:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter(
            dict.fromkeys(INVARIANTS, 0))
        self.examples: list[dict[str, Any]] = []

    def add(self, invariant: str, text: str, session: Session | None = None) -> None:
        assert invariant in INVARIANTS, invariant
        self.counts[invariant] += 1
        if len(self.examples) < 20:
            self.examples.append({"invariant": invariant, "text": text,
                                  "session": list(session) if session else None})

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Index:
    """The logs, cut by run, and what the per-run pass learns about effects."""

    by_run: dict[str, list[Event]] = field(
        default_factory=lambda: collections.defaultdict(list))
    run_session: dict[str, set[Session]] = field(
        default_factory=lambda: collections.defaultdict(set))
    users: dict[str, list[tuple[Session, Event]]] = field(
        default_factory=lambda: collections.defaultdict(list))
    effect_of: dict[str, Event] = field(default_factory=dict)  # effect -> 1st tool.started
    started: collections.Counter[str] = field(default_factory=collections.Counter)
    finished_ok: dict[str, str] = field(default_factory=dict)  # run effect -> tool name
    completed_idem: set[str] = field(default_factory=set)
    decided: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter)  # (run id, action) -> approval.decided events

    def session_of(self, effect_or_run: str) -> Session | None:
        sessions = self.run_session.get(effect_or_run.split("/", 1)[0])
        return sorted(sessions)[0] if sessions else None


def check(snap: Snapshot, shared: Shared, decider: Decider, effects: list[str],
          idem: list[str], violations: Violations, *, interrupt: bool) -> None:
    """Every invariant but ``sse_replay`` (see :func:`check_sse`)."""
    check_seqs(snap, violations)
    index = Index()
    for s, log in snap.logs.items():
        for e in log:
            if e["run_id"]:
                index.by_run[e["run_id"]].append(e)
                index.run_session[e["run_id"]].add(s)
            if e["kind"] == "message.user":
                index.users[e["data"]["content"]].append((s, e))
    with shared.lock:
        msgs = dict(shared.msgs)
        live = list(shared.live_violations)
    check_acks(snap, index, msgs, violations)
    with decider.lock:
        posted = set(decider.posted)
        acked = collections.Counter(decider.acked)
    for run_id, events in index.by_run.items():
        RunCheck(run_id, events, snap, index, violations, posted, interrupt).check()
    check_effects(index, effects, idem, violations)
    for (run_id, action), n in sorted(acked.items()):
        if index.decided[(run_id, action)] < n:
            violations.add("decision", f"run {run_id}: {n} {action!r} decision(s) "
                           f"acknowledged, {index.decided[(run_id, action)]} logged",
                           index.session_of(run_id))
    for invariant, text in live:
        violations.add(invariant, text)
    check_keys(index, msgs, violations)


def check_seqs(snap: Snapshot, violations: Violations) -> None:
    """3. Each session's seqs are 1..N, N = last_seq."""
    for s, log in snap.logs.items():
        seqs = [e["seq"] for e in log]
        if seqs != list(range(1, len(seqs) + 1)):
            dups = [q for q, c in collections.Counter(seqs).items() if c > 1]
            violations.add("seq_dense", f"seqs are not 1..{len(seqs)} (duplicates {dups[:5]}, "
                           f"first/last {seqs[:1]}/{seqs[-1:]})", s)
        if snap.sessions[s]["last_seq"] != len(seqs):
            violations.add("seq_dense", f"last_seq {snap.sessions[s]['last_seq']} but "
                           f"{len(seqs)} events", s)


def check_acks(snap: Snapshot, index: Index, msgs: dict[str, Msg],
               violations: Violations) -> None:
    """1. Acknowledged messages: one run, one message.user; nothing logged unsent."""
    for content, found in index.users.items():
        msg = msgs.get(content)
        if msg is None:
            violations.add("ack_once", f"message.user {content!r} that no client sent",
                           found[0][0])
        elif len(found) > 1:
            violations.add("ack_once", f"message {content!r} logged {len(found)} times "
                           f"(seqs {[e['seq'] for _, e in found]}, runs "
                           f"{[e['run_id'] for _, e in found]})", found[0][0])
    for content, msg in msgs.items():
        if not msg.acked:
            continue
        found = index.users.get(content, [])
        session = (msg.agent, msg.key)
        if not found:
            violations.add("ack_once", f"acknowledged message {content!r} (run "
                           f"{msg.run_ids[:1]}) is not in the log", session)
            continue
        where, event = found[0]
        if where != session:
            violations.add("ack_once", f"message {content!r} logged in {where}, sent to "
                           f"{session}", session)
        run_id = event["run_id"]
        if msg.run_ids and msg.run_ids[0] != run_id and msg.idem_key is None:
            violations.add("ack_once", f"message {content!r} acknowledged as run "
                           f"{msg.run_ids[0]} but logged for run {run_id}", session)
        run = snap.runs.get(run_id, {})
        if run.get("input") != content:
            violations.add("ack_once", f"run {run_id} of message {content!r} has input "
                           f"{run.get('input')!r}", session)


class RunCheck:
    """The invariants of one run, walking its events in log order: 2 (terminal), 7
    (steps and results once), the run's part of 4 (effects) and 8 (outcome), and the
    decisions about tool calls of unknown outcome.

    A non-idempotent call may start again only after a ``retry`` decision for its
    effect id (one decision, one more start, flagged ``retry``); after ``skip`` it gets
    a ``skipped`` result with the decided output and never starts again; after
    ``fail`` the run ends ``failed`` (code ``unknown_outcome``)."""

    def __init__(self, run_id: str, events: list[Event], snap: Snapshot, index: Index,
                 violations: Violations, posted: set[tuple[str, str]],
                 interrupt: bool) -> None:
        self.run_id, self.events, self.index = run_id, events, index
        self.session = sorted(index.run_session[run_id])[0]
        self.status = snap.runs.get(run_id, {}).get("status")
        self.violations, self.posted, self.interrupt = violations, posted, interrupt
        self.call_effect: dict[str, str] = {}
        self.finished: collections.Counter[str] = collections.Counter()
        self.requested: dict[str, Event] = {}  # effect -> its open approval.requested
        self.retries: collections.Counter[str] = collections.Counter()  # unused retries
        self.skips: dict[str, Any] = {}  # effect -> output of a skip not yet applied
        self.closed: set[str] = set()  # effects skipped: never to start again
        self.failed_by_decision = False
        self.run_idem: set[str] = set()

    def add(self, invariant: str, text: str) -> None:
        self.violations.add(invariant, f"run {self.run_id}: {text}", self.session)

    def check(self) -> None:
        self._terminal()
        steps = [e["data"].get("step") for e in self.events
                 if e["kind"] == "message.assistant"]
        if steps != list(range(1, len(steps) + 1)):
            self.add("step_once", f"model steps {steps}")
        for e in self.events:
            handler = getattr(self, "_on_" + e["kind"].replace(".", "_"), None)
            if handler is not None:
                handler(e, e["data"])
        self._leftovers()
        if self.status == "completed":
            self.index.completed_idem |= self.run_idem
        self._outcome()

    def _terminal(self) -> None:
        """2. Terminal, with exactly one terminal event, its last; 1. starts right."""
        sessions = self.index.run_session[self.run_id]
        if len(sessions) > 1:
            self.add("run_terminal", f"has events in {sorted(sessions)}")
        kinds = [e["kind"] for e in self.events]
        terminal = [k for k in kinds if k in TERMINAL_KIND]
        if self.status not in TERMINAL:
            self.add("run_terminal", f"is {self.status!r}; its events: {kinds}")
        elif terminal != [kinds[-1]] or TERMINAL_KIND[kinds[-1]] != self.status:
            self.add("run_terminal", f"is {self.status} but its events are {kinds}")
        if kinds.count("message.user") != 1 or kinds.count("run.queued") != 1 or \
                kinds[:2] != ["message.user", "run.queued"]:
            self.add("ack_once", f"starts {kinds[:3]} with {kinds.count('message.user')} "
                     "message.user")

    def _on_tool_started(self, e: Event, data: dict[str, Any]) -> None:
        effect_id = data["effect_id"]
        self.call_effect[data["call_id"]] = effect_id
        self.index.effect_of.setdefault(effect_id, e)
        self.index.started[effect_id] += 1
        if data["name"] == "record_idem":
            self.run_idem.add(effect_id)
        if data["name"] not in NON_IDEMPOTENT:
            return
        where = f"non-idempotent {data['name']} (effect {effect_id}, seq {e['seq']})"
        if effect_id in self.closed:
            self.add("effect_once", f"{where} started after a skip decision")
        elif effect_id in self.skips:
            self.add("effect_once", f"{where} started instead of its skip decision's result")
        elif self.index.started[effect_id] == 1:
            if data.get("retry"):
                self.add("effect_once", f"{where} started flagged retry the first time")
        elif self.retries[effect_id] > 0:
            self.retries[effect_id] -= 1
            if not data.get("retry"):
                self.add("effect_once", f"{where} retried by decision, not flagged retry")
        else:
            self.add("effect_once", f"{where} started again without a retry decision "
                     f"(start {self.index.started[effect_id]})")

    def _on_tool_finished(self, e: Event, data: dict[str, Any]) -> None:
        effect_id = self.call_effect.get(data["call_id"], f"?{data['call_id']}")
        self.finished[effect_id] += 1
        if self.finished[effect_id] > 1:
            self.add("step_once", f"effect {effect_id} has {self.finished[effect_id]} results")
        if effect_id in self.requested:
            self.add("decision", f"effect {effect_id} got a result (seq {e['seq']}) while "
                     "its approval was still open")
        if data.get("skipped"):
            if effect_id not in self.skips:
                self.add("decision", f"skipped result for effect {effect_id} (seq "
                         f"{e['seq']}) without a skip decision")
            elif data.get("output") != self.skips[effect_id] or data.get("is_error"):
                self.add("decision", f"skipped result for effect {effect_id} is "
                         f"{json.dumps(data)[:200]}, decided output "
                         f"{self.skips[effect_id]!r}")
            self.skips.pop(effect_id, None)
            self.closed.add(effect_id)
            return
        if effect_id in self.skips:
            self.add("decision", f"effect {effect_id} was run (seq {e['seq']}) after a "
                     "skip decision")
        if not data["is_error"]:
            self.index.finished_ok[effect_id] = data["name"]

    def _on_approval_requested(self, e: Event, data: dict[str, Any]) -> None:
        effect_id = data.get("effect_id")
        intent = self.index.effect_of.get(effect_id or "")
        where = f"approval.requested for effect {effect_id} (seq {e['seq']})"
        if self.interrupt:
            self.add("decision", f"{where} with on_unknown_outcome=interrupt")
        if intent is None or intent["run_id"] != self.run_id:
            self.add("decision", f"{where}: the call never started")
        elif self.finished[effect_id or ""]:
            self.add("decision", f"{where}: the call has a result")
        else:
            started = intent["data"]
            expected = {"effect_id": effect_id, "reason": "unknown_outcome",
                        "call_id": started["call_id"], "name": started["name"],
                        "arguments": started["arguments"],
                        "options": ["retry", "skip", "fail"]}
            got = {k: data.get(k) for k in expected}
            if got != expected:
                self.add("decision", f"{where} is {json.dumps(data)[:300]}, expected "
                         f"{json.dumps(expected)[:300]}")
            if started["name"] not in NON_IDEMPOTENT:
                self.add("decision", f"{where}: idempotent tool {started['name']!r}")
        if effect_id in self.requested:
            self.add("decision", f"{where}: requested again before a decision")
        self.requested[effect_id or "?"] = e

    def _on_approval_decided(self, e: Event, data: dict[str, Any]) -> None:
        effect_id, action = data.get("effect_id") or "?", data.get("action")
        where = f"approval.decided {action!r} for effect {effect_id} (seq {e['seq']})"
        if self.requested.pop(effect_id, None) is None:
            self.add("decision", f"{where} with no open approval.requested")
        if (self.run_id, action) not in self.posted:
            self.add("decision", f"{where}: the harness never sent that decision")
        self.index.decided[(self.run_id, str(action))] += 1
        if action == "retry":
            self.retries[effect_id] += 1
        elif action == "skip":
            self.skips[effect_id] = data.get("output")
        elif action == "fail":
            self.failed_by_decision = True
        else:
            self.add("decision", f"{where}: unknown action")

    def _leftovers(self) -> None:
        if self.status not in TERMINAL:
            return  # run_terminal says so already
        for effect_id in self.skips:
            self.add("decision", f"skip decision for effect {effect_id} never applied")
        for effect_id, n in self.retries.items():
            if n and not self.failed_by_decision:
                self.add("decision", f"{n} retry decision(s) for effect {effect_id} never "
                         "retried")
        for effect_id in self.requested:
            self.add("decision", f"approval for effect {effect_id} never decided, run "
                     f"{self.status}")

    def _outcome(self) -> None:
        """8. No run failed but by decision, none cancelled; interrupted only with
        on_unknown_outcome=interrupt, for a non-idempotent tool."""
        last = self.events[-1]["data"] if self.events else {}
        if self.status == "failed":
            code = (last.get("error") or {}).get("code")
            if self.interrupt or not self.failed_by_decision or code != "unknown_outcome":
                self.add("run_outcome", f"failed (decided fail: {self.failed_by_decision}): "
                         f"{json.dumps(last)[:300]}")
        elif self.status == "cancelled":
            self.add("run_outcome", f"cancelled: {json.dumps(last)[:300]}")
        elif self.status == "interrupted":
            effect_id = last.get("effect_id")
            tool = self.index.effect_of.get(effect_id or "", {}).get("data", {}).get("name")
            if not self.interrupt:
                self.add("run_outcome", f"interrupted (effect {effect_id} of tool {tool!r}) "
                         "though unknown outcomes wait for a decision")
            elif tool not in NON_IDEMPOTENT:
                self.add("run_outcome", f"interrupted for effect {effect_id} of tool {tool!r}")
        if self.failed_by_decision and self.status in TERMINAL and self.status != "failed":
            self.add("run_outcome", f"decided fail, but it is {self.status}")


def check_effects(index: Index, effects: list[str], idem: list[str],
                  violations: Violations) -> None:
    """4. A record_once effect is in effects.log at most as many times as it started
    (a start beyond the first needs a retry decision: see RunCheck), each line has its
    intent, and a result (not a skipped one) means the effect happened; every
    record_idem effect of a completed run (or with a result) is in idem.log."""
    seen = collections.Counter(effects)
    for effect_id, n in seen.items():
        intent = index.effect_of.get(effect_id)
        if intent is None or intent["data"]["name"] != "record_once":
            violations.add("effect_once", f"effect {effect_id} in effects.log has no "
                           "record_once tool.started", index.session_of(effect_id))
        elif n > index.started[effect_id]:
            violations.add("effect_once", f"effect {effect_id} is {n} times in effects.log, "
                           f"started {index.started[effect_id]} time(s)",
                           index.session_of(effect_id))
    idem_seen = set(idem)
    for effect_id in idem_seen:
        intent = index.effect_of.get(effect_id)
        if intent is None or intent["data"]["name"] != "record_idem":
            violations.add("idem_effects", f"effect {effect_id} in idem.log has no "
                           "record_idem tool.started", index.session_of(effect_id))
    completed_idem = set(index.completed_idem)
    for effect_id, name in index.finished_ok.items():
        if name == "record_once" and effect_id not in seen:
            violations.add("effect_once", f"record_once {effect_id} has a result but no "
                           "line in effects.log", index.session_of(effect_id))
        if name == "record_idem":
            completed_idem.add(effect_id)
    for effect_id in sorted(completed_idem - idem_seen):
        violations.add("idem_effects", f"record_idem {effect_id} (of a completed run or "
                       "with a result) is not in idem.log", index.session_of(effect_id))


def check_keys(index: Index, msgs: dict[str, Msg], violations: Violations) -> None:
    """6. Every 2xx answer to one Idempotency-Key names the run the log has for it."""
    for content, msg in msgs.items():
        if msg.idem_key is None or not msg.acked:
            continue
        found = index.users.get(content, [])
        if found and any(r != found[0][1]["run_id"] for r in msg.run_ids):
            violations.add("idempotency_key", f"Idempotency-Key {msg.idem_key!r}: answers "
                           f"named runs {sorted(set(msg.run_ids))}, the log "
                           f"{found[0][1]['run_id']}", (msg.agent, msg.key))


def check_sse(base: str, snap: Snapshot, followers: list[Follower], tags: FrameTags,
              sample: int, rng: random.Random, timeout_s: float,
              violations: Violations) -> int:
    """5. An SSE replay from seq 0, and each follower's stitched stream, are the log."""
    sessions = sorted(snap.logs)
    if 0 < sample < len(sessions):
        sessions = sorted(rng.sample(sessions, sample))
    for s in sessions:
        log = snap.logs[s]
        try:
            replayed, problems = sse_replay(base, s, len(log), timeout_s, tags)
        except (httpx.HTTPError, SSEError, ValueError) as exc:
            violations.add("sse_replay", f"replay failed: {exc!r}", s)
            continue
        for problem in problems[:3]:
            violations.add("sse_replay", f"replay: {problem}", s)
        if replayed != log:
            violations.add("sse_replay", _diff("replay", replayed, log), s)
    for follower in followers:
        s = follower.session
        for problem in follower.problems[:3]:
            violations.add("sse_replay", f"follower: {problem}", s)
        if follower.events != snap.logs.get(s, []):
            violations.add("sse_replay", _diff("follower", follower.events,
                                               snap.logs.get(s, [])), s)
    return len(sessions)


def _diff(what: str, got: list[Event], log: list[Event]) -> str:
    for i, (a, b) in enumerate(zip(got, log, strict=False)):
        if a != b:
            return f"{what}: event {i + 1} is {json.dumps(a)[:300]}, stored {json.dumps(b)[:300]}"
    return f"{what}: {len(got)} events, stored {len(log)}"


def render_log(log: list[Event]) -> str:
    lines = []
    for e in log:
        data = {k: v for k, v in e["data"].items() if k not in ("usage", "model")}
        lines.append(f"  {e['seq']:>5} {e['run_id']} {e['kind']:<18} "
                     f"{json.dumps(data)[:160]}")
    return "\n".join(lines)


def report(snap: Snapshot, violations: Violations) -> str:
    """Each violation, with the log of the first sessions it names."""
    if not violations.total:
        return ""
    parts = [f"{v['invariant']}: {v['text']} (session {v['session']})"
             for v in violations.examples]
    shown: set[Session] = set()
    for v in violations.examples:
        if v["session"] and tuple(v["session"]) not in shown and len(shown) < 3:
            s = (v["session"][0], v["session"][1])
            shown.add(s)
            parts.append(f"log of {s}:\n{render_log(snap.logs.get(s, []))}")
    return "\n".join(parts)
