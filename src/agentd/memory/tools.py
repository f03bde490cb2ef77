"""The agent's memory tools: core memory blocks (``ToolContext.memory``) and long-term
entries (``ToolContext.entries``, acting in ``ToolContext.memory_scope``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from agentd.errors import ToolError
from agentd.tools.base import Tool, ToolContext, acting, tool

if TYPE_CHECKING:
    from agentd.memory.blocks import MemoryBlocks
    from agentd.memory.entries import Hit, MemoryEntries, Scope

__all__ = ["MEMORY_TOOLS", "forget", "memory_append", "memory_replace", "memory_rewrite",
           "recall", "remember", "update_memory"]


def _service(ctx: ToolContext) -> MemoryBlocks:
    if ctx.memory is None or not ctx.agent_id:
        raise ToolError("memory blocks are not available here", code="memory_unavailable")
    scope = ctx.memory_scope
    if scope is not None and scope.tainted:
        # A block is in every later session's instructions (and every agent's sharing
        # it): text from outside must not get there. Entries may (they are marked).
        raise ToolError("this session has read content from outside, so it cannot change "
                        "memory blocks (they are part of every session's instructions); "
                        "use remember instead (the entry is marked untrusted), or ask the "
                        "user to change the block", code="block_tainted_session")
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


# -- long-term entries ------------------------------------------------------------------


def _entries(ctx: ToolContext) -> tuple[MemoryEntries, Scope]:
    if ctx.entries is None or ctx.memory_scope is None:
        raise ToolError("long-term memory is not available here", code="memory_unavailable")
    return cast("MemoryEntries", ctx.entries), cast("Scope", ctx.memory_scope)


@tool
async def remember(content: str, ctx: ToolContext, tags: list[str] | None = None,
                   namespace: str | None = None) -> str:
    """Keep a fact, preference or note in your long-term memory, verbatim.

    Args:
        content: the text to keep (one self-contained fact reads best later)
        tags: optional labels to filter by later
        namespace: a shared namespace from your settings; left out: your own memory
    """
    from agentd.memory.entries import EntryIn

    service, scope = _entries(ctx)
    written = await acting(service.add(scope, [EntryIn(content=content, tags=tags or (),
                                                       namespace=namespace)]))
    entry, created = written[0]
    if not created:
        return f"already remembered as {entry.id} (nothing new was stored)"
    return f"remembered as {entry.id}"


def _line(h: Hit) -> str:
    from agentd.store.records import iso

    e = h.entry
    mark = " [UNTRUSTED: written by a session that had read outside content]" if (
        e.tainted) else ""
    tags = f" tags={','.join(e.tags)}" if e.tags else ""
    return (f"- {e.id} (score {h.score:.2f}, {(iso(e.created_at) or '')[:10]}{tags}){mark}: "
            f"{e.content}")


@tool
async def recall(query: str, ctx: ToolContext, limit: int = 5,
                 tags: list[str] | None = None) -> str:
    """Search your long-term memory by meaning and words; the best matches first.

    Args:
        query: what you want to remember (a question or keywords)
        limit: how many entries at most (1 to 20)
        tags: only entries having all of these tags
    """
    from agentd.store.entries import EntryFilter

    service, scope = _entries(ctx)
    if not 1 <= limit <= 20:
        raise ToolError("limit must be between 1 and 20", code="invalid_input")
    hits: list[Hit] = await acting(service.search(
        scope, query, limit=limit, filters=EntryFilter(tags_all=tuple(tags or ()))))
    if not hits:
        return "nothing in memory matches"
    tainted = [h.entry.id for h in hits if h.entry.tainted]
    if tainted:
        # Injected text must not be laundered through memory into a clean session.
        ctx.untrusted = f"recalled memory written by a tainted session ({', '.join(tainted)})"
    return "\n".join(_line(h) for h in hits)


@tool
async def forget(entry_id: str, ctx: ToolContext) -> str:
    """Delete an entry from your long-term memory.

    Args:
        entry_id: the entry's id (mem_...), as recall shows it
    """
    service, scope = _entries(ctx)
    entry = await acting(service.delete(scope, entry_id))
    return f"forgot {entry.id}"


@tool
async def update_memory(entry_id: str, ctx: ToolContext, content: str | None = None,
                        tags: list[str] | None = None) -> str:
    """Change an entry of your long-term memory (its text, its tags or both).

    Args:
        entry_id: the entry's id (mem_...), as recall shows it
        content: the new text (left out: unchanged)
        tags: the new tags (left out: unchanged)
    """
    from agentd.store.entries import EntryChange

    service, scope = _entries(ctx)
    if content is None and tags is None:
        raise ToolError("give content, tags or both", code="invalid_input")
    entry = await acting(service.update(scope, entry_id, EntryChange(
        content=content, tags=None if tags is None else tuple(tags))))
    return f"updated {entry.id} (version {entry.version})"


MEMORY_TOOLS: dict[str, Tool] = {t.name: t for t in (
    memory_append, memory_replace, memory_rewrite, remember, recall, forget,
    update_memory)}
