"""Approval requests, read from where they live: the log.

A run waiting for a person is ``waiting_approval``, and the request is its latest
``approval.requested`` event not followed by an ``approval.decided``. There is no
second table to keep in step with the log: the pending list is a join.
"""

from __future__ import annotations

from typing import Any

import orjson

from agentd.store._engine import Tx

__all__ = ["pending"]

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
