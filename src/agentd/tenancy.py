"""Which tenant an agent belongs to, as its stored settings say: the one rule the
store, the access checks and the doors share (a module of the base layer, so that
what reads a token's scope need not import the store)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_TENANT", "tenant_of"]

#: The tenant of an agent whose settings name none (``AgentSettings.tenant``'s default).
DEFAULT_TENANT = "default"


def tenant_of(settings: Mapping[str, Any]) -> str | None:
    """An agent's tenant as stored (None when its settings hold something else than a
    string there: such an agent is in no tenant's scope)."""
    tenant = settings.get("tenant", DEFAULT_TENANT)
    return tenant if isinstance(tenant, str) else None
