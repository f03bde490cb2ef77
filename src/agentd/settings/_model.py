"""The model of an agent's ``settings``, one area per class.

The wire and stored form is one flat JSON object (``{"max_steps": 8, "budget": {...}}``),
as it has always been; the model is composed to match it:

- the flat areas are mixins whose fields sit at the top level: the model call
  (:class:`ModelArea`, on :class:`~agentd.llm.settings.ModelSettings`), the kernel
  (:class:`KernelSettings`) and the run loop (:class:`RunSettings`);
- the nested areas are one key each, holding the model of the layer that owns it:
  ``budget`` (``agentd.config.Budget``), ``policy``
  (``agentd.security.policy.PolicyConfig``), ``sandbox`` (``agentd.config.AgentSandbox``),
  ``mcp`` (``agentd.tools.mcp.MCPServer``).

Adding an area (memory, schedules, heartbeat, ...): define its model in the layer that
uses it (``extra="forbid"``, a range on every number, Literals for choices, a default
for every field), add ONE key for it to :class:`AgentSettings` under "Areas to come",
add a row to the agent settings table in docs/configuration.md (a test compares the
table with this model), and read it typed in the runtime (``settings.memory.x``), never
with ``settings.get``. New keys go in a nested area, not at the top level.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from agentd.llm.settings import ModelSettings
from agentd.security.policy import PolicyConfig
from agentd.settings.budget import Budget
from agentd.settings.channels import ChannelSettings
from agentd.settings.delegation import DelegationSettings
from agentd.settings.heartbeat import HeartbeatSettings
from agentd.settings.hooks import MAX_CHECKS, HookCheck, HookSettings
from agentd.settings.memory import MemorySettings
from agentd.settings.output import OutputSettings
from agentd.settings.sandbox import AgentSandbox
from agentd.settings.schedules import ScheduleSettings
from agentd.settings.skills import SkillSettings
from agentd.settings.teams import TeamSettings
from agentd.tools.mcp_config import MCPServer
from agentd.tools.search_config import WebSearchSettings
from agentd.tools.secret_refs import HEADER_NAME, HOST_PATTERN
from agentd.trust import MODEL_SPEC

__all__ = ["MAX_FALLBACKS", "MAX_MCP_SERVERS", "AgentSettings", "FallbackModel",
           "KernelSettings", "LoopGuard", "ModelArea", "RunSettings"]

MAX_FALLBACKS = 8
MAX_MCP_SERVERS = 16


class _Area(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FallbackModel(_Area):
    """A model tried when the ones before it are unavailable or failed for good."""

    model: Annotated[str, MODEL_SPEC] = Field(
                       min_length=1, max_length=200,
                       description="`provider:model` (must be in the model catalog when "
                                   "the catalog covers its provider).")
    settings: ModelSettings | None = Field(
        None, description="Its own model settings. Absent when the fallback was given "
                          "as a string: it then shares the agent's (all of them for the "
                          "primary's provider, else only max_tokens, temperature, "
                          "timeout_s and max_retries).")

    @property
    def shares_settings(self) -> bool:
        return self.settings is None


def _fallback(value: Any) -> Any:
    # "provider:model" is short for an entry that shares the agent's settings; an
    # object entry without settings has none of its own ({}), as it always had.
    if isinstance(value, str):
        return {"model": value}
    if isinstance(value, dict) and "settings" not in value:
        return {**value, "settings": {}}
    return value


Fallback = Annotated[FallbackModel, BeforeValidator(
    _fallback, json_schema_input_type=str | FallbackModel)]


class ModelArea(ModelSettings):
    """The model call: the primary model's settings, and the models to fall back to."""

    fallbacks: list[Fallback] = Field(
        default_factory=list, max_length=MAX_FALLBACKS,
        description='Models tried in order when the primary is unavailable (breaker '
                    'open) or failed for good: each `"provider:model"` or `{"model": '
                    '"provider:model", "settings": {...}}`. A string fallback of the '
                    "primary's provider shares the agent's settings; of another provider "
                    "it takes only `max_tokens`, `temperature`, `timeout_s`, "
                    "`max_retries`. Each is resolved when the agent is saved (a missing "
                    "key is refused then), and a model of a provider the catalog covers "
                    "must be in the catalog (a typo would otherwise show only during an "
                    "outage).")


class KernelSettings(_Area):
    """How the kernel schedules this agent's model calls, and what an outage does."""

    #: ``agentd.config.PRIORITIES`` (a test keeps them equal).
    priority: Literal["interactive", "background", "batch"] = Field(
        "background", description="The scheduler class of this agent's runs when the "
                                  "client does not wait (a waiting client's are "
                                  "`interactive`).")
    tenant: str = Field("default", min_length=1, max_length=64,
                        description="The tenant the agent belongs to: fair share and "
                                    "budgets per tenant (the daemon's `tenants`).")
    weight: float = Field(1.0, gt=0, le=1000, allow_inf_nan=False,
                          description="This agent's share of its tenant's share in the "
                                      "scheduler.")
    on_outage: Literal["wait", "fail"] = Field(
        "wait", description="`wait`: when every model is unavailable the run parks "
                            "(`model.outage`) until one answers (`model.recovered`); "
                            "`fail`: it fails with the last error.")
    outage_timeout_s: float = Field(
        0.0, ge=0, le=365 * 86_400, allow_inf_nan=False,
        description="How long a run may stay parked before it fails with "
                    "`model_outage` (0: no limit).")
    max_continuations: int = Field(
        2, ge=0, le=20, description="Answers cut off by the output limit "
                                    "(`finish_reason: length`) that are continued: the "
                                    "model is asked to go on and the run's output is the "
                                    "pieces joined.")


class LoopGuard(_Area):
    """The same tool calls getting the same results ``repeats`` steps in a row."""

    repeats: int = Field(5, ge=2, le=100, description="Steps in a row that make a loop.")
    action: Literal["warn", "stop"] = Field(
        "warn", description="`warn`: a `loop.detected` event per streak; `stop`: the "
                            "run fails with `loop_detected`.")


class RunSettings(_Area):
    """The agent loop of one run."""

    max_steps: int | None = Field(
        None, ge=1, le=1000,
        description="Model calls per run before it fails with `max_steps`. Default: "
                    "the daemon's `max_steps`.")
    loop_guard: LoopGuard = Field(
        default_factory=LoopGuard,
        description='`{"repeats": N, "action": "warn" or "stop"}`: the same tool calls '
                    '(names and arguments) getting the same results N steps in a row is '
                    'a loop; `warn` writes one `loop.detected` event per streak, `stop` '
                    'fails the run with `loop_detected`.')
    on_unknown_outcome: Literal["ask", "interrupt"] = Field(
        "ask", description="After a crash cut off a non-idempotent tool call: `ask` (the "
                           "run waits for a decision) or `interrupt` (it ends "
                           "`interrupted`).")


class AgentSettings(RunSettings, KernelSettings, ModelArea):  # (fields: model first)
    """An agent's ``settings``: the single source of their types, ranges and defaults.

    Stored as the client sent it (a plain JSON object); read through this model.
    Secrets are refused: name an environment variable in ``api_key_env`` instead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="AgentSettings")

    budget: Budget = Field(
        default_factory=Budget,
        description='`{"run": {"tokens", "cost_usd", "steps"}, "day": {"tokens", '
                    '"cost_usd"}, "month": {...}, "warn_at": [0.8]}`: limits per run and '
                    'per agent per UTC day and month; every value > 0.')
    policy: PolicyConfig = Field(
        default_factory=PolicyConfig,
        description='The agent\'s layer of the tool policy: `{"rules": [...], "network": '
                    'true or ["host pattern", ...], "tainted": "ask" or "deny", '
                    '"approval_timeout_s": N}` (concepts.md, policy); `remember` '
                    'decisions add rules here.')
    sandbox: AgentSandbox = Field(
        default_factory=AgentSandbox,
        description='`{"backend": "bubblewrap", "limits": {"wall_s": 30, ...}, '
                    '"persistent_shell": false, "workspace_max_mb": 500, '
                    '"snapshot_budget_mb": 2000}`: the backend of the agent\'s commands '
                    '(refused if this daemon cannot run it; one weaker than the '
                    'daemon\'s needs an operator token), their limits (above the daemon\'s '
                    '`[sandbox.limits]` needs an operator token, above `max_limits` is '
                    'refused), the workspace quota and snapshot budget (above the '
                    'daemon\'s: an operator token).')
    mcp: list[MCPServer] = Field(
        default_factory=list, max_length=MAX_MCP_SERVERS,
        description='MCP servers whose tools the agent gets: `{"name", "command": [...], '
                    '"env", "cwd"}` (stdio) or `{"name", "url", "headers"}` (streamable '
                    'HTTP), plus `tools` (a subset), `trusted` (default false: results '
                    'taint), `timeout_s` (per call, default 60). A stdio command off the '
                    'daemon\'s `mcp_commands`, or a URL off its `mcp_urls`, needs an '
                    'operator token. A value of `env` or `headers` may be `secret:NAME` '
                    '(or `Bearer secret:NAME`): a named secret of the agent, given to the '
                    'server only (security.md, secrets). `oauth`: the server takes OAuth '
                    'tokens a person grants once ([MCP servers with OAuth]'
                    '(#mcp-servers-with-oauth)).')
    http_headers: dict[Annotated[str, Field(min_length=1, max_length=253)],
                       dict[Annotated[str, Field(pattern=HEADER_NAME)],
                            Annotated[str, Field(max_length=8192)]]] = Field(
        default_factory=dict, max_length=50,
        description='Headers `http_fetch` adds to its requests to a host: `{"api.github.com": '
                    '{"Authorization": "Bearer secret:GH_TOKEN"}}`; a key is a host name '
                    'or `*.example.com`. Only once the request passed the agent\'s network '
                    'grant, never on a redirect to another host; `secret:NAME` is replaced '
                    'there by a named secret of the agent (security.md, secrets), the model '
                    'sees neither.')

    memory: MemorySettings = Field(
        default_factory=MemorySettings,
        description='Long-term memory (`agentd.settings.memory`): `{"namespaces": [...], '
                    '"vector_weight": 0.4, "neighbour_weight": 0.2, "auto_recall": false, '
                    '"recall_limit": 5, '
                    '"recall_tokens": 800, "recall_min_score": 0, "compaction": {"auto", '
                    '"threshold", "strategy", "model", "keep_turns", '
                    '"max_summary_tokens"}, "consolidation": {"auto", "model", '
                    '"max_entries"}}`.')

    delegation: DelegationSettings = Field(
        default_factory=DelegationSettings,
        description='Subtasks and calls to other agents (`agentd.settings.'
                    'delegation`): `{"subtasks": {"max_depth": 2, '
                    '"max_children": 20, "max_concurrent": 10, "max_wait_s": 120, '
                    '"max_instructions_chars": 32000}, "calls": {"allow": [], '
                    '"accept_from": null, "accept_other_tenants": false, "max_depth": 3, '
                    '"timeout_s": 120, "max_message_chars": 32000}}`; `calls.allow` '
                    '(default none) also governs subtasks run by another agent.')
    skills: SkillSettings = Field(
        default_factory=SkillSettings,
        description='Skills (`agentd.skills`): `{"enabled": ["skill-name", ...]}`, '
                    'installed skills whose names and descriptions are in every run\'s '
                    'instructions (at most 64; an unknown name is refused when saved).')
    schedules: ScheduleSettings = Field(
        default_factory=ScheduleSettings,
        description='Schedules (`agentd.settings.schedules`): `{"max_per_agent": '
                    '50, "min_interval_s": 60, "allow_from_schedule": false, '
                    '"tool_max_per_agent": 10, "pause_after_failures": 5, "backoff_s": 60, '
                    '"backoff_max_s": 3600, "overlap": "skip", "missed": "once", '
                    '"catchup_s": 86400, "grace_s": 60}`.')
    heartbeat: HeartbeatSettings = Field(
        default_factory=HeartbeatSettings,
        description='A periodic autonomous turn: `{"enabled": false, "every_s": 1800, '
                    '"document"?, "file": "HEARTBEAT.md", "session": "heartbeat", '
                    '"active_hours"?: {"start", "end", "timezone"}, "ok_token": '
                    '"HEARTBEAT_OK", "max_document_bytes": 16384}`.')

    team: TeamSettings | None = Field(
        None,
        description='Makes the agent a team (`agentd.settings.teams`; concepts.md, '
                    'teams): `{"pattern": "pipeline" or "parallel" or "router" or "loop", '
                    '"members": [...], "join"?, "router"?, "default"?, "generator"?, '
                    '"critic"?, "exit_token": "APPROVED", "max_rounds": 3, '
                    '"on_max_rounds": "complete", "step_timeout_s": 3600, '
                    '"max_input_chars": 64000}`. Its runs call no model: each member step '
                    'is a child run. Members must exist, share the tenant, accept calls '
                    'from the team, and no team may contain itself (checked when saved).')

    channels: ChannelSettings = Field(
        default_factory=ChannelSettings,
        description='Channels (`agentd.channels`; docs/channels.md): `{"telegram": '
                    '{"bot_token_env", "secret_token_env", "allowed_chats": null, '
                    '"typing": true, "max_file_mb": 20, "deliver_failures": true}}`; the '
                    'variables\' names must start with the daemon\'s `[channels.telegram] '
                    'env_prefix`.')

    web_search: WebSearchSettings = Field(
        default_factory=WebSearchSettings,
        description='The `web_search` tool (docs/tools.md): `{"provider": "NAME"}`, one '
                    'of the daemon\'s `[web_search.providers]` (default: its `default`, '
                    'or its only one). The provider\'s URL and key are the operator\'s '
                    'alone.')
    output: OutputSettings = Field(
        default_factory=OutputSettings,
        description='Structured output (`agentd.settings.output`): `{"json_schema": '
                    '{...} or null, "max_repairs": null}`: every run\'s final answer is '
                    'one JSON value matching the schema (asked for natively where the '
                    'model supports it); an answer that does not is sent back with its '
                    'first schema error up to `max_repairs` times (default: the '
                    'daemon\'s `output_max_repairs`), then the run fails with '
                    '`output_invalid`.')
    hooks: HookSettings = Field(
        default_factory=HookSettings,
        description='Checks that decide at four points of a run (docs/hooks.md): '
                    '`{"checks": [{"name", "point": "input" or "tool_call" or '
                    '"tool_result" or "output", "kind": "python" or "webhook" or '
                    '"command" or "model", "callable" or "url" or "command" or "rule", '
                    '"guardrail": false, '
                    '"tools": [], "timeout_s": 10, "fail": "closed"}]}`; a `python` '
                    'callable must match the daemon\'s `[hooks] allow`, a `webhook` URL '
                    'its `[hooks] allow_hosts`, a `command` its `[hooks] commands`; a '
                    '`model` rule is judged by the agent\'s own models.')

    guardrails: list[HookCheck] = Field(
        default_factory=list, max_length=MAX_CHECKS,
        description='Guardrails: checks whose deny fails the run with '
                    '`guardrail_tripped` (docs/hooks.md, "Guardrails"), in the shape of '
                    '`hooks.checks` (`"guardrail"` is true whatever it says); they run '
                    'after the hooks\' checks at their points, and the names of both '
                    f'lists are one namespace (at most {MAX_CHECKS} checks in all).')

    # -- Areas to come (schedules, heartbeat, ...): one key each, e.g.
    #    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    #    See this module's docstring for the pattern.

    @field_validator("http_headers")
    @classmethod
    def _header_hosts(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for host, headers in value.items():
            if not HOST_PATTERN.match(host):
                raise ValueError(f"{host[:80]!r} is not a host name or *.domain pattern")
            if len(headers) > 20:
                raise ValueError(f"{host}: at most 20 headers")
            if any(c in v for v in headers.values() for c in "\r\n\x00"):
                raise ValueError(f"{host}: a header value holds a line break or NUL")
        return value

    @model_validator(mode="after")
    def _one_namespace(self) -> AgentSettings:
        """The hooks' checks and the guardrails are one list to the run loop
        (:attr:`all_checks`): their names are one namespace, 32 checks in all."""
        if not self.guardrails:
            return self
        names = [c.name for c in self.hooks.checks]
        mine = [g.name for g in self.guardrails]
        both = sorted(set(mine) & set(names))
        if both:
            raise ValueError(f"guardrails: {both[0]!r} names a check hooks.checks names "
                             "too (one namespace for both)")
        if len(set(mine)) != len(mine):
            raise ValueError("guardrails: names a check twice")
        if len(names) + len(mine) > MAX_CHECKS:
            raise ValueError(f"guardrails: at most {MAX_CHECKS} checks in all, with "
                             "hooks.checks")
        return self

    @cached_property
    def all_checks(self) -> HookSettings:
        """Every check the run loop runs: the hooks' own, then the guardrails, each a
        guardrail whatever its ``guardrail`` says (checked when the settings were made:
        ``_one_namespace``)."""
        if not self.guardrails:
            return self.hooks
        return HookSettings.model_construct(checks=[
            *self.hooks.checks,
            *(g if g.guardrail else g.model_copy(update={"guardrail": True})
              for g in self.guardrails)])

    @field_validator("mcp")
    @classmethod
    def _unique_names(cls, value: list[MCPServer]) -> list[MCPServer]:
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError("names a server twice")
        return value
