"""Finished runs and preference pairs as JSON lines (``GET /v1/export/...``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from agentd.client._memory import MemoryExport, open_lines
from agentd.client.base import BaseClient

__all__ = ["ExportAPI"]


class ExportAPI(BaseClient):
    """Runs as data: what ``agentd export`` writes."""

    def export_runs(self, *, agent: str | None = None,
                    status: str | Sequence[str] | None = None, since: str | None = None,
                    until: str | None = None, limit: int | None = None,
                    context: bool = False, max_chars: int | None = None) -> MemoryExport:
        """Finished runs, newest first, one JSON object a line (docs/operations.md,
        "Traces as data"), streamed as the daemon reads them.

        Args:
            agent: Only this agent's runs.
            status: Only runs that ended so: ``completed``, ``failed``, ``cancelled``,
                ``interrupted`` (one, or several).
            since: Only runs created at or after this time (ISO 8601).
            until: Only runs created before this time (ISO 8601).
            limit: At most this many runs.
            context: Also each run's conversation before it (``context``).
            max_chars: Cut strings longer than this (0: keep all; default 65,536).

        Returns:
            An iterator of ``bytes`` lines that is also a context manager (close it, or
            read it to the end, to free the connection).

        Raises:
            APIError: 404 for an agent that is not there (or outside the token's
                scope), 422 for a bad status, time or limit; raised here, before a line.
        """
        return self._lines("/v1/export/runs", {
            "agent": agent, "status": _statuses(status), "since": since, "until": until,
            "limit": limit, "context": "true" if context else None,
            "max_chars": max_chars})

    def export_pairs(self, *, agent: str | None = None,
                     status: str | Sequence[str] | None = None, since: str | None = None,
                     until: str | None = None, limit: int | None = None,
                     denied: bool = False, max_chars: int | None = None) -> MemoryExport:
        """Preference pairs (``prompt``, ``chosen``, ``rejected``, as TRL's
        ``DPOTrainer`` reads them) from the approvals of the runs selected; the
        arguments are :meth:`export_runs`'s, and ``denied`` adds the pairs of denied
        calls. Same return and errors."""
        return self._lines("/v1/export/pairs", {
            "agent": agent, "status": _statuses(status), "since": since, "until": until,
            "limit": limit, "denied": "true" if denied else None, "max_chars": max_chars})

    def _lines(self, path: str, params: dict[str, Any]) -> MemoryExport:
        return open_lines(self, path, params, timeout=httpx.Timeout(self._timeout, read=None))


def _statuses(status: str | Sequence[str] | None) -> str | None:
    return status if status is None or isinstance(status, str) else ",".join(status)
