"""Listing an agent's sessions a page at a time, most recent activity first.

The same SQL runs on SQLite and PostgreSQL, served by the ``sessions_recent`` index
``(agent_id, updated_at, id)``. Pages are keyed, not offset: the cursor names the last
session of a page (its ``updated_at`` and id) and the next page is the sessions that sort
after it in ``(updated_at DESC, id DESC)``. A session untouched while a client pages is
never repeated or skipped; one that gets activity meanwhile moves before the cursor (it
is on the next first page, and may not appear on the later pages of this pass).

``q`` matches a part of the key ignoring case (``LOWER``: ASCII letters on SQLite, every
letter on PostgreSQL); ``_`` and ``%`` in it are the characters themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentd.errors import InvalidInput
from agentd.store.agents_query import contains_pattern
from agentd.store.engine import Tx
from agentd.store.records import SessionRecord
from agentd.store.rows import SESSION_COLS
from agentd.store.rows import session as _session
from agentd.store.runs_query import decode_cursor, encode_cursor

__all__ = ["MAX_SESSION_PAGE", "SessionPage", "list_sessions"]

MAX_SESSION_PAGE = 1000


@dataclass(kw_only=True, slots=True)
class SessionPage:
    """Sessions, most recent activity first, and the cursor to give as ``after`` for
    the next page (None on the last page)."""

    sessions: list[SessionRecord]
    next_after: str | None


def list_sessions(tx: Tx, agent_id: str, *, limit: int, after: str | None = None,
                  q: str | None = None) -> SessionPage:
    """At most ``limit`` sessions of the agent matching ``q``, after the cursor
    ``after`` (``next_after`` of the page before), by ``(updated_at DESC, id DESC)``."""
    if not 1 <= limit <= MAX_SESSION_PAGE:
        raise InvalidInput(f"limit must be 1-{MAX_SESSION_PAGE}", field="query.limit")
    terms = ["agent_id = ?"]
    params: list[Any] = [agent_id]
    if after is not None:
        at, session_id = decode_cursor(after, field="query.after", given_as="next_after")
        # A row value: both dialects seek the index to it instead of filtering a scan.
        terms.append("(updated_at, id) < (?, ?)")
        params.extend((at, session_id))
    if q:
        terms.append("LOWER(key) LIKE ? ESCAPE '\\'")
        params.append(contains_pattern(q))
    rows = tx.all(f"SELECT {SESSION_COLS} FROM sessions WHERE {' AND '.join(terms)} "
                  "ORDER BY updated_at DESC, id DESC LIMIT ?", (*params, limit + 1))
    found = [_session(r) for r in rows[:limit]]
    more = len(rows) > limit and bool(found)
    last = found[-1] if more else None
    return SessionPage(sessions=found, next_after=None if last is None else
                       encode_cursor(last.updated_at, last.id))
