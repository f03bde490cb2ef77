"""The housekeeper: the runtime's periodic work, one background task.

* **Leases.** Every run under way is held through a lease (see
  :class:`agentd.store.Lease`). Each step's commit renews its run's lease; this task
  also renews them all every third of ``lease_ttl_s`` (a model call or tool may take
  longer than a lease), and a run whose lease it finds gone (another node took it
  over after this one stalled) is stopped here without writing anything.
* **Takeover.** At start, and every half ``lease_ttl_s``, runs that no live node
  drives (lease expired, or queued in a session where nothing runs) are taken over
  and resumed from their last committed step. One node or many, the same path; on
  SQLite the daemon holds the home's lock, so at start every lease is its own.
* **Sleep.** Agents idle for ``agent_idle_s`` are dropped from memory.
* **Expiry.** Sessions idle for ``session_ttl_s`` are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from agentd.errors import RunNotFound

if TYPE_CHECKING:
    from agentd.runtime.runtime import Runtime

__all__ = ["Housekeeper"]

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task: asyncio.Task[None] | None = None
        #: Figures for /health and tests.
        self.taken_over = 0
        self.slept = 0
        self.expired = 0
        self.lost = 0

    # -- jobs ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """At start: take back this node's runs, and any no live node drives."""
        rt = self.runtime
        if rt.exclusive:
            # The home lock makes this the only daemon on this store: any lease still
            # held is a dead daemon's, whatever its name was.
            await rt.store.release_leases(except_owner=rt.node_id)
        await self.take_over(queued_before=time.time() + 1.0)

    async def take_over(self, *, queued_before: float) -> int:
        rt = self.runtime
        count = 0
        for run in await rt.store.orphaned_runs(rt.node_id, queued_before=queued_before):
            if not rt.supervisor.is_known(run.id):
                rt.supervisor.submit(run.session_id, run.id, agent_id=run.agent_id,
                                     order=run.queued_seq)
                count += 1
        if count:
            log.info("took over %d run(s)", count)
        self.taken_over += count
        return count

    async def renew(self) -> int:
        """Renew this node's leases; stop every run whose lease is gone."""
        rt = self.runtime
        started = time.monotonic()
        renewed = await rt.store.renew_leases(rt.node_id, rt.lease.ttl)
        lost = 0
        for executor in rt.supervisor.executors():
            run = executor.run
            if (0 < executor.leased_at < started and run.id not in renewed
                    and not run.terminal and not executor.lost):
                # Not renewed: lost, or ended by its own executor in a commit that landed
                # after the renewal began but before the executor's copy of the run says
                # so. Ask the store who holds it (a run another node ended is lost too).
                try:
                    stored = await rt.store.get_run(run.id)
                except RunNotFound:
                    continue  # deleted with its session, which stops its executor
                if stored.lease_owner == rt.node_id or executor.lost:
                    continue
                log.warning("run %s: lease lost (another node took it over); stopping it "
                            "here", run.id)
                executor.lose()
                lost += 1
            elif renewed.get(run.id) and executor.cancel_reason is None:
                # A cancel sent to another node: this node drives the run, so it ends it.
                rt.cancel_in_background(run.session_id, run.id, str(renewed[run.id]))
        self.lost += lost
        return lost

    def sleep_idle(self) -> int:
        idle = self.runtime.settings.agent_idle_s
        if idle <= 0:
            return 0
        names = self.runtime.sleep_idle_agents(idle)
        if names:
            log.debug("put %d idle agent(s) to sleep", len(names))
        self.slept += len(names)
        return len(names)

    async def expire_sessions(self) -> int:
        rt = self.runtime
        ttl = rt.settings.session_ttl_s
        if ttl <= 0:
            return 0
        expired = await rt.store.expire_sessions(time.time() - ttl)
        for session_id, _agent_id, key in expired:
            rt.histories.drop(session_id)
            log.info("session %r expired after %.0f s idle", key, ttl)
        self.expired += len(expired)
        return len(expired)

    async def collect_snapshots(self) -> int:
        """Drop workspace snapshot objects no session's log refers to any more."""
        rt = self.runtime
        if rt.workspaces is None:
            return 0
        removed = await rt.workspaces.collect(await rt.store.snapshot_refs())
        if removed:
            log.info("removed %d unreferenced snapshot object(s)", removed)
        return removed

    async def close_idle_shells(self) -> int:
        return len(await self.runtime.sandboxes.shells.expire())

    # -- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="agentd-housekeeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _periods(self) -> dict[str, float]:
        s = self.runtime.settings
        periods = {"renew": s.lease_ttl_s / 3, "take_over": s.lease_ttl_s / 2}
        if s.agent_idle_s > 0:
            periods["sleep"] = min(max(s.agent_idle_s / 4, 0.05), 30.0)
        if s.session_ttl_s > 0:
            periods["expire"] = min(max(s.session_ttl_s / 4, 0.05), 60.0)
        if s.sandbox.snapshots and s.sandbox.snapshot_gc_s > 0:
            periods["snapshots"] = s.sandbox.snapshot_gc_s
        periods["shells"] = min(max(s.sandbox.shell_idle_s / 4, 1.0), 60.0)
        return periods

    async def _loop(self) -> None:
        periods = self._periods()
        due = {job: time.monotonic() + period for job, period in periods.items()}
        while True:
            job = min(due, key=due.__getitem__)
            await asyncio.sleep(max(due[job] - time.monotonic(), 0.0))
            try:
                if job == "renew":
                    await self.renew()
                elif job == "take_over":
                    await self.take_over(queued_before=time.time() - self.runtime.lease.ttl / 2)
                    if not self.runtime.exclusive:  # other nodes create and delete agents
                        self.runtime.agent_count = await self.runtime.store.count("agents")
                elif job == "sleep":
                    self.sleep_idle()
                elif job == "expire":
                    await self.expire_sessions()
                elif job == "snapshots":
                    await self.collect_snapshots()
                elif job == "shells":
                    await self.close_idle_shells()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping job %s failed; it runs again later", job)
            due[job] = time.monotonic() + periods[job]
