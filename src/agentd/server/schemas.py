"""Pydantic models at the API edge: request bodies, and response shapes for OpenAPI."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from agentd.settings import AgentSettings

__all__ = [
    "AgentCreate",
    "AgentList",
    "AgentOut",
    "AgentPatch",
    "ApprovalDecisionIn",
    "ApprovalDecisionOut",
    "ApprovalList",
    "ApprovalOut",
    "CheckpointIn",
    "CheckpointList",
    "CheckpointOut",
    "DecisionIn",
    "Error",
    "ErrorBody",
    "ErrorOut",
    "EventList",
    "EventOut",
    "ForkIn",
    "Health",
    "MediaPartIn",
    "MessageIn",
    "OverviewOut",
    "ReloadOut",
    "RestoreIn",
    "RestoreOut",
    "RunOut",
    "SessionList",
    "SessionOut",
    "SettingsError",
    "SettingsIn",
    "SseEvent",
    "TextPartIn",
    "UsageOut",
    "UsageRow",
    "UsageTotals",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _DocumentedAs:
    """A JSON object documented (OpenAPI) as ``model`` but only checked to be an object
    here: the runtime checks it against the model, with the daemon's limits, and names
    every bad field (``body.settings.max_steps``), whoever calls it (the API, or the
    Python API embedded); what is stored is what the client sent."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:
        return handler(source)

    def __get_pydantic_json_schema__(self, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(self.model.__pydantic_core_schema__)


#: An agent's settings: see :class:`agentd.settings.AgentSettings`.
SettingsIn = Annotated[dict[str, Any], _DocumentedAs(AgentSettings)]
_SETTINGS_DOC = ("The agent's settings (model call, kernel, run loop, budget, policy, "
                 "sandbox, MCP): every key is listed in the AgentSettings schema; an "
                 "unknown key, a wrong type or a value out of range is refused (422 "
                 "naming the field). Stored as sent; never a secret (`api_key_env` "
                 "names the variable holding a key).")


class SettingsError(BaseModel):
    field: str = Field(description="The setting, e.g. `settings.max_steps`.")
    message: str


class AgentCreate(_In):
    name: str = Field(
        min_length=1, max_length=64,
        description="Unique name used in paths: letters, digits, '_', '-', '.'.")
    model: str | None = Field(
        default=None, description="`provider:model`, e.g. `scripted`, `openai:gpt-4.1-mini`.")
    instructions: str = Field(default="", max_length=200_000)
    tools: list[str] = Field(default_factory=list, description="Names of tools to allow.")
    settings: SettingsIn = Field(default_factory=dict, description=_SETTINGS_DOC)


class AgentPatch(_In):
    model: str | None = None
    instructions: str | None = Field(default=None, max_length=200_000)
    tools: list[str] | None = None
    settings: SettingsIn | None = Field(
        default=None, description="Replaces the whole settings object. " + _SETTINGS_DOC)


class TextPartIn(_In):
    type: Literal["text"]
    text: str


class MediaPartIn(_In):
    """An image (PNG, JPEG, GIF, WebP) or a file (PDF, UTF-8 text), given by exactly
    one of ``data``, ``url`` or ``blob``."""

    type: Literal["image", "file"]
    media_type: str | None = Field(
        default=None, max_length=255,
        description="What the bytes are; checked against the bytes themselves (a "
                    "mismatch is a 422). Left out: read from the bytes.")
    data: str | None = Field(default=None, description="The bytes, base64.")
    url: str | None = Field(
        default=None, max_length=8192,
        description="An http(s) URL the daemon fetches (public hosts only, under "
                    "[attachments] fetch_hosts), or a data: URL.")
    blob: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="The SHA-256 of a blob the agent's tenant holds already (from an "
                    "earlier message's event): sent again without its bytes.")
    name: str | None = Field(default=None, max_length=255, description="A file's name.")

    @model_validator(mode="after")
    def _one_source(self) -> MediaPartIn:
        given = [k for k in ("data", "url", "blob") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of data, url or blob")
        return self


#: A message's parts, in order.
PartIn = Annotated[TextPartIn | MediaPartIn, Field(discriminator="type")]


class MessageIn(_In):
    content: Annotated[str, Field(min_length=1)] | Annotated[
        list[PartIn], Field(min_length=1, max_length=1000)] = Field(
        description="The user's message: text, or its parts in order (text, images, "
                    "files). Images and files are kept once, by reference, outside the "
                    "session's log.")
    # Strict: JSON booleans only (0 and "false" are refused, as the schema says).
    stream: bool = Field(default=False, strict=True,
                         description="Answer with Server-Sent Events.")
    wait: bool = Field(
        default=True, strict=True,
        description="With stream=false: wait for the run to finish (200) or return the "
                    "queued run at once (202).")
    mode: Literal["enqueue", "reject", "interrupt", "steer"] = Field(
        default="enqueue",
        description="What a busy session does with the message: enqueue (run it after "
                    "the active run), reject (409 session_busy), interrupt (cancel the "
                    "active run at its next step boundary, then run this one), steer "
                    "(the running run takes it in at its next step boundary; the reply "
                    "is that run).")
    priority: Literal["interactive", "background", "batch"] | None = Field(
        default=None,
        description="The run's class in the kernel's scheduler. Default: interactive "
                    "when the client waits (stream, or wait=true), else the agent's "
                    "settings.priority, else background.")
    output_schema: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema (draft 2020-12) the run's final answer must match "
                    "(over the agent's settings.output.json_schema): the run's output is "
                    "then that JSON value; an answer that does not match is sent back to "
                    "the model with its first error, then the run fails with "
                    "output_invalid. Local $refs only, at most 32 KiB and 32 levels; a "
                    "schema that is not one, or is recursive without end, is a 422.")


class DecisionIn(_In):
    action: Literal["retry", "skip", "fail"] = Field(
        description="retry: run the call again (same effect id); skip: do not run it, "
                    "use `output` as its result; fail: end the run as failed.")
    output: str | None = Field(default=None, max_length=1_000_000,
                               description="With skip: the result the model is given.")


class ApprovalDecisionIn(_In):
    action: Literal["approve", "deny", "retry", "skip", "fail"] = Field(
        description="A policy request takes approve or deny; a call of unknown outcome "
                    "takes retry, skip or fail.")
    arguments: dict[str, Any] | None = Field(
        default=None, description="With approve: run the call with these arguments "
                                  "instead of the model's.")
    remember: Literal["arguments", "tool"] | None = Field(
        default=None, description="Also add the decision to the agent's policy rules: "
                                  "for these exact arguments, or (deny only) for the "
                                  "tool.")
    reason: str | None = Field(default=None, max_length=2000,
                               description="Why (the model reads it with a denial).")
    output: str | None = Field(default=None, max_length=1_000_000,
                               description="With skip: the result the model is given.")
    by: str | None = Field(default=None, max_length=200,
                           description="Ignored (kept for older clients): the decision "
                                       "records the name of the token it came with.")


class ApprovalDecisionOut(BaseModel):
    decision: dict[str, Any] = Field(
        description="The decision as logged (the ``approval.decided`` event's data).")


class ApprovalOut(BaseModel):
    approval_id: str
    kind: Literal["policy", "unknown_outcome"]
    agent: str
    session: str
    run_id: str
    call_id: str
    name: str
    arguments: dict[str, Any]
    reason: str
    options: list[str]
    policy: dict[str, Any] | None = None
    expires_at: float | None = None
    requested_at: float
    seq: int


class ApprovalList(BaseModel):
    approvals: list[ApprovalOut]


class CheckpointIn(_In):
    name: str | None = Field(default=None, max_length=64,
                             description="Optional name, unique in the session.")


class RestoreIn(_In):
    checkpoint: str | None = Field(default=None, description="A checkpoint's id or name.")
    seq: int | None = Field(default=None, strict=True, ge=0, le=2**63 - 1,
                            description="An event seq (0: the empty session).")


class ForkIn(RestoreIn):
    key: str | None = Field(default=None, max_length=256,
                            description="The new session's key (default: generated).")


class CheckpointOut(BaseModel):
    id: str
    agent: str
    session: str
    seq: int
    name: str | None
    kind: Literal["manual", "auto", "pause", "stop", "shutdown"]
    created_at: str


class CheckpointList(BaseModel):
    checkpoints: list[CheckpointOut]


class AgentOut(BaseModel):
    name: str
    model: str
    instructions: str
    tools: list[str]
    settings: dict[str, Any] = Field(description="As stored.")
    settings_errors: list[SettingsError] = Field(
        default_factory=list,
        description="What this version refuses in the stored settings (written by an "
                    "older version, or by hand); empty when they are valid. A run of "
                    "such an agent fails (`invalid_settings`) until a PATCH fixes them.")
    state: Literal["created", "running", "paused", "stopped", "error"]
    awake: bool | None = Field(
        default=None,
        description="Only in a filtered or paged listing (GET /v1/agents with limit, "
                    "after, q or state): whether the agent is held in memory on this "
                    "node now (the rest sleep).")
    created_at: str
    updated_at: str


class AgentList(BaseModel):
    agents: list[AgentOut]
    next_after: str | None = Field(
        default=None,
        description="Only in a filtered or paged listing: give it as ``after`` for the "
                    "next page; null on the last page.")


class SessionOut(BaseModel):
    agent: str
    key: str
    last_seq: int
    tag: str
    checkpoint_seq: int
    policy: dict[str, Any] | None = Field(
        default=None, description="The session's own policy layer, if set.")
    created_at: str
    updated_at: str


class SessionList(BaseModel):
    sessions: list[SessionOut]
    next_after: str | None = Field(
        default=None,
        description="Only in a filtered or paged listing: give it as ``after`` for the "
                    "next page; null on the last page. An opaque cursor.")


class RunOut(BaseModel):
    id: str
    agent: str
    session: str
    status: Literal["queued", "running", "waiting_approval", "completed", "failed",
                    "cancelled", "interrupted"]
    input: str
    output: str | None
    error: dict[str, Any] | None
    steps: int
    usage: dict[str, int | float] = Field(
        description="Tokens (integers) and cost_usd summed over the run's model calls.")
    created_at: str
    started_at: str | None
    finished_at: str | None
    node: str | None
    priority: str = Field(description="The priority the message was sent with.")


class RestoreOut(BaseModel):
    session: SessionOut
    event: EventOut


class EventOut(BaseModel):
    seq: int
    run_id: str | None
    kind: str
    data: dict[str, Any]
    at: str


class EventList(BaseModel):
    events: list[EventOut]
    last_seq: int


class UsageTotals(BaseModel):
    calls: int = Field(description="Model calls.")
    input_tokens: int = Field(description="Prompt tokens, the cached and cache-written "
                                          "ones included.")
    output_tokens: int
    cached_tokens: int = Field(description="Of the input: read from the provider's prompt "
                                           "cache.")
    cache_write_tokens: int = Field(description="Of the input: written to the provider's "
                                                "prompt cache (Anthropic charges for them).")
    cost_usd: float = Field(description="List price in USD (0 for models not in the catalog).")


class UsageRow(UsageTotals):
    """One group's sums; only the keys grouped by (``by``) are present."""

    agent: str | None = None
    tenant: str | None = None
    model: str | None = None
    day: str | None = Field(default=None, description="YYYY-MM-DD (UTC).")
    month: str | None = Field(default=None, description="YYYY-MM (UTC).")


class UsageOut(BaseModel):
    usage: list[UsageRow]
    totals: UsageTotals
    since: str | None = Field(description="First day counted (null: from the start).")
    until: str | None = Field(description="Last day counted (null: up to today).")


class OverviewAgents(BaseModel):
    total: int
    by_state: dict[str, int] = Field(
        description="Agents per state: created, running, paused, stopped, error.")
    awake: int = Field(description="Held in memory on this node now.")
    asleep: int = Field(description="The rest (they wake on their next message).")


class OverviewRuns(BaseModel):
    """Active runs by status, every node's."""

    queued: int
    running: int
    waiting_approval: int


class OverviewNode(BaseModel):
    """What this node holds now."""

    active_runs: int
    queued_runs: int = Field(description="Runs waiting behind an active run here.")
    model_calls_queued: int = Field(description="Model calls waiting in the scheduler.")


class OverviewUsage(UsageTotals):
    day: str = Field(description="Today, YYYY-MM-DD (UTC).")


class OverviewSandbox(BaseModel):
    backend: str = Field(description="The default sandbox backend, or none.")
    workspaces_bytes: int | None = Field(
        description="Disk in use by the agents' workspaces (null until first measured).")
    workspaces_files: int | None
    snapshots_bytes: int | None = Field(
        description="Disk in use by workspace snapshots (0 when they are off).")
    measured_at: str | None = Field(
        description="When the disk figures were measured (at most every 30 s, off the "
                    "request: a request never waits for a measurement).")


class OverviewStore(BaseModel):
    dialect: str = Field(description="sqlite or postgresql.")
    synchronous: str = Field(
        description="How durable a commit is before it is acknowledged ([store] "
                    "synchronous), as the store's connection reports it: SQLite's "
                    "NORMAL or FULL, PostgreSQL's synchronous_commit.")
    bytes: int = Field(description="The database's size: SQLite's pages and write-ahead "
                                   "log; PostgreSQL's relations in the daemon's schema.")


class OverviewDoing(BaseModel):
    """What a run under way is doing now."""

    doing: Literal["working", "model_queue", "model", "model_retry", "rate_limit",
                   "model_outage", "tool", "approval"] = Field(
        description="working: between steps; model_queue: waiting for a turn in a "
                    "scheduler lane; model: a model call under way; model_retry, "
                    "rate_limit, model_outage: waiting to try a model again; tool: tool "
                    "calls under way; approval: waiting for a person's decision.")
    detail: str = Field(description="The lane (model_queue), the model (model, "
                                    "model_retry, rate_limit, model_outage), the tools "
                                    "(tool, approval); empty for working.")
    since: str | None = Field(description="Since when (ISO 8601).")


class OverviewBusyRun(BaseModel):
    """A run under way on this node."""

    run: str
    agent: str
    session: str = Field(description="The session's key.")
    status: Literal["queued", "running", "waiting_approval", "completed", "failed",
                    "cancelled", "interrupted"]
    steps: int = Field(description="Model calls it has made.")
    started_at: str | None
    waiting_for: OverviewDoing


class OverviewOut(BaseModel):
    agents: OverviewAgents
    runs: OverviewRuns
    approvals_waiting: int = Field(description="Runs waiting for a person's decision.")
    node: OverviewNode
    usage_today: OverviewUsage
    sandbox: OverviewSandbox
    store: OverviewStore
    busy: list[OverviewBusyRun] = Field(
        description="The runs under way on this node (a run on another node is in that "
                    "node's overview), each with what it is doing now: the longest under "
                    "way first, at most 500.")
    at: str = Field(description="When this was assembled.")


class TraceOut(BaseModel):
    """Spans as an OTLP/JSON ``ExportTraceServiceRequest`` (OpenTelemetry's OTLP
    specification: ids in hex, times as strings of nanoseconds): what a receiver's
    ``/v1/traces`` takes with ``Content-Type: application/json``."""

    model_config = ConfigDict(extra="allow")

    resourceSpans: list[dict[str, Any]] = Field(  # (OTLP's own name)
        description="One resource (this daemon) with one scope (agentd) and its spans.")


class ReplayOut(BaseModel):
    """A replay of a finished run (``POST /v1/runs/{id}/replay``)."""

    run_id: str = Field(description="The replay's run (in the scratch session).")
    session: str = Field(description="The scratch session's key: replay:<run id>:<n>.")
    status: str = Field(description="How the replay's run ended.")
    model_calls: int = Field(description="Calls to a real model: always 0.")
    tools_executed: int = Field(description="Tool calls executed: always 0.")
    matches: bool = Field(description="The replay's log equals the original's "
                                      "(ids, times and concurrent results' order aside).")
    first_divergence: dict[str, Any] | None = Field(
        description="Where the loop first decided differently: {step, index, expected, "
                    "got} (normalised events; null on the side that has none).")


class Health(BaseModel):
    status: Literal["ok", "stopping"]
    version: str
    store: str = Field(description="The store's dialect: sqlite or postgresql.")
    sandbox: str = Field(description="The default sandbox backend, or none.")
    sandbox_isolated: bool = Field(
        description="Whether the default backend confines commands (not the process one).")
    sandbox_uids: Literal["per-agent", "daemon"] = Field(
        description="Commands run as a uid of their agent's (daemon as root) or as the "
                    "daemon's user.")
    sandbox_memory: Literal["cgroup", "rlimit"] = Field(
        description="A sandbox's memory limit: per sandbox (cgroup) or per process.")
    sandbox_network: str = Field(
        description="confined, or why commands of the process backend share the host's "
                    "network.")
    sandboxes: dict[str, str] = Field(
        description="Each sandbox backend: ok, or why it is not available.")
    fd_limit: int = Field(description="The daemon's descriptor limit (RLIMIT_NOFILE, "
                                      "raised to its hard limit at start).")
    egress_connections: int = Field(
        description="Connections the agents hold open through the egress proxies now.")
    egress_max_connections: int = Field(
        description="The cap on them, every agent's together "
                    "([sandbox] egress_max_connections).")
    node: str
    node_lock: Literal["held", "lost"] | None = Field(
        default=None,
        description="PostgreSQL: this node's liveness lock (held for the life of its "
                    "process, so that other nodes take its runs over as soon as it dies; "
                    "lost while its connection is broken). None: SQLite, or "
                    "node_check_s = 0.")
    agents: int
    agents_awake: int
    agents_sleeping: int
    active_runs: int
    queued_runs: int
    model_calls_queued: int
    uptime_s: float
    traces: dict[str, Any] = Field(
        default_factory=dict,
        description="Trace export ([telemetry]): exporter (none or otlp) and, when on, "
                    "protocol, endpoint, exported_runs, pending_runs, overflowed_runs, failures, "
                    "last_error and retry_in_s (the pause before the next try).")


class SseEvent(BaseModel):
    """One Server-Sent Event of a stream (``text/event-stream``), as a client reads it."""

    id: str | None = Field(default=None, description="``<seq>@<session tag>``; send it "
                                                     "back as Last-Event-ID to resume.")
    event: str | None = Field(default=None, description="The event's name (docs/api.md).")
    data: str = Field(description="The event as JSON.", json_schema_extra={
        "contentMediaType": "application/json"})
    retry: int | None = None


class ErrorBody(BaseModel):
    code: str = Field(description="Stable; every code is listed in docs/api.md.")
    message: str
    retryable: bool = Field(description="Whether the same request may succeed later.")
    details: dict[str, Any] | None = Field(
        default=None, description="More about it: ``errors`` (a list of "
                                  "``{field, message}``) for invalid input.")


class Error(BaseModel):
    """Every error response has this one shape."""

    error: ErrorBody


ErrorOut = Error  # the name before the schema had Error (kept for imports)


class SnapshotChange(BaseModel):
    path: str = Field(description="Relative to the workspace.")
    change: Literal["added", "removed", "modified"]
    type: str = Field(description="file, dir or link (the new entry's; the old one's "
                                  "when removed).")
    size: int | None = Field(default=None, description="Bytes, for a file.")


class SnapshotChangesOut(BaseModel):
    ref: str
    against: str | None = Field(description="The snapshot compared with (null: an empty "
                                            "workspace).")
    changes: list[SnapshotChange] = Field(description="Paths in order, at most 1,000.")
    counts: dict[str, int] = Field(description="{added, removed, modified}: all of them.")
    truncated: bool = Field(description="More changes than listed.")


class ReloadOut(BaseModel):
    """What ``POST /v1/admin/reload`` did (docs/operations.md, "Reloading the
    configuration")."""

    applied: list[str] = Field(description=(
        "Settings the file changed that are now in effect, as paths "
        "(`providers.openai.rpm`, `tenants.acme`, `tokens`, `policy.rules`), sorted."))
    restart_required: list[str] = Field(description=(
        "Settings the file changed that take effect at the next start only: the daemon "
        "goes on with the values it started with (`port`, `database_url`, `sandbox.backend`)."))
    unchanged: bool = Field(description="True when the file holds what the daemon runs.")
    file: str = Field(description="The agentd.toml read (it may not exist: defaults and the "
                                  "environment only).")
