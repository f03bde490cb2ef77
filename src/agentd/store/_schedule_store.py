"""The Store's schedule methods: each one transaction of ``_schedules``.

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentd.clock import Clock
from agentd.store import quota as _quota
from agentd.store import schedules as _schedules
from agentd.store.engine import Engine, Tx
from agentd.store.quota import Quota
from agentd.store.schedules import FireOutcome, ScheduleRecord

__all__ = ["ScheduleStore"]


class ScheduleStore:
    engine: Engine
    clock: Clock

    async def insert_schedule(self, record: ScheduleRecord, *, max_per_agent: int,
                              max_by_tools: int | None = None, quota: Quota | None = None
                              ) -> ScheduleRecord:
        """Insert a schedule (``quota``: its agent's tenant's limit on schedules)."""
        dialect = self.engine.dialect

        def op(tx: Tx) -> ScheduleRecord:
            inserted = _schedules.insert(tx, record, dialect=dialect,
                                         max_per_agent=max_per_agent,
                                         max_by_tools=max_by_tools)
            _quota.check(tx, quota, dialect)
            return inserted

        return await self.engine.write(op)

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return await self.engine.read(lambda tx: _schedules.get(tx, schedule_id))

    async def list_schedules(self, *, agent_id: str | None = None, after: str | None = None,
                             limit: int = 100, agent_ids: Sequence[str] | None = None
                             ) -> list[ScheduleRecord]:
        return await self.engine.read(lambda tx: _schedules.list_page(
            tx, agent_id=agent_id, after=after, limit=limit, agent_ids=agent_ids))

    async def replace_schedule(self, record: ScheduleRecord, expect_version: int) -> bool:
        """Write the schedule's new definition unless it changed since it was read."""
        return await self.engine.write(lambda tx: _schedules.replace(tx, record,
                                                                     expect_version))

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self.engine.write(lambda tx: _schedules.delete(tx, schedule_id))

    async def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        return await self.engine.read(lambda tx: _schedules.due(tx, now, limit))

    async def next_schedule_due(self) -> float | None:
        return await self.engine.read(_schedules.next_due)

    async def move_schedule(self, schedule_id: str, *, expect_next: float,
                            next_fire_at: float | None, next_due_at: float | None,
                            missed: int = 0, failures: int | None = None,
                            pause: str | None = None,
                            skip: tuple[float, str] | None = None,
                            missed_note: tuple[float, str] | None = None) -> None:
        """Move a schedule on without a run (compare-and-set on ``expect_next``,
        :class:`_schedules.Moved` if it moved meanwhile): fire times missed (``missed``
        of them; ``missed_note``: the first and why, claimed ``missed``), a backoff, a
        pause, or (``skip``: fire time, reason) one fire time claimed and skipped."""
        now = self.clock.time()

        def op(tx: _schedules.Tx) -> None:
            _schedules.move(tx, schedule_id, expect_next=expect_next,
                            next_fire_at=next_fire_at, next_due_at=next_due_at, now=now,
                            missed=missed, skipped=1 if skip else 0, failures=failures,
                            pause=pause, missed_note=missed_note)
            if skip is not None:
                _schedules.claim_fire(tx, schedule_id, skip[0], run_id=None,
                                      status="skipped", reason=skip[1], now=now,
                                      prune=False)

        await self.engine.write(op)

    async def schedule_outcomes(self, schedule_id: str, *, after: float, limit: int
                                ) -> list[tuple[str, float | None, str | None]]:
        return await self.engine.read(lambda tx: _schedules.fire_outcomes(
            tx, schedule_id, after=after, limit=limit))

    async def schedule_fires(self, schedule_id: str, limit: int = 20) -> list[FireOutcome]:
        return await self.engine.read(lambda tx: _schedules.recent_fires(
            tx, schedule_id, limit))
