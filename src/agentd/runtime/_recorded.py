"""What a replay serves from the original run's log: its model answers, its tool
results and the decisions people made about its calls (:mod:`agentd.runtime.replay`).

:class:`Recording` folds the original run's events; :class:`RecordedModel` is a
:class:`~agentd.llm.model.Model` that streams the recorded answers in order (and the
recorded model error, where the run failed on one); :func:`recorded_tools` wraps the
run's tools so that a call returns its recorded result and never runs;
:class:`ReplayExecutor` is the ordinary run loop with those, which answers its own
approval requests with the recorded decisions, takes its checks' verdicts
(``settings.hooks``) from the log rather than asking them again, and charges nothing to
the usage ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from agentd.errors import AgentdError, ModelError, ToolError
from agentd.events import (
    ApprovalDecidedData,
    ApprovalRequestedData,
    HookVerdictData,
    RunCancelled,
    ToolFinishedData,
)
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
from agentd.media import ToolOutput
from agentd.runtime._toolsteps import MAX_TOOL_OUTPUT
from agentd.runtime.hooks import CheckVerdict
from agentd.runtime.loop import RunExecutor, RunOutcome
from agentd.security.policy import Policy, Verdict
from agentd.settings.hooks import HookCheck, HookPoint
from agentd.store import NewEvent, RunUpdate, Tx
from agentd.store.records import EventRecord, UsageCharge
from agentd.tools import Tool, ToolContext

__all__ = ["Answers", "RecordedModel", "Recording", "ReplayExecutor", "children_usage",
           "recorded_tools", "serve_result"]

#: The note the loop puts after an output it cut (``render_output``).
_TRUNCATED = re.compile(r"\n\[output truncated: (\d+) characters in all\]")
#: How an ``unknown tool`` result begins (the loop writes it for a tool it lacks).
_UNKNOWN_TOOL = "unknown tool "


@dataclasses.dataclass(kw_only=True, slots=True)
class Recording:
    """The original run's answers, tool results (by call id, in order) and decisions
    (by call id, in order), and the model error it failed with, if it did."""

    answers: list[dict[str, Any]]
    results: dict[str, deque[ToolFinishedData]]
    decisions: dict[str, deque[ApprovalDecidedData]]
    #: The verdicts of the run's checks (``hook.verdict``), by check, point and call
    #: id, in order: a replay is given them rather than asking the checks again.
    verdicts: dict[tuple[str, str, str | None], deque[HookVerdictData]] = (
        dataclasses.field(default_factory=dict))
    model_error: dict[str, Any] | None = None
    #: The ``run.cancelled`` data, when the run was cancelled (by a client, a newer
    #: message, a stop): the replay is stopped at the same step.
    cancelled: dict[str, Any] | None = None
    #: The cancel came between a step's answer (which asked for tools) and the first
    #: thing its tools did: the replay is cancelled there too.
    cancelled_before_tools: bool = False
    #: The ``run.failed`` data, when the run failed on a budget (the ledger's totals
    #: are not the run's to replay): the replay fails the same way at the same step.
    budget_failure: dict[str, Any] | None = None
    #: Workspace events that tainted the session during the run (the files changed
    #: from outside), by step and whether they came before the step's tools: served
    #: (a replay checks no files), so that the policy sees the same taint.
    taints: list[tuple[int, bool, dict[str, Any]]] = dataclasses.field(
        default_factory=list)
    #: When the original asked for each step's answer (its ``message.assistant``'s
    #: time), by step: the agent's policy then judges the step's calls.
    step_times: dict[int, float] = dataclasses.field(default_factory=dict)
    #: What makes the run impossible to replay exactly (a decision about a call whose
    #: outcome a restart made unknown), if anything.
    unsupported: str | None = None
    #: The names of the tools the run called that it had (their results are not the
    #: loop's ``unknown tool``).
    called: frozenset[str] = frozenset()
    #: Called by a tool call the original has no result of while it was cancelled
    #: (it was cancelled during that call): cancels the replay's run as it was.
    on_unfinished: Callable[[], None] | None = None

    @classmethod
    def of(cls, events: Sequence[EventRecord]) -> Recording:
        answers: list[dict[str, Any]] = []
        results: dict[str, deque[ToolFinishedData]] = {}
        decisions: dict[str, deque[ApprovalDecidedData]] = {}
        verdicts: dict[tuple[str, str, str | None], deque[HookVerdictData]] = {}
        requests: dict[str | None, str] = {}
        called: set[str] = set()
        model_error = cancelled = unsupported = budget_failure = None
        taints: list[tuple[int, bool, dict[str, Any]]] = []
        step_times: dict[int, float] = {}
        step, tools_begun = 0, False
        for event in events:
            data: Any = event.data
            if event.kind == "message.assistant":
                answers.append(data)
                step, tools_begun = int(data.get("step") or step + 1), False
                step_times[step] = event.at
            elif event.kind == "tool.started":
                tools_begun = True
            elif event.kind == "workspace.snapshot" and data.get("tainted"):
                taints.append((step, not tools_begun, data))
            elif event.kind == "tool.finished" and not (data.get("denied")
                                                        or data.get("skipped")):
                if _unknown_tool(data):
                    # (the loop's own answer, written again by the replay's loop: not
                    # a result to serve, which would answer a later call of the id)
                    continue
                results.setdefault(data["call_id"], deque()).append(data)
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
            elif event.kind == "hook.verdict":
                verdicts.setdefault(_verdict_key(data), deque()).append(data)
            elif event.kind == "run.failed":
                error = data.get("error") or {}
                if str(error.get("code", "")).startswith("model_"):
                    model_error = error
                elif error.get("code") == "budget_exceeded":
                    budget_failure = data
        return cls(answers=answers, results=results, decisions=decisions,
                   verdicts=verdicts, model_error=model_error, cancelled=cancelled,
                   cancelled_before_tools=_cancelled_before_tools(events),
                   unsupported=unsupported, budget_failure=budget_failure, taints=taints,
                   step_times=step_times, called=frozenset(called))

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
        for key, given in served.verdicts.items():
            queue_v = self.verdicts.get(key)
            for _ in given:
                if queue_v:
                    queue_v.popleft()
        self.taints = [t for t in self.taints if t[2] not in [d for _, _, d in served.taints]]
        return len(served.answers)


def _cancelled_before_tools(events: Sequence[EventRecord]) -> bool:
    """Whether the run's cancel came right after an answer that asked for tools (the
    session's own events, which name no run, set aside; events logged for the run
    after its end, a child's end among them, too)."""
    own = [e for e in events if e.run_id is not None]
    ends = [i for i, e in enumerate(own) if e.kind == "run.cancelled"]
    before = own[ends[0] - 1] if ends and ends[0] > 0 else None
    return (before is not None and before.kind == "message.assistant"
            and bool((before.data or {}).get("tool_calls")))


def children_usage(events: Sequence[EventRecord], run_id: str
                   ) -> tuple[int, int, float]:
    """What the run's child runs (its subtasks, its calls to agents) added to its
    usage: its end event's usage less its own answers' and checks' (a replay starts
    no child, and its end counts theirs as the original's did)."""
    tokens_in = tokens_out = 0
    cost = 0.0
    end: Any = None
    for event in events:
        if event.run_id != run_id:
            continue
        data: Any = event.data
        if event.kind in ("message.assistant", "hook.verdict") and data.get("usage"):
            tokens_in += int(data["usage"].get("input_tokens") or 0)
            tokens_out += int(data["usage"].get("output_tokens") or 0)
            cost += float(data["usage"].get("cost_usd") or 0.0)
        elif event.kind in ("run.completed", "run.failed", "run.cancelled"):
            end = data.get("usage")
    if not end:
        return 0, 0, 0.0
    return (max(0, int(end.get("input_tokens") or 0) - tokens_in),
            max(0, int(end.get("output_tokens") or 0) - tokens_out),
            max(0.0, round(float(end.get("cost_usd") or 0.0) - cost, 6)))


def _unknown_tool(data: Any) -> bool:
    """Whether a ``tool.finished`` is the loop's answer to a call of a tool the run
    did not have."""
    return bool(data.get("is_error")) and str(data.get("output", "")).startswith(
        f"{_UNKNOWN_TOOL}{data.get('name')!r}; available: ")


def _verdict_key(data: Any) -> tuple[str, str, str | None]:
    call_id = data.get("call_id")
    return (str(data.get("check")), str(data.get("point")),
            None if call_id is None else str(call_id))


class Answers:
    """The recorded answers, one per model call, in order (shared by the run's recorded
    models: a fallback answers what its model answered)."""

    def __init__(self, answers: Sequence[dict[str, Any]], served: int = 0) -> None:
        self.answers = list(answers)
        self.served = served

    @property
    def exhausted(self) -> bool:
        return self.served >= len(self.answers)

    def next_model(self) -> str | None:
        return None if self.exhausted else self.answers[self.served].get("model")


class RecordedModel(Model):
    """Streams the recorded answers its model gave, in order; an answer another model
    of the chain gave is refused (``replay_other_model``, not retryable: the run falls
    back to that model, as the original did). Past the last answer: the run is stopped
    as the original was cancelled, or ``replay_diverged``. Calls no provider:
    ``provider`` is ``replay``, a scheduler lane and a breaker of its own per model."""

    provider = "replay"

    def __init__(self, spec: str, answers: Answers) -> None:
        self.spec = spec
        self.endpoint = spec
        self.answers = answers
        #: Called instead of answering past the last answer when the original was
        #: cancelled during that call: stops the run as the cancel did.
        self.on_cancelled: Callable[[], None] | None = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        answers = self.answers
        if answers.exhausted and self.on_cancelled is not None:
            self.on_cancelled()
            await asyncio.Event().wait()  # (the run's task is cancelled meanwhile)
        if answers.exhausted:
            raise ModelError("replay: the original run asked its model no more questions",
                             code="replay_diverged", retryable=False)
        by = answers.next_model()
        if by is not None and by != self.spec:
            raise ModelError(f"replay: {by} gave this answer", code="replay_other_model",
                             retryable=False)
        answer = answers.answers[answers.served]
        answers.served += 1
        for event in _stream_of(answer):
            yield event


def _stream_of(answer: dict[str, Any]) -> list[StreamEvent]:
    """The stream events that make ``answer`` (a ``message.assistant`` event's data)."""
    out: list[StreamEvent] = []
    for index, block in enumerate(answer.get("thinking") or ()):
        out.append(ThinkingDelta(index=index, text=block.get("text") or "",
                                 signature=block.get("signature") or "",
                                 redacted=block.get("redacted")))
    if answer.get("text"):
        out.append(TextDelta(text=answer["text"]))
    for index, call in enumerate(answer.get("tool_calls") or ()):
        out.append(ToolCallDelta(
            index=index, id=call["id"], name=call["name"],
            arguments=orjson.dumps(call.get("arguments") or {}).decode(),
            extra=call.get("extra")))
    usage = answer.get("usage")
    if usage is not None:
        out.append(UsageEvent(usage=Usage(
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
            cached_tokens=int(usage.get("cached_tokens", 0)),
            cache_write_tokens=int(usage.get("cache_write_tokens", 0)))))
    reason: FinishReason = answer.get("finish_reason") or "stop"
    out.append(Finish(reason=reason))
    return out


def recorded_tools(tools: Sequence[Tool], recording: Recording) -> list[Tool]:
    """The run's tools (its flags, names and schemas: the policy judges them as it
    did) with each call answered from ``recording``; a tool the run called that is
    not among ``tools`` (an MCP server's) gets a stand-in that mutates (run alone)."""
    by_name = {t.name: t for t in tools}
    for name in sorted(recording.called - set(by_name)):
        by_name[name] = Tool(name=name, description="", fn=_never,
                             parameters={"type": "object"}, _model=_AnyArguments)
    return [dataclasses.replace(t, fn=_served(t, recording), isolated=False,
                                timeout_s=None, _wants_ctx=True)
            for t in by_name.values()]


class _AnyArguments(BaseModel):
    """A stand-in's arguments: whatever the call had (its result is served by id)."""

    model_config = ConfigDict(extra="allow")


def _never() -> None:  # pragma: no cover - replaced before any call
    raise AssertionError("a stand-in tool is never called")


def _served(t: Tool, recording: Recording) -> Any:
    async def serve(ctx: ToolContext, **_: Any) -> str | ToolOutput:
        queue = recording.results.get(ctx.call_id)
        if not queue and recording.cancelled is not None and (
                recording.on_unfinished is not None):
            # The original was cancelled while this call ran: so is the replay.
            recording.on_unfinished()
            await asyncio.Event().wait()  # (the run's task is cancelled meanwhile)
        if not queue:
            raise ToolError(f"replay: the original run has no result for call "
                            f"{ctx.call_id!r} of {t.name}", code="replay_diverged")
        return serve_result(ctx, t, queue.popleft())

    return serve


def serve_result(ctx: ToolContext, t: Tool, result: ToolFinishedData) -> str | ToolOutput:
    """A call of ``t`` answered with the recorded ``result``: its output (an error
    result raised as the :class:`ToolError` it was), its sandbox and its taint."""
    if result.get("sandbox") is not None:
        ctx.sandboxed = result["sandbox"]
    tainted = result.get("tainted")
    ctx.reached_outside = tainted is not None
    if tainted is not None and not t.untrusted_output:
        ctx.untrusted = tainted
    if result.get("is_error"):
        raise ToolError(str(result.get("output", "")), code="tool_error")
    output = _untruncated(str(result.get("output", "")))
    parts = result.get("parts")
    # Images the call returned: by reference, as recorded (the replay's session, a
    # fork of the run's, refers to their blobs).
    return ToolOutput(text=output, kept=tuple(parts)) if parts else output


def _untruncated(output: str) -> str:
    """An output the loop renders as ``output``: one it cut at ``MAX_TOOL_OUTPUT`` is
    served at its full length again (padded), so that it is cut the same way."""
    if len(output) <= MAX_TOOL_OUTPUT:
        return output
    cut = _TRUNCATED.fullmatch(output, MAX_TOOL_OUTPUT)
    if cut is None:
        return output
    return output[:MAX_TOOL_OUTPUT] + " " * (int(cut.group(1)) - MAX_TOOL_OUTPUT)


class ReplayExecutor(RunExecutor):
    """A run of a replay: the ordinary loop, with recorded answers and results, that
    decides its own approval requests as the original's were decided and whose model
    usage is logged (to compare) but charged to no ledger or budget."""

    recording: Recording
    answers: Answers
    #: The agent's policy at a time of the original run, when it changed while the
    #: run ran (else None: the policy it started with throughout).
    policy_at: Callable[[float], Policy] | None = None

    async def _call_model(self, specs: list[Any]) -> Any:
        # The model error the original failed with, as it was (its retries, fallbacks
        # and outage waits are the kernel's transport, not the loop's decisions).
        error = self.recording.model_error
        if error is not None and self.answers.exhausted:
            self.steps += 1
            return await self._fail(ModelError(
                str(error.get("message", "")), code=str(error.get("code", "model_error")),
                retryable=bool(error.get("retryable")), details=error.get("details") or {}))
        return await super()._call_model(specs)

    async def _run_tools(self, calls: list[ToolCall], retried: set[str] | None = None,
                         prior: Sequence[EventRecord] = ()) -> list[ToolFinishedData]:
        cancelled = self.recording.cancelled
        if (cancelled is not None and self.recording.cancelled_before_tools
                and self.recording.on_unfinished is not None
                and self.steps >= int(cancelled.get("steps") or 0)):
            # The original was cancelled after this step's answer was committed and
            # before any of its tools began (a cancel lands wherever the run's task
            # is): so is the replay, at the same point.
            self.recording.on_unfinished()
            await asyncio.Event().wait()  # (the run's task is cancelled meanwhile)
        at = self.recording.step_times.get(self.steps)
        if self.policy_at is not None and at is not None:
            self.permissions = self.policy_at(at)
        await self._taint(before=True)
        try:
            return await super()._run_tools(calls, retried, prior)
        finally:
            await self._taint(before=False)

    async def _taint(self, *, before: bool) -> None:
        """Commit the original's tainting workspace events of this step (``before`` or
        after its tools)."""
        due = [t for t in self.recording.taints if t[0] == self.steps and t[1] == before]
        if due:
            self.recording.taints = [t for t in self.recording.taints if t not in due]
            await self._commit([NewEvent(kind="workspace.snapshot", data=dict(d),
                                         run_id=self.run.id) for _, _, d in due])

    def stop_as_recorded(self) -> None:
        """Stop the run as the original's cancel did (its reason)."""
        cancelled = self.recording.cancelled or {}
        self.request_stop(str(cancelled.get("reason") or "cancelled"))

    def cancel_as_recorded(self) -> None:
        """Cancel the run now, as the original was cancelled while one of its tool
        calls ran (no result of it was written)."""
        reason = str((self.recording.cancelled or {}).get("reason") or "cancelled")
        self._stop_reason = reason
        if self._task is not None and self.cancel_reason is None:
            self.cancel(reason)

    async def _cancel(self, reason: str) -> RunOutcome:
        if self.recording.cancelled is not None and "steps" not in self.recording.cancelled:
            # The original was ended by no executor (a run found after a restart,
            # cancelled at once): its event says why, and nothing of steps or usage.
            return await self._finish(RunCancelled(data={"reason": reason}))
        return await super()._cancel(reason)

    async def _before_step(self) -> RunOutcome | None:
        # The original failed on a budget here (the ledger is not replayed): so does
        # the replay.
        spent = self.recording.budget_failure
        if spent is not None and self.steps >= int(spent.get("steps") or 0):
            error = spent.get("error") or {}
            return await self._fail(AgentdError(
                str(error.get("message", "")), code="budget_exceeded",
                retryable=bool(error.get("retryable")), details=error.get("details") or {}))
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
                      unless_run_after: int | None = None,
                      also: Callable[[Tx, list[EventRecord]], None] | None = None
                      ) -> list[EventRecord]:
        return await super()._commit(
            events, update, steer_guard, acquire=acquire, release=release,
            checkpoint=checkpoint, usage=None, unless_changed_after=unless_changed_after,
            unless_run_after=unless_run_after, also=also)

    def _charged(self, charge: UsageCharge | None) -> None:
        return None

    async def _ask_check(self, check: HookCheck, point: HookPoint, facts: dict[str, Any],
                         charges: list[UsageCharge]) -> tuple[CheckVerdict, str | None]:
        # The check's verdict as the original was given it: a check is asked nothing
        # (a webhook, a command, a judging model are the world, as a tool is). A model
        # check's tokens count in the run's usage as they did, charged to no one.
        queue = self.recording.verdicts.get(_verdict_key({
            "check": check.name, "point": point, "call_id": facts.get("call_id")}))
        if not queue:
            return await self._unrecorded_check(check, point, facts, charges)
        data = queue.popleft()
        used = data.get("usage")
        if used:
            usage = Usage.of(used)
            cost = float(used.get("cost_usd") or 0.0)
            self.usage, self.cost_usd = self.usage + usage, self.cost_usd + cost
            charges.append(UsageCharge(
                agent_id=self.payer_id, agent=self.payer_name, tenant=self.policy.tenant,
                model="", input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens, cost_usd=cost))
        return (CheckVerdict(verdict=str(data.get("verdict")), reason=data.get("reason", ""),
                             arguments=data.get("arguments")), data.get("failed"))

    async def _unrecorded_check(self, check: HookCheck, point: HookPoint,
                                facts: dict[str, Any], charges: list[UsageCharge]
                                ) -> tuple[CheckVerdict, str | None]:
        """A check the original gave no verdict here: it fails closed (the replay
        differs from the original there)."""
        why = "replay: the original run has no verdict of this check here"
        return CheckVerdict(verdict="deny",
                            reason=f"the check failed and fails closed ({why})"), why

    async def _ask(self, call: ToolCall, *, kind: Literal["policy", "unknown_outcome"],
                   pending: ApprovalRequestedData | None, verdict: Verdict | None = None
                   ) -> ApprovalDecidedData:
        queue = self.recording.decisions.get(call.id)
        recorded: dict[str, Any] = dict(queue.popleft()) if queue else {
            "action": "deny" if kind == "policy" else "fail", "by": "replay",
            "reason": "replay: the original run has no decision about this call"}
        return await self._ask_decided(call, recorded, kind=kind, pending=pending,
                                       verdict=verdict)

    async def _ask_decided(self, call: ToolCall, recorded: dict[str, Any], *,
                           kind: Literal["policy", "unknown_outcome"],
                           pending: ApprovalRequestedData | None,
                           verdict: Verdict | None) -> ApprovalDecidedData:
        """Ask as the loop does (the request is logged), and decide at once as
        ``recorded`` says."""
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
