"""A fork's run (:mod:`agentd.runtime.fork`): the original's steps before the fork's
step served from its log, as a replay serves them, then the candidate configuration
for real.

:class:`ForkExecutor` is a :class:`~agentd.runtime._recorded.ReplayExecutor` until the
recorded answers of the steps before the fork's run out; then it *goes live*: its
model calls go to the candidate's models through the kernel (charged, budgeted), its
tools are the candidate's (run in a scratch copy of the workspace, or answered from
the recording by call: :class:`CallBook`), its policy and checks are the candidate's
(before, the checks' verdicts are the original's, from its log).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import orjson

from agentd.errors import ToolError
from agentd.events import (
    ApprovalDecidedData,
    ApprovalRequestedData,
    ToolFinishedData,
    WorkspaceSnapshot,
)
from agentd.llm.catalog import ModelInfo
from agentd.llm.messages import ToolCall
from agentd.media import ToolOutput
from agentd.runtime._budgetsteps import BudgetSteps
from agentd.runtime._recorded import ReplayExecutor, serve_result
from agentd.runtime.calls import ModelCaller
from agentd.runtime.hooks import Checks, CheckVerdict
from agentd.runtime.loop import RunExecutor, RunOutcome
from agentd.security.policy import Policy, Verdict
from agentd.settings.hooks import HookCheck, HookPoint
from agentd.store import NewEvent, RunUpdate, Tx
from agentd.store.records import EventRecord, UsageCharge
from agentd.tools import Tool, ToolContext

__all__ = ["UNRECORDED", "CallBook", "ForkExecutor", "by_call"]

#: How the result of a call a fork's recording cannot answer begins.
UNRECORDED = "fork: the original run made no call of "


def _canonical(name: str, arguments: Any) -> bytes:
    return orjson.dumps([name, arguments], option=orjson.OPT_SORT_KEYS, default=str)


class CallBook:
    """The original run's tool results and approval decisions by call (the tool's
    name and its arguments), in the order they were made: what answers a fork's calls
    from the recording (``tools: "recorded"``, and memory tools)."""

    def __init__(self, events: Sequence[EventRecord], tools: Mapping[str, Tool]) -> None:
        self.results: dict[bytes, deque[ToolFinishedData]] = {}
        self.last: dict[bytes, ToolFinishedData] = {}
        self.decisions: dict[bytes, deque[ApprovalDecidedData]] = {}
        self._tools = tools
        step: dict[str, tuple[str, Any]] = {}
        asked: dict[Any, tuple[str, Any]] = {}
        for event in events:
            data: Any = event.data
            if event.kind == "message.assistant":
                # Call ids repeat from step to step with some models: by step.
                step = {c["id"]: (c["name"], c.get("arguments") or {})
                        for c in data.get("tool_calls") or ()}
            elif event.kind == "tool.finished" and not (data.get("denied")
                                                        or data.get("skipped")):
                call = step.get(data.get("call_id"))
                if call is not None:
                    self.results.setdefault(self.key(*call), deque()).append(data)
            elif event.kind == "approval.requested":
                call = step.get(data.get("call_id"))
                if call is not None:
                    asked[data.get("approval_id")] = call
            elif event.kind == "approval.decided":
                call = asked.get(data.get("approval_id"))
                if call is not None:
                    self.decisions.setdefault(_canonical(*call), deque()).append(data)

    def key(self, name: str, arguments: Any) -> bytes:
        """A call's key: its arguments as the tool reads them (defaults filled in),
        so that a call spelled differently but meaning the same is the same call."""
        t = self._tools.get(name)
        if t is not None and isinstance(arguments, dict):
            with contextlib.suppress(ToolError):
                arguments = t.validate(arguments)
        return _canonical(name, arguments)

    def result(self, t: Tool, arguments: dict[str, Any]) -> ToolFinishedData | None:
        """The recorded result of the next such call; a read-only tool's last one
        again once they are used up; None when the original made no such call."""
        key = _canonical(t.name, arguments)
        queue = self.results.get(key)
        if queue:
            self.last[key] = queue.popleft()
            return self.last[key]
        return self.last.get(key) if t.read_only else None

    def decision(self, call: ToolCall) -> ApprovalDecidedData | None:
        """The decision a person made about the same call in the original, if any."""
        queue = self.decisions.get(_canonical(call.name, call.arguments))
        return queue.popleft() if queue else None


def by_call(tools: Sequence[Tool], book: CallBook) -> list[Tool]:
    """``tools`` with each call answered from ``book`` (never run); a call the
    original did not make fails with a tool error saying so (:data:`UNRECORDED`)."""
    return [dataclasses.replace(t, fn=_from_book(t, book), isolated=False, _wants_ctx=True)
            for t in tools]


def _from_book(t: Tool, book: CallBook) -> Any:
    async def serve(ctx: ToolContext, **arguments: Any) -> str | ToolOutput:
        result = book.result(t, arguments)
        if result is None:
            ctx.reached_outside = False
            raise ToolError(f"{UNRECORDED}{t.name} with these arguments, and this fork "
                            "answers calls from the recording (tools: recorded)",
                            code="fork_unrecorded")
        return serve_result(ctx, t, result)

    return serve


@dataclasses.dataclass(kw_only=True, slots=True)
class Live:
    """What a fork's run becomes at its fork step."""

    caller: ModelCaller
    tools: dict[str, Tool]
    permissions: Policy
    info: ModelInfo | None
    priced: bool
    checks: Checks | None
    #: Why the scratch copy of the workspace is untrusted (its snapshot's mark), if
    #: it is: the session is tainted from the fork step on.
    tainted: str | None = None
    ref: str | None = None


class ForkExecutor(ReplayExecutor):
    """A fork's run (see the module's docstring)."""

    book: CallBook
    live: Live
    #: Whether the candidate runs now (the recorded answers are used up).
    is_live: bool = False
    #: Called once the run has ended (the scratch workspace removed, the candidate's
    #: models released).
    on_end: Callable[[], Awaitable[None]] | None = None
    prefix_tools: dict[str, Tool]

    def go_live(self) -> None:
        """From here on the candidate runs."""
        live = self.live
        self.is_live = True
        self.caller, self.model_info, self._priced = live.caller, live.info, live.priced
        self.tools, self.permissions, self.checks = live.tools, live.permissions, live.checks

    async def execute(self) -> RunOutcome:
        try:
            return await super().execute()
        finally:
            if self.run.terminal and self.on_end is not None:
                await self.on_end()

    async def _call_model(self, specs: list[Any]) -> Any:
        if not self.is_live and self.answers.exhausted:
            self.go_live()
            if self.live.tainted is not None:
                await self._commit([self._new(WorkspaceSnapshot(data={
                    "ref": self.live.ref, "tainted": self.live.tainted}))])
        return await super()._call_model(specs)

    async def _run_tools(self, calls: list[ToolCall], retried: set[str] | None = None,
                         prior: Sequence[EventRecord] = ()) -> list[ToolFinishedData]:
        self.tools = self.live.tools if self.is_live else self.prefix_tools
        return await super()._run_tools(calls, retried, prior)

    async def _ask_check(self, check: HookCheck, point: HookPoint, facts: dict[str, Any],
                         charges: list[UsageCharge]) -> tuple[CheckVerdict, str | None]:
        # The steps served from the log take their verdicts from it; the candidate's
        # steps ask its checks.
        if self.is_live:
            return await RunExecutor._ask_check(self, check, point, facts, charges)
        return await super()._ask_check(check, point, facts, charges)

    async def _ask(self, call: ToolCall, *, kind: Literal["policy", "unknown_outcome"],
                   pending: ApprovalRequestedData | None, verdict: Verdict | None = None
                   ) -> ApprovalDecidedData:
        if not self.is_live:
            return await super()._ask(call, kind=kind, pending=pending, verdict=verdict)
        # No one decides a fork's calls: the same call's decision in the original,
        # else a refusal (a fork never waits for a person).
        found = self.book.decision(call) if kind == "policy" else None
        recorded: dict[str, Any] = dict(found) if found is not None else {
            "action": "deny" if kind == "policy" else "fail", "by": "fork",
            "reason": "fork: no one decides a fork's calls, and the original run made "
                      "no decision about this call"}
        return await self._ask_decided(call, recorded, kind=kind, pending=pending,
                                       verdict=verdict)

    async def _commit(self, events: Sequence[NewEvent], update: RunUpdate | None = None,
                      steer_guard: int | None = None, *, acquire: bool = False,
                      release: bool = False, checkpoint: bool = False,
                      usage: UsageCharge | None = None,
                      unless_changed_after: int | None = None,
                      unless_run_after: int | None = None,
                      also: Callable[[Tx, list[EventRecord]], None] | None = None
                      ) -> list[EventRecord]:
        # The steps served from the log were the original's to pay for.
        return await RunExecutor._commit(
            self, events, update, steer_guard, acquire=acquire, release=release,
            checkpoint=checkpoint, usage=usage if self.is_live else None,
            unless_changed_after=unless_changed_after, unless_run_after=unless_run_after,
            also=also)

    def _charged(self, charge: UsageCharge | None) -> None:
        if self.is_live:
            BudgetSteps._charged(self, charge)
