"""Sandbox uids: one per agent, from the daemon's range, never given twice.

A row is written the first time an agent needs a uid (at create, or at the first run
of an agent from before) and is never deleted: it outlives its agent (no foreign
key), so a uid whose files may still lie about (the process backend can write to the
host's ``/tmp``) never goes to a new agent. The next uid is one above the highest
given in the range; when the range is used up, no new agent gets one (a clear 409
naming the setting). On PostgreSQL an advisory lock makes nodes allocate one at a
time.
"""

from __future__ import annotations

import time

from agentd.errors import Conflict
from agentd.store._engine import Tx

__all__ = ["assign", "lookup"]

_LOCK = 872101  # pg_advisory_xact_lock key (migrations use 872100)


def lookup(tx: Tx, agent_id: str) -> int | None:
    row = tx.one("SELECT uid FROM sandbox_uids WHERE agent_id = ?", (agent_id,))
    return int(row[0]) if row else None


def assign(tx: Tx, agent_id: str, *, base: int, count: int, dialect: str) -> int:
    """The agent's uid: the one it has, else the next free one of the range."""
    if dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
    have = lookup(tx, agent_id)
    if have is not None:
        return have
    row = tx.one("SELECT MAX(uid) FROM sandbox_uids WHERE uid >= ? AND uid < ?",
                 (base, base + count))
    uid = base if row is None or row[0] is None else int(row[0]) + 1
    if uid >= base + count:
        raise Conflict(f"every sandbox uid of the range {base}..{base + count - 1} has "
                       "been given to an agent (uids are never reused): raise "
                       "sandbox.uid_count or move sandbox.uid_base",
                       code="sandbox_uids_exhausted")
    tx.execute("INSERT INTO sandbox_uids (uid, agent_id, created_at) VALUES (?, ?, ?)",
               (uid, agent_id, time.time()))
    return uid
