"""Webhooks: an agent's events posted, signed, to a URL (``/v1/agents/{name}/webhooks``,
``/v1/webhooks``, ``/v1/webhook-deliveries``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["WebhooksAPI"]


class WebhooksAPI(BaseClient):
    """Subscribe, list, change, delete; deliveries listed and replayed."""

    def create_webhook(self, agent: str, url: str, *, kinds: Sequence[str] | None = None,
                       description: str | None = None, enabled: bool | None = None
                       ) -> dict[str, Any]:
        """Subscribe ``url`` to ``agent``'s events (``kinds``: ``run.completed``,
        ``run.*``, ``*``; default every kind). The answer's ``secret`` is shown only
        here: keep it to verify signatures.

        Raises:
            APIError: ``invalid_input`` (422 naming ``body.url``: a host the operator
                does not allow, plain http, a private address; ``body.kinds``),
                ``agent_not_found`` (404), ``webhook_limit`` (409).
        """
        body: dict[str, Any] = {"url": url}
        for key, value in (("kinds", list(kinds) if kinds is not None else None),
                           ("description", description), ("enabled", enabled)):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self._request(
            "POST", f"/v1/agents/{segment(agent)}/webhooks", json_body=body)
        return result

    def list_webhooks(self, agent: str | None = None, *, limit: int = 100
                      ) -> Iterator[dict[str, Any]]:
        """Subscriptions (of one agent, or of all), oldest first, every page."""
        after: str | None = None
        path = (f"/v1/agents/{segment(agent)}/webhooks" if agent is not None
                else "/v1/webhooks")
        while True:
            page = self._request("GET", path, params={"limit": limit, "after": after})
            yield from page["webhooks"]
            after = page.get("next_after")
            if not after:
                return

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        """One subscription, with its deliveries counted by status."""
        result: dict[str, Any] = self._request("GET", f"/v1/webhooks/{segment(webhook_id)}")
        return result

    def update_webhook(self, webhook_id: str, **fields: Any) -> dict[str, Any]:
        """Change ``url``, ``kinds``, ``description`` or ``enabled``."""
        result: dict[str, Any] = self._request(
            "PATCH", f"/v1/webhooks/{segment(webhook_id)}", json_body=fields)
        return result

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/v1/webhooks/{segment(webhook_id)}")

    def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """A new signing secret (in the answer's ``secret``, shown only here)."""
        result: dict[str, Any] = self._request(
            "POST", f"/v1/webhooks/{segment(webhook_id)}/rotate-secret")
        return result

    def ping_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Queue a test delivery (kind ``webhook.ping``); the delivery."""
        result: dict[str, Any] = self._request(
            "POST", f"/v1/webhooks/{segment(webhook_id)}/ping")
        return result

    def webhook_deliveries(self, webhook_id: str, *, status: str | None = None,
                           limit: int = 50, before: str | None = None
                           ) -> dict[str, Any]:
        """A page of deliveries, newest first: ``{"deliveries", "next_before"}``."""
        result: dict[str, Any] = self._request(
            "GET", f"/v1/webhooks/{segment(webhook_id)}/deliveries",
            params={"status": status, "limit": limit, "before": before})
        return result

    def get_webhook_delivery(self, delivery_id: str) -> dict[str, Any]:
        """One delivery, with the body it sends (``payload``)."""
        result: dict[str, Any] = self._request(
            "GET", f"/v1/webhook-deliveries/{segment(delivery_id)}")
        return result

    def replay_webhook_delivery(self, delivery_id: str) -> dict[str, Any]:
        """Send a delivery again now (same id, fresh signature, more tries)."""
        result: dict[str, Any] = self._request(
            "POST", f"/v1/webhook-deliveries/{segment(delivery_id)}/replay")
        return result
