"""The store: the only place agentd state lives. One class, any engine.

Every method is one transaction. Events get their ``seq`` inside the transaction
that writes them (``UPDATE sessions SET last_seq = last_seq + n ... RETURNING``),
so ``seq`` is dense per session and an event is acknowledged once that transaction
has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from agentd.clock import SYSTEM, Clock
from agentd.errors import (
    AgentExists,
    AgentNotFound,
    Conflict,
    NotFound,
    RunNotFound,
    SessionNotFound,
    StoreError,
)
from agentd.events import parse
from agentd.store import (
    _approvals,
    _uids,
    _usage,
)
from agentd.store import (
    agents_query as _agents_query,
)
from agentd.store import (
    audit as _audit,
)
from agentd.store import (
    blobs as _blobs,
)
from agentd.store import (
    blocks as _blocks,
)
from agentd.store import (
    entries as _entries,
)
from agentd.store import (
    quota as _quota,
)
from agentd.store import (
    rows as _rows,
)
from agentd.store import (
    runs_query as _runs_query,
)
from agentd.store import (
    sessions_query as _sessions_query,
)
from agentd.store._accept_many import AlsoMany, accept_many
from agentd.store._blob_store import BlobStore
from agentd.store._checkpoint_store import CheckpointStore
from agentd.store._entry_store import EntryStore
from agentd.store._fork_store import ForkStore
from agentd.store._identity import IdentityStore
from agentd.store._lease_store import LeaseStore
from agentd.store._node_store import NodeStore
from agentd.store._revisions import RevisionStore, note_revision
from agentd.store._schedule_store import ScheduleStore
from agentd.store._schema import MIGRATIONS, STEPS
from agentd.store._sessions import new_checkpoint
from agentd.store._snapshot_store import SnapshotRowStore, note_heads
from agentd.store._subtask_store import SubtaskStore
from agentd.store._trace_store import TraceStore
from agentd.store.audit import AuditEntry
from agentd.store.engine import Engine, Tx
from agentd.store.evals import EvalStore
from agentd.store.heartbeats import HeartbeatStore
from agentd.store.limits import LimitStore
from agentd.store.log import (
    Accepted,
    Lease,
    LeaseLost,
    RunMoved,
    RunUpdate,
    Steered,
    ToAccept,
    accept,
    append,
    leased_update,
    update_run,
)
from agentd.store.quota import Quota
from agentd.store.records import (
    AgentChange,
    AgentRecord,
    AgentState,
    EventRecord,
    NewEvent,
    RunRecord,
    SessionRecord,
    UsageCharge,
    agent_change_kind,
    tenant_of,
)
from agentd.store.rows import (
    AGENT_COLS,
    EVENT_COLS,
    RUN_COLS,
    SESSION_COLS,
    active,
    new_id,
)
from agentd.store.webhooks import WebhookStore
from agentd.version import __version__

__all__ = ["Accepted", "Lease", "LeaseLost", "RunMoved", "RunUpdate", "Steered", "Store",
           "new_id"]

log = logging.getLogger(__name__)

_agent, _session, _run, _checkpoint, _event = (
    _rows.agent, _rows.session, _rows.run, _rows.checkpoint, _rows.event)
_dumps = _rows.dumps


class Store(LeaseStore, NodeStore, CheckpointStore, EntryStore, SubtaskStore, ScheduleStore,
            HeartbeatStore, WebhookStore, IdentityStore, TraceStore, SnapshotRowStore,
            LimitStore, RevisionStore, BlobStore, ForkStore, EvalStore):
    """Agents, sessions, runs and the per-session event log on one engine; the rest
    from mixins: leases (:class:`LeaseStore`), nodes gone (:class:`NodeStore`),
    checkpoints (:class:`CheckpointStore`), memory entries (:class:`EntryStore`),
    subtasks (:class:`SubtaskStore`), schedules, heartbeats, webhooks, identity, traces
    (:class:`TraceStore`), workspace snapshots (:class:`SnapshotRowStore`) and the
    cluster's shared rate limits (:class:`LimitStore`), agents' revisions
    (:class:`RevisionStore`), the bytes of images and files (:class:`BlobStore`),
    forks (:class:`ForkStore`), evaluations (:class:`EvalStore`)."""

    def __init__(self, engine: Engine, clock: Clock = SYSTEM) -> None:
        self.engine = engine
        #: What "now" is in what the store writes (created, expires, due...): tests
        #: give an :class:`agentd.testing.FakeClock`.
        self.clock = clock
        #: Names this process in the agent changes it announces to the processes
        #: sharing the database (which already published them here: skip its own).
        self.origin = new_id("o")
        #: The SQLite writer's view of sessions' last seqs and checkpoints, which
        #: spares a turn's second commit its read of them (see :func:`log.append`);
        #: None on PostgreSQL, whose nodes share the rows.
        self._known: dict[str, tuple[int, float]] | None = (
            {} if engine.dialect == "sqlite" else None)

    def _announce(self, tx: Tx, change: AgentChange) -> None:
        """Announce a change to an agent inside the transaction that makes it: other
        nodes hear of it once committed, never if it is rolled back."""
        if self.engine.shared:
            self.engine.announce_agent(tx, change.to_note(self.origin))

    @property
    def dialect(self) -> str:
        return self.engine.dialect

    @property
    def synchronous(self) -> str:
        """The durability level commits are acknowledged at (the engine's)."""
        return self.engine.synchronous

    async def open(self) -> None:
        await self.engine.start()
        try:
            await self.engine.write(self._migrate)
        except BaseException:
            await self.engine.close()  # (a refused database: nothing left open)
            raise

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
        known = MIGRATIONS[-1][0]
        if done and max(done) > known:
            # A newer agentd migrated this database: this one would read and write
            # tables it does not know the shape of. Nothing is changed.
            newest = tx.one("SELECT version, name FROM schema_migrations ORDER BY version "
                            "DESC LIMIT 1")
            raise StoreError(
                f"the database's schema is at version {max(done)} ({newest[1] if newest else '?'}"
                f"), newer than this agentd {__version__} knows (up to version {known}): "
                f"it needs an agentd that knows schema version {max(done)} (the version "
                "that migrated it, or later); nothing was changed",
                code="schema_too_new", details={"schema_version": max(done),
                                                "known_version": known})
        applied = []
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            script = sql if isinstance(sql, str) else sql[self.engine.dialect]
            self.engine.run_script(tx, script.format(**self.engine.types))
            step = STEPS.get(version)
            if step is not None:
                step(tx, self.engine.dialect)
            tx.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                       "VALUES (?, ?, ?)", (version, name, self.clock.time()))
            applied.append(version)
            log.info("applied migration %d: %s", version, name)
        return applied

    async def schema_version(self) -> int:
        row = await self.engine.read(
            lambda tx: tx.one("SELECT MAX(version) FROM schema_migrations"))
        return int(row[0]) if row and row[0] is not None else 0

    # -- agents --------------------------------------------------------------------

    async def create_agent(self, *, name: str, model: str, instructions: str,
                           tools: list[str], settings: dict[str, Any],
                           quota: Quota | None = None, audit: AuditEntry | None = None
                           ) -> AgentRecord:
        """Store a new agent (``quota``: its tenant's limit on agents, checked in the
        same transaction; ``audit``: recorded in it)."""
        now = self.clock.time()
        record = AgentRecord(id=new_id("a"), name=name, model=model,
                             instructions=instructions, tools=tools, settings=settings,
                             state="created", created_at=now, updated_at=now)

        def op(tx: Tx) -> None:
            tx.execute(
                f"INSERT INTO agents ({AGENT_COLS}, tenant) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, name, model, instructions, _dumps(tools), _dumps(settings),
                 record.state, now, now, tenant_of(settings)),
            )
            _quota.check(tx, quota, self.engine.dialect)
            note_revision(tx, record)
            if audit is not None:
                _audit.append(tx, [audit], dialect=self.engine.dialect)
            self._announce(tx, AgentChange.of("agent.created", record))

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
            f"SELECT {AGENT_COLS} FROM agents WHERE {column} = ?", (name,)))
        if row is None:
            raise AgentNotFound(f"agent {name!r} not found")
        return _agent(row)

    async def list_agents(self) -> list[AgentRecord]:
        rows = await self.engine.read(
            lambda tx: tx.all(f"SELECT {AGENT_COLS} FROM agents ORDER BY name"))
        return [_agent(r) for r in rows]

    async def agent_page(self, **filters: Any) -> _agents_query.AgentPage:
        """Agents by name, filtered, a page at a time: see
        :func:`agentd.store.agents_query.list_agents`."""
        return await self.engine.read(lambda tx: _agents_query.list_agents(tx, **filters))

    async def overview_counts(self) -> dict[str, Any]:
        """Agents by state, active runs by status (every node's) and the store's size
        in bytes, in one read: ``{"agents", "runs", "bytes"}``."""
        dialect, path = self.dialect, getattr(self.engine, "path", None)

        def op(tx: Tx) -> dict[str, Any]:
            return {"agents": _agents_query.agent_state_counts(tx),
                    "runs": _agents_query.active_run_counts(tx),
                    "bytes": _agents_query.store_bytes(tx, dialect, path)}

        return await self.engine.read(op)

    async def active_run_counts(self, agent_ids: Sequence[str]) -> dict[str, int]:
        """Active runs by status of these agents only (a token's scope)."""
        return await self.engine.read(
            lambda tx: _agents_query.active_run_counts(tx, agent_ids))

    async def update_agent(self, name: str, fields: dict[str, Any], *,
                           based_on: float | None = None,
                           quota: Quota | None = None, audit: AuditEntry | None = None
                           ) -> AgentRecord:
        """Change an agent's fields. ``based_on``: the ``updated_at`` of the record the
        change was computed from: a compare-and-set, written only if the agent has
        not changed since (else Conflict ``agent_changed``, retryable: read again).
        ``quota``: the limit on agents of the tenant the settings move it to."""
        allowed = {"model", "instructions", "tools", "settings", "state"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update agent fields {sorted(unknown)}")
        now = self.clock.time()
        # ``updated_at`` grows in the order the changes commit, whatever the clock said
        # when each was made: strictly later than the record it replaces (the next
        # compare-and-set sees the change, and a copy of the record can tell which of
        # two is newer). Two writes made concurrently (on PostgreSQL, on two
        # connections) may commit in the other order than their clocks were read.
        later = "GREATEST" if self.engine.dialect == "postgresql" else "MAX"

        def op(tx: Tx) -> tuple[Any, ...] | None:
            before = None
            if self.engine.shared and "settings" in fields:
                # (the tenant it had: a token scoped to it may see it leave)
                before = tx.one("SELECT settings FROM agents WHERE name = ?", (name,))
            sets = [f"updated_at = {later}(?, updated_at + 0.000001)"]
            params: list[Any] = [now]
            for key, value in fields.items():
                sets.append(f"{key} = ?")
                params.append(_dumps(value) if key in ("tools", "settings") else value)
            if "settings" in fields:
                sets.append("tenant = ?")
                params.append(tenant_of(fields["settings"]))
            where, match = "name = ?", list[Any]([name])
            if based_on is not None:
                where, match = "name = ? AND updated_at = ?", [name, based_on]
            tx.execute(f"UPDATE agents SET {', '.join(sets)} WHERE {where}",
                       (*params, *match))
            if based_on is not None and tx.rowcount != 1:
                exists = tx.one("SELECT 1 FROM agents WHERE name = ?", (name,))
                if exists is not None:
                    raise Conflict(f"agent {name!r} changed meanwhile; try again",
                                   code="agent_changed", retryable=True)
            _quota.check(tx, quota, self.engine.dialect)
            row = tx.one(f"SELECT {AGENT_COLS} FROM agents WHERE name = ?", (name,))
            if row is not None:
                note_revision(tx, _agent(row), fields)
            if row is not None and audit is not None:
                _audit.append(tx, [audit], dialect=self.engine.dialect)
            if row is not None and "settings" in fields:
                _uids.retenant(tx, _agent(row).id, fields["settings"])
            if row is not None and self.engine.shared:
                self._announce(tx, AgentChange.of(
                    agent_change_kind(fields), _agent(row),
                    before=orjson.loads(before[0]) if before is not None else None))
            return row

        row = await self.engine.write(op)
        if row is None:
            raise AgentNotFound(f"agent {name!r} not found")
        return _agent(row)

    async def set_agent_state(self, name: str, state: AgentState) -> AgentRecord:
        return await self.update_agent(name, {"state": state})

    async def delete_agent(self, name: str, *, audit: AuditEntry | None = None
                           ) -> AgentRecord:
        """Delete the agent (its sessions and own secrets go with it); the record as it
        was."""
        def op(tx: Tx) -> AgentRecord | None:
            row = tx.one(f"SELECT {AGENT_COLS} FROM agents WHERE name = ?", (name,))
            if row is None:
                return None
            agent = _agent(row)
            _blocks.forget_agent(tx, agent.id)
            _entries.forget_agent(tx, agent.id, self.engine.dialect)
            _uids.release(tx, agent.id, self.engine.dialect)
            blobs = _blobs.held(tx, "sessions.agent_id = ?", (agent.id,))
            # Its own secrets go with it (agent names are daemon-wide: a new agent of
            # this name, in any tenant, starts without them).
            tx.execute("DELETE FROM secrets WHERE agent = ?", (agent.name,))
            # ... and its MCP servers' logins under way and token locks (its OAuth
            # tokens are among its secrets).
            tx.execute("DELETE FROM oauth_flows WHERE agent = ?", (agent.name,))
            tx.execute("DELETE FROM oauth_locks WHERE agent = ?", (agent.name,))
            tx.execute("DELETE FROM agents WHERE id = ?", (agent.id,))
            _blobs.release(tx, blobs, self.engine.dialect)
            if audit is not None:
                _audit.append(tx, [audit], dialect=self.engine.dialect)
            self._announce(tx, AgentChange.of("agent.deleted", agent, at=self.clock.time()))
            return agent

        agent = await self.engine.write(op)
        if agent is None:
            raise AgentNotFound(f"agent {name!r} not found")
        return agent

    async def sandbox_uid(self, agent_id: str, *, base: int, count: int,
                          node: str | None = None, sealed: bool = True,
                          cap_of: Callable[[str], int | None] | None = None) -> int:
        """The agent's sandbox uid, given now from ``base``.. if it has none yet, within
        its tenant's cap (``cap_of(tenant)``, None: no cap); ``node``: record that this
        node uses it (``sealed``: see :mod:`agentd.store._uids`).

        Raises:
            AgentNotFound: the agent was deleted.
            Conflict: ``quota_exceeded`` (the tenant's cap), ``sandbox_uids_exhausted``
                (the range is used up).
        """
        have = await self.engine.read(lambda tx: _uids.lookup(tx, agent_id, node))
        if have is not None and have[1]:
            return have[0]
        return await self.engine.write(lambda tx: _uids.assign(
            tx, agent_id, base=base, count=count, dialect=self.engine.dialect, node=node,
            sealed=sealed, cap_of=cap_of))

    async def quarantined_uids(self, node: str, *, limit: int = 256
                               ) -> list[tuple[int, str]]:
        """Released sandbox uids ``node`` must sweep: ``(uid, its last agent's id)``."""
        return await self.engine.read(lambda tx: _uids.quarantined(tx, node, limit))

    async def sandbox_uids_swept(self, node: str, uids: Iterable[int]) -> int:
        """``node`` swept these released uids; how many are free now."""
        chosen = list(uids)
        return await self.engine.write(
            lambda tx: _uids.swept(tx, node, chosen, self.engine.dialect))

    # -- memory blocks (agentd.store.blocks) --------------------------------------

    async def list_blocks(self, agent_id: str) -> list[_blocks.BlockRecord]:
        return await self.engine.read(lambda tx: _blocks.list_for(tx, agent_id))

    async def get_block(self, agent_id: str, label: str) -> _blocks.BlockRecord | None:
        return await self.engine.read(lambda tx: _blocks.get(tx, agent_id, label))

    async def write_block(self, agent_id: str, label: str,
                          edit: Callable[[_blocks.BlockRecord], _blocks.BlockChange],
                          who: _blocks.BlockWrite) -> _blocks.BlockRecord:
        """One new version of the block (``edit`` sees it as it is; it runs inside
        the transaction, so it must only compute)."""
        return await self.engine.write(lambda tx: _blocks.write(tx, agent_id, label, edit,
                                                                who))

    async def block_history(self, agent_id: str, label: str) -> list[_blocks.BlockVersion]:
        return await self.engine.read(lambda tx: _blocks.history(tx, agent_id, label))

    async def restore_block(self, agent_id: str, label: str, version: int,
                            who: _blocks.BlockWrite) -> _blocks.BlockRecord:
        """A new version equal to an old one."""
        def op(tx: Tx) -> _blocks.BlockRecord:
            found = _blocks.get(tx, agent_id, label)
            old = None if found is None else _blocks.version_of(tx, found.id, version)
            if found is not None and old is None:
                raise NotFound(f"memory block {label!r} has no version {version}",
                               code="block_version_not_found")
            return _blocks.write(tx, agent_id, label,
                                 lambda _b: old or _blocks.BlockChange(), who)

        return await self.engine.write(op)

    async def attach_block(self, agent_id: str, label: str, other_agent_id: str
                           ) -> _blocks.BlockRecord:
        return await self.engine.write(
            lambda tx: _blocks.attach(tx, agent_id, label, other_agent_id))

    async def delete_block(self, agent_id: str, label: str) -> None:
        await self.engine.write(lambda tx: _blocks.delete(tx, agent_id, label))

    # -- sessions ------------------------------------------------------------------

    async def list_sessions(self, agent_id: str) -> list[SessionRecord]:
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {SESSION_COLS} FROM sessions WHERE agent_id = ? "
            "ORDER BY updated_at DESC, id DESC", (agent_id,)))
        return [_session(r) for r in rows]

    async def session_page(self, agent_id: str, *, limit: int, after: str | None = None,
                           q: str | None = None) -> _sessions_query.SessionPage:
        """An agent's sessions, most recent activity first, a page at a time: see
        :func:`agentd.store.sessions_query.list_sessions`."""
        return await self.engine.read(lambda tx: _sessions_query.list_sessions(
            tx, agent_id, limit=limit, after=after, q=q))

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
        return {str(ref) for (data,) in rows if (ref := parse(
            "workspace.snapshot", orjson.loads(data)).data.get("ref")) is not None}

    async def pending_approvals(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Undecided approval requests (see :mod:`agentd.store._approvals`)."""
        return await self.engine.read(lambda tx: _approvals.pending(tx, agent))

    async def get_session(self, agent_id: str, key: str) -> SessionRecord:
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {SESSION_COLS} FROM sessions WHERE agent_id = ? AND key = ?",
            (agent_id, key)))
        if row is None:
            raise SessionNotFound(f"session {key!r} not found")
        return _session(row)

    def on_new_session(self, check: Callable[[list[str]], None]
                       ) -> Callable[[Tx, Accepted], None]:
        """An ``also`` for :meth:`accept_message`: when the message creates its session,
        ``check`` is called (in the same transaction) with the names of the other
        agents that have a session of the same key, and raises to refuse the message:
        nothing is written. (A door whose sessions are one agent's, checked without a
        read per message, and atomically.)"""

        def also(tx: Tx, accepted: Accepted) -> None:
            if accepted.created_session:
                rows = tx.all("SELECT name FROM agents a WHERE a.id != ? AND EXISTS "
                              "(SELECT 1 FROM sessions s WHERE s.agent_id = a.id "
                              "AND s.key = ?) ORDER BY name",
                              (accepted.session.agent_id, accepted.session.key))
                check([str(name) for (name,) in rows])

        return also

    async def delete_session(self, agent_id: str, key: str) -> None:
        def op(tx: Tx) -> int:
            blobs = _blobs.held(tx, "sessions.agent_id = ? AND sessions.key = ?",
                                (agent_id, key))
            tx.execute("DELETE FROM sessions WHERE agent_id = ? AND key = ?", (agent_id, key))
            deleted = tx.rowcount
            _blobs.release(tx, blobs, self.engine.dialect)
            return deleted

        if await self.engine.write(op) == 0:
            raise SessionNotFound(f"session {key!r} not found")

    # -- messages, runs and events --------------------------------------------------------

    async def accept_message(self, *, agent_id: str, key: str, content: str,
                             idempotency_key: str | None = None, mode: str = "enqueue",
                             priority: str = "background", find_busy: bool = False,
                             origin: Mapping[str, Any] | None = None,
                             also: Callable[[Tx, Accepted], None] | None = None,
                             session_quota: Quota | None = None,
                             start: Lease | None = None,
                             agent_at: float | None = None) -> Accepted:
        """Create the session if needed, queue a run and log the user's message: one commit.

        With an ``idempotency_key`` already used in this session, nothing is written
        and the earlier run is returned (``duplicate=True``). When the session is busy
        (a run queued or running), ``mode`` decides, inside the same transaction:
        ``reject`` raises :class:`SessionBusy` and writes nothing; ``steer`` logs the
        message into the busy run (the running one, else the first queued) instead of
        queueing a new one; ``enqueue`` and
        ``interrupt`` queue it (the caller cancels the busy run for ``interrupt``).
        A new run records ``priority`` (the caller validates it). ``find_busy``: report
        the busy run (``Accepted.busy_run``) in ``enqueue`` mode too (the other modes
        always do).

        ``origin``: what started the message, merged into the ``message.user`` event's
        data (``{"schedule_id", "fire_at"}`` for a schedule's fire, ...; never
        ``content``). ``also`` makes more writes in the same transaction, given the
        accepted message (not called for a duplicate); raising in it writes nothing
        (a schedule's claim on its fire time is committed with the run this way).
        ``session_quota``: the agent's tenant's limit on sessions (a session made
        here is counted against it; over it, nothing is written: QuotaExceeded).
        ``start``: a new run whose session has nothing else active starts in this
        transaction, under this lease (``Accepted.started``: its ``run.started``
        follows its ``run.queued``; the executor carries on from there).
        ``agent_at``: the ``updated_at`` of the agent's record the message was decided
        from; on PostgreSQL a stored record that differs (another node changed the
        agent) refuses the message with :class:`AgentChanged`, nothing written.
        """
        if origin is not None and ("content" in origin or "steer" in origin):
            raise ValueError("origin must not set content or steer")
        now = self.clock.time()
        run_id = new_id("r")
        return await self.engine.write(lambda tx: accept(
            tx, agent_id=agent_id, key=key, content=content, idempotency_key=idempotency_key,
            mode=mode, priority=priority, run_id=run_id, now=now, find_busy=find_busy,
            origin=origin, also=also, session_quota=session_quota,
            dialect=self.engine.dialect, start=start, agent_at=agent_at, known=self._known))

    async def accept_messages(self, items: Sequence[ToAccept], *,
                              also_many: AlsoMany | None = None, start: Lease | None = None
                              ) -> list[Accepted | Exception]:
        """Accept many messages in one commit: each as :meth:`accept_message` would,
        and each on its own (its outcome, or the error that left nothing of it
        written, at its place in the list). A burst of schedule fires commits this
        way: one transaction for hundreds of messages instead of one each, written
        set-wise (one statement per table) when it can be (:mod:`._accept_many`).

        ``also_many``: the set path's counterpart of the items' ``also``, called once
        with ``(index, accepted)`` of every message it accepted; when it raises (or
        anything else of the set path fails) the chunk is written again message by
        message, with each item's own ``also``.

        ``start``: the set path also starts, under this lease, the run of each
        message whose session has nothing else active (``Accepted.started``; see
        :mod:`._accept_many`). Runs it does not start are queued as usual."""
        for item in items:
            if item.origin is not None and ("content" in item.origin
                                            or "steer" in item.origin):
                raise ValueError("origin must not set content or steer")
        if not items:
            return []
        run_ids = [new_id("r") for _ in items]
        # The time is taken in the transaction: a burst's runs start when it runs.
        return await self.engine.write(lambda tx: accept_many(
            tx, items, run_ids=run_ids, now=self.clock.time(), dialect=self.engine.dialect,
            also_many=also_many, start=start))

    def append(self, session_id: str, events: Sequence[NewEvent], *,
               run_id: str | None = None, run: RunUpdate | None = None,
               unless_steered_after: int | None = None, lease: Lease | None = None,
               checkpoint_every: float | None = None, usage: UsageCharge | None = None,
               unless_changed_after: int | None = None,
               unless_run_after: int | None = None,
               also: Callable[[Tx, list[EventRecord]], None] | None = None,
               ) -> asyncio.Future[list[EventRecord]]:
        """Append events (and optionally update a run) in one transaction.

        With ``unless_steered_after``, nothing is written and :class:`Steered` is
        raised if a user message was steered into ``run_id`` after that seq. With a
        ``lease``, nothing is written and :class:`LeaseLost` is raised unless the
        lease is (or, with ``acquire``, can be) held; see :class:`Lease`. With
        ``checkpoint_every`` (seconds), an automatic checkpoint follows the events
        when the session's last one is at least that old. With ``usage``, the step's
        model usage is added to the usage ledger (its UTC day is the events' commit
        time), so it is recorded exactly when the step is. With
        ``unless_changed_after``, nothing is written and Conflict ``session_changed``
        is raised if the session was restored, compacted or consolidated after that seq
        (a compaction's or a consolidation's range was chosen from the log up to it).
        With ``unless_run_after`` (a seq of the session), nothing is written and
        :class:`RunMoved` is raised if ``run_id`` has an event after it: a node taking
        a run over folds its log first, and the node that held it may have committed
        a step since (a commit held up past its lease's expiry: a process stopped in
        the middle of it). ``also`` makes more writes in the same transaction, given
        the events' records (a consolidation's entries and block changes). Returns the
        engine's future: the write goes ahead even if its waiter is cancelled."""
        now = self.clock.time()
        sole_writer = self.engine.dialect == "sqlite"
        known = self._known

        def op(tx: Tx) -> list[EventRecord]:
            # Events first: appending locks the session's row (on PostgreSQL), which
            # serialises lease checks and steering within a session.
            last_checkpoint: list[float] | None = [] if checkpoint_every is not None else None
            records = (append(tx, session_id, events, now, last_checkpoint,
                              sole_writer=sole_writer, known=known) if events else [])
            # The agent's workspace head moves with the event that names its files.
            note_heads(tx, session_id, records, lease.owner if lease is not None else None)
            if unless_steered_after is not None:
                # Only events logged after the guard can be a steered message: when
                # these are the first since, there is nothing to look for. (Raised
                # here, Steered rolls the append back with the rest of the write.)
                moved = not records or records[0].seq - 1 > unless_steered_after
                if moved and tx.one(
                        "SELECT seq FROM events WHERE session_id = ? AND seq > ? "
                        "AND run_id = ? AND kind = 'message.user' LIMIT 1",
                        (session_id, unless_steered_after, run_id)) is not None:
                    raise Steered(run_id or "")
            if unless_changed_after is not None and records and tx.one(
                    "SELECT seq FROM events WHERE session_id = ? AND seq > ? AND seq < ? "
                    "AND kind IN ('session.restored', 'session.compacted', "
                    "'memory.consolidated') LIMIT 1",
                    (session_id, unless_changed_after, records[0].seq)) is not None:
                # (Checked after the append, which locks the session's row.)
                raise Conflict("the session was restored, compacted or consolidated "
                               "meanwhile; try again", code="session_changed",
                               retryable=True)
            if unless_run_after is not None and run_id is not None and tx.one(
                    "SELECT seq FROM events WHERE session_id = ? AND seq > ? AND seq < ? "
                    "AND run_id = ? LIMIT 1",
                    (session_id, unless_run_after,
                     records[0].seq if records else 1 << 62, run_id)) is not None:
                # (Checked after the append, which locks the session's row: a commit of
                # the run held up until now has landed, or waits for this one.)
                raise RunMoved(run_id)
            if lease is not None and run_id is not None:
                leased_update(tx, run_id, run, lease, now)
            elif run is not None and run_id is not None:
                update_run(tx, run_id, run, now)
            if usage is not None:
                _usage.charge(tx, usage, now)
            if also is not None:
                also(tx, records)
            if (checkpoint_every is not None and last_checkpoint
                    and now - last_checkpoint[0] >= checkpoint_every):
                records.append(new_checkpoint(tx, session_id, None, "auto", now)[1])
            return records

        return self.engine.write(op)

    async def read_events(self, session_id: str, *, after: int = 0, limit: int | None = None,
                          before: int | None = None) -> list[EventRecord]:
        """The session's events with ``after < seq``, oldest first: the first ``limit``
        of them, or with ``before`` the last ``limit`` of those with ``seq < before`` (a
        page read backwards from the end of the log, still returned oldest first)."""
        sql = f"SELECT {EVENT_COLS} FROM events WHERE session_id = ? AND seq > ?"
        params: tuple[Any, ...] = (session_id, after)
        if before is not None:
            sql += " AND seq < ? ORDER BY seq DESC"
            params = (*params, before)
        else:
            sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, limit)
        rows = await self.engine.read(lambda tx: tx.all(sql, params))
        events = [_event(r) for r in rows]
        if before is not None:
            events.reverse()
        return events

    async def read_logs(self, session_ids: Sequence[str]) -> dict[str, list[EventRecord]]:
        """The whole logs of sessions (those with events), in one read: the runs of a
        burst start from them without a read each."""
        if not session_ids:
            return {}
        ids = list(dict.fromkeys(session_ids))
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {EVENT_COLS} FROM events WHERE session_id IN "
            f"({', '.join(['?'] * len(ids))}) ORDER BY session_id, seq", ids))
        logs: dict[str, list[EventRecord]] = {}
        for row in rows:
            event = _event(row)
            logs.setdefault(event.session_id, []).append(event)
        return logs

    async def get_run(self, run_id: str) -> RunRecord:
        row = await self.engine.read(
            lambda tx: tx.one(f"SELECT {RUN_COLS} FROM runs WHERE id = ?", (run_id,)))
        if row is None:
            raise RunNotFound(f"run {run_id!r} not found")
        return _run(row)

    async def run_context(self, run_id: str) -> tuple[RunRecord, str, str]:
        """A run with its agent's name and its session's key."""
        run, name, key, _ = await self.run_to_start(run_id)
        return run, name, key

    async def run_to_start(self, run_id: str) -> tuple[RunRecord, str, str, float]:
        """:meth:`run_context` and the ``updated_at`` of the agent's record as stored:
        a node starting a run another node accepted uses a copy of the agent no older
        than that (the message was accepted against it, or a later one)."""
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {', '.join('r.' + c.strip() for c in RUN_COLS.split(','))}, a.name, s.key, "
            "a.updated_at FROM runs r JOIN agents a ON a.id = r.agent_id JOIN sessions s ON "
            "s.id = r.session_id WHERE r.id = ?", (run_id,)))
        if row is None:
            raise RunNotFound(f"run {run_id!r} not found")
        return _run(row[:-3]), row[-3], row[-2], float(row[-1])

    async def runs_with_status(self, statuses: Sequence[str], *, agent_id: str | None = None
                               ) -> list[RunRecord]:
        """Active runs (``queued``, ``running``, ``waiting_approval``), oldest first."""
        if not statuses or not set(statuses) <= {"queued", "running", "waiting_approval"}:
            raise ValueError("only active runs can be listed by status")
        # Literal values, and the partial index's own condition term for term, so both
        # planners use runs_session_active (it holds active runs only).
        literal = ", ".join(f"'{s}'" for s in sorted(set(statuses)))
        where = (f"{active()} AND status IN ({literal})"
                 + (" AND agent_id = ?" if agent_id else ""))
        params = (agent_id,) if agent_id else ()
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {RUN_COLS} FROM runs WHERE {where} ORDER BY created_at, id", params))
        return [_run(r) for r in rows]

    async def list_runs(self, **filters: Any) -> _runs_query.RunPage:
        """A page of runs, newest first: see :func:`agentd.store.runs_query.list_runs`."""
        return await self.engine.read(lambda tx: _runs_query.list_runs(tx, **filters))

    async def session_names(self, session_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Sessions' agent names and keys by id: :func:`_runs_query.session_names`."""
        return await self.engine.read(lambda tx: _runs_query.session_names(tx, session_ids))

    # -- usage ------------------------------------------------------------------------

    async def usage_report(self, *, group_by: Sequence[str] = (), since: str | None = None,
                           until: str | None = None, agent: str | None = None,
                           tenant: str | None = None) -> list[dict[str, Any]]:
        """Sums of ``calls``, ``input_tokens``, ``output_tokens``, ``cached_tokens``,
        ``cache_write_tokens`` and ``cost_usd`` from the usage ledger, one row per group
        (``USAGE_GROUPS``: agent name, tenant, model, day, month ``YYYY-MM``), ordered
        by the groups; with no groups, one row of totals (zeros when there is
        nothing). ``since`` and ``until`` are inclusive ``YYYY-MM-DD`` UTC days;
        ``agent`` is a name (deleted agents keep their history)."""
        return await self.engine.read(lambda tx: _usage.report(
            tx, group_by, since, until, agent, tenant))

    async def usage_total(self, *, since: str, agent_id: str | None = None,
                          tenant: str | None = None) -> tuple[int, float]:
        """Tokens (input + output) and cost in USD since day ``since`` (``YYYY-MM-DD``,
        inclusive), for an agent (by id), a tenant or everything: for budget checks."""
        return await self.engine.read(lambda tx: _usage.total(tx, since, agent_id, tenant))

    async def count(self, table: str) -> int:
        if table not in {"agents", "sessions", "runs", "events", "memory_blocks",
                         "block_versions", "memory_entries", "memory_tags",
                         "memory_vectors", "memory_deleted", "subtasks"}:
            raise ValueError(table)
        row = await self.engine.read(lambda tx: tx.one(f"SELECT COUNT(*) FROM {table}"))
        return int(row[0]) if row else 0
