"""Budgets: limits on tokens and cost per run, and per agent and tenant per day or month.

A budget is checked before every model call (the run ends ``failed`` with
``budget_exceeded`` once a limit is reached; a run may overshoot by the one call that
crossed it, since a call's size is known only after it) and warned about after every
call that crosses one of its ``warn_at`` fractions (a ``budget.warning`` event, in
the same commit as the step). Tokens are input plus output tokens.

Totals per agent and tenant come from the store's usage ledger (``usage_daily``, one
row per day, agent and model, written in the same transaction as each step) the
first time they are needed, and are then kept up to date in memory by this node's
own steps. On a shared PostgreSQL store they are re-read every ``REFRESH_S`` seconds
to take in the other nodes' steps, so a cluster may overshoot by what the others
spent in that window.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["BudgetBook", "period_start"]

#: Seconds a cached agent or tenant total is trusted on a shared store.
REFRESH_S = 10.0
PERIODS = ("day", "month")


def period_start(period: str, now: float | None = None) -> str:
    """The first day (UTC, ``YYYY-MM-DD``) of the day or month containing ``now``."""
    day = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    return (day if period == "day" else day.replace(day=1)).isoformat()


@dataclass(slots=True)
class _Total:
    since: str
    tokens: int
    cost_usd: float
    loaded_at: float


Loader = Callable[[str, str, str], Awaitable[tuple[int, float]]]


class BudgetBook:
    """Running totals per agent and tenant for the current day and month."""

    def __init__(self, load: Loader, *, shared: bool) -> None:
        #: ``load(scope, key, since_day)`` -> (tokens, cost) from the usage ledger.
        self._load = load
        self._shared = shared
        #: (scope, key) -> period -> total.
        self._totals: dict[tuple[str, str], dict[str, _Total]] = {}
        #: (scope, key) -> (period start, metric, threshold) already warned about.
        self._warned: dict[tuple[str, str], set[tuple[str, str, float]]] = {}

    async def used(self, scope: str, key: str, period: str) -> tuple[int, float]:
        since = period_start(period)
        totals = self._totals.setdefault((scope, key), {})
        entry = totals.get(period)
        now = time.monotonic()
        if (entry is None or entry.since != since
                or (self._shared and now - entry.loaded_at > REFRESH_S)):
            tokens, cost = await self._load(scope, key, since)
            entry = totals[period] = _Total(since, tokens, cost, now)
        return entry.tokens, entry.cost_usd

    def charge(self, keys: dict[str, str], tokens: int, cost_usd: float) -> None:
        """Count a step's usage (committed by this node) in the cached totals."""
        for scope, key in keys.items():
            for entry in self._totals.get((scope, key), {}).values():
                entry.tokens += tokens
                entry.cost_usd += cost_usd

    def warn_once(self, scope: str, key: str, period: str, metric: str,
                  threshold: float) -> bool:
        marks = self._warned.setdefault((scope, key), set())
        mark = (period_start(period), metric, threshold)
        if mark in marks:
            return False
        marks.add(mark)
        return True

    def forget(self, scope: str, key: str) -> None:
        """Drop what is cached about an agent (put to sleep) or a tenant."""
        self._totals.pop((scope, key), None)
        self._warned.pop((scope, key), None)
