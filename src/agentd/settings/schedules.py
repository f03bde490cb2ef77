"""The ``schedules`` area of an agent's settings (``settings.schedules``).

Limits on the agent's schedules (how many, how often), whether a run a schedule
started may create more, what a failing schedule does, and the defaults a new
schedule gets for what it does not say.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MISSED", "OVERLAP", "ScheduleSettings"]

#: What a fire does when the previous fire's run is still going (``Runs.send`` modes).
OVERLAP = ("skip", "enqueue", "interrupt")
#: What happens to fire times that passed while no daemon was firing.
MISSED = ("skip", "once", "all")


class ScheduleSettings(BaseModel):
    """An agent's schedules: limits, failure policy and defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_per_agent: int = Field(50, ge=0, le=100_000,
                               description="Schedules the agent may have (API and tools).")
    min_interval_s: float = Field(
        60.0, ge=1.0, le=86_400 * 366, allow_inf_nan=False,
        description="The shortest time between two fires (`every_s`, or a cron "
                    "expression's closest fire times) a schedule of this agent may have.")
    allow_from_schedule: bool = Field(
        False, description="Whether a run a schedule started may create schedules with "
                           "its tools (off: a scheduled run cannot multiply itself).")
    tool_max_per_agent: int = Field(
        10, ge=0, le=100_000,
        description="Of `max_per_agent`, how many the agent's own tools may create "
                    "(0: its tools cannot create schedules).")
    pause_after_failures: int = Field(
        5, ge=0, le=1000,
        description="Consecutive failed fire runs that pause the schedule (with "
                    "`paused_reason`); 0: never paused.")
    backoff_s: float = Field(
        60.0, ge=0.0, le=86_400.0, allow_inf_nan=False,
        description="After a failed fire run the next fire waits at least this long "
                    "after the failure, doubled for each further consecutive failure "
                    "(0: no backoff).")
    backoff_max_s: float = Field(3600.0, ge=0.0, le=7 * 86_400.0, allow_inf_nan=False,
                                 description="The longest backoff.")
    overlap: Literal["skip", "enqueue", "interrupt"] = Field(
        "skip", description="Default of a new schedule's `overlap`.")
    missed: Literal["skip", "once", "all"] = Field(
        "once", description="Default of a new schedule's `missed`.")
    catchup_s: float = Field(
        86_400.0, ge=0.0, le=366 * 86_400.0, allow_inf_nan=False,
        description="Default catch-up window of a new schedule: missed fire times older "
                    "than this are never fired.")
    grace_s: float = Field(
        60.0, ge=1.0, le=86_400.0, allow_inf_nan=False,
        description="A fire this late (or less) is on time; later, it counts as missed "
                    "and its schedule's `missed` decides.")
