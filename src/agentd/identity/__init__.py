"""Who may do what: principals, named tokens, tenants with quotas, the audit log.

=================  ============================================================
:class:`Identity`  the service the runtime holds: ``tokens``, ``tenants``,
                   ``audit``; read from the store at start, kept in memory, and
                   read again when another node changed them
``tokens``         :class:`~agentd.identity.tokens.TokenBook`
``tenants``        :class:`~agentd.identity.tenants.Tenants` (the runtime's quotas)
``audit``          :class:`~agentd.identity.audit.AuditLog`
``grants``         :class:`~agentd.identity.grants.DaemonGrants`: what members may
                   still use of the operator-only settings
=================  ============================================================

The roles and the principal are :mod:`agentd.security.identity`; which settings are
the operator's is marked on the settings' models (:mod:`agentd.trust`) and checked by
:func:`agentd.settings.operator_only`. docs/security.md, "Identity", is the overview.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from agentd.config import Settings
from agentd.identity.audit import AuditLog
from agentd.identity.grants import DaemonGrants
from agentd.identity.tenants import DEFAULT_TENANT, TENANT_NAME, Tenants
from agentd.identity.tokens import TOKEN_NAME, TokenBook, named_principal
from agentd.security.access import Scopes
from agentd.security.identity import Principal, Role
from agentd.store import Store

__all__ = ["DEFAULT_TENANT", "TENANT_NAME", "TOKEN_NAME", "AuditLog", "DaemonGrants",
           "Identity", "Tenants", "TokenBook", "config_principals", "named_principal"]


def config_principals(settings: Settings, names: Iterable[str]) -> dict[str, Principal]:
    """The principal of each of the configuration's tokens (``bootstrap``, ``token``,
    ``token-N``): the role its ``[access.NAME]`` entry gives, else ``admin`` for one
    ``admin_tokens`` allows (by default: every token without a scope) and ``member``
    for the rest; its scope; and, when its scope names exactly one tenant without a
    wildcard, that tenant (new agents go there)."""
    scopes = Scopes(settings.access)
    found: dict[str, Principal] = {}
    for name in names:
        entry = settings.access.get(name)
        scoped = entry is not None and entry.scoped
        admins = settings.admin_tokens
        role: Role = entry.role if entry is not None and entry.role is not None else (
            "admin" if (not scoped if admins is None else name in admins) else "member")
        tenants = entry.tenants if entry is not None else None
        tenant = (tenants[0] if tenants and len(tenants) == 1
                  and not any(c in tenants[0] for c in "*?[") else None)
        found[name] = Principal(name=name, role=role, access=scopes.of(name),
                                tenant=tenant, source="config")
    return found


class Identity:
    """Tokens, tenants and the audit log of one daemon (node)."""

    def __init__(self, settings: Settings, store: Store, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.audit = AuditLog(store, refusals_per_minute=settings.audit.refusals_per_minute,
                              clock=clock)
        self.tenants = Tenants(store, settings.tenants, clock=clock)
        self.tokens = TokenBook(store, config={}, tenant_exists=self.tenants.exists,
                                clock=clock)
        self.grants = DaemonGrants(settings)
        self.version = -1

    def configure_tokens(self, principals: dict[str, Principal]) -> None:
        """The configuration's tokens' principals (the server knows their names once
        it has made the bootstrap token)."""
        self.tokens.config = dict(principals)

    async def start(self) -> None:
        await self.refresh()
        self.audit.start()

    async def refresh(self) -> int:
        """Read the tokens and tenants again (1 when they had changed, else 0).

        A read that one of this node's own changes overtook is stale (it was begun
        before the change committed, or the change's row landed in memory while it
        was under way): loading it would drop a token just made until the next poll,
        so it is read again."""
        while True:
            edits = (self.tokens.edits, self.tenants.edits)
            version, tokens, tenants = await self.store.identity()
            if (self.tokens.edits, self.tenants.edits) == edits:
                break
        if version == self.version:
            return 0
        self.tokens.load(tokens)
        self.tenants.load(tenants)
        self.version = version
        return 1

    async def poll(self) -> int:
        """A housekeeping job on a shared store: read again what another node changed."""
        if await self.store.identity_version() == self.version:
            return 0
        return await self.refresh()

    async def close(self) -> None:
        await self.audit.close()

