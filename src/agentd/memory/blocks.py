"""Core memory blocks: labelled texts an agent always sees, and edits with its tools.

A block (``persona``, ``human``, ``project``) has a value, a description, a size
limit in characters and a read-only flag. The agent's blocks are rendered after its
instructions in every model call of a run (read once when the run is built, and
again after one of its memory tools changed them), so an agent with no blocks costs
one indexed read per run and nothing per step. Every write is one store transaction
that checks the limit and the flag and records a new version (who wrote it, from
which run): any write can be seen in the history and undone by a restore. A block
may be shared: linked to several agents, who all see and write the same one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from agentd.errors import Conflict, InvalidInput, NotFound, ToolError
from agentd.llm.quoting import quote, quote_attr, unquote
from agentd.store import Store
from agentd.store.blocks import BlockChange, BlockRecord, BlockVersion, BlockWrite

if TYPE_CHECKING:
    from agentd.runtime.agents import Agents

__all__ = ["DEFAULT_LIMIT", "LABEL", "MAX_LIMIT", "BlockChange", "BlockRecord",
           "BlockVersion", "MemoryBlocks", "render_blocks"]

T = TypeVar("T")

LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: A new block's limit unless one is given; the largest one allowed.
DEFAULT_LIMIT = 5000
MAX_LIMIT = 100_000


def check_label(label: str, field: str = "path.label") -> str:
    if not LABEL.fullmatch(label):
        raise InvalidInput(f"a block label is 1 to 64 letters, digits, '_', '.' or '-' "
                           f"(got {label[:80]!r})", field=field)
    return label


def check_limit(limit: int | None) -> None:
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT} characters",
                           field="body.limit")


def render_blocks(instructions: str, blocks: Sequence[BlockRecord]) -> str:
    """The system prompt: the instructions, then the blocks in their stable order.

    A value is whatever a run (perhaps a tainted one) or a client wrote: it is quoted
    (:func:`~agentd.llm.quoting.quote`), so it cannot close its block's tag or the
    section and write on as the daemon. The labels are checked (:data:`LABEL`)."""
    if not blocks:
        return instructions
    parts = ["<memory_blocks>",
             "Your core memory: you always see these blocks. Change them with "
             "memory_append, memory_replace or memory_rewrite (by label). A block's "
             "text is shown with &, < and > written as &amp;, &lt; and &gt;; the tools "
             "take the text itself."]
    for b in blocks:
        attrs = (f'description="{quote_attr(b.description)}" '
                 f'chars="{len(b.value)}/{b.limit}"' + (' read_only="true"'
                                                         if b.read_only else ""))
        parts.append(f"<{b.label} {attrs}>\n{quote(b.value)}\n</{b.label}>")
    parts.append("</memory_blocks>")
    section = "\n".join(parts)
    return f"{instructions}\n\n{section}" if instructions else section


class MemoryBlocks:
    """The blocks of agents, by agent name (API) or id (tools, runs)."""

    def __init__(self, store: Store, *, agents: Agents, exclusive: bool = False) -> None:
        """``exclusive``: this daemon is the store's only writer (SQLite under the home
        lock), so what it read of an agent's blocks stays true until it writes one."""
        self.store = store
        self.agents = agents
        self.exclusive = exclusive
        #: Each agent's blocks as last read (exclusive stores only): a run of an agent
        #: whose blocks did not change reads nothing. Any write here clears it all
        #: (a shared block changes every agent linked to it; writes are rare).
        self._read: dict[str, list[BlockRecord]] = {}
        #: Reads under way (exclusive stores only), shared by the runs that start
        #: meanwhile: a burst of 10,000 runs of 100 agents reads 100 times, not 10,000.
        self._reading: dict[str, asyncio.Future[list[BlockRecord]]] = {}
        #: Bumped by every change: a read that began before one is not kept.
        self._generation = 0

    async def _writing(self, write: Awaitable[T]) -> T:
        """Do a write of blocks, forgetting what was read of them before and after (a
        read racing the write must not keep the old value)."""
        self._forget()
        try:
            return await write
        finally:
            self._forget()

    def changed(self) -> None:
        """Blocks were written outside this service (a consolidation's transaction):
        forget what was read of them."""
        self._forget()

    def _forget(self) -> None:
        self._read.clear()
        self._reading.clear()
        self._generation += 1

    async def _id(self, agent: str) -> str:
        return (await self.agents.get(agent)).id

    # -- what a run sees ------------------------------------------------------------

    async def instructions(self, agent_id: str, base: str) -> str:
        """``base`` with the agent's blocks (one read; none on an exclusive store when
        they did not change since the last)."""
        blocks = self._read.get(agent_id)
        if blocks is None:
            blocks = await (self._read_shared(agent_id) if self.exclusive
                            else self.store.list_blocks(agent_id))
        return render_blocks(base, blocks)

    def _read_shared(self, agent_id: str) -> asyncio.Future[list[BlockRecord]]:
        """The agent's blocks, read once for every run that asks while it is read, and
        kept unless they changed meanwhile."""
        reading = self._reading.get(agent_id)
        if reading is not None:
            return asyncio.shield(reading)
        generation = self._generation
        reading = asyncio.ensure_future(self.store.list_blocks(agent_id))
        self._reading[agent_id] = reading

        def done(read: asyncio.Future[list[BlockRecord]]) -> None:
            if self._reading.get(agent_id) is read:
                del self._reading[agent_id]
            if (not read.cancelled() and read.exception() is None
                    and generation == self._generation):
                if len(self._read) >= 10_000:
                    self._read.clear()
                self._read[agent_id] = read.result()

        reading.add_done_callback(done)
        return asyncio.shield(reading)

    # -- the API's calls (by agent name) ---------------------------------------------

    async def of_agent(self, agent: str) -> list[BlockRecord]:
        return await self.store.list_blocks(await self._id(agent))

    async def get(self, agent: str, label: str) -> BlockRecord:
        found = await self.store.get_block(await self._id(agent), check_label(label))
        if found is None:
            raise NotFound(f"agent {agent!r} has no memory block {label!r}",
                           code="block_not_found")
        return found

    async def put(self, agent: str, label: str, *, value: str,
                  description: str | None = None, limit: int | None = None,
                  read_only: bool | None = None, by: str) -> BlockRecord:
        """Create the block or replace its value (fields left out keep theirs, or the
        defaults for a new block)."""
        check_label(label)
        check_limit(limit)
        change = BlockChange(value=value, description=description, limit=limit,
                             read_only=read_only)
        return await self._writing(self.store.write_block(
            await self._id(agent), label, lambda _b: change,
            BlockWrite(changed_by=by, create=True, default_limit=DEFAULT_LIMIT)))

    async def patch(self, agent: str, label: str, change: BlockChange, *, by: str
                    ) -> BlockRecord:
        check_label(label)
        check_limit(change.limit)
        return await self._writing(self.store.write_block(
            await self._id(agent), label, lambda _b: change, BlockWrite(changed_by=by)))

    async def delete(self, agent: str, label: str) -> None:
        await self._writing(self.store.delete_block(await self._id(agent),
                                                    check_label(label)))

    async def history(self, agent: str, label: str) -> list[BlockVersion]:
        return await self.store.block_history(await self._id(agent), check_label(label))

    async def restore(self, agent: str, label: str, version: int, *, by: str
                      ) -> BlockRecord:
        return await self._writing(self.store.restore_block(
            await self._id(agent), check_label(label), version, BlockWrite(changed_by=by)))

    async def attach(self, agent: str, label: str, other: str) -> BlockRecord:
        """Share the agent's block with agent ``other`` (same label)."""
        agent_id, other_id = await self._id(agent), await self._id(other)
        if agent_id == other_id:
            raise InvalidInput("a block is shared with another agent", field="body.agent")
        return await self._writing(self.store.attach_block(agent_id, check_label(label),
                                                           other_id))

    # -- the agent's tools (by agent id; errors the model can act on) ----------------

    async def append(self, agent_id: str, label: str, text: str, *, run_id: str
                     ) -> BlockRecord:
        def edit(b: BlockRecord) -> BlockChange:
            sep = "\n" if b.value and not b.value.endswith("\n") else ""
            return BlockChange(value=f"{b.value}{sep}{text}")
        return await self._tool_write(agent_id, label, edit, run_id)

    async def replace(self, agent_id: str, label: str, old: str, new: str, *, run_id: str
                      ) -> BlockRecord:
        def edit(b: BlockRecord) -> BlockChange:
            if not old:
                raise ToolError("old must not be empty (use memory_append to add text)",
                                code="block_text_not_found")
            find, put = old, new
            count = b.value.count(find)
            if count == 0 and unquote(old) != old:
                # Copied as the prompt shows it (&lt; for <): the text it stands for,
                # and the new text is read the same way.
                find, put = unquote(old), unquote(new)
                count = b.value.count(find)
            if count == 0:
                raise ToolError(f"the text to replace does not occur in block {label!r} "
                                "(it must match exactly)", code="block_text_not_found")
            if count > 1:
                raise ToolError(f"the text to replace occurs {count} times in block "
                                f"{label!r}; give a longer, unique piece",
                                code="block_text_ambiguous")
            return BlockChange(value=b.value.replace(find, put, 1))
        return await self._tool_write(agent_id, label, edit, run_id)

    async def rewrite(self, agent_id: str, label: str, value: str, *, run_id: str
                      ) -> BlockRecord:
        return await self._tool_write(agent_id, label, lambda _b: BlockChange(value=value),
                                      run_id)

    async def _tool_write(self, agent_id: str, label: str,
                          edit: Callable[[BlockRecord], BlockChange], run_id: str
                          ) -> BlockRecord:
        if not LABEL.fullmatch(label):
            raise ToolError(f"no memory block {label[:80]!r}", code="block_not_found")
        before: list[int] = []

        def measured(b: BlockRecord) -> BlockChange:
            before.append(len(b.value))
            return edit(b)

        try:
            return await self._writing(self.store.write_block(
                agent_id, label, measured,
                BlockWrite(changed_by=f"run:{run_id}", run_id=run_id,
                           honour_read_only=True)))
        except NotFound:
            labels = [b.label for b in await self.store.list_blocks(agent_id)]
            raise ToolError(f"no memory block {label!r}; yours: "
                            f"{', '.join(labels) or '(none)'}",
                            code="block_not_found") from None
        except Conflict as exc:
            raise ToolError(exc.message, code=exc.code) from None
        except InvalidInput as exc:
            if exc.code != "block_over_limit":
                raise
            raise ToolError(
                f"block {label!r} is limited to {exc.details['limit']} characters; it has "
                f"{before[-1] if before else 0} now and the change would make it "
                f"{exc.details['size']}: shorten it (memory_rewrite or memory_replace)",
                code="block_over_limit") from None
