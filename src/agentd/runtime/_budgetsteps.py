"""The budget half of a run's step: what the run, its agent and its tenant may spend.

Before each model call the run's limits are checked (a limit reached fails the run
with ``budget_exceeded``); after it, the thresholds the step's usage crossed are
logged as ``budget.warning`` events, committed with the step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Literal, cast

from agentd.errors import AgentdError
from agentd.events import BudgetWarning, Event
from agentd.store import NewEvent
from agentd.store.records import RunRecord, UsageCharge

if TYPE_CHECKING:
    from agentd.config import Budget
    from agentd.llm.messages import Usage
    from agentd.runtime.calls import Kernel
    from agentd.runtime.loop import CallPolicy

__all__ = ["BudgetSteps"]

Scope = Literal["run", "agent", "tenant"]
Period = Literal["run", "day", "month"]
Metric = Literal["tokens", "cost_usd", "steps"]
#: (scope, name, period, metric, limit, used, warn_at)
Limit = tuple[Scope, str, Period, str, float, float, tuple[float, ...]]


def exceeded(scope: str, name: str, period: str, metric: str, limit: float,
             used: float) -> AgentdError:
    """The ``budget_exceeded`` error."""
    what = {"run": "this run's", "agent": f"agent {name!r}'s",
            "tenant": f"tenant {name!r}'s"}[scope]
    when = "" if period == "run" else f" per {period}"
    unit = {"tokens": " tokens", "cost_usd": " USD", "steps": " steps"}[metric]
    return AgentdError(
        f"budget exceeded: {what} limit of {limit:g}{unit}{when} is used up "
        f"({round(used, 6):g}{unit})", code="budget_exceeded",
        details={"scope": scope, "name": name, "period": period, "metric": metric,
                 "limit": limit, "used": round(used, 6)})


class BudgetSteps:
    """Mixed into :class:`~agentd.runtime.loop.RunExecutor` (declares what it uses)."""

    run: RunRecord
    agent_name: str
    kernel: Kernel
    policy: CallPolicy
    usage: Usage
    cost_usd: float
    steps: int
    #: Charged to this agent (id, name): the run's own, or the one that called it.
    payer_id: str
    payer_name: str
    #: The run's finished children's usage (input, output tokens, cost), if counted.
    child_usage: Callable[[str], Awaitable[tuple[int, int, float]]] | None

    def _new(self, event: Event) -> NewEvent:
        raise NotImplementedError

    async def _limits(self) -> AsyncIterator[Limit]:
        """Every budget limit on this run's next call, with what is used of it. The
        run's own, then its agent's and tenant's per day and month (totals from the
        budget book)."""
        budget = self.policy.budget
        run_used: dict[str, float] = {
            "tokens": self.usage.input_tokens + self.usage.output_tokens,
            "cost_usd": self.cost_usd, "steps": self.steps}
        if budget.run and self.child_usage is not None:
            # Its finished subtasks' and calls' usage counts toward its own.
            tokens_in, tokens_out, cost = await self.child_usage(self.run.id)
            run_used["tokens"] += tokens_in + tokens_out
            run_used["cost_usd"] += cost
        for metric, limit in budget.run.items():
            yield "run", self.run.id, "run", metric, limit, run_used[metric], budget.warn_at
        scopes: list[tuple[Literal["agent", "tenant"], str, str, Budget]] = [
            ("agent", self.payer_id, self.payer_name, budget)]
        if self.policy.tenant_budget is not None:
            scopes.append(("tenant", self.policy.tenant, self.policy.tenant,
                           self.policy.tenant_budget))
        for scope, key, name, scoped in scopes:
            periods: tuple[Literal["day", "month"], ...] = ("day", "month")
            for period in periods:
                limits = getattr(scoped, period).items()
                if not limits:
                    continue
                tokens, cost = await self.kernel.budgets.used(scope, key, period)
                for metric, limit in limits:
                    yield (scope, name, period, metric, limit,
                           tokens if metric == "tokens" else cost, scoped.warn_at)

    async def _over_budget(self) -> AgentdError | None:
        """The ``budget_exceeded`` error if a limit is reached, else None."""
        async for scope, name, period, metric, limit, used, _ in self._limits():
            if used >= limit:
                return exceeded(scope, name, period, metric, limit, used)
        return None

    async def _budget_warnings(self, tokens: int, cost: float) -> list[NewEvent]:
        """``budget.warning`` events for the thresholds this step's usage crosses. A
        run's usage only grows, so it crosses each threshold once; an agent's or a
        tenant's may be crossed by two of its runs at once, hence ``warn_once``."""
        events: list[NewEvent] = []
        step = {"tokens": tokens, "cost_usd": cost}
        async for scope, name, period, metric, limit, used, warn_at in self._limits():
            after = used + step.get(metric, 0)
            for threshold in warn_at:
                if not used < threshold * limit <= after:
                    continue
                if scope != "run" and not self.kernel.budgets.warn_once(
                        scope, name, period, metric, threshold):
                    continue
                events.append(self._new(BudgetWarning(data={
                    "scope": scope, "name": name, "period": period,
                    # (the budget's models name only these metrics)
                    "metric": cast(Metric, metric), "limit": limit,
                    "used": round(after, 6), "threshold": threshold})))
        return events

    def _charged(self, charge: UsageCharge | None) -> None:
        """A committed step's usage joins the cached agent and tenant totals."""
        if charge is not None and self.policy.budgeted:
            self.kernel.budgets.charge(
                {"agent": charge.agent_id, "tenant": charge.tenant},
                charge.input_tokens + charge.output_tokens, charge.cost_usd)
