"""Listing runs across agents and sessions, newest first, a page at a time.

The same SQL runs on SQLite and PostgreSQL. Pages are keyed, not offset: a cursor
names the last run of a page (its ``created_at`` and ``id``), so a page never repeats or
skips a run when runs are added while a client pages through them.

It also names sessions by id (agent name and key) for streams that carry events of
many sessions (the activity feed).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentd.errors import InvalidInput
from agentd.store.engine import Tx
from agentd.store.records import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, RunRecord

__all__ = ["MAX_PAGE", "RUN_STATUSES", "RunPage", "decode_cursor", "encode_cursor",
           "list_runs", "session_names"]

#: Every status a run can have, in its life's order.
RUN_STATUSES = ("queued", "running", "waiting_approval", "completed", "failed",
                "cancelled", "interrupted")
assert set(RUN_STATUSES) == ACTIVE_RUN_STATES | TERMINAL_RUN_STATES
MAX_PAGE = 1000

_COLS = ("r.id, r.session_id, r.agent_id, r.status, r.input, r.output, r.error, r.steps, "
         "r.usage, r.created_at, r.started_at, r.finished_at, r.lease_owner, r.priority, "
         "a.name, s.key")


@dataclass(kw_only=True, slots=True)
class RunPage:
    """Runs with their agent's name and session's key, and the cursor of the next page
    (None on the last page)."""

    runs: list[tuple[RunRecord, str, str]]
    next_cursor: str | None
    #: How many runs match the filters on every page (asked for with ``count``).
    total: int | None = None


def encode_cursor(created_at: float, run_id: str) -> str:
    """An opaque cursor naming a row's place in a newest-first order by (time, id): a
    run's here, a session's in :mod:`agentd.store.sessions_query`."""
    raw = orjson.dumps([created_at, run_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, field: str = "query.cursor",
                  given_as: str = "next_cursor") -> tuple[float, str]:
    """The place a cursor names; InvalidInput (422) naming ``field`` for anything else
    (``given_as``: what the page that gave it called it)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = orjson.loads(raw)
        if (not isinstance(created_at, int | float) or isinstance(created_at, bool)
                or not isinstance(run_id, str)):
            raise ValueError(cursor)
        return float(created_at), run_id
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidInput(f"{field.rpartition('.')[2]} is not one this daemon gave "
                           f"(use {given_as} as is)", field=field) from None


def _record(row: Sequence[Any]) -> tuple[RunRecord, str, str]:
    run = RunRecord(
        id=row[0], session_id=row[1], agent_id=row[2], status=row[3], input=row[4],
        output=row[5], error=orjson.loads(row[6]) if row[6] else None, steps=row[7],
        usage=orjson.loads(row[8]) if row[8] else {}, created_at=row[9],
        started_at=row[10], finished_at=row[11], lease_owner=row[12], priority=row[13])
    return run, row[14], row[15]


def list_runs(tx: Tx, *, agent: str | None = None, session: str | None = None,
              statuses: Sequence[str] = (), since: float | None = None,
              until: float | None = None, cursor: str | None = None, limit: int = 50,
              agents: Sequence[str] | None = None, count: bool = False) -> RunPage:
    """Runs matching every filter given, newest first (by ``created_at``, then id).

    ``agent`` is an agent's name, ``session`` a session key of that agent, ``statuses``
    any of :data:`RUN_STATUSES`, ``since`` epoch seconds (runs created at or after it),
    ``until`` epoch seconds (runs created before it),
    ``agents`` names of the agents whose runs may be listed (a token's scope).
    ``count``: the page's ``total`` is counted too, in the same read (it reads every
    matching run's row: for a filter as narrow as an agent, as A2A's ListTasks has).
    """
    if session is not None and agent is None:
        raise InvalidInput("a session filter needs an agent (session keys are per agent)",
                           field="query.session")
    unknown = sorted(set(statuses) - set(RUN_STATUSES))
    if unknown:
        raise InvalidInput(f"unknown run status(es) {', '.join(unknown)}; use "
                           f"{', '.join(RUN_STATUSES)}", field="query.status")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1-{MAX_PAGE}", field="query.limit")
    terms: list[str] = []
    params: list[Any] = []
    if agents is not None:
        if not agents:
            return RunPage(runs=[], next_cursor=None, total=0 if count else None)
        # Not through the agents' name index: the page is the newest runs, found by
        # walking runs_created and skipping other agents' (bounded by how busy the
        # others are), rather than every run of these agents, sorted (bounded by
        # their whole history).
        terms.append(f"(a.name || '') IN ({', '.join('?' for _ in agents)})")
        params.extend(agents)
    if agent is not None:
        terms.append("a.name = ?")
        params.append(agent)
    if session is not None:
        terms.append("s.key = ?")
        params.append(session)
    if statuses:
        terms.append(f"r.status IN ({', '.join('?' for _ in set(statuses))})")
        params.extend(sorted(set(statuses)))
    if since is not None:
        terms.append("r.created_at >= ?")
        params.append(since)
    if until is not None:
        terms.append("r.created_at < ?")
        params.append(until)
    total = None
    if count:
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        row = tx.one(f"SELECT COUNT(*) FROM runs r JOIN agents a ON a.id = r.agent_id "
                     f"JOIN sessions s ON s.id = r.session_id{where}", params)
        total = int(row[0]) if row is not None else 0
    if cursor is not None:
        at, run_id = decode_cursor(cursor)
        terms.append("(r.created_at < ? OR (r.created_at = ? AND r.id < ?))")
        params.extend((at, at, run_id))
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    rows = tx.all(
        f"SELECT {_COLS} FROM runs r JOIN agents a ON a.id = r.agent_id "
        f"JOIN sessions s ON s.id = r.session_id{where} "
        "ORDER BY r.created_at DESC, r.id DESC LIMIT ?", (*params, limit + 1))
    found = [_record(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = found[-1][0] if found else None
    return RunPage(runs=found, next_cursor=(encode_cursor(last.created_at, last.id)
                                            if more and last is not None else None),
                   total=total)


def session_names(tx: Tx, session_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{session id: (agent name, session key)}`` for the sessions that still exist."""
    ids = sorted(set(session_ids))
    if not ids:
        return {}
    rows = tx.all(
        "SELECT s.id, a.name, s.key FROM sessions s JOIN agents a ON a.id = s.agent_id "
        f"WHERE s.id IN ({', '.join('?' for _ in ids)})", ids)
    return {row[0]: (row[1], row[2]) for row in rows}
