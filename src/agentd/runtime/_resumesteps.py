"""The resume half of a run: picking a run up from its last committed step.

Mixed into :class:`~agentd.runtime.loop.RunExecutor` (as the tool, budget and output
halves are): the log folded (:class:`~agentd.runtime._recovery.Recovery`) and the
lease taken in one checked commit, then the last step's unfinished tool calls run,
skipped or decided by a person, never a side effect repeated behind the user's back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from agentd.errors import AgentdError
from agentd.events import (
    ApprovalDecidedData,
    ApprovalRequestedData,
    Event,
    RunInterrupted,
    RunResumed,
    ToolFinished,
    ToolFinishedData,
)
from agentd.llm.messages import ToolCall, Usage
from agentd.runtime._recovery import Recovery
from agentd.security.policy import Verdict
from agentd.settings import AgentSettings
from agentd.store import NewEvent, RunMoved, Store
from agentd.store.records import EventRecord, RunRecord, UsageCharge

if TYPE_CHECKING:
    from agentd.events import RunEnd, UsageData
    from agentd.runtime.loop import RunOutcome
    from agentd.tools import Tool

__all__ = ["ResumeSteps"]


class ResumeSteps:
    """Declares what it uses of the executor (defined there or in its other halves)."""

    run: RunRecord
    store: Store
    agent_settings: AgentSettings
    tools: dict[str, Tool]
    notes: list[NewEvent]
    steps: int
    usage: Usage
    cost_usd: float
    repairs: int
    _pieces: list[str]
    _client_tools: set[str]

    @property
    def session_id(self) -> str:
        raise NotImplementedError

    def _new(self, event: Event) -> NewEvent:
        raise NotImplementedError

    async def _commit(self, events: Sequence[NewEvent], *args: Any, **kwargs: Any
                      ) -> list[EventRecord]:
        raise NotImplementedError

    def _took_lease(self) -> None:
        raise NotImplementedError

    def _effect_id(self, call: ToolCall) -> str:
        raise NotImplementedError

    def _used(self) -> UsageData:
        raise NotImplementedError

    async def _fail(self, exc: AgentdError) -> RunOutcome:
        raise NotImplementedError

    async def _finish(self, end: RunEnd, *, before: Sequence[NewEvent] = (),
                      steer_guard: int | None = None, charge: UsageCharge | None = None
                      ) -> RunOutcome:
        raise NotImplementedError

    async def _run_tools(self, calls: list[ToolCall], retried: set[str] | None = None,
                         prior: Sequence[EventRecord] = ()) -> Any:
        raise NotImplementedError

    async def _hand_to_client(self, calls: list[ToolCall], text: str) -> RunOutcome:
        raise NotImplementedError

    async def _ask(self, call: ToolCall, *, kind: Literal["policy", "unknown_outcome"],
                   pending: ApprovalRequestedData | None, verdict: Verdict | None = None
                   ) -> ApprovalDecidedData:
        raise NotImplementedError

    async def _resume(self) -> RunOutcome | None:
        """Pick a run up from its last committed step, without repeating any model call.

        Tool calls of the last step that never started are run now; one that started
        but has no result is run again (with the same effect id) only if its tool is
        idempotent. Otherwise its outcome is unknown and a side effect is never
        repeated behind the user's back: the run waits (``waiting_approval``, an
        ``approval.requested`` event) until a client decides to retry it, skip it with
        a given result, or fail the run; with ``settings.on_unknown_outcome =
        "interrupt"`` it ends ``interrupted`` instead. Returns the outcome when the run
        ends here, None to continue the loop.
        """
        state = await self._take_over()
        to_run: list[ToolCall] = []
        skipped: list[ToolFinishedData] = []
        theirs = [u.call for u in state.unfinished if u.call.name in self._client_tools]
        for unfinished in state.unfinished:
            call = unfinished.call
            if call.name in self._client_tools:
                continue  # the sender's: handed to it below
            t = self.tools.get(call.name)
            if not unfinished.started or (t is not None and t.idempotent):
                to_run.append(call)
                continue
            decision = unfinished.decision
            if decision is None:
                outcome = await self._unknown_outcome(call, unfinished.pending)
                if not isinstance(outcome, dict):
                    return outcome  # (the run ended here)
                decision = outcome
            if decision["action"] == "fail":
                return await self._fail(AgentdError(
                    f"the outcome of {call.name!r} (effect {self._effect_id(call)}) is "
                    "unknown and the run was failed by decision",
                    code="unknown_outcome"))
            if decision["action"] == "skip":
                skipped.append({"call_id": call.id, "name": call.name,
                                "output": str(decision.get("output") or ""),
                                "is_error": False, "duration_ms": 0.0, "skipped": True})
            else:
                to_run.append(call)
        if skipped:
            await self._commit([self._new(ToolFinished(data=r)) for r in skipped])
        if to_run:
            started = {u.call.id for u in state.unfinished if u.started}
            await self._run_tools(to_run, retried={c.id for c in to_run if c.id in started},
                                  prior=state.after_last_step)
        if theirs:
            return await self._hand_to_client(theirs, "")
        return None

    async def _take_over(self, tries: int = 3) -> Recovery:
        """Fold the run's log and take its lease (``run.resumed``), the fold checked
        against the log in the taking transaction: the node that held the run may
        have committed a step after the log was read (a commit held up past the
        lease's expiry, by a process stopped in the middle of it; found by
        bench/cluster.py): then the log is read and folded again."""
        # What the run's start found (its workspace brought here, an MCP server not
        # reached) is logged with the resume, whatever the resume leads to.
        notes, self.notes = self.notes, []
        for attempt in range(tries):
            log = await self.store.read_events(self.session_id)
            state = Recovery.of([e for e in log if e.run_id == self.run.id])
            self.steps, self.usage, self.cost_usd = state.steps, state.usage, state.cost_usd
            self._pieces, self.repairs = state.pieces, state.repairs
            try:
                await self._commit([self._new(RunResumed(data={
                    "reason": "taken over", "previous_owner": self.run.lease_owner,
                    "steps": self.steps})), *notes], acquire=True,
                    unless_run_after=log[-1].seq if log else 0)
            except RunMoved:
                if attempt + 1 == tries:
                    raise  # (a LeaseLost: the run is another node's to drive, or later)
                continue
            break
        self._took_lease()
        return state

    async def _unknown_outcome(self, call: ToolCall, pending: ApprovalRequestedData | None
                               ) -> RunOutcome | ApprovalDecidedData:
        """A non-idempotent call with no result and no decision: end the run
        ``interrupted`` (``settings.on_unknown_outcome = "interrupt"``) or wait for a
        person's decision (``retry``, ``skip``, ``fail``)."""
        if self.agent_settings.on_unknown_outcome == "interrupt":
            effect_id = self._effect_id(call)
            reason = (f"tool {call.name!r} (effect {effect_id}) was running when the "
                      "daemon stopped; its outcome is unknown and it is not idempotent, "
                      "so it was not run again")
            return await self._finish(RunInterrupted(data={
                "reason": reason, "effect_id": effect_id, "steps": self.steps,
                "usage": self._used()}))
        return await self._ask(call, kind="unknown_outcome", pending=pending)
