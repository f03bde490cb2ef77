"""Leases: which node drives which run, and taking over the runs nobody drives.

* **Renewal.** Every run under way is held through a lease (see
  :class:`agentd.store.Lease`). Each step's commit renews its run's lease; the
  ``renew`` job also renews them all every third of ``lease_ttl_s`` (a model call or
  tool may take longer than a lease), and a run whose lease it finds gone (another
  node took it over after this one stalled) is stopped here without writing anything.
* **Takeover.** At start, and every half ``lease_ttl_s``, runs that no live node
  drives (lease expired, or queued in a session where nothing runs) are taken over
  and resumed from their last committed step. One node or many, the same path; on
  SQLite the daemon holds the home's lock, so at start every lease is its own.
* **Cancels.** A cancel asked of the node driving a run is announced by PostgreSQL
  (:meth:`LeaseKeeper.cancel_heard`) and found by the next renewal anyway.
* **Cut off.** A node whose renewals keep failing stops its runs before their leases
  can expire (:meth:`LeaseKeeper.watch`), and takes them back once the store answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agentd.clock import SYSTEM, Clock
from agentd.errors import RunNotFound
from agentd.runtime.supervisor import Supervisor
from agentd.store import Lease, Store

__all__ = ["LeaseKeeper"]

log = logging.getLogger(__name__)

CancelLater = Callable[[str, str, str], None]


class LeaseKeeper:
    """Args:
        exclusive: this daemon is the store's only one (SQLite, under the home lock).
        cancel_later: cancels a run this node drives (session id, run id, reason),
            without waiting.
        clock: the time leases are renewed and queued runs taken over by.
    """

    def __init__(self, store: Store, *, supervisor: Supervisor, lease: Lease,
                 exclusive: bool, cancel_later: CancelLater, clock: Clock = SYSTEM) -> None:
        self.store = store
        self.clock = clock
        self.supervisor = supervisor
        self.lease = lease
        self.node_id = lease.owner
        self.exclusive = exclusive
        self.cancel_later = cancel_later
        #: Figures for /health and tests.
        self.taken_over = 0
        self.lost = 0
        self._background: set[asyncio.Task[None]] = set()
        #: When the last renewal that succeeded began, by the runtime's clock and by
        #: the machine's: every lease this node holds lasts until at least then + ttl.
        #: (Both: how long the store has kept a call waiting is real time, whatever
        #: clock the runtime decides by; a test's clock moves on while its I/O waits.)
        self.renewed_at = clock.monotonic()
        self._renewed_real = time.monotonic()
        #: Runs stopped here because the store was out of reach (:meth:`watch`).
        self.stopped_cut_off = 0

    async def recover(self) -> None:
        """At start: take back this node's runs, and any no live node drives."""
        if self.exclusive:
            # The home lock makes this the only daemon on this store: any lease still
            # held is a dead daemon's, whatever its name was.
            await self.store.release_leases(except_owner=self.node_id)
        await self.take_over(queued_before=self.clock.time() + 1.0)

    async def take_over(self, *, queued_before: float | None = None) -> int:
        """Submit the runs no live node drives; by default, the queued ones only when
        they have waited half a lease (a node that just accepted one starts it)."""
        if queued_before is None:
            queued_before = self.clock.time() - self.lease.ttl / 2
        count = 0
        for run in await self.store.orphaned_runs(self.node_id, queued_before=queued_before):
            if not self.supervisor.is_known(run.id):
                self.supervisor.submit(run.session_id, run.id, agent_id=run.agent_id,
                                       order=run.queued_seq)
                count += 1
        if count:
            log.info("took over %d run(s)", count)
        self.taken_over += count
        return count

    def cancel_heard(self, run_id: str) -> None:
        """Another node asked for ``run_id`` to be cancelled (PostgreSQL announces it
        when committed): if this node holds the run, it is cancelled now rather than
        at the next renewal (which still finds the request, should this be missed)."""
        if not self.supervisor.is_known(run_id):
            return
        task = asyncio.create_task(self._cancel_requested(run_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_requested(self, run_id: str) -> None:
        try:
            requested = await self.store.cancel_requested(run_id)
        except Exception:
            log.warning("could not read the cancel asked for run %s; the next renewal "
                        "will", run_id, exc_info=True)
            return
        if requested is None or not self.supervisor.is_known(run_id):
            return
        session_id, reason = requested
        executor = self.supervisor.active_executor(session_id, run_id)
        if executor is None or executor.cancel_reason is None:
            self.cancel_later(session_id, run_id, reason)

    async def renew(self) -> int:
        """Renew this node's leases; stop every run whose lease is gone."""
        started, started_real = self.clock.monotonic(), time.monotonic()
        renewed = await self.store.renew_leases(self.node_id, self.lease.ttl)
        self.renewed_at = max(self.renewed_at, started)
        self._renewed_real = max(self._renewed_real, started_real)
        lost = 0
        for executor in self.supervisor.executors():
            run = executor.run
            if (0 < executor.leased_at < started and run.id not in renewed
                    and not run.terminal and not executor.lost):
                # Not renewed: lost, or ended by its own executor in a commit that landed
                # after the renewal began but before the executor's copy of the run says
                # so. Ask the store who holds it (a run another node ended is lost too).
                try:
                    stored = await self.store.get_run(run.id)
                except RunNotFound:
                    continue  # deleted with its session, which stops its executor
                if stored.lease_owner == self.node_id or executor.lost:
                    continue
                log.warning("run %s: lease lost (another node took it over); stopping it "
                            "here", run.id)
                executor.lose()
                lost += 1
            elif renewed.get(run.id) and executor.cancel_reason is None:
                # A cancel sent to another node: this node drives the run, so it ends it.
                self.cancel_later(run.session_id, run.id, str(renewed[run.id]))
        self.lost += lost
        return lost

    def stale(self, part: float) -> bool:
        """Whether no renewal has succeeded for ``part`` of a lease, by the runtime's
        clock and by the machine's."""
        limit = part * self.lease.ttl
        return (self.clock.monotonic() - self.renewed_at >= limit
                and time.monotonic() - self._renewed_real >= limit)

    async def watch(self) -> None:
        """Until cancelled (a shared store only): stop every run this node drives,
        writing nothing, when it is cut off from the store, before any of their
        leases can expire and another node take them over; the run's next owner
        (another node, or this one's next takeover once the store answers again)
        resumes it from its last committed step. A step whose commit was under way
        lands only if the lease is still this node's.

        Cut off: no renewal has succeeded for half a lease, a renewal tried here then
        (the housekeeper's may be held up behind another job) fails or has not
        answered within an eighth of one, and three quarters of the lease have
        passed. A loop merely late (a busy machine) renews at once and stops nothing."""
        ttl = self.lease.ttl
        probe: asyncio.Task[int] | None = None
        try:
            while True:
                await self.clock.sleep(ttl / 8)
                if not self.stale(0.5):
                    continue
                if probe is None or probe.done():
                    probe = asyncio.create_task(self.renew(), name="agentd-renew-probe")
                    probe.add_done_callback(_quiet)
                await asyncio.wait({probe}, timeout=ttl / 8)
                if (probe.done() and not probe.cancelled() and probe.exception() is None
                        ) or not self.stale(0.75):
                    continue
                self._stop_all()
        finally:
            if probe is not None:
                probe.cancel()

    def _stop_all(self) -> None:
        stopped = [e for e in self.supervisor.executors() if not e.lost]
        for executor in stopped:
            executor.lose()
        if stopped:
            self.stopped_cut_off += len(stopped)
            log.warning("the store has not renewed this node's leases for %.1f s: stopped "
                        "%d run(s) here; they resume from their last committed step",
                        self.clock.monotonic() - self.renewed_at, len(stopped))


def _quiet(task: asyncio.Task[int]) -> None:
    """A renewal tried by :meth:`LeaseKeeper.watch`: its failure is what it looks at
    (and the housekeeper's renewal logs the same trouble)."""
    if not task.cancelled():
        task.exception()
