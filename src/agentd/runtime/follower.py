"""Following commits made by other nodes (PostgreSQL shared by several daemons).

Each commit to a session's log is announced by the store (``LISTEN``/``NOTIFY``); if
this node's subscribers of that session have not seen it, the new events are read
from the log and published here, so a client follows a session from any node.
Changes to agents made by other nodes are announced too: this node's copy of such an
agent (if it is awake here) is read again at its next use, and the change is given to
this node's activity feeds as it comes. So are cancels asked of the node driving a
run: if it is this one, it cancels the run at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agentd.runtime.bus import EventBus
from agentd.store import Store
from agentd.store.records import AgentChange

__all__ = ["LogFollower"]

log = logging.getLogger(__name__)


class LogFollower:
    def __init__(self, store: Store, bus: EventBus, *,
                 on_agent_change: Callable[[AgentChange], None] = lambda change: None,
                 on_cancel: Callable[[str], None] = lambda run_id: None) -> None:
        self.store = store
        self.bus = bus
        #: Told of each change another node made (the agents service's copies).
        self.on_agent_change = on_agent_change
        #: Shown every note on the agents' channel first; True: it was its own (a run
        #: offered to a node: :mod:`agentd.runtime.affinity`), not an agent's change.
        self.on_note: Callable[[str], bool] = lambda note: False
        #: Told of each cancel asked of the node driving a run (the run's id).
        self.on_cancel = on_cancel
        self._listener: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        #: Sessions whose events committed elsewhere are being read: the seq to reach.
        self._catching_up: dict[str, int] = {}

    def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(
                self.store.engine.listen(self.committed, self.agent_changed,
                                         self.cancel_asked),
                name="agentd-listen")

    async def stop(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def committed(self, session_id: str, seq: int) -> None:
        """A commit to ``session_id``'s log up to ``seq``, by any node: if this node's
        subscribers have not seen it, read it from the log and publish it."""
        if self.bus.behind(session_id, seq) is None:
            return
        if session_id in self._catching_up:
            self._catching_up[session_id] = max(self._catching_up[session_id], seq)
            return
        self._catching_up[session_id] = seq
        task = asyncio.create_task(self._catch_up(session_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def agent_changed(self, note: str) -> None:
        """A change to an agent committed by any node (``note``: its announcement):
        this node's feeds get another node's; its own it published when it made them."""
        if self.on_note(note):
            return
        try:
            origin, change = AgentChange.from_note(note)
        except ValueError:
            log.warning("an agent change announced in an unknown form: %.80r", note)
            return
        if origin != self.store.origin:
            self.on_agent_change(change)
            self.bus.publish_agent(change)

    def cancel_asked(self, run_id: str) -> None:
        """A cancel of ``run_id`` asked of whichever node drives it (by any node)."""
        try:
            self.on_cancel(run_id)
        except Exception:
            log.exception("could not act on the cancel of run %s", run_id)

    async def _catch_up(self, session_id: str) -> None:
        try:
            while (last := self.bus.behind(session_id, self._catching_up[session_id])
                   ) is not None:
                # Subscribers fill any gap from the log themselves; a fresh subscriber
                # needs only the newest events.
                after = last if last else max(self._catching_up[session_id] - 64, 0)
                events = await self.store.read_events(session_id, after=after, limit=1000)
                if not events:
                    break
                self.bus.publish(events, remote=True)
        except Exception:
            log.exception("could not read session %s's new events", session_id)
        finally:
            del self._catching_up[session_id]
