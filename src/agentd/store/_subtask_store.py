"""The Store's subtask methods: each one transaction of :mod:`agentd.store.subtasks`.

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from agentd.clock import Clock
from agentd.events import SubtaskStarted, SubtaskStartedData
from agentd.store import subtasks as _subtasks
from agentd.store.engine import Engine, Tx
from agentd.store.log import Accepted, append
from agentd.store.records import EventRecord, NewEvent
from agentd.store.subtasks import SubtaskRecord

__all__ = ["SubtaskStore"]


class SubtaskStore:
    engine: Engine
    clock: Clock

    def link_subtask(self, record: SubtaskRecord, published: list[EventRecord]
                     ) -> Callable[[Tx, Accepted], None]:
        """The ``also`` of the child's ``accept_message``: the subtask's row (child run
        and session filled in from the accepted message) and a ``subtask.started``
        event in the parent's session, committed with the child's run. The event's
        record is appended to ``published`` (for the caller to publish after the
        commit). A unique violation (the effect id or ``n`` taken meanwhile) aborts
        the whole transaction."""

        def link(tx: Tx, accepted: Accepted) -> None:
            row = replace(record, child_run=accepted.run.id,
                          child_session=accepted.session.id)
            _subtasks.insert(tx, row)
            data: SubtaskStartedData = {
                "subtask_id": row.id, "type": row.type, "agent": row.child_agent,
                "session": row.child_key, "run_id": row.child_run, "title": row.title,
                "depth": row.depth}
            published.extend(append(tx, row.parent_session, [NewEvent.of(
                SubtaskStarted(data=data), row.parent_run)], self.clock.time()))

        return link

    async def subtask_of_effect(self, effect_id: str) -> SubtaskRecord | None:
        return await self.engine.read(lambda tx: _subtasks.of_effect(tx, effect_id))

    async def subtask_of_child(self, child_run: str) -> SubtaskRecord | None:
        return await self.engine.read(lambda tx: _subtasks.of_child(tx, child_run))

    async def unreported_child_runs(self) -> list[str]:
        return await self.engine.read(_subtasks.unreported_runs)

    async def get_subtask(self, subtask_id: str) -> SubtaskRecord | None:
        return await self.engine.read(lambda tx: _subtasks.one(tx, subtask_id))

    async def subtasks_of(self, parent_run: str, ids: list[str] | None = None
                          ) -> list[SubtaskRecord]:
        """A run's children (or those with these ids), with their runs' states."""
        return await self.engine.read(lambda tx: _subtasks.children(tx, parent_run, ids))

    async def subtask_counts(self, parent_run: str) -> tuple[int, int, int]:
        """(children in all, unfinished, the next child's ``n``)."""
        return await self.engine.read(lambda tx: _subtasks.count(tx, parent_run))

    async def orphaned_subtasks(self) -> list[tuple[str, str]]:
        return await self.engine.read(_subtasks.orphans)

    async def unreported_subtasks(self) -> list[SubtaskRecord]:
        return await self.engine.read(_subtasks.unreported)

    async def report_subtask(self, record: SubtaskRecord, event: Any
                             ) -> list[EventRecord]:
        """Log ``event`` (``subtask.finished``) in the parent's session once: [] when
        it was logged already (by this node or another)."""
        def op(tx: Tx) -> list[EventRecord]:
            if not _subtasks.mark_reported(tx, record.id):
                return []
            return append(tx, record.parent_session, [NewEvent.of(event, record.parent_run)],
                          self.clock.time())

        return await self.engine.write(op)
