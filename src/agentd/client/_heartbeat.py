"""An agent's heartbeat: its settings and state (``/v1/agents/{name}/heartbeat``)."""

from __future__ import annotations

from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["HeartbeatAPI"]

#: Keys of ``settings.heartbeat`` :meth:`HeartbeatAPI.set_heartbeat` may change.
_KEYS = ("enabled", "every_s", "document", "file", "session", "active_hours", "ok_token",
         "max_document_bytes")


class HeartbeatAPI(BaseClient):
    """The periodic autonomous turn of an agent (``settings.heartbeat``)."""

    def get_heartbeat(self, agent: str) -> dict[str, Any]:
        """``{"agent", "settings", "valid", "state"}``; ``state`` has ``last_beat_at``,
        ``last_run_id``, ``last_outcome`` (the run's status, ``ok`` for a silent reply),
        ``next_beat_at``, ``last_skip_at`` and ``last_skip_reason``."""
        result: dict[str, Any] = self._request("GET",
                                               f"/v1/agents/{segment(agent)}/heartbeat")
        return result

    def set_heartbeat(self, agent: str, **changes: Any) -> dict[str, Any]:
        """Change keys of the heartbeat (``enabled=True, every_s=1800, document=...,
        active_hours={"start": "09:00", "end": "18:00", "timezone": "Europe/Berlin"}``);
        a key given as None goes back to its default; the rest are kept. Returns what
        :meth:`get_heartbeat` returns.

        Raises:
            APIError: ``invalid_input`` (422) naming the key (``body.every_s``).
            TypeError: a key the heartbeat does not have.
        """
        unknown = sorted(set(changes) - set(_KEYS))
        if unknown:
            raise TypeError(f"unknown heartbeat setting(s): {', '.join(unknown)} "
                            f"(use {', '.join(_KEYS)})")
        result: dict[str, Any] = self._request(
            "PATCH", f"/v1/agents/{segment(agent)}/heartbeat", json_body=changes)
        return result
