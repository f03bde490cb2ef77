"""OAuth for agents' MCP servers (``/v1/agents/{name}/mcp``): a person's login, the
servers' status, logout. Tokens are never answered."""

from __future__ import annotations

from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["MCPAuthAPI"]


class MCPAuthAPI(BaseClient):
    """Authorizing agents' MCP servers that take OAuth tokens."""

    def mcp_login(self, agent: str, server: str) -> dict[str, Any]:
        """Start the authorization of ``agent``'s MCP server ``server``: the
        ``authorization_url`` a person opens (and its ``expires_at``).

        Raises:
            APIError: ``mcp_server_not_found`` (404), ``mcp_no_oauth`` (422: the server
                has no oauth block), ``oauth_server_error`` (502: its authorization
                server could not be reached or answered wrongly), ``forbidden`` (403).
        """
        result: dict[str, Any] = self._request(
            "POST", f"/v1/agents/{segment(agent)}/mcp/{segment(server)}/login")
        return result

    def mcp_status(self, agent: str) -> list[dict[str, Any]]:
        """``agent``'s MCP servers that take OAuth tokens: whether each is authorized,
        its tokens' scope and expiry, whether a login is under way."""
        page: dict[str, Any] = self._request("GET", f"/v1/agents/{segment(agent)}/mcp")
        servers: list[dict[str, Any]] = page["servers"]
        return servers

    def mcp_logout(self, agent: str, server: str) -> None:
        """Forget the server's tokens (revoked first where the server can);
        ``mcp_not_authorized`` (404) when there were none."""
        self._request("DELETE", f"/v1/agents/{segment(agent)}/mcp/{segment(server)}/login")
