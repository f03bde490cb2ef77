"""The agent loop: model -> tool calls -> tool results -> model, one committed step at a time.

Every step is written to the session's event log before the next begins: the
assistant message, each tool start (with its effect id) and each tool result. The
loop reads nothing but that log (through :class:`SessionHistory`), so a run's
state is always what the log says.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from agentd.config import Budget
from agentd.errors import AgentdError, ModelError, SessionNotFound
from agentd.events import (
    ApprovalDecidedData,
    ApprovalRequestedData,
    ErrorData,
    Event,
    MessageAssistant,
    MessageAssistantData,
    RecalledData,
    RunCancelled,
    RunCompleted,
    RunEnd,
    RunFailed,
    RunParked,
    RunStarted,
    RunStatus,
    ToolCallData,
    UsageData,
    run_end,
)
from agentd.llm.catalog import ModelInfo
from agentd.llm.messages import (
    AssistantMessage,
    ModelRequest,
    OutputFormat,
    ToolCall,
    Usage,
    UserMessage,
)
from agentd.logcontext import CURRENT, LogContext, trace_id_from
from agentd.runtime._budgetsteps import BudgetSteps
from agentd.runtime._context import fit
from agentd.runtime._hooksteps import Stopped
from agentd.runtime._output import OutputSteps
from agentd.runtime._resumesteps import ResumeSteps
from agentd.runtime._toolsteps import ToolSteps
from agentd.runtime.activity import Activity
from agentd.runtime.bus import EventBus, Token
from agentd.runtime.calls import Kernel, ModelCaller, Target
from agentd.runtime.history import SessionHistory
from agentd.runtime.kernel import RetryPolicy
from agentd.runtime.media import ToolMedia, load_media
from agentd.security.policy import Policy
from agentd.security.redaction import LiveRedaction, SecretRedactor
from agentd.settings import AgentSettings
from agentd.store import Lease, LeaseLost, NewEvent, RunUpdate, Steered, Store, Tx
from agentd.store.records import EventRecord, NewBlob, RunRecord, UsageCharge, iso
from agentd.tools import Tool
from agentd.tools.secret_refs import SecretSource
from agentd.tools.workers import WorkerPool

if TYPE_CHECKING:
    from agentd.runtime.hooks import Checks
    from agentd.runtime.ports import Compactor, RunMemory
    from agentd.runtime.workspaces import SessionWorkspace
    from agentd.sandbox.context import Sandbox

__all__ = ["CallPolicy", "ModelSide", "RunExecutor", "RunOutcome", "RunShared", "RunSubject",
           "ToolSide"]

log = logging.getLogger(__name__)

#: Asked of the model after an answer cut off by its output limit (not stored: the
#: log keeps the pieces, and the run's output is their concatenation).
CONTINUE_PROMPT = ("[Your previous answer was cut off by the output token limit. Continue "
                   "exactly where it stopped, without repeating anything.]")


@dataclass(frozen=True, kw_only=True, slots=True)
class CallPolicy:
    """How a run's model calls go through the kernel, and what they may spend."""

    priority: str = "background"
    tenant: str = "default"
    weight: float = 1.0
    budget: Budget = field(default_factory=Budget)
    tenant_budget: Budget | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Park the run while every model is unavailable (else fail it).
    park: bool = True
    outage_timeout_s: float = 0.0
    #: Answers cut off by the output limit that are continued (0: none).
    max_continuations: int = 2
    #: Some budget applies (else no budget is looked at, on the hot path).
    budgeted: bool = False


@dataclass(kw_only=True, slots=True)
class RunOutcome:
    #: How the run ended; ``lost``: another node drives it now (nothing was written).
    status: RunStatus | Literal["lost"]
    output: str | None = None
    error: ErrorData | None = None
    steps: int = 0
    usage: UsageData | None = None


def _usage_data(usage: Usage, cost_usd: float | None = None) -> UsageData:
    """Token counts, and (when the catalog prices the model) their list price in USD."""
    out: UsageData = {"input_tokens": usage.input_tokens,
                      "output_tokens": usage.output_tokens,
                      "cached_tokens": usage.cached_tokens}
    if usage.cache_write_tokens:
        out["cache_write_tokens"] = usage.cache_write_tokens
    if cost_usd is not None:
        out["cost_usd"] = round(cost_usd, 6)
    return out


@functools.lru_cache(maxsize=8)
def _lease_forms(lease: Lease) -> tuple[Lease, Lease, Lease]:
    """A run's lease to hold, to take and to release it (a daemon has one lease: worked
    out once, not for each run)."""
    return (replace(lease, acquire=False, release=False), replace(lease, acquire=True),
            replace(lease, release=True))


def _redacted(redactor: SecretRedactor, event: NewEvent) -> NewEvent:
    data = redactor.data(event.data)
    return event if data is event.data else NewEvent(kind=event.kind, data=data,
                                                     run_id=event.run_id)


def _call_data(call: ToolCall) -> ToolCallData:
    data: ToolCallData = {"id": call.id, "name": call.name, "arguments": call.arguments}
    if call.extra:
        data["extra"] = call.extra
    return data


class _Landing:
    """A commit's write as its run's task awaits it: cancelling the task does not
    cancel the write (the store goes ahead with it whatever its waiter does), and the
    cancellation reaches the task once the write is done. Like ``asyncio.shield``,
    but the task wakes from the write's own future: a shield's future of its own
    woke it one turn of the event loop later, at every commit."""

    __slots__ = ("_asyncio_future_blocking", "_write")

    def __init__(self, write: asyncio.Future[list[EventRecord]]) -> None:
        self._write = write
        #: (asyncio's protocol: a task waits on what it is yielded with this True.)
        self._asyncio_future_blocking = False

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._write.get_loop()

    def add_done_callback(self, fn: Callable[[asyncio.Future[list[EventRecord]]], object],
                          *, context: contextvars.Context | None = None) -> None:
        self._write.add_done_callback(fn, context=context)

    def cancel(self, msg: Any | None = None) -> bool:
        """Refused: the task's cancellation waits for the write (it stays asked for)."""
        del msg
        return False

    def __await__(self) -> Generator[Any, None, list[EventRecord]]:
        if not self._write.done():
            self._asyncio_future_blocking = True
            yield self
        return self._write.result()


@dataclass(kw_only=True, slots=True)
class _Step:
    """A model call's answer, with what it cost, ready to commit."""

    message: AssistantMessage
    #: The ``message.assistant`` event (and any ``budget.warning`` s) to commit.
    events: list[NewEvent]
    charge: UsageCharge | None
    #: The log's last seq the call saw (a message steered in after it voids a final
    #: answer).
    context_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunShared:
    """What every run of this node shares: the store, the bus, the kernel, the
    node's lease, the tool workers."""

    store: Store
    bus: EventBus
    kernel: Kernel
    lease: Lease
    workers: WorkerPool | None = None
    #: The lease to hold a run's, to take it and to release it (worked out once).
    lease_forms: tuple[Lease, Lease, Lease] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lease_forms", _lease_forms(self.lease))


# RunSubject, ModelSide and ToolSide are made for every run and read once, by the
# executor's constructor: not frozen, as a frozen dataclass sets each field through
# object.__setattr__ (about 37,000 instructions a run for the three, measured in
# process). Nothing changes them once made.
@dataclass(slots=True, kw_only=True)
class RunSubject:
    """The run and whose it is: its session, its agent's settings, what started it,
    and who pays for it."""

    run: RunRecord
    agent_name: str
    session_key: str
    history: SessionHistory
    settings: AgentSettings | None = None
    #: Where the run's message came from (``ToolContext.origin``).
    origin: Mapping[str, Any] = field(default_factory=dict)
    #: The agent (id, name) whose budget its calls are charged to; None: its own.
    payer: tuple[str, str] | None = None
    #: Started when its message was accepted (``run.started`` committed already).
    started: bool = False
    #: The values of the secrets its agent could use, kept out of what it writes,
    #: and what resolves ``secret:NAME`` for its tools (``ToolContext.secrets``).
    redactor: SecretRedactor | None = None
    secrets: SecretSource | None = None


@dataclass(slots=True, kw_only=True)
class ModelSide:
    """What the run asks its models with: the chain, the call policy, the
    instructions (with and before the memory blocks), the step limits, memory and
    compaction, and the usage of its child runs."""

    targets: Sequence[Target]
    policy: CallPolicy
    instructions: str
    max_steps: int
    base_instructions: str | None = None
    checkpoint_every: float | None = None
    memory: RunMemory | None = None
    compactor: Compactor | None = None
    child_usage: Callable[[str], Awaitable[tuple[int, int, float]]] | None = None
    #: Answers not matching the run's output schema that are asked for again.
    output_repairs: int = 2


@dataclass(slots=True, kw_only=True)
class ToolSide:
    """What the run's tools get: the tools, their time limit, the permission
    policy, the workspace and sandbox, the services they may use, and the events
    about tools that could not be loaded."""

    tools: Sequence[Tool] = ()
    timeout_s: float = 60.0
    permissions: Policy | None = None
    sandbox: Sandbox | None = None
    workspace: Path | None = None
    workspace_steps: SessionWorkspace | None = None
    on_tainted: Callable[[], Awaitable[None]] | None = None
    services: Mapping[type, object] = field(default_factory=dict)
    notes: Sequence[NewEvent] = ()
    #: Runs the agent's checks (``settings.hooks``; None: none can run).
    checks: Checks | None = None


class RunExecutor(ToolSteps, BudgetSteps, OutputSteps, ResumeSteps):
    """Drives one run to a terminal state. Owned by the supervisor, never by a request."""

    # The state a run starts with that is the same for every run: class attributes,
    # set on the executor only when they change (an executor is made for every run).
    #: The lease is gone (another node took the run over): stop, write nothing.
    lost = False
    #: Set by the supervisor before it cancels the task: why the run stops.
    cancel_reason: str | None = None
    #: Called with the run when it starts waiting for a decision.
    on_waiting: Callable[[RunRecord], None] | None = None
    interrupt = False
    #: Set by the supervisor, whose session worker runs the executor in its own task:
    #: a cancellation nobody asked of the run (no reason given: the worker's own, as
    #: the event loop closes) parks the run, as a shutdown does, and marks it
    #: (``cancelled_unasked``) so that the worker goes too.
    park_unasked = False
    cancelled_unasked = False
    #: When this executor took the run's lease (0: not yet).
    leased_at = 0.0
    steps = 0
    cost_usd = 0.0
    # Structured output (runtime/_output.py): set when the run starts.
    output: OutputFormat | None = None
    repairs = 0
    _compaction_tried = False
    _stop_reason: str | None = None
    _steer_seq = 0
    _in_model = False
    _task: asyncio.Task[Any] | None = None
    _decision: asyncio.Future[ApprovalDecidedData] | None = None
    _waiting: ApprovalRequestedData | None = None
    _deciding = False
    _workspace_checked = False
    _doing: Activity | None = None
    # Loop guard state: the last step's calls-and-results signature, and how many
    # steps in a row had it.
    _last_signature = b""
    _streak = 0
    # Auto-recall's last search: the message, the section, its log.
    _recalled: tuple[str, str, RecalledData] | None = None

    @functools.cached_property
    def _asking(self) -> asyncio.Event:  # type: ignore[override]  # (ToolSteps' attribute)
        """Set while the run asks for a decision (made at its first ask: most runs
        never ask)."""
        return asyncio.Event()

    def __init__(self, shared: RunShared, subject: RunSubject, model: ModelSide,
                 tools: ToolSide) -> None:
        run, settings, targets, policy = subject.run, subject.settings, model.targets, \
            model.policy
        self.store = shared.store
        self.bus = shared.bus
        self.kernel = shared.kernel
        self.workers = shared.workers
        self.run = run
        self.agent_name = subject.agent_name
        self.session_key = subject.session_key
        self.history = subject.history
        self.policy = policy
        self.instructions = model.instructions
        #: The agent's own instructions, before its memory blocks (rendered again
        #: after a memory tool changed them).
        self.base_instructions = (model.instructions if model.base_instructions is None
                                  else model.base_instructions)
        self.memory = model.memory
        #: Compacts the session before a call that nears the model's window (tried
        #: once per run: within a run no new turn boundary appears).
        self.compactor = model.compactor
        #: The services tools may use (``ToolContext.service``) and where the run's
        #: message came from (``ToolContext.origin``).
        self.services: Mapping[type, object] = tools.services
        self.origin: Mapping[str, Any] = subject.origin
        #: The agent (id, name) whose budget and ledger row its model calls are charged
        #: to (another agent's, for a call it made: ``policy`` is then that agent's),
        #: and the usage of its finished child runs (counted in its own).
        self.payer_id, self.payer_name = subject.payer or (run.agent_id, subject.agent_name)
        self.child_usage = model.child_usage
        #: A final reply that is exactly this (a heartbeat's: ``origin["ok_token"]``) is
        #: silent: logged, not streamed; the run's text deltas are not published live.
        token = self.origin.get("ok_token")
        self.ok_token: str | None = token if isinstance(token, str) and token else None
        self._tool_blobs: list[NewBlob] = []
        self.tools = {t.name: t for t in tools.tools} if tools.tools else {}
        self.max_steps = model.max_steps
        self.tool_timeout_s = tools.timeout_s
        #: The agent's settings (its plan's: read once while the agent is awake).
        self.agent_settings = settings if settings is not None else AgentSettings()
        self.checkpoint_every = model.checkpoint_every
        #: The agent's workspace, handed to tools (file tools stay inside it).
        self.workspace = tools.workspace
        #: Judges every tool call (the agent's layered permission policy).
        self.permissions = tools.permissions or Policy()
        self.sandbox = tools.sandbox
        self.workspace_steps = tools.workspace_steps
        self.on_tainted = tools.on_tainted
        self.checks = tools.checks
        #: Events to log when the run starts (tools that could not be loaded).
        self.notes = list(tools.notes)
        #: The primary model's catalog entry (context window, prices), if known.
        self.model_info: ModelInfo | None = targets[0].info
        self.caller = ModelCaller(
            self.kernel, targets, priority=policy.priority, tenant=policy.tenant,
            agent=run.agent_id, weight=policy.weight, retry=policy.retry,
            publish=self._publish_text, note=self._note, park=policy.park,
            outage_timeout_s=policy.outage_timeout_s)
        self._priced = any(t.info is not None for t in targets)
        # Every commit is fenced by the run's lease; the first one takes it.
        self._lease, self._lease_acquire, self._lease_release = shared.lease_forms
        #: The run was started (``run.started`` committed, its lease taken) when its
        #: message was accepted: ``_begin`` does not start it again.
        self.started = subject.started
        #: Takes secret values out of every event before it is written (and so out of
        #: the model's context, the streams and everything read from the log).
        self.redactor = subject.redactor if subject.redactor is not None else \
            SecretRedactor()
        #: The reply's live text, redacted across its pieces (a value cut in two).
        self._live = LiveRedaction(self.redactor)
        self.secrets = subject.secrets
        self.usage = Usage()
        # Pieces of an answer cut off by the output limit, continued step by step.
        self._pieces: list[str] = []
        #: The names of the tools the sender of the run's message runs (see _execute).
        self._client_tools: set[str] = set()
        #: Answers not matching the run's output schema that may be asked for again.
        self.max_repairs = model.output_repairs

    @property
    def session_id(self) -> str:
        return self.run.session_id

    async def _commit(self, events: Sequence[NewEvent], update: RunUpdate | None = None,
                      steer_guard: int | None = None, *, acquire: bool = False,
                      release: bool = False, checkpoint: bool = False,
                      usage: UsageCharge | None = None,
                      unless_changed_after: int | None = None,
                      unless_run_after: int | None = None,
                      also: Callable[[Tx, list[EventRecord]], None] | None = None
                      ) -> list[EventRecord]:
        lease = (self._lease_acquire if acquire else self._lease_release if release
                 else self._lease)
        if self.redactor:
            events = [_redacted(self.redactor, e) for e in events]
            if update is not None and (update.output or update.error):
                update = dataclasses.replace(update, output=self.redactor.data(update.output),
                                             error=self.redactor.data(update.error))
        write = self.store.append(self.session_id, events, run_id=self.run.id, run=update,
                                  unless_steered_after=steer_guard, lease=lease,
                                  checkpoint_every=self.checkpoint_every if checkpoint
                                  else None, usage=usage,
                                  unless_changed_after=unless_changed_after,
                                  unless_run_after=unless_run_after, also=also)
        try:
            records = await _Landing(write)
        except asyncio.CancelledError:
            # A commit under way still lands: publish it before the cancellation is
            # handled, so the run's end is written after it, never before. (The
            # history catches up from the log at the next commit.)
            self._published(await write, update)
            raise
        self._published(records, update)
        if records and records[0].seq > self.history.last_seq + 1:
            # Messages queued behind this run were committed in between.
            self.history.extend(await self.store.read_events(
                self.session_id, after=self.history.last_seq))
        self.history.extend(records)
        return records

    def _blob_writer(self, blobs: list[NewBlob]) -> Callable[[Tx, list[EventRecord]], None]:
        """What writes the images a step's tools returned with its results."""
        media = self.services[ToolMedia]
        assert isinstance(media, ToolMedia)  # (it took them in: _take_images)
        return media.writer(self.session_id, self.agent_settings.tenant, blobs,
                            self.store.dialect, self.store.clock.time)

    def _published(self, records: list[EventRecord], update: RunUpdate | None) -> None:
        self.bus.publish(records)
        if update is not None:
            # Keep self.run equal to the stored row, so waiters need no read.
            update.apply_to(self.run, records[0].at if records else time.time())

    def _publish_text(self, text: str, reset: bool) -> None:
        if self.ok_token is not None or self._holds_reply:
            return  # whether the reply is delivered is known only once it is complete
        if reset:
            self._live.reset()
        shown = self._live.feed(text)
        if (shown or reset) and self.bus.followers(self.session_id):
            self.bus.publish_token(self.session_id, Token(
                run_id=self.run.id, text=shown, after=self.history.last_seq, reset=reset))

    def _end_text(self) -> None:
        """The model call ended: the live text held back for redaction goes out."""
        rest = self._live.flush()
        if rest:
            self.bus.publish_token(self.session_id, Token(
                run_id=self.run.id, text=rest, after=self.history.last_seq, reset=False))

    async def _note(self, event: Event) -> None:
        """An event about a model call under way (an outage, a recovery)."""
        await self._commit([self._new(event)])

    def note_steer(self, seq: int) -> None:
        """A user message was committed into this run at ``seq`` (mode steer)."""
        self._steer_seq = max(self._steer_seq, seq)

    @property
    def in_model_call(self) -> bool:
        """Whether a model call is under way (its request built: a steer committed now
        reaches the next call, not this one)."""
        return self._in_model

    def activity(self) -> dict[str, Any]:
        """The run and what it is doing now, as ``GET /v1/overview``'s ``busy`` has it."""
        doing = self._doing or self.caller.doing or Activity(
            doing="working", since=self.run.started_at or self.run.created_at)
        return {"run": self.run.id, "agent": self.agent_name, "session": self.session_key,
                "status": self.run.status, "steps": self.steps,
                "started_at": iso(self.run.started_at), "waiting_for": doing.to_api()}

    def request_stop(self, reason: str) -> None:
        """End the run at its next step boundary; a model call under way (nothing of
        it committed yet) is abandoned at once."""
        self._stop_reason = reason
        if self._in_model and self.cancel_reason is None:
            self.cancel(reason)

    def cancel(self, reason: str) -> bool:
        """Cancel the run now, for ``reason`` (a reason given before stays). False
        when it is not executing (not started, or over: its task, a session worker's,
        has gone on to other things and is not cancelled)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self._task is None:
            return False
        self._task.cancel()
        return True

    def _took_lease(self) -> None:
        self.leased_at = self.kernel.clock.monotonic()
        self.run.lease_owner = self._lease.owner

    def lose(self) -> None:
        """The run's lease is gone: another node drives it now. Stop without writing."""
        self.lost = True
        if self._task is not None:
            self._task.cancel()

    async def execute(self) -> RunOutcome:
        """Drive the run to its end in the calling task, which cancelling the run
        cancels while this runs (and only then: see :meth:`cancel`)."""
        self._task = asyncio.current_task()
        # Every line logged for the run (by its task and the tasks and threads it
        # starts, which copy the context) names it: agentd.logcontext.
        bound = CURRENT.set(LogContext(
            agent_id=self.run.agent_id, agent=self.agent_name,
            session_id=self.run.session_id, session=self.session_key, run_id=self.run.id,
            given_trace_id=trace_id_from(self.origin.get("traceparent"))))
        try:
            return await self._execute()
        except LeaseLost:
            # Not ours (another node holds the run or its session): nothing was written.
            self.lost = True
            return RunOutcome(status="lost")
        except Stopped as exc:  # a check's deny, its verdict committed (_hooksteps)
            return await self._fail(exc)
        except asyncio.CancelledError:
            reason = self.cancel_reason
            if reason is None and self.park_unasked and not self.lost:
                reason = self.cancel_reason = "daemon shutting down"
                self.interrupt = self.cancelled_unasked = True
            if reason is None or self.lost:
                raise
            # Shielded: a second cancellation must not lose how the run ended.
            if self.interrupt:
                # Parked, not ended: the run stays "running" in the store and the next
                # daemon resumes it from its last committed step; its lease is released.
                with contextlib.suppress(LeaseLost):
                    await asyncio.shield(self._commit([self._new(RunParked(data={
                        "reason": reason, "steps": self.steps}))], release=True))
                raise
            try:
                return await asyncio.shield(self._cancel(reason))
            except LeaseLost:
                self.lost = True
                return RunOutcome(status="lost")
            except Exception as exc:
                if not self._gone(exc):
                    raise
                return RunOutcome(status="lost")
        except Exception as exc:
            if self._gone(exc):
                return RunOutcome(status="lost")
            # A bug must not leave the run "running" forever: fail it, loudly.
            log.exception("run %s failed with an internal error", self.run.id)
            return await self._fail(AgentdError(
                f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._task = None
            CURRENT.reset(bound)

    def _gone(self, exc: Exception) -> bool:
        """Whether ``exc`` means the run is not this executor's to go on with: the
        store out of reach (whatever it was writing may or may not be committed: the
        run's next owner, this node's next takeover once the store answers or another
        node's once the lease expires, resumes it from its log), or its session
        deleted (with its agent, on another node). Then it stops, writing nothing."""
        if isinstance(exc, SessionNotFound):
            log.info("run %s: its session was deleted; stopping it", self.run.id)
        elif self.store.engine.is_outage(exc):
            log.warning("run %s: the store failed (%s: %s); stopping it here: it resumes "
                        "from its last committed step", self.run.id, type(exc).__name__,
                        exc)
        else:
            return False
        self.lost = True
        return True

    # -- ending the run ----------------------------------------------------------------

    def _used(self) -> UsageData:
        """What the run has used so far (its end event and row carry it)."""
        return _usage_data(self.usage, self.cost_usd if self._priced else None)

    async def _with_children(self, usage: UsageData) -> UsageData:
        """``usage`` plus the run's finished children's."""
        assert self.child_usage is not None
        tokens_in, tokens_out, cost = await self.child_usage(self.run.id)
        if not (tokens_in or tokens_out or cost):
            return usage
        out: UsageData = {**usage, "input_tokens": usage["input_tokens"] + tokens_in,
                          "output_tokens": usage["output_tokens"] + tokens_out}
        if cost or "cost_usd" in usage:
            out["cost_usd"] = round(usage.get("cost_usd", 0.0) + cost, 6)
        return out

    async def _finish(self, end: RunEnd, *, before: Sequence[NewEvent] = (),
                      steer_guard: int | None = None, charge: UsageCharge | None = None
                      ) -> RunOutcome:
        """Commit the event that ends the run (with ``before`` and the run's new row,
        its status the one the event's kind sets)."""
        status = run_end(end)
        if self.child_usage is not None and "usage" in end.data:
            # The run's usage includes its finished children's (subtasks, calls).
            end.data["usage"] = await self._with_children(end.data["usage"])
        output = end.data["output"] if isinstance(end, RunCompleted) else None
        error = end.data["error"] if isinstance(end, RunFailed) else None
        usage = end.data.get("usage")
        await self._commit(
            [*before, self._new(end)],
            RunUpdate(status=status, output=output, error=cast(dict[str, Any], error),
                      steps=self.steps, usage=cast(dict[str, float], usage), finished=True),
            steer_guard=steer_guard, checkpoint=True, usage=charge,
        )
        return RunOutcome(status=status, output=output, error=error, steps=self.steps,
                          usage=usage)

    async def _fail(self, exc: AgentdError) -> RunOutcome:
        return await self._finish(RunFailed(data={
            "error": cast(ErrorData, exc.to_dict()), "steps": self.steps,
            "usage": self._used()}))

    async def _cancel(self, reason: str) -> RunOutcome:
        return await self._finish(RunCancelled(data={
            "reason": reason, "steps": self.steps, "usage": self._used()}))

    async def _execute(self) -> RunOutcome:
        """The run, step by step: each step one model call and, if it asks for tools,
        their results; every step committed before the next begins."""
        # The tools its sender runs itself (an OpenAI client's ``tools``, from the run's
        # message in the log): offered too, unless the agent has one of the name (the
        # door refuses such a request).
        client = [t for t in self.history.client_tools(self.run.id) if t.name not in self.tools]
        self._client_tools = {t.name for t in client}
        self._output_format()
        resuming = not self.started and self.run.status in ("running", "waiting_approval")
        outcome = await self._begin()
        if outcome is None and self.agent_settings.all_checks.checks:
            outcome = await self._check_input(resuming)
        specs = [*(t.spec for t in self.tools.values()), *client]
        while outcome is None:
            outcome = await self._before_step()
            if outcome is not None:
                break
            step = await self._call_model(specs)
            if isinstance(step, RunOutcome):
                return step
            outcome = await self._after_answer(step)
        return outcome

    async def _begin(self) -> RunOutcome | None:
        """Start the run, or pick it up where its log says it was (``_resume``)."""
        if self.started:
            # Started with its message (Runs.send, Runs.send_many(start=True)): the lease is
            # this node's already, and its next commit renews it.
            self.started = False
            self._took_lease()
            if self.notes:
                await self._commit(self.notes)
            return None
        if self.run.status in ("running", "waiting_approval"):
            # The run was under way when its daemon stopped: carry on from the log.
            outcome = await self._resume()
            if outcome is None and self.notes:
                await self._commit(self.notes)
            return outcome
        await self._commit([self._new(RunStarted()), *self.notes],
                           RunUpdate(status="running", started=True), acquire=True)
        self._took_lease()
        return None

    async def _before_step(self) -> RunOutcome | None:
        """What may end the run before its next model call: a stop asked for, its step
        limit, its budget. Takes in a message steered into the run meanwhile."""
        if self._stop_reason is not None:
            return await self._cancel(self._stop_reason)
        if self._steer_seq > self.history.last_seq:
            # A message was steered in: it joins the context of this next call.
            self.history.extend(await self.store.read_events(
                self.session_id, after=self.history.last_seq))
        if self.steps >= self.max_steps:
            return await self._fail(AgentdError(
                f"the run used its {self.max_steps} steps without a final answer",
                code="max_steps"))
        if self.policy.budgeted:
            over = await self._over_budget()
            if over is not None:
                return await self._fail(over)
        return None

    def _request(self, specs: list[Any], recalled: str = "") -> ModelRequest:
        messages, provenance = self.history.for_request()
        if self._pieces:
            messages = [*messages, UserMessage(content=CONTINUE_PROMPT)]
        system = self.history.system(self.instructions, self.run.id)
        if recalled:
            system = f"{system}\n\n{recalled}"
        return ModelRequest(
            system=system, messages=messages, tools=specs,
            max_tokens=self.agent_settings.max_tokens,
            temperature=self.agent_settings.temperature,
            memo=self.history.memo, provenance=provenance, cache_key=self.history.cache_key,
            output=self.output)

    async def _call_model(self, specs: list[Any]) -> _Step | RunOutcome:
        """One model call through the kernel (scheduler, retries, fallbacks), its answer
        priced and turned into the events to commit; a model error fails the run.
        Near the model's window, older turns are compacted first (else trimmed)."""
        self.steps += 1
        if self.history.unloaded:
            await load_media(self.store, self.session_id, self.history)
        # (No coroutine is awaited for nothing: no auto-recall, no model window known
        # to compact before, no output check.)
        section, recalled = ((await self._recall()) if self.memory is not None
                             and self.agent_settings.memory.auto_recall else ("", None))
        request = self._request(specs, section)
        compaction = None
        if (self.compactor is not None and not self._compaction_tried
                and self.model_info is not None):
            compaction = await self.compactor.before_call(
                request, self.history, info=self.model_info, run=self.run,
                agent=self.agent_name, settings=self.agent_settings,
                targets=self.caller.targets, priority=self.policy.priority,
                note=self._note, commit=self._commit)
            self._compaction_tried = compaction is not None
            if compaction is not None and compaction["status"] == "compacted":
                request = self._request(specs, section)
        context_seq = self.history.last_seq
        try:
            request, trimmed, (prompt, limit) = fit(
                request, self.model_info, counts_tokens=self.kernel.counts_tokens)
            self._in_model = True
            message, target, report = await self.caller.call(
                request, tokens=prompt + limit, output=limit)
        except ModelError as exc:
            self._live.reset()
            return await self._fail(exc)
        finally:
            self._in_model = False
        self._end_text()
        cost: float | None = None
        charge: UsageCharge | None = None
        warnings: list[NewEvent] = []
        if message.usage is not None:
            usage = message.usage
            cost = target.info.cost(usage) if target.info is not None else None
            if self.policy.budgeted:
                warnings = await self._budget_warnings(
                    usage.input_tokens + usage.output_tokens, cost or 0.0)
            self.usage = self.usage + usage
            self.cost_usd += cost or 0.0
            charge = UsageCharge(
                agent_id=self.payer_id, agent=self.payer_name,
                tenant=self.policy.tenant, model=target.spec,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens, cache_write_tokens=usage.cache_write_tokens,
                cost_usd=round(cost or 0.0, 6))
        data: MessageAssistantData = {
            "text": message.text,
            "tool_calls": [_call_data(c) for c in message.tool_calls],
            "usage": _usage_data(message.usage, cost) if message.usage else None,
            "finish_reason": message.finish_reason,
            "model": message.model,
            "step": self.steps,
        }
        report.record(data)
        if message.thinking:
            # Reasoning blocks the provider wants back verbatim (Anthropic signs them).
            data["thinking"] = [{"text": t.text, "signature": t.signature,
                                 "redacted": t.redacted} for t in message.thinking]
        if trimmed:
            data["context_trimmed"] = trimmed
        if compaction is not None:
            data["compaction"] = compaction
        if recalled is not None:
            data["recalled"] = recalled
        if self._pieces:
            data["continuation"] = len(self._pieces)
        return _Step(message=message, events=[self._new(MessageAssistant(data=data)),
                                              *warnings],
                     charge=charge, context_seq=context_seq)

    async def _recall(self) -> tuple[str, RecalledData | None]:
        """With ``settings.memory.auto_recall`` (asked only then: the caller looks, so
        that no coroutine is made for nothing): the section of entries most relevant
        to the latest user message for the next call's system prompt, and its log
        (searched once per message, not per step)."""
        assert self.memory is not None  # (the caller asks only with auto-recall on)
        scope = self._memory_scope()
        if scope is None:
            return "", None
        message = next((m.content for m in reversed(self.history.messages)
                        if isinstance(m, UserMessage)), "")
        if self._recalled is None or self._recalled[0] != message:
            began = self.kernel.clock.monotonic()
            section, data = await self.memory.recall(scope, message)
            if data is not None:
                data["duration_ms"] = round((self.kernel.clock.monotonic() - began) * 1000, 3)
            self._recalled = (message, section, data)
        _, section, data = self._recalled
        return section, data

    async def _after_answer(self, step: _Step) -> RunOutcome | None:
        """Commit the answer and do what it says: continue an answer cut off by the
        output limit, end the run with a final answer, or run the tools it asks for.
        None: the run goes on to its next step."""
        message = step.message
        if (not message.tool_calls and message.finish_reason == "length"
                and len(self._pieces) < self.policy.max_continuations):
            # Cut off by the output limit: keep the piece, ask for the rest.
            await self._commit(step.events, RunUpdate(steps=self.steps), usage=step.charge)
            self._charged(step.charge)
            self._pieces.append(message.text)
            return None
        if not message.tool_calls:
            # The final answer and the run's completion are one step: one commit,
            # refused if a message was steered in meanwhile (the answer did not see
            # it: it is dropped and the model is asked again).
            output = "".join(self._pieces) + message.text
            if self.output is not None:
                checked = await self._checked_output(output, step.events, step.charge)
                if not isinstance(checked, str):
                    return checked  # the run failed, or the model is asked again
                output = checked
            end = RunCompleted(data={"output": output, "steps": self.steps,
                                     "usage": self._used()})
            if self.ok_token is not None and output.strip() == self.ok_token:
                step.events[0].data["silent"] = end.data["silent"] = True
            try:
                reply, before = ((await self._checked_reply(end, step.events))
                                 if self._holds_reply else (end, step.events))
                outcome = await self._finish(
                    reply,
                    before=before, steer_guard=step.context_seq, charge=step.charge)
            except Steered:
                # Clients streaming this answer throw it away: a new one follows.
                self._publish_text("", True)
                return None
            self._charged(step.charge)
            return outcome
        self._pieces.clear()
        await self._commit(step.events, RunUpdate(steps=self.steps), usage=step.charge)
        self._charged(step.charge)
        if self._client_tools and any(c.name in self._client_tools
                                      for c in message.tool_calls):
            return await self._hand_to_client(message.tool_calls, message.text)
        results = await self._run_tools(message.tool_calls)
        return await self._guard_loop(message.tool_calls, results)

    async def _hand_to_client(self, calls: list[ToolCall], text: str) -> RunOutcome:
        """The model called tools its sender runs: the agent's own calls of the step
        run, then the run ends with the sender's (``client_tool_calls``); the
        sender's results come with its next message (``tool_results``)."""
        own = [c for c in calls if c.name not in self._client_tools]
        if own:
            await self._run_tools(own)
        theirs = [_call_data(c) for c in calls if c.name in self._client_tools]
        return await self._finish(RunCompleted(data={
            "output": text, "steps": self.steps, "usage": self._used(),
            "client_tool_calls": theirs}))

    # -- resuming ----------------------------------------------------------------------
