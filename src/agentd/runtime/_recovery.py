"""What a run that was under way when its daemon stopped had done: read from its log.

A pure fold over the run's committed events (no I/O), so the rules of a resume can
be read, and tested, in one place: the steps taken and what they cost, the pieces of
an answer cut off by the output limit, and for each tool call of the last step
whether it finished, started without a result (its outcome unknown), and what was
asked and decided about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentd.llm.messages import ToolCall, Usage
from agentd.store.records import EventRecord

__all__ = ["Recovery", "UnfinishedCall"]


@dataclass(kw_only=True, slots=True)
class UnfinishedCall:
    """A tool call of the last step with no result in the log."""

    call: ToolCall
    #: It started (``tool.started``) before the daemon stopped: its outcome is unknown.
    started: bool
    #: A decision about its latest start (``approval.decided``), if one was made.
    decision: dict[str, Any] | None = None
    #: The request for that decision (``approval.requested``), if one was made.
    pending: dict[str, Any] | None = None


@dataclass(kw_only=True, slots=True)
class Recovery:
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    #: Pieces of an answer being continued after the output limit cut it off.
    pieces: list[str] = field(default_factory=list)
    #: The last step's tool calls without a result, in the order the model gave them.
    unfinished: list[UnfinishedCall] = field(default_factory=list)
    #: The events after the last step (the tools' starts, results and decisions).
    after_last_step: list[EventRecord] = field(default_factory=list)

    @classmethod
    def of(cls, events: list[EventRecord]) -> Recovery:
        """Fold one run's events (in seq order)."""
        state = cls()
        last_step: EventRecord | None = None
        for event in events:
            if event.kind != "message.assistant":
                continue
            last_step = event
            state.steps = int(event.data.get("step") or state.steps + 1)
            usage = event.data.get("usage")
            if usage:
                state.cost_usd += float(usage.get("cost_usd") or 0.0)
                state.usage = state.usage + Usage.of(usage)
            if (event.data.get("finish_reason") == "length"
                    and not event.data.get("tool_calls")):
                state.pieces.append(str(event.data.get("text") or ""))
            else:
                state.pieces.clear()
        if last_step is None or not last_step.data.get("tool_calls"):
            return state
        after = [e for e in events if e.seq > last_step.seq]
        state.after_last_step = after
        finished = {e.data["call_id"] for e in after if e.kind == "tool.finished"}
        for c in last_step.data["tool_calls"]:
            if c["id"] in finished:
                continue
            call = ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"])
            starts = [e for e in after
                      if e.kind == "tool.started" and e.data["call_id"] == call.id]
            unfinished = UnfinishedCall(call=call, started=bool(starts))
            if starts:
                # A decision answers the call's latest start only: a retried call that
                # was cut off again needs a new decision, never the old one's retry.
                # (Approvals are filed under the start's effect id.)
                latest = starts[-1]
                effect = latest.data.get("effect_id")
                later = [e for e in reversed(after) if e.seq > latest.seq
                         and e.data.get("effect_id") == effect]
                unfinished.decision = next(
                    (e.data for e in later if e.kind == "approval.decided"), None)
                unfinished.pending = next(
                    (e.data for e in later if e.kind == "approval.requested"), None)
            state.unfinished.append(unfinished)
        return state
