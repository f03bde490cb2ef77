"""The agents service: definitions, the agents that are awake, and their resolved plans.

An agent is awake while it has been used within ``agent_idle_s``: its record and its
*plan* (resolved models, budget, policy, sandbox, MCP servers: everything its runs
need, worked out once) are kept in memory. Putting it to sleep drops all of that, and
the next request wakes it from the store. Nothing here runs or cancels runs: the
lifecycle (:mod:`agentd.runtime.lifecycle`) does that on top of this service.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from agentd.config import AgentSandbox, Budget, Settings
from agentd.errors import AgentNotFound, Conflict, InvalidInput, InvalidModel
from agentd.llm.catalog import Catalog
from agentd.llm.model import Model
from agentd.llm.registry import resolve_model
from agentd.runtime._agent_settings import (
    check_agent_settings,
    check_mcp_commands,
    mcp_servers,
    sandbox_settings,
)
from agentd.runtime.budgets import parse_budget
from agentd.runtime.calls import Target
from agentd.runtime.sandboxes import Sandboxes
from agentd.sandbox.backends import Limits
from agentd.security.policy import PolicyConfig, parse_policy
from agentd.store import Store
from agentd.store.records import AgentRecord
from agentd.tools import ToolRegistry
from agentd.tools.mcp import MCPServer

__all__ = ["AgentPlan", "Agents", "check_agent_name"]

AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SETTING_NAMED = re.compile(r"\bsettings\.([A-Za-z_]+)")
#: Model settings a fallback of another provider inherits from the agent's (the rest,
#: such as base_url and api_key_env, belong to the primary's provider).
_PORTABLE_SETTINGS = ("max_tokens", "temperature", "timeout_s", "max_retries")


def check_agent_name(name: str) -> str:
    if not AGENT_NAME.match(name):
        raise InvalidInput(
            f"invalid agent name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit", field="body.name")
    return name


@dataclass(frozen=True, kw_only=True, slots=True)
class AgentPlan:
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
    """

    def __init__(self, settings: Settings, store: Store, *, tools: ToolRegistry,
                 catalog: Catalog, sandboxes: Sandboxes,
                 on_sleep: Callable[[AgentRecord], None] = lambda agent: None) -> None:
        self.settings = settings
        self.store = store
        self.tools = tools
        self.catalog = catalog
        self.sandboxes = sandboxes
        self.on_sleep = on_sleep
        self._catalogued = {spec.partition(":")[0] for spec in catalog.models}
        # Awake agents only: a sleeping agent has nothing here.
        self._by_name: dict[str, AgentRecord] = {}
        self._by_id: dict[str, AgentRecord] = {}
        self._plans: dict[str, AgentPlan] = {}
        self._last_active: dict[str, float] = {}
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
        """Keep ``agent`` awake (waking it if it slept), as of now."""
        old = self._by_name.get(agent.name)
        if old is not None and (old.model, _settings_key(old)) != (agent.model,
                                                                  _settings_key(agent)):
            self._forget_plan(agent.name)
        self._by_name[agent.name] = agent
        self._by_id[agent.id] = agent
        self._last_active[agent.id] = time.monotonic()
        return agent

    async def get(self, name: str) -> AgentRecord:
        """The agent named ``name`` (waking it); :class:`AgentNotFound` if none."""
        agent = self._by_name.get(name)
        if agent is None:
            return self.remember(await self.store.get_agent(name))
        self._last_active[agent.id] = time.monotonic()
        return agent

    async def by_id(self, agent_id: str) -> AgentRecord | None:
        """The agent with this id (waking it), or None if it was deleted."""
        agent = self._by_id.get(agent_id)
        if agent is not None:
            self._last_active[agent_id] = time.monotonic()
            return agent
        try:
            return self.remember(await self.store.get_agent(agent_id, by="id"))
        except AgentNotFound:
            return None

    async def list_all(self) -> list[AgentRecord]:
        """Every agent, as stored (listing wakes none of them)."""
        return await self.store.list_agents()

    def sleep_idle(self, idle_s: float, busy: set[str]) -> list[str]:
        """Put agents idle for ``idle_s`` (and not in ``busy``, ids of agents with a
        run held here) to sleep. Returns their names."""
        cutoff = time.monotonic() - idle_s
        asleep = [a for a in self._by_name.values()
                  if a.id not in busy and self._last_active.get(a.id, 0.0) <= cutoff]
        for agent in asleep:
            self.sleep(agent)
        return [a.name for a in asleep]

    def sleep(self, agent: AgentRecord) -> None:
        self._by_name.pop(agent.name, None)
        self._by_id.pop(agent.id, None)
        self._last_active.pop(agent.id, None)
        self._forget_plan(agent.name)
        self.on_sleep(agent)

    def _forget_plan(self, name: str) -> None:
        plan = self._plans.pop(name, None)
        for target in plan.targets if plan is not None else ():
            task = asyncio.create_task(target.model.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def close(self) -> None:
        """Close every awake agent's model clients."""
        for plan in self._plans.values():
            for target in plan.targets:
                await target.model.aclose()
        self._plans.clear()

    # -- definitions -------------------------------------------------------------------

    async def create(self, *, name: str, model: str | None, instructions: str,
                     tools: list[str], settings: dict[str, Any], admin: bool
                     ) -> AgentRecord:
        check_agent_name(name)
        model = model or self.settings.default_model
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
        self.count += 1
        self._plans[name] = replace(resolved, key=(agent.model, _settings_key(agent)))
        return self.remember(agent)

    async def update(self, name: str, fields: dict[str, Any], *, admin: bool
                     ) -> AgentRecord:
        current = await self.get(name)
        model = fields.get("model", current.model)
        tools = fields.get("tools", current.tools)
        settings = fields.get("settings", current.settings)
        resolved = self._validate(name, model, tools, settings)
        if not admin:
            check_mcp_commands(resolved.mcp, self.settings.mcp_commands)
        agent = self.remember(await self.store.update_agent(name, fields))
        self._forget_plan(name)
        self._plans[name] = replace(resolved, key=(agent.model, _settings_key(agent)))
        return agent

    async def delete(self, agent: AgentRecord) -> None:
        """Delete the agent's record (its sessions go with it) and its workspace."""
        await self.store.delete_agent(agent.name)
        self.sandboxes.forget(self.workspace_of(agent), agent.id)
        self.count -= 1
        await asyncio.to_thread(shutil.rmtree, self.workspace_of(agent), True)
        self.sleep(agent)

    def workspace_of(self, agent: AgentRecord) -> Path:
        """The agent's workspace directory (by id: a new agent of an old name starts
        with an empty one)."""
        return self.settings.workspaces_dir / agent.id

    # -- plans -------------------------------------------------------------------------

    def plan(self, agent: AgentRecord) -> AgentPlan:
        """The agent's resolved plan (worked out once while it is awake)."""
        key = (agent.model, _settings_key(agent))
        plan = self._plans.get(agent.name)
        if plan is None or plan.key != key:
            if plan is not None:
                self._forget_plan(agent.name)
            plan = replace(self._resolve(agent.name, agent.model, agent.settings), key=key)
            self._plans[agent.name] = plan
        return plan

    def model_for(self, agent: AgentRecord) -> Model:
        """The agent's primary model."""
        return self.plan(agent).targets[0].model

    def _validate(self, name: str, model: str, tools: list[str], settings: dict[str, Any]
                  ) -> AgentPlan:
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

    def _resolve(self, name: str, model: str, settings: dict[str, Any]) -> AgentPlan:
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
        return AgentPlan(key=("", ""), budget=budget, budgeted=not budget.empty,
                         targets=[Target(model=m, info=self.catalog.get(m.spec))
                                  for m in chain],
                         policy=parse_policy(settings.get("policy"), "settings.policy",
                                             "body.settings.policy"),
                         sandbox=sandbox, limits=self.sandboxes.limits(sandbox),
                         mcp=mcp_servers(settings))

