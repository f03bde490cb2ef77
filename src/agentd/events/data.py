"""The data of each kind of event a session's log holds (``TypedDict`` s, one per
kind, and the parts several share), the run statuses, and the agent-change frames of
the activity feed. :mod:`agentd.events` (the catalogue of kinds) re-exports all of it.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

__all__ = [
    "ACTIVE_RUN_STATES",
    "AGENT_CHANGE_KINDS",
    "CHECKPOINT_KINDS",
    "COMPACTION_STRATEGIES",
    "RUN_STATES",
    "TERMINAL_RUN_STATES",
    "WAITING_REASONS",
    "AgentChangeData",
    "AgentChangeKind",
    "ApprovalDecidedData",
    "ApprovalRequestedData",
    "ArchivedData",
    "AttemptData",
    "BudgetWarningData",
    "CheckpointData",
    "CheckpointKind",
    "ClientResultData",
    "ClientToolData",
    "CompactionStrategy",
    "ContextTrimmedData",
    "DecisionData",
    "EmptyData",
    "ErrorData",
    "HookVerdictData",
    "HookVerdictKind",
    "LoopDetectedData",
    "MemoryConsolidatedData",
    "MessageAddedData",
    "MessageAssistantData",
    "MessageProactiveData",
    "MessageUserData",
    "ModelOutageData",
    "ModelRecoveredData",
    "OutputInvalidData",
    "PartData",
    "PolicyVerdictData",
    "QueueData",
    "QuotaData",
    "RecalledData",
    "RecalledEntryData",
    "RunCancelledData",
    "RunCompletedData",
    "RunFailedData",
    "RunInterruptedData",
    "RunParkedData",
    "RunResumedData",
    "RunStatus",
    "RunWaitingData",
    "SessionCompactedData",
    "SessionForkedData",
    "SessionRestoredData",
    "StepCompactionData",
    "SubtaskFinishedData",
    "SubtaskStartedData",
    "ThinkingData",
    "ToolCallData",
    "ToolFinishedData",
    "ToolSandboxData",
    "ToolStartedData",
    "ToolsUnavailableData",
    "UsageData",
    "WaitingReason",
    "WorkspaceRestoredData",
    "WorkspaceSnapshotData",
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
    #: Written to the provider's prompt cache (when the provider counts them).
    cache_write_tokens: NotRequired[int]
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


class ClientToolData(TypedDict):
    """A tool its sender runs (``message.user``'s ``client_tools``): what the model is
    told about it."""

    name: str
    description: str
    parameters: dict[str, Any]


class PartData(TypedDict):
    """One part of a message made of parts (``message.user``'s ``parts``) or an image a
    tool returned (``tool.finished``'s ``parts``): text, or an image or file by
    reference (its bytes are a blob the store keeps once, outside the log: ``GET
    .../sessions/{key}/blobs/{blob}``)."""

    type: Literal["text", "image", "file"]
    #: A text part's text.
    text: NotRequired[str]
    #: An image's or file's blob: the SHA-256 of its bytes (hex), its media type and
    #: size in bytes.
    blob: NotRequired[str]
    media_type: NotRequired[str]
    size: NotRequired[int]
    #: An image's pixels.
    width: NotRequired[int]
    height: NotRequired[int]
    #: A file's name, as its sender gave it.
    name: NotRequired[str]
    #: A PDF's page count.
    pages: NotRequired[int]


class ClientResultData(TypedDict):
    """The sender's result of a call of one of its tools (``message.user``'s
    ``tool_results``)."""

    call_id: str
    name: str
    output: str
    is_error: NotRequired[bool]


class MessageUserData(TypedDict):
    """A message in; what started it, when not a client, is in the other keys (the
    ``origin`` of :meth:`agentd.store.Store.accept_message`)."""

    content: str
    #: Steered into a run under way (``mode: "steer"``).
    steer: NotRequired[bool]
    #: The sender takes the reply whole, not streamed (termo-agent's ``/api/send``
    #: without ``stream``): an adapter-backed agent answers it with the adapter's
    #: ``send_message``, as termo-agent does, not ``send_message_stream``.
    whole: NotRequired[bool]
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
    #: Tools the sender runs itself, offered to the model in the run this message
    #: starts (an OpenAI-compatible client's ``tools``): a call of one ends the run
    #: with ``client_tool_calls`` (``run.completed``) for the sender to run.
    client_tools: NotRequired[list[ClientToolData]]
    #: The sender's results of the calls its earlier run ended with, given to the
    #: model (before ``content``, which may then be empty) when this message's run
    #: starts.
    tool_results: NotRequired[list[ClientResultData]]
    #: The sender's instructions for the run this message starts (an OpenAI-compatible
    #: client's system prompt): added after the agent's own instructions in that
    #: run's model calls, for that run only (docs/protocols/openai.md).
    instructions: NotRequired[str]
    #: The JSON Schema the final answer of the run this message starts must match
    #: (the sender's ``output_schema``: over the agent's ``settings.output``).
    output_schema: NotRequired[dict[str, Any]]
    #: The message's parts in order, when it carries images or files (``content`` is
    #: then its text parts joined with newlines).
    parts: NotRequired[list[PartData]]
    #: A heartbeat (``settings.heartbeat``): its slot (epoch seconds, aligned to the
    #: period) and the reply that is logged but not delivered (``silent``).
    heartbeat: NotRequired[bool]
    beat_at: NotRequired[float]
    ok_token: NotRequired[str]
    #: The W3C ``traceparent`` the request that sent it carried: the run's trace
    #: continues the caller's (agentd.telemetry).
    traceparent: NotRequired[str]


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
    #: How long the search took (ms, the kernel's clock): the ``retrieval`` span's.
    duration_ms: NotRequired[float]


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
    #: The model call, from the step asking for it to its answer (queue, retries and
    #: outage included), and from the answering attempt's admission to its first
    #: chunk, in milliseconds (the kernel's clock): the ``chat`` span's times.
    duration_ms: NotRequired[float]
    ttfc_ms: NotRequired[float]
    recalled: NotRequired[RecalledData]
    #: The final reply was exactly the run's ``ok_token`` (a heartbeat with nothing to
    #: say): logged, not streamed to subscribers or delivered to channels.
    silent: NotRequired[bool]
    #: A final reply an ``output`` check denied: its text is not kept (``text`` is
    #: empty) and this says why (the run failed: ``hook.verdict`` has the verdict).
    withheld: NotRequired[str]


class ToolStartedData(TypedDict):
    call_id: str
    name: str
    arguments: dict[str, Any]
    effect_id: str
    policy: NotRequired[PolicyVerdictData]
    retry: NotRequired[bool]
    #: A call an adapter reported: its event's ``metadata`` (termo-agent's ``call_id``,
    #: ``input``, ``output``...), which termo's routes flatten into the frame.
    metadata: NotRequired[dict[str, Any]]


class ToolSandboxData(TypedDict):
    """The sandbox a tool call's command ran in."""

    backend: str
    #: Why the command was killed (``wall_time``, ``memory``...), if it was.
    killed: NotRequired[str]


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
    #: See ``ToolStartedData.metadata``.
    metadata: NotRequired[dict[str, Any]]
    sandbox: NotRequired[ToolSandboxData]
    #: Images the tool returned besides ``output`` (a screenshot), by reference.
    parts: NotRequired[list[PartData]]


class RunCompletedData(TypedDict):
    output: str
    steps: int
    usage: UsageData
    #: The final reply was silent (see ``MessageAssistantData.silent``).
    silent: NotRequired[bool]
    #: The run ended to let its sender run these calls of its ``client_tools`` (the
    #: last ``message.assistant``'s calls of them; its own tools' calls ran).
    client_tool_calls: NotRequired[list[ToolCallData]]


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


class MessageAddedData(TypedDict):
    """A message a client added to the conversation without a run (the Agent Protocol
    door's ``update_state``): the next run's model sees it where it stands in the log,
    as the user's message or as the agent's own (``role``)."""

    role: Literal["user", "assistant"]
    content: str
    #: The id the client gave the message (LangChain's message ``id``), kept so that
    #: the client reads it back as it wrote it.
    id: NotRequired[str]
    #: The name of the token that added it, when the request carried one.
    by: NotRequired[str]


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
    #: When it was taken, by the clock of the node that took it (orders two sessions'
    #: snapshots committed in the other order: the agent's workspace head).
    taken_at: NotRequired[float]


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
    #: Why the files were put back when no one asked (``followed``: the agent's last
    #: committed files were made on another node), and that node.
    reason: NotRequired[str]
    node: NotRequired[str | None]
    taken_at: NotRequired[float]


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


HookVerdictKind = Literal["allow", "deny", "modify", "pass", "redact", "taint"]


class HookVerdictData(TypedDict):
    """What one check (``settings.hooks``) decided at one point of a run."""

    check: str
    point: Literal["input", "tool_call", "tool_result", "output"]
    #: The check's kind: ``python``, ``webhook`` or ``command``.
    via: str
    verdict: HookVerdictKind
    reason: str
    #: A guardrail: its deny failed the run (``guardrail_tripped``).
    guardrail: bool
    duration_ms: float
    #: The tool call judged (``tool_call`` and ``tool_result``).
    call_id: NotRequired[str]
    name: NotRequired[str]
    #: ``modify``: the arguments the call runs with.
    arguments: NotRequired[dict[str, Any]]
    #: The check failed (timed out, raised, answered garbage, was unreachable): why;
    #: the verdict is then its ``fail`` setting's (closed: deny, open: allow/pass).
    failed: NotRequired[str]
    #: A ``model`` check: what its call used (charged with this event).
    usage: NotRequired[UsageData]


class LoopDetectedData(TypedDict):
    repeats: int
    tools: list[str]
    action: Literal["warn"]


class OutputInvalidData(TypedDict):
    """A final answer that did not match the run's output schema (the step's
    ``message.assistant`` holds it): where and what (its first schema error)."""

    step: int
    #: A JSON path into the answer (``$``: the whole answer, e.g. not JSON).
    path: str
    message: str
    #: The model is asked again (the ``repair``-th time of ``max_repairs``) with
    #: ``prompt``, which joins the conversation as a user message; absent: the run
    #: fails with ``output_invalid``.
    repair: NotRequired[int]
    max_repairs: NotRequired[int]
    prompt: NotRequired[str]


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
