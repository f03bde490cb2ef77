"""What a run that was under way when its daemon stopped had done: read from its log.

A pure fold over the run's committed events (no I/O), so the rules of a resume can
be read, and tested, in one place: the steps taken and what they cost, the pieces of
an answer cut off by the output limit, the answers asked for again (not matching the
run's output schema), and for each tool call of the last step whether it finished,
started without a result (its outcome unknown), and what was asked and decided about
it. Events are read typed (:mod:`agentd.events`); keys that
older writers may have left out are read with ``.get``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentd.events import (
    ApprovalDecided,
    ApprovalDecidedData,
    ApprovalRequested,
    ApprovalRequestedData,
    MessageAssistant,
    OutputInvalid,
    ToolFinished,
    ToolStarted,
)
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
    decision: ApprovalDecidedData | None = None
    #: The request for that decision (``approval.requested``), if one was made.
    pending: ApprovalRequestedData | None = None


@dataclass(kw_only=True, slots=True)
class Recovery:
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    #: Pieces of an answer being continued after the output limit cut it off.
    pieces: list[str] = field(default_factory=list)
    #: Answers that did not match the run's output schema and were asked for again.
    repairs: int = 0
    #: The last step's tool calls without a result, in the order the model gave them.
    unfinished: list[UnfinishedCall] = field(default_factory=list)
    #: The events after the last step (the tools' starts, results and decisions).
    after_last_step: list[EventRecord] = field(default_factory=list)

    # complexity: one fold over a run's log with one branch per event kind that matters
    # to recovery.
    @classmethod
    def of(cls, events: list[EventRecord]) -> Recovery:
        """Fold one run's events (in seq order)."""
        state = cls()
        last_step: MessageAssistant | None = None
        last_seq = 0
        for event in events:
            step = event.typed
            if not isinstance(step, MessageAssistant):
                if isinstance(step, OutputInvalid) and step.data.get("repair"):
                    state.repairs += 1
                continue
            last_step, last_seq = step, event.seq
            data = step.data
            state.steps = int(data.get("step") or state.steps + 1)
            usage = data.get("usage")
            if usage:
                state.cost_usd += float(usage.get("cost_usd") or 0.0)
                state.usage = state.usage + Usage.of(usage)
            if data.get("finish_reason") == "length" and not data.get("tool_calls"):
                state.pieces.append(str(data.get("text") or ""))
            else:
                state.pieces.clear()
        if last_step is None or not last_step.data.get("tool_calls"):
            return state
        after = [e for e in events if e.seq > last_seq]
        state.after_last_step = after
        typed = [e.typed for e in after]
        finished = {e.data["call_id"] for e in typed if isinstance(e, ToolFinished)}
        for c in last_step.data["tool_calls"]:
            if c["id"] in finished:
                continue
            call = ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"])
            starts = [(i, e) for i, e in enumerate(typed)
                      if isinstance(e, ToolStarted) and e.data["call_id"] == call.id]
            unfinished = UnfinishedCall(call=call, started=bool(starts))
            if starts:
                # A decision answers the call's latest start only: a retried call that
                # was cut off again needs a new decision, never the old one's retry.
                # (Approvals are filed under the start's effect id.)
                index, latest = starts[-1]
                effect = latest.data.get("effect_id")
                later = typed[:index:-1]  # after the latest start, newest first
                unfinished.decision = next(
                    (e.data for e in later if isinstance(e, ApprovalDecided)
                     and e.data.get("effect_id") == effect), None)
                unfinished.pending = next(
                    (e.data for e in later if isinstance(e, ApprovalRequested)
                     and e.data.get("effect_id") == effect), None)
            state.unfinished.append(unfinished)
        return state
