"""Schedules: messages an agent gets on a clock (``/v1/agents/{name}/schedules``,
``/v1/schedules``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from agentd.client.base import BaseClient, segment

__all__ = ["SchedulesAPI"]


def _when(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


class SchedulesAPI(BaseClient):
    """Create, list, change, pause, resume and delete schedules."""

    def create_schedule(
        self,
        agent: str,
        content: str,
        *,
        cron: str | None = None,
        every_s: float | None = None,
        at: datetime | str | None = None,
        timezone: str | None = None,
        session: str | None = None,
        jitter_s: float | None = None,
        overlap: str | None = None,
        missed: str | None = None,
        catchup_s: float | None = None,
        ends_at: datetime | str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """A new schedule of ``agent``: exactly one of ``cron`` (5 fields, in
        ``timezone``), ``every_s`` and ``at``. ``session`` None: a new session per
        fire. Fields left None take the daemon's or the agent's defaults.

        Raises:
            APIError: ``invalid_input`` (422, naming the field: a bad cron expression
                or time zone, an interval under the agent's minimum, ``at`` in the
                past), ``agent_not_found`` (404), ``schedule_limit`` (409).
        """
        body: dict[str, Any] = {"content": content}
        for key, value in (("cron", cron), ("every_s", every_s), ("at", _when(at)),
                           ("timezone", timezone), ("session", session),
                           ("jitter_s", jitter_s), ("overlap", overlap),
                           ("missed", missed), ("catchup_s", catchup_s),
                           ("ends_at", _when(ends_at)), ("enabled", enabled)):
            if value is not None:
                body[key] = value
        result: dict[str, Any] = self._request(
            "POST", f"/v1/agents/{segment(agent)}/schedules", json_body=body)
        return result

    def list_schedules(self, agent: str | None = None, *, limit: int = 100
                       ) -> Iterator[dict[str, Any]]:
        """Schedules (of one agent, or of all), oldest first, every page."""
        after: str | None = None
        while True:
            if agent is not None:
                page = self._request("GET", f"/v1/agents/{segment(agent)}/schedules",
                                     params={"limit": limit, "after": after})
            else:
                page = self._request("GET", "/v1/schedules",
                                     params={"limit": limit, "after": after})
            yield from page["schedules"]
            after = page.get("next_after")
            if not after:
                return

    def get_schedule(self, schedule_id: str, *, next: int = 0) -> dict[str, Any]:
        """One schedule; ``next``: also its next N fire times (``next``)."""
        result: dict[str, Any] = self._request(
            "GET", f"/v1/schedules/{segment(schedule_id)}",
            params={"next": next} if next else None)
        return result

    def update_schedule(self, schedule_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields (``cron``, ``every_s``, ``content``, ``enabled``, ...)."""
        body = {k: _when(v) if isinstance(v, datetime) else v for k, v in fields.items()}
        result: dict[str, Any] = self._request(
            "PATCH", f"/v1/schedules/{segment(schedule_id)}", json_body=body)
        return result

    def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self.update_schedule(schedule_id, enabled=False)

    def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        """Resume (clears ``paused_reason``; the next fire time is worked out anew)."""
        return self.update_schedule(schedule_id, enabled=True)

    def delete_schedule(self, schedule_id: str) -> None:
        self._request("DELETE", f"/v1/schedules/{segment(schedule_id)}")

    def schedule_fires(self, schedule_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The latest fire times claimed (fired, skipped or missed), newest first."""
        result = self._request("GET", f"/v1/schedules/{segment(schedule_id)}/fires",
                               params={"limit": limit})
        fires: list[dict[str, Any]] = result["fires"]
        return fires
