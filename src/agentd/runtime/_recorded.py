"""What a replay serves from the original run's log: its model answers, its tool
results and the decisions people made about its calls (:mod:`agentd.runtime.replay`).

:class:`Recording` folds the original run's events; :class:`RecordedModel` is a
:class:`~agentd.llm.model.Model` that streams the recorded answers in order (and the
recorded model error, where the run failed on one); :func:`recorded_tools` wraps the
run's tools so that a call returns its recorded result and never runs;
:class:`ReplayExecutor` is the ordinary run loop with those, which answers its own
approval requests with the recorded decisions and charges nothing to the usage ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import orjson

from agentd.errors import ModelError, ToolError
from agentd.events import ApprovalDecidedData, ApprovalRequestedData, ToolFinishedData
from agentd.llm.messages import (
    Finish,
    FinishReason,
    ModelRequest,
    StreamEvent,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from agentd.llm.model import Model
from agentd.runtime.loop import RunExecutor, RunOutcome
from agentd.security.policy import Verdict
from agentd.store import NewEvent, RunUpdate
from agentd.store.records import EventRecord, UsageCharge
from agentd.tools import Tool, ToolContext

__all__ = ["RecordedModel", "Recording", "ReplayExecutor", "recorded_tools"]

#: How an ``unknown tool`` result begins (the loop writes it for a tool it lacks).
_UNKNOWN_TOOL = "unknown tool "


@dataclasses.dataclass(kw_only=True, slots=True)
class Recording:
    """The original run's answers, tool results (by call id, in order) and decisions
    (by call id, in order), and the model error it failed with, if it did."""

    answers: list[dict[str, Any]]
    results: dict[str, deque[ToolFinishedData]]
    decisions: dict[str, deque[ApprovalDecidedData]]
    model_error: dict[str, Any] | None = None
    #: The ``run.cancelled`` data, when the run was cancelled (by a client, a newer
    #: message, a stop): the replay is stopped at the same step.
    cancelled: dict[str, Any] | None = None
    #: What makes the run impossible to replay exactly (a decision about a call whose
    #: outcome a restart made unknown), if anything.
    unsupported: str | None = None
    #: The names of the tools the run called that it had (their results are not the
    #: loop's ``unknown tool``).
    called: frozenset[str] = frozenset()

    @classmethod
    def of(cls, events: Sequence[EventRecord]) -> Recording:
        answers: list[dict[str, Any]] = []
        results: dict[str, deque[ToolFinishedData]] = {}
        decisions: dict[str, deque[ApprovalDecidedData]] = {}
        requests: dict[str | None, str] = {}
        called: set[str] = set()
        model_error = cancelled = unsupported = None
        for event in events:
            data: Any = event.data
            if event.kind == "message.assistant":
                answers.append(data)
            elif event.kind == "tool.finished" and not (data.get("denied")
                                                        or data.get("skipped")):
                results.setdefault(data["call_id"], deque()).append(data)
                if not str(data.get("output", "")).startswith(_UNKNOWN_TOOL):
                    called.add(data["name"])
            elif event.kind == "approval.requested":
                requests[data.get("approval_id")] = data["call_id"]
                if data.get("kind") == "unknown_outcome":
                    unsupported = ("a restart left the outcome of one of its tool calls "
                                   "unknown and a person decided what to do")
            elif event.kind == "run.interrupted":
                unsupported = "it was interrupted by a restart"
            elif event.kind == "run.cancelled":
                cancelled = data
            elif event.kind == "approval.decided":
                call_id = requests.get(data.get("approval_id"))
                if call_id is not None:
                    decisions.setdefault(call_id, deque()).append(data)
            elif event.kind == "run.failed":
                error = data.get("error") or {}
                if str(error.get("code", "")).startswith("model_"):
                    model_error = error
        return cls(answers=answers, results=results, decisions=decisions,
                   model_error=model_error, cancelled=cancelled, unsupported=unsupported,
                   called=frozenset(called))

    def skip_served(self, events: Sequence[EventRecord]) -> int:
        """Drop what a replay run already consumed (its own events so far: a replay
        resumed after a restart); returns the number of answers it had."""
        served = Recording.of(events)
        for call_id, done in served.results.items():
            queue = self.results.get(call_id)
            for _ in done:
                if queue:
                    queue.popleft()
        for call_id, decided in served.decisions.items():
            queue_d = self.decisions.get(call_id)
            for _ in decided:
                if queue_d:
                    queue_d.popleft()
        return len(served.answers)


class RecordedModel(Model):
    """Streams the recorded answers, one per call, in order; then the recorded model
    error (or, past the end of the recording, a ``replay_diverged`` error). Calls no
    provider: ``provider`` is ``replay``, a scheduler lane of its own."""

    provider = "replay"

    def __init__(self, spec: str, answers: Sequence[dict[str, Any]],
                 error: dict[str, Any] | None = None, *, served: int = 0) -> None:
        self.spec = spec
        self._answers = list(answers)
        self._error = error
        self.served = served
        #: Called instead of answering past the last answer when the original was
        #: cancelled during that call: stops the run as the cancel did.
        self.on_cancelled: Callable[[], None] | None = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        if self.served >= len(self._answers) and self.on_cancelled is not None:
            self.on_cancelled()
            await asyncio.Event().wait()  # (the run's task is cancelled meanwhile)
        if self.served >= len(self._answers):
            if self._error is not None:
                raise ModelError(str(self._error.get("message", "model error")),
                                 code=str(self._error.get("code", "model_error")),
                                 retryable=False, details=self._error.get("details") or {})
            raise ModelError("replay: the original run asked its model no more questions",
                             code="replay_diverged", retryable=False)
        answer = self._answers[self.served]
        self.served += 1
        for index, block in enumerate(answer.get("thinking") or ()):
            yield ThinkingDelta(index=index, text=block.get("text") or "",
                                signature=block.get("signature") or "",
                                redacted=block.get("redacted"))
        if answer.get("text"):
            yield TextDelta(text=answer["text"])
        for index, call in enumerate(answer.get("tool_calls") or ()):
            yield ToolCallDelta(index=index, id=call["id"], name=call["name"],
                                arguments=orjson.dumps(call.get("arguments") or {}).decode(),
                                extra=call.get("extra"))
        usage = answer.get("usage")
        if usage is not None:
            yield UsageEvent(usage=Usage(
                input_tokens=int(usage.get("input_tokens", 0)),
                output_tokens=int(usage.get("output_tokens", 0)),
                cached_tokens=int(usage.get("cached_tokens", 0)),
                cache_write_tokens=int(usage.get("cache_write_tokens", 0))))
        reason: FinishReason = answer.get("finish_reason") or "stop"
        yield Finish(reason=reason)


def recorded_tools(tools: Sequence[Tool], recording: Recording) -> list[Tool]:
    """The run's tools (its flags, names and schemas: the policy judges them as it
    did) with each call answered from ``recording``; a tool the run called that is
    not among ``tools`` (an MCP server's) gets a stand-in that mutates (run alone)."""
    by_name = {t.name: t for t in tools}
    for name in sorted(recording.called - set(by_name)):
        by_name[name] = Tool(name=name, description="", fn=_never,
                             parameters={"type": "object"})
    return [dataclasses.replace(t, fn=_served(t, recording), isolated=False,
                                timeout_s=None, _wants_ctx=True)
            for t in by_name.values()]


def _never() -> None:  # pragma: no cover - replaced before any call
    raise AssertionError("a stand-in tool is never called")


def _served(t: Tool, recording: Recording) -> Any:
    async def serve(ctx: ToolContext, **_: Any) -> str:
        queue = recording.results.get(ctx.call_id)
        if not queue:
            raise ToolError(f"replay: the original run has no result for call "
                            f"{ctx.call_id!r} of {t.name}", code="replay_diverged")
        result = queue.popleft()
        if result.get("sandbox") is not None:
            ctx.sandboxed = result["sandbox"]
        tainted = result.get("tainted")
        ctx.reached_outside = tainted is not None
        if tainted is not None and not t.untrusted_output:
            ctx.untrusted = tainted
        if result.get("is_error"):
            raise ToolError(str(result.get("output", "")), code="tool_error")
        return str(result.get("output", ""))

    return serve


class ReplayExecutor(RunExecutor):
    """A run of a replay: the ordinary loop, with recorded answers and results, that
    decides its own approval requests as the original's were decided and whose model
    usage is logged (to compare) but charged to no ledger or budget."""

    recording: Recording

    def stop_as_recorded(self) -> None:
        """Stop the run as the original's cancel did (its reason)."""
        cancelled = self.recording.cancelled or {}
        self.request_stop(str(cancelled.get("reason") or "cancelled"))

    async def _before_step(self) -> RunOutcome | None:
        # The original was cancelled at this step boundary: so is the replay.
        cancelled = self.recording.cancelled
        if (cancelled is not None and self._stop_reason is None
                and self.steps >= int(cancelled.get("steps") or 0)):
            self.stop_as_recorded()
        return await super()._before_step()

    async def _commit(self, events: Sequence[NewEvent], update: RunUpdate | None = None,
                      steer_guard: int | None = None, *, acquire: bool = False,
                      release: bool = False, checkpoint: bool = False,
                      usage: UsageCharge | None = None,
                      unless_changed_after: int | None = None,
                      unless_run_after: int | None = None) -> list[EventRecord]:
        return await super()._commit(
            events, update, steer_guard, acquire=acquire, release=release,
            checkpoint=checkpoint, usage=None, unless_changed_after=unless_changed_after,
            unless_run_after=unless_run_after)

    def _charged(self, charge: UsageCharge | None) -> None:
        return None

    async def _ask(self, call: ToolCall, *, kind: Literal["policy", "unknown_outcome"],
                   pending: ApprovalRequestedData | None, verdict: Verdict | None = None
                   ) -> ApprovalDecidedData:
        queue = self.recording.decisions.get(call.id)
        recorded: dict[str, Any] = dict(queue.popleft()) if queue else {
            "action": "deny" if kind == "policy" else "fail", "by": "replay",
            "reason": "replay: the original run has no decision about this call"}
        asked = asyncio.ensure_future(super()._ask(call, kind=kind, pending=pending,
                                                   verdict=verdict))
        waiting = asyncio.ensure_future(self._asking.wait())
        try:
            await asyncio.wait({asked, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if not asked.done():
                await self.decide(str(recorded.get("action")), recorded.get("output"),
                                  arguments=recorded.get("arguments"),
                                  reason=recorded.get("reason"), by=recorded.get("by"))
            return await asked
        finally:
            waiting.cancel()
            if not asked.done():
                asked.cancel()
