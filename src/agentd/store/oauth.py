"""OAuth for MCP servers (migration 25): logins under way, and who is refreshing which
token. The tokens themselves are secrets (:mod:`agentd.store.secrets`).

A flow's row is found by the SHA-256 of its ``state`` and deleted in the transaction
that reads it (:meth:`OAuthStore.take_flow`): a state finishes one login at most, even
with two callbacks at once on two nodes. A lock (:meth:`OAuthStore.lock`) is a row
with a holder and an expiry: taken when free or expired, given back with the token it
guarded written in the same transaction (:meth:`OAuthStore.refreshed`). Each method is
one transaction; what it changes is audited in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentd.store import audit as _audit
from agentd.store.audit import AuditEntry
from agentd.store.engine import Engine, Tx
from agentd.store.secrets import SecretRow, put_row

__all__ = ["FlowRow", "OAuthStore"]

_FLOW_COLS = ("state_hash, tenant, agent, server, principal, data, key_id, created_at, "
              "expires_at")


@dataclass(kw_only=True, slots=True, frozen=True)
class FlowRow:
    """A login under way: ``data`` is sealed (the secrets key, ``key_id``)."""

    state_hash: str
    tenant: str
    agent: str
    server: str
    principal: str
    data: str
    key_id: str
    created_at: float
    expires_at: float


def _flow(row: Sequence[Any]) -> FlowRow:
    return FlowRow(state_hash=str(row[0]), tenant=str(row[1]), agent=str(row[2]),
                   server=str(row[3]), principal=str(row[4]), data=str(row[5]),
                   key_id=str(row[6]), created_at=float(row[7]), expires_at=float(row[8]))


class OAuthStore:
    """The ``oauth_flows`` and ``oauth_locks`` tables on the store's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _audited(self, tx: Tx, entries: Sequence[AuditEntry | None]) -> None:
        kept = [e for e in entries if e is not None]
        if kept:
            _audit.append(tx, kept, dialect=self.engine.dialect)

    async def audit(self, entry: AuditEntry) -> None:
        """Record what happened (its own transaction)."""
        await self.engine.write(lambda tx: self._audited(tx, [entry]))

    async def add_flow(self, flow: FlowRow, *, audit: AuditEntry | None = None,
                       keep: int = 20) -> None:
        """Store a new login, dropping the expired ones and all but the ``keep`` most
        recent others of the same agent and server (a person who clicks "log in" ten
        times leaves no pile)."""
        def write(tx: Tx) -> None:
            tx.execute("DELETE FROM oauth_flows WHERE expires_at < ?", (flow.created_at,))
            stale = tx.all(
                "SELECT state_hash FROM oauth_flows WHERE tenant = ? AND agent = ? AND "
                "server = ? ORDER BY created_at DESC", (flow.tenant, flow.agent, flow.server))
            for (state_hash,) in stale[max(keep - 1, 0):]:
                tx.execute("DELETE FROM oauth_flows WHERE state_hash = ?", (state_hash,))
            tx.execute(f"INSERT INTO oauth_flows ({_FLOW_COLS}) VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (flow.state_hash, flow.tenant, flow.agent, flow.server,
                        flow.principal, flow.data, flow.key_id, flow.created_at,
                        flow.expires_at))
            self._audited(tx, [audit])

        await self.engine.write(write)

    async def take_flow(self, state_hash: str) -> FlowRow | None:
        """The login of this state, deleted (expired or not: the caller says which);
        None when there is none (never made, finished, or dropped)."""
        def write(tx: Tx) -> FlowRow | None:
            row = tx.one(f"SELECT {_FLOW_COLS} FROM oauth_flows WHERE state_hash = ?",
                         (state_hash,))
            if row is None:
                return None
            tx.execute("DELETE FROM oauth_flows WHERE state_hash = ?", (state_hash,))
            return _flow(row) if tx.rowcount > 0 else None

        return await self.engine.write(write)

    async def pending(self, *, tenant: str, agent: str, now: float) -> list[FlowRow]:
        """The logins of an agent that may still finish, newest first."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_FLOW_COLS} FROM oauth_flows WHERE tenant = ? AND agent = ? AND "
            "expires_at >= ? ORDER BY created_at DESC", (tenant, agent, now)))
        return [_flow(r) for r in rows]

    async def drop_flows(self, *, tenant: str, agent: str, server: str | None = None) -> int:
        """Forget an agent's logins under way (of one server); how many."""
        def write(tx: Tx) -> int:
            if server is None:
                tx.execute("DELETE FROM oauth_flows WHERE tenant = ? AND agent = ?",
                           (tenant, agent))
            else:
                tx.execute("DELETE FROM oauth_flows WHERE tenant = ? AND agent = ? AND "
                           "server = ?", (tenant, agent, server))
            return tx.rowcount

        return await self.engine.write(write)

    async def lock(self, *, tenant: str, agent: str, name: str, holder: str, now: float,
                   ttl_s: float) -> bool:
        """Take the lock of one token for ``ttl_s`` seconds: True when ``holder`` has it
        now (it was free, expired, or already its own)."""
        def write(tx: Tx) -> bool:
            # One statement: on PostgreSQL a second node's insert waits for the first's
            # commit, then finds its row and (not expired, not its own) changes nothing.
            tx.execute(
                "INSERT INTO oauth_locks (tenant, agent, name, holder, expires_at) VALUES "
                "(?, ?, ?, ?, ?) ON CONFLICT (tenant, agent, name) DO UPDATE SET "
                "holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE oauth_locks.holder = excluded.holder OR oauth_locks.expires_at <= ?",
                (tenant, agent, name, holder, now + ttl_s, now))
            return tx.rowcount > 0

        return await self.engine.write(write)

    async def unlock(self, *, tenant: str, agent: str, name: str, holder: str) -> None:
        await self.engine.write(lambda tx: tx.execute(
            "DELETE FROM oauth_locks WHERE tenant = ? AND agent = ? AND name = ? AND "
            "holder = ?", (tenant, agent, name, holder)))

    async def refreshed(self, *, tenant: str, agent: str, name: str, value: str,
                        key_id: str, now: float, holder: str | None = None,
                        audit: Sequence[AuditEntry | None] = ()) -> SecretRow:
        """Write a token (a secret: sealed ``value``) and give back ``holder``'s lock on
        it, with the audit rows, in one transaction; the row."""
        def write(tx: Tx) -> SecretRow:
            row, _ = put_row(tx, tenant=tenant, agent=agent, name=name, value=value,
                             key_id=key_id, now=now)
            if holder is not None:
                tx.execute("DELETE FROM oauth_locks WHERE tenant = ? AND agent = ? AND "
                           "name = ? AND holder = ?", (tenant, agent, name, holder))
            self._audited(tx, audit)
            return row

        return await self.engine.write(write)

    async def forget(self, *, tenant: str, agent: str, name: str,
                     audit: AuditEntry | None = None) -> bool:
        """Delete a token (and its lock); False when there was none."""
        def write(tx: Tx) -> bool:
            tx.execute("DELETE FROM secrets WHERE tenant = ? AND agent = ? AND name = ?",
                       (tenant, agent, name))
            gone = tx.rowcount > 0
            tx.execute("DELETE FROM oauth_locks WHERE tenant = ? AND agent = ? AND "
                       "name = ?", (tenant, agent, name))
            if gone:
                self._audited(tx, [audit])
            return gone

        return await self.engine.write(write)
