"""Core memory blocks' SQL: every write one transaction, every version kept.

A block is a labelled text with a size limit that agents see in their context. A
block is linked to one or more agents (``agent_blocks``: the label is unique per
agent); a write checks the read-only flag and the limit, bumps ``version`` (only if
nobody wrote since it was read: two nodes cannot both win) and records the new
version in ``block_versions``, so the value before and after any write can be read
back and restored. A block that no agent links any more is deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agentd.errors import Conflict, InvalidInput, NotFound
from agentd.store.engine import Tx
from agentd.store.rows import new_id

__all__ = ["BlockChange", "BlockRecord", "BlockVersion", "BlockWrite", "attach", "delete",
           "forget_agent", "get", "history", "list_for", "version_of", "write"]

_COLS = ("b.id, l.label, b.description, b.value, b.char_limit, b.read_only, b.version, "
         "b.created_at, b.updated_at, l.position")


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockRecord:
    id: str
    label: str
    description: str
    value: str
    limit: int
    read_only: bool
    version: int
    created_at: float
    updated_at: float
    position: int


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockVersion:
    version: int
    value: str
    description: str
    limit: int
    read_only: bool
    changed_by: str
    run_id: str | None
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockChange:
    """The fields a write sets (None: unchanged)."""

    value: str | None = None
    description: str | None = None
    limit: int | None = None
    read_only: bool | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class BlockWrite:
    """Who writes, and whether the read-only flag binds them (it binds the agent's
    tools; the API may change a read-only block, and the flag itself)."""

    changed_by: str
    run_id: str | None = None
    honour_read_only: bool = False
    #: Create the block when the agent has none of that label (else NotFound).
    create: bool = False
    default_limit: int = 5000


def _block(row: tuple[Any, ...]) -> BlockRecord:
    return BlockRecord(id=str(row[0]), label=str(row[1]), description=str(row[2]),
                       value=str(row[3]), limit=int(row[4]), read_only=bool(row[5]),
                       version=int(row[6]), created_at=float(row[7]),
                       updated_at=float(row[8]), position=int(row[9]))


def list_for(tx: Tx, agent_id: str) -> list[BlockRecord]:
    """The agent's blocks in their stable order: position, then label."""
    rows = tx.all(f"SELECT {_COLS} FROM agent_blocks l JOIN memory_blocks b "
                  "ON b.id = l.block_id WHERE l.agent_id = ? ORDER BY l.position, l.label",
                  (agent_id,))
    return [_block(r) for r in rows]


def get(tx: Tx, agent_id: str, label: str) -> BlockRecord | None:
    row = tx.one(f"SELECT {_COLS} FROM agent_blocks l JOIN memory_blocks b "
                 "ON b.id = l.block_id WHERE l.agent_id = ? AND l.label = ?",
                 (agent_id, label))
    return _block(row) if row else None


def _must(tx: Tx, agent_id: str, label: str) -> BlockRecord:
    found = get(tx, agent_id, label)
    if found is None:
        raise NotFound(f"no memory block {label!r}", code="block_not_found")
    return found


def _version_row(tx: Tx, b: BlockRecord, who: BlockWrite, at: float) -> None:
    tx.execute("INSERT INTO block_versions (block_id, version, value, description, "
               "char_limit, read_only, changed_by, run_id, at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (b.id, b.version, b.value, b.description, b.limit, int(b.read_only),
                who.changed_by, who.run_id, at))


def _next_position(tx: Tx, agent_id: str) -> int:
    row = tx.one("SELECT MAX(position) FROM agent_blocks WHERE agent_id = ?", (agent_id,))
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def _check(new: BlockRecord) -> None:
    if len(new.value) > new.limit:
        raise InvalidInput(
            f"the value of block {new.label!r} would be {len(new.value)} characters, over "
            f"its limit of {new.limit}", field="body.value", code="block_over_limit",
            details={"limit": new.limit, "size": len(new.value)})


def write(tx: Tx, agent_id: str, label: str,
          edit: Callable[[BlockRecord], BlockChange], who: BlockWrite) -> BlockRecord:
    """Apply ``edit`` (given the block as it is) to the agent's block ``label`` as one
    new version; nothing is written if a check fails."""
    now = time.time()
    old = get(tx, agent_id, label)
    if old is None:
        if not who.create:
            raise NotFound(f"no memory block {label!r}", code="block_not_found")
        blank = BlockRecord(id=new_id("mb"), label=label, description="", value="",
                            limit=who.default_limit, read_only=False, version=0,
                            created_at=now, updated_at=now,
                            position=_next_position(tx, agent_id))
        change = edit(blank)
        new = _changed(blank, change, now)
        _check(new)
        tx.execute("INSERT INTO memory_blocks (id, label, description, value, char_limit, "
                   "read_only, version, created_at, updated_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (new.id, label, new.description, new.value, new.limit,
                    int(new.read_only), new.version, now, now))
        tx.execute("INSERT INTO agent_blocks (agent_id, block_id, label, position) "
                   "VALUES (?, ?, ?, ?)", (agent_id, new.id, label, new.position))
        _version_row(tx, new, who, now)
        return new
    if who.honour_read_only and old.read_only:
        raise Conflict(f"memory block {label!r} is read-only", code="block_read_only")
    new = _changed(old, edit(old), now)
    _check(new)
    tx.execute("UPDATE memory_blocks SET description = ?, value = ?, char_limit = ?, "
               "read_only = ?, version = ?, updated_at = ? WHERE id = ? AND version = ?",
               (new.description, new.value, new.limit, int(new.read_only), new.version,
                now, old.id, old.version))
    if tx.rowcount != 1:  # another node wrote in between (PostgreSQL, read committed)
        raise Conflict(f"memory block {label!r} changed meanwhile; try again",
                       code="block_changed", retryable=True)
    _version_row(tx, new, who, now)
    return new


def _changed(old: BlockRecord, change: BlockChange, now: float) -> BlockRecord:
    return replace(
        old, version=old.version + 1, updated_at=now,
        value=old.value if change.value is None else change.value,
        description=old.description if change.description is None else change.description,
        limit=old.limit if change.limit is None else change.limit,
        read_only=old.read_only if change.read_only is None else change.read_only)


def history(tx: Tx, agent_id: str, label: str) -> list[BlockVersion]:
    """Every version of the block, oldest first."""
    b = _must(tx, agent_id, label)
    rows = tx.all("SELECT version, value, description, char_limit, read_only, changed_by, "
                  "run_id, at FROM block_versions WHERE block_id = ? ORDER BY version",
                  (b.id,))
    return [BlockVersion(version=int(r[0]), value=str(r[1]), description=str(r[2]),
                         limit=int(r[3]), read_only=bool(r[4]), changed_by=str(r[5]),
                         run_id=None if r[6] is None else str(r[6]), at=float(r[7]))
            for r in rows]


def version_of(tx: Tx, block_id: str, version: int) -> BlockChange | None:
    row = tx.one("SELECT value, description, char_limit, read_only FROM block_versions "
                 "WHERE block_id = ? AND version = ?", (block_id, version))
    if row is None:
        return None
    return BlockChange(value=str(row[0]), description=str(row[1]), limit=int(row[2]),
                       read_only=bool(row[3]))


def attach(tx: Tx, agent_id: str, label: str, other_agent_id: str) -> BlockRecord:
    """Link the agent's block ``label`` to another agent too (same label): both see
    and write the same block."""
    b = _must(tx, agent_id, label)
    if get(tx, other_agent_id, label) is not None:
        raise Conflict(f"the other agent already has a memory block {label!r}",
                       code="block_exists")
    position = _next_position(tx, other_agent_id)
    tx.execute("INSERT INTO agent_blocks (agent_id, block_id, label, position) "
               "VALUES (?, ?, ?, ?)", (other_agent_id, b.id, label, position))
    return replace(b, position=position)


def delete(tx: Tx, agent_id: str, label: str) -> None:
    """Unlink the block from the agent; delete it once no agent links it."""
    b = _must(tx, agent_id, label)
    tx.execute("DELETE FROM agent_blocks WHERE agent_id = ? AND block_id = ?",
               (agent_id, b.id))
    _drop_unlinked(tx, [b.id])


def forget_agent(tx: Tx, agent_id: str) -> None:
    """Before an agent is deleted: unlink its blocks, deleting those left unlinked."""
    ids = [str(r[0]) for r in tx.all("SELECT block_id FROM agent_blocks WHERE agent_id = ?",
                                     (agent_id,))]
    if not ids:
        return
    tx.execute("DELETE FROM agent_blocks WHERE agent_id = ?", (agent_id,))
    _drop_unlinked(tx, ids)


def _drop_unlinked(tx: Tx, ids: list[str]) -> None:
    for block_id in ids:
        tx.execute("DELETE FROM memory_blocks WHERE id = ? AND NOT EXISTS "
                   "(SELECT 1 FROM agent_blocks WHERE block_id = ?)", (block_id, block_id))
