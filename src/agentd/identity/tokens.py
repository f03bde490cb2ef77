"""Tokens: the configuration's (named ``bootstrap``, ``token``, ``token-N``) and the
API's (``/v1/tokens``), each standing for a :class:`~agentd.security.identity.Principal`.

A named token is shown once, when it is made or rotated; the store keeps its SHA-256.
Every node keeps the named tokens in memory (a request's check reads no database):
its own changes apply at once, and other nodes' within a second (they poll the
store's identity version). Expiry is decided at each request, on the book's clock.

Who may make what (docs/security.md, "Tokens"): a token below ``member`` makes none;
a token never makes one of a higher role than its own, nor one reaching what it cannot
reach: a scoped token's tokens are scoped within its own scope (bound to its tenant,
its agent patterns or names they match). Admins make any. A token may revoke itself,
the tokens it made, and (an admin) any; the configuration's are the operator's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentd.errors import Conflict, Forbidden, InvalidInput, NotFound
from agentd.security.access import Access, check_pattern, scope_access
from agentd.security.identity import (
    Principal,
    Role,
    hash_token,
    new_token,
    rank,
    token_id,
    verify_hash,
)
from agentd.store import Store, TokenRow

__all__ = ["TOKEN_NAME", "TokenBook", "named_principal"]

TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")
#: The names the configuration's tokens have (``token-N``, ``token``, ``bootstrap``).
_CONFIG_NAME = re.compile(r"^(token(-\d+)?|bootstrap)\Z")
_DUMMY_HASH = hash_token("agd_" + "x" * 54)


def named_principal(row: TokenRow) -> Principal:
    """The principal a named token stands for: its role, and its scope (a tenant: that
    tenant's agents, and shared memory namespaces named ``<tenant>:...``)."""
    tenants = None if row.tenant is None else [row.tenant]
    namespaces = [] if row.tenant is None else [f"{row.tenant}:*", f"{row.tenant}.*"]
    access = scope_access(row.name, agents=row.agents, tenants=tenants,
                          namespaces=namespaces)
    role: Role = row.role  # type: ignore[assignment]  # (checked when made)
    return Principal(name=row.name, role=role, access=access, tenant=row.tenant,
                     source="api")


class TokenBook:
    """The named tokens, in memory, and the API's calls on them."""

    def __init__(self, store: Store, *, config: Mapping[str, Principal],
                 tenant_exists: Callable[[str], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        #: The configuration's tokens' principals, by name (the server knows their text).
        self.config = dict(config)
        self.tenant_exists = tenant_exists
        self.clock = clock
        self._by_id: dict[str, tuple[TokenRow, Principal]] = {}
        #: Counts this node's own changes (a read of the store begun before one of them
        #: is stale: Identity.refresh reads again).
        self.edits = 0

    def load(self, rows: list[TokenRow]) -> None:
        self._by_id = {row.id: (row, named_principal(row)) for row in rows}

    # -- a request's token -------------------------------------------------------------

    def find(self, token: bytes) -> tuple[Principal | None, str]:
        """The principal of a named token, or None and why not (``unknown``,
        ``expired``)."""
        ident = token_id(token)
        found = self._by_id.get(ident) if ident is not None else None
        if found is None:
            verify_hash(token, _DUMMY_HASH)  # (as long as for a known id)
            return None, "unknown"
        row, principal = found
        if not verify_hash(token, row.hash):
            return None, "unknown"
        if row.expires_at is not None and self.clock() >= row.expires_at:
            return None, "expired"
        return principal, ""

    def principal(self, name: str) -> Principal | None:
        """A token's principal by its name (the configuration's or a named one)."""
        if name in self.config:
            return self.config[name]
        for row, principal in self._by_id.values():
            if row.name == name:
                return principal
        return None

    # -- the API -----------------------------------------------------------------------

    def _row(self, name: str) -> TokenRow | None:
        for row, _ in self._by_id.values():
            if row.name == name:
                return row
        return None

    def describe(self, name: str) -> dict[str, Any]:
        if name in self.config:
            principal = self.config[name]
            return {"name": name, "role": principal.role, "source": "config",
                    "tenant": principal.tenant,
                    "scope": None if principal.access.everything
                    else principal.access.describe}
        row = self._row(name)
        if row is None:
            raise NotFound(f"token {name!r} not found", code="token_not_found")
        return {"name": row.name, "role": row.role, "source": "api",
                "tenant": row.tenant, "agents": row.agents,
                "prefix": f"agd_{row.id}", "expires_at": row.expires_at,
                "expired": row.expires_at is not None and self.clock() >= row.expires_at,
                "created_at": row.created_at, "created_by": row.created_by,
                "rotated_at": row.rotated_at}

    def listing(self, by: Principal) -> list[dict[str, Any]]:
        """The tokens ``by`` may see: an admin every one; others themselves and the
        named tokens they could revoke."""
        names = sorted({*self.config, *(row.name for row, _ in self._by_id.values())})
        return [self.describe(n) for n in names if self._may_see(by, n)]

    def _may_see(self, by: Principal, name: str) -> bool:
        if by.may("any_token") or name == by.name:
            return True
        row = self._row(name)
        return row is not None and self._may_revoke(by, row)

    def _may_revoke(self, by: Principal, row: TokenRow) -> bool:
        if by.may("any_token") or row.name == by.name or row.created_by == by.name:
            return True
        target = named_principal(row)
        return (by.may("use") and rank(target.role) <= rank(by.role)
                and _within(target, by))

    def check_new(self, by: Principal, *, name: str, role: str, tenant: str | None,
                  agents: list[str] | None, expires_at: float | None) -> None:
        """Refuse (4xx naming the field) a token ``by`` may not make."""
        if not by.may("use"):
            raise Forbidden(f"token {by.label!r} ({by.role}) may not make tokens",
                            details={"field": "body.role"})
        if not TOKEN_NAME.match(name):
            raise InvalidInput(f"invalid token name {name!r}: 1-64 letters, digits, '_', "
                               "'.', '@' or '-', starting with a letter or digit",
                               field="body.name")
        if _CONFIG_NAME.match(name) or name in self.config:
            raise Conflict(f"{name!r} is the name of one of the daemon's configured "
                           "tokens", code="token_exists")
        if rank(role) > rank(by.role):  # type: ignore[arg-type]
            raise Forbidden(f"token {by.label!r} is {by.role!r}: it may not make a token "
                            f"of role {role!r}, above its own", details={
                                "field": "body.role"})
        if tenant is not None and not (self.tenant_exists(tenant) and (
                by.may("any_token") or _tenant_visible(tenant, by.access))):
            # A tenant the maker's scope does not show (GET /v1/tenants/{name}) is
            # one that does not exist: a 403 here would tell it is there.
            raise NotFound(f"tenant {tenant!r} not found (make it first: POST "
                           "/v1/tenants)", code="tenant_not_found",
                           details={"errors": [{"field": "body.tenant",
                                                "message": "no such tenant"}]})
        if tenant is not None and "." in tenant:
            raise InvalidInput(f"tenant {tenant!r} has a '.', which separates a tenant "
                               "from its agents' names: a token cannot be bound to it",
                               field="body.tenant")
        for index, pattern in enumerate(agents or ()):
            try:
                check_pattern(pattern)
            except ValueError as exc:
                raise InvalidInput(str(exc), field=f"body.agents[{index}]") from None
        if expires_at is not None and expires_at <= self.clock():
            raise InvalidInput("expires_at is in the past", field="body.expires_at")
        if by.may("any_token"):
            return
        wanted = Principal(name=name, role=by.role, access=scope_access(
            name, agents=agents, tenants=None if tenant is None else [tenant]),
            tenant=tenant)
        if not _within(wanted, by):
            raise Forbidden(f"token {by.label!r} may make tokens only within its own scope "
                            f"({by.access.describe})",
                            details={"field": "body.tenant" if tenant is None
                                     or not _tenant_within(tenant, by.access)
                                     else "body.agents"})

    async def create(self, by: Principal, *, name: str, role: str, tenant: str | None,
                     agents: list[str] | None, expires_at: float | None,
                     audit: Any) -> tuple[dict[str, Any], str]:
        """Make a token; its description and its text (shown once)."""
        self.check_new(by, name=name, role=role, tenant=tenant, agents=agents,
                       expires_at=expires_at)
        text, ident = new_token()
        row = TokenRow(name=name, id=ident, hash=hash_token(text), role=role, tenant=tenant,
                       agents=agents, expires_at=expires_at, created_at=self.clock(),
                       created_by=by.name, rotated_at=None)
        await self.store.insert_token(row, audit=audit.entry(
            actor=by.name, role=by.role, action="token.create", resource=f"token:{name}",
            details={"role": role, "tenant": tenant, "agents": agents,
                     "expires_at": expires_at, "prefix": f"agd_{ident}"}))
        self._by_id[ident] = (row, named_principal(row))
        self.edits += 1
        return self.describe(name), text

    def _revocable(self, by: Principal, name: str, doing: str) -> TokenRow:
        if name in self.config:
            raise Conflict(f"token {name!r} is in the daemon's configuration: the operator "
                           f"changes it there (it cannot be {doing} through the API)",
                           code="token_in_config")
        row = self._row(name)
        if row is None or not self._may_see(by, name):
            raise NotFound(f"token {name!r} not found", code="token_not_found")
        if not self._may_revoke(by, row):
            raise Forbidden(f"token {by.label!r} may not change token {name!r}")
        return row

    async def rotate(self, by: Principal, name: str, audit: Any
                     ) -> tuple[dict[str, Any], str]:
        """A new text for the token ``name`` (the old one stops working at once)."""
        old = self._revocable(by, name, "rotated")
        text, ident = new_token()
        row = await self.store.rotate_token(
            name, ident=ident, digest=hash_token(text), now=self.clock(),
            audit=audit.entry(actor=by.name, role=by.role, action="token.rotate",
                              resource=f"token:{name}",
                              details={"prefix": f"agd_{ident}"}))
        self._by_id.pop(old.id, None)
        self._by_id[row.id] = (row, named_principal(row))
        self.edits += 1
        return self.describe(name), text

    async def revoke(self, by: Principal, name: str, audit: Any) -> None:
        row = self._revocable(by, name, "revoked")
        await self.store.delete_token(name, audit=audit.entry(
            actor=by.name, role=by.role, action="token.revoke", resource=f"token:{name}",
            details={"prefix": f"agd_{row.id}"}))
        self._by_id.pop(row.id, None)
        self.edits += 1


def _tenant_visible(tenant: str, access: Access) -> bool:
    """Whether the scope shows ``tenant`` (as ``Tenants.visible``: every one to an
    unscoped token, else those its tenant patterns match)."""
    return access.everything or (access.tenants is not None
                                 and access.tenants.fullmatch(tenant) is not None)


def _tenant_within(tenant: str, access: Access) -> bool:
    return access.tenants is None or access.tenants.fullmatch(tenant) is not None


def _within(inner: Principal, outer: Principal) -> bool:
    """Whether every agent ``inner`` may use, ``outer`` may use too (decided on the
    patterns: a tenant ``outer``'s tenant patterns match, agent patterns that are
    ``outer``'s own or names they match)."""
    if outer.access.everything:
        return True
    if outer.access.tenants is not None and (
            inner.tenant is None or not _tenant_within(inner.tenant, outer.access)):
        return False
    if outer.access.agents is not None:
        wanted = _agent_patterns(inner)
        if wanted is None:
            return False
        mine = set(_agent_patterns(outer) or ())
        return all(p in mine or (not any(c in p for c in "*?[")
                                 and outer.access.agents.fullmatch(p) is not None)
                   for p in wanted)
    return True


def _agent_patterns(principal: Principal) -> tuple[str, ...] | None:
    """The agent patterns behind a principal's access (None: no restriction)."""
    patterns = principal.access.agent_patterns
    return patterns if principal.access.agents is not None else None
