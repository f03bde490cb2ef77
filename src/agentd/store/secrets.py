"""Named secrets' table (migration 23): sealed values by tenant, agent and name.

The store holds only what :mod:`agentd.secrets` sealed (nonce and ciphertext, base64)
and the id of the key that sealed it; it never sees a value. ``agent`` is '' for a
secret of the whole tenant. Each method is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentd.store import audit as _audit
from agentd.store.audit import AuditEntry
from agentd.store.engine import Engine, Tx

__all__ = ["SecretRow", "SecretStore", "put_row"]

_COLS = "tenant, agent, name, value, key_id, created_at, updated_at"


@dataclass(kw_only=True, slots=True, frozen=True)
class SecretRow:
    tenant: str
    agent: str
    name: str
    value: str
    key_id: str
    created_at: float
    updated_at: float


def _row(row: Sequence[Any]) -> SecretRow:
    return SecretRow(tenant=str(row[0]), agent=str(row[1]), name=str(row[2]),
                     value=str(row[3]), key_id=str(row[4]), created_at=float(row[5]),
                     updated_at=float(row[6]))


def put_row(tx: Tx, *, tenant: str, agent: str, name: str, value: str, key_id: str,
            now: float) -> tuple[SecretRow, bool]:
    """Insert or replace one secret in ``tx`` (its ``created_at`` kept on a replace);
    the row and whether it is new."""
    fresh = tx.one("SELECT 1 FROM secrets WHERE tenant = ? AND agent = ? AND name = ?",
                   (tenant, agent, name)) is None
    tx.execute(
        f"INSERT INTO secrets ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, agent, name) DO UPDATE SET value = excluded.value, "
        "key_id = excluded.key_id, updated_at = excluded.updated_at",
        (tenant, agent, name, value, key_id, now, now))
    row = tx.one(f"SELECT {_COLS} FROM secrets WHERE tenant = ? AND agent = ? AND name = ?",
                 (tenant, agent, name))
    assert row is not None
    return _row(row), fresh


class SecretStore:
    """The ``secrets`` table on the store's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _audited(self, tx: Tx, entry: AuditEntry | None) -> None:
        if entry is not None:
            _audit.append(tx, [entry], dialect=self.engine.dialect)

    async def audit(self, entry: AuditEntry) -> None:
        """Record a use of a secret (its own transaction)."""
        await self.engine.write(lambda tx: self._audited(tx, entry))

    async def put(self, *, tenant: str, agent: str, name: str, value: str, key_id: str,
                  now: float, audit: AuditEntry | None = None) -> tuple[SecretRow, bool]:
        """Insert or replace one secret (its ``created_at`` kept on a replace), with
        its audit row; the row and whether it is new."""
        def write(tx: Tx) -> tuple[SecretRow, bool]:
            found = put_row(tx, tenant=tenant, agent=agent, name=name, value=value,
                            key_id=key_id, now=now)
            self._audited(tx, audit)
            return found

        return await self.engine.write(write)

    async def get(self, *, tenant: str, agent: str, name: str) -> SecretRow | None:
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {_COLS} FROM secrets WHERE tenant = ? AND agent = ? AND name = ?",
            (tenant, agent, name)))
        return None if row is None else _row(row)

    async def usable(self, *, tenant: str, agent: str) -> list[SecretRow]:
        """The secrets an agent ``agent`` of ``tenant`` may use: its own and its
        tenant's (its own first for a name both hold)."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_COLS} FROM secrets WHERE tenant = ? AND (agent = ? OR agent = '') "
            "ORDER BY name, agent DESC", (tenant, agent)))
        return [_row(r) for r in rows]

    async def listing(self, *, tenants: Sequence[str] | None = None) -> list[SecretRow]:
        """Every secret (``tenants``: of these tenants only), by tenant, agent, name."""
        where, params = "", tuple[Any, ...]()
        if tenants is not None:
            if not tenants:
                return []
            where = f"WHERE tenant IN ({', '.join('?' * len(tenants))}) "
            params = tuple(tenants)
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {_COLS} FROM secrets {where}ORDER BY tenant, agent, name", params))
        return [_row(r) for r in rows]

    async def delete(self, *, tenant: str, agent: str, name: str,
                     audit: AuditEntry | None = None) -> bool:
        """Remove one secret (with its audit row); False when there was none."""
        def write(tx: Tx) -> bool:
            tx.execute("DELETE FROM secrets WHERE tenant = ? AND agent = ? AND name = ?",
                       (tenant, agent, name))
            gone = tx.rowcount > 0
            if gone:
                self._audited(tx, audit)
            return gone

        return await self.engine.write(write)
