"""Schedules' SQL: definitions, when each fires next, and the claims on fire times.

A schedule row holds its definition and its next fire time (``next_fire_at``, the
nominal time, and ``next_due_at``, that time plus the schedule's jitter). Due
schedules are found with one query on a partial index (``enabled = 1``) ordered by
``next_due_at``; finished ones (a one-shot that fired, past ``ends_at``) have no next
time and are never due.

A fire commits three things in the transaction that accepts its message and queues
its run (``Store.accept_message(also=...)``): the schedule moves on only if it is
still at the fire time being fired (compare-and-set on ``next_fire_at``, so two nodes
or a concurrent change cannot both move it), and the claim ``(schedule_id, fire_at)``
is inserted (the primary key: a fire time is claimed once, ever). Either fails ->
nothing of the fire is written. A fire time skipped (overlap, a paused agent) is
claimed the same way with no run. Fire times missed (the daemon got to them more than
``grace_s`` late, or a backoff passed over them) are counted on the schedule and
recorded by one claim, ``missed``, on the first of them, with how many and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentd.errors import AgentNotFound, Conflict
from agentd.store.engine import Tx

__all__ = ["KEEP_FIRES", "FireClaim", "FireOutcome", "Moved", "ScheduleRecord", "Tx",
           "claim_fire", "claim_fires", "count_for", "delete", "due", "fire_outcomes", "get",
           "insert", "list_page", "move", "next_due", "note_missed", "recent_fires", "replace"]

#: Claims kept per schedule (older ones are pruned as it fires): enough to count any
#: streak of failures that can pause a schedule, and to show recent fires.
KEEP_FIRES = 256

COLS = ("id, agent_id, cron, every_s, at, timezone, session, content, jitter_s, overlap, "
        "missed, catchup_s, ends_at, enabled, paused_reason, next_fire_at, next_due_at, "
        "last_fire_at, last_run_id, fires, missed_count, skipped_count, failures, "
        "counted_after, created_by, created_run, created_at, updated_at, version")
_N = len(COLS.split(","))


@dataclass(kw_only=True, slots=True)
class ScheduleRecord:
    id: str
    agent_id: str
    cron: str | None
    every_s: float | None
    at: float | None
    timezone: str
    #: The session every fire goes to; None: a new session per fire.
    session: str | None
    content: str
    jitter_s: float
    overlap: str
    missed: str
    catchup_s: float
    ends_at: float | None
    enabled: bool
    paused_reason: str | None
    next_fire_at: float | None
    next_due_at: float | None
    last_fire_at: float | None
    last_run_id: str | None
    fires: int
    missed_count: int
    skipped_count: int
    #: Consecutive failed fire runs when last counted (before the latest fire).
    failures: int
    #: Failures are counted among fires after this time (a resume starts afresh).
    counted_after: float
    created_by: str
    #: The run whose tool created it (None: the API).
    created_run: str | None
    created_at: float
    updated_at: float
    version: int
    #: The agent's name (joined in; not a column).
    agent: str = ""
    #: The status of the latest fire's run (joined in by :func:`due` only).
    last_run_status: str | None = None

    def values(self) -> tuple[Any, ...]:
        return (self.id, self.agent_id, self.cron, self.every_s, self.at, self.timezone,
                self.session, self.content, self.jitter_s, self.overlap, self.missed,
                self.catchup_s, self.ends_at, int(self.enabled), self.paused_reason,
                self.next_fire_at, self.next_due_at, self.last_fire_at, self.last_run_id,
                self.fires, self.missed_count, self.skipped_count, self.failures,
                self.counted_after, self.created_by, self.created_run, self.created_at,
                self.updated_at, self.version)


@dataclass(frozen=True, kw_only=True, slots=True)
class FireOutcome:
    """A claimed fire time and what became of it."""

    fire_at: float
    status: str  # fired | skipped | missed
    reason: str | None
    run_id: str | None
    #: The run's status (None: skipped, or its run is gone with its session).
    run_status: str | None
    run_error: dict[str, Any] | None
    finished_at: float | None
    at: float


def _record(row: Sequence[Any]) -> ScheduleRecord:
    r = list(row)
    return ScheduleRecord(
        id=r[0], agent_id=r[1], cron=r[2], every_s=r[3], at=r[4], timezone=r[5],
        session=r[6], content=r[7], jitter_s=float(r[8]), overlap=r[9], missed=r[10],
        catchup_s=float(r[11]), ends_at=r[12], enabled=bool(r[13]), paused_reason=r[14],
        next_fire_at=r[15], next_due_at=r[16], last_fire_at=r[17], last_run_id=r[18],
        fires=int(r[19]), missed_count=int(r[20]), skipped_count=int(r[21]),
        failures=int(r[22]), counted_after=float(r[23]), created_by=r[24],
        created_run=r[25], created_at=float(r[26]), updated_at=float(r[27]),
        version=int(r[28]), agent=r[29] if len(r) > _N else "",
        last_run_status=r[30] if len(r) > _N + 1 else None)


_SELECT = (f"SELECT {', '.join('s.' + c.strip() for c in COLS.split(','))}, a.name "
           "FROM schedules s JOIN agents a ON a.id = s.agent_id")


def count_for(tx: Tx, agent_id: str, *, by_tools: bool = False) -> int:
    sql = "SELECT COUNT(*) FROM schedules WHERE agent_id = ?"
    if by_tools:
        sql += " AND created_run IS NOT NULL"
    row = tx.one(sql, (agent_id,))
    return int(row[0]) if row else 0


def insert(tx: Tx, record: ScheduleRecord, *, dialect: str, max_per_agent: int,
           max_by_tools: int | None = None) -> ScheduleRecord:
    """Insert ``record`` unless its agent is gone (AgentNotFound) or has its limit of
    schedules (Conflict ``schedule_limit``): checked under the agent's row lock, so
    concurrent creations cannot pass the limit together."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""  # SQLite: one writer
    row = tx.one(f"SELECT name FROM agents WHERE id = ?{lock}", (record.agent_id,))
    if row is None:
        raise AgentNotFound("the schedule's agent no longer exists")
    if count_for(tx, record.agent_id) >= max_per_agent:
        raise Conflict(f"agent {row[0]!r} has its maximum of {max_per_agent} schedules "
                       "(settings.schedules.max_per_agent)", code="schedule_limit")
    if max_by_tools is not None and count_for(tx, record.agent_id,
                                              by_tools=True) >= max_by_tools:
        raise Conflict(f"the agent's tools may create at most {max_by_tools} schedules "
                       "(settings.schedules.tool_max_per_agent)", code="schedule_limit")
    tx.execute(f"INSERT INTO schedules ({COLS}) VALUES ({', '.join('?' * _N)})",
               record.values())
    record.agent = str(row[0])
    return record


def get(tx: Tx, schedule_id: str) -> ScheduleRecord | None:
    row = tx.one(f"{_SELECT} WHERE s.id = ?", (schedule_id,))
    return None if row is None else _record(row)


def list_page(tx: Tx, *, agent_id: str | None, after: str | None, limit: int,
              agent_ids: Sequence[str] | None = None) -> list[ScheduleRecord]:
    """Oldest first (ids are time-ordered); ``after``: the last id of the page before;
    ``agent_ids``: only these agents' (a token's scope)."""
    where: list[str] = []
    params: list[Any] = []
    if agent_ids is not None:
        if not agent_ids:
            return []
        where.append(f"s.agent_id IN ({', '.join('?' for _ in agent_ids)})")
        params.extend(agent_ids)
    if agent_id is not None:
        where.append("s.agent_id = ?")
        params.append(agent_id)
    if after is not None:
        where.append("s.id > ?")
        params.append(after)
    sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
    rows = tx.all(f"{sql} ORDER BY s.id LIMIT ?", (*params, limit))
    return [_record(r) for r in rows]


def replace(tx: Tx, record: ScheduleRecord, expect_version: int) -> bool:
    """Write ``record`` over the row if the row is still at ``expect_version``."""
    sets = ", ".join(f"{c.strip()} = ?" for c in COLS.split(",")[2:])
    tx.execute(f"UPDATE schedules SET {sets} WHERE id = ? AND version = ?",
               (*record.values()[2:], record.id, expect_version))
    return tx.rowcount == 1


def delete(tx: Tx, schedule_id: str) -> bool:
    tx.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))
    return tx.rowcount == 1


def due(tx: Tx, now: float, limit: int) -> list[ScheduleRecord]:
    """Schedules due at ``now``, the most overdue first (the partial index alone)."""
    rows = tx.all(f"{_SELECT.replace(' FROM ', ', r.status FROM ', 1)} "
                  "LEFT JOIN runs r ON r.id = s.last_run_id "
                  "WHERE s.enabled = 1 AND s.next_due_at <= ? "
                  "ORDER BY s.next_due_at LIMIT ?", (now, limit))
    return [_record(r) for r in rows]


def next_due(tx: Tx) -> float | None:
    row = tx.one("SELECT next_due_at FROM schedules WHERE enabled = 1 AND "
                 "next_due_at IS NOT NULL ORDER BY next_due_at LIMIT 1")
    return None if row is None else float(row[0])


class Moved(Exception):
    """The schedule is no longer at the fire time being fired (fired by another node,
    changed, paused or deleted meanwhile): nothing of this fire is written."""


def move(tx: Tx, schedule_id: str, *, expect_next: float, next_fire_at: float | None,
         next_due_at: float | None, now: float, missed: int = 0, skipped: int = 0,
         fired_run: str | None = None, fired_at: float | None = None,
         failures: int | None = None, pause: str | None = None,
         missed_note: tuple[float, str] | None = None,
         expect_version: int | None = None) -> None:
    """Move the schedule on from ``expect_next`` (compare-and-set; :class:`Moved` if it
    is not there any more, or was disabled, or, given ``expect_version``, is at another
    version). ``missed_note``: the first missed fire time and why, claimed ``missed``
    (:func:`note_missed`)."""
    sets = ["next_fire_at = ?", "next_due_at = ?", "updated_at = ?", "version = version + 1",
            "missed_count = missed_count + ?", "skipped_count = skipped_count + ?"]
    params: list[Any] = [next_fire_at, next_due_at, now, missed, skipped]
    if fired_run is not None:
        sets += ["last_run_id = ?", "last_fire_at = ?", "fires = fires + 1"]
        params += [fired_run, fired_at]
    if failures is not None:
        sets.append("failures = ?")
        params.append(failures)
    if pause is not None:
        sets += ["enabled = 0", "paused_reason = ?"]
        params.append(pause)
    tx.execute(f"UPDATE schedules SET {', '.join(sets)} WHERE id = ? AND next_fire_at = ? "
               "AND enabled = 1 AND (CAST(? AS BIGINT) IS NULL OR version = ?)",
               (*params, schedule_id, expect_next, expect_version, expect_version))
    if tx.rowcount != 1:
        raise Moved(schedule_id)
    if missed and missed_note is not None:
        note_missed(tx, [(schedule_id, *missed_note)], now)


def note_missed(tx: Tx, notes: Sequence[tuple[str, float, str]], now: float) -> None:
    """Claim ``(schedule_id, first missed fire time, reason)`` s as ``missed``: what an
    operator sees of missed fire times in a schedule's fires. A time claimed before
    (cannot be: the schedule moved on from it only now) keeps its claim."""
    tx.executemany(
        "INSERT INTO schedule_fires (schedule_id, fire_at, run_id, status, reason, at) "
        "VALUES (?, ?, NULL, 'missed', ?, ?) ON CONFLICT (schedule_id, fire_at) DO NOTHING",
        [(sid, t, reason, now) for sid, t, reason in notes])


def claim_fire(tx: Tx, schedule_id: str, fire_at: float, *, run_id: str | None,
               status: str, reason: str | None, now: float, prune: bool) -> None:
    """Claim ``fire_at`` (a unique violation if it was claimed before: the caller's
    transaction then writes nothing)."""
    tx.execute("INSERT INTO schedule_fires (schedule_id, fire_at, run_id, status, reason, "
               "at) VALUES (?, ?, ?, ?, ?, ?)",
               (schedule_id, fire_at, run_id, status, reason, now))
    if prune:
        _prune(tx, schedule_id)


def _prune(tx: Tx, schedule_id: str) -> None:
    tx.execute(
        "DELETE FROM schedule_fires WHERE schedule_id = ? AND fire_at < (SELECT fire_at "
        "FROM schedule_fires WHERE schedule_id = ? ORDER BY fire_at DESC LIMIT 1 "
        "OFFSET ?)", (schedule_id, schedule_id, KEEP_FIRES - 1))


@dataclass(frozen=True, kw_only=True, slots=True)
class FireClaim:
    """One fire of :func:`claim_fires`: what :func:`move` and :func:`claim_fire` are
    given for a fired run."""

    schedule_id: str
    expect_next: float
    next_fire_at: float | None
    next_due_at: float | None
    missed: int
    failures: int
    run_id: str
    fire_at: float
    prune: bool
    #: The first fire time ``missed`` counts, and why (see :func:`note_missed`).
    missed_note: tuple[float, str] | None = None
    #: The version the schedule must still be at, if any (with ``expect_next``).
    expect_version: int | None = None


def _by_schedule(fire: FireClaim) -> str:
    return fire.schedule_id


def claim_fires(tx: Tx, fires: Sequence[FireClaim], now: float) -> None:
    """:func:`move` and :func:`claim_fire` for many fired runs, one statement each
    (a chunk of a burst). :class:`Moved` if any schedule was not at its fire time
    any more, a unique violation if any fire time was claimed before: the caller
    then writes its fires one by one to find which."""
    tx.executemany(
        "UPDATE schedules SET next_fire_at = ?, next_due_at = ?, updated_at = ?, "
        "version = version + 1, missed_count = missed_count + ?, last_run_id = ?, "
        "last_fire_at = ?, fires = fires + 1, failures = ? WHERE id = ? AND "
        "next_fire_at = ? AND enabled = 1 AND (CAST(? AS BIGINT) IS NULL OR version = ?)",
        [(f.next_fire_at, f.next_due_at, now, f.missed, f.run_id, f.fire_at, f.failures,
          f.schedule_id, f.expect_next, f.expect_version, f.expect_version)
         for f in sorted(fires, key=_by_schedule)])
    if tx.rowcount != len(fires):
        raise Moved(f"{len(fires) - tx.rowcount} of {len(fires)} schedules moved on")
    tx.executemany(
        "INSERT INTO schedule_fires (schedule_id, fire_at, run_id, status, reason, at) "
        "VALUES (?, ?, ?, 'fired', NULL, ?)",
        sorted((f.schedule_id, f.fire_at, f.run_id, now) for f in fires))
    notes = [(f.schedule_id, *f.missed_note) for f in fires
             if f.missed and f.missed_note is not None]
    if notes:
        note_missed(tx, notes, now)
    for f in fires:
        if f.prune:
            _prune(tx, f.schedule_id)


def fire_outcomes(tx: Tx, schedule_id: str, *, after: float, limit: int
                  ) -> list[tuple[str, float | None, str | None]]:
    """``(run status, finished_at, error)`` of the latest fire runs after ``after``,
    newest first (fires whose runs are gone are left out)."""
    rows = tx.all("SELECT r.status, r.finished_at, r.error FROM schedule_fires f "
                  "JOIN runs r ON r.id = f.run_id WHERE f.schedule_id = ? AND "
                  "f.fire_at > ? ORDER BY f.fire_at DESC LIMIT ?",
                  (schedule_id, after, limit))
    return [(str(r[0]), r[1], r[2]) for r in rows]


def recent_fires(tx: Tx, schedule_id: str, limit: int) -> list[FireOutcome]:
    rows = tx.all("SELECT f.fire_at, f.status, f.reason, f.run_id, r.status, r.error, "
                  "r.finished_at, f.at FROM schedule_fires f LEFT JOIN runs r ON "
                  "r.id = f.run_id WHERE f.schedule_id = ? ORDER BY f.fire_at DESC LIMIT ?",
                  (schedule_id, limit))
    return [FireOutcome(fire_at=float(r[0]), status=r[1], reason=r[2], run_id=r[3],
                        run_status=r[4], run_error=orjson.loads(r[5]) if r[5] else None,
                        finished_at=r[6], at=float(r[7])) for r in rows]
