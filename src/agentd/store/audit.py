"""The audit log's SQL: rows appended to a hash chain, read back by filters, verified.

Each row's ``hash`` is the SHA-256 of the previous row's hash and the row's own
content (:func:`row_hash`), and ``seq`` is dense from 1: a row edited in place no
longer matches its hash, a row removed leaves a gap and breaks the next row's
``prev``, and re-hashing the rest to hide either needs every later row rewritten.
What the chain cannot show by itself is the newest rows cut off the end: a head
(seq and hash) noted earlier (``agentd audit verify --head``) catches that.

Rows are appended under a lock (SQLite: its one writer; PostgreSQL: an advisory
transaction lock) so that two nodes never give out one seq or fork the chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentd.store.engine import Tx

__all__ = ["AUDIT_COLS", "GENESIS", "AuditEntry", "AuditRow", "append", "head", "page",
           "row_hash", "walk"]

_LOCK = 872102  # pg_advisory_xact_lock key (migrations 872100, sandbox uids 872101)
GENESIS = "0" * 64
AUDIT_COLS = ("seq, at, actor, role, action, resource, outcome, reason, details, prev, "
              "hash")


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEntry:
    """What is to be recorded: who (``actor``: the token's name, None for a request
    that carried no valid token; ``role``), did what (``action``: ``token.create``,
    ``agent.update``, ``request.denied`` ...) to what (``resource``: ``token:ci``,
    ``agent:support``, ``POST /v1/agents``), with which ``outcome`` (``allowed``,
    ``denied``, ``failed``) and why."""

    actor: str | None
    role: str | None
    action: str
    resource: str
    outcome: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRow:
    seq: int
    at: float
    actor: str | None
    role: str | None
    action: str
    resource: str
    outcome: str
    reason: str
    details: dict[str, Any]
    prev: str
    hash: str

    def to_api(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "role": self.role,
                "action": self.action, "resource": self.resource,
                "outcome": self.outcome, "reason": self.reason, "details": self.details,
                "hash": self.hash}


def row_hash(prev: str, seq: int, at: float, actor: str | None, role: str | None,
             action: str, resource: str, outcome: str, reason: str, details: str) -> str:
    """The chain's hash of one row (``details`` as stored: its JSON text)."""
    content = orjson.dumps([prev, seq, repr(float(at)), actor, role, action, resource,
                            outcome, reason, details])
    return hashlib.sha256(content).hexdigest()


def _row(row: Sequence[Any]) -> AuditRow:
    return AuditRow(seq=int(row[0]), at=float(row[1]), actor=row[2], role=row[3],
                    action=row[4], resource=row[5], outcome=row[6], reason=row[7],
                    details=orjson.loads(row[8]), prev=row[9], hash=row[10])


def head(tx: Tx) -> tuple[int, str]:
    """The last row's seq and hash (``(0, GENESIS)`` for an empty log)."""
    row = tx.one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def append(tx: Tx, entries: Sequence[AuditEntry], *, dialect: str) -> list[int]:
    """Append ``entries`` to the chain, in order; their seqs."""
    if not entries:
        return []
    if dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
    seq, prev = head(tx)
    rows: list[tuple[Any, ...]] = []
    for entry in entries:
        seq += 1
        details = orjson.dumps(entry.details, option=orjson.OPT_SORT_KEYS).decode()
        digest = row_hash(prev, seq, entry.at, entry.actor, entry.role, entry.action,
                          entry.resource, entry.outcome, entry.reason, details)
        rows.append((seq, entry.at, entry.actor, entry.role, entry.action, entry.resource,
                     entry.outcome, entry.reason, details, prev, digest))
        prev = digest
    tx.executemany(f"INSERT INTO audit_log ({AUDIT_COLS}) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return [int(r[0]) for r in rows]


def page(tx: Tx, *, after: int = 0, limit: int = 100, actor: str | None = None,
         action: str | None = None, outcome: str | None = None,
         resource: str | None = None) -> list[AuditRow]:
    """Rows after ``after`` in seq order, filtered (``action`` ending in ``.*`` is a
    prefix: ``token.*``)."""
    where, params = ["seq > ?"], list[Any]([after])
    if actor is not None:
        where.append("actor = ?")
        params.append(actor)
    if action is not None:
        if action.endswith(".*"):
            where.append("substr(action, 1, ?) = ?")
            params.extend([len(action) - 1, action[:-1]])
        else:
            where.append("action = ?")
            params.append(action)
    if outcome is not None:
        where.append("outcome = ?")
        params.append(outcome)
    if resource is not None:
        where.append("resource = ?")
        params.append(resource)
    rows = tx.all(f"SELECT {AUDIT_COLS} FROM audit_log WHERE {' AND '.join(where)} "
                  "ORDER BY seq LIMIT ?", (*params, limit))
    return [_row(r) for r in rows]


def walk(tx: Tx, *, after: int, limit: int) -> Iterator[tuple[Any, ...]]:
    """Raw rows after ``after`` (for :func:`verify`'s pages)."""
    yield from tx.all(f"SELECT {AUDIT_COLS} FROM audit_log WHERE seq > ? ORDER BY seq "
                      "LIMIT ?", (after, limit))
