"""The facade's calls on an agent's memory: its core blocks
(:mod:`agentd.memory.blocks`) and long-term entries (:mod:`agentd.memory.entries`),
consolidation, export and import. A part of :class:`agentd.assembly.Runtime`, kept
apart to keep that module readable."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from agentd.memory.blocks import BlockChange, BlockRecord, BlockVersion, MemoryBlocks
from agentd.memory.consolidation import Consolidation, Consolidator
from agentd.memory.entries import EntryIn, Hit, MemoryEntries
from agentd.memory.transfer import ImportReport, export_lines, import_lines
from agentd.store.entries import EntryChange, EntryFilter, EntryRecord

__all__ = ["MemoryCalls"]


class MemoryCalls:
    """Delegations to the memory services the runtime builds."""

    memory: MemoryBlocks
    entries: MemoryEntries
    consolidator: Consolidator

    # -- memory blocks (agentd.memory.blocks) ---------------------------------------

    async def list_blocks(self, agent: str) -> list[BlockRecord]:
        return await self.memory.of_agent(agent)

    async def get_block(self, agent: str, label: str) -> BlockRecord:
        return await self.memory.get(agent, label)

    async def put_block(self, agent: str, label: str, *, value: str,
                        description: str | None = None, limit: int | None = None,
                        read_only: bool | None = None, by: str) -> BlockRecord:
        return await self.memory.put(agent, label, value=value, description=description,
                                     limit=limit, read_only=read_only, by=by)

    async def patch_block(self, agent: str, label: str, change: BlockChange, *, by: str
                          ) -> BlockRecord:
        return await self.memory.patch(agent, label, change, by=by)

    async def delete_block(self, agent: str, label: str) -> None:
        await self.memory.delete(agent, label)

    async def block_history(self, agent: str, label: str) -> list[BlockVersion]:
        return await self.memory.history(agent, label)

    async def restore_block(self, agent: str, label: str, version: int, *, by: str
                            ) -> BlockRecord:
        return await self.memory.restore(agent, label, version, by=by)

    async def attach_block(self, agent: str, label: str, other: str) -> BlockRecord:
        return await self.memory.attach(agent, label, other)

    # -- long-term memory entries (agentd.memory.entries) ---------------------------------

    async def add_memory(self, agent: str, items: Sequence[EntryIn]
                         ) -> list[tuple[EntryRecord, bool]]:
        return await self.entries.add(await self.entries.scope(agent), items)

    async def get_memory(self, agent: str, entry_id: str) -> EntryRecord:
        return await self.entries.get(await self.entries.scope(agent), entry_id)

    async def update_memory(self, agent: str, entry_id: str, change: EntryChange, *,
                            expect_version: int | None = None) -> EntryRecord:
        return await self.entries.update(await self.entries.scope(agent), entry_id, change,
                                         expect_version=expect_version)

    async def delete_memory(self, agent: str, entry_id: str) -> EntryRecord:
        return await self.entries.delete(await self.entries.scope(agent), entry_id)

    async def list_memory(self, agent: str, *, namespaces: Sequence[str | None] | None = None,
                          filters: EntryFilter | None = None, limit: int = 50,
                          before: str | None = None) -> list[EntryRecord]:
        return await self.entries.page(await self.entries.scope(agent), namespaces=namespaces,
                                       filters=filters, limit=limit, before=before)

    async def search_memory(self, agent: str, query: str, *, limit: int = 10,
                            namespaces: Sequence[str | None] | None = None,
                            filters: EntryFilter | None = None,
                            vector_weight: float | None = None) -> list[Hit]:
        return await self.entries.search(await self.entries.scope(agent), query,
                                         limit=limit, namespaces=namespaces,
                                         filters=filters, vector_weight=vector_weight)

    async def consolidate_memory(self, agent: str, session: str | None = None
                                 ) -> list[Consolidation]:
        """Turn new history (of one session, or all) into memory now."""
        return await self.consolidator.consolidate(agent, session)

    async def export_memory(self, agent: str) -> AsyncIterator[bytes]:
        """The agent's blocks and entries as JSON lines (agentd.memory.transfer)."""
        scope = await self.entries.scope(agent)
        return export_lines(self.entries, self.memory, agent, scope)

    async def import_memory(self, agent: str, body: bytes) -> ImportReport:
        return await import_lines(self.entries, self.memory, agent,
                                  await self.entries.scope(agent), body)
