"""The Runtime facade: what the server (or an embedding program) calls.

It owns the store, the event bus, the supervisor and the housekeeper, and keeps
the agents that are awake (their records, resolved models and recent session
histories) in memory. An agent idle for ``agent_idle_s`` is put to sleep: all of
that is dropped, and the next message, decision or run wakes it from the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from agentd import __version__
from agentd.config import PRIORITIES, AgentSandbox, Budget, Settings
from agentd.errors import (
    AgentNotAccepting,
    AgentNotFound,
    Conflict,
    InvalidInput,
    InvalidModel,
    ShuttingDown,
)
from agentd.llm.catalog import Catalog
from agentd.llm.model import Model
from agentd.llm.registry import resolve_model
from agentd.runtime._agent_settings import (
    check_agent_settings,
    check_mcp_commands,
    mcp_servers,
    sandbox_settings,
)
from agentd.runtime._session_ops import SessionOps, check_session_key
from agentd.runtime.approvals import ApprovalDesk
from agentd.runtime.budgets import BudgetBook, parse_budget
from agentd.runtime.bus import EventBus, Subscription
from agentd.runtime.calls import Kernel, Target
from agentd.runtime.history import HistoryCache
from agentd.runtime.housekeeping import Housekeeper
from agentd.runtime.kernel import BreakerSettings, RetryPolicy
from agentd.runtime.loop import CallPolicy, RunExecutor
from agentd.runtime.sandboxes import Sandboxes
from agentd.runtime.scheduler import LaneLimits, Scheduler
from agentd.runtime.supervisor import Supervisor
from agentd.runtime.workspaces import SessionWorkspace, WorkspaceKeeper
from agentd.sandbox.backends import Limits
from agentd.security.policy import PolicyConfig, parse_policy
from agentd.security.tokens import ensure_home
from agentd.store import Lease, LeaseLost, NewEvent, RunUpdate, Store, open_store
from agentd.store.records import (
    AgentRecord,
    EventRecord,
    RunRecord,
    SessionRecord,
)
from agentd.tools import COMMAND_TOOLS, FILE_TOOLS, ToolRegistry
from agentd.tools._workers import WorkerPool
from agentd.tools.mcp import MCPManager, MCPServer

__all__ = ["Runtime", "SendResult"]

log = logging.getLogger(__name__)

AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
MODES = ("enqueue", "reject", "interrupt", "steer")
_SETTING_NAMED = re.compile(r"\bsettings\.([A-Za-z_]+)")
#: Model settings a fallback of another provider inherits from the agent's (the rest,
#: such as base_url and api_key_env, belong to the primary's provider).
_PORTABLE_SETTINGS = ("max_tokens", "temperature", "timeout_s", "max_retries")

#: Tools that read or change the workspace: an agent with any of them has its
#: workspace snapshotted (and checked for changes from outside).
WORKSPACE_TOOLS = frozenset(FILE_TOOLS) | frozenset(COMMAND_TOOLS)

DEMO_INSTRUCTIONS = (
    "You are the agentd demo agent. Try: /tool calculator {\"expression\": \"6 * 7\"} "
    "or /tool current_time {}."
)


def check_agent_name(name: str) -> str:
    if not AGENT_NAME.match(name):
        raise InvalidInput(
            f"invalid agent name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit", field="body.name")
    return name


@dataclass(kw_only=True, slots=True)
class _Prepared:
    """What the sender already knows about a run, so starting it needs no reads."""

    run: RunRecord
    session_key: str
    min_seq: int
    session_policy: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class _Plan:
    """An awake agent's resolved models and what its runs may spend."""

    key: tuple[str, str]
    targets: list[Target]
    budget: Budget
    #: The budget has some limit (worked out once: pydantic's dumps are not free).
    budgeted: bool
    #: The agent's policy layer, sandbox settings and MCP servers, parsed once.
    policy: PolicyConfig
    sandbox: AgentSandbox
    #: The daemon's sandbox limits lowered by the agent's.
    limits: Limits
    mcp: list[MCPServer]


@dataclass(kw_only=True, slots=True)
class SendResult:
    agent: AgentRecord
    session: SessionRecord
    run: RunRecord
    events: list[EventRecord]
    duplicate: bool


class Runtime(SessionOps):
    """Agents, sessions and runs on one store, driven by one supervisor."""

    def __init__(self, settings: Settings, store: Store, tools: ToolRegistry | None = None
                 ) -> None:
        self.settings = settings
        self.store = store
        self.tools = tools or ToolRegistry()
        self.bus = EventBus()
        self.histories = HistoryCache(self._read_after)
        sandbox = settings.sandbox
        #: Workspace snapshots (None: switched off in the config).
        self.workspaces = (WorkspaceKeeper(settings.home / "snapshots",
                                           max_bytes=sandbox.snapshot_max_mb << 20)
                           if sandbox.snapshots else None)
        #: SQLite is one daemon's alone (the home lock): its leases need no waiting
        #: out, and every queued run was accepted here. PostgreSQL may be shared.
        self.exclusive = store.dialect == "sqlite"
        self.node_id = settings.node_id
        self.lease = Lease(owner=settings.node_id, ttl=settings.lease_ttl_s)
        self.approvals = ApprovalDesk(self)
        #: Connections to agents' MCP servers (``settings.mcp``).
        self.mcp = MCPManager()
        #: Sandbox backends, limits and persistent shells for commands.
        self.sandboxes = Sandboxes(settings.sandbox, self.store,
                                   daemon_ports=(settings.port,))
        #: Worker processes for CPU-bound tools and the command analyser.
        self.workers = WorkerPool(size=settings.tool_workers,
                                  per_owner=settings.tool_workers_per_agent,
                                  memory_mb=settings.tool_worker_memory_mb)
        self.supervisor = Supervisor(self._build_executor, self._cancel_queued,
                                     None if self.exclusive else self.store.next_queued)
        self.housekeeper = Housekeeper(self)
        #: Context windows, output limits and prices (package data + home override).
        self.catalog = Catalog.load(settings.home / "models.toml")
        self._catalogued = {spec.partition(":")[0] for spec in self.catalog.models}
        #: Every model call goes through the kernel: scheduler, breakers, budgets.
        self.kernel = Kernel(
            Scheduler({name: LaneLimits(**lim.model_dump())
                       for name, lim in settings.providers.items()},
                      class_weights=settings.priority_weights,
                      tenant_weights={name: t.weight
                                      for name, t in settings.tenants.items()}),
            BudgetBook(self._usage_total, shared=not self.exclusive),
            retry=RetryPolicy(attempts=settings.retry_attempts,
                              base_s=settings.retry_base_s, max_s=settings.retry_max_s),
            breaker=BreakerSettings(failures=settings.breaker_failures,
                                    cooldown_s=settings.breaker_cooldown_s,
                                    max_cooldown_s=settings.breaker_cooldown_s * 10))
        self.kernel.counts_tokens = any(lim.tpm for lim in settings.providers.values())
        # Awake agents only: a sleeping agent has nothing here.
        self._agents: dict[str, AgentRecord] = {}
        self._agents_by_id: dict[str, AgentRecord] = {}
        self._plans: dict[str, _Plan] = {}
        self._last_active: dict[str, float] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        #: Sessions whose events committed elsewhere are being read: the seq to reach.
        self._catching_up: dict[str, int] = {}
        self.agent_count = 0
        self._accepting = False
        self._shutdown: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        # The home holds every conversation, the token and the snapshots: this user's.
        await asyncio.to_thread(ensure_home, settings.home)
        store = await open_store(settings.database_url)
        runtime = cls(settings, store)
        try:
            await runtime.start()
        except BaseException:
            await store.close()
            raise
        return runtime

    async def start(self) -> None:
        self.started_at = time.time()
        for module in self.settings.tool_modules:
            log.info("tools from %s: %s", module, ", ".join(self.tools.load_module(module)))
        self.agent_count = await self.store.count("agents")
        await self.sandboxes.start()
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
        await self.housekeeper.recover()
        self.housekeeper.start()
        if not self.exclusive:
            # Other nodes commit to sessions this node's clients may be following.
            self._listener = asyncio.create_task(
                self.store.engine.listen(self._committed_elsewhere), name="agentd-listen")
        self._accepting = True

    def begin_shutdown(self) -> asyncio.Task[None]:
        """Stop taking work and start winding runs down; idempotent."""
        self._accepting = False
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._wind_down(), name="agentd-shutdown")
        return self._shutdown

    async def _wind_down(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await self.housekeeper.stop()
        await self.supervisor.shutdown(self.settings.shutdown_grace_s)
        try:
            written = await self.store.checkpoint_changed("shutdown")
            self.bus.publish(written)
        except Exception:
            log.exception("could not checkpoint sessions at shutdown")
        self.bus.close_all()
        await self.mcp.close()
        await self.sandboxes.close()
        await self.workers.close()

    async def close(self) -> None:
        """Shut down (see :meth:`begin_shutdown`) and close the store."""
        await self.begin_shutdown()
        for plan in self._plans.values():
            for target in plan.targets:
                await target.model.aclose()
        self._plans.clear()
        await self.store.close()

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- agents --------------------------------------------------------------------

    def _remember(self, agent: AgentRecord) -> AgentRecord:
        """Keep ``agent`` awake (waking it if it slept), as of now."""
        old = self._agents.get(agent.name)
        if old is not None and (old.model, _settings_key(old)) != (agent.model,
                                                                  _settings_key(agent)):
            self._forget_model(agent.name)
        self._agents[agent.name] = agent
        self._agents_by_id[agent.id] = agent
        self._last_active[agent.id] = time.monotonic()
        return agent

    async def _agent_by_id(self, agent_id: str) -> AgentRecord | None:
        agent = self._agents_by_id.get(agent_id)
        if agent is not None:
            self._last_active[agent_id] = time.monotonic()
            return agent
        try:
            return self._remember(await self.store.get_agent(agent_id, by="id"))
        except AgentNotFound:
            return None

    @property
    def awake_agents(self) -> int:
        return len(self._agents)

    def sleep_idle_agents(self, idle_s: float) -> list[str]:
        """Put agents idle for ``idle_s`` (and with no run held here) to sleep: drop
        their record, model and session histories. Returns their names."""
        cutoff = time.monotonic() - idle_s
        busy = self.supervisor.busy_agents()
        asleep = [a for a in self._agents.values()
                  if a.id not in busy and self._last_active.get(a.id, 0.0) <= cutoff]
        for agent in asleep:
            self._sleep(agent)
        return [a.name for a in asleep]

    def _sleep(self, agent: AgentRecord) -> None:
        self._agents.pop(agent.name, None)
        self._agents_by_id.pop(agent.id, None)
        self._last_active.pop(agent.id, None)
        self._forget_model(agent.name)
        self.histories.drop_agent(agent.id)
        self.kernel.budgets.forget("agent", agent.id)

    def _forget_model(self, name: str) -> None:
        plan = self._plans.pop(name, None)
        for target in plan.targets if plan is not None else ():
            task = asyncio.create_task(target.model.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _validate(self, name: str, model: str, tools: list[str], settings: dict[str, Any]
                  ) -> _Plan:
        """Check an agent definition; errors name the field (``details.errors``)."""
        try:
            self.tools.check(tools)
        except InvalidInput as exc:
            raise exc.for_field("body.tools") from None
        check_agent_settings(settings)
        self.sandboxes.check_agent(sandbox_settings(settings))
        info = self.catalog.get(model)
        max_tokens = settings.get("max_tokens")
        if (info is not None and isinstance(max_tokens, int)
                and max_tokens > info.max_output_tokens):
            raise InvalidModel(
                f"settings.max_tokens {max_tokens} is above {info.spec}'s output limit "
                f"of {info.max_output_tokens} tokens", field="body.settings.max_tokens")
        try:
            return self._resolve(name, model, settings)
        except InvalidModel as exc:
            if "errors" in exc.details:
                raise
            setting = _SETTING_NAMED.search(exc.message)
            raise exc.for_field(f"body.settings.{setting.group(1)}" if setting
                                else "body.model") from None
        except ImportError as exc:
            raise InvalidModel(f"the provider for {model!r} is not installed: {exc}",
                               field="body.model") from exc

    async def create_agent(self, *, name: str, model: str | None = None,
                           instructions: str = "", tools: list[str] | None = None,
                           settings: dict[str, Any] | None = None,
                           admin: bool = True) -> AgentRecord:
        """Create an agent; ``admin``: whether whoever asks is one of the daemon's
        admins (only they may name a stdio MCP command off the operator's list)."""
        check_agent_name(name)
        model = model or self.settings.default_model
        tools = list(tools or [])
        settings = dict(settings or {})
        resolved = self._validate(name, model, tools, settings)
        if not admin:
            check_mcp_commands(resolved.mcp, self.settings.mcp_commands)
        agent = await self.store.create_agent(name=name, model=model,
                                              instructions=instructions, tools=tools,
                                              settings=settings)
        try:  # its sandbox uid, given now (a used-up range refuses the agent: 409)
            await self.sandboxes.user(agent.id)
        except Conflict:
            await self.store.delete_agent(name)
            raise
        self.agent_count += 1
        self._plans[name] = replace(resolved, key=(agent.model, _settings_key(agent)))
        return self._remember(agent)

    async def get_agent(self, name: str) -> AgentRecord:
        agent = self._agents.get(name)
        if agent is None:
            return self._remember(await self.store.get_agent(name))  # wakes it
        self._last_active[agent.id] = time.monotonic()
        return agent

    async def list_agents(self) -> list[AgentRecord]:
        """Every agent, as stored (listing wakes none of them)."""
        return await self.store.list_agents()

    async def update_agent(self, name: str, fields: dict[str, Any], *,
                           admin: bool = True) -> AgentRecord:
        current = await self.get_agent(name)
        model = fields.get("model", current.model)
        tools = fields.get("tools", current.tools)
        settings = fields.get("settings", current.settings)
        resolved = self._validate(name, model, tools, settings)
        if not admin:
            check_mcp_commands(resolved.mcp, self.settings.mcp_commands)
        agent = self._remember(await self.store.update_agent(name, fields))
        self._forget_model(name)
        self._plans[name] = replace(resolved, key=(agent.model, _settings_key(agent)))
        return agent

    async def delete_agent(self, name: str) -> None:
        agent = await self.get_agent(name)
        for session in await self.store.list_sessions(agent.id):
            await self.supervisor.cancel_session(session.id, "agent deleted")
            self.histories.drop(session.id)
            await self.sandboxes.close_shells(f"{agent.id}/{session.id}")
        await self.store.delete_agent(name)
        await self.mcp.close(agent.id)
        self.sandboxes.forget(self.workspace_of(agent), agent.id)
        self.agent_count -= 1
        await asyncio.to_thread(shutil.rmtree, self.workspace_of(agent), True)
        self._sleep(agent)

    async def set_state(self, name: str, action: str) -> AgentRecord:
        agent = await self.get_agent(name)
        if action == "pause":
            if agent.state in ("stopped", "error"):
                raise AgentNotAccepting(f"agent {name!r} is {agent.state}; resume it first",
                                        code=f"agent_{agent.state}")
            agent = self._remember(await self.store.set_agent_state(name, "paused"))
            await self._checkpoint_agent(agent, "pause")
        elif action == "resume":
            agent = self._remember(await self.store.set_agent_state(name, "running"))
            await self._start_held_runs(agent)
        elif action == "stop":
            agent = self._remember(await self.store.set_agent_state(name, "stopped"))
            for session in await self.store.list_sessions(agent.id):
                await self.supervisor.cancel_session(session.id, "agent stopped")
            # Runs held in the store while the agent was paused are cancelled too.
            for run in await self.store.runs_with_status(["queued"], agent_id=agent.id):
                await self._cancel_queued(run.id, "agent stopped")
            await self._checkpoint_agent(agent, "stop")
        else:
            raise InvalidInput(f"unknown agent action {action!r}")
        return agent

    async def _checkpoint_agent(self, agent: AgentRecord, kind: str) -> None:
        """Checkpoint each of the agent's sessions changed since its last checkpoint."""
        events = await self.store.checkpoint_changed(kind, agent_id=agent.id)
        self.bus.publish(events)
        for event in events:
            self.histories.offer([event])

    async def _start_held_runs(self, agent: AgentRecord) -> None:
        # Runs held while the agent was paused are still queued in the store.
        for run in await self.store.runs_with_status(["queued"], agent_id=agent.id):
            if not self.supervisor.is_known(run.id):
                self.supervisor.submit(run.session_id, run.id, agent_id=run.agent_id,
                                       order=run.queued_seq)

    def model_for(self, agent: AgentRecord) -> Model:
        """The agent's primary model (resolved once while it is awake)."""
        return self._plan(agent).targets[0].model

    def _plan(self, agent: AgentRecord) -> _Plan:
        key = (agent.model, _settings_key(agent))
        plan = self._plans.get(agent.name)
        if plan is None or plan.key != key:
            if plan is not None:
                self._forget_model(agent.name)
            plan = replace(self._resolve(agent.name, agent.model, agent.settings), key=key)
            self._plans[agent.name] = plan
        return plan

    def _resolve(self, name: str, model: str, settings: dict[str, Any]) -> _Plan:
        """The agent's model chain (``model``, then ``settings.fallbacks``) and budget."""
        chain = [resolve_model(model, settings=settings, agent=name)]
        provider = chain[0].provider
        for index, entry in enumerate(settings.get("fallbacks") or ()):
            field = f"body.settings.fallbacks[{index}]"
            if isinstance(entry, str):
                spec, own = entry, None
            else:
                spec, own = entry.get("model"), entry.get("settings") or {}
            try:
                if own is None:
                    same = spec.partition(":")[0] == provider
                    own = dict(settings) if same else {
                        k: settings[k] for k in _PORTABLE_SETTINGS if k in settings}
                    own.pop("fallbacks", None)
                fallback = resolve_model(spec, settings=own, agent=name)
            except InvalidModel as exc:
                raise InvalidModel(f"settings.fallbacks[{index}]: {exc.message}",
                                   field=field) from None
            if fallback.provider in self._catalogued and self.catalog.get(spec) is None:
                # A fallback runs only when the primary fails: a typo would show then.
                raise InvalidModel(
                    f"settings.fallbacks[{index}]: unknown model {spec!r} (not in the "
                    "model catalog; add it to $AGENTD_HOME/models.toml if it is real)",
                    field=field)
            chain.append(fallback)
        budget = parse_budget(settings.get("budget"))
        sandbox = sandbox_settings(settings)
        return _Plan(key=("", ""), budget=budget, budgeted=not budget.empty,
                     targets=[Target(model=m, info=self.catalog.get(m.spec))
                              for m in chain],
                     policy=parse_policy(settings.get("policy"), "settings.policy",
                                         "body.settings.policy"),
                     sandbox=sandbox, limits=self.sandboxes.limits(sandbox),
                     mcp=mcp_servers(settings))

    # -- sessions ------------------------------------------------------------------

    async def list_sessions(self, name: str) -> list[SessionRecord]:
        agent = await self.get_agent(name)
        return await self.store.list_sessions(agent.id)

    async def get_session(self, name: str, key: str) -> tuple[AgentRecord, SessionRecord]:
        agent = await self.get_agent(name)
        return agent, await self.store.get_session(agent.id, key)

    async def delete_session(self, name: str, key: str) -> None:
        agent, session = await self.get_session(name, key)
        await self.supervisor.cancel_session(session.id, "session deleted")
        await self.store.delete_session(agent.id, key)
        self.histories.drop(session.id)
        await self.sandboxes.close_shells(f"{agent.id}/{session.id}")

    async def read_events(self, session_id: str, after: int = 0, limit: int | None = None
                          ) -> list[EventRecord]:
        return await self.store.read_events(session_id, after=after, limit=limit)

    async def _read_after(self, session_id: str, after: int) -> list[EventRecord]:
        return await self.store.read_events(session_id, after=after)

    def subscribe(self, session_id: str, buffer: int | None = None) -> Subscription:
        return self.bus.subscribe(session_id, buffer)

    # -- messages and runs -------------------------------------------------------------

    async def send(self, name: str, key: str, content: str, *,
                   idempotency_key: str | None = None, mode: str = "enqueue",
                   priority: str | None = None) -> SendResult:
        """Accept a message: committed (message + queued run) before this returns.

        ``mode`` says what a busy session does with it: ``enqueue`` (run it after the
        active run), ``reject`` (409 session_busy), ``interrupt`` (cancel the active run
        at its next step boundary, then run this one) or ``steer`` (the running run
        takes it in at its next step boundary; no new run).

        ``priority`` is the run's class in the kernel's scheduler (``interactive``,
        ``background``, ``batch``); default: the agent's ``settings.priority``, else
        ``background``.
        """
        if mode not in MODES:
            raise InvalidInput(f"unknown mode {mode!r}; use one of {', '.join(MODES)}",
                               field="body.mode")
        if priority is not None and priority not in PRIORITIES:
            raise InvalidInput(f"unknown priority {priority!r}; use one of "
                               f"{', '.join(PRIORITIES)}", field="body.priority")
        if not self._accepting:
            raise ShuttingDown("the daemon is shutting down; retry shortly")
        check_session_key(key)
        agent = await self.get_agent(name)
        if agent.state in ("paused", "stopped", "error"):
            raise AgentNotAccepting(
                f"agent {name!r} is {agent.state} and does not accept messages"
                + ("; resume it first" if agent.state != "error" else ""),
                code=f"agent_{agent.state}")
        accepted = await self.store.accept_message(
            agent_id=agent.id, key=key, content=content, idempotency_key=idempotency_key,
            mode=mode, priority=priority or agent.settings.get("priority") or "background")
        self.bus.publish(accepted.events)
        self.histories.offer(accepted.events)
        if accepted.steered:
            if not self.supervisor.steer(accepted.session.id, accepted.run.id,
                                         accepted.events[-1].seq):
                log.info("run %s was not active here; it reads the steer from the log",
                         accepted.run.id)
        elif not accepted.duplicate:
            self.supervisor.submit(accepted.session.id, accepted.run.id, _Prepared(
                run=replace(accepted.run), session_key=key, min_seq=accepted.events[-1].seq,
                session_policy=accepted.session.policy),
                agent_id=agent.id, order=accepted.run.queued_seq)
            if mode == "interrupt" and accepted.busy_run is not None:
                self.supervisor.stop_at_boundary(accepted.session.id, accepted.busy_run,
                                                 "interrupted by a newer message")
        if agent.state == "created":
            agent = self._remember(await self.store.set_agent_state(name, "running"))
        return SendResult(agent=agent, session=accepted.session, run=accepted.run,
                          events=accepted.events, duplicate=accepted.duplicate)

    async def wait(self, run_id: str) -> RunRecord:
        """Wait until the run settles (or waits for a decision); return it as stored."""
        if run_id in self.supervisor.waiting_runs:
            return await self.store.get_run(run_id)  # waits for a client's decision
        future = self.supervisor.waiter(run_id)
        try:
            if self.supervisor.is_known(run_id):
                settled = await future
                if settled is not None:
                    return settled
            run = await self.store.get_run(run_id)
            # Held while its agent is paused, or owned by another process: poll.
            while not run.terminal and self._accepting:
                await asyncio.wait({future}, timeout=0.5)
                run = await self.store.get_run(run_id)
            return run
        finally:
            self.supervisor.discard_waiter(run_id, future)

    async def get_run(self, run_id: str) -> tuple[RunRecord, str, str]:
        return await self.store.run_context(run_id)

    async def cancel_run(self, run_id: str) -> tuple[RunRecord, str, str]:
        run, agent_name, key = await self.store.run_context(run_id)
        if run.terminal:
            return run, agent_name, key
        reason = "cancelled by request"
        if not await self.supervisor.cancel(run.session_id, run_id, reason):
            # Not held by this process: a paused agent's queued run (settled here), or a
            # run another node drives (asked to cancel it; it does within a third of
            # lease_ttl_s, and this call waits that long for it).
            try:
                await self._cancel_queued(run_id, reason)
            except LeaseLost:
                await self.store.request_cancel(run_id, reason)
                deadline = time.monotonic() + self.lease.ttl / 3 + 2.0
                while time.monotonic() < deadline:
                    run, agent_name, key = await self.store.run_context(run_id)
                    if run.terminal:
                        break
                    await asyncio.sleep(0.1)
        return await self.store.run_context(run_id)

    def _committed_elsewhere(self, session_id: str, seq: int) -> None:
        """A commit to ``session_id``'s log up to ``seq``, by any node: if this node's
        subscribers have not seen it, read it from the log and publish it."""
        if self.bus.behind(session_id, seq) is None:
            return
        if session_id in self._catching_up:
            self._catching_up[session_id] = max(self._catching_up[session_id], seq)
            return
        self._catching_up[session_id] = seq
        task = asyncio.create_task(self._catch_up(session_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _catch_up(self, session_id: str) -> None:
        try:
            while (last := self.bus.behind(session_id, self._catching_up[session_id])
                   ) is not None:
                # Subscribers fill any gap from the log themselves; a fresh subscriber
                # needs only the newest events.
                after = last if last else max(self._catching_up[session_id] - 64, 0)
                events = await self.store.read_events(session_id, after=after, limit=1000)
                if not events:
                    break
                self.bus.publish(events)
        except Exception:
            log.exception("could not read session %s's new events", session_id)
        finally:
            del self._catching_up[session_id]

    def cancel_in_background(self, session_id: str, run_id: str, reason: str) -> None:
        task = asyncio.create_task(self.supervisor.cancel(session_id, run_id, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def decide(self, run_id: str, action: str, output: str | None = None
                     ) -> tuple[RunRecord, str, str]:
        """Settle what a run waits on by the run's id (see :class:`ApprovalDesk`)."""
        await self.approvals.decide_run(run_id, action, output)
        return await self.store.run_context(run_id)

    async def _cancel_queued(self, run_id: str, reason: str) -> None:
        run = await self.store.get_run(run_id)
        if not run.terminal:
            await self._settle(run.session_id, run.id, "cancelled", "run.cancelled",
                               {"reason": reason})

    async def _settle(self, session_id: str, run_id: str, status: str, kind: str,
                      data: dict[str, Any]) -> None:
        """End a run that no executor drives (cancelled while queued, unstartable, or
        found running after a restart), with its error stored on the run too."""
        records = await self.store.append(
            session_id, [NewEvent(kind=kind, run_id=run_id, data=data)], run_id=run_id,
            run=RunUpdate(status=status, error=data.get("error"), finished=True),
            lease=replace(self.lease, acquire=True, head=False))
        self.bus.publish(records)

    async def _build_executor(self, run_id: str, prepared: _Prepared | None
                              ) -> RunExecutor | None:
        if prepared is not None:
            run, session_key, min_seq = prepared.run, prepared.session_key, prepared.min_seq
            session_policy = prepared.session_policy
        else:
            run, _, session_key = await self.store.run_context(run_id)
            min_seq = None
            session_policy = None
        if run.terminal:
            return None
        agent = await self._agent_by_id(run.agent_id)  # wakes it
        if agent is None:
            return None
        if agent.state == "paused":
            return None  # stays queued in the store; resume submits it again
        if agent.state in ("stopped", "error"):
            await self._settle(run.session_id, run.id, "cancelled", "run.cancelled",
                               {"reason": f"agent {agent.state}"})
            return None
        try:
            plan = self._plan(agent)
        except InvalidModel as exc:
            await self._settle(run.session_id, run.id, "failed", "run.failed",
                               {"error": exc.to_dict()})
            self._remember(await self.store.set_agent_state(agent.name, "error"))
            return None
        history = await self.histories.get(run.session_id, min_seq=min_seq,
                                           agent_id=agent.id)
        if prepared is None:
            session_policy = (await self.store.get_session(agent.id, session_key)).policy
        permissions = self.permissions_for(
            plan.policy, None if session_policy is None
            else PolicyConfig.model_validate(session_policy))
        tools = self.tools.resolve(agent.tools)
        notes: list[NewEvent] = []
        servers = plan.mcp
        if servers:
            failures: list[str] = []
            spawn = self.sandboxes.mcp_spawner(
                plan.sandbox, plan.limits, workspace=self.workspace_of(agent),
                network=self.permissions_for(plan.policy, None).network,
                agent_id=agent.id)
            tools = [*tools, *await self.mcp.tools(agent.id, servers, failures=failures,
                                                   spawn=spawn)]
            if failures:
                notes.append(NewEvent(kind="tools.unavailable", run_id=run.id,
                                      data={"errors": failures}))
        workspace = self.workspace_of(agent)
        shell_key = f"{agent.id}/{run.session_id}"
        sandbox = None
        if tools:
            try:
                sandbox = await self.sandboxes.for_run(
                    plan.sandbox, plan.limits, workspace=workspace,
                    permissions=permissions, shell_key=shell_key, agent_id=agent.id)
            except (InvalidInput, Conflict) as exc:
                await self._settle(run.session_id, run.id, "failed", "run.failed",
                                   {"error": exc.to_dict()})
                return None
        keeper = self.workspaces
        workspace_steps = None
        if keeper is not None and any(not t.read_only or t.name in WORKSPACE_TOOLS
                                      for t in tools):
            workspace_steps = SessionWorkspace(
                keeper, agent_id=agent.id, session_id=run.session_id,
                workspace=workspace, history=history,
                budget_bytes=_mb(self.settings.sandbox.snapshot_budget_mb,
                                 plan.sandbox.snapshot_budget_mb),
                quota_bytes=_mb(self.settings.sandbox.workspace_max_mb,
                                plan.sandbox.workspace_max_mb))

        async def on_tainted() -> None:
            await self.sandboxes.close_shells(shell_key)
        return RunExecutor(
            store=self.store, bus=self.bus, run=run, agent_name=agent.name,
            session_key=session_key, history=history, kernel=self.kernel,
            targets=plan.targets, policy=self._policy(agent, plan, run.priority),
            instructions=agent.instructions, tools=tools,
            max_steps=int(agent.settings.get("max_steps") or self.settings.max_steps),
            tool_timeout_s=self.settings.tool_timeout_s, model_settings=agent.settings,
            lease=self.lease, checkpoint_every=self.settings.checkpoint_interval_s or None,
            workspace=workspace, permissions=permissions, workspace_steps=workspace_steps,
            on_tainted=on_tainted, notes=notes, sandbox=sandbox, workers=self.workers,
        )

    def workspace_of(self, agent: AgentRecord) -> Path:
        """The agent's workspace directory (by id: a new agent of an old name starts
        with an empty one)."""
        return self.settings.workspaces_dir / agent.id

    def _policy(self, agent: AgentRecord, plan: _Plan, priority: str) -> CallPolicy:
        settings = agent.settings
        tenant = str(settings.get("tenant") or "default")
        tenant_config = self.settings.tenants.get(tenant)
        tenant_budget = (None if tenant_config is None or tenant_config.budget.empty
                         else tenant_config.budget)
        retries = settings.get("max_retries")
        retry = self.kernel.retry if retries is None else replace(
            self.kernel.retry, attempts=int(retries) + 1)
        return CallPolicy(
            priority=priority if priority in PRIORITIES else "background",
            tenant=tenant, weight=float(settings.get("weight") or 1.0),
            budget=plan.budget, tenant_budget=tenant_budget,
            budgeted=plan.budgeted or tenant_budget is not None,
            retry=retry, park=settings.get("on_outage", "wait") == "wait",
            outage_timeout_s=float(settings.get("outage_timeout_s") or 0.0),
            max_continuations=int(settings.get("max_continuations", 2)))

    async def _usage_total(self, scope: str, key: str, since: str) -> tuple[int, float]:
        """Tokens and cost of an agent (by id) or a tenant since a day, from the ledger."""
        if scope == "agent":
            return await self.store.usage_total(since=since, agent_id=key)
        return await self.store.usage_total(since=since, tenant=key)

    # -- status ----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self._accepting else "stopping",
            "version": __version__,
            "store": self.store.dialect,
            **self.sandboxes.health(),
            "node": self.node_id,
            "agents": self.agent_count,
            "agents_awake": len(self._agents),
            "agents_sleeping": max(self.agent_count - len(self._agents), 0),
            "active_runs": self.supervisor.active_runs,
            "model_calls_queued": self.kernel.scheduler.queued(),
            "queued_runs": self.supervisor.queued_runs,
            "uptime_s": round(time.time() - self.started_at, 3),
        }


def _mb(daemon: int, agent: int | None) -> int | None:
    """A size limit in bytes: the daemon's (0: none), lowered by the agent's."""
    chosen = [v for v in (daemon, agent) if v]
    return min(chosen) << 20 if chosen else None


def _settings_key(agent: AgentRecord) -> str:
    return orjson.dumps(agent.settings, option=orjson.OPT_SORT_KEYS).decode()
