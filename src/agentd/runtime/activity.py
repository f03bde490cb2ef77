"""What a run under way on this node is doing now, for the live view (``GET
/v1/overview``'s ``busy``, ``agentd top``).

The executor knows it without asking the store: the approval it waits on, the tool
calls it runs, or what its model call waits for (a turn in the scheduler's lane, the
model's answer, a retry, a rate limit, an outage). It is kept in memory only: a
run on another node is not in this node's list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agentd.store.records import iso

__all__ = ["DOINGS", "Activity", "Doing"]

#: ``working``: between steps (building a request, committing, judging a call);
#: ``model_queue``: waiting for a turn in a scheduler lane (``detail``: the lane);
#: ``model``: a model call under way (``detail``: the model); ``model_retry``,
#: ``rate_limit``, ``model_outage``: waiting to try a model again; ``tool``: tool
#: calls under way (``detail``: their names); ``approval``: waiting for a person's
#: decision on a tool call (``detail``: the tool).
Doing = Literal["working", "model_queue", "model", "model_retry", "rate_limit",
                "model_outage", "tool", "approval"]
DOINGS: tuple[Doing, ...] = ("working", "model_queue", "model", "model_retry", "rate_limit",
                             "model_outage", "tool", "approval")


@dataclass(frozen=True, kw_only=True, slots=True)
class Activity:
    """What a run is doing, since when (epoch seconds)."""

    doing: Doing
    detail: str = ""
    since: float

    def to_api(self) -> dict[str, Any]:
        return {"doing": self.doing, "detail": self.detail, "since": iso(self.since)}
