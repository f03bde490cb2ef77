"""The housekeeper: the runtime's periodic work, one background task.

Services register their jobs (:meth:`Housekeeper.register`): a name, a period and
an async callable. The housekeeper runs each when it is due, one at a time; a job
that fails is logged and runs again at its next period. What is registered by the
runtime today:

* ``renew`` and ``take_over`` (:class:`agentd.runtime.leases.LeaseKeeper`): leases of
  runs under way, and runs no live node drives.
* ``sleep``: agents idle for ``agent_idle_s`` are dropped from memory.
* ``expire``: sessions idle for ``session_ttl_s`` are deleted.
* ``snapshots``: workspace snapshot objects no log refers to are removed.
* ``shells``: persistent shells idle for ``shell_idle_s`` are closed.

A new service (memory consolidation, schedules, ...) registers its own job the same
way, in the runtime's composition, and needs no change here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentd.clock import SYSTEM, Clock

__all__ = ["Housekeeper", "Job"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """A periodic job: ``run`` is called every ``period_s`` seconds (the first time
    one period after the housekeeper starts). Its result is kept as the job's last
    figure; an integer (how many things it did) is added to its total."""

    name: str
    period_s: float
    run: Callable[[], Awaitable[Any]]


class Housekeeper:
    """Args:
        clock: the time jobs fall due by (a test's :class:`agentd.testing.FakeClock`
            runs them as it moves).
    """

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._jobs: dict[str, Job] = {}
        self._task: asyncio.Task[None] | None = None
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: When each job is next due (clock's monotonic seconds), while the loop runs.
        self._due: dict[str, float] = {}
        #: Each job's runs, failures and last result (for /health, the CLI and tests).
        self.figures: dict[str, dict[str, Any]] = {}

    def register(self, job: Job) -> None:
        """Add a job; its name must be new. Jobs registered after :meth:`start` wait
        for the next start."""
        if job.name in self._jobs:
            raise ValueError(f"a housekeeping job named {job.name!r} is registered")
        if not job.period_s > 0:
            raise ValueError(f"housekeeping job {job.name!r}: the period must be > 0")
        self._jobs[job.name] = job
        self.figures[job.name] = {"runs": 0, "failures": 0, "last": None, "total": 0}

    @property
    def jobs(self) -> list[str]:
        return sorted(self._jobs)

    async def run(self, name: str) -> Any:
        """Run one job now (its failure is raised); returns its result."""
        job = self._jobs[name]
        figures = self.figures[name]
        self._busy += 1
        self._idle.clear()
        try:
            result = await job.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            figures["failures"] += 1
            raise
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()
        figures["runs"] += 1
        figures["last"] = result
        if isinstance(result, int):
            figures["total"] += result
        return result

    async def idle(self) -> None:
        """Return once no job is running and none is overdue: after moving a
        :class:`agentd.testing.FakeClock`, every job due by then has run."""
        while True:
            await asyncio.sleep(0)  # a job just woken reaches its first await
            if self._busy:
                await self._idle.wait()
            elif self._task is None or self._task.done() or all(
                    due > self.clock.monotonic() for due in self._due.values()):
                return

    # -- the loop ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and self._jobs:
            self._task = asyncio.create_task(self._loop(), name="agentd-housekeeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        jobs = dict(self._jobs)
        clock = self.clock
        due = self._due = {name: clock.monotonic() + job.period_s
                           for name, job in jobs.items()}
        while True:
            name = min(due, key=due.__getitem__)
            await clock.sleep(max(due[name] - clock.monotonic(), 0.0))
            try:
                await self.run(name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping job %s failed; it runs again later", name)
            due[name] = clock.monotonic() + jobs[name].period_s
