"""The Store's node-liveness method: which nodes are gone, and ending their leases.

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
The locks themselves are held by :class:`agentd.store.node_lock.NodeLock` (one per
node, on a connection of its own); see :mod:`agentd.runtime.nodes`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from agentd.clock import Clock
from agentd.store.engine import Engine, Tx
from agentd.store.rows import active

__all__ = ["DeadNodes", "NodeStore"]


@dataclass(kw_only=True, slots=True)
class DeadNodes:
    """What one look at the other nodes found."""

    #: Registered nodes holding unexpired leases whose liveness lock nobody holds.
    free: set[str] = field(default_factory=set)
    #: Those of them seen so at the look before too, whose leases were ended now:
    #: node id -> how many.
    ended: dict[str, int] = field(default_factory=dict)
    #: Registered nodes gone with no lease to hand over (unregistered now).
    forgotten: int = 0
    #: Runs under way whose lease has expired or was ended (by this look, or by an
    #: earlier one of a node that died before it took them over): nobody drives them.
    expired: int = 0


class NodeStore:
    engine: Engine
    clock: Clock

    async def dead_nodes(self, me: str, *, suspects: Collection[str]) -> DeadNodes:
        """Find the registered nodes (other than ``me``) whose liveness lock is free:
        their process is gone. Those holding unexpired leases are listed in ``free``;
        of them, those in ``suspects`` (found free at the caller's previous look too,
        so a connection that broke for a moment costs nothing) have their leases
        ended here, so that any node may take their runs over at once, and are
        unregistered. A node gone with no lease is unregistered. Also counts the runs
        under way whose lease has expired or was ended (``expired``): a node that
        ended a gone node's leases may have died before it took the runs over.
        PostgreSQL only (SQLite has one daemon): elsewhere, nothing.

        Each lock is tried inside this transaction (``pg_try_advisory_xact_lock``),
        so a node cannot take its lock back between the look and the end of its
        leases; a node that does so afterwards finds its runs taken over, and its
        commits to them refused by their leases' fencing."""
        if self.engine.dialect != "postgresql":
            return DeadNodes()
        now = self.clock.time()
        suspected = frozenset(suspects)

        def op(tx: Tx) -> DeadNodes:
            out = DeadNodes()
            for node_id, key in tx.all("SELECT id, lock_key FROM node_liveness WHERE id <> ? "
                                       "ORDER BY id", (me,)):
                got = tx.one("SELECT pg_try_advisory_xact_lock(?)", (key,))
                if not (got and got[0]):
                    continue  # alive
                leases = tx.one(
                    f"SELECT COUNT(*) FROM runs WHERE {active()} AND lease_owner = ? "
                    "AND lease_expires_at >= ?", (node_id, now))
                if not (leases and leases[0]):
                    tx.execute("DELETE FROM node_liveness WHERE id = ?", (node_id,))
                    out.forgotten += 1
                    continue
                out.free.add(str(node_id))
                if node_id in suspected:
                    tx.execute(f"UPDATE runs SET lease_expires_at = 0 WHERE {active()} "
                               "AND lease_owner = ? AND lease_expires_at >= ?", (node_id, now))
                    out.ended[str(node_id)] = tx.rowcount
                    tx.execute("DELETE FROM node_liveness WHERE id = ?", (node_id,))
            row = tx.one(f"SELECT COUNT(*) FROM runs WHERE {active()} AND "
                         "status <> 'queued' AND lease_expires_at < ?", (now,))
            out.expired = int(row[0]) if row else 0
            return out

        return await self.engine.write(op)
