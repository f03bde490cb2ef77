"""Rows and records: the tables' column lists, row-to-record conversions and ids."""

from __future__ import annotations

import functools
import random
import time
from typing import Any

import orjson

from agentd.events import ACTIVE_RUN_STATES, RUN_STATES
from agentd.store.records import (
    AgentRecord,
    CheckpointRecord,
    EventRecord,
    RunRecord,
    SessionRecord,
)

__all__ = ["AGENT_COLS", "CHECKPOINT_COLS", "EVENTS_PER_INSERT", "EVENT_COLS", "INSERT_EVENT",
           "RUN_COLS", "SESSION_COLS", "SESSION_NEW", "active", "agent", "checkpoint", "dumps",
           "event", "insert_events", "new_id", "run", "session"]

AGENT_COLS = "id, name, model, instructions, tools, settings, state, created_at, updated_at"
SESSION_NEW = ("id, agent_id, key, last_seq, created_at, updated_at, checkpoint_seq, "
               "checkpoint_at")
SESSION_COLS = SESSION_NEW + ", policy"
RUN_COLS = ("id, session_id, agent_id, status, input, output, error, steps, usage, "
            "idempotency_key, created_at, started_at, finished_at, lease_owner, "
            "lease_expires_at, queued_seq, priority")
CHECKPOINT_COLS = "id, session_id, seq, name, kind, created_at"
EVENT_COLS = "session_id, seq, run_id, kind, data, at"
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?)"
#: The most events :func:`insert_events` writes in one statement (each count is a
#: statement of its own in the engines' statement caches).
EVENTS_PER_INSERT = 8
_ACTIVE_STATES = tuple(s for s in RUN_STATES if s in ACTIVE_RUN_STATES)


@functools.cache
def active(column: str = "status") -> str:
    """SQL true when ``column`` holds an active run status: ``(status = 'queued' OR
    status = 'running' OR status = 'waiting_approval')``, in the catalogue's order.

    Spelled exactly as the condition of the partial index runs_session_active
    (migration 29), so that SQLite sees a query's term match the index's. An OR of
    equalities, not an ``IN`` list: SQLite builds an IN list of three or more values
    into an ephemeral B-tree each time a statement runs, and evaluates the index's
    condition for every row a statement writes to ``runs`` (three of them for the
    update that ends a run)."""
    return "(" + " OR ".join(f"{column} = '{s}'" for s in _ACTIVE_STATES) + ")"


@functools.cache
def insert_events(n: int) -> str:
    """The statement inserting ``n`` events (1 to :data:`EVENTS_PER_INSERT`), their
    values one after another (``INSERT_EVENT``'s six a row)."""
    assert 1 <= n <= EVENTS_PER_INSERT
    return INSERT_EVENT + ", (?, ?, ?, ?, ?, ?)" * (n - 1)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def agent(row: tuple[Any, ...]) -> AgentRecord:
    return AgentRecord(
        id=row[0], name=row[1], model=row[2], instructions=row[3],
        tools=orjson.loads(row[4]), settings=orjson.loads(row[5]), state=row[6],
        created_at=row[7], updated_at=row[8],
    )


def session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(id=row[0], agent_id=row[1], key=row[2], last_seq=row[3],
                         created_at=row[4], updated_at=row[5], checkpoint_seq=row[6],
                         checkpoint_at=row[7],
                         policy=orjson.loads(row[8]) if row[8] is not None else None)


def run(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0], session_id=row[1], agent_id=row[2], status=row[3], input=row[4],
        output=row[5], error=orjson.loads(row[6]) if row[6] else None, steps=row[7],
        usage=orjson.loads(row[8]) if row[8] else {}, idempotency_key=row[9],
        created_at=row[10], started_at=row[11], finished_at=row[12],
        lease_owner=row[13], lease_expires_at=row[14], queued_seq=row[15],
        priority=row[16],
    )


def checkpoint(row: tuple[Any, ...]) -> CheckpointRecord:
    return CheckpointRecord(id=row[0], session_id=row[1], seq=row[2], name=row[3],
                            kind=row[4], created_at=row[5])


def event(row: tuple[Any, ...]) -> EventRecord:
    return EventRecord.of_row(row[0], row[1], row[2], row[3], orjson.loads(row[4]), row[5])


_rng: random.Random | None = None


def new_id(prefix: str) -> str:
    """Time-ordered unique ids: ``r_`` + 12 hex digits of ms + 64 random bits.

    Ids are unique, not secret, so a seeded PRNG is enough; it avoids a syscall
    per id on the hot path.
    """
    global _rng
    if _rng is None:
        _rng = random.Random()
    return f"{prefix}_{int(time.time() * 1000):012x}{_rng.getrandbits(64):016x}"
