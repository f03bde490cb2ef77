"""Named secrets (``/v1/secrets``): set, listed by name, deleted; never read back."""

from __future__ import annotations

from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["SecretsAPI"]


def _scope(tenant: str | None, agent: str | None) -> dict[str, str]:
    return {k: v for k, v in (("tenant", tenant), ("agent", agent)) if v is not None}


class SecretsAPI(BaseClient):
    """Secrets settings name as ``secret:NAME``: the daemon never answers a value."""

    def set_secret(self, name: str, value: str, *, tenant: str | None = None,
                   agent: str | None = None) -> dict[str, Any]:
        """Set (or replace) secret ``name`` of ``tenant`` (default: the token's, else
        ``default``) or of one ``agent``; its name, scope and times.

        Raises:
            APIError: ``invalid_input`` (422: the name, a value under 8 characters, an
                unknown tenant), ``agent_not_found`` (404), ``forbidden`` (403: a
                tenant outside the token's scope).
        """
        result: dict[str, Any] = self._request(
            "POST", "/v1/secrets", json_body={"name": name, "value": value,
                                              **_scope(tenant, agent)})
        return result

    def list_secrets(self, *, tenant: str | None = None, agent: str | None = None
                     ) -> list[dict[str, Any]]:
        """The secrets the token may see: names, scopes and times, never values."""
        page: dict[str, Any] = self._request("GET", "/v1/secrets",
                                             params=_scope(tenant, agent))
        secrets: list[dict[str, Any]] = page["secrets"]
        return secrets

    def delete_secret(self, name: str, *, tenant: str | None = None,
                      agent: str | None = None) -> None:
        """Delete one secret (``secret_not_found``, 404, when there is none)."""
        self._request("DELETE", f"/v1/secrets/{segment(name)}",
                      params=_scope(tenant, agent))
