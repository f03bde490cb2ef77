"""What one tenant may hold of the daemon's shared resources, whoever decides it.

The runtime asks ``caps_of(tenant)`` (a callable the daemon is given: its tenants'
quotas) each time a tenant would take more: a sandbox uid for a new agent
(:mod:`agentd.runtime.sandboxes`), an egress connection (:mod:`agentd.sandbox.egress`).
It runs inside the store transaction that gives a uid, so it must only compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["NO_CAPS", "CapsOf", "TenantCaps", "no_caps"]


@dataclass(frozen=True, kw_only=True, slots=True)
class TenantCaps:
    """A tenant's caps; None: no cap.

    Attributes:
        sandbox_uids: sandbox uids its live agents may hold (under a root daemon,
            one per agent: a new agent past it is refused, ``403 quota_exceeded``).
        egress_connections: connections its agents may hold open through the egress
            proxies at once (commands and browsers together); past it, the proxy
            answers ``503``.
    """

    sandbox_uids: int | None = None
    egress_connections: int | None = None


NO_CAPS = TenantCaps()

#: A tenant's caps, by its name (``settings.tenant``).
CapsOf = Callable[[str], TenantCaps]


def no_caps(tenant: str) -> TenantCaps:
    """The default: no tenant is capped."""
    return NO_CAPS
