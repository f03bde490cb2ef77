"""The agent's memory as a run sees it: the :class:`agentd.runtime.ports.RunMemory`
the composition root hands the core's executors (the core imports nothing of
:mod:`agentd.memory`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentd.events import RecalledData
from agentd.memory.entries import Scope
from agentd.memory.recall import recall_context
from agentd.memory.tools import MEMORY_TOOLS

if TYPE_CHECKING:
    from agentd.memory.blocks import MemoryBlocks
    from agentd.memory.entries import MemoryEntries
    from agentd.settings import AgentSettings

__all__ = ["MemoryForRuns"]


class MemoryForRuns:
    """Core blocks in a run's instructions, entries recalled for its messages, and
    what the memory tools act on."""

    tool_names = frozenset(MEMORY_TOOLS)

    def __init__(self, blocks: MemoryBlocks | None, entries: MemoryEntries | None) -> None:
        self.blocks = blocks
        self.entries = entries

    async def instructions(self, agent_id: str, base: str) -> str:
        """``base`` with the agent's blocks (one indexed read, none per step)."""
        return base if self.blocks is None else await self.blocks.instructions(agent_id, base)

    def scope(self, *, agent_id: str, settings: AgentSettings, session: str, run_id: str,
              seq: int, tainted: str | None) -> Scope | None:
        """Where the memory tools act: the agent's namespaces, from this session, with
        its taint (what a tainted session writes is tainted)."""
        if self.entries is None:
            return None
        return Scope(agent_id=agent_id, settings=settings.memory, session=session,
                     run_id=run_id, seq=seq, tainted=tainted, tenant=settings.tenant)

    async def recall(self, scope: Scope, message: str) -> tuple[str, RecalledData]:
        assert self.entries is not None  # (a scope is made only with entries)
        return await recall_context(self.entries, scope, message)
