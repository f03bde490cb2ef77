"""Ending runs that no executor drives.

A run is ended by its executor, step by step (:mod:`agentd.runtime.loop`). A run
that no executor holds (cancelled while queued, unable to start, found after a
restart with nowhere to go) is ended here: one event and the run's new status,
committed together under the run's lease, then published.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from agentd.errors import AgentdError
from agentd.events import ErrorData, RunCancelled, RunEnd, RunFailed, run_end
from agentd.runtime.bus import EventBus
from agentd.store import Lease, NewEvent, RunUpdate, Store
from agentd.store.records import RunRecord

__all__ = ["RunLog"]


class RunLog:
    """Settles runs outside an executor (see the module's docstring)."""

    def __init__(self, store: Store, bus: EventBus, lease: Lease) -> None:
        self.store = store
        self.bus = bus
        self.lease = lease

    async def settle(self, session_id: str, run_id: str, end: RunEnd) -> None:
        """End the run with ``end`` (the status its kind sets); a failed run's error is
        stored on it too."""
        error = end.data["error"] if isinstance(end, RunFailed) else None
        records = await self.store.append(
            session_id, [NewEvent.of(end, run_id)], run_id=run_id,
            run=RunUpdate(status=run_end(end), error=cast(dict[str, Any] | None, error),
                          finished=True),
            lease=replace(self.lease, acquire=True, head=False))
        self.bus.publish(records)

    async def cancel(self, run: RunRecord, reason: str) -> None:
        await self.settle(run.session_id, run.id, RunCancelled(data={"reason": reason}))

    async def fail(self, run: RunRecord, error: AgentdError) -> None:
        await self.settle(run.session_id, run.id, RunFailed(data={
            "error": cast(ErrorData, error.to_dict())}))

    async def cancel_queued(self, run_id: str, reason: str) -> None:
        """Cancel a run held in the store (queued, or one no executor holds)."""
        run = await self.store.get_run(run_id)
        if not run.terminal:
            await self.cancel(run, reason)
