"""The sessions service: a session's log, its streams, and what is done to it as a
whole (checkpoints, restore, fork, its policy layer: :class:`SessionOps`)."""

from __future__ import annotations

from typing import Any

from agentd.config import Settings
from agentd.errors import InvalidInput, NotFound
from agentd.runtime.agents import Agents
from agentd.runtime.bus import EventBus, Subscription
from agentd.runtime.history import HistoryCache
from agentd.runtime.sandboxes import Sandboxes
from agentd.runtime.session_ops import SessionOps
from agentd.runtime.supervisor import Supervisor
from agentd.runtime.workspaces import WorkspaceKeeper, snapshot_before
from agentd.store import SessionPage, Store
from agentd.store.records import AgentRecord, EventRecord, SessionRecord, tenant_of

__all__ = ["Sessions"]


class Sessions(SessionOps):
    def __init__(self, settings: Settings, store: Store, *, bus: EventBus,
                 histories: HistoryCache, agents: Agents, supervisor: Supervisor,
                 sandboxes: Sandboxes, workspaces: WorkspaceKeeper | None) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.histories = histories
        self.agents = agents
        self.supervisor = supervisor
        self.sandboxes = sandboxes
        self.workspaces = workspaces

    async def of_agent(self, name: str) -> list[SessionRecord]:
        agent = await self.agents.get(name)
        return await self.store.list_sessions(agent.id)

    async def page_of_agent(self, name: str, *, limit: int, after: str | None = None,
                            q: str | None = None) -> SessionPage:
        """A page of the agent's sessions, most recent activity first."""
        agent = await self.agents.get(name)
        return await self.store.session_page(agent.id, limit=limit, after=after, q=q)

    async def get_session(self, name: str, key: str) -> tuple[AgentRecord, SessionRecord]:
        agent = await self.agents.get(name)
        return agent, await self.store.get_session(agent.id, key)

    async def delete(self, name: str, key: str) -> None:
        """Delete the session: its run cancelled, its log gone, its streams ended."""
        agent, session = await self.get_session(name, key)
        await self.supervisor.cancel_session(session.id, "session deleted")
        await self.store.delete_session(agent.id, key)
        self.histories.drop(session.id)
        self.bus.close_session(session.id)
        await self.sandboxes.close_shells(f"{agent.id}/{session.id}")

    async def read_events(self, session_id: str, after: int = 0, limit: int | None = None,
                          before: int | None = None) -> list[EventRecord]:
        return await self.store.read_events(session_id, after=after, limit=limit,
                                            before=before)

    async def read_after(self, session_id: str, after: int) -> list[EventRecord]:
        return await self.store.read_events(session_id, after=after)

    def subscribe(self, session_id: str, buffer: int | None = None) -> Subscription:
        return self.bus.subscribe(session_id, buffer)

    async def snapshot_changes(self, name: str, ref: str, *, against: str | None = None,
                               session: str | None = None, seq: int | None = None
                               ) -> dict[str, Any]:
        """The files that differ between two of the agent's workspace snapshots: ``ref``
        and ``against``, or with ``session`` the snapshot that session had just before
        its ``workspace.snapshot`` event of ``ref`` (what that step changed: the event
        at ``seq``, else the latest of ``ref``, as a restore may bring a state back);
        with neither, every file of ``ref`` (as added to an empty workspace)."""
        if against is not None and session is not None:
            raise InvalidInput("give against or session, not both", field="query.against")
        if seq is not None and session is None:
            raise InvalidInput("seq names an event of a session: give session too",
                               field="query.seq")
        agent = await self.agents.get(name)
        if self.workspaces is None:
            raise NotFound("workspace snapshots are off on this daemon",
                           code="snapshot_not_found")
        if session is not None:
            record = await self.store.get_session(agent.id, session)
            events = await self.store.read_events(record.id)
            at = next((e.seq for e in reversed(events) if e.kind == "workspace.snapshot"
                       and e.data.get("ref") == ref and (seq is None or e.seq == seq)),
                      None)
            if at is None:
                raise NotFound(f"session {session!r} has no snapshot {ref}"
                               + (f" at seq {seq}" if seq is not None else ""),
                               code="snapshot_not_found")
            against = snapshot_before(events, at)
        found = await self.workspaces.changes(agent.id, ref, against,
                                              scope=tenant_of(agent.settings) or "_none")
        return {"ref": ref, "against": against, **found}
