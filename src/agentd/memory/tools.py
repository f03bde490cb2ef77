"""The agent's tools for its core memory blocks (they use ``ToolContext.memory``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from agentd.errors import ToolError
from agentd.tools._tool import Tool, ToolContext, tool

if TYPE_CHECKING:
    from agentd.memory.blocks import MemoryBlocks

__all__ = ["MEMORY_TOOLS", "memory_append", "memory_replace", "memory_rewrite"]


def _service(ctx: ToolContext) -> MemoryBlocks:
    if ctx.memory is None or not ctx.agent_id:
        raise ToolError("memory blocks are not available here", code="memory_unavailable")
    return cast("MemoryBlocks", ctx.memory)


def _done(ctx: ToolContext, what: str, label: str, size: int, limit: int,
          version: int) -> str:
    ctx.memory_changed = True  # the run's next step renders the blocks again
    return f"{what} block {label!r}: now {size}/{limit} characters (version {version})"


@tool
async def memory_append(label: str, text: str, ctx: ToolContext) -> str:
    """Append text to one of your memory blocks (on a new line).

    Args:
        label: the block's label, as shown in <memory_blocks>
        text: the text to add at its end
    """
    b = await _service(ctx).append(ctx.agent_id, label, text,
                                   run_id=ctx.run_id)
    return _done(ctx, "appended to", label, len(b.value), b.limit, b.version)


@tool
async def memory_replace(label: str, old: str, new: str, ctx: ToolContext) -> str:
    """Replace a piece of text in one of your memory blocks (it must occur exactly once).

    Args:
        label: the block's label
        old: the exact text to replace, occurring once in the block
        new: the text to put in its place (may be empty, to delete)
    """
    b = await _service(ctx).replace(ctx.agent_id, label, old, new,
                                    run_id=ctx.run_id)
    return _done(ctx, "changed", label, len(b.value), b.limit, b.version)


@tool
async def memory_rewrite(label: str, value: str, ctx: ToolContext) -> str:
    """Replace the whole value of one of your memory blocks.

    Args:
        label: the block's label
        value: the block's new value
    """
    b = await _service(ctx).rewrite(ctx.agent_id, label, value,
                                    run_id=ctx.run_id)
    return _done(ctx, "rewrote", label, len(b.value), b.limit, b.version)


MEMORY_TOOLS: dict[str, Tool] = {t.name: t for t in (memory_append, memory_replace,
                                                     memory_rewrite)}
