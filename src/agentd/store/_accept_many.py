"""Accepting many messages in one transaction (:meth:`Store.accept_messages`).

A chunk is written set-wise when it can be: one statement per table for the whole
chunk (the sessions read and locked, their ``last_seq`` moved on, the new ones
inserted, the events and the runs inserted with ``executemany``), then the caller's
``also_many`` (a burst of schedule fires claims all its fire times the same way).
That is about eight statements per chunk instead of eight per message: the cost of
a burst of 10,000 ``* * * * *`` fires (docs/benchmarks.md, issue 14).

Every message still stands on its own. The set path runs inside a savepoint; if
anything in it fails (a fire time claimed before, a schedule moved on by another
node, a session created meanwhile by another node), the savepoint is rolled back and
the chunk is written again message by message, each in its own savepoint
(:func:`accept_many`'s per-message path), so only the bad message is refused. A
chunk the set path cannot express (a steer, an idempotency key, two messages to one
session, an ``also`` with no ``also_many``) goes message by message at once.

Locks (PostgreSQL): the set path locks the chunk's existing sessions in one
statement, in the order of ``(agent_id, key)`` compared byte-wise (Python's order of
the strings, and PostgreSQL's with ``COLLATE "C"``), then inserts the new ones in
that order, before anything ``also_many`` touches: two set-wise chunks take their
locks in one order however they overlap (two nodes firing the same due schedules;
a session another chunk created meanwhile is locked last, see ``_join_late``). The
per-message path takes each message's session in that order too, but new and
existing ones interleaved. Where the orders still cross, PostgreSQL ends one side
with a deadlock error, which costs a retry and loses nothing: on the set path the
chunk goes message by message; on the per-message path that one message is refused
with nothing of it written (a schedule's fire is tried again at the next pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentd.errors import SessionBusy
from agentd.events import MessageUser, RunQueued
from agentd.store import _rows
from agentd.store._engine import Tx
from agentd.store._log import Accepted, ToAccept, accept
from agentd.store._rows import ACTIVE, INSERT_EVENT, RUN_COLS, SESSION_COLS, SESSION_NEW
from agentd.store.records import EventRecord, NewEvent, RunRecord, SessionRecord

__all__ = ["AlsoMany", "accept_many"]

#: More writes for the messages a chunk accepted set-wise, given as ``(index in the
#: chunk, accepted)``; raising sends the chunk down the per-message path (where each
#: message's own ``also`` runs instead).
AlsoMany = Callable[[Tx, list[tuple[int, Accepted]]], None]

_SET_MODES = frozenset({"enqueue", "reject", "interrupt"})
_INSERT_RUN = (f"INSERT INTO runs ({RUN_COLS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, '{{}}', "
               "?, ?, NULL, NULL, NULL, NULL, ?, ?)")


class _NotSetWise(Exception):
    """The set path met something only the per-message path can sort out."""


def accept_many(tx: Tx, items: Sequence[ToAccept], *, run_ids: Sequence[str], now: float,
                dialect: str, also_many: AlsoMany | None = None
                ) -> list[Accepted | Exception]:
    """:meth:`Store.accept_messages`'s transaction: each message as :func:`accept`
    would, the outcomes in the order of ``items`` (see the module docstring)."""
    if _set_wise(items, also_many):
        tx.execute("SAVEPOINT accept_set")
        try:
            done = _accept_set(tx, items, run_ids=run_ids, now=now, dialect=dialect)
            if also_many is not None:
                accepted = [(i, a) for i, a in enumerate(done) if isinstance(a, Accepted)]
                if accepted:
                    also_many(tx, accepted)
        except Exception:
            tx.execute("ROLLBACK TO accept_set")
            tx.execute("RELEASE accept_set")
        else:
            tx.execute("RELEASE accept_set")
            return done
    return _accept_each(tx, items, run_ids=run_ids, now=now)


def _set_wise(items: Sequence[ToAccept], also_many: AlsoMany | None) -> bool:
    sessions = {(item.agent_id, item.key) for item in items}
    return len(items) > 1 and len(sessions) == len(items) and all(
        item.mode in _SET_MODES and item.idempotency_key is None
        and (item.also is None or also_many is not None) for item in items)


def _lock_sessions(tx: Tx, items: Sequence[ToAccept], dialect: str
                   ) -> list[tuple[Any, ...]]:
    """The chunk's sessions that exist, read in the sessions' order; on PostgreSQL
    also locked in that order (module docstring)."""
    pg = dialect == "postgresql"
    collate = ' COLLATE "C"' if pg else ""
    return tx.all(
        f"SELECT {SESSION_COLS} FROM sessions WHERE (agent_id, key) IN "
        f"(VALUES {', '.join(['(?, ?)'] * len(items))}) "
        f"ORDER BY agent_id{collate}, key{collate}" + (" FOR UPDATE" if pg else ""),
        [p for item in items for p in (item.agent_id, item.key)])


def _accept_each(tx: Tx, items: Sequence[ToAccept], *, run_ids: Sequence[str], now: float
                 ) -> list[Accepted | Exception]:
    """Each message in its own savepoint: one refused (a busy session in ``reject``
    mode, an ``also`` that raises, a unique key taken) writes nothing and leaves the
    others. In the sessions' order (stable), for the locks (module docstring)."""
    out: list[Accepted | Exception | None] = [None] * len(items)
    for i in _in_order(items):
        item = items[i]
        tx.execute("SAVEPOINT accept_one")
        try:
            out[i] = accept(tx, agent_id=item.agent_id, key=item.key, content=item.content,
                            idempotency_key=item.idempotency_key, mode=item.mode,
                            priority=item.priority, run_id=run_ids[i], now=now,
                            find_busy=item.find_busy, origin=item.origin, also=item.also)
        except Exception as exc:
            tx.execute("ROLLBACK TO accept_one")
            out[i] = exc
        tx.execute("RELEASE accept_one")
    return [r for r in out if r is not None]


def _in_order(items: Sequence[ToAccept]) -> list[int]:
    return sorted(range(len(items)), key=lambda j: (items[j].agent_id, items[j].key))


def _join_late(sessions: list[SessionRecord], items: Sequence[ToAccept], tx: Tx,
               dialect: str) -> set[str]:
    """Sessions another transaction created while this one inserted them (it waited
    for that one's commit): taken as they are now, and locked, when their messages
    are plain ``enqueue`` ones (anything else needs a look at their runs: the
    per-message path). The records become the stored sessions'; their ids are
    returned."""
    wanted = {(s.agent_id, s.key) for s in sessions}
    if any(item.mode != "enqueue" or item.find_busy for item in items
           if (item.agent_id, item.key) in wanted):
        raise _NotSetWise("a session was created meanwhile")
    rows = _lock_sessions(tx, [item for item in items if (item.agent_id, item.key) in wanted],
                          dialect)
    if len(rows) != len(sessions):
        raise _NotSetWise("a session was created and deleted meanwhile")
    stored = {(r[1], r[2]): _rows.session(r) for r in rows}
    for session in sessions:
        now = stored[(session.agent_id, session.key)]
        for field in SessionRecord.__dataclass_fields__:
            setattr(session, field, getattr(now, field))
    return {s.id for s in sessions}


def _accept_set(tx: Tx, items: Sequence[ToAccept], *, run_ids: Sequence[str], now: float,
                dialect: str) -> list[Accepted | Exception]:
    """The chunk in one statement per table (distinct sessions; no steer, no
    idempotency key). A message to a busy session in ``reject`` mode is refused
    (SessionBusy) and writes nothing; the others are accepted."""
    found = {(r[1], r[2]): _rows.session(r) for r in _lock_sessions(tx, items, dialect)}
    busy: dict[str, str] = {}
    if found and any(item.mode != "enqueue" or item.find_busy for item in items):
        ids = [s.id for s in found.values()]
        # The run under way, else the first queued (as _log._accept picks it).
        ahead: dict[str, tuple[bool, int, str]] = {}
        for session_id, run_id, status, queued_seq in tx.all(
                f"SELECT session_id, id, status, queued_seq FROM runs WHERE session_id IN "
                f"({', '.join(['?'] * len(ids))}) AND status IN {ACTIVE}", ids):
            rank = (status == "queued", int(queued_seq or 0), str(run_id))
            if session_id not in ahead or rank < ahead[session_id]:
                ahead[session_id] = rank
        busy = {sid: rank[2] for sid, rank in ahead.items()}

    out: list[Accepted | Exception | None] = [None] * len(items)
    taken: list[tuple[int, SessionRecord, bool]] = []  # (index, session, created)
    for i in _in_order(items):
        item = items[i]
        session = found.get((item.agent_id, item.key))
        if session is None:
            taken.append((i, SessionRecord(id=_rows.new_id("s"), agent_id=item.agent_id,
                                           key=item.key, created_at=now, updated_at=now,
                                           checkpoint_at=now), True))
        elif item.mode == "reject" and session.id in busy:
            run_id = busy[session.id]
            out[i] = SessionBusy(f"session {item.key!r} is busy with run {run_id}",
                                 details={"active_run": run_id})
        else:
            taken.append((i, session, False))
    fresh = [s for _, s, created in taken if created]
    late: set[str] = set()
    if fresh:
        # In the sessions' order, like the locks (module docstring).
        got = tx.all(
            f"INSERT INTO sessions ({SESSION_NEW}) VALUES "
            f"{', '.join(['(?, ?, ?, 2, ?, ?, 0, ?)'] * len(fresh))} "
            f"ON CONFLICT (agent_id, key) DO NOTHING RETURNING id{tx.append_returning}",
            [v for s in fresh for v in (s.id, s.agent_id, s.key, now, now, now)])
        inserted = {str(r[0]) for r in got}
        for session in fresh:
            session.last_seq = 2
        if len(inserted) != len(fresh):
            late = _join_late([s for s in fresh if s.id not in inserted], items, tx,
                              dialect)
    moved = [s for _, s, created in taken if not created or s.id in late]
    if moved:
        # Two events per message: its message.user and its run.queued.
        got = tx.all("UPDATE sessions SET last_seq = last_seq + 2, updated_at = ? WHERE id IN "
                     f"({', '.join(['?'] * len(moved))}) RETURNING id, last_seq"
                     f"{tx.append_returning}", [now, *(s.id for s in moved)])
        last = {str(r[0]): int(r[1]) for r in got}
        if len(last) != len(moved):
            raise _NotSetWise("a session went away meanwhile")
        for session in moved:
            session.last_seq, session.updated_at = last[session.id], now
    taken = [(i, s, created and s.id not in late) for i, s, created in taken]

    events: list[tuple[Any, ...]] = []
    runs: list[tuple[Any, ...]] = []
    for i, session, created in taken:
        item, run_id, queued = items[i], run_ids[i], session.last_seq
        data = {**(item.origin or {}), "content": item.content}
        records = [
            EventRecord(session_id=session.id, seq=queued - 1 + n, run_id=run_id,
                        kind=e.kind, data=e.data, at=now)
            for n, e in enumerate((
                NewEvent.of(MessageUser(data=data), run_id),  # type: ignore[arg-type]
                NewEvent.of(RunQueued(), run_id)))]
        run = RunRecord(id=run_id, session_id=session.id, agent_id=item.agent_id,
                        status="queued", input=item.content, idempotency_key=None,
                        created_at=now, queued_seq=queued, priority=item.priority)
        asked = item.mode != "enqueue" or item.find_busy
        out[i] = Accepted(session=session, run=run, events=records, created_session=created,
                          busy_run=busy.get(session.id) if asked else None, batched=True)
        events.extend((e.session_id, e.seq, e.run_id, e.kind, _rows.dumps(e.data), now)
                      for e in records)
        runs.append((run_id, session.id, item.agent_id, "queued", item.content, None, now,
                     queued, item.priority))
    if events:
        tx.executemany(INSERT_EVENT, events)
        tx.executemany(_INSERT_RUN, runs)
    return [r for r in out if r is not None]
