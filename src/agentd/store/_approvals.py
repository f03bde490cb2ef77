"""Approval requests, read from where they live: the log.

A run waiting for a person is ``waiting_approval``, and the request is its latest
``approval.requested`` event not followed by an ``approval.decided``. There is no
second table to keep in step with the log: the pending list is a join.
"""

from __future__ import annotations

from typing import Any

import orjson

from agentd.errors import Conflict, RunNotFound
from agentd.events import ApprovalDecided, ApprovalRequested, DecisionData, parse
from agentd.store.engine import Tx
from agentd.store.log import append
from agentd.store.records import EventRecord, NewEvent

__all__ = ["decide_unheld", "pending"]

_PENDING = (
    "SELECT r.id, a.name, s.key, e.seq, e.data, e.at FROM runs r "
    "JOIN sessions s ON s.id = r.session_id JOIN agents a ON a.id = r.agent_id "
    "JOIN events e ON e.session_id = r.session_id AND e.run_id = r.id "
    "WHERE r.status = 'waiting_approval' AND e.kind = 'approval.requested' "
    "AND e.seq = (SELECT MAX(x.seq) FROM events x WHERE x.session_id = r.session_id "
    "AND x.run_id = r.id AND x.kind IN ('approval.requested', 'approval.decided'))"
)


def pending(tx: Tx, agent: str | None = None) -> list[dict[str, Any]]:
    """Every undecided request, oldest first (optionally of one agent, by name)."""
    sql, params = _PENDING, []
    if agent is not None:
        sql, params = sql + " AND a.name = ?", [agent]
    rows = tx.all(sql + " ORDER BY e.at, r.id", params)
    return [{**orjson.loads(row[4]), "run_id": row[0], "agent": row[1], "session": row[2],
             "seq": row[3], "requested_at": row[5]} for row in rows]


def decide_unheld(tx: Tx, run_id: str, decision: DecisionData, now: float) -> EventRecord:
    """:meth:`Store.decide_unheld`'s transaction (see there)."""
    row = tx.one("SELECT session_id, status FROM runs WHERE id = ?", (run_id,))
    if row is None:
        raise RunNotFound(f"run {run_id!r} not found")
    session_id, status = str(row[0]), str(row[1])
    asks = tx.all("SELECT seq, kind, data FROM events WHERE session_id = ? AND "
                  "run_id = ? AND kind IN ('approval.requested', 'approval.decided') "
                  "ORDER BY seq DESC LIMIT 1", (session_id, run_id))
    if status != "waiting_approval" or not asks or asks[0][1] != "approval.requested":
        raise Conflict(f"run {run_id} is {status}, not waiting for a decision",
                       code="not_waiting")
    asked = parse("approval.requested", orjson.loads(asks[0][2]))
    assert isinstance(asked, ApprovalRequested)
    decided = ApprovalDecided(data={
        "approval_id": asked.data.get("approval_id"), "effect_id": asked.data["effect_id"],
        **decision})
    event = append(tx, session_id, [NewEvent.of(decided, run_id)], now)[0]
    tx.execute("UPDATE runs SET status = 'running', lease_owner = NULL, "
               "lease_expires_at = 0 WHERE id = ?", (run_id,))
    return event
