"""Sandbox uids: one per live agent, from the daemon's range, given again only once
nothing of the agent that held it can remain.

``sandbox_uids`` (migration 17) holds a row per uid given: the agent holding it, its
tenant (kept in step with the agent's settings, for the per-tenant cap), and
``released_at``, set in the transaction that deletes the agent. One held uid per
agent (a partial unique index). ``sandbox_uid_nodes`` holds the nodes that used the
uid (started something as it, gave it a workspace) and whether every such use there
kept the host read-only (``sealed``: bubblewrap, gVisor, or the process backend and
browsers with a read-only host, :mod:`agentd.sandbox.hostfs`).

A released uid waits ("quarantine") until each node that used it has swept it: its
processes killed, its IPC objects and the old workspace removed
(:mod:`agentd.sandbox.reclaim`); the node then drops its row, and the uid's row goes
with the last one, which makes the uid free. A row with ``sealed = 0`` is never
dropped: a host that was writable to the uid may hold its files anywhere, so such a
uid is never given again (rows from before migration 17 are all such). A uid no node
used is free as soon as it is released.

The next uid is one above the highest given in the range (a uid never used before),
else the lowest free one. On PostgreSQL an advisory lock makes nodes allocate, release
and reclaim one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson

from agentd.errors import AgentNotFound, Conflict, QuotaExceeded
from agentd.store.engine import Tx
from agentd.store.records import tenant_of

__all__ = ["assign", "lookup", "quarantined", "release", "retenant", "swept"]

_LOCK = 872101  # pg_advisory_xact_lock key (migrations use 872100)


def _lock(tx: Tx, dialect: str) -> None:
    if dialect == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))


def lookup(tx: Tx, agent_id: str, node: str | None = None) -> tuple[int, bool] | None:
    """The uid the agent holds, and whether ``node`` is recorded as using it (True
    when no node is asked about)."""
    row = tx.one("SELECT u.uid, n.node_id FROM sandbox_uids u LEFT JOIN "
                 "sandbox_uid_nodes n ON n.uid = u.uid AND n.node_id = ? "
                 "WHERE u.agent_id = ? AND u.released_at IS NULL",
                 (node or "", agent_id))
    if row is None:
        return None
    return int(row[0]), node is None or row[1] is not None


def assign(tx: Tx, agent_id: str, *, base: int, count: int, dialect: str,
           node: str | None = None, sealed: bool = True,
           cap_of: Callable[[str], int | None] | None = None) -> int:
    """The agent's uid: the one it holds, else the next free one of the range (within
    its tenant's cap, ``cap_of(tenant)``); ``node``: record that this node uses it
    (``sealed``: every use there keeps the host read-only).

    Raises:
        AgentNotFound: the agent does not exist (any more): a uid is never given to
            an agent deleted meanwhile, nor its use recorded.
        QuotaExceeded: the tenant's agents hold its cap of uids (403).
        Conflict: ``sandbox_uids_exhausted``, no uid of the range is free (retryable
            when some wait to be reclaimed).
    """
    _lock(tx, dialect)
    agent = tx.one("SELECT settings FROM agents WHERE id = ?", (agent_id,))
    if agent is None:
        raise AgentNotFound(f"agent {agent_id!r} not found (deleted)")
    held = tx.one("SELECT uid FROM sandbox_uids WHERE agent_id = ? AND released_at IS NULL",
                  (agent_id,))
    if held is not None:
        uid = int(held[0])
    else:
        settings = orjson.loads(agent[0])
        tenant = (tenant_of(settings) if isinstance(settings, dict) else None) or ""
        cap = cap_of(tenant) if cap_of is not None else None
        if cap is not None:
            row = tx.one("SELECT COUNT(*) FROM sandbox_uids WHERE tenant = ? AND "
                         "released_at IS NULL", (tenant,))
            if row is not None and int(row[0]) >= cap:
                # (the same answer as every tenant quota: 403 quota_exceeded)
                raise QuotaExceeded(tenant, "sandbox_uids", cap,
                                    what="sandbox uids, one per agent whose commands ran")
        uid = _free(tx, base, count)
        tx.execute("INSERT INTO sandbox_uids (uid, agent_id, tenant, created_at) "
                   "VALUES (?, ?, ?, ?)", (uid, agent_id, tenant, time.time()))
    if node is not None:
        # (0 once any use there was not sealed: the product of the flags)
        tx.execute("INSERT INTO sandbox_uid_nodes (uid, node_id, sealed) VALUES (?, ?, ?) "
                   "ON CONFLICT (uid, node_id) DO UPDATE SET "
                   "sealed = sandbox_uid_nodes.sealed * excluded.sealed",
                   (uid, node, int(sealed)))
    return uid


def _free(tx: Tx, base: int, count: int) -> int:
    top = base + count
    row = tx.one("SELECT MAX(uid) FROM sandbox_uids WHERE uid >= ? AND uid < ?", (base, top))
    if row is None or row[0] is None:
        return base
    if int(row[0]) + 1 < top:
        return int(row[0]) + 1
    if tx.one("SELECT 1 FROM sandbox_uids WHERE uid = ?", (base,)) is None:
        return base
    gap = tx.one("SELECT MIN(u.uid) + 1 FROM sandbox_uids u WHERE u.uid >= ? AND u.uid < ? "
                 "AND NOT EXISTS (SELECT 1 FROM sandbox_uids v WHERE v.uid = u.uid + 1)",
                 (base, top - 1))
    if gap is not None and gap[0] is not None:
        return int(gap[0])
    waiting = tx.one("SELECT COUNT(*) FROM sandbox_uids WHERE uid >= ? AND uid < ? AND "
                     "released_at IS NOT NULL", (base, top))
    quarantined = int(waiting[0]) if waiting is not None else 0
    raise Conflict(f"every sandbox uid of the range {base}..{top - 1} is held by an agent "
                   f"or waits to be reclaimed ({quarantined} of them, once each node that "
                   "ran them has swept them): raise sandbox.uid_count or move "
                   "sandbox.uid_base", code="sandbox_uids_exhausted",
                   retryable=quarantined > 0, details={"reclaiming": quarantined})


def release(tx: Tx, agent_id: str, dialect: str) -> None:
    """The agent is being deleted (same transaction): its uid waits to be reclaimed,
    or is free at once if no node used it. (Under the lock: a node recording its use
    meanwhile is either seen here or sees the agent gone.)"""
    _lock(tx, dialect)
    tx.execute("UPDATE sandbox_uids SET released_at = ? WHERE agent_id = ? AND "
               "released_at IS NULL", (time.time(), agent_id))
    tx.execute("DELETE FROM sandbox_uids WHERE agent_id = ? AND released_at IS NOT NULL "
               "AND NOT EXISTS (SELECT 1 FROM sandbox_uid_nodes n "
               "WHERE n.uid = sandbox_uids.uid)", (agent_id,))


def retenant(tx: Tx, agent_id: str, settings: object) -> None:
    """The agent's settings changed (same transaction): its uid counts for the tenant
    they name now."""
    tenant = (tenant_of(settings) if isinstance(settings, dict) else None) or ""
    tx.execute("UPDATE sandbox_uids SET tenant = ? WHERE agent_id = ? AND "
               "released_at IS NULL AND tenant <> ?", (tenant, agent_id, tenant))


def quarantined(tx: Tx, node: str, limit: int) -> list[tuple[int, str]]:
    """Released uids ``node`` used (sealed) and has not swept yet, oldest first:
    ``(uid, the agent that held it)``."""
    rows = tx.all("SELECT u.uid, u.agent_id FROM sandbox_uids u JOIN sandbox_uid_nodes n "
                  "ON n.uid = u.uid WHERE u.released_at IS NOT NULL AND n.node_id = ? "
                  "AND n.sealed = 1 ORDER BY u.released_at, u.uid LIMIT ?", (node, limit))
    return [(int(uid), str(agent_id)) for uid, agent_id in rows]


def swept(tx: Tx, node: str, uids: Iterable[int], dialect: str) -> int:
    """``node`` swept these released uids: its rows go, and each uid no other node
    still has to sweep is free. Returns how many became free."""
    chosen = sorted(set(uids))
    if not chosen:
        return 0
    _lock(tx, dialect)
    marks = ", ".join("?" for _ in chosen)
    tx.execute(f"DELETE FROM sandbox_uid_nodes WHERE node_id = ? AND sealed = 1 AND uid IN "
               f"(SELECT uid FROM sandbox_uids WHERE released_at IS NOT NULL AND uid IN "
               f"({marks}))", (node, *chosen))
    tx.execute(f"DELETE FROM sandbox_uids WHERE released_at IS NOT NULL AND uid IN ({marks}) "
               "AND NOT EXISTS (SELECT 1 FROM sandbox_uid_nodes n "
               "WHERE n.uid = sandbox_uids.uid)", tuple(chosen))
    return tx.rowcount
