"""Budgets: limits per run and per UTC day and month, of an agent
(``settings.budget``) or a tenant (``[tenants.NAME] budget``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Budget", "Limit", "RunLimit"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limit(_Strict):
    """A budget limit; tokens are input plus output tokens."""

    tokens: int | None = Field(default=None, gt=0, strict=True)
    cost_usd: float | None = Field(default=None, gt=0, strict=True)

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in self.model_dump().items() if v is not None]


class RunLimit(Limit):
    steps: int | None = Field(default=None, ge=1, le=1000, strict=True)


class Budget(_Strict):
    """Limits per run, and per day and month (UTC) for an agent or a tenant."""

    run: RunLimit = RunLimit()
    day: Limit = Limit()
    month: Limit = Limit()
    #: Fractions of a limit at which a ``budget.warning`` event is written.
    warn_at: tuple[float, ...] = (0.8,)

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < w < 1 for w in value):
            raise ValueError("warn_at fractions must be between 0 and 1, e.g. [0.5, 0.8]")
        return tuple(sorted(set(value)))

    @property
    def empty(self) -> bool:
        return not (self.run.items() or self.day.items() or self.month.items())
