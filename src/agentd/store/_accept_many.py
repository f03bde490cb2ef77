"""Accepting many messages in one transaction (:meth:`Store.accept_messages`).

A chunk is written set-wise when it can be: one statement per table for the whole
chunk (the sessions created or moved on by one upsert, the events and the runs
inserted with ``executemany``), then the caller's ``also_many`` (a burst of schedule
fires claims all its fire times the same way). That is about eight statements per
chunk instead of eight per message: the cost of a burst of 10,000 ``* * * * *``
fires (docs/benchmarks.md, issue 14).

Every message still stands on its own. The set path runs inside a savepoint; if
anything in it fails (a fire time claimed before, a schedule moved on by another
node, a session that became busy for a ``reject`` message), the savepoint is rolled
back and the chunk is written again message by message, each in its own savepoint
(:func:`accept_many`'s per-message path), so only the bad message is refused. A
chunk the set path cannot express (a steer, an idempotency key, an ``also`` with no
``also_many``, a message to a session another message of the chunk goes to unless
all of them are plain ``enqueue`` ones) goes message by message at once.

With ``start`` (a burst of schedule fires), a run whose session has nothing else
active (no run under way or queued, here or on another node, and no earlier message
of the chunk) starts in the same transaction: its ``run.started`` follows its
``run.queued`` and the run is written ``running`` under ``start``'s lease, as the
executor's first commit would write it (``Accepted.started``; the executor built
afterwards carries on from there). The others are queued as usual. A burst's runs
then start when their fire times are claimed, not after the claims and the model
calls of the runs before them (docs/benchmarks.md, issue 14).

Locks (PostgreSQL): the set path creates or moves on every session of the chunk in
one upsert whose rows are in the order of ``(agent_id, key)`` (stable), so it locks
them in the order the per-message path does, one after another, before anything
``also_many`` touches: chunks on two nodes (firing the same due schedules) wait for
each other in one direction only, whichever path each takes.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentd.errors import SessionBusy
from agentd.events import MessageUser, RunQueued, RunStarted
from agentd.store import rows as _rows
from agentd.store.engine import Tx
from agentd.store.log import Accepted, Lease, ToAccept, accept, not_accepting
from agentd.store.records import EventRecord, NewEvent, RunRecord, SessionRecord
from agentd.store.rows import INSERT_EVENT, RUN_COLS, SESSION_COLS, SESSION_NEW, active

__all__ = ["AlsoMany", "accept_many"]

#: More writes for the messages a chunk accepted set-wise, given as ``(index in the
#: chunk, accepted)``; raising sends the chunk down the per-message path (where each
#: message's own ``also`` runs instead).
AlsoMany = Callable[[Tx, list[tuple[int, Accepted]]], None]

_SET_MODES = frozenset({"enqueue", "reject", "interrupt"})
_INSERT_RUN = (f"INSERT INTO runs ({RUN_COLS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, '{{}}', "
               "?, ?, ?, NULL, ?, ?, ?, ?)")


_first = operator.itemgetter(0)
_first_two = operator.itemgetter(0, 1)


class _NotSetWise(Exception):
    """The set path met something only the per-message path can sort out."""


def accept_many(tx: Tx, items: Sequence[ToAccept], *, run_ids: Sequence[str], now: float,
                dialect: str, also_many: AlsoMany | None = None, start: Lease | None = None
                ) -> list[Accepted | Exception]:
    """:meth:`Store.accept_messages`'s transaction: each message as :func:`accept`
    would, the outcomes in the order of ``items`` (see the module docstring).
    ``start``: the lease under which the set path starts the runs it can. On
    PostgreSQL a message to an agent that is gone or does not accept messages is
    refused (:func:`agentd.store.log.not_accepting`), the others go on."""
    if dialect == "postgresql" and items:
        checked = not_accepting(tx, [item.agent_id for item in items],
                                [item.agent_at for item in items])
        refused = {i: exc for i, exc in enumerate(checked) if exc is not None}
        if refused:
            keep = [i for i in range(len(items)) if i not in refused]
            inner: AlsoMany | None = None
            if also_many is not None:
                outer = also_many

                def inner(tx: Tx, done: list[tuple[int, Accepted]]) -> None:
                    outer(tx, [(keep[j], a) for j, a in done])

            got = _accept_checked(tx, [items[i] for i in keep],
                                  run_ids=[run_ids[i] for i in keep], now=now,
                                  dialect=dialect, also_many=inner, start=start)
            kept = iter(got)
            return [refused[i] if i in refused else next(kept) for i in range(len(items))]
    return _accept_checked(tx, items, run_ids=run_ids, now=now, dialect=dialect,
                           also_many=also_many, start=start)


def _accept_checked(tx: Tx, items: Sequence[ToAccept], *, run_ids: Sequence[str],
                    now: float, dialect: str, also_many: AlsoMany | None = None,
                    start: Lease | None = None) -> list[Accepted | Exception]:
    """:func:`accept_many` once the agents are checked."""
    if not items:
        return []
    if _set_wise(items, also_many):
        tx.execute("SAVEPOINT accept_set")
        try:
            done = _accept_set(tx, items, run_ids=run_ids, now=now, dialect=dialect,
                               start=start)
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
    return _accept_each(tx, items, run_ids=run_ids, now=now, dialect=dialect)


def _set_wise(items: Sequence[ToAccept], also_many: AlsoMany | None) -> bool:
    """Whether the set path can write the chunk: no steer, no idempotency key, and
    several messages to one session only when they are all plain ``enqueue`` ones
    (each queued behind the one before, as the per-message path would)."""
    count = Counter((item.agent_id, item.key) for item in items)
    return len(items) > 1 and all(
        item.mode in _SET_MODES and item.idempotency_key is None
        and item.session_quota is None  # (counted message by message)
        and (item.also is None or also_many is not None)
        and (count[(item.agent_id, item.key)] == 1
             or (item.mode == "enqueue" and not item.find_busy)) for item in items)


def _accept_each(tx: Tx, items: Sequence[ToAccept], *, run_ids: Sequence[str], now: float,
                 dialect: str) -> list[Accepted | Exception]:
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
                            find_busy=item.find_busy, origin=item.origin, also=item.also,
                            session_quota=item.session_quota, dialect=dialect,
                            check_agent=False)
        except Exception as exc:
            tx.execute("ROLLBACK TO accept_one")
            out[i] = exc
        tx.execute("RELEASE accept_one")
    return [r for r in out if r is not None]


def _in_order(items: Sequence[ToAccept]) -> list[int]:
    return sorted(range(len(items)), key=lambda j: (items[j].agent_id, items[j].key))


def _busy(tx: Tx, session_ids: Sequence[str]) -> dict[str, str]:
    """The run each session is busy with: the one under way, else the first queued
    (as ``_log._accept`` picks it)."""
    if not session_ids:
        return {}
    ahead: dict[str, tuple[bool, int, str]] = {}
    for session_id, run_id, status, queued_seq in tx.all(
            f"SELECT session_id, id, status, queued_seq FROM runs WHERE session_id IN "
            f"({', '.join(['?'] * len(session_ids))}) AND {active()}",
            list(session_ids)):
        rank = (status == "queued", int(queued_seq or 0), str(run_id))
        if session_id not in ahead or rank < ahead[session_id]:
            ahead[session_id] = rank
    return {sid: rank[2] for sid, rank in ahead.items()}


def _accept_set(tx: Tx, items: Sequence[ToAccept], *, run_ids: Sequence[str], now: float,
                dialect: str, start: Lease | None = None) -> list[Accepted | Exception]:
    """The chunk in one statement per table (what :func:`_set_wise` lets through). A
    message to a busy session in ``reject`` mode is refused (SessionBusy) and writes
    nothing; the others are accepted. With ``start``, the first message of each idle
    session starts its run (module docstring)."""
    out: list[Accepted | Exception | None] = [None] * len(items)
    asks = [item.mode != "enqueue" or item.find_busy for item in items]
    ids: dict[tuple[str, str], str] = {}
    busy: dict[str, str] = {}
    if any(asks) or start is not None:
        ids, busy = _first_look(tx, items, out)
    order = [i for i in _in_order(items) if out[i] is None]
    if not order:
        return [r for r in out if r is not None]
    chunk = _write_sessions(tx, [items[i] for i in order], ids, busy, start, now)
    if dialect == "postgresql" and (chunk.starts or any(asks[i] for i in order)):
        busy = _look_again(tx, [items[i] for i in order], chunk)
    # Each session's messages take its new seqs in the order given.
    chunk.next_seq = {k: s.last_seq - 2 * chunk.count[k] - (k in chunk.starts) + 2
                      for k, s in chunk.sessions.items()}
    events: list[tuple[Any, ...]] = []
    runs: list[tuple[Any, ...]] = []
    for i in order:
        accepted = _accept_one(items[i], run_ids[i], chunk, start, now)
        out[i] = replace(accepted, busy_run=busy.get(accepted.session.id) if asks[i]
                         else None)
        events.extend((e.session_id, e.seq, e.run_id, e.kind, _rows.dumps(e.data), now)
                      for e in accepted.events)
        run = accepted.run
        runs.append((run.id, run.session_id, run.agent_id, run.status, run.input, None,
                     now, run.started_at, run.lease_owner, run.lease_expires_at,
                     run.queued_seq, run.priority))
    # In key order: each B-tree's pages are visited once, in order (the sessions'
    # and runs' ids are random, so a chunk's rows are spread over the whole table).
    events.sort(key=_first_two)
    runs.sort(key=_first)
    tx.executemany(INSERT_EVENT, events)
    tx.executemany(_INSERT_RUN, runs)
    return [r for r in out if r is not None]


def _first_look(tx: Tx, items: Sequence[ToAccept], out: list[Accepted | Exception | None]
                ) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """The chunk's existing sessions ((agent, key) -> id) and the runs they are busy
    with, read before writing (no locks: on PostgreSQL they are looked at again once
    locked); a ``reject`` message to a busy session is refused in ``out``."""
    # A join, not "(agent_id, key) IN (VALUES ...)": SQLite scans the whole table for
    # that one.
    rows = tx.all(
        f"SELECT s.id, s.agent_id, s.key FROM (VALUES "
        f"{', '.join(['(?, ?)'] * len(items))}) AS v JOIN sessions s ON "
        "s.agent_id = v.column1 AND s.key = v.column2",
        [p for item in items for p in (item.agent_id, item.key)])
    ids = {(r[1], r[2]): str(r[0]) for r in rows}
    busy = _busy(tx, list(ids.values()))
    for i, item in enumerate(items):
        run_id = busy.get(ids.get((item.agent_id, item.key), ""))
        if item.mode == "reject" and run_id is not None:
            out[i] = SessionBusy(f"session {item.key!r} is busy with run {run_id}",
                                 details={"active_run": run_id})
    return ids, busy


@dataclass(slots=True)
class _Chunk:
    """The chunk's sessions as written: by (agent, key), with how many of its
    messages each takes, the ids a new one was given, those whose first message
    starts its run, and the next seq each message takes."""

    sessions: dict[tuple[str, str], SessionRecord]
    count: Counter[tuple[str, str]]
    fresh: dict[tuple[str, str], str]
    starts: set[tuple[str, str]]
    next_seq: dict[tuple[str, str], int] = field(default_factory=dict)


def _write_sessions(tx: Tx, accepted: Sequence[ToAccept], ids: dict[tuple[str, str], str],
                    busy: dict[str, str], start: Lease | None, now: float) -> _Chunk:
    """Every session in one statement, created or moved on by two events per message
    (its message.user and its run.queued; a third, run.started, for a run started
    here), in the sessions' order: on PostgreSQL the row locks are taken in that
    order, as the per-message path takes them."""
    count = Counter((item.agent_id, item.key) for item in accepted)
    starts = set() if start is None else {
        k for k in count if ids.get(k) is None or ids[k] not in busy}
    fresh = {k: _rows.new_id("s") for k in count}
    got = tx.all(
        f"INSERT INTO sessions ({SESSION_NEW}) VALUES "
        f"{', '.join(['(?, ?, ?, ?, ?, ?, 0, ?)'] * len(count))} "
        "ON CONFLICT (agent_id, key) DO UPDATE SET last_seq = sessions.last_seq + "
        "excluded.last_seq, updated_at = excluded.updated_at "
        f"RETURNING {SESSION_COLS}{tx.append_returning}",
        [v for k, n in count.items()
         for v in (fresh[k], *k, 2 * n + (k in starts), now, now, now)])
    sessions = {(r[1], r[2]): _rows.session(r[:9]) for r in got}
    if len(sessions) != len(count):
        raise _NotSetWise("the sessions written are not the chunk's")
    return _Chunk(sessions=sessions, count=count, fresh=fresh, starts=starts)


def _look_again(tx: Tx, accepted: Sequence[ToAccept], chunk: _Chunk) -> dict[str, str]:
    """On PostgreSQL, once the sessions are locked: the runs they are busy with
    (another node may have queued one since the first look, or created a session
    taken for new). A ``reject`` message now finding its session busy sends the chunk
    down the per-message path; a run meant to start queues behind the one found."""
    sessions = chunk.sessions
    busy = _busy(tx, [s.id for k, s in sessions.items() if s.id != chunk.fresh[k]])
    if any(item.mode == "reject" and sessions[(item.agent_id, item.key)].id in busy
           for item in accepted):
        raise _NotSetWise("a session became busy meanwhile")
    late = [k for k in chunk.starts if sessions[k].id in busy]
    if late:
        # The seq taken for a run.started goes back.
        tx.execute(f"UPDATE sessions SET last_seq = last_seq - 1 WHERE id IN "
                   f"({', '.join(['?'] * len(late))})", [sessions[k].id for k in late])
        for k in late:
            chunk.starts.discard(k)
            sessions[k] = replace(sessions[k], last_seq=sessions[k].last_seq - 1)
    return busy


def _accept_one(item: ToAccept, run_id: str, chunk: _Chunk, start: Lease | None,
                now: float) -> Accepted:
    """One message of the chunk: its events and run, at the next seqs of its session
    (each session's messages take them in the order given)."""
    k = (item.agent_id, item.key)
    queued = chunk.next_seq[k]
    started = k in chunk.starts
    chunk.starts.discard(k)  # only the session's first message of the chunk starts
    chunk.next_seq[k] += 2 + started
    # A session with one message of the chunk (the usual case) needs no copy: its row
    # as returned is what it is after that message.
    session = (chunk.sessions[k] if chunk.count[k] == 1
               else replace(chunk.sessions[k], last_seq=queued + started))
    data = {**(item.origin or {}), "content": item.content}
    new = [NewEvent.of(MessageUser(data=data), run_id),  # type: ignore[arg-type]
           NewEvent.of(RunQueued(), run_id)]
    if started:
        new.append(NewEvent.of(RunStarted(), run_id))
    records = [EventRecord(session_id=session.id, seq=queued - 1 + n, run_id=run_id,
                           kind=e.kind, data=e.data, at=now) for n, e in enumerate(new)]
    run = RunRecord(id=run_id, session_id=session.id, agent_id=item.agent_id,
                    status="running" if started else "queued", input=item.content,
                    idempotency_key=None, created_at=now, queued_seq=queued,
                    priority=item.priority)
    if started:
        assert start is not None
        run.started_at, run.lease_owner = now, start.owner
        run.lease_expires_at = now + start.ttl
    return Accepted(session=session, run=run, events=records,
                    created_session=session.id == chunk.fresh[k] and queued == 2,
                    busy_run=None, batched=True, started=started)
