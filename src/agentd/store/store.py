"""The store: the only place agentd state lives. One class, any engine.

Every method is one transaction. Events get their ``seq`` inside the transaction
that writes them (``UPDATE sessions SET last_seq = last_seq + n ... RETURNING``),
so ``seq`` is dense per session and an event is acknowledged once that transaction
has committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentd.errors import (
    AgentExists,
    AgentNotFound,
    CheckpointExists,
    CheckpointNotFound,
    Conflict,
    InvalidInput,
    RunNotFound,
    SessionBusy,
    SessionExists,
    SessionNotFound,
)
from agentd.store import _approvals, _runs_query, _uids, _usage
from agentd.store._engine import Engine, Tx
from agentd.store._schema import MIGRATIONS
from agentd.store.records import (
    AgentRecord,
    AgentState,
    CheckpointRecord,
    EventRecord,
    NewEvent,
    RunRecord,
    SessionRecord,
    UsageCharge,
    live_events,
)

__all__ = ["Accepted", "Lease", "LeaseLost", "RunUpdate", "Steered", "Store"]

log = logging.getLogger(__name__)

_AGENT_COLS = "id, name, model, instructions, tools, settings, state, created_at, updated_at"
_SESSION_NEW = ("id, agent_id, key, last_seq, created_at, updated_at, checkpoint_seq, "
                "checkpoint_at")
_SESSION_COLS = _SESSION_NEW + ", policy"
_RUN_COLS = ("id, session_id, agent_id, status, input, output, error, steps, usage, "
             "idempotency_key, created_at, started_at, finished_at, lease_owner, "
             "lease_expires_at, queued_seq, priority")
_CHECKPOINT_COLS = "id, session_id, seq, name, kind, created_at"
_ACTIVE = "('queued', 'running', 'waiting_approval')"
_EVENT_COLS = "session_id, seq, run_id, kind, data, at"


_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?)"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _agent(row: tuple[Any, ...]) -> AgentRecord:
    return AgentRecord(
        id=row[0], name=row[1], model=row[2], instructions=row[3],
        tools=orjson.loads(row[4]), settings=orjson.loads(row[5]), state=row[6],
        created_at=row[7], updated_at=row[8],
    )


def _session(row: tuple[Any, ...]) -> SessionRecord:
    return SessionRecord(id=row[0], agent_id=row[1], key=row[2], last_seq=row[3],
                         created_at=row[4], updated_at=row[5], checkpoint_seq=row[6],
                         checkpoint_at=row[7],
                         policy=orjson.loads(row[8]) if row[8] is not None else None)


def _run(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        id=row[0], session_id=row[1], agent_id=row[2], status=row[3], input=row[4],
        output=row[5], error=orjson.loads(row[6]) if row[6] else None, steps=row[7],
        usage=orjson.loads(row[8]) if row[8] else {}, idempotency_key=row[9],
        created_at=row[10], started_at=row[11], finished_at=row[12],
        lease_owner=row[13], lease_expires_at=row[14], queued_seq=row[15],
        priority=row[16],
    )


def _checkpoint(row: tuple[Any, ...]) -> CheckpointRecord:
    return CheckpointRecord(id=row[0], session_id=row[1], seq=row[2], name=row[3],
                            kind=row[4], created_at=row[5])


def _event(row: tuple[Any, ...]) -> EventRecord:
    return EventRecord(session_id=row[0], seq=row[1], run_id=row[2], kind=row[3],
                       data=orjson.loads(row[4]), at=row[5])


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


class Steered(Exception):
    """A run's step was not committed: a user message was steered into the run."""


class LeaseLost(Exception):
    """A run's step was not committed: this node does not (or no longer) hold its lease."""


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
    #: The run that was active or queued when the message came (modes other than enqueue).
    busy_run: str | None = None


def _append(tx: Tx, session_id: str, events: Sequence[NewEvent], now: float,
            checkpoint_at: list[float] | None = None) -> list[EventRecord]:
    """Append to a session's log; with ``checkpoint_at``, also hand back when the
    session was last checkpointed (read by the same statement)."""
    row = tx.one(
        "UPDATE sessions SET last_seq = last_seq + ?, updated_at = ? WHERE id = ? "
        f"RETURNING last_seq, checkpoint_at{tx.append_returning}",
        (len(events), now, session_id),
    )
    if row is None:
        raise SessionNotFound(f"session {session_id} does not exist")
    if checkpoint_at is not None:
        checkpoint_at.append(float(row[1]))
    first = int(row[0]) - len(events) + 1
    records = [
        EventRecord(session_id=session_id, seq=first + i, run_id=e.run_id, kind=e.kind,
                    data=e.data, at=now)
        for i, e in enumerate(events)
    ]
    rows = [(r.session_id, r.seq, r.run_id, r.kind, _dumps(r.data), r.at) for r in records]
    if len(rows) == 1:
        tx.execute(_INSERT_EVENT, rows[0])
    else:
        tx.executemany(_INSERT_EVENT, rows)
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
        params.append(_dumps(update.error))
    if update.steps is not None:
        sets.append("steps = ?")
        params.append(update.steps)
    if update.usage is not None:
        sets.append("usage = ?")
        params.append(_dumps(update.usage))
    if update.started:
        sets.append("started_at = ?")
        params.append(now)
    if update.finished:
        sets.append("finished_at = ?")
        params.append(now)
    return sets, params


def _update_run(tx: Tx, run_id: str, update: RunUpdate, now: float) -> None:
    sets, params = _run_sets(update, now)
    if sets:
        tx.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*params, run_id))


_AHEAD = (
    "NOT EXISTS (SELECT 1 FROM runs o WHERE o.session_id = runs.session_id "
    f"AND o.id <> runs.id AND o.status IN {_ACTIVE} AND (o.status <> 'queued' "
    "OR o.queued_seq < runs.queued_seq))"
)


def _leased_update(tx: Tx, run_id: str, update: RunUpdate | None, lease: Lease,
                   now: float) -> None:
    """Update a run under its lease (see :class:`Lease`); raise LeaseLost if not held."""
    sets, params = _run_sets(update, now)
    sets.append("lease_expires_at = ?")
    params.append(0.0 if lease.release else now + lease.ttl)
    if lease.acquire:
        sets.append("lease_owner = ?")
        params.append(lease.owner)
        where = (f"id = ? AND status IN {_ACTIVE} AND (lease_owner IS NULL OR lease_owner = ? "
                 "OR lease_expires_at < ?)" + (f" AND {_AHEAD}" if lease.head else ""))
        params.extend((run_id, lease.owner, now))
    else:
        where = "id = ? AND lease_owner = ?"
        params.extend((run_id, lease.owner))
    tx.execute(f"UPDATE runs SET {', '.join(sets)} WHERE {where}", params)
    if tx.rowcount == 0:
        raise LeaseLost(run_id)


def _new_checkpoint(tx: Tx, session_id: str, name: str | None, kind: str, now: float
                    ) -> tuple[CheckpointRecord, EventRecord]:
    """Log a ``checkpoint`` event and record it: the checkpoint is the state at its seq."""
    checkpoint_id = new_id("c")
    event = _append(tx, session_id, [NewEvent(kind="checkpoint", data={
        "id": checkpoint_id, "name": name, "kind": kind})], now)[0]
    tx.execute(f"INSERT INTO checkpoints ({_CHECKPOINT_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
               (checkpoint_id, session_id, event.seq, name, kind, now))
    tx.execute("UPDATE sessions SET checkpoint_seq = ?, checkpoint_at = ? WHERE id = ?",
               (event.seq, now, session_id))
    return CheckpointRecord(id=checkpoint_id, session_id=session_id, seq=event.seq,
                            name=name, kind=kind, created_at=now), event


def _target_seq(tx: Tx, session_id: str, last_seq: int, seq: int | None,
                checkpoint: str | None) -> tuple[int, str | None]:
    """Resolve a restore or fork target (a checkpoint id or name, or a seq) to a seq."""
    if checkpoint is not None:
        row = tx.one("SELECT id, seq FROM checkpoints WHERE session_id = ? AND "
                     "(id = ? OR name = ?) ORDER BY id = ? DESC LIMIT 1",
                     (session_id, checkpoint, checkpoint, checkpoint))
        if row is None:
            raise CheckpointNotFound(f"checkpoint {checkpoint!r} not found in this session")
        return int(row[1]), str(row[0])
    assert seq is not None
    if not 0 <= seq <= last_seq:
        raise InvalidInput(f"seq {seq} is not in this session's log (0 to {last_seq})",
                           field="body.seq")
    return seq, None


class Store:
    """Agents, sessions, runs and the per-session event log on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect

    async def open(self) -> None:
        await self.engine.start()
        await self.engine.write(self._migrate)

    async def close(self) -> None:
        await self.engine.close()

    def _migrate(self, tx: Tx) -> list[int]:
        if self.engine.dialect == "postgresql":
            # Several nodes may start at once: one migrates, the others wait.
            tx.execute("SELECT pg_advisory_xact_lock(872100)")
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            f"version {self.engine.types['bigint']} PRIMARY KEY, "
            f"name {self.engine.types['text']} NOT NULL, "
            f"applied_at {self.engine.types['real']} NOT NULL)"
        )
        done = {int(r[0]) for r in tx.all("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            self.engine.run_script(tx, sql.format(**self.engine.types))
            tx.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                       "VALUES (?, ?, ?)", (version, name, time.time()))
            applied.append(version)
            log.info("applied migration %d: %s", version, name)
        return applied

    async def schema_version(self) -> int:
        row = await self.engine.read(
            lambda tx: tx.one("SELECT MAX(version) FROM schema_migrations"))
        return int(row[0]) if row and row[0] is not None else 0

    # -- agents --------------------------------------------------------------------

    async def create_agent(self, *, name: str, model: str, instructions: str,
                           tools: list[str], settings: dict[str, Any]) -> AgentRecord:
        now = time.time()
        record = AgentRecord(id=new_id("a"), name=name, model=model,
                             instructions=instructions, tools=tools, settings=settings,
                             state="created", created_at=now, updated_at=now)

        def op(tx: Tx) -> None:
            tx.execute(
                f"INSERT INTO agents ({_AGENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, name, model, instructions, _dumps(tools), _dumps(settings),
                 record.state, now, now),
            )

        try:
            await self.engine.write(op)
        except Exception as exc:
            if self.engine.is_unique_violation(exc):
                raise AgentExists(f"agent {name!r} already exists") from None
            raise
        return record

    async def get_agent(self, name: str, *, by: str = "name") -> AgentRecord:
        """An agent by name (or, with ``by="id"``, by id)."""
        column = {"name": "name", "id": "id"}[by]
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_AGENT_COLS} FROM agents WHERE {column} = ?", (name,)))
        if row is None:
            raise AgentNotFound(f"agent {name!r} not found")
        return _agent(row)

    async def list_agents(self) -> list[AgentRecord]:
        rows = await self.engine.read(
            lambda tx: tx.all(f"SELECT {_AGENT_COLS} FROM agents ORDER BY name"))
        return [_agent(r) for r in rows]

    async def update_agent(self, name: str, fields: dict[str, Any]) -> AgentRecord:
        allowed = {"model", "instructions", "tools", "settings", "state"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update agent fields {sorted(unknown)}")
        now = time.time()

        def op(tx: Tx) -> tuple[Any, ...] | None:
            sets = ["updated_at = ?"]
            params: list[Any] = [now]
            for key, value in fields.items():
                sets.append(f"{key} = ?")
                params.append(_dumps(value) if key in ("tools", "settings") else value)
            tx.execute(f"UPDATE agents SET {', '.join(sets)} WHERE name = ?", (*params, name))
            return tx.one(f"SELECT {_AGENT_COLS} FROM agents WHERE name = ?", (name,))

        row = await self.engine.write(op)
        if row is None:
            raise AgentNotFound(f"agent {name!r} not found")
        return _agent(row)

    async def set_agent_state(self, name: str, state: AgentState) -> AgentRecord:
        return await self.update_agent(name, {"state": state})

    async def delete_agent(self, name: str) -> None:
        def op(tx: Tx) -> int:
            tx.execute("DELETE FROM agents WHERE name = ?", (name,))
            return tx.rowcount

        if await self.engine.write(op) == 0:
            raise AgentNotFound(f"agent {name!r} not found")

    async def sandbox_uid(self, agent_id: str, *, base: int, count: int) -> int:
        """The agent's sandbox uid, given now from ``base``.. if it has none yet
        (Conflict ``sandbox_uids_exhausted`` when the range is used up)."""
        have = await self.engine.read(lambda tx: _uids.lookup(tx, agent_id))
        if have is not None:
            return have
        return await self.engine.write(lambda tx: _uids.assign(
            tx, agent_id, base=base, count=count, dialect=self.engine.dialect))

    # -- sessions ------------------------------------------------------------------

    async def list_sessions(self, agent_id: str) -> list[SessionRecord]:
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE agent_id = ? ORDER BY updated_at DESC",
            (agent_id,)))
        return [_session(r) for r in rows]

    async def set_session_policy(self, session_id: str, policy: dict[str, Any] | None
                                 ) -> None:
        """Set (or with None clear) a session's own policy layer."""
        await self.engine.write(lambda tx: tx.execute(
            "UPDATE sessions SET policy = ? WHERE id = ?",
            (None if policy is None else _dumps(policy), session_id)))

    async def snapshot_refs(self) -> set[str]:
        """Every workspace snapshot some session's log refers to (a scan of the
        ``workspace.snapshot`` events: run rarely)."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT data FROM events WHERE kind = 'workspace.snapshot'"))
        return {str(ref) for (data,) in rows
                if (ref := orjson.loads(data).get("ref")) is not None}

    async def pending_approvals(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Undecided approval requests (see :mod:`agentd.store._approvals`)."""
        return await self.engine.read(lambda tx: _approvals.pending(tx, agent))

    async def get_session(self, agent_id: str, key: str) -> SessionRecord:
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE agent_id = ? AND key = ?",
            (agent_id, key)))
        if row is None:
            raise SessionNotFound(f"session {key!r} not found")
        return _session(row)

    async def delete_session(self, agent_id: str, key: str) -> None:
        def op(tx: Tx) -> int:
            tx.execute("DELETE FROM sessions WHERE agent_id = ? AND key = ?", (agent_id, key))
            return tx.rowcount

        if await self.engine.write(op) == 0:
            raise SessionNotFound(f"session {key!r} not found")

    # -- messages, runs and events --------------------------------------------------------

    async def accept_message(self, *, agent_id: str, key: str, content: str,
                             idempotency_key: str | None = None, mode: str = "enqueue",
                             priority: str = "background") -> Accepted:
        """Create the session if needed, queue a run and log the user's message: one commit.

        With an ``idempotency_key`` already used in this session, nothing is written
        and the earlier run is returned (``duplicate=True``). When the session is busy
        (a run queued or running), ``mode`` decides, inside the same transaction:
        ``reject`` raises :class:`SessionBusy` and writes nothing; ``steer`` logs the
        message into the busy run (the running one, else the first queued) instead of
        queueing a new one; ``enqueue`` and
        ``interrupt`` queue it (the caller cancels the busy run for ``interrupt``).
        A new run records ``priority`` (the caller validates it).
        """
        now = time.time()
        run_id = new_id("r")

        def op(tx: Tx) -> Accepted:
            created = False
            row = tx.one(f"SELECT {_SESSION_COLS} FROM sessions WHERE agent_id = ? AND key = ?",
                         (agent_id, key))
            if row is None:
                tx.execute(
                    f"INSERT INTO sessions ({_SESSION_NEW}) VALUES (?, ?, ?, 0, ?, ?, 0, ?) "
                    "ON CONFLICT (agent_id, key) DO NOTHING",
                    (new_id("s"), agent_id, key, now, now, now),
                )
                row = tx.one(
                    f"SELECT {_SESSION_COLS} FROM sessions WHERE agent_id = ? AND key = ?",
                    (agent_id, key))
                assert row is not None
                created = True
            session = _session(row)
            if idempotency_key is not None:
                prior = tx.one(f"SELECT {_RUN_COLS} FROM runs WHERE session_id = ? "
                               "AND idempotency_key = ? AND idempotency_key IS NOT NULL",
                               (session.id, idempotency_key))
                if prior is not None:
                    return Accepted(session=session, run=_run(prior), events=[],
                                    created_session=False, duplicate=True)
            busy: tuple[Any, ...] | None = None
            if mode != "enqueue" and not created:
                active = tx.all(f"SELECT {_RUN_COLS} FROM runs WHERE session_id = ? AND "
                                f"status IN {_ACTIVE} ORDER BY queued_seq", (session.id,))
                # The run under way, else the first queued.
                busy = next((r for r in active if r[3] != "queued"), None) or (
                    active[0] if active else None)
            if busy is not None and mode == "reject":
                raise SessionBusy(f"session {key!r} is busy with run {busy[0]}",
                                  details={"active_run": busy[0]})
            if busy is not None and mode == "steer":
                events = _append(tx, session.id, [NewEvent(
                    kind="message.user", run_id=busy[0],
                    data={"content": content, "steer": True})], now)
                session.last_seq, session.updated_at = events[-1].seq, now
                return Accepted(session=session, run=_run(busy), events=events,
                                created_session=False, steered=True, busy_run=busy[0])
            # The events first: their seqs (taken under the session's row lock) give
            # the run its place in the session's queue.
            events = _append(tx, session.id, [
                NewEvent(kind="message.user", run_id=run_id, data={"content": content}),
                NewEvent(kind="run.queued", run_id=run_id, data={}),
            ], now)
            run = RunRecord(id=run_id, session_id=session.id, agent_id=agent_id,
                            status="queued", input=content, idempotency_key=idempotency_key,
                            created_at=now, queued_seq=events[-1].seq, priority=priority)
            tx.execute(
                f"INSERT INTO runs ({_RUN_COLS}) VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, '{{}}', "
                "?, ?, NULL, NULL, NULL, NULL, ?, ?)",
                (run.id, session.id, agent_id, "queued", content, idempotency_key, now,
                 run.queued_seq, priority),
            )
            session.last_seq = events[-1].seq
            session.updated_at = now
            return Accepted(session=session, run=run, events=events, created_session=created,
                            busy_run=busy[0] if busy is not None else None)

        return await self.engine.write(op)

    def append(self, session_id: str, events: Sequence[NewEvent], *,
               run_id: str | None = None, run: RunUpdate | None = None,
               unless_steered_after: int | None = None, lease: Lease | None = None,
               checkpoint_every: float | None = None, usage: UsageCharge | None = None
               ) -> asyncio.Future[list[EventRecord]]:
        """Append events (and optionally update a run) in one transaction.

        With ``unless_steered_after``, nothing is written and :class:`Steered` is
        raised if a user message was steered into ``run_id`` after that seq. With a
        ``lease``, nothing is written and :class:`LeaseLost` is raised unless the
        lease is (or, with ``acquire``, can be) held; see :class:`Lease`. With
        ``checkpoint_every`` (seconds), an automatic checkpoint follows the events
        when the session's last one is at least that old. With ``usage``, the step's
        model usage is added to the usage ledger (its UTC day is the events' commit
        time), so it is recorded exactly when the step is. Returns the engine's
        future: the write goes ahead even if its waiter is cancelled."""
        now = time.time()

        def op(tx: Tx) -> list[EventRecord]:
            if unless_steered_after is not None and tx.one(
                    "SELECT seq FROM events WHERE session_id = ? AND seq > ? AND run_id = ? "
                    "AND kind = 'message.user' LIMIT 1",
                    (session_id, unless_steered_after, run_id)) is not None:
                raise Steered(run_id or "")
            # Events first: appending locks the session's row (on PostgreSQL), which
            # serialises lease checks within a session.
            last_checkpoint: list[float] | None = [] if checkpoint_every is not None else None
            records = (_append(tx, session_id, events, now, last_checkpoint) if events
                       else [])
            if lease is not None and run_id is not None:
                _leased_update(tx, run_id, run, lease, now)
            elif run is not None and run_id is not None:
                _update_run(tx, run_id, run, now)
            if usage is not None:
                _usage.charge(tx, usage, now)
            if (checkpoint_every is not None and last_checkpoint
                    and now - last_checkpoint[0] >= checkpoint_every):
                records.append(_new_checkpoint(tx, session_id, None, "auto", now)[1])
            return records

        return self.engine.write(op)

    async def read_events(self, session_id: str, *, after: int = 0, limit: int | None = None
                          ) -> list[EventRecord]:
        sql = f"SELECT {_EVENT_COLS} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq"
        params: tuple[Any, ...] = (session_id, after)
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, limit)
        rows = await self.engine.read(lambda tx: tx.all(sql, params))
        return [_event(r) for r in rows]

    async def get_run(self, run_id: str) -> RunRecord:
        row = await self.engine.read(
            lambda tx: tx.one(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,)))
        if row is None:
            raise RunNotFound(f"run {run_id!r} not found")
        return _run(row)

    async def run_context(self, run_id: str) -> tuple[RunRecord, str, str]:
        """A run with its agent's name and its session's key."""
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {', '.join('r.' + c.strip() for c in _RUN_COLS.split(','))}, a.name, s.key "
            "FROM runs r JOIN agents a ON a.id = r.agent_id JOIN sessions s ON s.id = r.session_id "
            "WHERE r.id = ?", (run_id,)))
        if row is None:
            raise RunNotFound(f"run {run_id!r} not found")
        return _run(row[:-2]), row[-2], row[-1]

    async def runs_with_status(self, statuses: Sequence[str], *, agent_id: str | None = None
                               ) -> list[RunRecord]:
        """Active runs (``queued``, ``running``, ``waiting_approval``), oldest first."""
        if not statuses or not set(statuses) <= {"queued", "running", "waiting_approval"}:
            raise ValueError("only active runs can be listed by status")
        # Literal values, and the partial index's own condition term for term, so both
        # planners use runs_session_active (it holds active runs only).
        literal = ", ".join(f"'{s}'" for s in sorted(set(statuses)))
        where = (f"status IN {_ACTIVE} AND status IN ({literal})"
                 + (" AND agent_id = ?" if agent_id else ""))
        params = (agent_id,) if agent_id else ()
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_RUN_COLS} FROM runs WHERE {where} ORDER BY created_at, id", params))
        return [_run(r) for r in rows]

    async def list_runs(self, **filters: Any) -> _runs_query.RunPage:
        """A page of runs, newest first: see :func:`agentd.store._runs_query.list_runs`."""
        return await self.engine.read(lambda tx: _runs_query.list_runs(tx, **filters))

    async def session_names(self, session_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Sessions' agent names and keys by id: :func:`_runs_query.session_names`."""
        return await self.engine.read(lambda tx: _runs_query.session_names(tx, session_ids))

    # -- usage ------------------------------------------------------------------------

    async def usage_report(self, *, group_by: Sequence[str] = (), since: str | None = None,
                           until: str | None = None, agent: str | None = None,
                           tenant: str | None = None) -> list[dict[str, Any]]:
        """Sums of ``calls``, ``input_tokens``, ``output_tokens``, ``cached_tokens`` and
        ``cost_usd`` from the usage ledger, one row per group (``USAGE_GROUPS``:
        agent name, tenant, model, day, month ``YYYY-MM``), ordered by the groups;
        with no groups, one row of totals (zeros when there is nothing). ``since``
        and ``until`` are inclusive ``YYYY-MM-DD`` UTC days; ``agent`` is a name
        (deleted agents keep their history)."""
        return await self.engine.read(lambda tx: _usage.report(
            tx, group_by, since, until, agent, tenant))

    async def usage_total(self, *, since: str, agent_id: str | None = None,
                          tenant: str | None = None) -> tuple[int, float]:
        """Tokens (input + output) and cost in USD since day ``since`` (``YYYY-MM-DD``,
        inclusive), for an agent (by id), a tenant or everything: for budget checks."""
        return await self.engine.read(lambda tx: _usage.total(tx, since, agent_id, tenant))

    async def count(self, table: str) -> int:
        if table not in {"agents", "sessions", "runs", "events"}:
            raise ValueError(table)
        row = await self.engine.read(lambda tx: tx.one(f"SELECT COUNT(*) FROM {table}"))
        return int(row[0]) if row else 0

    # -- leases ------------------------------------------------------------------------

    async def renew_leases(self, owner: str, ttl: float) -> dict[str, str | None]:
        """Extend every lease ``owner`` holds on an active run. Returns the ids renewed,
        each with the reason of a cancel asked for on another node (or None)."""
        def op(tx: Tx) -> dict[str, str | None]:
            rows = tx.all(f"UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? AND "
                          f"status IN {_ACTIVE} RETURNING id, cancel_requested",
                          (time.time() + ttl, owner))
            return {str(r[0]): r[1] for r in rows}

        return await self.engine.write(op)

    async def request_cancel(self, run_id: str, reason: str) -> None:
        """Ask the node driving a run to cancel it (it sees this when it renews)."""
        def op(tx: Tx) -> None:
            tx.execute(f"UPDATE runs SET cancel_requested = ? WHERE id = ? AND status IN "
                       f"{_ACTIVE}", (reason, run_id))

        await self.engine.write(op)

    async def decide_unheld(self, run_id: str, data: dict[str, Any]) -> EventRecord:
        """Log a decision about a run waiting on another node (or on none): the run
        goes back to ``running`` with its lease ended, so the deciding node takes it
        over and resumes it with the decision; the old holder loses it at its next
        renewal. ``data`` is the decision without its effect id. Raises Conflict
        (``not_waiting``) unless the run waits on a request not yet decided."""
        now = time.time()

        def op(tx: Tx) -> EventRecord:
            row = tx.one("SELECT session_id, status FROM runs WHERE id = ?", (run_id,))
            if row is None:
                raise RunNotFound(f"run {run_id!r} not found")
            session_id, status = str(row[0]), str(row[1])
            asks = tx.all("SELECT seq, kind, data FROM events WHERE session_id = ? AND "
                          "run_id = ? AND kind IN ('approval.requested', 'approval.decided') "
                          "ORDER BY seq DESC LIMIT 1", (session_id, run_id))
            if status != "waiting_approval" or not asks or asks[0][1] != "approval.requested":
                raise Conflict(f"run {run_id} is {status}, not waiting for a decision",
                               code="not_waiting")
            asked = orjson.loads(asks[0][2])
            event = _append(tx, session_id, [NewEvent(
                kind="approval.decided", run_id=run_id,
                data={"approval_id": asked.get("approval_id"),
                      "effect_id": asked["effect_id"], **data})], now)[0]
            tx.execute("UPDATE runs SET status = 'running', lease_owner = NULL, "
                       "lease_expires_at = 0 WHERE id = ?", (run_id,))
            return event

        return await self.engine.write(op)

    async def release_leases(self, *, except_owner: str) -> int:
        """End every other node's lease on an active run at once (only for a store this
        daemon has to itself)."""
        def op(tx: Tx) -> int:
            tx.execute(f"UPDATE runs SET lease_expires_at = 0 WHERE status IN {_ACTIVE} "
                       "AND lease_owner <> ?", (except_owner,))
            return tx.rowcount

        return await self.engine.write(op)

    async def orphaned_runs(self, owner: str, *, queued_before: float) -> list[RunRecord]:
        """Runs no live node drives, in the order to take them over: runs under way
        whose lease expired (or is ``owner``'s own, from before a restart), then runs
        queued before ``queued_before`` in sessions where nothing is under way."""
        now = time.time()

        def op(tx: Tx) -> list[tuple[Any, ...]]:
            # "status IN _ACTIVE" repeated so that SQLite may use the partial indexes.
            return tx.all(
                f"SELECT {_RUN_COLS} FROM runs WHERE status IN {_ACTIVE} AND status <> "
                "'queued' AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < ?) "
                "ORDER BY created_at, id", (owner, now)) + tx.all(
                f"SELECT {_RUN_COLS} FROM runs WHERE status IN {_ACTIVE} AND status = 'queued' "
                "AND created_at < ? AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.session_id = "
                f"runs.session_id AND o.status IN {_ACTIVE} AND o.status <> 'queued' "
                "AND o.lease_owner <> ? AND o.lease_expires_at >= ?) "
                "ORDER BY created_at, queued_seq", (queued_before, owner, now))

        return [_run(r) for r in await self.engine.read(op)]

    async def next_queued(self, session_id: str) -> RunRecord | None:
        """The session's oldest queued run (whoever accepted it), unless a run of the
        session is under way: then its node starts the next one when it ends."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_RUN_COLS} FROM runs WHERE session_id = ? AND status IN {_ACTIVE} "
            "ORDER BY queued_seq", (session_id,)))
        runs = [_run(r) for r in rows]
        if any(r.status != "queued" for r in runs):
            return None
        return runs[0] if runs else None

    # -- checkpoints, restore, fork --------------------------------------------------------

    async def create_checkpoint(self, session_id: str, *, name: str | None = None,
                                kind: str = "manual"
                                ) -> tuple[CheckpointRecord, EventRecord]:
        now = time.time()
        try:
            return await self.engine.write(
                lambda tx: _new_checkpoint(tx, session_id, name, kind, now))
        except Exception as exc:
            if self.engine.is_unique_violation(exc):
                raise CheckpointExists(
                    f"this session already has a checkpoint named {name!r}") from None
            raise

    async def checkpoint_changed(self, kind: str, *, agent_id: str | None = None
                                 ) -> list[EventRecord]:
        """Checkpoint every session (of ``agent_id``, or all) changed since its last
        checkpoint; one transaction. Returns the checkpoint events."""
        now = time.time()

        def op(tx: Tx) -> list[EventRecord]:
            where = "last_seq > checkpoint_seq" + (" AND agent_id = ?" if agent_id else "")
            rows = tx.all(f"SELECT id FROM sessions WHERE {where}",
                          (agent_id,) if agent_id else ())
            return [_new_checkpoint(tx, str(r[0]), None, kind, now)[1] for r in rows]

        return await self.engine.write(op)

    async def list_checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_CHECKPOINT_COLS} FROM checkpoints WHERE session_id = ? ORDER BY seq",
            (session_id,)))
        return [_checkpoint(r) for r in rows]

    async def get_checkpoint(self, checkpoint_id: str
                             ) -> tuple[CheckpointRecord, str, SessionRecord]:
        """A checkpoint with its agent's name and its session."""
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {', '.join('c.' + c.strip() for c in _CHECKPOINT_COLS.split(','))}, "
            f"a.name, {', '.join('s.' + c.strip() for c in _SESSION_COLS.split(','))} "
            "FROM checkpoints c JOIN sessions s ON s.id = c.session_id "
            "JOIN agents a ON a.id = s.agent_id WHERE c.id = ?", (checkpoint_id,)))
        if row is None:
            raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} not found")
        return _checkpoint(row[:6]), str(row[6]), _session(row[7:])

    async def restore_session(self, session_id: str, *, seq: int | None = None,
                              checkpoint: str | None = None) -> EventRecord:
        """Set a session back to a checkpoint (id or name) or a seq: one
        ``session.restored`` event. The events after the target stay in the log (its
        archive) but leave the session's state (see :func:`live_events`). Refused
        (:class:`SessionBusy`) while the session has a run queued or under way."""
        now = time.time()

        def op(tx: Tx) -> EventRecord:
            row = tx.one("SELECT last_seq FROM sessions WHERE id = ?", (session_id,))
            if row is None:
                raise SessionNotFound(f"session {session_id} does not exist")
            last_seq = int(row[0])
            to_seq, checkpoint_id = _target_seq(tx, session_id, last_seq, seq, checkpoint)
            data = {"to_seq": to_seq, "checkpoint": checkpoint_id,
                    "archived": {"from_seq": to_seq + 1, "to_seq": last_seq}}
            # Append first (it locks the session's row), then look for active runs: a
            # message accepted concurrently is either seen here or comes after.
            event = _append(tx, session_id, [NewEvent(kind="session.restored", data=data)],
                            now)[0]
            busy = tx.one(f"SELECT id FROM runs WHERE session_id = ? AND status IN {_ACTIVE} "
                          "LIMIT 1", (session_id,))
            if busy is not None:
                raise SessionBusy(f"the session has run {busy[0]} queued or under way; "
                                  "cancel it or wait for it before restoring",
                                  details={"active_run": busy[0]})
            return event

        return await self.engine.write(op)

    async def fork_session(self, session_id: str, *, key: str, seq: int | None = None,
                           checkpoint: str | None = None, source: dict[str, Any]
                           ) -> SessionRecord:
        """A new session of the same agent, holding the state of ``session_id`` at a
        checkpoint or seq: its live events copied (renumbered from 1), then a
        ``session.forked`` event naming the source (``source`` plus the seq)."""
        now = time.time()
        new_session_id = new_id("s")

        def op(tx: Tx) -> SessionRecord:
            row = tx.one(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?", (session_id,))
            if row is None:
                raise SessionNotFound("the session to fork does not exist (deleted?)")
            origin = _session(row)
            to_seq, checkpoint_id = _target_seq(tx, session_id, origin.last_seq, seq,
                                                checkpoint)
            copied = [e for e in live_events([_event(r) for r in tx.all(
                f"SELECT {_EVENT_COLS} FROM events WHERE session_id = ? AND seq <= ? "
                "ORDER BY seq", (session_id, to_seq))])
                if e.kind not in ("session.restored", "checkpoint")]
            tx.execute(
                f"INSERT INTO sessions ({_SESSION_NEW}) VALUES (?, ?, ?, 0, ?, ?, 0, ?) "
                "ON CONFLICT (agent_id, key) DO NOTHING",
                (new_session_id, origin.agent_id, key, now, now, now))
            if tx.rowcount == 0:
                raise SessionExists(f"session {key!r} already exists")
            tx.execute("UPDATE sessions SET policy = ? WHERE id = ?",
                       (None if origin.policy is None else _dumps(origin.policy),
                        new_session_id))
            if copied:
                tx.executemany(_INSERT_EVENT, [
                    (new_session_id, i, e.run_id, e.kind, _dumps(e.data), e.at)
                    for i, e in enumerate(copied, start=1)])
                tx.execute("UPDATE sessions SET last_seq = ? WHERE id = ?",
                           (len(copied), new_session_id))
            _append(tx, new_session_id, [NewEvent(kind="session.forked", data={
                **source, "seq": to_seq, "checkpoint": checkpoint_id,
                "copied_events": len(copied)})], now)
            created = tx.one(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?",
                             (new_session_id,))
            assert created is not None
            return _session(created)

        return await self.engine.write(op)

    async def expire_sessions(self, idle_before: float) -> list[tuple[str, str, str]]:
        """Delete sessions untouched since ``idle_before`` with nothing queued or under
        way; returns (session id, agent id, key) of each."""
        def op(tx: Tx) -> list[tuple[str, str, str]]:
            rows = tx.all(
                "DELETE FROM sessions WHERE updated_at < ? AND NOT EXISTS (SELECT 1 FROM runs "
                f"WHERE runs.session_id = sessions.id AND runs.status IN {_ACTIVE}) "
                "RETURNING id, agent_id, key", (idle_before,))
            return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

        return await self.engine.write(op)
