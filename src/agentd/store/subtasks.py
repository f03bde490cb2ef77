"""Subtasks and agent calls: the link between a run and the child runs it started.

Each function runs inside one transaction (``tx``). A row is inserted by
:func:`insert` inside the transaction that queues the child's run
(``Store.accept_message(also=...)``), so a child never exists without its link.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from agentd.events import ACTIVE_RUN_STATES
from agentd.store.engine import Tx
from agentd.store.rows import active

__all__ = ["COLS", "SubtaskRecord", "children", "count", "insert", "mark_reported",
           "of_child", "of_effect", "one", "orphans", "unreported", "unreported_runs"]

COLS = ("id, type, parent_run, parent_session, parent_agent_id, n, effect_id, child_run, "
        "child_session, child_agent_id, child_agent, child_key, title, depth, created_at, "
        "reported")
_S = ", ".join(f"s.{c.strip()}" for c in COLS.split(","))
#: The subtask's columns, then its child run's status, output, error and usage
#: (NULL when the child's session was deleted).
_SELECT = (f"SELECT {_S}, r.status, r.output, r.error, r.usage FROM subtasks s "
           "LEFT JOIN runs r ON r.id = s.child_run")


@dataclass(kw_only=True, slots=True)
class SubtaskRecord:
    """One child run of a run, with its run's state when read."""

    id: str
    type: Literal["subtask", "call"]
    parent_run: str
    parent_session: str
    parent_agent_id: str
    n: int
    effect_id: str
    child_run: str
    child_session: str
    child_agent_id: str
    child_agent: str
    child_key: str
    title: str
    depth: int
    created_at: float
    reported: bool = False
    #: The child run's status (``gone``: its session was deleted), output, error, usage.
    status: str = "queued"
    output: str | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE_RUN_STATES

    def to_api(self) -> dict[str, Any]:
        from agentd.store.records import iso

        return {"id": self.id, "type": self.type, "parent_run": self.parent_run,
                "n": self.n, "title": self.title, "agent": self.child_agent,
                "session": self.child_key, "run_id": self.child_run, "depth": self.depth,
                "status": self.status, "output": self.output, "error": self.error,
                "usage": self.usage or None, "created_at": iso(self.created_at)}


def _record(row: tuple[Any, ...]) -> SubtaskRecord:
    status, output, error, usage = row[16:20]
    return SubtaskRecord(
        id=row[0], type=row[1], parent_run=row[2], parent_session=row[3],
        parent_agent_id=row[4], n=int(row[5]), effect_id=row[6], child_run=row[7],
        child_session=row[8], child_agent_id=row[9], child_agent=row[10],
        child_key=row[11], title=row[12], depth=int(row[13]), created_at=float(row[14]),
        reported=bool(row[15]), status="gone" if status is None else str(status),
        output=output, error=orjson.loads(error) if error else None,
        usage=orjson.loads(usage) if usage else None)


def insert(tx: Tx, record: SubtaskRecord) -> None:
    tx.execute(
        f"INSERT INTO subtasks ({COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
        (record.id, record.type, record.parent_run, record.parent_session,
         record.parent_agent_id, record.n, record.effect_id, record.child_run,
         record.child_session, record.child_agent_id, record.child_agent,
         record.child_key, record.title, record.depth, record.created_at))


def of_effect(tx: Tx, effect_id: str) -> SubtaskRecord | None:
    """The child a tool call (by its effect id) started, if it did."""
    row = tx.one(f"{_SELECT} WHERE s.effect_id = ?", (effect_id,))
    return None if row is None else _record(row)


def one(tx: Tx, subtask_id: str) -> SubtaskRecord | None:
    row = tx.one(f"{_SELECT} WHERE s.id = ?", (subtask_id,))
    return None if row is None else _record(row)


def of_child(tx: Tx, child_run: str) -> SubtaskRecord | None:
    row = tx.one(f"{_SELECT} WHERE s.child_run = ?", (child_run,))
    return None if row is None else _record(row)


def unreported_runs(tx: Tx) -> list[str]:
    """The child runs whose end is not logged yet (most are under way)."""
    return [str(r[0]) for r in tx.all(
        "SELECT child_run FROM subtasks WHERE reported = 0")]


def children(tx: Tx, parent_run: str, ids: list[str] | None = None) -> list[SubtaskRecord]:
    """A run's children (or those of them with these ids), in the order started."""
    sql, params = f"{_SELECT} WHERE s.parent_run = ?", [parent_run]
    if ids is not None:
        if not ids:
            return []
        sql += f" AND s.id IN ({', '.join('?' for _ in ids)})"
        params.extend(ids)
    return [_record(r) for r in tx.all(sql + " ORDER BY s.n", params)]


def count(tx: Tx, parent_run: str) -> tuple[int, int, int]:
    """A run's children: how many in all, how many unfinished, and the next ``n``."""
    row = tx.one(
        f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {active('r.status')} "
        "THEN 1 ELSE 0 END), 0), COALESCE(MAX(s.n), 0) FROM subtasks s "
        "LEFT JOIN runs r ON r.id = s.child_run WHERE s.parent_run = ?", (parent_run,))
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]) + 1


def orphans(tx: Tx) -> list[tuple[str, str]]:
    """Unfinished children (run, session) whose parent run ended cancelled, failed or
    interrupted: the cascade missed them (the daemon stopped in between)."""
    rows = tx.all(
        "SELECT s.child_run, s.child_session FROM subtasks s "
        "JOIN runs c ON c.id = s.child_run JOIN runs p ON p.id = s.parent_run "
        f"WHERE s.reported = 0 AND {active('c.status')} "
        "AND p.status IN ('cancelled', 'failed', 'interrupted')")
    return [(str(r[0]), str(r[1])) for r in rows]


def unreported(tx: Tx, limit: int = 500) -> list[SubtaskRecord]:
    """Children that ended (or are gone) with no ``subtask.finished`` logged yet."""
    rows = tx.all(f"{_SELECT} WHERE s.reported = 0 AND (r.status IS NULL OR NOT "
                  f"{active('r.status')}) ORDER BY s.created_at LIMIT ?", (limit,))
    return [_record(r) for r in rows]


def mark_reported(tx: Tx, subtask_id: str) -> bool:
    """Claim the right to log the child's end: True once, False ever after."""
    tx.execute("UPDATE subtasks SET reported = 1 WHERE id = ? AND reported = 0",
               (subtask_id,))
    return tx.rowcount == 1
