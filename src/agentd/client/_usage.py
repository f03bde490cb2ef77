"""Usage ledger and the model-call kernel's state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentd.client.base import BaseClient

__all__ = ["UsageAPI"]


class UsageAPI(BaseClient):
    """What model calls used and how the kernel schedules them."""

    def usage(
        self,
        *,
        agent: str | None = None,
        tenant: str | None = None,
        since: str | None = None,
        until: str | None = None,
        by: str | Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Model calls, tokens and cost from the usage ledger (``GET /v1/usage``).

        Args:
            agent: Only this agent's usage, by name (a deleted agent keeps its history;
                an unknown name gives an empty report).
            tenant: Only this tenant's usage.
            since: First UTC day counted, ``YYYY-MM-DD`` (inclusive).
            until: Last UTC day counted, ``YYYY-MM-DD`` (inclusive).
            by: Group by any of ``agent``, ``tenant``, ``model``, ``day``, ``month``
                (a list, or a comma-separated string); none: totals only.

        Returns:
            ``{"usage": [row], "totals": {...}, "since", "until"}``: each row has the
            keys grouped by and ``calls``, ``input_tokens``, ``output_tokens``,
            ``cached_tokens``, ``cache_write_tokens`` (both part of the input),
            ``cost_usd``; ``totals`` has the sums.

        Raises:
            APIError: ``invalid_input`` (422) for a bad date, ``since`` after ``until``
                or an unknown ``by`` value.
        """
        groups = by if by is None or isinstance(by, str) else ",".join(by)
        result: dict[str, Any] = self._request("GET", "/v1/usage", params={
            "agent": agent, "tenant": tenant, "since": since, "until": until, "by": groups})
        return result

    def kernel(self) -> dict[str, Any]:
        """The model-call kernel's state (``GET /v1/kernel``): scheduler lanes (limits,
        in flight, queued per class, waits), provider breakers and call counters."""
        result: dict[str, Any] = self._request("GET", "/v1/kernel")
        return result
