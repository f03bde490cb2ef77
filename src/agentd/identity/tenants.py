"""Tenants: the operator's (``[tenants.NAME]``) and the API's (``/v1/tenants``), with
their quotas.

An agent belongs to the tenant its ``settings.tenant`` names (``default`` when none).
A tenant the API made has a row with its quotas; one the operator configured has its
weight, budget and quotas in agentd.toml and cannot be changed through the API; any
other name an agent uses (an older deployment's) is a tenant without quotas. Quotas are
counted in the store, in the transaction of each write that adds to one
(:mod:`agentd.store.quota`): this service only says what the limits are.

``spend_usd_per_day`` joins the tenant's configured budget (``[tenants.NAME.budget]``):
the kernel then fails a run of its agents once the day's spend reaches it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agentd.config import Budget, Limit, TenantConfig, TenantQuotas
from agentd.errors import Conflict, Forbidden, InvalidInput, NotFound
from agentd.security.identity import Principal
from agentd.store import Quota, Store, TenantRow
from agentd.store.quota import Counted

__all__ = ["DEFAULT_TENANT", "TENANT_NAME", "Tenants"]

DEFAULT_TENANT = "default"
#: A tenant made through the API: no '.', which separates a tenant from the rest of
#: its agents' names (``acme.support``).
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
_COUNTED: tuple[Counted, ...] = ("agents", "sessions", "schedules", "memory_entries",
                                 "storage_bytes")


class Tenants:
    """What each tenant may hold (implements the runtime's quotas interface)."""

    def __init__(self, store: Store, config: Mapping[str, TenantConfig], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = dict(config)
        self.clock = clock
        self._rows: dict[str, TenantRow] = {}
        self._quotas: dict[str, TenantQuotas] = {
            name: tenant.quotas for name, tenant in self.config.items()}
        #: Bumped when any tenant's limits change (cached budgets look at it).
        self.version = 0
        #: Counts this node's own changes (see TokenBook.edits).
        self.edits = 0

    def load(self, rows: list[TenantRow]) -> None:
        """Take the API's tenants as read from the store."""
        self._rows = {row.name: row for row in rows}
        quotas = {name: tenant.quotas for name, tenant in self.config.items()}
        for row in rows:
            if row.name not in self.config:
                quotas[row.name] = TenantQuotas.model_validate(row.quotas)
        if quotas != self._quotas:
            self.version += 1
        self._quotas = quotas

    def configure(self, config: Mapping[str, TenantConfig]) -> None:
        """Take the operator's tenants anew (a configuration reload): their quotas and
        budgets count from the next check; cached budgets are dropped."""
        self.config = dict(config)
        self.load(list(self._rows.values()))
        self.version += 1  # (a budget may have changed with no quota changing)

    # -- what the runtime asks -------------------------------------------------------

    def exists(self, name: str) -> bool:
        return name == DEFAULT_TENANT or name in self.config or name in self._rows

    def quotas(self, tenant: str | None) -> TenantQuotas:
        return self._quotas.get(tenant or DEFAULT_TENANT) or TenantQuotas()

    def quota(self, tenant: str | None, resource: Counted) -> Quota | None:
        """The limit on ``resource`` of ``tenant`` (None: none), for the store's check."""
        found = self._quotas.get(tenant or DEFAULT_TENANT)
        limit = None if found is None else getattr(found, resource)
        return None if limit is None else Quota(tenant or DEFAULT_TENANT, resource, limit)

    def cap(self, tenant: str | None, resource: str) -> int | None:
        """A limit the sandbox enforces itself (``egress_connections``,
        ``sandbox_uids``), or any other quota's number."""
        found = self._quotas.get(tenant or DEFAULT_TENANT)
        value = None if found is None else getattr(found, resource, None)
        return None if value is None else int(value)

    def budget(self, tenant: str) -> Budget | None:
        """The tenant's day and month limits: its configured budget, with the day's
        spend quota as the day's ``cost_usd`` when that is lower."""
        configured = self.config.get(tenant)
        budget = configured.budget if configured is not None else Budget()
        spend = self.quotas(tenant).spend_usd_per_day
        if spend is not None:
            day = budget.day
            if day.cost_usd is None or spend < day.cost_usd:
                # (constructed: a quota of 0, no spend at all, is below Limit's range)
                budget = budget.model_copy(update={"day": Limit.model_construct(
                    tokens=day.tokens, cost_usd=spend)})
        return None if budget.empty else budget

    # -- the API ---------------------------------------------------------------------

    def _admin(self, by: Principal, doing: str) -> None:
        if not by.may("manage_tenants"):
            raise Forbidden(f"{doing} needs an admin token (token {by.label!r} is "
                            f"{by.role!r})")

    def describe(self, name: str) -> dict[str, Any]:
        row = self._rows.get(name)
        source = "config" if name in self.config else "api" if row else "implicit"
        return {"name": name, "source": source,
                "quotas": self.quotas(name).model_dump(exclude_none=True),
                "description": row.description if row else "",
                "created_at": row.created_at if row else None,
                "updated_at": row.updated_at if row else None}

    def names(self, used: Iterable[str] = ()) -> list[str]:
        """Every tenant: ``default``, the operator's, the API's, and ``used`` (the
        names agents give, which are tenants without quotas)."""
        return sorted({DEFAULT_TENANT, *self.config, *self._rows, *used})

    def visible(self, by: Principal, used: Iterable[str] = ()) -> list[str]:
        """The tenants ``by`` may see: all for an unscoped token, else those its
        scope's tenant patterns match."""
        names = self.names(used)
        if by.access.everything:
            return names
        if by.access.tenants is None:
            return []
        return [n for n in names if by.access.tenants.fullmatch(n) is not None]

    async def listing(self, by: Principal) -> list[dict[str, Any]]:
        return [self.describe(n) for n in self.visible(
            by, await self.store.agent_tenants())]

    async def get(self, by: Principal, name: str) -> dict[str, Any]:
        if name not in self.visible(by, await self.store.agent_tenants()):
            raise NotFound(f"tenant {name!r} not found", code="tenant_not_found")
        return {**self.describe(name), "usage": await self.store.tenant_usage(name)}

    def check_new(self, name: str) -> None:
        if not TENANT_NAME.fullmatch(name):
            raise InvalidInput(f"invalid tenant name {name!r}: 1-63 lower-case letters, "
                               "digits, '-' or '_', starting with a letter or digit",
                               field="body.name")
        if name in self.config:
            raise Conflict(f"tenant {name!r} already exists (the daemon's own: see "
                           "agentd.toml)", code="tenant_exists")

    async def create(self, by: Principal, name: str, quotas: TenantQuotas,
                     description: str, audit: Any) -> dict[str, Any]:
        self._admin(by, "creating a tenant")
        self.check_new(name)
        now = self.clock()
        row = TenantRow(name=name, quotas=quotas.model_dump(exclude_none=True),
                        description=description, created_at=now, updated_at=now,
                        created_by=by.name)
        await self.store.insert_tenant(row, audit=audit.entry(
            actor=by.name, role=by.role, action="tenant.create", resource=f"tenant:{name}",
            details={"quotas": row.quotas}))
        self._rows[name] = row
        self.load(list(self._rows.values()))
        self.edits += 1
        return self.describe(name)

    async def update(self, by: Principal, name: str, quotas: TenantQuotas | None,
                     description: str | None, audit: Any) -> dict[str, Any]:
        self._admin(by, "changing a tenant")
        if (name not in self._rows and name not in self.config
                and TENANT_NAME.fullmatch(name)
                and (name == DEFAULT_TENANT or name in await self.store.agent_tenants())):
            # An implicit tenant (a name agents use, `default`) is given its row: its
            # quotas are set as for one made through the API.
            await self.create(by, name, TenantQuotas(), "", audit)
        self._owned(name)
        merged = None
        if quotas is not None:
            merged = {**self._rows[name].quotas, **quotas.model_dump(exclude_unset=True)}
            merged = {k: v for k, v in merged.items() if v is not None}
        row = await self.store.update_tenant(
            name, quotas=merged, description=description, now=self.clock(),
            audit=audit.entry(actor=by.name, role=by.role, action="tenant.update",
                              resource=f"tenant:{name}",
                              details={"quotas": merged} if merged is not None else {}))
        self._rows[name] = row
        self.load(list(self._rows.values()))
        self.edits += 1
        return self.describe(name)

    async def delete(self, by: Principal, name: str, audit: Any) -> None:
        self._admin(by, "deleting a tenant")
        if name == DEFAULT_TENANT and name not in self._rows and name not in self.config:
            raise Conflict("the default tenant is always there (agents without a tenant "
                           "are in it); it has no quotas to delete", code="tenant_in_config")
        self._owned(name)
        await self.store.delete_tenant(name, audit=audit.entry(
            actor=by.name, role=by.role, action="tenant.delete", resource=f"tenant:{name}"))
        self._rows.pop(name, None)
        self.load(list(self._rows.values()))
        self.edits += 1

    def _owned(self, name: str) -> None:
        if name in self.config:
            raise Conflict(f"tenant {name!r} is the daemon's own (agentd.toml): change it "
                           "there", code="tenant_in_config")
        if name not in self._rows:
            raise NotFound(f"tenant {name!r} not found", code="tenant_not_found")
