"""Who may do what: named tokens (``/v1/tokens``), tenants (``/v1/tenants``) and the
audit log (``/v1/audit``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["IdentityAPI"]


class IdentityAPI(BaseClient):
    """Tokens, tenants and the audit log."""

    def create_token(self, name: str, role: str, *, tenant: str | None = None,
                     agents: Sequence[str] | None = None,
                     expires_at: datetime | str | None = None) -> dict[str, Any]:
        """Make a named token; the answer's ``token`` is its text, shown only here.

        Raises:
            APIError: ``forbidden`` (403: a role above the caller's, a scope beyond
                its own), ``tenant_not_found`` (404), ``token_exists`` (409),
                ``invalid_input`` (422 naming the field).
        """
        body: dict[str, Any] = {"name": name, "role": role}
        if tenant is not None:
            body["tenant"] = tenant
        if agents is not None:
            body["agents"] = list(agents)
        if expires_at is not None:
            body["expires_at"] = (expires_at.isoformat() if isinstance(expires_at, datetime)
                                  else expires_at)
        result: dict[str, Any] = self._request("POST", "/v1/tokens", json_body=body)
        return result

    def list_tokens(self) -> list[dict[str, Any]]:
        """The tokens the caller may see (never their text)."""
        result: list[dict[str, Any]] = self._request("GET", "/v1/tokens")["tokens"]
        return result

    def rotate_token(self, name: str) -> dict[str, Any]:
        """A new text for ``name`` (in the answer's ``token``); the old one stops."""
        result: dict[str, Any] = self._request(
            "POST", f"/v1/tokens/{segment(name)}/rotate")
        return result

    def revoke_token(self, name: str) -> None:
        self._request("DELETE", f"/v1/tokens/{segment(name)}")

    def create_tenant(self, name: str, *, quotas: dict[str, Any] | None = None,
                      description: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "quotas": dict(quotas or {})}
        if description is not None:
            body["description"] = description
        result: dict[str, Any] = self._request("POST", "/v1/tenants", json_body=body)
        return result

    def list_tenants(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/tenants")["tenants"]
        return result

    def get_tenant(self, name: str) -> dict[str, Any]:
        """A tenant, with ``usage``: what it holds of each counted quota."""
        result: dict[str, Any] = self._request("GET", f"/v1/tenants/{segment(name)}")
        return result

    def update_tenant(self, name: str, *, quotas: dict[str, Any] | None = None,
                      description: str | None = None) -> dict[str, Any]:
        """Change quotas (a key set to None lifts that quota) or the description."""
        body: dict[str, Any] = {}
        if quotas is not None:
            body["quotas"] = quotas
        if description is not None:
            body["description"] = description
        result: dict[str, Any] = self._request("PATCH", f"/v1/tenants/{segment(name)}",
                                               json_body=body)
        return result

    def delete_tenant(self, name: str) -> None:
        self._request("DELETE", f"/v1/tenants/{segment(name)}")

    def audit(self, *, after: int = 0, actor: str | None = None,
              action: str | None = None, outcome: str | None = None,
              limit: int = 500) -> Iterator[dict[str, Any]]:
        """The audit log's rows after ``after``, oldest first, every page (admins)."""
        while True:
            page = self._request("GET", "/v1/audit", params={
                "after": after, "limit": limit, "actor": actor, "action": action,
                "outcome": outcome})
            yield from page["rows"]
            if page.get("next_after") is None:
                return
            after = int(page["next_after"])

    def verify_audit(self, head: str | None = None) -> dict[str, Any]:
        """Walk the audit log's hash chain (``head``: ``SEQ:HASH`` noted earlier)."""
        result: dict[str, Any] = self._request("GET", "/v1/audit/verify",
                                               params={"head": head})
        return result
