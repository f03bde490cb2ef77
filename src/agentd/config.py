"""Settings: built-in defaults < ``$AGENTD_HOME/agentd.toml`` < ``.env`` < ``AGENTD_*`` env.

Nothing is read at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agentd.llm.registry import PROVIDERS, PUBLIC_PROVIDERS, ModelEndpoint, endpoint_providers
from agentd.media.config import AttachmentsConfig
from agentd.security.access import TokenScope
from agentd.security.endpoints import endpoint
from agentd.security.policy import PolicyConfig
from agentd.security.resource import ResourceConfig
from agentd.settings.budget import Budget, Limit, RunLimit
from agentd.settings.channels import ChannelsConfig
from agentd.settings.memory import MemoryConfig
from agentd.settings.sandbox import SANDBOX_BACKENDS, AgentSandbox, SandboxLimits
from agentd.settings.store import (
    StoreConfig,
    asked_level,
    check_level,
    deprecations,
    store_level,
)
from agentd.tools.search_config import WebSearchConfig

if TYPE_CHECKING:
    from agentd.store import StoreOptions

__all__ = [
    "CHROMIUM_EXECUTABLES",
    "DEFAULT_PORT",
    "PRIORITIES",
    "SANDBOX_BACKENDS",
    "A2AConfig",
    "AdaptersConfig",
    "AgentSandbox",
    "AuditConfig",
    "BrowserConfig",
    "Budget",
    "ConfigFileError",
    "EvalsConfig",
    "HooksConfig",
    "Limit",
    "ProviderLimits",
    "RunLimit",
    "SandboxConfig",
    "SandboxLimits",
    "Settings",
    "StoreConfig",
    "TenantConfig",
    "TenantQuotas",
    "TermoConfig",
    "WebhooksConfig",
    "default_chromium",
    "default_home",
    "load_settings",
    "settings_problem",
]

DEFAULT_PORT = 8721


#: The kernel's priority classes, most urgent first.
PRIORITIES = ("interactive", "background", "batch")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class A2AConfig(_Strict):
    """The A2A door's public card and the ``a2a_call`` tool's credentials (``[a2a]``
    in agentd.toml).

    ``remote_tokens`` maps a remote A2A endpoint to the name of an environment variable
    of the daemon holding the bearer token that endpoint takes. An entry is exactly one
    endpoint, scheme, host and port (``HOST`` is ``https://HOST:443``, ``HOST:PORT``
    https on that port, ``http://HOST:PORT`` plain http: see
    :mod:`agentd.security.endpoints`); the keys are kept in the canonical form
    ``scheme://host:port``. The tool sends a token only to the endpoint it is listed
    for; the model never sees it and cannot name a variable (a token in a tool
    argument would sit in the session's log and come from the model's context).
    """

    remote_tokens: dict[str, str] = Field(default_factory=dict, max_length=1000)
    #: The agent whose card the daemon serves at the host's own
    #: ``/.well-known/agent-card.json``, where A2A clients and the A2A TCK look for one
    #: (a host is one agent to them). That card is public, like ``/health``: it names
    #: the agent and its endpoint, nothing of its instructions, tools or settings, and
    #: the endpoint still takes a token. None (the default): no card there (404).
    public_card: str | None = Field(default=None,
                                    pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

    @field_validator("remote_tokens")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for entry, variable in value.items():
            key = endpoint(entry)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", variable):
                raise ValueError(f"{variable!r} is not an environment variable's name")
            if key in out:
                raise ValueError(f"{entry!r} names the endpoint {key} of another entry: "
                                 "list each endpoint once")
            out[key] = variable
        return out


class MCPConfig(_Strict):
    """The daemon's MCP door (``[mcp]``): ``oauth`` makes it an OAuth 2.0 protected
    resource (:class:`agentd.security.resource.ResourceConfig`: docs/protocols/mcp.md,
    "OAuth")."""

    oauth: ResourceConfig | None = None


class AdaptersConfig(_Strict):
    """Agents backed by a framework adapter (``model = "adapter:MODULE:OBJECT"``).

    Which Python objects may be loaded is the operator's decision: an agent may name
    only an object matched by ``allow`` (``"pkg.mod:Object"``, ``"pkg.mod:*"``,
    ``"pkg.*"``; shell-style patterns over ``MODULE:OBJECT``). Empty: none.
    """

    allow: list[str] = Field(default_factory=list)
    #: An adapter's turn (its ``send_message`` / ``send_message_stream``) ends within
    #: this many seconds or the run fails ``adapter_timeout``; an agent's
    #: ``settings.timeout_s`` overrides it. ``initialize`` has the same bound.
    timeout_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)


class HooksConfig(_Strict):
    """What agents' checks (``settings.hooks``; docs/hooks.md) may name: the operator's
    decision, like adapters and webhooks.

    ``allow``: the Python callables a ``python`` check may name (shell-style patterns
    over ``MODULE:NAME``, as ``[adapters] allow``); empty: none. ``allow_hosts`` /
    ``allow_http``: the hosts a ``webhook`` check may POST to (the rules of ``[webhooks]
    allow_hosts``: a wildcard reaches public addresses only, the daemon's own port
    never); empty: none. Requests are signed (Standard Webhooks headers) with the value
    of the environment variable ``secret_env``; unset: webhook checks fail (closed
    unless the check says ``open``). ``commands``: the argv prefixes a ``command`` check
    may start with (each entry split like a shell line: ``"python3 /opt/checks/x.py"``);
    empty: none (a check's command runs in the agent's sandbox, but outside the
    policy's shell rules: the operator says which).
    """

    allow: list[str] = Field(default_factory=list, max_length=1000)
    commands: list[str] = Field(default_factory=list, max_length=1000)
    allow_hosts: list[str] = Field(default_factory=list, max_length=1000)
    allow_http: list[str] = Field(default_factory=list, max_length=1000)
    secret_env: str = Field(default="AGENTD_HOOKS_SECRET", min_length=1, max_length=200)


class TermoConfig(_Strict):
    """termo-agent's HTTP routes (``/api/send``, ...) for one agent: adapter-backed
    (``agentd serve --adapter``) or a native agentd agent (``agentd serve --termo``;
    agentd.protocols.termo, docs/termo.md).

    Naming an adapter here (or on the command line) allows exactly that object: the
    operator named it, so ``[adapters] allow`` need not list it.
    """

    #: ``MODULE:OBJECT`` (or ``MODULE``, meaning ``MODULE:Adapter`` as termo-agent
    #: loads it); None: no adapter (the routes serve a native agent if ``enabled``).
    adapter: str | None = None
    #: Serve the routes for ``agent`` as the agentd agent it is (its own model, tools
    #: and settings; created with the defaults if missing). An ``adapter`` implies it.
    enabled: bool = False
    #: The agent serving them (created, or pointed at the adapter, at start-up).
    agent: str = "agent"
    #: One more bearer token accepted on the termo routes only (termo-agent's
    #: ``TERMO_TOKEN``), beside the daemon's tokens.
    token: str | None = Field(default=None, min_length=1)
    #: Passed to the adapter's ``initialize(config_path=...)`` (termo-agent's
    #: ``--config``); None: no path.
    config: str | None = Field(default=None, min_length=1)

    @field_validator("adapter", mode="after")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is None:
            return None
        target = value.strip()
        if target.startswith("adapter:"):
            target = target[len("adapter:"):]
        target = target if ":" in target else f"{target}:Adapter"
        dotted = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
        if not re.fullmatch(f"{dotted}:{dotted}", target):
            raise ValueError(f"invalid adapter name {value!r}: use MODULE:OBJECT (a dotted "
                             "module path and an object name) or MODULE")
        return target

    @property
    def served(self) -> bool:
        """Whether the daemon serves termo-agent's routes."""
        return self.enabled or self.adapter is not None


class ProviderLimits(_Strict):
    """The scheduler's limits for one provider, or one ``provider:model``."""

    #: Calls in flight at once.
    concurrency: int | None = Field(default=None, ge=1, strict=True)
    #: Requests per minute.
    rpm: float | None = Field(default=None, gt=0, strict=True, allow_inf_nan=False)
    #: Tokens per minute (prompt estimate + max output, corrected by actual usage).
    tpm: float | None = Field(default=None, gt=0, strict=True, allow_inf_nan=False)
    #: The rate buckets hold this many seconds of the rate (providers enforce
    #: per-minute limits over short windows).
    burst_s: float = Field(default=1.0, gt=0, strict=True, allow_inf_nan=False)
    #: Slots of ``concurrency`` only interactive calls may take, so that a user's chat
    #: never waits for a background call to end (0: none).
    reserve: int = Field(default=0, ge=0, strict=True)
    #: ``cluster``: every node sharing a PostgreSQL store keeps these limits together
    #: (the store admits each call); ``node``: each node keeps them on its own (the
    #: limits are then per node). SQLite has one node: both are the same.
    scope: Literal["cluster", "node"] = "cluster"

    @model_validator(mode="after")
    def _reserve_below_concurrency(self) -> ProviderLimits:
        if self.reserve and (self.concurrency is None or self.reserve >= self.concurrency):
            raise ValueError("reserve must be below concurrency (and needs it)")
        return self


class TenantQuotas(_Strict):
    """What one tenant's agents may hold at once, and spend per day (``/v1/tenants``,
    or ``[tenants.NAME.quotas]``): checked on every write that adds to one (a 403
    ``quota_exceeded`` naming the quota; nothing written). Left out: no limit."""

    agents: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)
    schedules: int | None = Field(default=None, ge=0, le=10_000_000, strict=True)
    sessions: int | None = Field(default=None, ge=0, le=1_000_000_000, strict=True)
    memory_entries: int | None = Field(default=None, ge=0, le=1_000_000_000, strict=True)
    #: Bytes of the images and files its sessions hold (each kept once).
    storage_bytes: int | None = Field(default=None, ge=0, le=1 << 50, strict=True)
    #: Connections its agents hold open through egress proxies at once.
    egress_connections: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)
    #: Sandbox uids its agents hold (one per agent whose commands have run).
    sandbox_uids: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)
    #: Model spend per UTC day (a run past it fails with ``budget_exceeded``).
    spend_usd_per_day: float | None = Field(default=None, ge=0, le=1e9,
                                            allow_inf_nan=False)


class TenantConfig(_Strict):
    """A tenant: its share of the scheduler (within a priority class), its budget and
    its quotas."""

    weight: float = Field(default=1.0, gt=0, strict=True)
    budget: Budget = Budget()
    quotas: TenantQuotas = TenantQuotas()

    @field_validator("budget")
    @classmethod
    def _no_run_limits(cls, value: Budget) -> Budget:
        if value.run.items():
            raise ValueError("a tenant budget has day and month limits; run limits are "
                             "set per agent (settings.budget.run)")
        return value


class SandboxConfig(_Strict):
    """Where shell and git commands run (``[sandbox]`` in agentd.toml)."""

    #: ``auto``: the strongest backend this machine has (gvisor > bubblewrap > process).
    backend: Literal["auto", "bubblewrap", "gvisor", "process"] = "auto"
    #: The daemon's limits: every agent's defaults, and the most a member token may
    #: give an agent (agents' own may lower them).
    limits: SandboxLimits = SandboxLimits()
    #: The most an operator or admin token may give an agent (``settings.sandbox.limits``
    #: above ``limits``); None: ``limits``, so no agent goes above the defaults.
    max_limits: SandboxLimits | None = None

    @property
    def ceiling(self) -> SandboxLimits:
        """The most any agent's limits may be (``max_limits``, else ``limits``)."""
        return self.max_limits or self.limits
    #: A persistent shell with no call for this long is closed.
    shell_idle_s: float = Field(default=600.0, gt=0)
    #: Snapshot workspaces after tool steps that may have changed them.
    #: Let the process backend run commands as the daemon's own user (a daemon that is
    #: not root): they can then read everything the daemon can, its token and database
    #: included. Off: such commands are refused, with a message saying why.
    unconfined_ok: bool = False
    snapshots: bool = True
    #: A workspace larger than this is not snapshotted (the step says so).
    snapshot_max_mb: int = Field(default=2048, ge=1)
    #: An agent's workspace may hold this much (0: no quota): past it, file tools
    #: refuse to write (``quota_exceeded``) until files are removed.
    workspace_max_mb: int = Field(default=1024, ge=0)
    #: New content an agent's snapshots may add to the store (0: no budget); content
    #: already stored costs nothing. Over it, a snapshot is not taken (fails closed).
    snapshot_budget_mb: int = Field(default=8192, ge=0)
    #: How often snapshot objects no log refers to are deleted (0: never).
    snapshot_gc_s: float = Field(default=3600.0, ge=0)
    #: Where snapshots are kept so that a run resumed on any node finds its agent's
    #: files: ``local`` (each node's home: one node), ``store`` (the database: every
    #: node of a PostgreSQL cluster reads it), ``path`` (``snapshot_path``, a directory
    #: every node mounts); ``auto``: ``store`` on PostgreSQL, else ``local``.
    snapshot_store: Literal["auto", "local", "path", "store"] = "auto"
    #: The directory every node mounts (an absolute path), for ``snapshot_store =
    #: "path"``.
    snapshot_path: Path | None = None
    #: With a shared snapshot store: how long a run accepted by one node waits for the
    #: node holding its agent's files to start it, before it starts where it was
    #: accepted (0: runs start where they are accepted).
    affinity_s: float = Field(default=1.0, ge=0, le=60)
    #: When the daemon is root, each agent's commands run as a uid (and gid) of its
    #: own, from ``uid_base`` to ``uid_base + uid_count - 1``; none is ever given to
    #: a second agent. Choose a range no host user or group has.
    uid_base: int = Field(default=200_000, ge=1000, le=2**31)
    uid_count: int = Field(default=100_000, ge=1, le=2**30)
    #: Connections the daemon's egress proxies hold at once, every agent's together
    #: (each is up to two of the daemon's descriptors); None: an eighth of the
    #: descriptor limit (which the daemon raises to its hard limit at start). More
    #: than a quarter of the limit stops the daemon at start.
    egress_max_connections: int | None = Field(default=None, ge=1, le=1_000_000)
    #: Connections one agent holds at once through its proxies (its commands, MCP
    #: servers and browser together); past it, the proxy answers 503.
    egress_max_per_agent: int = Field(default=64, ge=1, le=100_000)

    @model_validator(mode="after")
    def _snapshot_path(self) -> SandboxConfig:
        if self.snapshot_store == "path":
            if self.snapshot_path is None:
                raise ValueError('sandbox.snapshot_store = "path" needs sandbox.'
                                 "snapshot_path: a directory every node mounts")
            if not self.snapshot_path.is_absolute():
                raise ValueError("sandbox.snapshot_path must be an absolute path, not "
                                 f"{str(self.snapshot_path)!r}")
        elif self.snapshot_path is not None:
            raise ValueError('sandbox.snapshot_path is read only with snapshot_store = '
                             f'"path" (it is {self.snapshot_store!r})')
        return self

    def snapshots_shared(self, dialect: str) -> Literal["local", "path", "store"]:
        """Where snapshots are kept with this database (``auto`` decided)."""
        if self.snapshot_store == "auto":
            return "store" if dialect == "postgresql" else "local"
        return self.snapshot_store

    @model_validator(mode="after")
    def _uid_range(self) -> SandboxConfig:
        if self.uid_base <= 65534 < self.uid_base + self.uid_count:
            raise ValueError("sandbox.uid_base .. uid_base + uid_count must not hold "
                             "65534 (nobody)")
        if self.max_limits is not None:
            low = [name for name in SandboxLimits.model_fields
                   if getattr(self.max_limits, name) < getattr(self.limits, name)]
            if low:
                raise ValueError(f"sandbox.max_limits.{low[0]} is below sandbox.limits."
                                 f"{low[0]}: the ceiling cannot be under the default")
        return self

    #: Non-public endpoints (``"host:port"``, ``"[::1]:80"``) a network grant may
    #: reach: loopback, private, link-local addresses and this host's own are refused
    #: otherwise. The operator's only (agents cannot set it); the agent's grant must
    #: still cover the host. The daemon's own port is refused even when listed.
    private_endpoints: list[str] = Field(default_factory=list, max_length=1000)

    @field_validator("private_endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        from agentd.sandbox.egress import parse_endpoint  # (config stays light to import)

        for item in value:
            parse_endpoint(item)  # ValueError: pydantic reports which item
        return value


class EvalsConfig(_Strict):
    """Evaluations (``[evals]`` in agentd.toml; :mod:`agentd.evals`): how many of their
    cases run at once, and what a case may take."""

    #: Cases of every eval run this node runs at once (an eval run may ask for fewer);
    #: the rest wait, queued in the store.
    concurrency: int = Field(default=4, ge=1, le=256)
    #: The kernel's class of eval cases' model calls (their forks' and judges'):
    #: ``batch`` (the default) or ``background`` keeps interactive turns first.
    priority: Literal["interactive", "background", "batch"] = "batch"
    #: One grader of one case ends within this many seconds (a model-judged rubric's
    #: call included), or the case errors.
    grader_timeout_s: float = Field(default=120.0, gt=0, le=3600, allow_inf_nan=False)
    #: A case's size as stored (its context, message and recorded run), in bytes.
    max_case_bytes: int = Field(default=8 << 20, ge=1024, le=256 << 20)
    #: Cases per suite.
    max_cases: int = Field(default=100_000, ge=1, le=10_000_000)
    #: How often this node looks for queued cases without a nudge (another node's
    #: eval runs, on a shared store), in seconds.
    poll_s: float = Field(default=5.0, gt=0, le=300, allow_inf_nan=False)


class WebhooksConfig(_Strict):
    """Outbound webhooks (``[webhooks]`` in agentd.toml; :mod:`agentd.webhooks`).

    Which hosts a subscription may name is the operator's decision: ``allow_hosts``
    holds host patterns (shell-style, ``"hooks.example.com"``, ``"*.example.org"``),
    each optionally with a port (``"127.0.0.1:9000"``). Empty (the default): webhooks
    are off, every subscription is refused. A pattern with a wildcard reaches public
    addresses only; a host named exactly may resolve to a private or loopback address
    (the operator named it). The daemon's own port on this host's addresses is refused
    whatever the lists say. ``https`` is required unless the host matches
    ``allow_http``.
    """

    allow_hosts: list[str] = Field(default_factory=list, max_length=1000)
    allow_http: list[str] = Field(default_factory=list, max_length=1000)
    #: One delivery attempt (connect, send, answer) ends within this many seconds.
    timeout_s: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)
    #: Attempts per delivery before it is ``failed`` (a replay gives it as many again).
    max_attempts: int = Field(default=8, ge=1, le=100)
    #: Backoff after the n-th failed attempt: ``backoff_s * 2^(n-1)``, at most
    #: ``backoff_max_s``, with jitter (a ``Retry-After`` answer is honoured instead, up
    #: to ``retry_after_max_s``).
    backoff_s: float = Field(default=5.0, gt=0, le=86_400, allow_inf_nan=False)
    backoff_max_s: float = Field(default=3600.0, gt=0, le=7 * 86_400, allow_inf_nan=False)
    retry_after_max_s: float = Field(default=86_400.0, gt=0, le=7 * 86_400,
                                     allow_inf_nan=False)
    #: Deliveries sent at once by this node.
    concurrency: int = Field(default=8, ge=1, le=256)
    #: How often new events and due retries are looked for without a nudge (seconds).
    poll_s: float = Field(default=2.0, gt=0, le=300, allow_inf_nan=False)
    #: Subscriptions per agent.
    max_per_agent: int = Field(default=20, ge=1, le=10_000)
    #: Delivered and failed deliveries are deleted this many seconds after they were
    #: made (hourly; pending ones never are); 0 keeps them forever.
    keep_deliveries_s: float = Field(default=30 * 86_400.0, ge=0, allow_inf_nan=False)

    @field_validator("allow_hosts", "allow_http")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        from agentd.security.hosts import parse_pattern  # (config stays light to import)

        for item in value:
            parse_pattern(item)  # ValueError: pydantic reports which item
        return [item.strip().lower() for item in value]


class AuditConfig(_Strict):
    """The audit log (``[audit]``): what is recorded of refused requests."""

    #: Refusals recorded per token (or per client address, for requests without a
    #: valid token) per minute; past it they are counted, and one row says how many
    #: were not recorded, so a flood of bad requests cannot fill the database.
    refusals_per_minute: int = Field(default=60, ge=1, le=100_000)


#: The Chromium builds the browser tools look for, best first. The headless shell
#: (Debian's ``chromium-headless-shell``; Playwright's own default for headless) is
#: Chromium without the desktop browser around it: the full browser, headless, still
#: renders its own top-level UI in a renderer of its own for every window, and took
#: about 3.5 times the CPU per page (docs/benchmarks.md, "Browser").
CHROMIUM_EXECUTABLES = ("/usr/bin/chromium-headless-shell", "/usr/bin/chromium")


def default_chromium() -> str:
    """The first of :data:`CHROMIUM_EXECUTABLES` installed here (the last if none is:
    the browser tools then say it is missing)."""
    return next((path for path in CHROMIUM_EXECUTABLES if os.access(path, os.X_OK)),
                CHROMIUM_EXECUTABLES[-1])


class BrowserConfig(_Strict):
    """The browser tools (``[browser]`` in agentd.toml; :mod:`agentd.browser`).

    Off by default: Chromium is a heavy process (about 150-300 MB per browser, plus
    50-150 MB per open page), and it needs the ``browser`` extra (Playwright).
    """

    #: Offer ``browser_open``, ``browser_observe``, ``browser_act`` and
    #: ``browser_screenshot`` to agents (each still needs a network grant).
    enabled: bool = False
    #: The Chromium (or Chrome) binary Playwright drives; Playwright's own browser
    #: download is not used. By default the headless shell where it is installed,
    #: else the full Chromium (:data:`CHROMIUM_EXECUTABLES`).
    executable: str = Field(default_factory=default_chromium)
    #: Browsers running at once (one per agent): past it, the least recently used
    #: idle one is closed; when all are busy, a call is refused.
    max_browsers: int = Field(default=4, ge=1, le=64)
    #: Pages one browser keeps (one per session); past it, the least recently used
    #: page is closed.
    max_pages: int = Field(default=4, ge=1, le=64)
    #: A browser with no call for this long is closed (its pages are lost).
    idle_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    #: A page must start rendering (``DOMContentLoaded``) within this many seconds.
    navigation_timeout_s: float = Field(default=30.0, gt=0, le=600, allow_inf_nan=False)
    #: One click, fill, key press... within this many seconds.
    action_timeout_s: float = Field(default=10.0, gt=0, le=600, allow_inf_nan=False)
    #: Chromium must start within this many seconds (a cold start on a loaded host is
    #: slow: it is not counted in the call's ``call_timeout_s``).
    launch_timeout_s: float = Field(default=60.0, gt=0, le=600, allow_inf_nan=False)
    #: A whole tool call (the browser's start-up aside) within this many seconds.
    call_timeout_s: float = Field(default=90.0, gt=0, le=3600, allow_inf_nan=False)
    #: A page's text, and a list of its elements, are cut at this many characters.
    max_text_chars: int = Field(default=20_000, ge=1000, le=1_000_000)
    #: Use Chromium's own sandbox when the daemon is not root (as root Chromium
    #: refuses it, and runs with ``--no-sandbox``).
    chromium_sandbox: bool = True


class TelemetryConfig(_Strict):
    """What an operator sees of the daemon (``[telemetry]``; :mod:`agentd.telemetry`,
    docs/operations.md, "Observability").

    Traces are off unless asked for, here or by the standard OpenTelemetry variables
    (``OTEL_TRACES_EXPORTER=otlp``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_SERVICE_NAME``; a key set here wins).
    """

    #: ``otlp``: spans of every run, built from the event log, exported over OTLP
    #: (the ``otel`` extra); ``none``: no trace work at all.
    traces_exporter: Literal["none", "otlp"] | None = None
    #: The OTLP receiver: for ``http/protobuf``, the base URL (``/v1/traces`` is
    #: added) or, ending in ``/v1/traces``, the traces URL itself; for ``grpc``,
    #: ``host:port`` or ``http(s)://host:port``.
    otlp_endpoint: str | None = Field(default=None, max_length=2000)
    otlp_protocol: Literal["http/protobuf", "grpc"] | None = None
    #: ``service.name`` of the spans.
    service_name: str | None = Field(default=None, max_length=200)
    #: Prompts, completions and tool input and output on spans (redacted as logs
    #: are); off: sizes and names only.
    capture_content: bool = False
    #: ``/metrics`` (Prometheus text), behind a token with the ``metrics`` right
    #: unless ``metrics_listen`` serves it on an address of its own.
    metrics: bool = True
    #: ``host:port`` of a separate, unauthenticated listener for ``/metrics`` only.
    metrics_listen: str | None = Field(default=None, max_length=300)
    #: ``json``: one JSON object per log line, with agent, session, run and trace
    #: ids on every line written for a run; ``text``: the classic lines.
    log_format: Literal["text", "json"] = "text"
    #: FastAPI's own OpenTelemetry hooks (HTTP spans; they cost about 15 % of a turn
    #: even without an exporter). ``AGENTD_TELEMETRY=true`` (the old switch) sets it.
    http: bool = False


def default_home() -> Path:
    """``AGENTD_HOME`` or ``~/.agentd``."""
    raw = os.environ.get("AGENTD_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".agentd"


class Settings(BaseSettings):
    """Daemon configuration. Every field can be set as ``AGENTD_<NAME>``.

    A new field is classified in :data:`agentd.assembly.reload.FIELDS`: applied by a
    configuration reload, or read at the next start only (a test fails until it is).
    """

    model_config = SettingsConfigDict(
        env_prefix="AGENTD_",
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(default_factory=default_home)
    database_url: str = ""
    #: How durable a commit is before it is acknowledged (``[store] synchronous``).
    store: StoreConfig = Field(default_factory=StoreConfig)
    #: Deprecated: ``[store] synchronous`` on SQLite (NORMAL, FULL; EXTRA is FULL in
    #: WAL mode). No effect on PostgreSQL; both set must agree.
    sqlite_synchronous: str | None = None
    #: SQLite only: where write transactions run (None: ``loop`` for NORMAL, ``thread``
    #: for FULL, whose commits wait on the disk).
    sqlite_writer: Literal["loop", "thread"] | None = None
    #: SQLite only: the writing connection's page cache, MiB (readers keep 2 MB).
    sqlite_cache_mb: int = Field(default=64, ge=2, le=65536)
    #: PostgreSQL only: memory search by the pgvector extension where it can be
    #: created; false keeps vector search in the daemon (exact, or its HNSW index).
    pgvector: bool = True
    #: The file holding the key that seals named secrets at rest (made, 0600, at
    #: first use; None: ``<home>/secrets.key``). ``AGENTD_SECRETS_KEY`` (base64 of 32
    #: bytes) gives the key itself instead; every node sharing a database needs the same.
    secrets_key_file: Path | None = None

    def base_url(self) -> str:
        """:attr:`public_url` without its slash, else ``http://<host>:<port>`` (a
        wildcard bind reached on the loopback)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else \
            "[::1]" if self.host == "::" else f"[{self.host}]" if ":" in self.host \
            else self.host
        return f"http://{host}:{self.port}"

    def mcp_resource(self) -> str:
        """The MCP door's resource identifier (``[mcp.oauth] resource``, else the base
        URL's ``/mcp``)."""
        oauth = self.mcp.oauth
        if oauth is not None and oauth.resource:
            return oauth.resource
        return f"{self.base_url()}/mcp"

    @field_validator("sqlite_writer", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("sqlite_synchronous", mode="after")
    @classmethod
    def _sqlite_level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.strip().upper() == "EXTRA":
            return "FULL"  # (what it always was in WAL mode)
        return store_level("sqlite", value)  # ValueError: OFF, or an unknown level
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    #: The daemon's URL as browsers and other servers reach it (behind a reverse proxy,
    #: the proxy's: ``https://agentd.example.com``); None: ``http://<host>:<port>``.
    #: OAuth redirects come back to it (``/v1/mcp/oauth/callback``), and it names the
    #: MCP door's resource (``/mcp``): never taken from a request's Host header.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/\s?#]+/?$")
    #: ``token`` (the default): every request but the public paths needs a bearer
    #: token; with none configured, one is generated into ``home/token``. ``none``: an
    #: explicit choice to let requests without a token in (loudly logged); deciding
    #: approvals and changing agents' settings or sessions' policy still need one.
    auth: Literal["token", "none"] = "token"
    token: str | None = None
    tokens: list[str] = Field(default_factory=list)
    public_paths: list[str] = Field(default_factory=lambda: ["/health"])
    #: Host names a request arriving on a loopback address may carry besides the
    #: loopback ones (DNS rebinding: server/_origin.py); ``"*"``: any. Add the public
    #: name a reverse proxy on this machine forwards as ``Host``.
    allowed_hosts: list[str] = Field(default_factory=list)
    #: Origins (``https://app.example``) whose pages may call the API from a browser;
    #: ``"*"``: any. The daemon's own origin (the console) always may.
    allowed_origins: list[str] = Field(default_factory=list)
    #: Serve the web console at ``/ui`` (its page and files are public; everything it
    #: shows comes from the API with the signed-in token: docs/console.md).
    console: bool = True
    #: Names of the tokens that are the daemon's admins (``token``, ``token-2``,
    #: ``bootstrap``); None: every token. Only an admin may give an agent a stdio MCP
    #: server whose command is not in ``mcp_commands``.
    admin_tokens: list[str] | None = None
    #: Token scopes by token name (``bootstrap``, ``token``, ``token-N``): the agents a
    #: token may use, by name and tenant patterns. A token without one uses every agent
    #: (see docs/security.md, "Token scopes"). A scoped token is no admin unless
    #: ``admin_tokens`` names it.
    access: dict[str, TokenScope] = Field(default_factory=dict, max_length=1000)
    #: Stdio MCP server commands any token may configure: each entry is a command line
    #: whose words must begin the server's command (``"uvx mcp-server-fetch"``).
    mcp_commands: list[str] = Field(default_factory=list)
    #: MCP server URLs member tokens may configure: each entry is a URL prefix
    #: (``"https://mcp.example.com/"``: scheme, host and port must match exactly, the
    #: path must start with the entry's). Any other URL needs an operator token.
    mcp_urls: list[str] = Field(default_factory=list, max_length=1000)
    #: The MCP door (``[mcp]``; ``[mcp.oauth]``: OAuth 2.0 protected resource).
    mcp: MCPConfig = Field(default_factory=lambda: MCPConfig())
    #: Named model endpoints (``[models.NAME] provider, base_url, api_key_env``):
    #: agents name them as providers (``NAME:MODEL``), so tokens below ``operator``
    #: can use a server the operator chose without naming its URL or key.
    models: dict[str, ModelEndpoint] = Field(default_factory=dict, max_length=1000)
    #: Providers a member token may name in a model string (the rest, whose servers
    #: are on the host or the operator's to choose, need an operator token).
    member_providers: list[str] = Field(default_factory=lambda: list(PUBLIC_PROVIDERS))
    #: The audit log (docs/security.md, "Audit").
    audit: AuditConfig = Field(default_factory=lambda: AuditConfig())
    default_model: str = "scripted"
    max_steps: int = Field(default=16, ge=1, le=1000)
    #: Answers not matching a run's output schema that the model is asked to correct
    #: before the run fails with ``output_invalid`` (an agent's
    #: ``settings.output.max_repairs`` overrides it).
    output_max_repairs: int = Field(default=2, ge=0, le=10)
    max_message_bytes: int = Field(default=256 * 1024, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    tool_timeout_s: float = Field(default=60.0, gt=0)
    #: Worker processes for CPU-bound tools (calculator, file tools, the command
    #: analyser): how many run at once, how many of them one agent may use at once,
    #: and each one's address-space limit in MB.
    tool_workers: int = Field(default=8, ge=1, le=64)
    tool_workers_per_agent: int = Field(default=2, ge=1, le=64)
    tool_worker_memory_mb: int = Field(default=1024, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    #: This daemon's name in run leases; default: host name + a hash of ``home``
    #: (stable across restarts, so a restarted daemon takes its own runs back at once).
    node_id: str = ""
    #: How long a run's lease holds without renewal; another node takes the run over
    #: after that (renewed every third of it, and by every step's commit).
    lease_ttl_s: float = Field(default=30.0, gt=0)
    #: PostgreSQL: how often a node looks for nodes that died (their liveness lock
    #: free: agentd.runtime.nodes) to take their runs over at once rather than when
    #: their leases expire; a node gone at two looks in a row is taken over. 0: no
    #: liveness lock; a dead node's runs wait for their leases to expire.
    node_check_s: float = Field(default=1.0, ge=0, le=60)
    #: Automatic checkpoint of a session when a run ends and its last checkpoint is at
    #: least this old (seconds); 0: none (pause, stop and shutdown still checkpoint).
    checkpoint_interval_s: float = Field(default=300.0, ge=0)
    #: An agent with no activity for this long is put to sleep (dropped from memory;
    #: the next message or decision wakes it). 0: never.
    agent_idle_s: float = Field(default=300.0, ge=0)
    #: Sessions with no activity for this long (and no run queued or under way) are
    #: deleted, with their log. 0: never.
    session_ttl_s: float = Field(default=0.0, ge=0)
    #: Scheduler limits per provider (``openai``) or per model (``openai:gpt-4.1``):
    #: ``{"openai": {"concurrency": 8, "rpm": 500, "tpm": 200000}}``. A provider with
    #: no entry has no limits (its calls are still scheduled, and admitted at once).
    providers: dict[str, ProviderLimits] = Field(default_factory=dict)
    #: Tenants (an agent's ``settings.tenant``): scheduler weight and budgets.
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    #: How the scheduler shares a busy provider between the priority classes.
    priority_weights: dict[str, float] = Field(default_factory=lambda: {
        "interactive": 100.0, "background": 10.0, "batch": 1.0})
    #: Tries per model and call on transient errors (1: no retry; an agent's
    #: ``settings.max_retries`` overrides), and the backoff between them.
    retry_attempts: int = Field(default=3, ge=1, le=20)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    #: A provider's breaker opens after this many transient failures in a row, for
    #: ``breaker_cooldown_s`` (doubling while probes fail, up to 10 times that).
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    #: The daemon's policy layer, below agents' and sessions' (its deny rules are final).
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    #: Sandbox backend and limits for commands (shell, git).
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    #: Long-term memory shared by every agent: the embedder and the vector index.
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    #: Framework adapters agents may be backed by (``agentd.adapters``).
    adapters: AdaptersConfig = Field(default_factory=AdaptersConfig)
    #: Bearer tokens ``a2a_call`` sends to remote A2A endpoints, by endpoint.
    a2a: A2AConfig = Field(default_factory=A2AConfig)
    #: Outbound webhooks: which hosts subscriptions may name, retries, timeouts.
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    #: Evaluations: cases run at once, their class, graders' time limit.
    evals: EvalsConfig = Field(default_factory=EvalsConfig)
    #: What agents' checks (``settings.hooks``) may call: callables, webhook hosts.
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    #: termo-agent's routes for one adapter-backed agent (``agentd serve --adapter``).
    termo: TermoConfig = Field(default_factory=TermoConfig)
    #: Channels (``agentd.channels``): the Telegram Bot API's address, which
    #: environment variables agents may name for tokens, retries (docs/channels.md).
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    #: The ``web_search`` tool's providers (``[web_search.providers.NAME]``).
    web_search: WebSearchConfig = Field(default_factory=WebSearchConfig)
    #: The browser tools (Chromium driven by Playwright; the ``browser`` extra).
    browser: BrowserConfig = Field(default_factory=BrowserConfig)
    #: Images and files in messages and tool results: limits, types, URL fetches.
    attachments: AttachmentsConfig = Field(default_factory=AttachmentsConfig)
    demo_agent: bool = True
    #: Python modules whose top-level ``@tool`` functions the daemon offers to agents.
    tool_modules: list[str] = Field(default_factory=list)
    log_level: str = "INFO"
    #: Traces, metrics and logs (``[telemetry]``).
    telemetry: TelemetryConfig = Field(default_factory=lambda: TelemetryConfig())

    @field_validator("telemetry", mode="before")
    @classmethod
    def _telemetry_switch(cls, value: Any) -> Any:
        # The old ``telemetry = true`` (AGENTD_TELEMETRY): FastAPI's HTTP spans.
        if isinstance(value, bool) or value in ("true", "false", "1", "0"):
            return {"http": value in (True, "true", "1")}
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("providers", mode="after")
    @classmethod
    def _provider_names(cls, value: dict[str, ProviderLimits]) -> dict[str, ProviderLimits]:
        for key in value:
            name = key.partition(":")[0]
            if name not in PROVIDERS:
                raise ValueError(f"unknown provider {name!r} in providers.{key}; known: "
                                 + ", ".join(sorted(PROVIDERS)))
        return value

    @field_validator("mcp_commands", mode="after")
    @classmethod
    def _command_lines(cls, value: list[str]) -> list[str]:
        import shlex

        for entry in value:
            try:
                words = shlex.split(entry)
            except ValueError as exc:
                raise ValueError(f"mcp_commands entry {entry!r}: {exc}") from None
            if not words:
                raise ValueError("an mcp_commands entry is empty")
        return value

    @field_validator("models", mode="after")
    @classmethod
    def _endpoints(cls, value: dict[str, ModelEndpoint]) -> dict[str, ModelEndpoint]:
        endpoint_providers(value)  # ValueError naming the endpoint
        return value

    @field_validator("member_providers", mode="after")
    @classmethod
    def _member_providers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown provider(s) {', '.join(map(repr, unknown))}; known: "
                             + ", ".join(sorted(PROVIDERS)))
        return value

    @field_validator("mcp_urls", mode="after")
    @classmethod
    def _mcp_urls(cls, value: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for entry in value:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"mcp_urls entry {entry!r} is not an http(s) URL")
        return value

    @field_validator("priority_weights", mode="after")
    @classmethod
    def _class_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if name not in PRIORITIES:
                raise ValueError(f"unknown priority class {name!r}; use "
                                 + ", ".join(PRIORITIES))
            if not weight > 0:
                raise ValueError(f"priority_weights.{name} must be greater than 0")
        return {**{"interactive": 100.0, "background": 10.0, "batch": 1.0}, **value}

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'agentd.db'}"
        if not self.node_id:
            digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:8]
            self.node_id = f"{socket.gethostname()}:{digest}"
        if self.token and self.token not in self.tokens:
            self.tokens = [*self.tokens, self.token]
        if self.access:
            names = list(self.named_tokens()) or ["bootstrap"]
            unknown = sorted(set(self.access) - set(names))
            if unknown:
                raise ValueError(
                    f"access names token(s) {', '.join(map(repr, unknown))} that the daemon "
                    f"does not have; its tokens are {', '.join(names)} (``token`` is "
                    "AGENTD_TOKEN, ``token-N`` the N-th of ``tokens``, ``bootstrap`` the "
                    "home's token when no other is configured)")
            if self.auth != "token":
                raise ValueError("access (token scopes) needs auth = \"token\": with "
                                 "auth = \"none\" a request without a token would use "
                                 "every agent")
        self._check_store_level()
        if self.termo.adapter and self.termo.adapter not in self.adapters.allow:
            # The operator named it (the command line or [termo]): it is allowed.
            self.adapters = self.adapters.model_copy(
                update={"allow": [*self.adapters.allow, self.termo.adapter]})
        return self

    def _check_store_level(self) -> None:
        check_level(self.database_url, self.store.synchronous, self.sqlite_synchronous)

    def synchronous(self) -> str | None:
        """The durability level asked for: ``[store] synchronous``, else the deprecated
        ``sqlite_synchronous`` on SQLite; None: the store's default."""
        return asked_level(self.database_url, self.store.synchronous,
                           self.sqlite_synchronous)

    def deprecations(self) -> list[str]:
        """What the daemon logs at start about deprecated settings in use."""
        return deprecations(self.database_url, self.sqlite_synchronous)

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need a token (the default; ``auth = "none"`` opts out)."""
        return self.auth == "token"

    def store_options(self) -> StoreOptions:
        """What the store's engine takes from these settings."""
        from agentd.store import StoreOptions

        return StoreOptions(synchronous=self.synchronous(),
                            sqlite_writer=self.sqlite_writer,
                            sqlite_cache_mb=self.sqlite_cache_mb,
                            application_name=f"agentd {self.node_id}"[:63])

    def named_tokens(self) -> dict[str, str]:
        """The configured tokens by name: ``token`` for ``AGENTD_TOKEN``, ``token-N``
        for the N-th of ``tokens`` (the bootstrap token is added by the server)."""
        return {("token" if t == self.token else f"token-{i}"): t
                for i, t in enumerate(self.tokens, 1)}

    @property
    def token_file(self) -> Path:
        return self.home / "token"

    @property
    def secrets_key_path(self) -> Path:
        """Where the key of named secrets is kept (``secrets_key_file`` or the home's)."""
        return self.secrets_key_file or self.home / "secrets.key"

    @property
    def pid_file(self) -> Path:
        return self.home / "agentd.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "agentd.log"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _TomlFile(settings_cls, default_home() / "agentd.toml")
        return (init_settings, env_settings, dotenv_settings, toml)


class ConfigFileError(ValueError):
    """agentd.toml is not TOML, or names a setting agentd does not have (``fields``:
    those settings)."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


def settings_problem(exc: Exception) -> str:
    """What is wrong with the configuration, on one line: a :class:`ConfigFileError`'s
    message, or a ValidationError's fields and their problems (the CLI, the client and
    the daemon all say it so)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors())
    return str(exc)


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    # A check of the whole configuration has no field: its message names them.
    message = message.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc)}: {message}" if loc else message


class _TomlFile(TomlConfigSettingsSource):
    """agentd.toml, refused whole when it is not TOML (the parser's own message, with
    the file's path: it was a 150-line traceback) or names a top-level key that is no
    setting (it was ignored, while an unknown key inside a table was refused: a typo
    such as ``prot = 5`` left the port as it was, silently)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"{path} is not valid TOML: {exc}") from None
        known = set(settings_cls.model_fields)
        unknown = sorted(set(self.toml_data) - known)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, known, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigFileError(f"{path}: unknown setting(s) {', '.join(hints)}; see "
                                  "docs/configuration.md", tuple(unknown))


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, ``.env`` and ``agentd.toml``."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
