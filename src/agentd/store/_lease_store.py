"""The Store's lease methods: which node drives a run, cancels asked of another node,
and the runs no live node drives (taken over at start and on every sweep).

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

from typing import Any

from agentd.clock import Clock
from agentd.events import DecisionData
from agentd.store import _approvals
from agentd.store import rows as _rows
from agentd.store.engine import Engine, Tx
from agentd.store.records import EventRecord, RunRecord
from agentd.store.rows import RUN_COLS, active

__all__ = ["LeaseStore"]

_run = _rows.run


class LeaseStore:
    engine: Engine
    clock: Clock

    async def renew_leases(self, owner: str, ttl: float) -> dict[str, str | None]:
        """Extend every lease ``owner`` holds on an active run. Returns the ids renewed,
        each with the reason of a cancel asked for on another node (or None)."""
        def op(tx: Tx) -> dict[str, str | None]:
            rows = tx.all(f"UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? AND "
                          f"{active()} RETURNING id, cancel_requested",
                          (self.clock.time() + ttl, owner))
            return {str(r[0]): r[1] for r in rows}

        return await self.engine.write(op)

    async def request_cancel(self, run_id: str, reason: str) -> None:
        """Ask the node driving a run to cancel it: announced to every node sharing
        the database (it hears at once), and seen at its next renewal anyway."""
        def op(tx: Tx) -> None:
            tx.execute(f"UPDATE runs SET cancel_requested = ? WHERE id = ? AND {active()}",
                       (reason, run_id))
            if tx.rowcount and self.engine.shared:
                self.engine.announce_cancel(tx, run_id)

        await self.engine.write(op)

    async def cancel_requested(self, run_id: str) -> tuple[str, str] | None:
        """``(session id, reason)`` of a cancel asked for an active run, if any."""
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT session_id, cancel_requested FROM runs WHERE id = ? AND {active()} "
            "AND cancel_requested IS NOT NULL", (run_id,)))
        return None if row is None else (str(row[0]), str(row[1]))

    async def decide_unheld(self, run_id: str, decision: DecisionData) -> EventRecord:
        """Log a decision about a run waiting on another node (or on none): the run
        goes back to ``running`` with its lease ended, so the deciding node takes it
        over and resumes it with the decision; the old holder loses it at its next
        renewal. Raises Conflict (``not_waiting``) unless the run waits on a request
        not yet decided."""
        now = self.clock.time()
        return await self.engine.write(
            lambda tx: _approvals.decide_unheld(tx, run_id, decision, now))

    async def release_leases(self, *, except_owner: str) -> int:
        """End every other node's lease on an active run at once (only for a store this
        daemon has to itself)."""
        def op(tx: Tx) -> int:
            tx.execute(f"UPDATE runs SET lease_expires_at = 0 WHERE {active()} "
                       "AND lease_owner <> ?", (except_owner,))
            return tx.rowcount

        return await self.engine.write(op)

    async def orphaned_runs(self, owner: str, *, queued_before: float) -> list[RunRecord]:
        """Runs no live node drives, in the order to take them over: runs under way
        whose lease expired (or is ``owner``'s own and started before
        ``queued_before``: from before a restart), then runs queued before
        ``queued_before`` in sessions where nothing is under way. (A run this node
        started a moment ago with its message, not yet handed to its supervisor, is
        not one: ``Runs.send_many(start=True)``.)"""
        now = self.clock.time()

        def op(tx: Tx) -> list[tuple[Any, ...]]:
            # "status IN _ACTIVE" repeated so that SQLite may use the partial indexes.
            return tx.all(
                f"SELECT {RUN_COLS} FROM runs WHERE {active()} AND status <> "
                "'queued' AND (lease_owner IS NULL OR lease_expires_at < ? OR "
                "(lease_owner = ? AND (started_at IS NULL OR started_at < ?))) "
                "ORDER BY created_at, id", (now, owner, queued_before)) + tx.all(
                f"SELECT {RUN_COLS} FROM runs WHERE {active()} AND status = 'queued' "
                "AND created_at < ? AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.session_id = "
                f"runs.session_id AND {active('o.status')} AND o.status <> 'queued' "
                "AND o.lease_owner <> ? AND o.lease_expires_at >= ?) "
                "ORDER BY created_at, queued_seq", (queued_before, owner, now))

        return [_run(r) for r in await self.engine.read(op)]

    async def next_queued(self, session_id: str) -> RunRecord | None:
        """The session's oldest queued run (whoever accepted it), unless a run of the
        session is under way: then its node starts the next one when it ends."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {RUN_COLS} FROM runs WHERE session_id = ? AND {active()} "
            "ORDER BY queued_seq", (session_id,)))
        runs = [_run(r) for r in rows]
        if any(r.status != "queued" for r in runs):
            return None
        return runs[0] if runs else None
