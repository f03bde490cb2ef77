"""Approval requests and sessions' own policy layers."""

from __future__ import annotations

from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["ApprovalsAPI"]


class ApprovalsAPI(BaseClient):
    """Deciding what runs wait for: approval requests and session policies."""

    def approvals(self, agent: str | None = None) -> list[dict[str, Any]]:
        """Pending approval requests, oldest first (of one agent, or all)."""
        params = {"agent": agent} if agent is not None else None
        result: dict[str, Any] = self._request("GET", "/v1/approvals", params=params)
        return list(result["approvals"])

    def decide_approval(self, approval_id: str, action: str, *,
                        arguments: dict[str, Any] | None = None,
                        remember: str | None = None, reason: str | None = None,
                        output: str | None = None, by: str | None = None
                        ) -> dict[str, Any]:
        """Decide an approval request; returns the decision as logged.

        Args:
            approval_id: The request (``ap_...``).
            action: ``approve`` or ``deny`` (a policy request); ``retry``, ``skip`` or
                ``fail`` (a call of unknown outcome).
            arguments: With approve: run the call with these arguments instead.
            remember: ``"arguments"`` (these exact arguments) or ``"tool"`` (deny
                only): also make the decision a rule of the agent's policy.
            reason: Why (a denial's reason reaches the model).
            output: With skip: the call's result.
            by: Ignored by the daemon (kept for older callers): the decision records
                the name of the token this client uses.
        """
        body: dict[str, Any] = {"action": action}
        del by  # the daemon records who decided from the token
        for name, value in (("arguments", arguments), ("remember", remember),
                            ("reason", reason), ("output", output)):
            if value is not None:
                body[name] = value
        result: dict[str, Any] = self._request(
            "POST", f"/v1/approvals/{segment(approval_id)}", json_body=body)
        return dict(result["decision"])

    def set_session_policy(self, agent: str, key: str, policy: dict[str, Any] | None
                           ) -> dict[str, Any]:
        """Set (None: clear) a session's own policy layer; returns the session."""
        path = f"/v1/agents/{segment(agent)}/sessions/{segment(key)}/policy"
        result: dict[str, Any] = (self._request("DELETE", path) if policy is None
                                  else self._request("PUT", path, json_body=policy))
        return result

