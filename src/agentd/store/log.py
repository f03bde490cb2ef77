"""Writing to a session's log: appending events, and the run updates and leases that
commit with them. Each function runs inside one transaction (``tx``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentd.errors import AgentNotAccepting, AgentNotFound, SessionBusy, SessionNotFound
from agentd.events import MessageUser, RunQueued, RunStarted
from agentd.store import quota as _quota
from agentd.store import rows as _rows
from agentd.store.engine import Tx
from agentd.store.quota import Quota
from agentd.store.records import EventRecord, NewEvent, RunRecord, SessionRecord
from agentd.store.rows import INSERT_EVENT, RUN_COLS, SESSION_COLS, SESSION_NEW, active

__all__ = ["Accepted", "AgentChanged", "Lease", "LeaseLost", "RunMoved", "RunUpdate", "Steered",
           "ToAccept", "accept", "append", "leased_update", "update_run"]


class Steered(Exception):
    """A run's step was not committed: a user message was steered into the run."""


class LeaseLost(Exception):
    """A run's step was not committed: this node does not (or no longer) hold its lease."""


class RunMoved(LeaseLost):
    """A run was not taken over: another node committed to it after the log the taker
    folded was read (``unless_run_after``), so the fold is not the run's state."""


class AgentChanged(Exception):
    """A message was not accepted: its agent's record as stored is not the one the
    sender decided it from (another node changed, paused or deleted it, and this one
    has not heard yet). The sender reads the agent again and sends again."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id} changed since it was read")
        self.agent_id = agent_id


@dataclass(frozen=True, slots=True)
class Lease:
    """Who drives a run, checked and renewed in the same transaction as its events.

    Every commit of a run is fenced by its lease: it lands only while ``owner``
    holds it, and pushes ``expires_at`` to ``now + ttl``. ``acquire`` takes the run:
    it must be active, its lease free, expired or already ``owner``'s, and (with
    ``head``) no other run of its session may be ahead of it (active, or queued
    earlier), so a session never has two runs going, on one node or many.
    ``release`` ends the lease at once (a run parked at shutdown), so the next node
    need not wait for it to expire.
    """

    owner: str
    ttl: float
    acquire: bool = False
    head: bool = True
    release: bool = False


@dataclass(kw_only=True, slots=True)
class RunUpdate:
    """Fields of a run to change in the same transaction as some events."""

    status: str | None = None
    output: str | None = None
    error: dict[str, Any] | None = None
    steps: int | None = None
    usage: dict[str, float] | None = None
    started: bool = False
    finished: bool = False

    def apply_to(self, run: RunRecord, at: float) -> None:
        """Make ``run`` what the row is after this update committed at ``at``."""
        if self.status is not None:
            run.status = self.status  # type: ignore[assignment]
        if self.output is not None:
            run.output = self.output
        if self.error is not None:
            run.error = self.error
        if self.steps is not None:
            run.steps = self.steps
        if self.usage is not None:
            run.usage = self.usage
        if self.started:
            run.started_at = at
        if self.finished:
            run.finished_at = at


@dataclass(kw_only=True, slots=True)
class Accepted:
    session: SessionRecord
    run: RunRecord
    events: list[EventRecord]
    created_session: bool
    duplicate: bool = False
    #: The message joined this already running run (mode "steer").
    steered: bool = False
    #: The run that was active or queued when the message came (the running one, else
    #: the first queued), if any (modes other than enqueue, or when asked: the query
    #: costs a turn about 1%).
    busy_run: str | None = None
    #: Written with the rest of its chunk set-wise (``_accept_many``), not on its own.
    batched: bool = False
    #: Its run started in the same transaction (``Store.accept_messages(start=...)``):
    #: ``run.started`` is its last event and the run is ``running`` under that lease.
    started: bool = False


#: ``append``'s update of a session's row when the writer knows its last seq and last
#: checkpoint (``known``): it moves the row only if both are still those.
_MOVE_KNOWN = ("UPDATE sessions SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? "
               "AND last_seq = ? AND checkpoint_at = ?")
#: The most sessions ``known`` remembers (it is emptied when full).
KNOWN_SESSIONS = 4096


def _know(known: dict[str, tuple[int, float]], session_id: str, last_seq: int,
          checkpoint_at: float) -> None:
    if len(known) >= KNOWN_SESSIONS and session_id not in known:
        known.clear()
    known[session_id] = (last_seq, checkpoint_at)


def append(tx: Tx, session_id: str, events: Sequence[NewEvent], now: float,
           checkpoint_at: list[float] | None = None, *,
           last_seq: int | None = None, sole_writer: bool = False,
           known: dict[str, tuple[int, float]] | None = None) -> list[EventRecord]:
    """Append to a session's log; with ``checkpoint_at``, also hand back when the
    session was last checkpointed (read by the statement that moves its last seq, or
    with ``sole_writer`` by the one before).

    ``last_seq``: the session's last seq as this transaction read it, when no other
    can have moved it since (SQLite: a write transaction is the only one); the update
    then returns nothing (SQLite keeps what RETURNING returns in an ephemeral B-tree).
    Never on PostgreSQL, whose ``append_returning`` announces the commit.
    ``sole_writer``: no other transaction can write the session's row before this
    one ends (SQLite): its last seq (and last checkpoint) are read first and the
    update returns nothing: two statements that cost SQLite less than one with
    RETURNING (about 15,000 instructions less a commit). Never on PostgreSQL.
    ``known`` (with ``sole_writer``): what the writer last saw of sessions' rows,
    ``{session_id: (last_seq, checkpoint_at)}``, kept up to date here. When it holds
    the session, the update moves the row only if it still holds both values, and
    the read is skipped (a turn's second commit knows them from its first); when
    the row moved otherwise (another write, a rolled back transaction, a
    checkpoint), it is read as without. The row as stored is always what counts."""
    n = len(events)
    moved = False
    if last_seq is None and sole_writer:
        seen = known.get(session_id) if known is not None else None
        if seen is not None:
            tx.execute(_MOVE_KNOWN, (n, now, session_id, seen[0], seen[1]))
            if tx.rowcount == 1:
                moved = True
                seq, last_checkpoint = seen
        if not moved:
            row = tx.one("SELECT last_seq, checkpoint_at FROM sessions WHERE id = ?",
                         (session_id,))
            if row is None:
                raise SessionNotFound(f"session {session_id} does not exist")
            seq, last_checkpoint = int(row[0]), float(row[1])
        last_seq = seq
        if checkpoint_at is not None:
            checkpoint_at.append(last_checkpoint)
        if known is not None:
            _know(known, session_id, seq + n, last_checkpoint)
    if last_seq is None:
        row = tx.one(
            "UPDATE sessions SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? "
            f"RETURNING last_seq, checkpoint_at{tx.append_returning}",
            (n, now, session_id),
        )
        if row is None:
            raise SessionNotFound(f"session {session_id} does not exist")
        if checkpoint_at is not None:
            checkpoint_at.append(float(row[1]))
        last_seq = int(row[0]) - n
    elif not moved:
        # (With ``last_seq`` given, the last checkpoint is not read.)
        assert (checkpoint_at is None or sole_writer) and not tx.append_returning
        tx.execute("UPDATE sessions SET last_seq = last_seq + ?, updated_at = ? WHERE id = ?",
                   (n, now, session_id))
        if tx.rowcount == 0:
            raise SessionNotFound(f"session {session_id} does not exist")
    first = last_seq + 1
    of_row = EventRecord.of_row
    records = [of_row(session_id, first + i, e.run_id, e.kind, e.data, now)
               for i, e in enumerate(events)]
    if n > _rows.EVENTS_PER_INSERT:
        tx.executemany(INSERT_EVENT, [
            (session_id, r.seq, r.run_id, r.kind, _rows.dumps(r.data), now)
            for r in records])
    elif n:
        # One statement for them all (a turn's commits append two and three): cheaper
        # than a statement run per row (executemany).
        params: list[Any] = []
        for r in records:
            params += (session_id, r.seq, r.run_id, r.kind, _rows.dumps(r.data), now)
        tx.execute(_rows.insert_events(n), params)
    return records


def _run_sets(update: RunUpdate | None, now: float) -> tuple[list[str], list[Any]]:
    sets: list[str] = []
    params: list[Any] = []
    if update is None:
        return sets, params
    if update.status is not None:
        sets.append("status = ?")
        params.append(update.status)
    if update.output is not None:
        sets.append("output = ?")
        params.append(update.output)
    if update.error is not None:
        sets.append("error = ?")
        params.append(_rows.dumps(update.error))
    if update.steps is not None:
        sets.append("steps = ?")
        params.append(update.steps)
    if update.usage is not None:
        sets.append("usage = ?")
        params.append(_rows.dumps(update.usage))
    if update.started:
        sets.append("started_at = ?")
        params.append(now)
    if update.finished:
        sets.append("finished_at = ?")
        params.append(now)
    return sets, params


def update_run(tx: Tx, run_id: str, update: RunUpdate, now: float) -> None:
    sets, params = _run_sets(update, now)
    if sets:
        tx.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*params, run_id))


_AHEAD = (
    "NOT EXISTS (SELECT 1 FROM runs o WHERE o.session_id = runs.session_id "
    f"AND o.id <> runs.id AND {active('o.status')} AND (o.status <> 'queued' "
    "OR o.queued_seq < runs.queued_seq))"
)
#: Agent states in which a queued run does not start (held, or cancelled by whoever
#: stops the agent): checked by the commit that starts it.
_HELD = "(" + ", ".join(f"'{state}'" for state in AgentNotAccepting.STATES) + ")"

# leased_update's conditions, each one string made once (its SQL, made per call,
# was built and hashed again by the statement cache in every step's commit).
#: A lease taken: the run active, its lease free, expired or already the owner's.
_TAKE = (f"id = ? AND {active()} AND (lease_owner IS NULL OR lease_owner = ? "
         "OR lease_expires_at < ?)")
#: A queued run starts only while its agent takes work: paused, stopped or in error
#: as stored (by any node, whatever this one has heard), it stays queued (resume
#: starts it; stop cancels it).
_AGENT_TAKES_WORK = (" AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = runs.agent_id "
                     f"AND a.state IN {_HELD})")
_TAKE_WHERE = {(head, started): _TAKE + (f" AND {_AHEAD}" if head else "")
               + (_AGENT_TAKES_WORK if started else "")
               for head in (False, True) for started in (False, True)}
#: A lease held, and (a run's end) the run still active: a run ends once, so an end
#: written while another path of the same node (a cancel of the run while queued,
#: say) ended it is refused like a lost lease, and its events are not written.
_HELD_WHERE = {False: "id = ? AND lease_owner = ?",
               True: f"id = ? AND lease_owner = ? AND {active()}"}


@functools.cache
def _update_runs(sets: tuple[str, ...], where: str) -> str:
    return f"UPDATE runs SET {', '.join(sets)} WHERE {where}"


def leased_update(tx: Tx, run_id: str, update: RunUpdate | None, lease: Lease,
                  now: float) -> None:
    """Update a run under its lease (see :class:`Lease`); raise LeaseLost if not held
    (or, for the commit that starts a queued run, if its agent is paused, stopped or
    in error as stored)."""
    sets, params = _run_sets(update, now)
    sets.append("lease_expires_at = ?")
    params.append(0.0 if lease.release else now + lease.ttl)
    if lease.acquire:
        sets.append("lease_owner = ?")
        params.append(lease.owner)
        where = _TAKE_WHERE[lease.head, update is not None and update.started]
        params.extend((run_id, lease.owner, now))
    else:
        where = _HELD_WHERE[update is not None and update.finished]
        params.extend((run_id, lease.owner))
    tx.execute(_update_runs(tuple(sets), where), params)
    if tx.rowcount == 0:
        raise LeaseLost(run_id)


def not_accepting(tx: Tx, agent_ids: Sequence[str],
                  seen: Sequence[float | None] | None = None) -> list[Exception | None]:
    """The refusal of each of ``agent_ids`` (None: accepted), read in the accepting
    transaction with the agents' rows locked for share (PostgreSQL): a pause, a
    settings change or a delete committed on another node before this point is
    honoured here, whatever this node has heard of it, and one committed after waits
    for this transaction (so it comes after the message, which it then holds or
    deletes). SQLite has one node, whose view is the store's.

    ``seen``: for each id, the ``updated_at`` of the agent's record the sender
    decided the message from (its priority, tenant and state; None: not checked). A
    record changed since (or gone: a new agent may have its name) refuses it with
    :class:`AgentChanged`, so that the sender reads the agent again: a message is
    never accepted on the strength of a record older than the stored one."""
    ids = sorted(set(agent_ids))
    rows = tx.all(f"SELECT id, name, state, updated_at FROM agents WHERE id IN "
                  f"({', '.join('?' * len(ids))}) FOR SHARE", ids)
    found = {str(r[0]): (str(r[1]), str(r[2]), float(r[3])) for r in rows}
    out: list[Exception | None] = []
    for n, agent_id in enumerate(agent_ids):
        at = seen[n] if seen is not None else None
        row = found.get(agent_id)
        if at is not None and (row is None or row[2] != at):
            out.append(AgentChanged(agent_id))
        elif row is None:
            out.append(AgentNotFound(f"agent {agent_id!r} not found (deleted)"))
        elif row[1] in AgentNotAccepting.STATES:
            out.append(AgentNotAccepting.of(row[0], row[1]))
        else:
            out.append(None)
    return out


def accept(tx: Tx, *, agent_id: str, key: str, content: str, idempotency_key: str | None,
           mode: str, priority: str, run_id: str, now: float,
           find_busy: bool = False, origin: Mapping[str, Any] | None = None,
           also: Callable[[Tx, Accepted], None] | None = None,
           session_quota: Quota | None = None, dialect: str = "sqlite",
           start: Lease | None = None, check_agent: bool = True,
           agent_at: float | None = None,
           known: dict[str, tuple[int, float]] | None = None) -> Accepted:
    """:meth:`Store.accept_message`'s transaction (see there). ``check_agent``: on
    PostgreSQL, refuse a message to an agent that is gone or not accepting, or whose
    record is not the one of ``updated_at`` ``agent_at`` (:func:`not_accepting`; the
    caller did for a batch). ``known``: :func:`append`'s (SQLite), told of the
    session's row as the new run's append leaves it."""
    if check_agent and dialect == "postgresql":
        [refused] = not_accepting(tx, [agent_id], [agent_at])
        if refused is not None:
            raise refused
    accepted = _accept(tx, agent_id=agent_id, key=key, content=content,
                       idempotency_key=idempotency_key, mode=mode, priority=priority,
                       run_id=run_id, now=now, find_busy=find_busy, origin=origin,
                       start=start, dialect=dialect, known=known)
    if accepted.created_session:
        _quota.check(tx, session_quota, dialect)
    if also is not None and not accepted.duplicate:
        also(tx, accepted)
    return accepted


@dataclass(frozen=True, kw_only=True, slots=True)
class ToAccept:
    """One message of :meth:`Store.accept_messages` (the arguments of
    :meth:`Store.accept_message`)."""

    agent_id: str
    key: str
    content: str
    mode: str = "enqueue"
    priority: str = "background"
    idempotency_key: str | None = None
    find_busy: bool = False
    origin: Mapping[str, Any] | None = None
    also: Callable[[Tx, Accepted], None] | None = None
    #: The agent's tenant's limit on sessions, when it has one (a new session is
    #: counted against it in the same transaction).
    session_quota: Quota | None = None
    #: The ``updated_at`` of the agent's record the message was decided from
    #: (PostgreSQL: refused with :class:`AgentChanged` if the stored one differs).
    agent_at: float | None = None


# The accepting transaction's statements, each one string made once (not built, and
# hashed again by the statement cache, in every message's commit).
_SESSION_BY_KEY = f"SELECT {SESSION_COLS} FROM sessions WHERE agent_id = ? AND key = ?"
_SESSION_BY_KEY_LOCKED = _SESSION_BY_KEY + " FOR UPDATE"
# (The busy run's id and status only: Python's sqlite3 describes every column a
# statement returns, a name and a tuple each, in every run of it; the whole row, 17
# columns, cost the accept about 8,000 instructions more.)
_FIRST_ACTIVE = (f"SELECT id, status FROM runs WHERE session_id = ? AND {active()} "
                 "ORDER BY queued_seq LIMIT 1")
_UNDER_WAY = (f"SELECT id, status FROM runs WHERE session_id = ? AND {active()} "
              "AND status <> 'queued' LIMIT 1")
_RUN_BY_ID = f"SELECT {RUN_COLS} FROM runs WHERE id = ?"
#: SQLite: the session with the id of its first active run, if any (one statement
#: where two were; PostgreSQL looks after locking the row, :data:`_FIRST_ACTIVE`).
_SESSION_BY_KEY_BUSY = (
    f"SELECT {SESSION_COLS}, (SELECT r.id FROM runs r WHERE r.session_id = sessions.id "
    f"AND {active('r.status')} ORDER BY r.queued_seq LIMIT 1) FROM sessions "
    "WHERE agent_id = ? AND key = ?")
_INSERT_RUN = (f"INSERT INTO runs ({RUN_COLS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, '{{}}', "
               "?, ?, ?, NULL, ?, ?, ?, ?)")


def _session_row(tx: Tx, agent_id: str, key: str, now: float, lock: bool,
                 select: str | None = None) -> tuple[SessionRecord, bool, tuple[Any, ...]]:
    """The session (made if it does not exist), whether this transaction made it and
    the row read; ``lock``: its row locked first (PostgreSQL's ``FOR UPDATE``).
    ``select``: the statement that reads it (SESSION_COLS first), if not the usual."""
    if select is None:
        select = _SESSION_BY_KEY_LOCKED if lock else _SESSION_BY_KEY
    row = tx.one(select, (agent_id, key))
    if row is not None:
        return _rows.session(row), False, row
    tx.execute(
        f"INSERT INTO sessions ({SESSION_NEW}) VALUES (?, ?, ?, 0, ?, ?, 0, ?) "
        "ON CONFLICT (agent_id, key) DO NOTHING",
        (_rows.new_id("s"), agent_id, key, now, now, now),
    )
    row = tx.one(select, (agent_id, key))
    assert row is not None
    return _rows.session(row), True, row


def _busy_run(tx: Tx, session_id: str) -> tuple[Any, ...] | None:
    """The session's run under way, else its first queued: its ``(id, status)``.

    Lookups served by the partial index of active runs (ordered by ``status =
    'queued'``, the engines read every run the session ever had instead, and SQLite
    sorted them). Runs start in their queue's order, so the first active one is the
    one under way if any; only when it is queued is the rest looked through, to be
    sure."""
    busy = tx.one(_FIRST_ACTIVE, (session_id,))
    if busy is not None and busy[1] == "queued":
        busy = tx.one(_UNDER_WAY, (session_id,)) or busy
    return busy


def _accept(tx: Tx, *, agent_id: str, key: str, content: str, idempotency_key: str | None,
            mode: str, priority: str, run_id: str, now: float, find_busy: bool,
            origin: Mapping[str, Any] | None, start: Lease | None = None,
            dialect: str = "sqlite",
            known: dict[str, tuple[int, float]] | None = None) -> Accepted:
    extra = dict(origin or {})
    # With ``start``, whether the session is busy decides whether the run starts: on
    # PostgreSQL the session's row is locked first (every commit to the session takes
    # it), so no run of another node becomes active between the look and the write.
    lock = start is not None and dialect == "postgresql"
    look = mode != "enqueue" or find_busy or start is not None
    # On SQLite the session's row comes with its first active run's id: whether it is
    # busy (in the usual turn it is not, and nothing more is read).
    with_busy = look and dialect == "sqlite"
    session, created, row = _session_row(tx, agent_id, key, now, lock,
                                         _SESSION_BY_KEY_BUSY if with_busy else None)
    if idempotency_key is not None:
        prior = tx.one(f"SELECT {RUN_COLS} FROM runs WHERE session_id = ? "
                       "AND idempotency_key = ? AND idempotency_key IS NOT NULL",
                       (session.id, idempotency_key))
        if prior is not None:
            return Accepted(session=session, run=_rows.run(prior), events=[],
                            created_session=False, duplicate=True)
    # (A session this transaction made may still be busy on PostgreSQL: another node
    # may have made it and queued a run meanwhile.)
    busy = (_busy_run(tx, session.id)
            if look and (not created or lock) and (not with_busy or row[-1] is not None)
            else None)
    if busy is not None and mode == "reject":
        raise SessionBusy(f"session {key!r} is busy with run {busy[0]}",
                          details={"active_run": busy[0]})
    if busy is not None and mode == "steer":
        events = append(tx, session.id, [NewEvent.of(
            MessageUser(data={**extra, "content": content, "steer": True}),  # type: ignore[typeddict-item]
            busy[0])], now)
        session.last_seq, session.updated_at = events[-1].seq, now
        stored = tx.one(_RUN_BY_ID, (busy[0],))
        assert stored is not None
        return Accepted(session=session, run=_rows.run(stored), events=events,
                        created_session=False, steered=True, busy_run=busy[0])
    # The events first: their seqs (taken under the session's row lock) give the run
    # its place in the session's queue.
    # A run queued behind another writes nothing more until it starts (its stream
    # is told what it waits for from ``busy_run``, not from the log).
    # With ``start`` and nothing else active in the session, the run starts in this
    # transaction too (Accepted.started).
    run, events = _new_run(tx, session, extra, content, idempotency_key, priority, run_id,
                           agent_id, now, start if busy is None else None,
                           read_is_current=dialect == "sqlite", known=known)
    return Accepted(session=session, run=run, events=events, created_session=created,
                    busy_run=busy[0] if busy is not None else None,
                    started=run.status == "running")


def _new_run(tx: Tx, session: SessionRecord, extra: dict[str, Any], content: str,
             idempotency_key: str | None, priority: str, run_id: str, agent_id: str,
             now: float, start: Lease | None, read_is_current: bool = False,
             known: dict[str, tuple[int, float]] | None = None
             ) -> tuple[RunRecord, list[EventRecord]]:
    """A new run of the message, queued; with ``start``, started too: its run.started
    follows, and it is written running under the lease, as its executor's first
    commit would write it. ``read_is_current``: ``session`` as read is the row as
    stored (SQLite, whose write transaction is the only one), so the append need not
    read its last seq back; ``known`` (with it) is told of the row the append leaves."""
    new = [NewEvent.of(MessageUser(data={**extra, "content": content}),  # type: ignore[typeddict-item]
                       run_id),
           NewEvent.of(RunQueued(), run_id)]
    if start is not None:
        new.append(NewEvent.of(RunStarted(), run_id))
    events = append(tx, session.id, new, now,
                    last_seq=session.last_seq if read_is_current else None)
    run = RunRecord(id=run_id, session_id=session.id, agent_id=agent_id,
                    status="running" if start is not None else "queued", input=content,
                    idempotency_key=idempotency_key, created_at=now,
                    queued_seq=events[1].seq, priority=priority)
    if start is not None:
        run.started_at, run.lease_owner = now, start.owner
        run.lease_expires_at = now + start.ttl
    tx.execute(
        _INSERT_RUN,
        (run.id, session.id, agent_id, run.status, content, idempotency_key, now,
         run.started_at, run.lease_owner, run.lease_expires_at, run.queued_seq, priority),
    )
    session.last_seq = events[-1].seq
    session.updated_at = now
    if known is not None and read_is_current:
        _know(known, session.id, session.last_seq, session.checkpoint_at)
    return run, events
