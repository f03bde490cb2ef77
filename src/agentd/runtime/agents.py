"""The agents service: definitions, the agents that are awake, and their resolved plans.

An agent is awake while it has been used within ``agent_idle_s``: its record and its
*plan* (resolved models, budget, policy, sandbox, MCP servers: everything its runs
need, worked out once) are kept in memory. Putting it to sleep drops all of that, and
the next request wakes it from the store. Nothing here runs or cancels runs: the
lifecycle (:mod:`agentd.runtime.lifecycle`) does that on top of this service.

Every change this service commits to an agent's record (created, updated, its state
set, deleted) is handed to ``on_change`` once committed: the activity feed's
``agent.*`` frames. Whatever changes an agent's row goes through here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from agentd.clock import SYSTEM, Clock
from agentd.config import AgentSandbox, Budget, Settings
from agentd.errors import AgentNotFound, Conflict, InvalidInput, InvalidModel, QuotaExceeded
from agentd.llm.catalog import Catalog
from agentd.llm.model import Model
from agentd.llm.registry import ProviderInfo, resolve_model
from agentd.runtime.agent_settings import settings_errors
from agentd.runtime.calls import Target
from agentd.runtime.guard import NO_GUARD, Guard
from agentd.runtime.ports import ModelSource
from agentd.runtime.sandboxes import Sandboxes
from agentd.sandbox.backends import Limits
from agentd.security.identity import Principal
from agentd.security.policy import PolicyConfig
from agentd.settings import AgentSettings, ModelSettings, check_settings, stored_settings
from agentd.store import Store
from agentd.store.records import (
    AgentChange,
    AgentRecord,
    AgentState,
    agent_change_kind,
    tenant_of,
)
from agentd.tools import ToolRegistry
from agentd.tools.mcp_config import MCPServer

__all__ = ["AgentPlan", "Agents", "check_agent_name", "runs_no_loop"]

AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
_SETTING_NAMED = re.compile(r"\bsettings\.([A-Za-z_]+)")
#: Model settings a fallback of another provider inherits from the agent's (the rest,
#: such as base_url and api_key_env, belong to the primary's provider).
_PORTABLE_SETTINGS = ("max_tokens", "temperature", "timeout_s", "max_retries")
_MODEL_SETTINGS = tuple(ModelSettings.model_fields)


def _model_call(settings: ModelSettings, keys: tuple[str, ...] = _MODEL_SETTINGS
                ) -> dict[str, Any]:
    """The model-call settings a provider is built from (the set ones of ``keys``), as
    the mapping :func:`resolve_model` takes."""
    found = {key: getattr(settings, key) for key in keys}
    return {key: value for key, value in found.items() if value is not None}


def _model(spec: str, settings: dict[str, Any], agent: str,
           endpoints: Mapping[str, ProviderInfo]) -> Model:
    try:
        return resolve_model(spec, settings=settings, agent=agent, endpoints=endpoints)
    except ImportError as exc:  # (a provider's SDK, an optional dependency)
        raise InvalidModel(f"the provider for {spec!r} is not installed: {exc}",
                           field="body.model") from exc


def runs_no_loop(model: str, settings: AgentSettings) -> str | None:
    """Why the agent's runs do not go through the run loop (a team's: its members'
    runs do; an adapter's: its framework does), or None when they do."""
    if settings.team is not None:
        return "a team's runs call no model of their own (its members' runs do)"
    if model.startswith("adapter:"):
        return "an adapter's runs are its framework's, not agentd's loop"
    return None


def _check_loop_settings(model: str, settings: AgentSettings) -> None:
    """Refuse what only the run loop honours on an agent whose runs skip it: a
    guardrail or a schema silently ignored would be worse than none."""
    why = runs_no_loop(model, settings)
    if why is None:
        return
    if settings.all_checks.checks:
        where = "hooks" if settings.hooks.checks else "guardrails"
        raise InvalidInput(f"settings.{where}: {why}, so no check would run; put the "
                           "checks on the agents that call models",
                           field=f"body.settings.{where}")
    if settings.output.json_schema is not None:
        raise InvalidInput(f"settings.output: {why}, so no answer would be held to the "
                           "schema", field="body.settings.output.json_schema")


def check_agent_name(name: str) -> str:
    if not AGENT_NAME.match(name):
        raise InvalidInput(
            f"invalid agent name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit", field="body.name")
    return name


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentPlan:
    """An awake agent's settings (read once), resolved models and what its runs may
    spend."""

    key: tuple[str, str]
    #: The agent's settings as stored, read: every run and step reads these fields.
    settings: AgentSettings
    targets: list[Target]
    #: The budget has some limit (worked out once: pydantic's dumps are not free).
    budgeted: bool
    #: The daemon's sandbox limits lowered by the agent's.
    limits: Limits

    @property
    def budget(self) -> Budget:
        return self.settings.budget

    @property
    def policy(self) -> PolicyConfig:
        """The agent's layer of the tool policy."""
        return self.settings.policy

    @property
    def sandbox(self) -> AgentSandbox:
        return self.settings.sandbox

    @property
    def mcp(self) -> list[MCPServer]:
        return self.settings.mcp


def _settings_key(agent: AgentRecord) -> str:
    return orjson.dumps(agent.settings, option=orjson.OPT_SORT_KEYS).decode()


class Agents:
    """Agent definitions on the store, and the awake ones in memory.

    Args:
        settings: the daemon's settings (default model, workspaces directory).
        store: where agents are kept.
        tools: the tool registry agents name their tools from.
        catalog: model context windows and prices.
        sandboxes: checks agents' sandbox settings and gives each agent its uid.
        on_sleep: called with an agent put to sleep, for the services that keep
            something per agent (histories, budgets).
        on_change: called with each change to an agent's record once it is committed
            (the event bus's feeds); it must be quick and must not raise.
    """

    def __init__(self, settings: Settings, store: Store, *, tools: ToolRegistry,
                 catalog: Catalog, sandboxes: Sandboxes,
                 on_sleep: Callable[[AgentRecord], None] = lambda agent: None,
                 on_change: Callable[[AgentChange], None] = lambda change: None,
                 guard: Guard = NO_GUARD,
                 endpoints: Mapping[str, ProviderInfo] | None = None,
                 clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self.store = store
        #: The time idleness is measured by (agents asleep after ``agent_idle_s``).
        self.clock = clock
        #: Quotas, the operator's grants and the audit log (``agentd.identity``).
        self.guard = guard
        #: The operator's named model endpoints (``[models.NAME]``) as providers.
        self.endpoints = dict(endpoints or {})
        #: Models of the ``model`` strings capabilities add (``adapter:``), by prefix.
        self.model_sources: list[ModelSource] = []
        #: Whether a tenant exists (a name ``<tenant>.x`` belongs to that tenant).
        self.tenant_exists: Callable[[str], bool] = lambda name: False
        self.tools = tools
        self.catalog = catalog
        self.sandboxes = sandboxes
        self.on_sleep = on_sleep
        self.on_change = on_change
        self._catalogued = {spec.partition(":")[0] for spec in catalog.models}
        # Awake agents only: a sleeping agent has nothing here.
        self._by_name: dict[str, AgentRecord] = {}
        self._by_id: dict[str, AgentRecord] = {}
        self._plans: dict[str, AgentPlan] = {}
        #: Workspace paths by agent id (a path costs every turn otherwise).
        self._workspaces: dict[str, Path] = {}
        #: The record each plan was last checked against (records are replaced, never
        #: changed, when an agent is updated): the same record needs no new check.
        self._checked: dict[str, AgentRecord] = {}
        #: Models of plans a reload dropped while their agent had a run here (the run
        #: still calls them), by agent name: closed when the agent sleeps.
        self._retired: dict[str, list[Target]] = {}
        #: Per agent: the plan and keys its keyed models were built for, and the models.
        self._keyed: dict[str, tuple[AgentPlan, tuple[tuple[str, str], ...],
                                     list[Target]]] = {}
        self._last_active: dict[str, float] = {}
        #: Ids of awake agents another node changed since (PostgreSQL shared by
        #: several daemons): their next use reads the record again.
        self._stale: set[str] = set()
        #: Names of agents never put to sleep when idle (the agent a protocol door
        #: serves: its adapter keeps state a termo-agent client expects to last).
        self.kept_awake: set[str] = set()
        #: Checks the services add to an agent's settings when it is saved (skills:
        #: the enabled ones are installed): each raises InvalidInput naming the field.
        self.checks: list[Callable[[AgentSettings], None]] = []
        #: ... that read other agents (teams: their members exist, no cycle), called
        #: with the agent's name and settings before anything is written.
        self.async_checks: list[Callable[[str, AgentSettings], Awaitable[None]]] = []
        #: How many agents the store holds (kept by this node; re-counted by the
        #: housekeeper when other nodes may create and delete agents).
        self.count = 0

    async def start(self) -> None:
        self.count = await self.store.count("agents")

    async def recount(self) -> None:
        self.count = await self.store.count("agents")

    @property
    def awake(self) -> int:
        return len(self._by_name)

    def is_awake(self, name: str) -> bool:
        """Whether the agent is held in memory on this node now."""
        return name in self._by_name

    @property
    def awake_names(self) -> list[str]:
        """The names of the agents awake now."""
        return sorted(self._by_name)

    @property
    def planned(self) -> list[str]:
        """The names of the agents whose plan (models, clients) is held now."""
        return sorted(self._plans)

    # -- the awake set -----------------------------------------------------------------

    def remember(self, agent: AgentRecord) -> AgentRecord:
        """Keep ``agent`` awake (waking it if it slept), as of now; the copy held if it
        is newer than ``agent`` (the agent as it is then). Two changes made at once on
        PostgreSQL (a new agent's first run setting ``error`` while its sender sets
        ``running``) may return here in the other order than they committed: the
        store's ``updated_at`` follows the commits, and the last committed stays."""
        old = self._by_name.get(agent.name)
        if old is not None and old.id == agent.id and old.updated_at > agent.updated_at:
            self._last_active[old.id] = self.clock.monotonic()
            return old
        if old is not None and (old.model, _settings_key(old)) != (agent.model,
                                                                  _settings_key(agent)):
            self._forget_plan(agent.name)
        self._by_name[agent.name] = agent
        self._by_id[agent.id] = agent
        self._last_active[agent.id] = self.clock.monotonic()
        return agent

    def held(self, name: str) -> AgentRecord | None:
        """The agent named ``name`` if it is awake here (None otherwise); not touched."""
        return self._by_name.get(name)

    async def get(self, name: str) -> AgentRecord:
        """The agent named ``name`` (waking it); :class:`AgentNotFound` if none."""
        agent = self._by_name.get(name)
        if agent is None:
            return self.remember(await self.store.get_agent(name))
        if agent.id in self._stale:
            return await self._reread(agent)
        self._last_active[agent.id] = self.clock.monotonic()
        return agent

    async def reload(self, name: str) -> AgentRecord:
        """The agent named ``name`` as stored now (waking it), whatever the copy held
        here: another node changed it and this one has not heard yet (a message
        refused with ``AgentChanged``, a refusal about to be made on a state that may
        be old). :class:`AgentNotFound` (the copy put to sleep) if it is gone."""
        held = self._by_name.get(name)
        try:
            fresh = await self.store.get_agent(name)
        except AgentNotFound:
            if held is not None and self._by_name.get(name) is held:
                self.sleep(held)
            raise
        if held is not None and held.id != fresh.id and self._by_id.get(held.id) is held:
            self.sleep(held)  # deleted and made again under its name elsewhere
        self._stale.discard(fresh.id)
        return self.remember(fresh)

    async def by_id(self, agent_id: str, *, at_least: float | None = None
                    ) -> AgentRecord | None:
        """The agent with this id (waking it), or None if it was deleted.
        ``at_least``: the ``updated_at`` of a record as stored (a run another node
        accepted): a copy held here older than that is read again."""
        agent = self._by_id.get(agent_id)
        if agent is not None and at_least is not None and agent.updated_at < at_least:
            self._stale.add(agent_id)
        if agent is not None and agent_id in self._stale:
            try:
                return await self._reread(agent)
            except AgentNotFound:
                return None
        if agent is not None:
            self._last_active[agent_id] = self.clock.monotonic()
            return agent
        try:
            return self.remember(await self.store.get_agent(agent_id, by="id"))
        except AgentNotFound:
            return None

    def changed_elsewhere(self, change: AgentChange) -> None:
        """Another node committed ``change``: this node's copy of the agent, if it is
        awake here and not that change, is read again at its next use (its settings, its state:
        a pause made there is kept here too)."""
        held = self._by_id.get(change.agent_id)
        if held is not None and (change.kind == "agent.deleted"
                                 or held.updated_at != change.at):
            self._stale.add(held.id)

    async def _reread(self, agent: AgentRecord) -> AgentRecord:
        """``agent`` as stored now (its copy here was changed elsewhere); a deleted
        one is put to sleep here and :class:`AgentNotFound` raised."""
        self._stale.discard(agent.id)
        try:
            fresh = await self.store.get_agent(agent.id, by="id")
        except AgentNotFound:
            if self._by_id.get(agent.id) is agent:
                self.sleep(agent)
            raise
        if fresh.name != agent.name:  # (names are not changed; kept consistent anyway)
            self._by_name.pop(agent.name, None)
        return self.remember(fresh)

    async def list_all(self) -> list[AgentRecord]:
        """Every agent, as stored (listing wakes none of them)."""
        return await self.store.list_agents()

    def sleep_idle(self, idle_s: float, busy: set[str]) -> list[str]:
        """Put agents idle for ``idle_s`` (and not in ``busy``, ids of agents with a
        run held here) to sleep. Returns their names."""
        cutoff = self.clock.monotonic() - idle_s
        asleep = [a for a in self._by_name.values()
                  if a.id not in busy and a.name not in self.kept_awake
                  and self._last_active.get(a.id, 0.0) <= cutoff]
        for agent in asleep:
            self.sleep(agent)
        return [a.name for a in asleep]

    def sleep(self, agent: AgentRecord) -> None:
        self._by_name.pop(agent.name, None)
        self._by_id.pop(agent.id, None)
        self._last_active.pop(agent.id, None)
        self._stale.discard(agent.id)
        self._forget_plan(agent.name)
        self._close_later(self._retired.pop(agent.name, []))
        self.on_sleep(agent)

    def retarget(self, endpoints: Mapping[str, ProviderInfo], busy: set[str]) -> list[str]:
        """Take the operator's named endpoints anew (a configuration reload). The plans
        of awake agents whose models (or fallbacks) name an endpoint that was added,
        changed or removed are dropped: their next message or run resolves them again
        with the new endpoints. The models of an agent with a run held here (``busy``:
        agent ids) stay open until it sleeps, since that run still calls them. Returns
        the names of the agents whose plans were dropped."""
        changed = {name for name in {*self.endpoints, *endpoints}
                   if self.endpoints.get(name) != endpoints.get(name)}
        self.endpoints = dict(endpoints)
        dropped = sorted(name for name, plan in self._plans.items()
                         if any(t.model.spec.partition(":")[0] in changed
                                for t in plan.targets))
        for name in dropped:
            agent = self._by_name.get(name)
            if agent is not None and agent.id in busy:
                self._checked.pop(name, None)
                self._retired.setdefault(name, []).extend(self._plans.pop(name).targets)
            else:
                self._forget_plan(name)
        return dropped

    def _forget_plan(self, name: str) -> None:
        self._checked.pop(name, None)
        plan = self._plans.pop(name, None)
        self._close_later(plan.targets if plan is not None else [])
        keyed = self._keyed.pop(name, None)
        self._close_later(keyed[2] if keyed is not None else [])

    @staticmethod
    def _close_later(targets: list[Target]) -> None:
        for target in targets:
            task = asyncio.create_task(target.model.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def close(self) -> None:
        """Close every awake agent's model clients."""
        for targets in [*(p.targets for p in self._plans.values()), *self._retired.values(),
                        *(k[2] for k in self._keyed.values())]:
            for target in targets:
                await target.model.aclose()
        self._plans.clear()
        self._retired.clear()
        self._keyed.clear()
        self._checked.clear()

    # -- definitions -------------------------------------------------------------------

    async def create(self, *, name: str, model: str | None, instructions: str,
                     tools: list[str], settings: dict[str, Any],
                     actor: Principal | None = None) -> AgentRecord:
        """Check and store a new agent. ``actor``: who asks (None: the runtime itself,
        or an embedder): its role decides the operator-only settings, its name is
        recorded in the audit log."""
        check_agent_name(name)
        model = model or self.settings.default_model
        resolved = self._validate(name, model, tools, settings, actor=actor)
        self._check_name_tenant(name, resolved.settings.tenant)
        for check in self.async_checks:
            await check(name, resolved.settings)
        tenant = resolved.settings.tenant
        agent = await self.store.create_agent(
            name=name, model=model, instructions=instructions, tools=tools,
            settings=settings, quota=self.guard.quotas.quota(tenant, "agents"),
            audit=self.guard.entry(actor, "agent.create", f"agent:{name}", model=model,
                                   tenant=tenant, settings=settings))
        self.on_change(AgentChange.of("agent.created", agent))
        try:  # its sandbox uid, given now (its tenant's cap, 403, or a used-up range,
            # 409, refuses the agent)
            await self.sandboxes.allocate(agent.id)
        except (Conflict, QuotaExceeded) as exc:
            gone = await self.store.delete_agent(name, audit=self.guard.entry(
                actor, "agent.delete", f"agent:{name}", because=exc.code))
            self.on_change(AgentChange.of("agent.deleted", gone, at=self.clock.time()))
            raise
        self.count += 1
        self._plans[name] = replace(resolved, key=(agent.model, _settings_key(agent)))
        return self.remember(agent)

    async def update(self, name: str, fields: dict[str, Any], *,
                     actor: Principal | None = None,
                     based_on: AgentRecord | None = None) -> AgentRecord:
        """Check and save a change. ``based_on``: the record the change was computed
        from; saved only if the agent is still that (Conflict ``agent_changed``).
        ``actor``: as for :meth:`create` (the operator-only settings it may not set
        are those the change sets: what an operator set before stays)."""
        current = based_on or await self.get(name)
        model = fields.get("model", current.model)
        tools = fields.get("tools", current.tools)
        settings = fields.get("settings", current.settings)
        resolved = self._validate(name, model, tools, settings, actor=actor,
                                  before=current)
        tenant = resolved.settings.tenant
        moved = tenant_of(current.settings) != tenant
        if moved:
            self._check_name_tenant(name, tenant)
        for check in self.async_checks:
            await check(name, resolved.settings)
        agent = self.remember(await self.store.update_agent(
            name, fields, based_on=based_on.updated_at if based_on is not None else None,
            quota=self.guard.quotas.quota(tenant, "agents") if moved else None,
            audit=self.guard.entry(actor, "agent.update", f"agent:{name}",
                                   fields=sorted(fields), **{
                                       k: v for k, v in fields.items()
                                       if k in ("model", "settings", "state")})))
        self.on_change(AgentChange.of(agent_change_kind(fields), agent, before=current))
        self._forget_plan(name)
        self._plans[name] = replace(resolved, key=(agent.model, _settings_key(agent)))
        return agent

    async def candidate(self, agent: AgentRecord, *, model: str | None = None,
                        instructions: str | None = None,
                        settings: Mapping[str, Any] | None = None,
                        actor: Principal | None = None) -> tuple[AgentRecord, AgentPlan]:
        """``agent`` as another configuration would have it (a fork, an eval run):
        ``model`` and ``instructions`` in place of its own, ``settings`` keys over its
        own. Checked as a change of the agent by ``actor`` is (the operator-only
        settings its role may not set, the models, the capabilities' checks), saved
        nowhere: the record and its plan, whose models the caller closes
        (:meth:`close_plan`). A candidate cannot move the agent to another tenant."""
        merged = {**agent.settings, **(settings or {})}
        if tenant_of(merged) != tenant_of(agent.settings):
            raise InvalidInput("a candidate configuration runs in its agent's tenant: "
                               "settings.tenant cannot change", field="body.settings.tenant")
        if (model is not None and model != agent.model
                and model.partition(":")[0] in self._catalogued
                and self.catalog.get(model) is None):
            # As for a fallback: a typo would show only as every fork's run failing on
            # its model (an eval run of thousands of cases, each a failed case).
            raise InvalidModel(
                f"unknown model {model!r} (not in the model catalog; add it to "
                "$AGENTD_HOME/models.toml if it is real)", field="body.model")
        record = replace(agent, model=model or agent.model, settings=merged,
                         instructions=agent.instructions if instructions is None
                         else instructions)
        plan = self._validate(agent.name, record.model, record.tools, merged, actor=actor,
                              before=agent)
        try:
            for check in self.async_checks:
                await check(agent.name, plan.settings)
        except BaseException:
            await self.close_plan(plan)
            raise
        return record, plan

    @staticmethod
    async def close_plan(plan: AgentPlan) -> None:
        """Close the model clients of a plan this registry does not hold."""
        for target in plan.targets:
            await target.model.aclose()

    async def set_state(self, name: str, state: AgentState) -> AgentRecord:
        """Store the agent's new state (nothing else: runs are the lifecycle's) and
        keep it awake as it is now."""
        agent = self.remember(await self.store.set_agent_state(name, state))
        self.on_change(AgentChange.of("agent.state", agent))
        return agent

    async def set_state_from(self, name: str, expected: AgentState, state: AgentState
                             ) -> AgentRecord:
        """Move the agent from ``expected`` to ``state`` if it is still in
        ``expected``, as stored (a compare-and-set): a state set meanwhile by someone
        else stays. (A new agent's first run may put it in ``error`` while its sender
        is marking it ``running``.) The agent as it is then."""
        agent = self._by_name.get(name) or await self.store.get_agent(name)
        while agent.state == expected:
            try:
                agent = self.remember(await self.store.update_agent(
                    name, {"state": state}, based_on=agent.updated_at))
            except Conflict:
                agent = await self.store.get_agent(name)
                continue
            self.on_change(AgentChange.of("agent.state", agent))
            return agent
        return self.remember(agent)

    async def delete(self, agent: AgentRecord, actor: Principal | None = None) -> None:
        """Delete the agent's record (its sessions go with it) and its workspace."""
        gone = await self.store.delete_agent(agent.name, audit=self.guard.entry(
            actor, "agent.delete", f"agent:{agent.name}"))
        # The record as it was deleted: the feed's scope is decided on its tenant.
        self.on_change(AgentChange.of("agent.deleted", gone, at=self.clock.time()))
        await self.sandboxes.forget(self.workspace_of(agent), agent.id)
        self.count -= 1
        await asyncio.to_thread(shutil.rmtree, self.workspace_of(agent), True)
        self.sleep(agent)

    def workspace_of(self, agent: AgentRecord) -> Path:
        """The agent's workspace directory (by id: a new agent of an old name starts
        with an empty one)."""
        path = self._workspaces.get(agent.id)
        if path is None:
            if len(self._workspaces) > 10_000:
                self._workspaces.clear()
            path = self._workspaces[agent.id] = self.settings.workspaces_dir / agent.id
        return path

    def _check_name_tenant(self, name: str, tenant: str) -> None:
        """An agent named ``<tenant>.<rest>`` for an existing tenant belongs to that
        tenant: a tenant's tokens create agents only under its name, so no other
        tenant's agent may hold one (its 409 would tell them it exists)."""
        owner, dot, _ = name.partition(".")
        if dot and owner != tenant and self.tenant_exists(owner):
            raise InvalidInput(f"agent names starting with {owner + '.'!r} belong to "
                               f"tenant {owner!r}: this agent's tenant is {tenant!r}",
                               field="body.name")

    # -- plans -------------------------------------------------------------------------

    def plan(self, agent: AgentRecord) -> AgentPlan:
        """The agent's plan, worked out once while it is awake: its settings as stored,
        read (:class:`~agentd.errors.InvalidSettings` naming each field this version
        refuses), and its models resolved (:class:`~agentd.errors.InvalidModel`)."""
        plan = self._plans.get(agent.name)
        if plan is not None and self._checked.get(agent.name) is agent:
            return plan  # this very record was checked against the plan (per message)
        key = (agent.model, _settings_key(agent))
        if plan is None or plan.key != key:
            if plan is not None:
                self._forget_plan(agent.name)
            plan = replace(self._resolve(agent.name, agent.model,
                                         stored_settings(agent.settings)), key=key)
            self._plans[agent.name] = plan
        self._checked[agent.name] = agent
        return plan

    def plan_asleep(self, agent: AgentRecord) -> AgentPlan:
        """A plan for work on a sleeping agent's behalf (a consolidation when it went
        idle), neither held nor waking it: the caller closes its models."""
        return self._resolve(agent.name, agent.model, stored_settings(agent.settings))

    def model_for(self, agent: AgentRecord) -> Model:
        """The agent's primary model."""
        return self.plan(agent).targets[0].model

    def priority_of(self, agent: AgentRecord) -> str:
        """The scheduler class of the agent's runs when the client names none:
        ``settings.priority`` ("background" when the agent has no plan: its runs fail
        with the reason when they start)."""
        try:
            return self.plan(agent).settings.priority
        except InvalidModel:
            return "background"

    def settings_errors(self, agent: AgentRecord) -> list[dict[str, str]]:
        """What this version refuses in the agent's stored settings, as the API shows
        it (``[{"field": "settings.max_step", "message": ...}]``); empty when valid."""
        return settings_errors(agent.settings, self.settings.sandbox.ceiling)

    def _validate(self, name: str, model: str, tools: list[str], settings: dict[str, Any],
                  *, actor: Principal | None = None, before: AgentRecord | None = None
                  ) -> AgentPlan:
        """Check an agent definition; errors name the field (``details.errors``).
        ``actor``: who asks, whose role decides the operator-only settings the
        definition sets (``before``: the agent as it was), checked before anything
        else of them is used (no model is resolved for a refused one)."""
        try:
            self.tools.check(tools)
        except InvalidInput as exc:
            raise exc.for_field("body.tools") from None
        typed = check_settings(settings, caps=self.settings.sandbox.ceiling)
        if actor is not None:
            old: AgentSettings | None = None
            if before is not None:
                try:
                    old = stored_settings(before.settings)
                except InvalidInput:
                    old = None  # (settings this version refuses: nothing of them stays)
            self.guard.check_operator_only(
                actor, typed, old, model=model,
                model_before=before.model if before is not None else None)
        self.sandboxes.check_agent(typed.sandbox)
        for check in self.checks:
            check(typed)
        _check_loop_settings(model, typed)
        info = self.catalog.get(model)
        if typed.max_tokens is not None and info is not None and (
                typed.max_tokens > info.max_output_tokens):
            raise InvalidModel(
                f"settings.max_tokens {typed.max_tokens} is above {info.spec}'s output "
                f"limit of {info.max_output_tokens} tokens",
                field="body.settings.max_tokens")
        try:
            return self._resolve(name, model, typed)
        except InvalidModel as exc:
            if "errors" in exc.details:
                raise
            setting = _SETTING_NAMED.search(exc.message)
            raise exc.for_field(f"body.settings.{setting.group(1)}" if setting
                                else "body.model") from None

    def keyed_secrets(self, plan: AgentPlan) -> dict[str, str]:
        """The named endpoints of ``plan``'s models whose key is a secret of the agent:
        endpoint name -> secret name."""
        found = {}
        for target in plan.targets:
            info = self.endpoints.get(target.model.provider)
            if info is not None and info.key_secret is not None:
                found[info.name] = info.key_secret
        return found

    def keyed_targets(self, agent: AgentRecord, plan: AgentPlan, keys: Mapping[str, str]
                      ) -> list[Target]:
        """``plan``'s model chain built anew with these keys of named endpoints (a run's
        own models: their clients hold a key of its agent's)."""
        # The same plan and keys reuse the models (their connections); models of keys
        # since rotated are closed with the agent's plan (a run may still use them).
        print_ = tuple(sorted((n, hashlib.sha256(k.encode()).hexdigest())
                              for n, k in keys.items()))
        cached = self._keyed.get(agent.name)
        if cached is not None and cached[0] is plan and cached[1] == print_:
            return cached[2]
        endpoints = {**self.endpoints, **{name: replace(self.endpoints[name], key=key)
                                          for name, key in keys.items()}}
        targets = self._resolve(agent.name, agent.model, plan.settings, endpoints).targets
        if cached is not None:
            self._retired.setdefault(agent.name, []).extend(cached[2])
        self._keyed[agent.name] = (plan, print_, targets)
        return targets

    def _resolve(self, name: str, model: str, settings: AgentSettings,
                 endpoints: Mapping[str, ProviderInfo] | None = None) -> AgentPlan:
        """The agent's model chain (``model``, then ``settings.fallbacks``) and what the
        rest of its settings make of the daemon's (sandbox limits)."""
        endpoints = self.endpoints if endpoints is None else endpoints
        source = next((s for s in self.model_sources if model.strip().startswith(s.prefix)),
                      None)
        if source is not None:
            # A model of a capability's (an adapter-backed agent: agentd.adapters); it
            # has no fallbacks.
            chain: list[Model] = [source.model(model, fallbacks=len(settings.fallbacks))]
            return AgentPlan(key=("", ""), settings=settings,
                             budgeted=not settings.budget.empty,
                             targets=[Target(model=chain[0], info=None)],
                             limits=self.sandboxes.limits(settings.sandbox))
        chain = [_model(model, _model_call(settings), name, endpoints)]
        provider = chain[0].provider
        for index, entry in enumerate(settings.fallbacks):
            field = f"body.settings.fallbacks[{index}]"
            if entry.settings is not None:
                own = _model_call(entry.settings)
            elif entry.model.partition(":")[0] == provider:
                own = _model_call(settings)
            else:
                own = _model_call(settings, _PORTABLE_SETTINGS)
            try:
                fallback = _model(entry.model, own, name, endpoints)
            except InvalidModel as exc:
                raise InvalidModel(f"settings.fallbacks[{index}]: {exc.message}",
                                   field=field) from None
            if (fallback.provider in self._catalogued
                    and self.catalog.get(entry.model) is None):
                # A fallback runs only when the primary fails: a typo would show then.
                raise InvalidModel(
                    f"settings.fallbacks[{index}]: unknown model {entry.model!r} (not in "
                    "the model catalog; add it to $AGENTD_HOME/models.toml if it is real)",
                    field=field)
            chain.append(fallback)
        return AgentPlan(key=("", ""), settings=settings,
                         budgeted=not settings.budget.empty,
                         targets=[Target(model=m, info=self.catalog.get(m.spec))
                                  for m in chain],
                         limits=self.sandboxes.limits(settings.sandbox))
