"""The door's resource URIs (here, not in :mod:`.server`, so that naming a session's
resource does not import the MCP SDK)."""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["SESSION_URI", "session_uri"]

SESSION_URI = "agentd://agents/{agent}/sessions/{key}"


def session_uri(agent: str, key: str) -> str:
    """The resource URI of a session."""
    return SESSION_URI.format(agent=quote(agent, safe=""), key=quote(key, safe=""))
