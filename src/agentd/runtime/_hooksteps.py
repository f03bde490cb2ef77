"""The checks of a run (``settings.hooks``): when they run and what their verdicts do.

At each point the checks that apply run in the order listed, each bounded by its
``timeout_s``; a check that gives no verdict (times out, raises, answers garbage) is
decided by its ``fail`` setting (``closed``: deny). Every verdict is a ``hook.verdict``
event, committed before what it decided takes effect, in the same commit where one
exists:

- ``input``: before the run's first step; a deny fails the run (verdicts and
  ``run.failed`` in one commit);
- ``tool_call``: after the call is asked for, before the policy judges it (so the
  policy judges the arguments a ``modify`` set); committed at once, and reused, not
  asked again, when a resumed run judges the call again;
- ``tool_result``: after the tool ran, in the commit of its ``tool.finished``, which
  holds the redacted (or withheld) output and the taint;
- ``output``: before the final reply is committed, in its commit; the reply's text is
  not streamed live while an output check is set (it is delivered only once checked).

A guardrail's deny, anywhere, fails the run with ``guardrail_tripped``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from agentd.errors import AgentdError, QuotaExceeded
from agentd.events import (
    ErrorData,
    Event,
    HookVerdict,
    HookVerdictData,
    RunCompleted,
    RunEnd,
    RunFailed,
    ToolFinished,
    ToolFinishedData,
    UsageData,
)
from agentd.llm.catalog import ModelInfo
from agentd.llm.messages import ToolCall, Usage, UserMessage
from agentd.runtime._hookmodel import ask_model
from agentd.runtime.calls import Kernel, ModelCaller
from agentd.runtime.hooks import CheckCall, CheckFailed, Checks, CheckVerdict, parse_verdict
from agentd.security.redaction import SecretRedactor
from agentd.settings.hooks import HookCheck, HookPoint
from agentd.store import NewEvent, Tx
from agentd.store.records import EventRecord, NewBlob, RunRecord, UsageCharge

if TYPE_CHECKING:
    from agentd.runtime.history import SessionHistory
    from agentd.runtime.loop import CallPolicy, RunOutcome
    from agentd.settings import AgentSettings
    from agentd.store import Store
    from agentd.tools import Tool

__all__ = ["HookSteps", "Stopped"]

log = logging.getLogger(__name__)

_FAILED_MAX = 500


class Stopped(AgentdError):
    """A check's deny that ends the run (raised from the tool half of a step, after
    its verdicts were committed; the run loop fails the run with it)."""


@dataclass(kw_only=True, slots=True)
class _Decision:
    """What the checks at one point decided, and the events that say so."""

    events: list[NewEvent] = field(default_factory=list)
    #: The deny that stops it: (check, reason), if any.
    denied: tuple[HookCheck, str] | None = None
    arguments: dict[str, Any] | None = None
    text: str | None = None
    tainted: str | None = None


def _stop(check: HookCheck, point: str, reason: str, call_id: str | None = None
          ) -> Stopped:
    code = "guardrail_tripped" if check.guardrail else "hook_denied"
    what = "guardrail" if check.guardrail else "check"
    details: dict[str, Any] = {"check": check.name, "point": point}
    if call_id is not None:
        details["call_id"] = call_id
    return Stopped(f"{what} {check.name!r} denied at {point}: {reason or 'no reason given'}",
                   code=code, details=details)


class HookSteps:
    """Mixed into :class:`~agentd.runtime.loop.RunExecutor`: its checks. Declares what
    it uses of the executor."""

    run: RunRecord
    agent_name: str
    session_key: str
    history: SessionHistory
    agent_settings: AgentSettings
    store: Store
    sandbox: Any
    workspace: Any
    #: Runs the checks (None: this daemon runs none; every check then fails).
    checks: Checks | None
    #: The run's secret values: what a check is shown (a webhook's host, a command, a
    #: judging model) holds their names instead, as the log does.
    redactor: SecretRedactor
    steps: int
    #: What a ``model`` check asks with: the run's models, through the kernel, charged
    #: to the run's payer and counted in its usage.
    kernel: Kernel
    caller: ModelCaller
    policy: CallPolicy
    model_info: ModelInfo | None
    payer_id: str
    payer_name: str
    usage: Usage
    cost_usd: float
    #: The judge's caller (made on first use: no text of its own is streamed).
    _judge_caller: ModelCaller | None = None

    #: (BudgetSteps': after HookSteps in the executor's bases, so not stubbed here.)
    _charged: Callable[[UsageCharge | None], None]
    #: Images the step's tools returned, written with their results.
    _tool_blobs: list[NewBlob]

    def _blob_writer(self, blobs: list[NewBlob]) -> Callable[[Tx, list[EventRecord]], None]:
        raise NotImplementedError

    async def _note(self, event: Event) -> None:
        raise NotImplementedError

    async def _commit(self, events: Sequence[NewEvent], *args: Any, **kwargs: Any
                      ) -> list[EventRecord]:
        raise NotImplementedError

    def _new(self, event: Event) -> NewEvent:
        raise NotImplementedError

    def _used(self) -> UsageData:
        raise NotImplementedError

    async def _finish(self, end: RunEnd, *, before: Sequence[NewEvent] = (),
                      steer_guard: int | None = None, charge: UsageCharge | None = None
                      ) -> RunOutcome:
        raise NotImplementedError

    @property
    def _holds_reply(self) -> bool:
        """Whether the final reply waits for an output check (not streamed live)."""
        checks = self.agent_settings.all_checks.checks
        return bool(checks) and any(c.point == "output" for c in checks)

    # -- one check ---------------------------------------------------------------------

    async def _ask_check(self, check: HookCheck, point: HookPoint, facts: dict[str, Any],
                         charges: list[UsageCharge]) -> tuple[CheckVerdict, str | None]:
        """The check's verdict, and why it failed (its ``fail`` setting decided then);
        a ``model`` check's usage is added to ``charges``."""
        why: str | None = None
        try:
            shown = self.redactor.data(facts) if self.redactor else facts
            call = CheckCall(check=check, point=point, facts=shown, agent=self.agent_name,
                             agent_id=self.run.agent_id, session=self.session_key,
                             run_id=self.run.id, sandbox=self.sandbox,
                             workspace=self.workspace)
            async with asyncio.timeout(check.timeout_s):
                if check.kind == "model":
                    answer = await self._ask_model(call, charges)
                elif self.checks is None:
                    raise CheckFailed("this daemon runs no checks")
                else:
                    answer = await self.checks.run(call)
            return parse_verdict(point, answer), None
        except CheckFailed as exc:
            why = str(exc)
        except TimeoutError:
            why = f"no verdict within {check.timeout_s:g}s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the check's own bug: it decided nothing
            why = f"raised {type(exc).__name__}: {exc}"
        why = why[:_FAILED_MAX]
        log.warning("check %s at %s failed: %s", check.name, point, why)
        if check.fail == "open":
            return CheckVerdict(verdict="pass" if point == "tool_result" else "allow",
                                reason=f"the check failed and fails open ({why})"), why
        return CheckVerdict(verdict="deny",
                            reason=f"the check failed and fails closed ({why})"), why

    async def _ask_model(self, call: CheckCall, charges: list[UsageCharge]) -> Any:
        """A ``model`` check's answer, from the run's own models (its tokens count in
        the run's usage and budget, and are charged with the verdict)."""
        if self._judge_caller is None:
            policy = self.policy
            self._judge_caller = ModelCaller(
                self.kernel, self.caller.targets, priority=policy.priority,
                tenant=policy.tenant, agent=self.run.agent_id, weight=policy.weight,
                retry=policy.retry, publish=lambda text, reset: None, note=self._note,
                park=False)
        answer, message, target = await ask_model(
            self._judge_caller, self.model_info, self.kernel.counts_tokens,
            rule=call.check.rule or "", point=call.point, payload=call.payload())
        if message.usage is not None:
            usage = message.usage
            cost = target.info.cost(usage) if target.info is not None else 0.0
            self.usage = self.usage + usage
            self.cost_usd += cost
            charges.append(UsageCharge(
                agent_id=self.payer_id, agent=self.payer_name, tenant=self.policy.tenant,
                model=target.spec, input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens, cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens, cost_usd=round(cost, 6)))
        return answer

    @staticmethod
    def _reused(check: HookCheck, point: str, call_id: str | None,
                prior: Sequence[EventRecord]) -> CheckVerdict | None:
        """A verdict of ``check`` committed before (a resumed run): decided already."""
        for event in prior:
            typed = event.typed
            if (isinstance(typed, HookVerdict) and typed.data.get("check") == check.name
                    and typed.data.get("point") == point
                    and typed.data.get("call_id") == call_id):
                data = typed.data
                return CheckVerdict(verdict=data["verdict"], reason=data.get("reason", ""),
                                    arguments=data.get("arguments"))
        return None

    async def _decide(self, point: HookPoint, facts: dict[str, Any], *,
                      tool: str | None = None, call_id: str | None = None,
                      prior: Sequence[EventRecord] = ()) -> _Decision:
        """Run the checks at ``point`` in order (a deny stops them; a ``modify`` or a
        ``redact`` is what the next check sees); the events of their verdicts, new ones
        only (a verdict reused from ``prior`` is in the log already)."""
        out = _Decision()
        for check in self.agent_settings.all_checks.at(point, tool):
            verdict = self._reused(check, point, call_id, prior)
            if verdict is None:
                verdict = await self._timed(check, point, facts, out)
            if verdict.verdict == "deny":
                out.denied = (check, verdict.reason)
                break
            if verdict.verdict == "modify" and verdict.arguments is not None:
                out.arguments = facts["arguments"] = verdict.arguments
            elif verdict.verdict == "redact" and verdict.text is not None:
                out.text = facts["output"] = verdict.text
            elif verdict.verdict == "taint" and out.tainted is None:
                out.tainted = f"check {check.name!r}: {verdict.reason or 'tainted'}"
        return out

    async def _timed(self, check: HookCheck, point: HookPoint, facts: dict[str, Any],
                     out: _Decision) -> CheckVerdict:
        began = time.perf_counter()
        charges: list[UsageCharge] = []
        verdict, failed = await self._ask_check(check, point, dict(facts), charges)
        data: HookVerdictData = {
            "check": check.name, "point": point, "via": check.kind,
            "verdict": cast(Any, verdict.verdict), "reason": verdict.reason,
            "guardrail": check.guardrail,
            "duration_ms": round((time.perf_counter() - began) * 1000, 3)}
        if "call_id" in facts:
            data["call_id"] = str(facts["call_id"])
            data["name"] = str(facts["tool"])
        if verdict.arguments is not None:
            data["arguments"] = verdict.arguments
        if failed is not None:
            data["failed"] = failed
        if charges:
            data["usage"] = {"input_tokens": charges[0].input_tokens,
                             "output_tokens": charges[0].output_tokens,
                             "cached_tokens": charges[0].cached_tokens}
            if charges[0].cost_usd:
                data["usage"]["cost_usd"] = charges[0].cost_usd
        event = self._new(HookVerdict(data=data))
        if charges:
            # A model check's tokens are charged with its verdict, committed at once
            # (a verdict is a decision taken: committed before what it decides).
            await self._commit([event], usage=charges[0])
            self._charged(charges[0])
        else:
            out.events.append(event)
        return verdict

    # -- the four points ---------------------------------------------------------------

    async def _check_input(self, resuming: bool) -> RunOutcome | None:
        """The ``input`` checks, before the run's first step (a resumed run reuses the
        verdicts it committed). A deny fails the run."""
        if not self.agent_settings.all_checks.at("input"):
            return None  # (the caller looked for checks at all)
        prior: list[EventRecord] = []
        if resuming:
            prior = [e for e in await self.store.read_events(self.run.session_id)
                     if e.run_id == self.run.id and e.kind == "hook.verdict"]
        text = next((m.content for m in reversed(self.history.messages)
                     if isinstance(m, UserMessage)), "")
        decision = await self._decide("input", {"text": text}, prior=prior)
        if decision.denied is not None:
            check, reason = decision.denied
            return await self._finish(self._failed(_stop(check, "input", reason)),
                                      before=decision.events)
        if decision.events:
            await self._commit(decision.events)
        return None

    async def _check_call(self, t: Tool, call: ToolCall, prior: Sequence[EventRecord]
                          ) -> tuple[ToolCall, str | None]:
        """The ``tool_call`` checks of a call the model asked for: the call to judge
        next (its arguments modified), or the error result of a call denied. A
        guardrail's deny raises :class:`Stopped` once the verdicts are committed."""
        checks = self.agent_settings.all_checks
        if not checks.checks or not checks.at("tool_call", t.name):
            return call, None
        facts = {"tool": t.name, "call_id": call.id, "arguments": dict(call.arguments)}
        decision = await self._decide("tool_call", facts, tool=t.name, call_id=call.id,
                                      prior=prior)
        if decision.events:
            await self._commit(decision.events)
        if decision.denied is not None:
            check, reason = decision.denied
            if check.guardrail:
                raise _stop(check, "tool_call", reason, call.id)
            return call, (f"{call.name} was denied by check {check.name!r}: "
                          f"{reason or 'no reason given'}")
        if decision.arguments is not None and decision.arguments != call.arguments:
            return ToolCall(id=call.id, name=call.name, arguments=decision.arguments,
                            extra=call.extra), None
        return call, None

    async def _commit_results(self, calls: Sequence[ToolCall],
                              results: list[ToolFinishedData]) -> None:
        """Commit the results of a group of calls, each after its ``tool_result``
        checks (redacted, tainted or withheld as they say), in one commit; a
        guardrail's deny then raises :class:`Stopped`."""
        hooks = self.agent_settings.all_checks
        verdicts: list[NewEvent] = []
        stop: Stopped | None = None
        if hooks.checks:
            for call, result in zip(calls, results, strict=False):
                if not hooks.at("tool_result", result["name"]):
                    continue
                facts = {"tool": result["name"], "call_id": result["call_id"],
                         "arguments": call.arguments, "output": result["output"],
                         "is_error": result["is_error"]}
                decision = await self._decide("tool_result", facts, tool=result["name"],
                                              call_id=result["call_id"])
                verdicts.extend(decision.events)
                if decision.text is not None:
                    result["output"] = decision.text
                if decision.tainted is not None and not result.get("tainted"):
                    result["tainted"] = decision.tainted
                if decision.denied is not None:
                    check, reason = decision.denied
                    result["output"] = (f"the result of {result['name']} was withheld by "
                                        f"check {check.name!r}: {reason or 'no reason given'}")
                    result["is_error"] = True
                    if check.guardrail and stop is None:
                        stop = _stop(check, "tool_result", reason, result["call_id"])
        events = [*verdicts, *(self._new(ToolFinished(data=r)) for r in results)]
        blobs, self._tool_blobs = self._tool_blobs, []
        try:
            await self._commit(events, also=self._blob_writer(blobs) if blobs else None)
        except QuotaExceeded as exc:
            if not blobs:
                raise
            # The tenant's storage is full: the results go without their images, and
            # say why (the model can act on it; nothing of them was written).
            for result in results:
                if result.pop("parts", None):
                    result["output"] += f"\n[its images were not kept: {exc.message}]"
            await self._commit([*verdicts,
                                *(self._new(ToolFinished(data=r)) for r in results)])
        if stop is not None:
            raise stop

    async def _checked_reply(self, end: RunCompleted, events: list[NewEvent]
                             ) -> tuple[RunEnd, list[NewEvent]]:
        """The ``output`` checks of the final reply: the run's end and the events to
        commit before it (the answer, the verdicts). A deny fails the run instead, and
        the answer is logged with its text withheld. Asked only when there are
        (:attr:`_holds_reply`: the caller looks, so that no coroutine is made for
        nothing)."""
        decision = await self._decide("output", {"text": end.data["output"]})
        if decision.denied is None:
            return end, [*events, *decision.events]
        check, reason = decision.denied
        answer = events[0].data
        answer["text"] = ""
        answer["withheld"] = f"check {check.name!r}: {reason or 'no reason given'}"
        return self._failed(_stop(check, "output", reason)), [*events, *decision.events]

    def _failed(self, exc: AgentdError) -> RunFailed:
        return RunFailed(data={"error": cast(ErrorData, exc.to_dict()), "steps": self.steps,
                               "usage": self._used()})
