"""Every kind of event a session's log holds, with the model of its data.

The log is the truth of agentd (DESIGN.md, "Event log"); this module is its catalogue.
Each kind is a keyword-only dataclass with a ``kind: Literal[...]`` discriminator and
a ``data`` mapping typed by a ``TypedDict`` (``NotRequired`` keys are written only
when they apply; a key typed ``X | None`` without ``NotRequired`` is always written,
possibly as ``null``). One pydantic :data:`event_adapter` validates and serialises the
union; :func:`schema` is its JSON schema, published at ``GET /v1/events/schema``.

Why a dataclass around a dict rather than a dataclass of fields: ``data`` is stored
and sent exactly as it is, so writing an event costs no conversion on the hot path,
and two kinds (``checkpoint``, ``approval.requested``) have a data key ``kind`` of
their own. The store keeps its generic row type (``NewEvent(kind, data)``,
``EventRecord``); ``NewEvent.of`` and ``EventRecord.typed`` convert, in one place.

Reading is forward compatible: :func:`parse` wraps the data without validating it
(old logs are folded as they are; a reader uses ``.get`` for what older writers may
have left out), and a kind this build does not know becomes :class:`UnknownEvent`,
which the fold ignores.

Adding a kind: its data ``TypedDict`` and its dataclass here, both in :data:`Event` and
``_CLASSES``, a row in docs/api.md's table of kinds (a test compares the two), and a
line in the fold if it changes the conversation. Never rename or retype a key of a kind
already written: old logs keep it; add a ``NotRequired`` key instead.

This module imports only the standard library and pydantic, so every layer (the store
included) may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from agentd.events.data import (
    ACTIVE_RUN_STATES,
    AGENT_CHANGE_KINDS,
    CHECKPOINT_KINDS,
    COMPACTION_STRATEGIES,
    RUN_STATES,
    TERMINAL_RUN_STATES,
    WAITING_REASONS,
    AgentChangeData,
    AgentChangeKind,
    ApprovalDecidedData,
    ApprovalRequestedData,
    AttemptData,
    BudgetWarningData,
    CheckpointData,
    CheckpointKind,
    ClientResultData,
    ClientToolData,
    CompactionStrategy,
    ContextTrimmedData,
    DecisionData,
    EmptyData,
    ErrorData,
    HookVerdictData,
    HookVerdictKind,
    LoopDetectedData,
    MemoryConsolidatedData,
    MessageAddedData,
    MessageAssistantData,
    MessageProactiveData,
    MessageUserData,
    ModelOutageData,
    ModelRecoveredData,
    OutputInvalidData,
    PartData,
    PolicyVerdictData,
    QueueData,
    RecalledData,
    RecalledEntryData,
    RunCancelledData,
    RunCompletedData,
    RunFailedData,
    RunInterruptedData,
    RunParkedData,
    RunResumedData,
    RunStatus,
    RunWaitingData,
    SessionCompactedData,
    SessionForkedData,
    SessionRestoredData,
    StepCompactionData,
    SubtaskFinishedData,
    SubtaskStartedData,
    ThinkingData,
    ToolCallData,
    ToolFinishedData,
    ToolSandboxData,
    ToolStartedData,
    ToolsUnavailableData,
    UsageData,
    WaitingReason,
    WorkspaceRestoredData,
    WorkspaceSnapshotData,
)

__all__ = [
    "ACTIVE_RUN_STATES",
    "AGENT_CHANGE_KINDS",
    "CHECKPOINT_KINDS",
    "COMPACTION_STRATEGIES",
    "EVENT_KINDS",
    "RUN_STATES",
    "TERMINAL_KINDS",
    "TERMINAL_RUN_STATES",
    "WAITING_REASONS",
    "AgentChangeData",
    "AgentChangeKind",
    "ApprovalDecided",
    "ApprovalDecidedData",
    "ApprovalRequested",
    "ApprovalRequestedData",
    "AttemptData",
    "BudgetWarning",
    "BudgetWarningData",
    "Checkpoint",
    "CheckpointData",
    "CheckpointKind",
    "ClientResultData",
    "ClientToolData",
    "CompactionStrategy",
    "ContextTrimmedData",
    "DecisionData",
    "EmptyData",
    "ErrorData",
    "Event",
    "HookVerdict",
    "HookVerdictData",
    "HookVerdictKind",
    "LoopDetected",
    "LoopDetectedData",
    "MemoryConsolidated",
    "MemoryConsolidatedData",
    "MessageAdded",
    "MessageAddedData",
    "MessageAssistant",
    "MessageAssistantData",
    "MessageProactive",
    "MessageProactiveData",
    "MessageUser",
    "MessageUserData",
    "ModelOutage",
    "ModelOutageData",
    "ModelRecovered",
    "ModelRecoveredData",
    "OutputInvalid",
    "OutputInvalidData",
    "PartData",
    "PolicyVerdictData",
    "QueueData",
    "RecalledData",
    "RecalledEntryData",
    "RunCancelled",
    "RunCancelledData",
    "RunCompleted",
    "RunCompletedData",
    "RunEnd",
    "RunFailed",
    "RunFailedData",
    "RunInterrupted",
    "RunInterruptedData",
    "RunParked",
    "RunParkedData",
    "RunQueued",
    "RunResumed",
    "RunResumedData",
    "RunStarted",
    "RunStatus",
    "RunWaiting",
    "RunWaitingData",
    "SessionCompacted",
    "SessionCompactedData",
    "SessionForked",
    "SessionForkedData",
    "SessionRestored",
    "SessionRestoredData",
    "StepCompactionData",
    "SubtaskFinished",
    "SubtaskFinishedData",
    "SubtaskStarted",
    "SubtaskStartedData",
    "ThinkingData",
    "ToolCallData",
    "ToolFinished",
    "ToolFinishedData",
    "ToolSandboxData",
    "ToolStarted",
    "ToolStartedData",
    "ToolsUnavailable",
    "ToolsUnavailableData",
    "UnknownEvent",
    "UsageData",
    "WaitingReason",
    "WorkspaceRestored",
    "WorkspaceRestoredData",
    "WorkspaceSnapshot",
    "WorkspaceSnapshotData",
    "event_adapter",
    "kind_of",
    "parse",
    "run_end",
    "schema",
]

# -- the kinds ---------------------------------------------------------------------------


@dataclass(kw_only=True, slots=True)
class MessageUser:
    """A user's message (its run's input, or steered into a run under way)."""

    kind: Literal["message.user"] = "message.user"
    data: MessageUserData


@dataclass(kw_only=True, slots=True)
class RunQueued:
    """A run was queued for the message before it."""

    kind: Literal["run.queued"] = "run.queued"
    data: EmptyData = field(default_factory=lambda: EmptyData())


@dataclass(kw_only=True, slots=True)
class RunStarted:
    """The run started; its message joins the conversation."""

    kind: Literal["run.started"] = "run.started"
    data: EmptyData = field(default_factory=lambda: EmptyData())


@dataclass(kw_only=True, slots=True)
class MessageAssistant:
    """One model call's answer: a step of the run."""

    kind: Literal["message.assistant"] = "message.assistant"
    data: MessageAssistantData


@dataclass(kw_only=True, slots=True)
class ToolStarted:
    """A tool call about to run (its effect id is the intent)."""

    kind: Literal["tool.started"] = "tool.started"
    data: ToolStartedData


@dataclass(kw_only=True, slots=True)
class ToolFinished:
    """A tool call's result (or a call the policy refused, or one skipped)."""

    kind: Literal["tool.finished"] = "tool.finished"
    data: ToolFinishedData


@dataclass(kw_only=True, slots=True)
class RunCompleted:
    """The run ended with an answer."""

    kind: Literal["run.completed"] = "run.completed"
    data: RunCompletedData


@dataclass(kw_only=True, slots=True)
class RunFailed:
    """The run ended with an error."""

    kind: Literal["run.failed"] = "run.failed"
    data: RunFailedData


@dataclass(kw_only=True, slots=True)
class RunCancelled:
    """The run was cancelled."""

    kind: Literal["run.cancelled"] = "run.cancelled"
    data: RunCancelledData


@dataclass(kw_only=True, slots=True)
class RunInterrupted:
    """The run ended because a tool call's outcome is unknown after a crash."""

    kind: Literal["run.interrupted"] = "run.interrupted"
    data: RunInterruptedData


@dataclass(kw_only=True, slots=True)
class RunParked:
    """A graceful shutdown stopped the run mid-way; it resumes at the next start."""

    kind: Literal["run.parked"] = "run.parked"
    data: RunParkedData


@dataclass(kw_only=True, slots=True)
class RunResumed:
    """A daemon picked the run up from its last committed step."""

    kind: Literal["run.resumed"] = "run.resumed"
    data: RunResumedData


@dataclass(kw_only=True, slots=True)
class RunWaiting:
    """The run waits: behind another run, for a model, or for a person."""

    kind: Literal["run.waiting"] = "run.waiting"
    data: RunWaitingData


@dataclass(kw_only=True, slots=True)
class ApprovalRequested:
    """The run waits (``waiting_approval``) for a person's decision."""

    kind: Literal["approval.requested"] = "approval.requested"
    data: ApprovalRequestedData


@dataclass(kw_only=True, slots=True)
class ApprovalDecided:
    """A decision about the request the run waited on; the run goes on."""

    kind: Literal["approval.decided"] = "approval.decided"
    data: ApprovalDecidedData


@dataclass(kw_only=True, slots=True)
class WorkspaceSnapshot:
    """The agent's workspace files at this point."""

    kind: Literal["workspace.snapshot"] = "workspace.snapshot"
    data: WorkspaceSnapshotData


@dataclass(kw_only=True, slots=True)
class WorkspaceRestored:
    """A restore or fork put the workspace's files back."""

    kind: Literal["workspace.restored"] = "workspace.restored"
    data: WorkspaceRestoredData


@dataclass(kw_only=True, slots=True)
class ToolsUnavailable:
    """MCP servers that could not be reached when the run started."""

    kind: Literal["tools.unavailable"] = "tools.unavailable"
    data: ToolsUnavailableData


@dataclass(kw_only=True, slots=True)
class ModelOutage:
    """Every model of the run is unavailable; the run parks until one answers."""

    kind: Literal["model.outage"] = "model.outage"
    data: ModelOutageData


@dataclass(kw_only=True, slots=True)
class ModelRecovered:
    """A model answered after an outage; the step goes on."""

    kind: Literal["model.recovered"] = "model.recovered"
    data: ModelRecoveredData


@dataclass(kw_only=True, slots=True)
class BudgetWarning:
    """A step crossed a budget's warning threshold."""

    kind: Literal["budget.warning"] = "budget.warning"
    data: BudgetWarningData


@dataclass(kw_only=True, slots=True)
class OutputInvalid:
    """A final answer did not match the run's output schema: the model is asked again,
    or the run fails with ``output_invalid``."""

    kind: Literal["output.invalid"] = "output.invalid"
    data: OutputInvalidData


@dataclass(kw_only=True, slots=True)
class LoopDetected:
    """The same tool calls got the same results several steps in a row."""

    kind: Literal["loop.detected"] = "loop.detected"
    data: LoopDetectedData


@dataclass(kw_only=True, slots=True)
class HookVerdict:
    """A check of the agent's ``settings.hooks`` decided (docs/hooks.md)."""

    kind: Literal["hook.verdict"] = "hook.verdict"
    data: HookVerdictData


@dataclass(kw_only=True, slots=True)
class Checkpoint:
    """A checkpoint of the session at this seq."""

    kind: Literal["checkpoint"] = "checkpoint"
    data: CheckpointData


@dataclass(kw_only=True, slots=True)
class SessionRestored:
    """The session's state is now what it was at ``to_seq``."""

    kind: Literal["session.restored"] = "session.restored"
    data: SessionRestoredData


@dataclass(kw_only=True, slots=True)
class SessionForked:
    """The first event after the copied ones in a forked session."""

    kind: Literal["session.forked"] = "session.forked"
    data: SessionForkedData


@dataclass(kw_only=True, slots=True)
class SessionCompacted:
    """Older turns of the conversation were compacted (summarised, or their tool
    results cleared); the events stay in the log."""

    kind: Literal["session.compacted"] = "session.compacted"
    data: SessionCompactedData


@dataclass(kw_only=True, slots=True)
class MemoryConsolidated:
    """New history of the session was consolidated into long-term memory."""

    kind: Literal["memory.consolidated"] = "memory.consolidated"
    data: MemoryConsolidatedData


@dataclass(kw_only=True, slots=True)
class SubtaskStarted:
    """A run of this session started a child run (a subtask or a call to an agent)."""

    kind: Literal["subtask.started"] = "subtask.started"
    data: SubtaskStartedData


@dataclass(kw_only=True, slots=True)
class SubtaskFinished:
    """A child run of a run of this session ended."""

    kind: Literal["subtask.finished"] = "subtask.finished"
    data: SubtaskFinishedData


@dataclass(kw_only=True, slots=True)
class MessageProactive:
    """A message posted into this session by the agent from another of its sessions."""

    kind: Literal["message.proactive"] = "message.proactive"
    data: MessageProactiveData


@dataclass(kw_only=True, slots=True)
class MessageAdded:
    """A message a client added to the conversation without a run (no run id)."""

    kind: Literal["message.added"] = "message.added"
    data: MessageAddedData


@dataclass(kw_only=True, slots=True)
class UnknownEvent:
    """A kind this build does not know (a newer daemon wrote it): kept, not folded."""

    kind: str
    data: dict[str, Any]


Event = Annotated[
    MessageUser | RunQueued | RunStarted | MessageAssistant | ToolStarted | ToolFinished
    | RunCompleted | RunFailed | RunCancelled | RunInterrupted | RunParked | RunResumed
    | RunWaiting | ApprovalRequested | ApprovalDecided | WorkspaceSnapshot
    | WorkspaceRestored | ToolsUnavailable | ModelOutage | ModelRecovered | BudgetWarning
    | LoopDetected | Checkpoint | SessionRestored | SessionForked | SessionCompacted
    | MemoryConsolidated | SubtaskStarted | SubtaskFinished | MessageProactive
    | MessageAdded | OutputInvalid | HookVerdict,
    Field(discriminator="kind"),
]
#: The events that end a run.
RunEnd = RunCompleted | RunFailed | RunCancelled | RunInterrupted

_CLASSES: tuple[type[Any], ...] = (
    MessageUser, RunQueued, RunStarted, MessageAssistant, ToolStarted, ToolFinished,
    RunCompleted, RunFailed, RunCancelled, RunInterrupted, RunParked, RunResumed,
    RunWaiting, ApprovalRequested, ApprovalDecided, WorkspaceSnapshot, WorkspaceRestored,
    ToolsUnavailable, ModelOutage, ModelRecovered, BudgetWarning, LoopDetected,
    Checkpoint, SessionRestored, SessionForked, SessionCompacted, MemoryConsolidated,
    SubtaskStarted, SubtaskFinished, MessageProactive, MessageAdded, OutputInvalid,
    HookVerdict)
_BY_KIND: dict[str, type[Any]] = {
    cls.__dataclass_fields__["kind"].default: cls for cls in _CLASSES}
#: Every kind this build writes, in the catalogue's order.
EVENT_KINDS: tuple[str, ...] = tuple(_BY_KIND)

#: The kind that ends a run with each terminal status, and back.
_END_KIND: dict[str, str] = {"completed": "run.completed", "failed": "run.failed",
                             "cancelled": "run.cancelled", "interrupted": "run.interrupted"}
TERMINAL_KINDS: dict[str, RunStatus] = {
    kind: status for status, kind in _END_KIND.items()}  # type: ignore[misc]

event_adapter: TypeAdapter[Any] = TypeAdapter(Event)
_new = object.__new__


def parse(kind: str, data: dict[str, Any]) -> Event | UnknownEvent:
    """The typed event of a stored row. Nothing is validated or copied (old logs are
    read as written); a kind this build does not know is an :class:`UnknownEvent`."""
    cls = _BY_KIND.get(kind)
    if cls is None:
        return UnknownEvent(kind=kind, data=data)
    # What __init__ would do, at a third of its cost: every commit folds its events.
    event: Event = _new(cls)
    event.kind = kind  # type: ignore[assignment]
    event.data = data  # type: ignore[assignment]
    return event


def kind_of(cls: type[Any]) -> str:
    """The kind a catalogue class stands for (``kind_of(RunStarted) == "run.started"``)."""
    kind: str = cls.__dataclass_fields__["kind"].default
    return kind


def run_end(event: RunEnd) -> RunStatus:
    """The run status an ending event sets."""
    return TERMINAL_KINDS[event.kind]


def schema() -> dict[str, Any]:
    """The JSON schema of the catalogue: a union of ``{"kind", "data"}`` objects,
    discriminated by ``kind`` (each stored event's ``kind`` and ``data``)."""
    out: dict[str, Any] = event_adapter.json_schema(ref_template="#/$defs/{model}")
    out["title"] = "agentd event"
    out["description"] = (
        "One entry of a session's event log, as GET .../events returns it: these two "
        "keys plus seq, run_id and at. Unknown kinds may appear (a newer daemon): "
        "clients should skip them.")
    return out
