"""Node affinity: a run of an agent starts on the node that holds its files.

With a shared snapshot store (``[sandbox] snapshot_store``), any node can run any
agent: it first brings the agent's workspace to its last committed state
(:meth:`agentd.runtime.workspaces.WorkspaceKeeper.follow`). That costs a fetch and a
restore, and the node that ran the agent last has the files already; so a node that
accepts a message for an agent whose files were last committed on another node (its
*workspace head*'s node) does not start the run itself. It *offers* it to that node
(a note every node hears, PostgreSQL's ``NOTIFY``), which starts it at once, and it
starts it itself if the run is still queued ``affinity_s`` later (that node is
dead, stopping, or did not hear). Only runs this node accepted with their message
are offered: a run taken over from a dead node, queued behind another, or offered
here, starts here at once, so failover waits for nothing but its lease. A run two
nodes start at once is still run once: its lease goes to one of them.

The note: ``["offer", origin, node, run id, session id, agent id]`` on the agents'
channel (:meth:`agentd.store.Store.announce`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson

from agentd.clock import SYSTEM, Clock, Timer
from agentd.errors import RunNotFound
from agentd.store import Store
from agentd.store.records import RunRecord

__all__ = ["Affinity", "RunOffer"]

log = logging.getLogger(__name__)

#: Queues a run on this node's supervisor: (session id, run id, agent id).
Submit = Callable[[str, str, str], None]


class RunOffer:
    """An offer of a queued run to the node that holds its agent's files."""

    PREFIX = '["offer",'

    def __init__(self, *, origin: str, node: str, run_id: str, session_id: str,
                 agent_id: str) -> None:
        self.origin = origin
        self.node = node
        self.run_id = run_id
        self.session_id = session_id
        self.agent_id = agent_id

    def to_note(self) -> str:
        return orjson.dumps(["offer", self.origin, self.node, self.run_id,
                             self.session_id, self.agent_id]).decode()

    @classmethod
    def from_note(cls, note: str) -> RunOffer | None:
        """The offer a note carries (None: it is not one)."""
        if not note.startswith(cls.PREFIX):
            return None
        try:
            kind, origin, node, run_id, session_id, agent_id = orjson.loads(note)
        except (ValueError, TypeError):
            return None
        if kind != "offer" or not all(isinstance(v, str) for v in
                                      (origin, node, run_id, session_id, agent_id)):
            return None
        return cls(origin=origin, node=node, run_id=run_id, session_id=session_id,
                   agent_id=agent_id)


class Affinity:
    """Offers runs to the nodes holding their agents' files, and takes the offers made
    to this node (see the module's docstring).

    Args:
        window_s: how long an offered run waits for its node before this node starts
            it (``[sandbox] affinity_s``; 0: no offers, every run starts where it was
            accepted).
        submit: queues a run on this node's supervisor.
    """

    def __init__(self, store: Store, *, node_id: str, window_s: float, submit: Submit,
                 clock: Clock = SYSTEM) -> None:
        self.store = store
        self.node_id = node_id
        self.window_s = window_s
        self.submit = submit
        self.clock = clock
        #: Runs offered away and not yet started anywhere: their fallback timers.
        self._waiting: dict[str, Timer] = {}
        #: Runs that came back (their offer ran out): started here, not offered again.
        self._returned: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        #: Figures for /health and tests.
        self.offered = 0
        self.taken = 0
        self.fell_back = 0

    @property
    def on(self) -> bool:
        return self.window_s > 0 and self.store.engine.shared

    def may_offer(self, run_id: str) -> bool:
        """Whether a run accepted here may still be offered away (not once its offer
        ran out)."""
        return self.on and run_id not in self._returned

    async def offer(self, run: RunRecord, node: str) -> None:
        """Offer ``run`` (queued, accepted here) to ``node``; start it here if it is
        still queued ``window_s`` from now."""
        self._returned.discard(run.id)
        old = self._waiting.pop(run.id, None)
        if old is not None:
            old.cancel()
        self._waiting[run.id] = self.clock.call_later(
            self.window_s, self._fall_back, run.session_id, run.id, run.agent_id)
        self.offered += 1
        try:
            await self.store.announce(RunOffer(
                origin=self.store.origin, node=node, run_id=run.id,
                session_id=run.session_id, agent_id=run.agent_id).to_note())
        except Exception:
            # Not heard: the run starts here when its window ends, as if refused.
            log.warning("run %s could not be offered to node %s", run.id, node,
                        exc_info=True)
        log.debug("run %s offered to node %s (the agent's files are there)", run.id, node)

    def _fall_back(self, session_id: str, run_id: str, agent_id: str) -> None:
        """The offer ran out: start the run here if it is still queued."""
        if self._waiting.pop(run_id, None) is None:
            return
        task = asyncio.create_task(self._take_back(session_id, run_id, agent_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _take_back(self, session_id: str, run_id: str, agent_id: str) -> None:
        try:
            run = await self.store.get_run(run_id)
        except RunNotFound:
            return
        except Exception:
            log.warning("run %s: could not see whether its node took it; starting it "
                        "here", run_id, exc_info=True)
        else:
            if run.status != "queued":
                return  # taken (a run two nodes start is refused its lease on one)
        if len(self._returned) > 10_000:
            self._returned.clear()
        self._returned.add(run_id)
        self.fell_back += 1
        log.info("run %s: not taken by the node holding its agent's files within %.1f s; "
                 "starting it here", run_id, self.window_s)
        self.submit(session_id, run_id, agent_id)

    def heard(self, note: str) -> bool:
        """A note on the agents' channel: whether it was an offer (taken if it is for
        this node and made by another process)."""
        offer = RunOffer.from_note(note)
        if offer is None:
            return False
        if offer.node == self.node_id and offer.origin != self.store.origin:
            self.taken += 1
            self.submit(offer.session_id, offer.run_id, offer.agent_id)
        return True

    async def close(self) -> None:
        """Forget pending offers (shutting down: their runs stay queued in the store,
        where a takeover finds them)."""
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
