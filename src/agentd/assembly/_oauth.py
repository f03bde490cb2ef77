"""The OAuth parts the composition root builds: the logins and tokens of agents' MCP
servers (:mod:`agentd.secrets.oauth`), and the verifier of the MCP door's outside
bearer tokens when ``[mcp.oauth]`` is set (:mod:`agentd.identity.resource`)."""

from __future__ import annotations

import os

from agentd.clock import Clock
from agentd.config import Settings
from agentd.identity.resource import ProtectedResource
from agentd.secrets import Secrets
from agentd.secrets.oauth import CALLBACK_PATH, MCPLogins
from agentd.store import Store
from agentd.store.oauth import OAuthStore

__all__ = ["make_logins", "make_resource"]


def make_logins(settings: Settings, store: Store, secrets: Secrets, clock: Clock
                ) -> MCPLogins:
    """The logins of agents' MCP servers, coming back to the daemon's own callback."""
    return MCPLogins(secrets, OAuthStore(store.engine),
                     redirect_uri=settings.base_url() + CALLBACK_PATH,
                     node_id=settings.node_id, clock=clock)


def make_resource(settings: Settings, clock: Clock) -> ProtectedResource | None:
    """The MCP door's verifier of ``[mcp.oauth]`` tokens (None when it takes none)."""
    if settings.mcp.oauth is None:
        return None
    return ProtectedResource(settings.mcp.oauth, resource=settings.mcp_resource(),
                             clock=clock, environ=os.environ)
