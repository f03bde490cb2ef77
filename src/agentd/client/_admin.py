"""The daemon itself (admins): reloading its configuration."""

from __future__ import annotations

from typing import Any

from agentd.client.base import BaseClient

__all__ = ["AdminAPI"]


class AdminAPI(BaseClient):
    """What only an admin does to the daemon."""

    def reload(self) -> dict[str, Any]:
        """Have the daemon read agentd.toml again (``POST /v1/admin/reload``, what
        SIGHUP does): ``applied`` lists the settings now in effect,
        ``restart_required`` those that take effect at the next start, ``unchanged``
        says the file holds what the daemon runs.

        Raises:
            APIError: ``invalid_config`` (422) when the file cannot be loaded (nothing
                changed; ``details["errors"]`` names each field), ``forbidden`` (403)
                for a token that is not an admin over every agent.
        """
        result: dict[str, Any] = self._request("POST", "/v1/admin/reload")
        return result
