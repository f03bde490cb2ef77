"""Node liveness: a node that dies has its runs taken over in about a second, not a
lease later.

Leases alone (:mod:`agentd.runtime.leases`) make a dead node's runs wait until their
leases expire (``lease_ttl_s``, 30 s by default) before another node takes them over.
On PostgreSQL each node also holds a liveness lock for the life of its process (a
session-level advisory lock on a connection of its own, registered in
``node_liveness``: :mod:`agentd.store.node_lock`); the server drops it the moment
the process dies, whatever killed it. Every ``node_check_s`` each node looks for
registered nodes whose lock is free while they hold unexpired leases
(:meth:`agentd.store.Store.dead_nodes`); a node found so at two looks in a row is
gone: its leases are ended in that transaction and its runs are taken over here at
once (:meth:`LeaseKeeper.take_over`), resumed from their last committed step. Any run
found under way with its lease ended or lapsed is taken over at the same look (not
at the next sweep, half a lease later): the node that ended a gone node's leases may
have died before it took the runs over.

What this does not change: a node that is alive but stalled (paused with SIGSTOP, a
long GC, starved of CPU) holds its lock, so its runs are taken over only when their
leases expire, as before; and whatever happens, a run's commits are fenced by its
lease, so a node that was judged gone but was not (its lock's connection broke)
writes nothing to a run another node took over: its executors stop at their next
commit or renewal. A node whose own lock is not held (its connection broke: the
database may have restarted, and every node with it) judges no other node until it
has its lock back. SQLite has one daemon per home: nothing to watch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agentd.clock import SYSTEM, Clock
from agentd.runtime.leases import LeaseKeeper
from agentd.store import Store

if TYPE_CHECKING:
    from agentd.store.node_lock import NodeLock

__all__ = ["NodeWatch"]

log = logging.getLogger(__name__)


class NodeWatch:
    """Args:
        leases: whose :meth:`~LeaseKeeper.take_over` resumes a dead node's runs.
        check_s: between two looks at the other nodes (and at this node's own lock's
            connection); 0: no liveness lock, dead nodes' runs wait for their leases.
        wait_s: how long to wait at start for this node's own lock (held by its
            previous process until the server drops it) before refusing to start.
    """

    def __init__(self, store: Store, *, leases: LeaseKeeper, check_s: float, wait_s: float,
                 clock: Clock = SYSTEM) -> None:
        self.store = store
        self.leases = leases
        self.node_id = leases.node_id
        self.check_s = check_s
        self.wait_s = wait_s
        self.clock = clock
        self.lock: NodeLock | None = (store.engine.node_lock(self.node_id)
                                      if check_s > 0 else None)
        self._keeper: asyncio.Task[None] | None = None
        #: Nodes found gone (their lock free) at the last look, not yet ended.
        self._suspects: set[str] = set()
        #: Figures for /health and tests: nodes found gone, leases ended.
        self.nodes_gone = 0
        self.leases_ended = 0

    @property
    def enabled(self) -> bool:
        return self.lock is not None

    def status(self) -> str | None:
        """``held`` or ``lost`` (this node's liveness lock); None when there is none."""
        if self.lock is None:
            return None
        return "held" if self.lock.held else "lost"

    async def start(self) -> None:
        """Take this node's lock (before it takes any run over); raises StoreError when
        another live node has this node id."""
        if self.lock is None or self._keeper is not None:
            return
        await self.lock.acquire(wait_s=self.wait_s, now=self.clock.time)
        self._keeper = asyncio.create_task(self.lock.keep(self.check_s, self.clock.time),
                                           name="agentd-node-lock")

    async def stop(self) -> None:
        """Let the lock go (after this node's runs were parked: see the runtime)."""
        task, self._keeper = self._keeper, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.lock is not None:
            await self.lock.release()

    async def check(self) -> int:
        """One look at the other nodes; returns how many runs it took over."""
        if self.lock is None:
            return 0
        if not self.lock.held:
            self._suspects.clear()
            return 0
        found = await self.store.dead_nodes(self.node_id, suspects=self._suspects)
        self._suspects = found.free - set(found.ended)
        for node_id, count in sorted(found.ended.items()):
            log.warning("node %s is gone (its liveness lock is free): ended its %d "
                        "lease(s); taking its runs over", node_id, count)
        self.nodes_gone += len(found.ended)
        self.leases_ended += sum(found.ended.values())
        if not found.expired:
            return 0
        # Runs nobody drives: a gone node's (ended now, or by a node that died before
        # it took them over), or leases that lapsed: taken now, not at the next sweep.
        return await self.leases.take_over()
