"""Named tokens and tenants: their rows (``agentd.identity`` is the service).

A token's row holds its name, the public id of its text (``agd_<id>_...``), a SHA-256
of the text (never the text), its role and scope, and when it expires. A revoked
token's row is deleted (the audit log keeps what it was), so its name can be given
again. A tenant's row holds its quotas as JSON. Tenants named in the operator's
``agentd.toml`` have no row: they are the operator's, not the API's.

Changes are announced to other nodes (``engine.announce``, PostgreSQL) so that a
revoked token stops working on every node at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentd.errors import Conflict, NotFound
from agentd.store import audit as _audit
from agentd.store import quota as _quota
from agentd.store.audit import AuditEntry, AuditRow
from agentd.store.engine import Engine, Tx

__all__ = ["TENANT_COLS", "TOKEN_COLS", "IdentityStore", "TenantRow", "TokenRow", "bump",
           "delete_tenant", "delete_token", "insert_tenant", "insert_token", "list_tenants",
           "list_tokens", "rotate_token", "update_tenant"]

TOKEN_COLS = "name, id, hash, role, tenant, agents, expires_at, created_at, created_by, " \
             "rotated_at"
TENANT_COLS = "name, quotas, description, created_at, updated_at, created_by"


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenRow:
    name: str
    id: str
    hash: str
    role: str
    tenant: str | None
    agents: list[str] | None
    expires_at: float | None
    created_at: float
    created_by: str | None
    rotated_at: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TenantRow:
    name: str
    quotas: dict[str, Any]
    description: str
    created_at: float
    updated_at: float
    created_by: str | None


def _token(row: Sequence[Any]) -> TokenRow:
    return TokenRow(name=row[0], id=row[1], hash=row[2], role=row[3], tenant=row[4],
                    agents=None if row[5] is None else orjson.loads(row[5]),
                    expires_at=None if row[6] is None else float(row[6]),
                    created_at=float(row[7]), created_by=row[8],
                    rotated_at=None if row[9] is None else float(row[9]))


def _tenant(row: Sequence[Any]) -> TenantRow:
    return TenantRow(name=row[0], quotas=orjson.loads(row[1]), description=row[2],
                     created_at=float(row[3]), updated_at=float(row[4]),
                     created_by=row[5])


def list_tokens(tx: Tx) -> list[TokenRow]:
    return [_token(r) for r in tx.all(f"SELECT {TOKEN_COLS} FROM tokens ORDER BY name")]


def insert_token(tx: Tx, row: TokenRow) -> None:
    if tx.one("SELECT 1 FROM tokens WHERE name = ?", (row.name,)) is not None:
        raise Conflict(f"a token named {row.name!r} already exists (revoke it first, or "
                       "rotate it)", code="token_exists")
    tx.execute(f"INSERT INTO tokens ({TOKEN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (row.name, row.id, row.hash, row.role, row.tenant,
                None if row.agents is None else orjson.dumps(row.agents).decode(),
                row.expires_at, row.created_at, row.created_by, row.rotated_at))


def rotate_token(tx: Tx, name: str, *, ident: str, digest: str, now: float) -> TokenRow:
    tx.execute("UPDATE tokens SET id = ?, hash = ?, rotated_at = ? WHERE name = ?",
               (ident, digest, now, name))
    row = tx.one(f"SELECT {TOKEN_COLS} FROM tokens WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"token {name!r} not found", code="token_not_found")
    return _token(row)


def delete_token(tx: Tx, name: str) -> TokenRow:
    row = tx.one(f"SELECT {TOKEN_COLS} FROM tokens WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"token {name!r} not found", code="token_not_found")
    tx.execute("DELETE FROM tokens WHERE name = ?", (name,))
    return _token(row)


def list_tenants(tx: Tx) -> list[TenantRow]:
    return [_tenant(r) for r in tx.all(f"SELECT {TENANT_COLS} FROM tenants ORDER BY name")]


def insert_tenant(tx: Tx, row: TenantRow) -> None:
    if tx.one("SELECT 1 FROM tenants WHERE name = ?", (row.name,)) is not None:
        raise Conflict(f"tenant {row.name!r} already exists", code="tenant_exists")
    tx.execute(f"INSERT INTO tenants ({TENANT_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
               (row.name, orjson.dumps(row.quotas).decode(), row.description,
                row.created_at, row.updated_at, row.created_by))


def update_tenant(tx: Tx, name: str, *, quotas: dict[str, Any] | None,
                  description: str | None, now: float) -> TenantRow:
    sets, params = ["updated_at = ?"], list[Any]([now])
    if quotas is not None:
        sets.append("quotas = ?")
        params.append(orjson.dumps(quotas).decode())
    if description is not None:
        sets.append("description = ?")
        params.append(description)
    tx.execute(f"UPDATE tenants SET {', '.join(sets)} WHERE name = ?", (*params, name))
    row = tx.one(f"SELECT {TENANT_COLS} FROM tenants WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"tenant {name!r} not found", code="tenant_not_found")
    return _tenant(row)


def delete_tenant(tx: Tx, name: str) -> TenantRow:
    row = tx.one(f"SELECT {TENANT_COLS} FROM tenants WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"tenant {name!r} not found", code="tenant_not_found")
    agents = tx.one("SELECT COUNT(*) FROM agents WHERE tenant = ?", (name,))
    if agents is not None and int(agents[0]):
        raise Conflict(f"tenant {name!r} still has {int(agents[0])} agent(s): delete or "
                       "move them first", code="tenant_not_empty")
    tokens = tx.one("SELECT COUNT(*) FROM tokens WHERE tenant = ?", (name,))
    if tokens is not None and int(tokens[0]):
        raise Conflict(f"tenant {name!r} still has {int(tokens[0])} token(s): revoke "
                       "them first", code="tenant_not_empty")
    tx.execute("DELETE FROM tenants WHERE name = ?", (name,))
    return _tenant(row)


def bump(tx: Tx) -> None:
    """Tell every node that tokens or tenants changed (they poll the version)."""
    tx.execute("UPDATE identity_version SET version = version + 1 WHERE id = 1")


class IdentityStore:
    """Tokens, tenants and the audit log: the :class:`agentd.store.Store` mixin. Each
    change to a token or tenant is written with its audit row, in one transaction."""

    engine: Engine

    def _audited(self, tx: Tx, audit: AuditEntry | None) -> None:
        if audit is not None:
            _audit.append(tx, [audit], dialect=self.engine.dialect)

    async def identity_version(self) -> int:
        row = await self.engine.read(
            lambda tx: tx.one("SELECT version FROM identity_version WHERE id = 1"))
        return int(row[0]) if row else 0

    async def identity(self) -> tuple[int, list[TokenRow], list[TenantRow]]:
        """The version, every token and every tenant, read at once."""
        def op(tx: Tx) -> tuple[int, list[TokenRow], list[TenantRow]]:
            row = tx.one("SELECT version FROM identity_version WHERE id = 1")
            return (int(row[0]) if row else 0), list_tokens(tx), list_tenants(tx)

        return await self.engine.read(op)

    async def insert_token(self, row: TokenRow, *, audit: AuditEntry | None = None) -> None:
        def op(tx: Tx) -> None:
            insert_token(tx, row)
            bump(tx)
            self._audited(tx, audit)

        await self.engine.write(op)

    async def rotate_token(self, name: str, *, ident: str, digest: str, now: float,
                           audit: AuditEntry | None = None) -> TokenRow:
        def op(tx: Tx) -> TokenRow:
            row = rotate_token(tx, name, ident=ident, digest=digest, now=now)
            bump(tx)
            self._audited(tx, audit)
            return row

        return await self.engine.write(op)

    async def delete_token(self, name: str, *, audit: AuditEntry | None = None
                           ) -> TokenRow:
        def op(tx: Tx) -> TokenRow:
            row = delete_token(tx, name)
            bump(tx)
            self._audited(tx, audit)
            return row

        return await self.engine.write(op)

    async def insert_tenant(self, row: TenantRow, *, audit: AuditEntry | None = None
                            ) -> None:
        def op(tx: Tx) -> None:
            insert_tenant(tx, row)
            bump(tx)
            self._audited(tx, audit)

        await self.engine.write(op)

    async def update_tenant(self, name: str, *, quotas: dict[str, Any] | None,
                            description: str | None, now: float,
                            audit: AuditEntry | None = None) -> TenantRow:
        def op(tx: Tx) -> TenantRow:
            row = update_tenant(tx, name, quotas=quotas, description=description, now=now)
            bump(tx)
            self._audited(tx, audit)
            return row

        return await self.engine.write(op)

    async def delete_tenant(self, name: str, *, audit: AuditEntry | None = None
                            ) -> TenantRow:
        def op(tx: Tx) -> TenantRow:
            row = delete_tenant(tx, name)
            bump(tx)
            self._audited(tx, audit)
            return row

        return await self.engine.write(op)

    async def agent_tenants(self) -> list[str]:
        """The tenants agents name (a tenant nobody made is still one: no quotas)."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT DISTINCT tenant FROM agents WHERE tenant IS NOT NULL"))
        return sorted(str(r[0]) for r in rows)

    async def tenant_usage(self, tenant: str) -> dict[str, int]:
        """How much of each counted resource ``tenant`` holds."""
        return await self.engine.read(lambda tx: {
            resource: _quota.count(tx, resource, tenant) for resource in _quota.COUNTED})

    # -- the audit log ---------------------------------------------------------------

    async def append_audit(self, entries: Sequence[AuditEntry]) -> list[int]:
        dialect = self.engine.dialect
        return await self.engine.write(
            lambda tx: _audit.append(tx, entries, dialect=dialect))

    async def audit_page(self, **filters: Any) -> list[AuditRow]:
        return await self.engine.read(lambda tx: _audit.page(tx, **filters))

    async def audit_rows(self, *, after: int, limit: int) -> list[tuple[Any, ...]]:
        return await self.engine.read(
            lambda tx: list(_audit.walk(tx, after=after, limit=limit)))
