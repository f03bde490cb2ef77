"""Listing agents a page at a time, and the counts an overview shows.

The same SQL runs on SQLite and PostgreSQL. Pages are keyed by name (the ``UNIQUE``
index on ``agents.name`` serves the order): a page is the agents whose names sort after
the last one of the page before, so an agent created or deleted while a client pages
through never repeats or shifts a page. ``q`` matches a part of the name, ignoring case
(names are ASCII); ``_`` and ``%`` in it are the characters themselves.

The overview's figures are counts the indexes answer (agents by state, active runs by
status through the partial index of active runs) and the store's size: SQLite's pages
and write-ahead log, PostgreSQL's relations in the daemon's schema.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentd.errors import InvalidInput
from agentd.store.engine import Tx
from agentd.store.records import AgentRecord
from agentd.store.rows import AGENT_COLS, active
from agentd.store.rows import agent as _agent

__all__ = ["AGENT_STATES", "MAX_AGENT_PAGE", "AgentPage", "active_run_counts",
           "agent_state_counts", "contains_pattern", "list_agents", "store_bytes"]

#: Every state an agent can be in.
AGENT_STATES = ("created", "running", "paused", "stopped", "error")
MAX_AGENT_PAGE = 1000


@dataclass(kw_only=True, slots=True)
class AgentPage:
    """Agents in name order, and the name to give as ``after`` for the next page
    (None on the last page, or when the listing was not paged)."""

    agents: list[AgentRecord]
    next_after: str | None


def contains_pattern(q: str) -> str:
    """A ``LIKE ... ESCAPE '\\'`` pattern for a lower-cased column containing ``q`` in any
    case, ``%``, ``_`` and ``\\`` in ``q`` being the characters themselves."""
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_agents(tx: Tx, *, limit: int | None = None, after: str | None = None,
                q: str | None = None, states: Sequence[str] = (),
                names: Sequence[str] | None = None) -> AgentPage:
    """Agents matching every filter, by name; at most ``limit`` (None: all of them).
    ``names``: only these (a token's scope)."""
    unknown = sorted(set(states) - set(AGENT_STATES))
    if unknown:
        raise InvalidInput(f"unknown agent state(s) {', '.join(unknown)}; use "
                           f"{', '.join(AGENT_STATES)}", field="query.state")
    if limit is not None and not 1 <= limit <= MAX_AGENT_PAGE:
        raise InvalidInput(f"limit must be 1-{MAX_AGENT_PAGE}", field="query.limit")
    terms: list[str] = []
    params: list[Any] = []
    if names is not None:
        if not names:
            return AgentPage(agents=[], next_after=None)
        terms.append(f"name IN ({', '.join('?' for _ in names)})")
        params.extend(names)
    if after is not None:
        terms.append("name > ?")
        params.append(after)
    if q:
        terms.append("LOWER(name) LIKE ? ESCAPE '\\'")
        params.append(contains_pattern(q))
    if states:
        terms.append(f"state IN ({', '.join('?' for _ in set(states))})")
        params.extend(sorted(set(states)))
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    sql = f"SELECT {AGENT_COLS} FROM agents{where} ORDER BY name"
    if limit is None:
        return AgentPage(agents=[_agent(r) for r in tx.all(sql, params)], next_after=None)
    rows = tx.all(sql + " LIMIT ?", (*params, limit + 1))
    found = [_agent(r) for r in rows[:limit]]
    more = len(rows) > limit and bool(found)
    return AgentPage(agents=found, next_after=found[-1].name if more else None)


def agent_state_counts(tx: Tx) -> dict[str, int]:
    """``{state: agents}`` for every state (zeros included)."""
    counts = dict.fromkeys(AGENT_STATES, 0)
    for state, n in tx.all("SELECT state, COUNT(*) FROM agents GROUP BY state"):
        counts[str(state)] = int(n)
    return counts


def active_run_counts(tx: Tx, agent_ids: Sequence[str] | None = None) -> dict[str, int]:
    """``{status: runs}`` for the active statuses, every node's (the partial index of
    active runs answers it without reading finished runs); ``agent_ids``: only these
    agents' runs (a token's scope)."""
    counts = {"queued": 0, "running": 0, "waiting_approval": 0}
    where, params = f"{active()}", list(agent_ids or ())
    if agent_ids is not None:
        if not agent_ids:
            return counts
        where += f" AND agent_id IN ({', '.join('?' for _ in agent_ids)})"
    for status, n in tx.all(f"SELECT status, COUNT(*) FROM runs WHERE {where} "
                            "GROUP BY status", params):
        counts[str(status)] = int(n)
    return counts


def store_bytes(tx: Tx, dialect: str, path: str | None) -> int:
    """Bytes the store takes: SQLite's pages plus its write-ahead log (``path``: the
    database file), or PostgreSQL's tables, indexes and TOAST in the current schema."""
    if dialect == "sqlite":
        pages = tx.one("PRAGMA page_count")
        size = tx.one("PRAGMA page_size")
        total = int(pages[0]) * int(size[0]) if pages and size else 0
        if path:
            with contextlib.suppress(OSError):  # no log file: nothing written yet
                total += os.stat(path + "-wal").st_size
        return total
    row = tx.one("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')")
    return int(row[0]) if row else 0
