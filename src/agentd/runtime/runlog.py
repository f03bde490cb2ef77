"""Ending runs that no executor drives.

A run is ended by its executor, step by step (:mod:`agentd.runtime.loop`). A run
that no executor holds (cancelled while queued, unable to start, found after a
restart with nowhere to go) is ended here: one event and the run's new status,
committed together under the run's lease, then published.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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

    async def settle(self, session_id: str, run_id: str, status: str, kind: str,
                     data: dict[str, Any]) -> None:
        """End the run with ``kind``'s event; its error (if any) is stored on it too."""
        records = await self.store.append(
            session_id, [NewEvent(kind=kind, run_id=run_id, data=data)], run_id=run_id,
            run=RunUpdate(status=status, error=data.get("error"), finished=True),
            lease=replace(self.lease, acquire=True, head=False))
        self.bus.publish(records)

    async def cancel(self, run: RunRecord, reason: str) -> None:
        await self.settle(run.session_id, run.id, "cancelled", "run.cancelled",
                          {"reason": reason})

    async def fail(self, run: RunRecord, error: dict[str, Any]) -> None:
        await self.settle(run.session_id, run.id, "failed", "run.failed", {"error": error})

    async def cancel_queued(self, run_id: str, reason: str) -> None:
        """Cancel a run held in the store (queued, or one no executor holds)."""
        run = await self.store.get_run(run_id)
        if not run.terminal:
            await self.cancel(run, reason)
