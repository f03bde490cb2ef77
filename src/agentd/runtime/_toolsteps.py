"""The tool half of a run's step: policy, approvals, taint, and running the calls.

Every call the model asks for is judged by the agent's :class:`~agentd.security.policy.
Policy` before it runs. ``allow`` runs it; ``deny`` answers it with an error result (the
model reads why); ``ask`` commits an ``approval.requested`` event, puts the run in
``waiting_approval`` and waits for a person (API or CLI) to approve, approve with edited
arguments, or deny it, or for the request to expire (denied). The verdict and its
reason are in the log with the call (``tool.started`` / ``tool.finished`` carry
``policy``; approvals have their own events): the audit trail.

A result from outside (a tool marked ``untrusted_output``, or a result a tool itself
flags) is committed with ``tainted``; from then on the session is tainted and the policy
treats calls that can reach out accordingly. The moment a session becomes tainted, its
persistent shells are closed and everything they started is killed (``on_tainted``),
before any other call runs: a loop started in the background while the session was
clean (and allowed out) must not go on sending after the taint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import orjson

from agentd.errors import AgentdError, Conflict, InvalidInput, ToolError
from agentd.events import (
    ApprovalDecided,
    ApprovalDecidedData,
    ApprovalRequested,
    ApprovalRequestedData,
    Event,
    LoopDetected,
    PartData,
    PolicyVerdictData,
    RunWaiting,
    ToolFinished,
    ToolFinishedData,
    ToolStarted,
    ToolStartedData,
)
from agentd.llm.messages import ToolCall
from agentd.media import ToolImage, ToolOutput
from agentd.runtime._hooksteps import HookSteps
from agentd.runtime.activity import Activity
from agentd.runtime.media import ToolMedia
from agentd.security.policy import CallFacts, Policy, Verdict
from agentd.store import LeaseLost, NewEvent, RunUpdate
from agentd.store.records import EventRecord, RunRecord
from agentd.store.store import new_id
from agentd.tools import Tool, ToolContext

if TYPE_CHECKING:
    from agentd.runtime.history import SessionHistory
    from agentd.runtime.loop import RunOutcome
    from agentd.runtime.ports import RunMemory
    from agentd.runtime.workspaces import SessionWorkspace
    from agentd.settings import AgentSettings
    from agentd.tools.secret_refs import SecretSource
    from agentd.tools.workers import WorkerPool

__all__ = ["ToolSteps", "render_output"]

log = logging.getLogger(__name__)

MAX_TOOL_OUTPUT = 64 * 1024
SHELL_TOOLS = frozenset({"shell"})
#: A call whose arguments come to more than this (as JSON) is denied unjudged.
MAX_ARGUMENTS = 8 * 1024 * 1024
#: Judged in a worker process: shell commands (the analyser parses attacker text with
#: bashlex and regular expressions) and calls with arguments above this size.
JUDGE_OFF_LOOP = 64 * 1024
#: A call the policy cannot judge within this time (or the tool timeout, if shorter)
#: is asked about (fail closed).
JUDGE_TIMEOUT_S = 10.0


def render_output(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    if len(text) > MAX_TOOL_OUTPUT:
        text = text[:MAX_TOOL_OUTPUT] + f"\n[output truncated: {len(text)} characters in all]"
    return text


def walled(sandbox: Any) -> bool:
    """Whether the run's sandbox is the wall for its commands: an isolating backend and
    no network for them (the policy adds: and the session is not tainted)."""
    backend = getattr(sandbox, "backend", None)
    return (backend is not None and bool(getattr(backend, "isolated", False))
            and not getattr(sandbox, "command_network", True))


def _verdict_data(verdict: Verdict) -> PolicyVerdictData:
    return cast(PolicyVerdictData, verdict.to_dict())


def _asking(request: ApprovalRequestedData) -> str:
    """The ``waiting`` cause of an approval request: short, for a person."""
    if request["kind"] == "policy":
        return f"approval of a {request['name']} call: {request['reason']}"[:300]
    return (f"a decision about a {request['name']} call whose outcome is unknown "
            "(retry, skip or fail)")


def facts_of(t: Tool, arguments: Mapping[str, Any] | None = None, session: str = ""
             ) -> CallFacts:
    """What the policy knows of a call of ``t``: the tool's flags, and where this
    call's arguments send content out (``Tool.sends_out_to``), if anywhere."""
    sends_to = None
    if t.sends_out_to is not None and arguments is not None:
        try:
            sends_to = t.sends_out_to(arguments, session)
        except Exception as exc:  # attacker arguments the tool's hook did not expect
            # Fail closed: a destination nobody could name still counts as out.
            log.warning("%s: where the call sends could not be told: %r", t.name, exc)
            sends_to = "sends content somewhere that could not be told"
    return CallFacts(name=t.name, read_only=t.read_only, needs_approval=t.needs_approval,
                     needs_network=t.needs_network, sends_out=t.sends_out,
                     shell=t.name in SHELL_TOOLS, sends_to=sends_to)


class ToolSteps(HookSteps):
    """Mixed into :class:`~agentd.runtime.loop.RunExecutor`: what it does with the tool
    calls of a step (its checks: :class:`HookSteps`). Declares what it uses of the
    executor."""

    run: RunRecord
    agent_name: str
    session_key: str
    history: SessionHistory
    tools: dict[str, Tool]
    tool_timeout_s: float
    steps: int
    permissions: Policy
    #: Handed to tools (the agent's sandbox: backend, limits, network).
    sandbox: Any
    workspace: Any
    #: The workspace's checks and snapshots (None: the agent's tools cannot change it).
    workspace_steps: SessionWorkspace | None
    #: Called once when the session becomes tainted (closes its persistent shells).
    on_tainted: Callable[[], Awaitable[None]] | None
    #: Worker processes for isolated tools and the command analyser (None: in-process).
    workers: WorkerPool | None
    #: The agent's memory (None: no blocks rendered, the memory tools say it is not
    #: available); its blocks are rendered after ``base_instructions`` (``instructions``
    #: is both, as the model sees them).
    memory: RunMemory | None
    agent_settings: AgentSettings
    #: ``ToolContext.services`` and ``ToolContext.origin`` for every call.
    services: Mapping[type, object]
    secrets: SecretSource | None
    origin: Mapping[str, Any]
    base_instructions: str
    instructions: str
    on_waiting: Callable[[RunRecord], None] | None
    _decision: asyncio.Future[ApprovalDecidedData] | None
    _waiting: ApprovalRequestedData | None
    _deciding: bool
    _asking: asyncio.Event
    _workspace_checked: bool
    #: The tool calls under way or the decision waited for (the live view).
    _doing: Activity | None
    #: The loop guard's streak of identical steps, and the last step's signature.
    _streak: int
    _last_signature: bytes

    async def _commit(self, events: Sequence[NewEvent], update: RunUpdate | None = None,
                      *args: Any, **kwargs: Any) -> list[EventRecord]:
        raise NotImplementedError

    def _new(self, event: Event) -> NewEvent:
        """The row of one of this run's events."""
        return NewEvent.of(event, self.run.id)

    async def _fail(self, exc: AgentdError) -> RunOutcome:
        raise NotImplementedError

    async def _guard_loop(self, calls: list[ToolCall], results: list[ToolFinishedData]
                          ) -> RunOutcome | None:
        """Loop guard: the same tool calls (names and arguments) getting the same results
        ``repeats`` steps in a row is a run making no progress. ``settings.loop_guard``
        says what then: ``warn`` (a ``loop.detected`` event, once per streak; the
        default) or ``stop`` (the run fails with ``loop_detected``)."""
        guard = self.agent_settings.loop_guard
        repeats = guard.repeats
        # Each call and result as canonical JSON, in a stable order (never compare the
        # arguments themselves: dicts do not order).
        signature = b"\n".join(sorted(
            orjson.dumps([c.name, c.arguments, r["output"], r["is_error"]],
                         option=orjson.OPT_SORT_KEYS)
            for c, r in zip(calls, results, strict=False)))
        self._streak = self._streak + 1 if signature == self._last_signature else 1
        self._last_signature = signature
        if self._streak != repeats:
            return None
        names = sorted({c.name for c in calls})
        if guard.action == "stop":
            return await self._fail(AgentdError(
                f"the run made the same tool calls ({', '.join(names)}) with the same "
                f"results {repeats} steps in a row", code="loop_detected",
                details={"repeats": repeats, "tools": names}))
        await self._commit([self._new(LoopDetected(data={
            "repeats": repeats, "tools": names, "action": "warn"}))])
        return None

    def _memory_scope(self) -> Any:
        """Where the memory tools act: the agent's namespaces, from this session, with
        its taint (what a tainted session writes is tainted); None without memory."""
        if self.memory is None:
            return None
        return self.memory.scope(agent_id=self.run.agent_id, settings=self.agent_settings,
                                 session=self.session_key, run_id=self.run.id,
                                 seq=self.history.last_seq, tainted=self.history.tainted)

    # -- running a step's calls --------------------------------------------------------

    async def _run_tools(self, calls: list[ToolCall], retried: set[str] | None = None,
                         prior: Sequence[EventRecord] = ()) -> list[ToolFinishedData]:
        """Judge, then run the calls: consecutive read-only calls together, anything
        that mutates alone, in the order the model asked for. ``prior`` holds the
        run's events after the step (a resumed run), so approvals are not asked twice.
        Returns the ``tool.finished`` data of each call."""
        steps = self.workspace_steps
        clean = self.history.tainted is None
        if steps is not None and calls and (not self._workspace_checked
                                            or steps.needs_check()):
            # Before the run's first tool step (and a later one once another session
            # moved the files, or tainted them): the files as they are now. If they
            # changed since the session last saw them, and not by the agent's own
            # untainted steps, the session is tainted before any call is judged.
            self._workspace_checked = True
            check = await steps.check()
            if check:
                await self._commit(check)
        clean = await self._on_taint(clean)
        try:
            return await self._run_judged(calls, retried, prior, clean)
        finally:
            if steps is not None:
                await steps.done()

    async def _on_taint(self, clean: bool) -> bool:
        """End the session's shells if it just became tainted; whether it is clean."""
        if clean and self.history.tainted is not None:
            if self.on_tainted is not None:
                await self.on_tainted()
            return False
        return clean

    # complexity: each call judged (allow, ask, deny, retried, replayed), then run in
    # order; the verdicts and the workspace snapshot are shared between the two passes.
    async def _run_judged(self, calls: list[ToolCall], retried: set[str] | None,
                          prior: Sequence[EventRecord], clean: bool
                          ) -> list[ToolFinishedData]:
        steps = self.workspace_steps
        judged: list[tuple[ToolCall, Verdict | None, str | None]] = []
        for call in calls:
            judged.append(await self._judge(call, prior))
        groups: list[list[tuple[ToolCall, Verdict | None, str | None]]] = []
        for item in judged:
            call, _, denied = item
            if (denied is None and self._is_read_only(call) and groups
                    and all(d is None and self._is_read_only(c) for c, _, d in groups[-1])):
                groups[-1].append(item)
            else:
                groups.append([item])
        finished: list[ToolFinishedData] = []
        mutated = False
        for group in groups:
            call, verdict, denied = group[0]
            if denied is not None:
                result: ToolFinishedData = {
                    "call_id": call.id, "name": call.name, "output": denied,
                    "is_error": True, "duration_ms": 0.0, "denied": True}
                if verdict is not None:
                    result["policy"] = _verdict_data(verdict)
                await self._commit([self._new(ToolFinished(data=result))])
                finished.append(result)
                continue
            started: list[NewEvent] = []
            for c, v, _ in group:
                data: ToolStartedData = {"call_id": c.id, "name": c.name,
                                         "arguments": c.arguments,
                                         "effect_id": self._effect_id(c)}
                if v is not None:
                    data["policy"] = _verdict_data(v)
                if retried and c.id in retried:
                    data["retry"] = True
                started.append(self._new(ToolStarted(data=data)))
            await self._commit(started)
            writes = not all(self._is_read_only(c) for c, _, _ in group)
            if writes and steps is not None:
                await steps.writing()
            self._doing = Activity(doing="tool", detail=", ".join(c.name for c, _, _ in group),
                                   since=time.time())
            try:
                if len(group) == 1:
                    results = [await self._call_tool(call)]
                else:
                    results = list(await asyncio.gather(*(self._call_tool(c)
                                                          for c, _, _ in group)))
            finally:
                self._doing = None
            mutated = mutated or writes
            await self._commit_results([c for c, _, _ in group], results)
            finished.extend(results)
            clean = await self._on_taint(clean)
        if mutated and steps is not None:
            snapshot = await steps.snapshot()
            if snapshot:
                await self._commit(snapshot)
            await self._on_taint(clean)
        return finished

    async def _judge(self, call: ToolCall, prior: Sequence[EventRecord]
                     ) -> tuple[ToolCall, Verdict | None, str | None]:
        """(the call to run, its verdict, the error result if it must not run)."""
        t = self.tools.get(call.name)
        if t is None:
            return call, None, None
        call, refused = await self._check_call(t, call, prior)
        if refused is not None:
            return call, None, refused
        verdict = await self._verdict(t, call.arguments)
        if verdict.action == "allow":
            return call, verdict, None
        if verdict.action == "deny":
            return call, verdict, f"{call.name} was denied by policy: {verdict.reason}"
        decision = self._decided(call, prior)
        if decision is None:
            decision = await self._ask(
                call, kind="policy", pending=self._requested(call, prior), verdict=verdict)
        who = decision.get("by") or "a person"
        if decision["action"] != "approve":
            why = decision.get("reason") or "no reason given"
            return call, verdict, f"{call.name} was not approved ({who}: {why})"
        approved = Verdict(action="allow", rule="approval",
                           reason=f"approved by {who}", categories=verdict.categories,
                           tainted=verdict.tainted)
        arguments = decision.get("arguments")
        if isinstance(arguments, dict) and arguments != call.arguments:
            return ToolCall(id=call.id, name=call.name, arguments=arguments,
                            extra=call.extra), approved, None
        return call, approved, None

    async def _verdict(self, t: Tool, arguments: dict[str, Any]) -> Verdict:
        """The policy's verdict, reached without stalling the event loop: what the
        analyser parses is capped, judged in a worker with a time limit, and a call
        that cannot be judged in time is asked about (fail closed)."""
        facts = facts_of(t, arguments, self.session_key)
        tainted = self.history.tainted is not None
        confined = walled(self.sandbox)
        try:
            size = len(orjson.dumps(arguments))
        except (orjson.JSONEncodeError, TypeError):
            size = JUDGE_OFF_LOOP + 1
        if size > MAX_ARGUMENTS:
            return Verdict(action="deny", rule="builtin:size", reason=(
                f"the arguments come to {size} bytes; the limit is {MAX_ARGUMENTS}"))
        if self.workers is None or not (facts.shell or size > JUDGE_OFF_LOOP):
            return self.permissions.decide(facts, arguments, tainted=tainted,
                                           confined=confined)
        limit = min(JUDGE_TIMEOUT_S, self.tool_timeout_s)
        try:
            # The pool's own start-up (once per daemon) is not the judging's time.
            try:
                async with asyncio.timeout(self.tool_timeout_s):
                    # (bashlex: the shell commands' parser, imported by the zygote
                    # the first time one is judged)
                    await self.workers.ready("bashlex")
            except TimeoutError:
                raise ToolError(f"the policy's worker did not start within "
                                f"{self.tool_timeout_s:g}s", code="tool_unavailable"
                                ) from None
            async with asyncio.timeout(limit):
                verdict: Verdict = await self.workers.run(
                    "agentd.tools._worker", "decide", self.permissions, facts,
                    arguments, tainted, confined, owner=self.agent_name)
            return verdict
        except TimeoutError:
            why = f"judging it took more than {limit:g}s"
        except ToolError as exc:
            why = exc.message
        except Exception as exc:  # arguments that cannot cross to a worker
            why = f"{type(exc).__name__}: {exc}"[:200]
        log.warning("policy could not judge a %s call: %s", t.name, why)
        return Verdict(action="ask", rule="builtin:unjudged", tainted=tainted,
                       reason=f"the policy could not judge this call ({why})")

    @staticmethod
    def _requested(call: ToolCall, prior: Sequence[EventRecord]
                   ) -> ApprovalRequestedData | None:
        found = None
        for event in prior:
            typed = event.typed
            if (isinstance(typed, ApprovalRequested) and typed.data.get("kind") == "policy"
                    and typed.data.get("call_id") == call.id):
                found = typed.data
        return found

    def _decided(self, call: ToolCall, prior: Sequence[EventRecord]
                 ) -> ApprovalDecidedData | None:
        requested = self._requested(call, prior)
        if requested is None:
            return None
        for event in prior:
            typed = event.typed
            if (isinstance(typed, ApprovalDecided)
                    and typed.data.get("approval_id") == requested["approval_id"]):
                return typed.data
        return None

    def _is_read_only(self, call: ToolCall) -> bool:
        t = self.tools.get(call.name)
        return t is not None and t.read_only

    def _effect_id(self, call: ToolCall) -> str:
        return f"{self.run.id}/{self.steps}/{call.id}"

    async def _call_tool(self, call: ToolCall) -> ToolFinishedData:
        started = time.perf_counter()
        t = self.tools.get(call.name)
        is_error = True
        tainted: str | None = None
        ctx: ToolContext | None = None
        images: tuple[ToolImage, ...] = ()
        kept: tuple[PartData, ...] = ()
        if t is None:
            output = f"unknown tool {call.name!r}; available: {', '.join(sorted(self.tools))}"
        else:
            ctx = ToolContext(agent=self.agent_name, session=self.session_key,
                              run_id=self.run.id, call_id=call.id,
                              effect_id=self._effect_id(call), workspace=self.workspace,
                              sandbox=self.sandbox,
                              protected=self.permissions.protected_paths(),
                              agent_id=self.run.agent_id,
                              memory=None if self.memory is None else self.memory.blocks,
                              entries=None if self.memory is None else self.memory.entries,
                              memory_scope=self._memory_scope(),
                              origin=self.origin, services=self.services,
                              secrets=self.secrets,
                              http_headers=self.agent_settings.http_headers)
            try:
                value = await t.call(call.arguments, ctx, self.tool_timeout_s, self.workers)
                if isinstance(value, ToolOutput):
                    images, kept, value = value.images, value.kept, value.text
                output = render_output(value)
                is_error = False
            except ToolError as exc:
                output = exc.message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("tool %s raised", call.name)
                output = f"{call.name} failed: {type(exc).__name__}: {exc}"
            if ctx.memory_changed and self.memory is not None:
                # The next step's model call sees the blocks as they are now.
                self.instructions = await self.memory.instructions(
                    self.run.agent_id, self.base_instructions)
            if t.untrusted_output and (not is_error or ctx.reached_outside):
                tainted = "its output comes from outside"
            elif ctx.untrusted is not None:
                tainted = ctx.untrusted
        result: ToolFinishedData = {
            "call_id": call.id,
            "name": call.name,
            "output": output,
            "is_error": is_error,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if tainted:
            result["tainted"] = tainted
        if ctx is not None and ctx.sandboxed is not None:
            result["sandbox"] = ctx.sandboxed
        if kept:
            result["parts"] = list(kept)
        if images:
            await self._take_images(result, images)
        return result

    async def _take_images(self, result: ToolFinishedData, images: Sequence[ToolImage]
                           ) -> None:
        """A tool's images: checked, referred to by the result, their bytes written
        with it (``_commit_results``); a note in its text for what was not taken."""
        media = self.services.get(ToolMedia)
        if not isinstance(media, ToolMedia):
            result["output"] += f"\n[{len(images)} image(s) not shown: images are off here]"
            return
        vision = self.model_info.vision if self.model_info is not None else None
        parts, blobs, note = await media.take(images, tool=result["name"], vision=vision)
        result["output"] += note
        if parts:
            result["parts"] = parts
            self._tool_blobs.extend(blobs)

    # -- waiting for a person ----------------------------------------------------------

    async def _ask(self, call: ToolCall, *, kind: Literal["policy", "unknown_outcome"],
                   pending: ApprovalRequestedData | None, verdict: Verdict | None = None
                   ) -> ApprovalDecidedData:
        """Wait (status ``waiting_approval``) until a client decides about ``call``;
        a policy request that expires is denied. Returns the decision's data."""
        if pending is None:
            request: ApprovalRequestedData = {
                "approval_id": new_id("ap"), "kind": kind,
                "effect_id": self._effect_id(call), "call_id": call.id, "name": call.name,
                "arguments": call.arguments, "reason": "unknown_outcome",
                "options": ["retry", "skip", "fail"]}
            if kind == "policy" and verdict is not None:
                request["reason"] = verdict.reason
                request["policy"] = _verdict_data(verdict)
                request["options"] = ["approve", "deny"]
                request["expires_at"] = round(
                    time.time() + self.permissions.approval_timeout_s, 3)
            # The request and what the run waits for, in one commit: a stream shows
            # a ``waiting`` frame (reason ``approval``) for it.
            await self._commit([self._new(ApprovalRequested(data=request)),
                                self._new(RunWaiting(data={
                                    "reason": "approval", "model": None,
                                    "retry_in_s": None, "cause": _asking(request)}))],
                               RunUpdate(status="waiting_approval"))
            pending = request
        else:
            self.run.status = "waiting_approval"
        decision: asyncio.Future[ApprovalDecidedData] = (
            asyncio.get_running_loop().create_future())
        self._decision, self._waiting = decision, pending.copy()
        self._doing = Activity(doing="approval", detail=call.name, since=time.time())
        self._asking.set()
        if self.on_waiting is not None:
            self.on_waiting(self.run)
        try:
            expires = pending.get("expires_at")
            if expires is None:
                return await decision
            try:
                return await asyncio.wait_for(asyncio.shield(decision),
                                              max(float(expires) - time.time(), 0.0))
            except TimeoutError:
                if not self._deciding:
                    with contextlib.suppress(Conflict):
                        await self.decide("deny", reason="the approval request expired",
                                          by="timeout")
                return await decision
        finally:
            self._decision = None
            self._waiting = None
            self._doing = None
            self._asking.clear()

    @property
    def waiting_for(self) -> ApprovalRequestedData | None:
        """The approval request this run waits on, if any."""
        return self._waiting

    async def asking(self, timeout_s: float) -> ApprovalRequestedData | None:
        """The request this run waits on, waiting up to ``timeout_s`` for a run that is
        still getting there (resuming after a restart), or None."""
        if self._waiting is None:
            try:
                await asyncio.wait_for(self._asking.wait(), timeout_s)
            except TimeoutError:
                return None
        return self._waiting

    async def decide(self, action: str, output: str | None = None, *,
                     arguments: dict[str, Any] | None = None, reason: str | None = None,
                     by: str | None = None) -> dict[str, Any]:
        """A decision about the call this run waits on; commits it, then lets the run
        go on. Raises Conflict if the run is not waiting (or was decided)."""
        future, pending = self._decision, self._waiting
        if future is None or future.done() or pending is None or self._deciding:
            raise Conflict("the run is not waiting for a decision", code="not_waiting")
        options = pending.get("options") or ["retry", "skip", "fail"]
        if action not in options:
            raise InvalidInput(f"unknown action {action!r}; this request takes "
                               f"{', '.join(options)}", field="body.action")
        self._deciding = True  # the first decision wins
        try:
            data: ApprovalDecidedData = {"approval_id": pending.get("approval_id"),
                                         "effect_id": pending["effect_id"], "action": action}
            if output is not None or pending.get("kind") != "policy":
                data["output"] = output
            if arguments is not None:
                data["arguments"] = arguments
            if reason is not None:
                data["reason"] = reason
            if by is not None:
                data["by"] = by
            try:
                await self._commit([self._new(ApprovalDecided(data=data))],
                                   RunUpdate(status="running"))
            except LeaseLost:
                raise Conflict("the run was taken over by another node",
                               code="not_waiting", retryable=True) from None
            future.set_result(data)
            return cast(dict[str, Any], data)
        finally:
            self._deciding = False
