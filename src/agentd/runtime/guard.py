"""What the runtime asks of whoever decides who may do what (``agentd.identity``
implements it): quotas, the operator's grants, and an audit log.

The runtime's writes call these, not the identity service: an agent created, changed or
deleted (:meth:`Agents.create` ...) checks the operator-only settings against the
caller's role and records the change with the caller's name; a new session, schedule or
memory entry is counted against its tenant's quota in the store's transaction.
Embedders that run the runtime without the identity service get no quotas, every
grant, and no audit (:data:`NO_GUARD`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from agentd.errors import Forbidden
from agentd.security.identity import Principal
from agentd.settings import Reaching, operator_only
from agentd.store import AuditEntry, Quota
from agentd.store.quota import Counted
from agentd.trust import Grants

__all__ = ["NO_GUARD", "Audit", "Guard", "Quotas", "refuse_operator_only"]


class Quotas(Protocol):
    def quota(self, tenant: str | None, resource: Counted) -> Quota | None:
        """The limit on ``resource`` of ``tenant`` (None: none)."""
        ...

    def cap(self, tenant: str | None, resource: str) -> int | None:
        """A limit the sandbox enforces (``egress_connections``, ``sandbox_uids``)."""
        ...


class Audit(Protocol):
    def entry(self, *, actor: str | None, role: str | None, action: str, resource: str,
              outcome: str = "allowed", reason: str = "",
              details: dict[str, Any] | None = None) -> AuditEntry:
        """An entry for a store write to record in its transaction."""
        ...

    async def append(self, **fields: Any) -> None:
        """Record a change in a transaction of its own."""
        ...

    def refused(self, *, actor: str | None, role: str | None, action: str, resource: str,
                reason: str, key: str | None = None,
                details: dict[str, Any] | None = None) -> None:
        """Record a refusal (queued, capped per actor and minute)."""
        ...


class _NoQuotas:
    def quota(self, tenant: str | None, resource: Counted) -> Quota | None:
        return None

    def cap(self, tenant: str | None, resource: str) -> int | None:
        return None


class _EveryGrant:
    def model(self, spec: str) -> bool:
        return True

    def backend(self, name: str) -> bool:
        return True

    def limits(self, limits: dict[str, float]) -> bool:
        return True

    def disk(self, name: str, megabytes: int) -> bool:
        return True

    def network(self, grant: bool | Sequence[str]) -> bool:
        return True

    def mcp_command(self, argv: Sequence[str]) -> bool:
        return True

    def mcp_url(self, url: str) -> bool:
        return True


class _NoAudit:
    def entry(self, *, actor: str | None, role: str | None, action: str, resource: str,
              outcome: str = "allowed", reason: str = "",
              details: dict[str, Any] | None = None) -> AuditEntry:
        return AuditEntry(actor=actor, role=role, action=action, resource=resource,
                          outcome=outcome, reason=reason, details=details or {})

    async def append(self, **fields: Any) -> None:
        return None

    def refused(self, *, actor: str | None, role: str | None, action: str, resource: str,
                reason: str, key: str | None = None,
                details: dict[str, Any] | None = None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Guard:
    """The three together, as the runtime's services take them."""

    quotas: Quotas = field(default_factory=_NoQuotas)
    grants: Grants = field(default_factory=_EveryGrant)
    audit: Audit | None = None

    def entry(self, actor: Principal | None, action: str, resource: str,
              **details: Any) -> AuditEntry | None:
        """The audit entry of a change ``actor`` makes (None: nothing is recorded, for
        the runtime's own changes or without an audit log)."""
        if self.audit is None or actor is None:
            return None
        return self.audit.entry(actor=actor.name, role=actor.role, action=action,
                                resource=resource, details=details)

    def check_operator_only(self, actor: Principal | None, after: BaseModel,
                            before: BaseModel | None, *, prefix: str = "settings",
                            model: str | None = None, model_before: str | None = None,
                            where: str = "body.") -> None:
        """Refuse (403, each field named) the operator-only fields a change by
        ``actor`` sets when its role is below ``operator`` (None: the runtime's own
        change, or an embedder's: allowed)."""
        if actor is None or actor.may("configure_host"):
            return
        found = operator_only(after, before, self.grants, prefix=prefix, model=model,
                              model_before=model_before)
        if found:
            refuse_operator_only(actor, found, where, self.audit)


def refuse_operator_only(actor: Principal, found: list[Reaching], where: str,
                         audit: Audit | None) -> None:
    first = found[0]
    if audit is not None:
        audit.refused(actor=actor.name, role=actor.role, action="settings.denied",
                      resource=where + first.field, reason="operator-only setting",
                      details={"fields": [f.field for f in found]})
    error = Forbidden(
        f"{where}{first.field} is an operator-only setting ({first.why}); token "
        f"{actor.label!r} is {actor.role!r}: it needs an operator token"
        + (f" (and {len(found) - 1} more field(s))" if len(found) > 1 else ""),
        details={"field": where + first.field,
                 "errors": [f.to_api(where) for f in found]})
    error.audited = audit is not None  # type: ignore[attr-defined]  # (recorded above)
    raise error


NO_GUARD = Guard()
