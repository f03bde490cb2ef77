"""The Store's checkpoint methods: checkpoints, restoring a session to one, forking a
session from one, adding messages to a session without a run, and expiring idle
sessions.

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentd.clock import Clock
from agentd.errors import CheckpointExists, CheckpointNotFound
from agentd.store import _sessions
from agentd.store import blobs as _blobs
from agentd.store import quota as _quota
from agentd.store import rows as _rows
from agentd.store._sessions import new_checkpoint
from agentd.store.engine import Engine, Tx
from agentd.store.quota import Quota
from agentd.store.records import CheckpointRecord, EventRecord, NewEvent, SessionRecord
from agentd.store.rows import CHECKPOINT_COLS, SESSION_COLS, active, new_id

__all__ = ["CheckpointStore"]

_checkpoint, _session = _rows.checkpoint, _rows.session


class CheckpointStore:
    engine: Engine
    clock: Clock

    async def create_checkpoint(self, session_id: str, *, name: str | None = None,
                                kind: str = "manual"
                                ) -> tuple[CheckpointRecord, EventRecord]:
        now = self.clock.time()
        try:
            return await self.engine.write(
                lambda tx: new_checkpoint(tx, session_id, name, kind, now))
        except Exception as exc:
            if self.engine.is_unique_violation(exc):
                raise CheckpointExists(
                    f"this session already has a checkpoint named {name!r}") from None
            raise

    async def checkpoint_changed(self, kind: str, *, agent_id: str | None = None
                                 ) -> list[EventRecord]:
        """Checkpoint every session (of ``agent_id``, or all) changed since its last
        checkpoint; one transaction. Returns the checkpoint events."""
        now = self.clock.time()

        def op(tx: Tx) -> list[EventRecord]:
            where = "last_seq > checkpoint_seq" + (" AND agent_id = ?" if agent_id else "")
            rows = tx.all(f"SELECT id FROM sessions WHERE {where}",
                          (agent_id,) if agent_id else ())
            return [new_checkpoint(tx, str(r[0]), None, kind, now)[1] for r in rows]

        return await self.engine.write(op)

    async def list_checkpoints(self, session_id: str) -> list[CheckpointRecord]:
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {CHECKPOINT_COLS} FROM checkpoints WHERE session_id = ? ORDER BY seq",
            (session_id,)))
        return [_checkpoint(r) for r in rows]

    async def get_checkpoint(self, checkpoint_id: str
                             ) -> tuple[CheckpointRecord, str, SessionRecord]:
        """A checkpoint with its agent's name and its session."""
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {', '.join('c.' + c.strip() for c in CHECKPOINT_COLS.split(','))}, "
            f"a.name, {', '.join('s.' + c.strip() for c in SESSION_COLS.split(','))} "
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
        now = self.clock.time()
        return await self.engine.write(
            lambda tx: _sessions.restore(tx, session_id, seq, checkpoint, now))

    async def fork_session(self, session_id: str, *, key: str, seq: int | None = None,
                           checkpoint: str | None = None, source: dict[str, Any],
                           quota: Quota | None = None) -> SessionRecord:
        """A new session of the same agent, holding the state of ``session_id`` at a
        checkpoint or seq: its live events copied (renumbered from 1), then a
        ``session.forked`` event naming the source (``source`` plus the seq).
        ``quota``: the tenant's limit on sessions."""
        now = self.clock.time()
        new_session_id = new_id("s")

        def op(tx: Tx) -> SessionRecord:
            forked = _sessions.fork(
                tx, session_id, new_session_id=new_session_id, key=key, seq=seq,
                checkpoint=checkpoint, source=source, now=now)
            _blobs.copy_refs(tx, session_id, new_session_id, self.engine.dialect)
            _quota.check(tx, quota, self.engine.dialect)
            return forked

        return await self.engine.write(op)

    async def add_messages(self, agent_id: str, key: str, events: Sequence[NewEvent], *,
                           create: bool = False, expect_seq: int | None = None,
                           on_new_session: Callable[[list[str]], None] | None = None,
                           quota: Quota | None = None
                           ) -> tuple[SessionRecord, list[EventRecord], bool]:
        """Append ``events`` (messages added without a run) to the agent's session
        ``key``, in one transaction: refused (:class:`SessionBusy`, nothing written)
        while the session has a run queued, running or waiting for a decision, and
        (Conflict ``session_changed``) unless its last seq is ``expect_seq`` when
        that is given. ``create``: make the session if it does not exist (else
        :class:`SessionNotFound`); then ``on_new_session`` is called with the names
        of the other agents that have a session of the same key, and raises to
        refuse, and ``quota`` (the tenant's limit on sessions) is checked. Returns
        the session, the events' records and whether the session was made here."""
        now = self.clock.time()
        new_session_id = new_id("s")

        def op(tx: Tx) -> tuple[SessionRecord, list[EventRecord], bool]:
            done = _sessions.add_messages(
                tx, agent_id=agent_id, key=key, new_session_id=new_session_id,
                events=events, now=now, create=create, expect_seq=expect_seq,
                on_new_session=on_new_session)
            if done[2]:
                _quota.check(tx, quota, self.engine.dialect)
            return done

        return await self.engine.write(op)

    async def expire_sessions(self, idle_before: float) -> list[tuple[str, str, str]]:
        """Delete sessions untouched since ``idle_before`` with nothing queued or under
        way; returns (session id, agent id, key) of each."""
        idle = ("sessions.updated_at < ? AND NOT EXISTS (SELECT 1 FROM runs WHERE "
                f"runs.session_id = sessions.id AND {active('runs.status')})")

        def op(tx: Tx) -> list[tuple[str, str, str]]:
            blobs = _blobs.held(tx, idle, (idle_before,))
            rows = tx.all(f"DELETE FROM sessions WHERE {idle} RETURNING id, agent_id, key",
                          (idle_before,))
            _blobs.release(tx, blobs, self.engine.dialect)
            return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

        return await self.engine.write(op)
