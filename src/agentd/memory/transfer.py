"""An agent's memory as JSON lines: export, and import that writes all or nothing.

The file is one JSON object per line: a header (``{"type": "agentd.memory",
"version": 1, ...}``), then ``block`` lines (label, value, description, limit,
read_only) and ``entry`` lines (content, tags, metadata, tainted, created_at,
namespace). An import checks every line before it writes anything: a bad line is a
422 naming the line and the field, and nothing is written. Entries then go in one
transaction (duplicates of what the agent has are skipped and counted); blocks are
written after them, each its own new version (``changed_by: import``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from agentd.errors import InvalidInput
from agentd.memory.blocks import LABEL, MAX_LIMIT
from agentd.memory.entries import EntryIn, MemoryEntries, Scope, entry_dict
from agentd.settings.memory import NAMESPACE_PATTERN

if TYPE_CHECKING:
    from agentd.memory.blocks import MemoryBlocks

__all__ = ["FORMAT", "ImportReport", "export_lines", "import_lines"]

FORMAT = "agentd.memory"
VERSION = 1
#: The most lines one import may hold.
MAX_LINES = 1_000_000


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class HeaderLine(_Line):
    type: Literal["agentd.memory"]
    version: Literal[1]
    agent: str | None = None
    exported_at: str | None = None


class BlockLine(_Line):
    type: Literal["block"]
    label: str = Field(pattern=LABEL.pattern)
    value: str = Field(max_length=MAX_LIMIT)
    description: str = Field(default="", max_length=2000)
    limit: int = Field(default=5000, strict=True, ge=1, le=MAX_LIMIT)
    read_only: bool = Field(default=False, strict=True)


class EntryLine(_Line):
    type: Literal["entry"]
    content: str = Field(min_length=1)
    id: str | None = Field(default=None, max_length=64,
                           description="The id it had where it was exported (not kept).")
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    namespace: str | None = Field(default=None, pattern=NAMESPACE_PATTERN)
    tainted: bool = Field(default=False, strict=True)
    tainted_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    source: dict[str, Any] | None = None
    version: int | None = None


class ImportReport(BaseModel):
    blocks: int = Field(description="Blocks written.")
    entries: int = Field(description="Entries written.")
    duplicates: int = Field(description="Entries skipped: the agent had their content.")


async def export_lines(entries: MemoryEntries, blocks: MemoryBlocks, agent: str,
                       scope: Scope) -> AsyncIterator[bytes]:
    """The agent's blocks and the entries of its own and shared namespaces."""
    from agentd.store.records import iso

    yield orjson.dumps({"type": FORMAT, "version": VERSION, "agent": agent,
                        "exported_at": iso(time.time())}) + b"\n"
    for b in await blocks.of_agent(agent):
        yield orjson.dumps({"type": "block", "label": b.label, "value": b.value,
                            "description": b.description, "limit": b.limit,
                            "read_only": b.read_only}) + b"\n"
    before: str | None = None
    while True:
        page = await entries.page(scope, limit=1000, before=before)
        for e in page:
            yield orjson.dumps({"type": "entry", **entry_dict(e)}) + b"\n"
        if len(page) < 1000:
            return
        before = page[-1].id


def parse_lines(body: bytes) -> tuple[list[BlockLine], list[EntryLine], list[int]]:
    """Every line checked; the first bad one refused with its number and field."""
    blocks: list[BlockLine] = []
    found: list[EntryLine] = []
    numbers: list[int] = []
    lines = body.splitlines()
    if len(lines) > MAX_LINES:
        raise InvalidInput(f"at most {MAX_LINES} lines", field="body")
    seen_labels: set[str] = set()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"body.line[{number}]"
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"line {number} is not JSON: {exc}", field=where) from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"line {number} is not a JSON object", field=where)
        kind = obj.get("type")
        models: dict[object, type[_Line]] = {"agentd.memory": HeaderLine,
                                             "block": BlockLine, "entry": EntryLine}
        model = models.get(kind)
        if model is None:
            raise InvalidInput(f"line {number}: type must be 'agentd.memory', 'block' or "
                               f"'entry' (got {str(kind)[:40]!r})", field=f"{where}.type")
        try:
            line = model.model_validate(obj)
        except ValidationError as exc:
            raise InvalidInput.of(exc, f"line {number}", where) from None
        if isinstance(line, BlockLine):
            if len(line.value) > line.limit:
                raise InvalidInput(f"line {number}: the value has {len(line.value)} "
                                   f"characters, over its limit of {line.limit}",
                                   field=f"{where}.value")
            if line.label in seen_labels:
                raise InvalidInput(f"line {number}: block {line.label!r} given twice",
                                   field=f"{where}.label")
            seen_labels.add(line.label)
            blocks.append(line)
        elif isinstance(line, EntryLine):
            found.append(line)
            numbers.append(number)
    return blocks, found, numbers


async def import_lines(entries: MemoryEntries, blocks: MemoryBlocks, agent: str,
                       scope: Scope, body: bytes) -> ImportReport:
    block_lines, entry_lines, numbers = parse_lines(body)
    items = [EntryIn(content=e.content, tags=e.tags, metadata=e.metadata,
                     namespace=e.namespace,
                     tainted=(e.tainted_reason or "imported as tainted") if e.tainted
                     else None)
             for e in entry_lines]
    stamps = [e.created_at.timestamp() if e.created_at else None for e in entry_lines]
    where = [f"body.line[{n}]" for n in numbers]
    written = (await entries.add(scope, items, where=where, batch_limit=None,
                                 created_at=stamps) if items else [])
    for b in block_lines:
        await blocks.put(agent, b.label, value=b.value, description=b.description,
                         limit=b.limit, read_only=b.read_only, by="import")
    created = sum(1 for _, c in written if c)
    return ImportReport(blocks=len(block_lines), entries=created,
                        duplicates=len(written) - created)
