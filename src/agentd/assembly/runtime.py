"""The Runtime facade: what the server (or an embedding program) calls.

It composes the runtime's services, each with its dependencies given explicitly:

=================  ===========================================================
``agents``         definitions, the awake agents and their plans (:mod:`.agents`)
``lifecycle``      pause, resume, stop, delete (:mod:`.lifecycle`)
``sessions``       logs, streams, checkpoints, restore, fork (:mod:`.sessions`)
``runs``           messages in; runs waited on, cancelled, decided (:mod:`.runs`)
``approvals``      what runs wait on, listed and decided (:mod:`.approvals`)
``supervisor``     owns every run's task, one active run per session
``executors``      builds a run's executor when its turn comes (:mod:`._executors`)
``leases``         which node drives which run; takeover (:mod:`.leases`)
``housekeeper``    periodic jobs, registered by the services (:mod:`.housekeeping`)
``kernel``         every model call: scheduler, retries, breakers, budgets
``compactor``      older turns summarised near the model's window (:mod:`agentd.memory.compaction`)
``sandboxes``      where commands run; ``workspaces``: snapshots of files
``webhooks``       events posted to subscribers' URLs (:mod:`agentd.webhooks`)
``secrets``        named secrets, resolved where they are used (:mod:`agentd.secrets`)
``mcp_oauth``      MCP servers' OAuth logins and tokens (:mod:`agentd.secrets.oauth`)
``mcp_resource``   the MCP door's outside bearer tokens (``[mcp.oauth]``), or None
``hooks``          agents' checks: callables, webhooks, commands (:mod:`agentd.hooks`)
``browsers``       Chromium per agent for the browser tools (``[browser] enabled``)
=================  ===========================================================

A new capability (memory, schedules, ...) is a new service built here from the
parts it needs, with its periodic work registered on the housekeeper; the facade's
methods below stay the public calls the server and embedders use. A service the
agent's tools use is provided with ``self.executors.provide`` (its tools ask for
it by class, ``ctx.service(Schedules)``, with ``ToolContext.origin`` telling what started
the run), and a part of every run's instructions it adds (the agent's skills, ...)
in ``self.executors.sections``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from agentd.adapters import AdapterModel, AdapterModels, Adapters
from agentd.adapters.executor import AdapterExecutor
from agentd.assembly._eval_calls import EvalCalls
from agentd.assembly._media import check_vision, make_media, with_blobs
from agentd.assembly._media import resolve as resolve_blobs
from agentd.assembly._memory_calls import MemoryCalls
from agentd.assembly._oauth import make_logins, make_resource
from agentd.assembly._parts import make_kernel, make_metrics, make_overview, shared_lanes
from agentd.assembly._search import web_search_service
from agentd.assembly.reload import Prepare, Reloader, ReloadOutcome
from agentd.assembly.reload import install as install_reload
from agentd.autonomy.delegation_tools import DELEGATION_TOOLS
from agentd.autonomy.heartbeat import HeartbeatService
from agentd.autonomy.proactive import PROACTIVE_TOOLS, ProactiveService
from agentd.autonomy.schedule_tools import SCHEDULE_TOOLS
from agentd.autonomy.schedules import Schedules
from agentd.autonomy.subtasks import DELEGATING_TOOLS, Subtasks
from agentd.autonomy.teams import TeamExecutor, check_team
from agentd.browser import BROWSER_TOOLS, Browsers
from agentd.browser import problem as browser_problem
from agentd.channels.telegram import TelegramChannel
from agentd.clock import SYSTEM, Clock
from agentd.config import Settings
from agentd.errors import AgentNotFound, InvalidInput, NotFound
from agentd.evals import Evals
from agentd.events import CompactionStrategy, MessageAddedData
from agentd.hooks import HookRunner
from agentd.identity import Identity
from agentd.llm.catalog import Catalog
from agentd.llm.output import check_schema
from agentd.media import Attachments
from agentd.memory.blocks import MemoryBlocks
from agentd.memory.compaction import Compaction, Compactor
from agentd.memory.consolidation import Consolidator
from agentd.memory.entries import MemoryEntries
from agentd.memory.runs import MemoryForRuns
from agentd.memory.tools import MEMORY_TOOLS
from agentd.runtime.affinity import Affinity
from agentd.runtime.agent_settings import warn_invalid_settings
from agentd.runtime.agents import Agents, check_agent_name, runs_no_loop
from agentd.runtime.approvals import ApprovalDesk
from agentd.runtime.bus import EventBus, Feed, FeedItem, Subscription, Token, follow
from agentd.runtime.cluster_limits import ClusterGate
from agentd.runtime.executors import ExecutorFactory, permissions_for
from agentd.runtime.follower import LogFollower
from agentd.runtime.fork import Forks
from agentd.runtime.guard import Guard
from agentd.runtime.history import HistoryCache, SessionHistory
from agentd.runtime.housekeeping import Housekeeper, Job
from agentd.runtime.leases import LeaseKeeper
from agentd.runtime.lifecycle import Lifecycle
from agentd.runtime.media import ToolMedia
from agentd.runtime.nodes import NodeWatch
from agentd.runtime.replay import Replays
from agentd.runtime.runlog import RunLog
from agentd.runtime.runs import MODES, Also, Runs, SendResult
from agentd.runtime.sandboxes import Sandboxes
from agentd.runtime.sessions import Sessions
from agentd.runtime.supervisor import Supervisor
from agentd.runtime.workspaces import WorkspaceKeeper, shared_snapshots
from agentd.sandbox.caps import TenantCaps
from agentd.secrets import RunSecrets, Secrets
from agentd.security.identity import Principal
from agentd.security.policy import Policy, PolicyConfig
from agentd.security.tokens import ensure_home
from agentd.settings import stored_settings
from agentd.skills import SKILL_TOOLS, SkillRegistry, Skills
from agentd.store import (
    Accepted,
    AgentPage,
    Lease,
    RunPage,
    SessionPage,
    Store,
    Tx,
    open_store,
)
from agentd.store.nodes import NodeClaim
from agentd.store.records import (
    AgentRecord,
    CheckpointRecord,
    EventRecord,
    RunRecord,
    SessionRecord,
)
from agentd.store.secrets import SecretStore
from agentd.store.subtasks import SubtaskRecord
from agentd.store.telegram import TelegramStore
from agentd.telemetry.dataset import Dataset, ExportFilter
from agentd.telemetry.follower import Traces
from agentd.telemetry.follower import resolve as resolve_traces
from agentd.telemetry.logs import Redactor, known_secrets
from agentd.telemetry.logs import reconfigure as reconfigure_logs
from agentd.tenancy import DEFAULT_TENANT, tenant_of
from agentd.tools import ToolRegistry
from agentd.tools.a2a import RemoteTokens
from agentd.tools.mcp import MCPManager
from agentd.tools.workers import WorkerPool
from agentd.version import __version__
from agentd.webhooks import Webhooks

__all__ = ["MODES", "Runtime", "SendResult", "check_agent_name"]

log = logging.getLogger(__name__)

DEMO_INSTRUCTIONS = (
    "You are the agentd demo agent. Try: /tool calculator {\"expression\": \"6 * 7\"} "
    "or /tool current_time {}."
)


class Runtime(MemoryCalls, EvalCalls):
    """Agents, sessions and runs on one store, driven by one supervisor."""

    def __init__(self, settings: Settings, store: Store, tools: ToolRegistry | None = None,
                 *, clock: Clock = SYSTEM,
                 reload_from: Callable[[], Settings] | None = None) -> None:
        """``reload_from``: how a configuration reload reads the settings (the daemon
        gives its command line's options again); default: as ``agentd serve`` with
        none (:func:`agentd.config.load_settings`)."""
        self.settings = settings
        self.store = store
        #: The time every part decides by (:mod:`agentd.clock`): the store's, which
        #: stamps what it writes. Tests give a :class:`agentd.testing.FakeClock`.
        self.clock = clock = store.clock if clock is SYSTEM else clock
        store.clock = clock
        self.tools = tools or ToolRegistry()
        # The services' tools (the tools layer cannot know the layers above it): memory,
        # skills, delegation, schedules, proactive; each reads its service from
        # ToolContext.services.
        for service_tool in (*MEMORY_TOOLS.values(), *SKILL_TOOLS.values(),
                             *DELEGATION_TOOLS.values(), *SCHEDULE_TOOLS.values(),
                             *PROACTIVE_TOOLS.values()):
            if self.tools.get(service_tool.name) is None:
                self.tools.register(service_tool)
        self.bus = EventBus()
        #: SQLite is one daemon's alone (the home lock): its leases need no waiting
        #: out, and every queued run was accepted here. PostgreSQL may be shared.
        self.exclusive = store.dialect == "sqlite"
        self.node_id = settings.node_id
        self.lease = Lease(owner=settings.node_id, ttl=settings.lease_ttl_s)
        self._accepting = False
        self._shutdown: asyncio.Task[None] | None = None
        self.started_at = 0.0

        # -- the machinery every service shares ---------------------------------------
        sandbox = settings.sandbox
        #: Workspace snapshots (None: switched off in the config), and where every node
        #: reads them (``[sandbox] snapshot_store``).
        self.workspaces = (WorkspaceKeeper(
            settings.home / "snapshots", max_bytes=sandbox.snapshot_max_mb << 20,
            shared=shared_snapshots(sandbox, store), node_id=settings.node_id,
            heads=store.workspace_head) if sandbox.snapshots else None)
        #: Connections to agents' MCP servers (``settings.mcp``).
        self.mcp = MCPManager()
        #: Sandbox backends, limits and persistent shells for commands.
        self.sandboxes = Sandboxes(settings.sandbox, self.store,
                                   daemon_ports=(settings.port,), node_id=settings.node_id,
                                   workspaces=settings.workspaces_dir)
        #: Worker processes for CPU-bound tools and the command analyser.
        self.workers = WorkerPool(size=settings.tool_workers,
                                  per_owner=settings.tool_workers_per_agent,
                                  memory_mb=settings.tool_worker_memory_mb)
        #: Context windows, output limits and prices (package data + home override).
        self.catalog = Catalog.load(settings.home / "models.toml")
        #: Images and files in: their limits, checks and URL fetches (``[attachments]``).
        self.media = make_media(settings, self.sandboxes.rules)
        #: The lanes whose limits this node keeps with the others sharing the store
        #: (None: SQLite, or no lane with limits of scope ``cluster``).
        lanes = shared_lanes(settings)
        self.limits_gate = (ClusterGate(store, node_id=settings.node_id, lanes=lanes,
                                        ttl_s=settings.lease_ttl_s, clock=clock)
                            if lanes and not self.exclusive else None)
        #: Every model call goes through the kernel: scheduler, breakers, budgets.
        self.kernel = make_kernel(settings, self._usage_total, shared=not self.exclusive,
                                  clock=clock, gate=self.limits_gate)
        self.runlog = RunLog(store, self.bus, self.lease)

        # -- the services -------------------------------------------------------------
        #: Who may do what: named tokens, tenants and quotas, the audit log.
        self.identity = Identity(settings, store, clock=clock.time)
        self.identity.grants.default_backend = (
            lambda: self.sandboxes.default.name if self.sandboxes.default else None)
        self.guard = Guard(quotas=self.identity.tenants, grants=self.identity.grants,
                           audit=self.identity.audit)
        # What the sandbox enforces itself: uids given, egress connections held.
        tenants = self.identity.tenants
        self.sandboxes.caps_of = lambda tenant: TenantCaps(
            sandbox_uids=tenants.cap(tenant, "sandbox_uids"),
            egress_connections=tenants.cap(tenant, "egress_connections"))
        self.agents = Agents(settings, store, tools=self.tools, catalog=self.catalog,
                             sandboxes=self.sandboxes, on_sleep=self._agent_slept,
                             on_change=self.bus.publish_agent, guard=self.guard,
                             endpoints=self.identity.grants.endpoints, clock=clock)
        self.agents.tenant_exists = self.identity.tenants.exists
        self.histories = HistoryCache(self._read_after)
        #: Core memory blocks: rendered into every run's context, edited by its tools.
        self.memory = MemoryBlocks(store, agents=self.agents, exclusive=self.exclusive)
        #: Older turns summarised (or their tool results cleared) instead of dropped.
        self.compactor = Compactor(store, bus=self.bus, histories=self.histories,
                                   agents=self.agents, kernel=self.kernel,
                                   catalog=self.catalog)
        #: Long-term memory entries: written verbatim, searched by words and meaning.
        self.entries = MemoryEntries(store, agents=self.agents, config=settings.memory,
                                     home=settings.home, exclusive=self.exclusive,
                                     pgvector=settings.pgvector)
        #: New history turned into entries and block lines (idle agents, on demand).
        self.consolidator = Consolidator(store, bus=self.bus, agents=self.agents,
                                         kernel=self.kernel, catalog=self.catalog,
                                         entries=self.entries, blocks=self.memory)
        self.executors = ExecutorFactory(
            settings, store, bus=self.bus, runlog=self.runlog, agents=self.agents,
            histories=self.histories, tools=self.tools, mcp=self.mcp,
            sandboxes=self.sandboxes, workspaces=self.workspaces, kernel=self.kernel,
            workers=self.workers, lease=self.lease,
            memory=MemoryForRuns(self.memory, self.entries), compactor=self.compactor)
        self.executors.tenant_budget = self.identity.tenants.budget
        # (Call policies are cached per plan until a tenant's limits or a reload change.)
        self.executors.tenant_budgets_version = (
            lambda: self.identity.tenants.version + self.reloader.generation)
        #: Skills installed under the home, enabled per agent (agentd.skills).
        self.skills = Skills(SkillRegistry(settings.home / "skills"), agents=self.agents)
        self.agents.checks.append(self.skills.check_settings)
        self.executors.provide(self.skills)
        # Images tools return: checked like a message's, counted in the tenant's quota.
        self.executors.provide(ToolMedia(self.media, lambda tenant: self.guard.quotas.quota(
            tenant, "storage_bytes")))
        self.executors.sections.append(self.skills.section)
        # Enabled skills show read-only at /skills/<name> in the agent's commands.
        self.sandboxes.binds_for = self.skills.binds
        self.skills.unmounted = self.sandboxes.binds_unsupported
        self.supervisor = Supervisor(self.executors.build, self.runlog.cancel_queued,
                                     None if self.exclusive else self.store.next_queued)
        self.sessions = Sessions(settings, store, bus=self.bus, histories=self.histories,
                                 agents=self.agents, supervisor=self.supervisor,
                                 sandboxes=self.sandboxes, workspaces=self.workspaces)
        self.runs = Runs(store, bus=self.bus, histories=self.histories, agents=self.agents,
                         supervisor=self.supervisor, runlog=self.runlog,
                         accepting=lambda: self._accepting, lease_ttl_s=self.lease.ttl)
        self.replays = Replays(self.executors, self.runs)
        self.forks = Forks(self.executors, self.runs, self.replays)
        self.executors.fork = self.forks.build
        self.executors.replay = self.replays.build
        self.lifecycle = Lifecycle(store, bus=self.bus, histories=self.histories,
                                   agents=self.agents, runs=self.runs,
                                   supervisor=self.supervisor, sandboxes=self.sandboxes,
                                   mcp=self.mcp)
        self.approvals = ApprovalDesk(store, bus=self.bus, agents=self.agents,
                                      tools=self.tools, supervisor=self.supervisor,
                                      permissions_for=self.permissions_for,
                                      guard=self.guard)
        self.leases = LeaseKeeper(store, supervisor=self.supervisor, lease=self.lease,
                                  exclusive=self.exclusive,
                                  cancel_later=self.runs.cancel_in_background, clock=clock)
        #: Nodes that died (PostgreSQL): their runs taken over at once.
        self.nodes = NodeWatch(store, leases=self.leases, check_s=settings.node_check_s,
                               wait_s=settings.lease_ttl_s, clock=clock)
        self.follower = LogFollower(store, self.bus,
                                    on_agent_change=self.agents.changed_elsewhere,
                                    on_cancel=self.leases.cancel_heard)
        #: Runs offered to the node holding their agent's files (runtime/affinity.py).
        self.affinity = Affinity(
            store, node_id=settings.node_id, window_s=sandbox.affinity_s, clock=clock,
            submit=lambda session, run, agent: self.supervisor.submit(session, run,
                                                                      agent_id=agent))
        if self.workspaces is not None and self.workspaces.shared is not None:
            self.executors.affinity = self.affinity
            self.executors.agent_busy = self.supervisor.running_agent
            self.runs.elsewhere = self.executors.elsewhere
            self.follower.on_note = self.affinity.heard
        #: Child runs a run starts and waits on; calls to other agents.
        self.subtasks = Subtasks(store, bus=self.bus, runs=self.runs, agents=self.agents,
                                 histories=self.histories, exclusive=self.exclusive)
        self.executors.provide(self.subtasks)
        self.executors.child_usage = self.subtasks.usage_of_children
        self.executors.child_usage_tools = DELEGATING_TOOLS
        #: Teams: agents whose runs are played by other agents (``settings.team``).
        self.executors.team_executor = TeamExecutor
        self.agents.async_checks.append(partial(check_team, store))
        #: Agents backed by a framework adapter (``model = "adapter:MODULE:OBJECT"``).
        self.adapters = Adapters(timeout_s=settings.adapters.timeout_s)
        self.agents.model_sources.append(AdapterModels(lambda: settings.adapters.allow))
        self.executors.provide(self.adapters)
        #: Which remote A2A endpoints ``a2a_call`` sends which token to.
        self.executors.provide(RemoteTokens(settings.a2a.remote_tokens))
        #: The providers ``web_search`` searches through (``[web_search]``).
        self.executors.provide(web_search_service(settings.web_search, self.agents))
        self.executors.adapter_executor = AdapterExecutor
        #: Schedules: messages sent on a clock, each fire time exactly once.
        self.schedules = Schedules(store, agents=self.agents, runs=self.runs,
                                   exclusive=self.exclusive, clock=clock)
        self.executors.provide(self.schedules)
        #: Messages an agent posts into its own other sessions (``message_post``).
        self.proactive = ProactiveService(store, bus=self.bus, histories=self.histories)
        self.executors.provide(self.proactive)
        #: Chromium for the browser tools, one per agent (``[browser] enabled``).
        self.browsers: Browsers | None = None
        if settings.browser.enabled:
            self.browsers = Browsers(settings.browser,
                                     connections=self.sandboxes.connections)
            self.executors.provide(self.browsers)
            for browser_tool in BROWSER_TOOLS.values():
                if self.tools.get(browser_tool.name) is None:
                    self.tools.register(browser_tool)
        #: Periodic autonomous turns (``settings.heartbeat``).
        self.heartbeat = HeartbeatService(
            store, runs=self.runs, agents=self.agents,
            workspace_of=lambda agent_id: settings.workspaces_dir / agent_id, clock=clock)
        #: Events posted, signed, to subscribers' URLs (``[webhooks]``).
        self.webhooks = Webhooks(store, bus=self.bus, config=settings.webhooks,
                                 node_id=settings.node_id, daemon_ports=(settings.port,),
                                 exclusive=self.exclusive)
        #: Agents' checks (``settings.hooks``, ``[hooks]``).
        self.hooks = HookRunner(settings.hooks, daemon_ports=(settings.port,))
        #: Evaluations: suites of cases forked onto a candidate (``[evals]``).
        self.evals = Evals(store, forks=self.forks, runs=self.runs, agents=self.agents,
                           kernel=self.kernel, config=settings.evals, clock=clock,
                           node_id=settings.node_id, delete_session=self.sessions.delete)
        self.executors.checks = self.hooks
        self.agents.checks.append(self.hooks.check_settings)
        #: Spans of every run from the log, exported over OTLP when traces are on
        #: (``[telemetry]``, ``OTEL_*``: read here, once), and on demand.
        secrets = (frozenset(known_secrets(settings, os.environ))
                   if settings.telemetry.capture_content else frozenset[str]())
        self.traces = Traces(store, self.bus, resolve_traces(settings.telemetry, os.environ),
                             clock=clock, redact=Redactor(secrets)
                             if settings.telemetry.capture_content else None,
                             database_url=settings.database_url,
                             store_options=settings.store_options(), secrets=secrets)
        #: Finished runs as JSON lines and preference pairs (``GET /v1/export/...``).
        self.dataset = Dataset(store)
        #: Named secrets: sealed at rest, resolved only where a setting uses one.
        self.secrets = Secrets(SecretStore(store.engine), key_file=settings.secrets_key_path,
                               environ=os.environ, tenant_exists=self.identity.tenants.exists,
                               on_values=lambda forms: reconfigure_logs(secrets=forms))
        self.executors.secret_values = lambda tenant, agent: self.secrets.values(
            tenant=tenant, agent=agent)
        self.runs.secret_values = self.sessions.secret_values = \
            self.executors.secret_values
        self.agents.async_checks.append(self.secrets.check_settings)
        self.executors.secret_source = lambda tenant, agent, redactor: RunSecrets(
            self.secrets, tenant=tenant, agent=agent, redactor=redactor)
        #: OAuth for agents' MCP servers: logins, tokens kept as secrets, refreshes.
        self.mcp_oauth = make_logins(settings, store, self.secrets, clock)
        self.executors.mcp_tokens = self.mcp_oauth.source
        #: The MCP door's bearer tokens of [mcp.oauth]'s issuer (None: it takes none).
        self.mcp_resource = make_resource(settings, clock)
        #: Telegram bots (``settings.channels.telegram``): webhook in, replies out.
        self.telegram = TelegramChannel(self, TelegramStore(store.engine),
                                        settings.channels.telegram)
        self.agents.checks.append(self.telegram.check_settings)
        #: The daemon at a glance (``GET /v1/overview``).
        self.overview = make_overview(self)
        #: Prometheus metrics (``GET /metrics``; None: ``[telemetry] metrics = false``).
        self.metrics = make_metrics(self) if settings.telemetry.metrics else None
        self.housekeeper = Housekeeper(clock)
        self._register_jobs()
        #: Configuration reloads (SIGHUP, ``POST /v1/admin/reload``): agentd.assembly.reload.
        self.reloader = Reloader(settings, load=reload_from, audit=self.identity.audit)
        install_reload(self, self.reloader)
        #: This daemon's hold on its node id on a shared database (None: SQLite).
        self.node_claim = NodeClaim.of(store.engine, settings.node_id)
        #: Called when this daemon must stop at once (its node id was taken while it
        #: was cut off from the database); the daemon's server exits too.
        self.on_fatal: Callable[[], object] = self.begin_shutdown
        self._guards: list[asyncio.Task[None]] = []

    def _register_jobs(self) -> None:
        s, register = self.settings, self.housekeeper.register
        register(Job(name="renew", period_s=s.lease_ttl_s / 3, run=self.leases.renew))
        register(Job(name="take_over", period_s=s.lease_ttl_s / 2, run=self._take_over))
        if self.limits_gate is not None:
            # The shared slots of this node's calls in flight live as long as leases.
            register(Job(name="limit_slots", period_s=s.lease_ttl_s / 3,
                         run=self.limits_gate.renew))
        if self.nodes.enabled:
            register(Job(name="nodes", period_s=s.node_check_s, run=self.nodes.check))
        if s.agent_idle_s > 0:
            register(Job(name="sleep", period_s=min(max(s.agent_idle_s / 4, 0.05), 30.0),
                         run=self._sleep_idle))
        if s.session_ttl_s > 0:
            register(Job(name="expire",
                         period_s=min(max(s.session_ttl_s / 4, 0.05), 60.0),
                         run=self._expire_sessions))
        if self.workspaces is not None and s.sandbox.snapshot_gc_s > 0:
            register(Job(name="snapshots", period_s=s.sandbox.snapshot_gc_s,
                         run=self._collect_snapshots))
        register(Job(name="shells", period_s=min(max(s.sandbox.shell_idle_s / 4, 1.0), 60.0),
                     run=self._close_idle_shells))
        # The uids of deleted agents this node used, swept to be given again.
        register(Job(name="sandbox_uids", period_s=60.0, run=self.sandboxes.reclaim))
        # A crash loses only what the index learnt since: it catches up from the store.
        register(Job(name="memory_index", period_s=300.0, run=self.entries.save_indexes))
        # What the run-end hook missed (another node ended a parent, a crash between).
        register(Job(name="subtasks", period_s=30.0, run=self.subtasks.reconcile))
        register(Job(name="heartbeat", period_s=1.0, run=self.heartbeat.tick))
        register(Job(name="telegram_inbox", period_s=3600.0, run=self.telegram.prune))
        # Refusals past the per-minute cap are summed up once their minute is over.
        register(Job(name="audit", period_s=30.0, run=self._roll_audit))
        if not self.exclusive:
            # Tokens revoked and quotas changed on another node apply here within this.
            register(Job(name="identity", period_s=1.0, run=self.identity.poll))
        register(Job(name="webhook_deliveries", period_s=3600.0, run=self.webhooks.prune))
        # Scratch workspaces of forks that will not run again (cancelled in the queue).
        register(Job(name="fork_copies", period_s=600.0, run=self.forks.sweep))
        if self.browsers is not None:
            register(Job(name="browsers", period_s=min(max(s.browser.idle_s / 4, 0.05), 60.0),
                         run=self.browsers.close_idle))

    @classmethod
    async def open(cls, settings: Settings, *, clock: Clock = SYSTEM,
                   reload_from: Callable[[], Settings] | None = None) -> Runtime:
        # The home holds every conversation, the token and the snapshots: this user's.
        await asyncio.to_thread(ensure_home, settings.home)
        for deprecated in settings.deprecations():
            log.warning("%s", deprecated)
        store = await open_store(settings.database_url, settings.store_options(), clock=clock)
        log.info("store: %s, synchronous = %s", store.dialect, store.synchronous)
        runtime = cls(settings, store, clock=clock, reload_from=reload_from)
        try:
            await runtime.start()
        except BaseException:
            await runtime.nodes.stop()
            await store.close()
            if runtime.node_claim is not None:
                await runtime.node_claim.release()
            raise
        return runtime

    async def start(self) -> None:
        self.started_at = self.clock.time()
        if self.node_claim is not None:
            # First: a second daemon under a node id in use must not touch its runs.
            await self.node_claim.acquire()
        if self.browsers is not None:
            why = await asyncio.to_thread(browser_problem, self.settings.browser)
            if why is not None:
                raise InvalidInput(f"browser.enabled: {why}", field="browser.enabled")
        for module in self.settings.tool_modules:
            log.info("tools from %s: %s", module, ", ".join(self.tools.load_module(module)))
        await self.identity.start()
        await self.agents.start()
        # Stored agents whose settings this version refuses are named now (nothing is
        # changed: their runs fail saying why until the operator fixes them).
        warn_invalid_settings(await self.agents.list_all(), self.settings.sandbox.ceiling)
        await self.sandboxes.start()
        await self.entries.start()
        await self.skills.start()
        if self.settings.demo_agent:
            try:
                await self.store.get_agent("demo")
            except AgentNotFound:
                await self.create_agent(
                    name="demo", model="scripted", instructions=DEMO_INSTRUCTIONS,
                    tools=["calculator", "current_time"], settings={})
        # Runs left under way by a daemon that stopped (this node's, or any whose
        # lease expired) resume from their last committed step, ahead of the runs
        # queued behind them, which start again in their order.
        await self.subtasks.remember_unfinished()
        # This node's liveness lock first (PostgreSQL): held before it takes any run,
        # so that no other node finds it registered and gone.
        await self.nodes.start()
        if self.limits_gate is not None:
            await self.limits_gate.start()  # what this node held before it stopped
        await self.leases.recover()
        await self.subtasks.reconcile()  # parents that ended while the daemon was down
        self.housekeeper.start()
        if not self.exclusive:
            # Other nodes commit to sessions this node's clients may be following.
            self.follower.start()
            assert self.node_claim is not None
            self._guards = [
                asyncio.create_task(self.leases.watch(), name="agentd-cut-off"),
                asyncio.create_task(self.node_claim.hold(
                    self.clock, min(self.settings.lease_ttl_s / 3, 5.0), self._node_taken),
                    name="agentd-node-id")]
        self._accepting = True
        self.schedules.start()
        self.webhooks.start()
        self.evals.start()
        self.telegram.start()
        self.traces.start()
        if self.metrics is not None:
            await self.metrics.start()

    def begin_shutdown(self) -> asyncio.Task[None]:
        """Stop taking work and start winding runs down; idempotent."""
        self._accepting = False
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._wind_down(), name="agentd-shutdown")
        return self._shutdown

    async def _wind_down(self) -> None:
        for guard in self._guards:
            guard.cancel()
        await asyncio.gather(*self._guards, return_exceptions=True)
        await self.schedules.stop()
        await self.webhooks.stop()
        await self.evals.stop()
        await self.hooks.close()
        await self.telegram.close()
        await self.follower.stop()
        await self.affinity.close()
        await self.housekeeper.stop()
        await self.supervisor.shutdown(self.settings.shutdown_grace_s)
        if self.limits_gate is not None:
            await self.limits_gate.close()  # the shared slots and tokens its calls held
        # Its runs parked (their leases released): a lease still held is taken over
        # at once by the first node to find this one gone.
        await self.nodes.stop()
        await self.subtasks.close()
        await self.traces.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        try:
            written = await self.store.checkpoint_changed("shutdown")
            self.bus.publish(written)
        except Exception:
            log.exception("could not checkpoint sessions at shutdown")
        self.bus.close_all()
        await self.adapters.close()
        await self.mcp.close()
        await self.consolidator.close()
        await self.entries.close()
        if self.browsers is not None:
            await self.browsers.close()
        await self.sandboxes.close()
        await self.workers.close()
        await self.overview.disk.close()

    async def close(self) -> None:
        """Shut down (see :meth:`begin_shutdown`) and close the store."""
        await self.begin_shutdown()
        await self.forks.close()
        await self.agents.close()
        await self.identity.close()  # (what is queued for the audit log is written)
        await self.store.close()
        if self.node_claim is not None:
            await self.node_claim.release()

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- housekeeping jobs and service glue ----------------------------------------------

    async def _roll_audit(self) -> int:
        return self.identity.audit.roll()

    async def _node_taken(self) -> None:
        """Another daemon holds this one's node id now (store/nodes.py): stop every
        run here without writing, and shut down."""
        self._accepting = False
        await self.housekeeper.stop()  # (no renewal under the other daemon's name)
        for executor in self.supervisor.executors():
            executor.lose()
        self.on_fatal()

    async def _take_over(self) -> int:
        count = await self.leases.take_over()
        if not self.exclusive:  # other nodes create and delete agents
            await self.agents.recount()
        return count

    async def _sleep_idle(self) -> int:
        names = self.agents.sleep_idle(self.settings.agent_idle_s,
                                       self.supervisor.busy_agents())
        if names:
            log.debug("put %d idle agent(s) to sleep", len(names))
        return len(names)

    async def _expire_sessions(self) -> int:
        ttl = self.settings.session_ttl_s
        expired = await self.store.expire_sessions(self.clock.time() - ttl)
        for session_id, _agent_id, key in expired:
            self.histories.drop(session_id)
            self.bus.close_session(session_id)
            log.info("session %r expired after %.0f s idle", key, ttl)
        return len(expired)

    async def _collect_snapshots(self) -> int:
        """Drop workspace snapshot objects no session's log refers to any more."""
        assert self.workspaces is not None
        removed = await self.workspaces.collect(await self.store.snapshot_refs())
        if removed:
            log.info("removed %d unreferenced snapshot object(s)", removed)
        return removed

    async def _close_idle_shells(self) -> int:
        return len(await self.sandboxes.shells.expire())

    def _agent_slept(self, agent: AgentRecord) -> None:
        self.histories.drop_agent(agent.id)
        self.kernel.budgets.forget("agent", agent.id)
        self.adapters.release_later(agent.id)
        if self.browsers is not None:
            self.browsers.close_agent_later(agent.id)
        if self._accepting:
            self.consolidator.when_idle(agent)

    async def _usage_total(self, scope: str, key: str, since: str) -> tuple[int, float]:
        """Tokens and cost of an agent (by id) or a tenant since a day, from the ledger."""
        if scope == "agent":
            return await self.store.usage_total(since=since, agent_id=key)
        return await self.store.usage_total(since=since, tenant=key)

    async def _read_after(self, session_id: str, after: int) -> list[EventRecord]:
        return await self.store.read_events(session_id, after=after)

    # -- agents ------------------------------------------------------------------------

    async def create_agent(self, *, name: str, model: str | None = None,
                           instructions: str = "", tools: list[str] | None = None,
                           settings: dict[str, Any] | None = None,
                           actor: Principal | None = None) -> AgentRecord:
        """Create an agent; ``actor``: who asks (its role decides the operator-only
        settings; its name is audited). None: the runtime's own, or an embedder's."""
        agent = await self.agents.create(
            name=name, model=model, instructions=instructions, tools=list(tools or []),
            settings=dict(settings or {}), actor=actor)
        self.heartbeat.refresh(agent.id, agent.name, agent.settings)
        return agent

    async def get_agent(self, name: str) -> AgentRecord:
        return await self.agents.get(name)

    async def list_agents(self) -> list[AgentRecord]:
        """Every agent, as stored (listing wakes none of them)."""
        return await self.agents.list_all()

    async def agent_page(self, *, limit: int | None = None, after: str | None = None,
                         q: str | None = None, states: list[str] | None = None,
                         names: list[str] | None = None) -> AgentPage:
        """Agents by name, filtered by a part of the name and states, ``limit`` at a
        time after the name ``after`` (wakes none of them); ``names``: only these (a
        token's scope)."""
        return await self.store.agent_page(limit=limit, after=after, q=q,
                                           states=states or [], names=names)

    async def stored_agent(self, name: str) -> AgentRecord:
        """The agent as stored, without waking it (:class:`AgentNotFound` if none)."""
        return await self.store.get_agent(name)

    async def find_agent(self, name: str) -> AgentRecord:
        """The agent named ``name`` as this node holds it when it is awake (no store
        read: what :meth:`send` reads too), else as stored, without waking it;
        :class:`AgentNotFound` if none. For a door's per-request check."""
        agent = self.agents.held(name)
        return agent if agent is not None else await self.store.get_agent(name)

    async def update_agent(self, name: str, fields: dict[str, Any], *,
                           actor: Principal | None = None) -> AgentRecord:
        agent = await self.agents.update(name, fields, actor=actor)
        self.heartbeat.refresh(agent.id, agent.name, agent.settings)
        return agent

    async def delete_agent(self, name: str, *, actor: Principal | None = None) -> None:
        agent_id = (await self.agents.get(name)).id
        await self.lifecycle.delete(name, actor)
        self.heartbeat.forget(agent_id)
        self.telegram.forget(agent_id)
        # Its entries went with it (the store's delete); their index goes too.
        self.entries.forget_agent(agent_id)

    # -- heartbeat (agentd.autonomy.heartbeat) -----------------------------------------

    async def get_heartbeat(self, name: str) -> dict[str, Any]:
        """The agent's heartbeat settings and state (last beat, outcome, next, skip)."""
        return await self.heartbeat.show(name)

    async def update_heartbeat(self, name: str, patch: dict[str, Any], *,
                               actor: Principal | None = None) -> dict[str, Any]:
        """Change keys of ``settings.heartbeat`` (see :meth:`HeartbeatService.update`)."""
        return await self.heartbeat.update(name, patch, actor=actor)

    # -- adapters (agentd.adapters) ------------------------------------------------------

    async def adapter_of(self, name: str) -> Any:
        """The adapter instance answering the agent's turns (made and initialised now
        if it was not): what a protocol door calls the adapter's own hooks on.
        :class:`InvalidInput` if the agent is not adapter-backed."""
        agent = await self.agents.get(name)
        model = self.agents.model_for(agent)
        if not isinstance(model, AdapterModel):
            raise InvalidInput(f"agent {name!r} is not backed by an adapter "
                               f"(its model is {agent.model!r})", field="agent")
        return await self.adapters.get(agent.id, model)

    async def configure_adapter(self, name: str, config_path: str | None) -> None:
        """Give the agent's adapter ``initialize(config_path=...)`` from its next
        initialisation on (termo-agent's ``--config``; None: no path)."""
        agent = await self.agents.get(name)
        if config_path is None:
            self.adapters.config_paths.pop(agent.id, None)
        else:
            self.adapters.config_paths[agent.id] = config_path

    def keep_awake(self, name: str) -> None:
        """Never put the agent to sleep when idle (its adapter is not shut down)."""
        self.agents.kept_awake.add(name)

    async def restart_adapter(self, name: str) -> None:
        """Shut the agent's adapter down; the next turn (or :meth:`adapter_of`)
        makes and initialises a fresh one."""
        agent = await self.agents.get(name)
        await self.adapters.release(agent.id)

    async def set_state(self, name: str, action: str) -> AgentRecord:
        return await self.lifecycle.set_state(name, action)

    def settings_errors(self, agent: AgentRecord) -> list[dict[str, str]]:
        """What this version refuses in the agent's stored settings (empty if valid)."""
        return self.agents.settings_errors(agent)

    def workspace_of(self, agent: AgentRecord) -> Any:
        return self.agents.workspace_of(agent)

    def is_awake(self, name: str) -> bool:
        """Whether the agent named ``name`` is awake on this node."""
        return self.agents.is_awake(name)

    async def reload(self, *, actor: Principal | None = None, trigger: str = "api"
                     ) -> ReloadOutcome:
        """Read the configuration again and apply what can change live; report what
        needs a restart (:mod:`agentd.assembly.reload`). A configuration that cannot
        be loaded changes nothing: :class:`~agentd.assembly.reload.ConfigInvalid`."""
        return await self.reloader.reload(actor=actor, trigger=trigger)

    def on_reload(self, fields: Sequence[str], prepare: Prepare) -> None:
        """Have a part outside the runtime (the server's request layer) take changes
        of the live ``fields`` on a reload (see :meth:`Reloader.on_reload`)."""
        self.reloader.on_reload(fields, prepare)

    def kernel_metrics(self) -> dict[str, Any]:
        """The kernel's scheduler, breakers and budgets now (``GET /v1/kernel``)."""
        return self.kernel.metrics()

    @property
    def awake_agents(self) -> int:
        return self.agents.awake

    def sleep_idle_agents(self, idle_s: float) -> list[str]:
        """Put agents idle for ``idle_s`` (and with no run held here) to sleep."""
        return self.agents.sleep_idle(idle_s, self.supervisor.busy_agents())

    def permissions_for(self, agent: PolicyConfig, session: PolicyConfig | None) -> Policy:
        """The layered policy of an agent's session (daemon < agent < session)."""
        return permissions_for(self.settings, agent, session)

    # -- sessions ----------------------------------------------------------------------

    async def list_sessions(self, name: str) -> list[SessionRecord]:
        """Every session of the agent, most recent activity first."""
        return await self.sessions.of_agent(name)

    async def session_page(self, name: str, *, limit: int = 100, after: str | None = None,
                           q: str | None = None) -> SessionPage:
        """At most ``limit`` (1-1000) of the agent's sessions whose keys contain ``q``
        (any case), most recent activity first (``updated_at``, then id, descending),
        after the cursor ``after``: ``next_after`` of the page before (None on the
        last page). Wakes nothing."""
        return await self.sessions.page_of_agent(name, limit=limit, after=after, q=q)

    async def get_session(self, name: str, key: str) -> tuple[AgentRecord, SessionRecord]:
        return await self.sessions.get_session(name, key)

    async def delete_session(self, name: str, key: str) -> None:
        await self.sessions.delete(name, key)

    async def read_events(self, session_id: str, after: int = 0, limit: int | None = None,
                          before: int | None = None) -> list[EventRecord]:
        """Events with ``after < seq``, oldest first; with ``before``, the last ``limit``
        of those below it (a page read backwards)."""
        return await self.sessions.read_events(session_id, after=after, limit=limit,
                                               before=before)

    def subscribe(self, session_id: str, buffer: int | None = None) -> Subscription:
        return self.sessions.subscribe(session_id, buffer)

    async def snapshot_changes(self, name: str, ref: str, *, against: str | None = None,
                               session: str | None = None, seq: int | None = None
                               ) -> dict[str, Any]:
        """The files one of the agent's workspace snapshots changed (see
        :meth:`Sessions.snapshot_changes`)."""
        return await self.sessions.snapshot_changes(name, ref, against=against,
                                                    session=session, seq=seq)

    async def follow(self, session_id: str, after: int = 0, *,
                     known: list[EventRecord] | None = None,
                     heartbeat_s: float | None = None,
                     subscription: Subscription | None = None
                     ) -> AsyncIterator[EventRecord | Token | None]:
        """The session's events after seq ``after``, in order with no gap, then live
        ones with the live tokens between them (:func:`agentd.runtime.bus.follow`),
        ``None`` after ``heartbeat_s`` of quiet. ``known``: committed events right after
        ``after`` the caller holds (a send's). ``subscription``: one the caller opened
        earlier, so that nothing since then is missed. The subscription is closed when
        the iteration ends, however it ends."""
        sub = subscription if subscription is not None else self.subscribe(session_id)
        try:
            async for item in follow(sub, partial(self.read_events, session_id), after,
                                     known, heartbeat_s=heartbeat_s):
                yield item
        finally:
            sub.close()

    def subscribe_all(self) -> Feed[EventRecord]:
        """Every session's events as they are committed."""
        return self.bus.subscribe_all()

    def subscribe_activity(self) -> Feed[FeedItem]:
        """Every session's events and every change to an agent, as they are committed
        (the activity feed)."""
        return self.bus.subscribe_activity()

    async def session_names(self, session_ids: list[str]) -> dict[str, tuple[str, str]]:
        """The agent name and key of each session that still exists."""
        return await self.store.session_names(session_ids)

    async def create_checkpoint(self, name: str, key: str, checkpoint_name: str | None = None
                                ) -> CheckpointRecord:
        return await self.sessions.create_checkpoint(name, key, checkpoint_name)

    async def list_checkpoints(self, name: str, key: str) -> list[CheckpointRecord]:
        return await self.sessions.list_checkpoints(name, key)

    async def get_checkpoint(self, checkpoint_id: str
                             ) -> tuple[CheckpointRecord, str, SessionRecord]:
        return await self.sessions.get_checkpoint(checkpoint_id)

    async def restore(self, name: str, key: str, *, seq: int | None = None,
                      checkpoint: str | None = None) -> tuple[SessionRecord, EventRecord]:
        return await self.sessions.restore(name, key, seq=seq, checkpoint=checkpoint)

    async def fork(self, name: str, key: str, *, new_key: str | None = None,
                   seq: int | None = None, checkpoint: str | None = None) -> SessionRecord:
        return await self.sessions.fork(name, key, new_key=new_key, seq=seq,
                                        checkpoint=checkpoint)

    async def set_session_policy(self, name: str, key: str, policy: dict[str, Any] | None,
                                 *, actor: Principal | None = None) -> SessionRecord:
        return await self.sessions.set_session_policy(name, key, policy, actor=actor)

    async def add_messages(self, name: str, key: str, messages: Sequence[MessageAddedData],
                           *, create: bool = False, expect_seq: int | None = None,
                           on_new_session: Callable[[list[str]], None] | None = None
                           ) -> tuple[SessionRecord, list[EventRecord]]:
        """Add messages to a session's conversation without a run, between its runs
        (409 ``session_busy`` while one is active); see :meth:`SessionOps.add_messages`."""
        return await self.sessions.add_messages(name, key, messages, create=create,
                                                expect_seq=expect_seq,
                                                on_new_session=on_new_session)

    async def compact_session(self, name: str, key: str, *,
                              strategy: CompactionStrategy | None = None,
                              keep_turns: int | None = None) -> Compaction:
        """Compact a session's older turns now (see :meth:`Compactor.compact`); the
        agent's ``settings.memory.compaction`` gives what is not given here."""
        return await self.compactor.compact(name, key, strategy=strategy,
                                            keep_turns=keep_turns)

    def takes_images(self, agent: AgentRecord) -> bool:
        """Whether the agent's model takes images and PDFs (not known to: yes)."""
        info = self.catalog.get(agent.model)
        return info is None or info.vision is not False

    async def session_blob(self, name: str, key: str, sha256: str) -> tuple[str, bytes]:
        """An image or file the session refers to: its media type and bytes (404 when
        it refers to none of that hash, whatever another session holds)."""
        _, session = await self.sessions.get_session(name, key)
        found = await self.store.blob(session.id, sha256)
        if found is None:
            raise NotFound(f"blob {sha256} not found in session {key!r}",
                           code="blob_not_found")
        return found

    async def session_context(self, name: str, key: str) -> SessionHistory:
        """The session's conversation as the model sees it (compactions applied)."""
        agent, session = await self.sessions.get_session(name, key)
        return await self.histories.get(session.id, agent_id=agent.id)

    # -- messages and runs -------------------------------------------------------------

    def on_new_session(self, check: Callable[[list[str]], None]) -> Also:
        """An ``also`` for :meth:`send`: when the message creates its session, ``check``
        is called in the accepting transaction with the names of the other agents that
        have a session of the same key, and raises to refuse the message (a door whose
        sessions are one agent's: LangGraph's threads)."""
        return self.store.on_new_session(check)

    async def send(self, name: str, key: str, content: str, *,
                   idempotency_key: str | None = None, mode: str = "enqueue",
                   priority: str | None = None, stream: bool = False,
                   origin: Mapping[str, Any] | None = None,
                   also: Callable[[Tx, Accepted], None] | None = None,
                   start: bool = False, follow: bool = False,
                   attachments: Attachments | None = None) -> SendResult:
        """Accept a message (see :meth:`Runs.send`; ``start``: the sender waits for
        the run, which starts in the accepting commit when its session is idle;
        ``follow``: the result holds the session's subscription, opened before the run
        can commit anything more, for :meth:`follow`). An ``origin["output_schema"]``
        (the sender's structured output) is checked here, for every door.
        ``attachments``: the message's parts, checked (:meth:`Media.prepare`); its
        text is then their text, not ``content``, and their blobs are written with it
        (refused first if the agent's model takes no images)."""
        if attachments is not None and attachments.media:
            agent = await self.get_agent(name)
            tenant = tenant_of(agent.settings) or DEFAULT_TENANT
            await resolve_blobs(self.store, tenant, attachments)
            check_vision(self.catalog, agent, attachments)
            content = attachments.content
            origin, also = with_blobs(self.store, tenant, attachments, origin, also,
                                      self.guard.quotas.quota(tenant, "storage_bytes"))
        if origin is not None and "output_schema" in origin:
            # (Off the event loop: a large schema's meta-schema check takes a while.)
            await asyncio.to_thread(_check_output_schema, origin["output_schema"], mode)
            agent = await self.get_agent(name)
            try:
                why = runs_no_loop(agent.model, stored_settings(agent.settings))
            except InvalidInput:
                why = None  # (settings this version refuses: its runs fail saying so)
            if why is not None:
                raise InvalidInput(f"output_schema: agent {name!r} cannot be held to it: "
                                   f"{why}", field="output_schema")
        sent = await self.runs.send(name, key, content, idempotency_key=idempotency_key,
                                    mode=mode, priority=priority, stream=stream,
                                    origin=origin, also=also, start=start)
        if follow and not sent.duplicate:
            sent.subscription = self.subscribe(sent.session.id)
        return sent

    async def wait_idle(self) -> None:
        """Return once nothing is under way on this node: no run is being driven (the
        ones given to it have ended, parked or stayed queued) and no housekeeping job
        runs. After moving a :class:`agentd.testing.FakeClock`, or to check that
        nothing more happens, tests wait for this instead of sleeping."""
        while True:
            await self.supervisor.idle()
            await self.housekeeper.idle()  # (a job may have given this node a run)
            if not self.supervisor.busy:
                return

    async def wait(self, run_id: str) -> RunRecord:
        """Wait until the run settles (or waits for a decision); return it as stored."""
        return await self.runs.wait(run_id)

    async def get_run(self, run_id: str) -> tuple[RunRecord, str, str]:
        return await self.runs.get(run_id)

    async def replay(self, run_id: str) -> dict[str, Any]:
        """Run a finished run again from its log, in a scratch session, calling no model
        and running no tool, and compare the two (:mod:`agentd.runtime.replay`)."""
        return await self.replays.replay(run_id)

    async def run_trace(self, run_id: str) -> dict[str, Any]:
        """The spans of a run, built from its log, as OTLP/JSON (agentd.telemetry)."""
        return self.traces.as_otlp_json(await self.traces.run_trace(run_id))

    async def session_trace(self, name: str, key: str) -> dict[str, Any]:
        """The spans of a session's runs, built from its log, as OTLP/JSON."""
        _, session = await self.get_session(name, key)
        return self.traces.as_otlp_json(await self.traces.session_trace(session.id))

    async def export_runs(self, flt: ExportFilter, *, pairs: bool = False,
                          context: bool = False, denied: bool = False,
                          max_chars: int | None = None) -> AsyncIterator[bytes]:
        """Finished runs (or, ``pairs``, preference pairs) as JSON lines, read a page at
        a time as they are sent (:mod:`agentd.telemetry.dataset`); the filter is checked
        and the agent looked up now, before the first line."""
        if flt.agent is not None:
            await self.stored_agent(flt.agent)
        cap = {} if max_chars is None else {"max_chars": max_chars}
        if pairs:
            return self.dataset.pairs(flt, denied=denied, **cap)
        return self.dataset.runs(flt, context=context, **cap)

    async def cancel_run(self, run_id: str) -> tuple[RunRecord, str, str]:
        return await self.runs.cancel(run_id)

    async def decide(self, run_id: str, action: str, output: str | None = None, *,
                     actor: Principal | None = None) -> tuple[RunRecord, str, str]:
        """Settle what a run waits on by the run's id (see :class:`ApprovalDesk`)."""
        await self.approvals.decide_run(run_id, action, output, actor=actor)
        return await self.store.run_context(run_id)

    async def list_subtasks(self, run_id: str) -> list[SubtaskRecord]:
        """The child runs ``run_id`` started (:class:`RunNotFound` if no such run)."""
        await self.store.get_run(run_id)
        return await self.store.subtasks_of(run_id)

    async def list_runs(self, *, agent: str | None = None, session: str | None = None,
                        statuses: list[str] | None = None, since: float | None = None,
                        cursor: str | None = None, limit: int = 50,
                        agents: list[str] | None = None, count: bool = False) -> RunPage:
        """Runs across agents, newest first, a page at a time (``RunPage.next_cursor``);
        :class:`AgentNotFound` for an ``agent`` that does not exist. ``agents``: only
        these agents' runs (a token's scope); ``count``: ``RunPage.total`` counts every
        match."""
        if agent is not None:
            await self.stored_agent(agent)
        return await self.store.list_runs(agent=agent, session=session,
                                          statuses=statuses or [], since=since,
                                          cursor=cursor, limit=limit, agents=agents,
                                          count=count)

    # -- status ----------------------------------------------------------------------

    async def usage_report(self, *, group_by: list[str], since: str | None = None,
                           until: str | None = None, agent: str | None = None,
                           tenant: str | None = None) -> list[dict[str, Any]]:
        """Tokens and cost from the usage ledger, one row per group (see
        :meth:`Store.usage_report`)."""
        return await self.store.usage_report(group_by=group_by, since=since, until=until,
                                             agent=agent, tenant=tenant)

    async def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self._accepting else "stopping",
            "version": __version__,
            "store": self.store.dialect,
            **self.sandboxes.health(),
            "node": self.node_id,
            "node_lock": self.nodes.status(),
            "agents": self.agents.count,
            "agents_awake": self.agents.awake,
            "agents_sleeping": max(self.agents.count - self.agents.awake, 0),
            "active_runs": self.supervisor.active_runs,
            "model_calls_queued": self.kernel.scheduler.queued(),
            "queued_runs": self.supervisor.queued_runs,
            "uptime_s": round(self.clock.time() - self.started_at, 3),
            "traces": self.traces.status(),
        }


def _check_output_schema(schema: Any, mode: str) -> None:
    """A message's ``output_schema``: a JSON Schema agentd can hold an answer to, for a
    message that starts a run of its own (a steered one joins a run under way)."""
    check_schema(schema, "output_schema")
    if mode == "steer":
        raise InvalidInput("output_schema needs a run of its own: a steered message joins "
                           "the run under way (use mode enqueue or interrupt)",
                           field="output_schema")
