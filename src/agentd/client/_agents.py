"""The daemon and its agents: health, create, list, change, pause, resume, stop, tools."""

from __future__ import annotations

from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["AgentsAPI"]


class AgentsAPI(BaseClient):
    """Health, agents and the tools they may use."""

    def health(self) -> dict[str, Any]:
        """``GET /health``: status, version, store, sandbox, agents, active_runs."""
        result: dict[str, Any] = self._request("GET", "/health")
        return result

    # -- agents ------------------------------------------------------------------

    def create_agent(
        self,
        name: str,
        model: str | None = None,
        instructions: str | None = None,
        tools: list[str] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create an agent; fields left ``None`` take the daemon's defaults.

        Raises:
            APIError: ``agent_exists`` (409), ``invalid_input`` / ``invalid_model`` (422).
        """
        body: dict[str, Any] = {"name": name}
        for key, value in (
            ("model", model),
            ("instructions", instructions),
            ("tools", tools),
            ("settings", settings),
        ):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self._request("POST", "/v1/agents", json_body=body)
        return result

    def list_agents(self) -> list[dict[str, Any]]:
        """All agents."""
        result = self._request("GET", "/v1/agents")
        agents: list[dict[str, Any]] = result.get("agents", []) if result else []
        return agents

    def agent_page(self, *, limit: int = 100, after: str | None = None, q: str | None = None,
                   state: str | list[str] | None = None) -> dict[str, Any]:
        """A page of agents by name (``GET /v1/agents?limit=...``): ``{"agents",
        "next_after"}``, each agent with ``awake``; give ``next_after`` as ``after`` for
        the next page (None on the last). ``q``: a part of the name (any case);
        ``state``: one state or several."""
        states = state if state is None or isinstance(state, str) else ",".join(state)
        result: dict[str, Any] = self._request("GET", "/v1/agents", params={
            "limit": limit, "after": after, "q": q, "state": states})
        return result

    def overview(self) -> dict[str, Any]:
        """The daemon at a glance (``GET /v1/overview``): agents by state and awake,
        active runs, approvals waiting, today's usage, disk and store in use."""
        result: dict[str, Any] = self._request("GET", "/v1/overview")
        return result

    def get_agent(self, name: str) -> dict[str, Any]:
        """One agent by name (``agent_not_found`` when unknown)."""
        result: dict[str, Any] = self._request("GET", f"/v1/agents/{segment(name)}")
        return result

    def update_agent(self, name: str, **fields: Any) -> dict[str, Any]:
        """Change an agent: ``model``, ``instructions``, ``tools`` and/or ``settings``."""
        result: dict[str, Any] = self._request(
            "PATCH", f"/v1/agents/{segment(name)}", json_body=fields
        )
        return result

    def delete_agent(self, name: str) -> None:
        """Delete an agent with its sessions, events and runs."""
        self._request("DELETE", f"/v1/agents/{segment(name)}")

    def _lifecycle(self, name: str, action: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", f"/v1/agents/{segment(name)}/{action}")
        return result

    def pause_agent(self, name: str) -> dict[str, Any]:
        """Pause an agent: it refuses new messages (409 ``agent_paused``) until resumed."""
        return self._lifecycle(name, "pause")

    def resume_agent(self, name: str) -> dict[str, Any]:
        """Resume a paused or stopped agent."""
        return self._lifecycle(name, "resume")

    def stop_agent(self, name: str) -> dict[str, Any]:
        """Stop an agent."""
        return self._lifecycle(name, "stop")


    # -- tools ---------------------------------------------------------------------

    def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the daemon has (``GET /v1/tools``), by name: ``name``,
        ``description``, ``parameters`` (JSON schema of its arguments), ``read_only``,
        ``idempotent``, ``needs_approval``, ``needs_network``, ``sends_out``,
        ``untrusted_output`` and ``timeout_s``."""
        result = self._request("GET", "/v1/tools")
        tools: list[dict[str, Any]] = result.get("tools", []) if result else []
        return tools

    def get_tool(self, name: str) -> dict[str, Any]:
        """One tool by name (APIError 404 ``tool_not_found`` when unknown)."""
        result: dict[str, Any] = self._request("GET", f"/v1/tools/{segment(name)}")
        return result
