"""The sessions service: a session's log, its streams, and what is done to it as a
whole (checkpoints, restore, fork, its policy layer: :class:`SessionOps`)."""

from __future__ import annotations

from agentd.config import Settings
from agentd.runtime._session_ops import SessionOps
from agentd.runtime.agents import Agents
from agentd.runtime.bus import EventBus, Subscription
from agentd.runtime.history import HistoryCache
from agentd.runtime.sandboxes import Sandboxes
from agentd.runtime.supervisor import Supervisor
from agentd.runtime.workspaces import WorkspaceKeeper
from agentd.store import Store
from agentd.store.records import AgentRecord, EventRecord, SessionRecord

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

    async def read_events(self, session_id: str, after: int = 0, limit: int | None = None
                          ) -> list[EventRecord]:
        return await self.store.read_events(session_id, after=after, limit=limit)

    async def read_after(self, session_id: str, after: int) -> list[EventRecord]:
        return await self.store.read_events(session_id, after=after)

    def subscribe(self, session_id: str, buffer: int | None = None) -> Subscription:
        return self.bus.subscribe(session_id, buffer)
