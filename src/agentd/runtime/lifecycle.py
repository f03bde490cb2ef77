"""An agent's lifecycle: pause, resume, stop and delete, with what each does to runs.

- **pause**: the agent takes no new messages; runs already queued stay queued in the
  store, and its sessions are checkpointed.
- **resume**: messages are taken again and the held runs start in their order.
- **stop**: every run of the agent is cancelled (queued ones too) and its sessions
  are checkpointed; resume it to use it again.
- **delete**: runs cancelled, sessions, workspace and record removed.
"""

from __future__ import annotations

from agentd.errors import AgentNotAccepting, InvalidInput
from agentd.events import CheckpointKind
from agentd.runtime.agents import Agents
from agentd.runtime.bus import EventBus
from agentd.runtime.history import HistoryCache
from agentd.runtime.runs import Runs
from agentd.runtime.sandboxes import Sandboxes
from agentd.runtime.supervisor import Supervisor
from agentd.security.identity import Principal
from agentd.store import Store
from agentd.store.records import AgentRecord, AgentState
from agentd.tools.mcp import MCPManager

__all__ = ["ACTIONS", "Lifecycle"]

ACTIONS = ("pause", "resume", "stop")


class Lifecycle:
    def __init__(self, store: Store, *, bus: EventBus, histories: HistoryCache,
                 agents: Agents, runs: Runs, supervisor: Supervisor, sandboxes: Sandboxes,
                 mcp: MCPManager) -> None:
        self.store = store
        self.bus = bus
        self.histories = histories
        self.agents = agents
        self.runs = runs
        self.supervisor = supervisor
        self.sandboxes = sandboxes
        self.mcp = mcp

    async def set_state(self, name: str, action: str) -> AgentRecord:
        """``pause``, ``resume`` or ``stop`` the agent (see the module's docstring)."""
        if action not in ACTIONS:
            raise InvalidInput(f"unknown agent action {action!r}")
        agent = await self.agents.get(name)
        if action == "pause":
            if agent.state in ("stopped", "error"):
                raise AgentNotAccepting(f"agent {name!r} is {agent.state}; resume it first",
                                        code=f"agent_{agent.state}")
            agent = await self._store_state(name, "paused")
            await self._checkpoint(agent, "pause")
        elif action == "resume":
            agent = await self._store_state(name, "running")
            await self.runs.start_held(agent)
        else:
            agent = await self._store_state(name, "stopped")
            for session in await self.store.list_sessions(agent.id):
                await self.supervisor.cancel_session(session.id, "agent stopped")
            # Runs held in the store while the agent was paused are cancelled too.
            await self.runs.cancel_held(agent, "agent stopped")
            await self._checkpoint(agent, "stop")
        return agent

    async def delete(self, name: str, actor: Principal | None = None) -> None:
        agent = await self.agents.get(name)
        sessions = await self.store.list_sessions(agent.id)
        for session in sessions:
            await self.supervisor.cancel_session(session.id, "agent deleted")
            self.histories.drop(session.id)
            await self.sandboxes.close_shells(f"{agent.id}/{session.id}")
        await self.mcp.close(agent.id)
        await self.agents.delete(agent, actor)
        # The sessions' streams end once the deletion is committed, so that a client
        # reconnecting at once is told agent_not_found. Ended before it, a reconnect
        # could open a new stream of a session still in the store, which nothing
        # would end (the console then never said the agent was gone).
        for session in sessions:
            self.bus.close_session(session.id)

    async def _store_state(self, name: str, state: AgentState) -> AgentRecord:
        return await self.agents.set_state(name, state)

    async def _checkpoint(self, agent: AgentRecord, kind: CheckpointKind) -> None:
        """Checkpoint each of the agent's sessions changed since its last checkpoint."""
        events = await self.store.checkpoint_changed(kind, agent_id=agent.id)
        self.bus.publish(events)
        for event in events:
            self.histories.offer([event])
