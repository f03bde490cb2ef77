"""Tenant quotas, checked inside the transaction that would pass them.

A write that adds something a tenant's quota counts (an agent, a session, a schedule, a
memory entry, an image's or file's bytes) takes a :class:`Quota` (the tenant and its limit, from
``agentd.identity``) and calls :func:`check` in its own transaction, after its insert:
the count then includes what is being added, and a count over the limit rolls the
whole write back (``QuotaExceeded``, nothing stored). On PostgreSQL an advisory lock per
(tenant, resource), taken before counting and held to the commit, makes concurrent
writers on any node count one after another, so two of them cannot both take the last
place; SQLite has one writer.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

from agentd.errors import QuotaExceeded
from agentd.store.engine import Tx

__all__ = ["COUNTED", "Quota", "check", "count"]

Counted = Literal["agents", "sessions", "schedules", "memory_entries", "storage_bytes"]
_LOCK = 872103  # pg_advisory_xact_lock's first key (audit log 872102)

#: How many of each a tenant has (the argument: the tenant).
COUNTED: dict[Counted, str] = {
    "agents": "SELECT COUNT(*) FROM agents WHERE tenant = ?",
    "sessions": "SELECT COUNT(*) FROM sessions s JOIN agents a ON a.id = s.agent_id "
                "WHERE a.tenant = ?",
    "schedules": "SELECT COUNT(*) FROM schedules s JOIN agents a ON a.id = s.agent_id "
                 "WHERE a.tenant = ?",
    "memory_entries": "SELECT COUNT(*) FROM memory_entries e JOIN agents a "
                      "ON a.id = e.agent_id WHERE a.tenant = ?",
    # The bytes of the images and files its sessions hold (agentd.store.blobs), each
    # once.
    "storage_bytes": "SELECT COALESCE(SUM(size), 0) FROM blobs WHERE tenant = ?",
}


@dataclass(frozen=True, slots=True)
class Quota:
    """One tenant's limit on one resource."""

    tenant: str
    resource: Counted
    limit: int


def count(tx: Tx, resource: Counted, tenant: str) -> int:
    row = tx.one(COUNTED[resource], (tenant,))
    return int(row[0]) if row else 0


def check(tx: Tx, quota: Quota | None, dialect: str) -> None:
    """Raise :class:`QuotaExceeded` when the tenant now holds more than its limit. Call
    it after the insert, in the same transaction."""
    if quota is None:
        return
    if dialect == "postgresql":
        # Wait for the other writers of this (tenant, resource): READ COMMITTED then
        # counts what they committed, and they count what this one commits.
        key = (_LOCK << 32) | zlib.crc32(f"{quota.resource}\x00{quota.tenant}".encode())
        tx.execute("SELECT pg_advisory_xact_lock(?)", (key,))
    used = count(tx, quota.resource, quota.tenant)
    if used > quota.limit:
        raise QuotaExceeded(quota.tenant, quota.resource, quota.limit,
                            what=quota.resource.replace("_", " "))
