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
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

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
    "CompactionStrategy",
    "ContextTrimmedData",
    "DecisionData",
    "EmptyData",
    "ErrorData",
    "Event",
    "LoopDetected",
    "LoopDetectedData",
    "MemoryConsolidated",
    "MemoryConsolidatedData",
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

# -- run statuses (defined once; the store, the runtime and the API use these) -----------

RunStatus = Literal["queued", "running", "waiting_approval", "completed", "failed",
                    "cancelled", "interrupted"]
RUN_STATES: tuple[RunStatus, ...] = ("queued", "running", "waiting_approval", "completed",
                                     "failed", "cancelled", "interrupted")
ACTIVE_RUN_STATES: frozenset[str] = frozenset({"queued", "running", "waiting_approval"})
TERMINAL_RUN_STATES: frozenset[str] = frozenset(RUN_STATES) - ACTIVE_RUN_STATES

# -- agent changes: activity-feed frames, live only ------------------------------------
# Not session events: never stored, not in :data:`Event`, :data:`EVENT_KINDS` or the
# schema of the log. The activity feed (GET /v1/events) sends one frame per change,
# named by its kind, after the change is committed.

AgentChangeKind = Literal["agent.created", "agent.updated", "agent.state", "agent.deleted"]
AGENT_CHANGE_KINDS: tuple[AgentChangeKind, ...] = (
    "agent.created", "agent.updated", "agent.state", "agent.deleted")


class AgentChangeData(TypedDict):
    """An agent-change frame's data (its kind is the frame's name): which agent, its
    state after the change (for ``agent.deleted``: its state when deleted) and its
    ``updated_at`` (ISO 8601; for ``agent.deleted``: when it was deleted). Nothing of
    its definition: a reader re-reads the agent through the API, which its token's
    scope governs. No ``kind`` and no ``session`` key: a reader that takes frames whose
    data has a ``kind`` for session events (``agentd tail --all``) passes these by."""

    agent: str
    state: str
    updated_at: str


# -- parts shared by several kinds --------------------------------------------------------


class ErrorData(TypedDict):
    """An error as every API surface shows it (``AgentdError.to_dict()``)."""

    code: str
    message: str
    retryable: bool
    details: NotRequired[dict[str, Any]]


class UsageData(TypedDict):
    """Tokens a step or a run used; ``cost_usd`` when the catalog prices the model."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: NotRequired[float]


class ToolCallData(TypedDict):
    id: str
    name: str
    arguments: dict[str, Any]
    #: Opaque provider data sent back with the call (Gemini's thought signature).
    extra: NotRequired[dict[str, Any]]


class ThinkingData(TypedDict):
    text: str
    signature: str
    redacted: str | None


class PolicyVerdictData(TypedDict):
    """The permission policy's verdict on a tool call (``Verdict.to_dict()``)."""

    action: Literal["allow", "deny", "ask"]
    rule: str
    reason: str
    categories: NotRequired[list[str]]
    findings: NotRequired[list[str]]
    tainted: NotRequired[bool]


#: Where a model call waited in the kernel's scheduler (``class``: its priority class;
#: a keyword, hence the functional form).
QueueData = TypedDict("QueueData", {
    "class": str, "lane": NotRequired[str], "position": NotRequired[int],
    "wait_ms": float})


class AttemptData(TypedDict):
    """A failed try before the step's answer (``code: "breaker_open"``: skipped)."""

    model: str
    code: str
    status: NotRequired[int]
    message: NotRequired[str]
    retry_in_s: NotRequired[float]


class ContextTrimmedData(TypedDict):
    dropped_messages: int
    estimated_tokens: int


class StepCompactionData(TypedDict):
    """What automatic compaction did before a step's model call: ``compacted`` (the
    ``session.compacted`` event's ``seq``), or ``failed`` / ``nothing`` (the context
    was trimmed instead, when it had to be: ``context_trimmed``)."""

    status: Literal["compacted", "failed", "nothing"]
    seq: NotRequired[int]
    error: NotRequired[ErrorData]


class QuotaData(TypedDict):
    bytes: int
    max_bytes: int
    message: str


class ArchivedData(TypedDict):
    from_seq: int
    to_seq: int


# -- the data of each kind -----------------------------------------------------------------


class MessageUserData(TypedDict):
    """A message in; what started it, when not a client, is in the other keys (the
    ``origin`` of :meth:`agentd.store.Store.accept_message`)."""

    content: str
    #: Steered into a run under way (``mode: "steer"``).
    steer: NotRequired[bool]
    #: A schedule's fire: the schedule and the fire time (epoch seconds, UTC) it ran for.
    schedule_id: NotRequired[str]
    fire_at: NotRequired[float]
    #: A subtask's or another agent's call (``agentd.autonomy``): the run that started
    #: it, the subtask's id, how deep it is nested (1: a child of a client's run), the
    #: agents of the chain from the first run's to this one's, and the agent whose
    #: budget and tenant pay for its model calls (when not its own).
    parent_run: NotRequired[str]
    subtask_id: NotRequired[str]
    depth: NotRequired[int]
    chain: NotRequired[list[str]]
    payer: NotRequired[str]
    #: Why the message is untrusted (its sender's session was tainted): the session
    #: is tainted from here on.
    tainted: NotRequired[str]
    #: A heartbeat (``settings.heartbeat``): its slot (epoch seconds, aligned to the
    #: period) and the reply that is logged but not delivered (``silent``).
    heartbeat: NotRequired[bool]
    beat_at: NotRequired[float]
    ok_token: NotRequired[str]


class RecalledEntryData(TypedDict):
    id: str
    score: float
    tainted: bool


class RecalledData(TypedDict):
    """What auto-recall put into a model call's context (``settings.memory``)."""

    query: str
    entries: list[RecalledEntryData]
    tokens: int
    #: Why the recalled text is untrusted (an entry written by a tainted session):
    #: the session is tainted from this step on.
    tainted: NotRequired[str]
    #: The search failed: the call went on without recalled entries.
    error: NotRequired[str]


class MessageAssistantData(TypedDict):
    text: str
    tool_calls: list[ToolCallData]
    usage: UsageData | None
    finish_reason: str
    model: str | None
    step: int
    thinking: NotRequired[list[ThinkingData]]
    context_trimmed: NotRequired[ContextTrimmedData]
    compaction: NotRequired[StepCompactionData]
    continuation: NotRequired[int]
    queue: NotRequired[QueueData]
    attempts: NotRequired[list[AttemptData]]
    fallback: NotRequired[bool]
    stream_resets: NotRequired[int]
    outage_s: NotRequired[float]
    recalled: NotRequired[RecalledData]
    #: The final reply was exactly the run's ``ok_token`` (a heartbeat with nothing to
    #: say): logged, not streamed to subscribers or delivered to channels.
    silent: NotRequired[bool]


class ToolStartedData(TypedDict):
    call_id: str
    name: str
    arguments: dict[str, Any]
    effect_id: str
    policy: NotRequired[PolicyVerdictData]
    retry: NotRequired[bool]


class ToolFinishedData(TypedDict):
    call_id: str
    name: str
    output: str
    is_error: bool
    duration_ms: float
    tainted: NotRequired[str]
    denied: NotRequired[bool]
    policy: NotRequired[PolicyVerdictData]
    skipped: NotRequired[bool]


class RunCompletedData(TypedDict):
    output: str
    steps: int
    usage: UsageData
    #: The final reply was silent (see ``MessageAssistantData.silent``).
    silent: NotRequired[bool]


class MessageProactiveData(TypedDict):
    """A message the agent posted into this session from another of its own sessions
    (the ``message_post`` tool); the model sees it here as its own message."""

    content: str
    #: The key of the session it was posted from, and the run that posted it.
    from_session: str
    from_run: str
    #: Why the content is untrusted (the posting session had read content from
    #: outside): this session is tainted from here on.
    tainted: NotRequired[str]


class RunFailedData(TypedDict):
    error: ErrorData
    #: Absent when the run failed before it started (its model could not be built).
    steps: NotRequired[int]
    usage: NotRequired[UsageData]


class RunCancelledData(TypedDict):
    reason: str
    steps: NotRequired[int]
    usage: NotRequired[UsageData]


class RunInterruptedData(TypedDict):
    reason: str
    effect_id: str
    steps: int
    usage: UsageData


class RunParkedData(TypedDict):
    reason: str
    steps: int


class RunResumedData(TypedDict):
    reason: str
    previous_owner: str | None
    steps: int


WaitingReason = Literal["queued", "model_retry", "model_outage", "rate_limit", "approval"]
WAITING_REASONS: tuple[WaitingReason, ...] = (
    "queued", "model_retry", "model_outage", "rate_limit", "approval")


class RunWaitingData(TypedDict):
    """What a run waits for, written when that changes (not at every retry)."""

    reason: WaitingReason
    #: The model (``provider:model``) waited on, if a model is the cause.
    model: str | None
    #: Short human text: why.
    cause: str | None
    #: Seconds until the next try, when known.
    retry_in_s: float | None


class ApprovalRequestedData(TypedDict):
    approval_id: str
    kind: Literal["policy", "unknown_outcome"]
    effect_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]
    reason: str
    options: list[str]
    policy: NotRequired[PolicyVerdictData]
    expires_at: NotRequired[float]


class DecisionData(TypedDict):
    """What a person decided (``by``: their token's name, ``"timeout"`` on expiry)."""

    action: str
    output: NotRequired[str | None]
    arguments: NotRequired[dict[str, Any]]
    reason: NotRequired[str]
    by: NotRequired[str]


class ApprovalDecidedData(DecisionData):
    #: None for a request logged before approvals had ids.
    approval_id: str | None
    effect_id: str


class WorkspaceSnapshotData(TypedDict):
    """The files at this point (``ref``), or ``ref: null`` with ``error``."""

    ref: str | None
    files: NotRequired[int]
    bytes: NotRequired[int]
    hashed_bytes: NotRequired[int]
    new_bytes: NotRequired[int]
    ms: NotRequired[float]
    error: NotRequired[ErrorData]
    tainted: NotRequired[str]
    quota_exceeded: NotRequired[QuotaData]
    skipped: NotRequired[list[str]]
    xattrs: NotRequired[list[str]]


class WorkspaceRestoredData(TypedDict):
    seq: int
    ref: str | None
    written: NotRequired[int]
    removed: NotRequired[int]
    unchanged: NotRequired[int]
    ms: NotRequired[float]
    shared: NotRequired[str]
    note: NotRequired[str]
    error: NotRequired[ErrorData]


class ToolsUnavailableData(TypedDict):
    errors: list[str]


class ModelOutageData(TypedDict):
    models: list[str]
    error: ErrorData
    retry_in_s: float


class ModelRecoveredData(TypedDict):
    model: str
    parked_s: float


class BudgetWarningData(TypedDict):
    scope: Literal["run", "agent", "tenant"]
    name: str
    period: Literal["run", "day", "month"]
    metric: Literal["tokens", "cost_usd", "steps"]
    limit: float
    used: float
    threshold: float


class LoopDetectedData(TypedDict):
    repeats: int
    tools: list[str]
    action: Literal["warn"]


CheckpointKind = Literal["manual", "auto", "pause", "stop", "shutdown"]
CHECKPOINT_KINDS: tuple[CheckpointKind, ...] = ("manual", "auto", "pause", "stop", "shutdown")


class CheckpointData(TypedDict):
    id: str
    name: str | None
    kind: CheckpointKind


class SessionRestoredData(TypedDict):
    to_seq: int
    checkpoint: str | None
    archived: ArchivedData


class SessionForkedData(TypedDict):
    agent: str
    session: str
    seq: int
    checkpoint: str | None
    copied_events: int


CompactionStrategy = Literal["summarize", "clear_tool_results"]
COMPACTION_STRATEGIES: tuple[CompactionStrategy, ...] = ("summarize", "clear_tool_results")


class SessionCompactedData(TypedDict):
    """Older turns replaced in the model's view (the log keeps them): the events
    ``from_seq``..``to_seq`` (inclusive) by ``summary`` (``summarize``), or their tool
    results by a placeholder (``clear_tool_results``)."""

    from_seq: int
    to_seq: int
    strategy: CompactionStrategy
    summary: NotRequired[str]
    #: The model that wrote the summary (None: no model call).
    model: str | None
    usage: UsageData | None
    #: Messages replaced (summarize) or tool results cleared.
    messages: int
    auto: bool
    estimated_tokens_before: int
    estimated_tokens_after: int
    by: Literal["run", "api"]


class MemoryConsolidatedData(TypedDict):
    """The events ``from_seq``..``to_seq`` (inclusive) turned into long-term memory
    entries (their source seq is this event's) and appends to memory blocks."""

    from_seq: int
    to_seq: int
    model: str
    usage: UsageData | None
    #: Memories kept (written, or found stored already: the same content).
    entries: int
    #: Labels of the blocks appended to.
    blocks: list[str]
    auto: bool
    #: What the model answered that was not used (a block it may not write, ...).
    skipped: NotRequired[list[str]]


class SubtaskStartedData(TypedDict):
    """A child run started by a run of this session (``agentd.autonomy``)."""

    subtask_id: str
    #: ``subtask`` (``subtask_start``) or ``call`` (``agent_call``).
    type: Literal["subtask", "call"]
    #: The child's agent, session key and run.
    agent: str
    session: str
    run_id: str
    title: str
    depth: int


class SubtaskFinishedData(TypedDict):
    """A child run ended (logged once, in the parent's session)."""

    subtask_id: str
    type: Literal["subtask", "call"]
    agent: str
    run_id: str
    #: The child run's status (``gone``: its session was deleted before it ended).
    status: str
    usage: UsageData | None


class EmptyData(TypedDict):
    pass


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
class LoopDetected:
    """The same tool calls got the same results several steps in a row."""

    kind: Literal["loop.detected"] = "loop.detected"
    data: LoopDetectedData


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
    | MemoryConsolidated | SubtaskStarted | SubtaskFinished | MessageProactive,
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
    SubtaskStarted, SubtaskFinished, MessageProactive)
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
