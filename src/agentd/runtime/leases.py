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
"""

from __future__ import annotations

import logging
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

    async def renew(self) -> int:
        """Renew this node's leases; stop every run whose lease is gone."""
        started = self.clock.monotonic()
        renewed = await self.store.renew_leases(self.node_id, self.lease.ttl)
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
