"""Building a run's executor: everything a run needs, gathered when it starts.

The supervisor asks for an executor when a run's turn comes (see
:class:`agentd.runtime.supervisor.Supervisor`). Building one wakes the run's agent,
resolves its plan (its settings read once, models, sandbox limits), brings the
session's history up to date, opens the sandbox and hands it all to a
:class:`~agentd.runtime.loop.RunExecutor`. A run that cannot start (its agent was
stopped, its model no longer resolves, its sandbox cannot be made) is settled here
with the reason, so it never stays queued for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentd.config import PRIORITIES, Budget, Settings
from agentd.errors import AgentdError, Conflict, InvalidInput, InvalidModel, StoreError
from agentd.events import ToolsUnavailable, WorkspaceRestored
from agentd.runtime.affinity import Affinity
from agentd.runtime.agents import AgentPlan, Agents
from agentd.runtime.bus import EventBus
from agentd.runtime.calls import Kernel, Target
from agentd.runtime.history import HistoryCache, SessionHistory
from agentd.runtime.hooks import Checks
from agentd.runtime.loop import CallPolicy, ModelSide, RunExecutor, RunShared, RunSubject, ToolSide
from agentd.runtime.ports import Compactor, RunMemory, SecretValues
from agentd.runtime.runlog import RunLog
from agentd.runtime.sandboxes import Sandboxes
from agentd.runtime.workspaces import SessionWorkspace, WorkspaceKeeper
from agentd.security.policy import Policy, PolicyConfig
from agentd.security.redaction import SecretRedactor
from agentd.store import Lease, NewEvent, Store, WorkspaceHead
from agentd.store.records import AgentRecord, EventRecord, RunRecord
from agentd.tools import COMMAND_TOOLS, FILE_TOOLS, ToolRegistry
from agentd.tools.mcp import MCPManager, with_secrets
from agentd.tools.mcp_oauth import TokenSource
from agentd.tools.secret_refs import SecretSource
from agentd.tools.workers import WorkerPool

if TYPE_CHECKING:
    from agentd.sandbox.context import Sandbox

__all__ = ["FORK_PREFIX", "SCRATCH_PREFIX", "WORKSPACE_TOOLS", "ContextSection",
           "ExecutorFactory", "Prepared", "ReplayBuild"]

log = logging.getLogger(__name__)

#: A part of a run's instructions a service adds (the agent's skills, ...): called
#: once per run with the agent and its plan; None or "" adds nothing.
ContextSection = Callable[[AgentRecord, AgentPlan], Awaitable[str | None]]
#: Builds the executor of a replay's run (:meth:`agentd.runtime.replay.Replays.build`):
#: (run, agent, session key, origin, prepared).
ReplayBuild = Callable[[RunRecord, AgentRecord, str, dict[str, Any], "Prepared | None"],
                       Awaitable["RunExecutor | None"]]
#: The sessions whose runs may be replays (``replay:<run id>:<n>``).
SCRATCH_PREFIX = "replay:"
#: The sessions whose runs may be forks (``fork:<run id>:<n>``, ``fork:<eval run>:<case>``).
FORK_PREFIX = "fork:"
#: A run's finished children's usage: (input tokens, output tokens, cost in USD).
ChildUsage = Callable[[str], Awaitable[tuple[int, int, float]]]

#: Tools that read or change the workspace: an agent with any of them has its
#: workspace snapshotted (and checked for changes from outside).
WORKSPACE_TOOLS = frozenset(FILE_TOOLS) | frozenset(COMMAND_TOOLS)


@dataclass(kw_only=True, slots=True)
class Prepared:
    """What the sender already knows about a run, so starting it needs no reads."""

    run: RunRecord
    session_key: str
    min_seq: int
    session_policy: dict[str, Any] | None = None
    #: Where the run's message came from (its ``message.user`` data beyond the
    #: content), when the sender knows it: no read of the log to find out.
    origin: dict[str, Any] | None = None
    #: The session's whole log when the message created the session: its history
    #: needs no read either (a burst of schedule fires into new sessions).
    log: list[EventRecord] | None = None
    #: The run started when its message was accepted (``run.started`` logged, the run
    #: ``running`` under this node's lease): its executor does not start it again.
    started: bool = False


def permissions_for(settings: Settings, agent: PolicyConfig, session: PolicyConfig | None
                    ) -> Policy:
    """The layered policy of an agent's session (daemon < agent < session)."""
    return Policy(daemon=settings.policy, agent=agent, session=session)


def _mb(daemon: int, agent: int | None) -> int | None:
    """A size limit in bytes: the daemon's (0: none), lowered by the agent's."""
    chosen = [v for v in (daemon, agent) if v]
    return min(chosen) << 20 if chosen else None


@dataclass(kw_only=True, slots=True)  # (not frozen: made for every run, see RunSubject)
class _Start:
    """A run that can start: its agent, plan, session and history."""

    run: RunRecord
    agent: AgentRecord
    plan: AgentPlan
    session_key: str
    permissions: Policy


@dataclass(kw_only=True, slots=True)
class _Shape:
    """What building a run works out from its agent's revision alone (the record and
    its plan), the same for each of its runs: made at the first run of a revision,
    kept while the agent's record and plan stay the same objects (any change to the
    agent, its model or settings, or a reload that drops its plan, makes new ones).
    Nothing here depends on the daemon's live settings, the tool registry or the
    run."""

    agent: AgentRecord
    plan: AgentPlan
    #: What drives the runs: a team's executor, an adapter's, or the agent loop.
    executor: type[RunExecutor]
    #: A team's runs (their usage counts their members'), and a team's or an
    #: adapter's: these call no model and no tool themselves.
    team: bool
    delegated: bool
    #: Named endpoints of the plan's models keyed by a secret of the agent
    #: (``Agents.keyed_secrets``: endpoint -> secret).
    wanted: dict[str, str]
    workspace: Path
    #: The runs may have tools (the agent names some, or MCP servers).
    tooled: bool
    #: A check runs a command (in the agent's sandbox, tools or not).
    commands: bool


class ExecutorFactory:
    """Builds :class:`RunExecutor` s for the supervisor (its ``build`` callback)."""

    def __init__(self, settings: Settings, store: Store, *, bus: EventBus, runlog: RunLog,
                 agents: Agents, histories: HistoryCache, tools: ToolRegistry,
                 mcp: MCPManager, sandboxes: Sandboxes, workspaces: WorkspaceKeeper | None,
                 kernel: Kernel, workers: WorkerPool, lease: Lease,
                 memory: RunMemory | None = None,
                 compactor: Compactor | None = None) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.runlog = runlog
        self.agents = agents
        self.histories = histories
        self.tools = tools
        self.mcp = mcp
        self.sandboxes = sandboxes
        self.workspaces = workspaces
        self.kernel = kernel
        self.workers = workers
        self.lease = lease
        self.memory = memory
        self.compactor = compactor
        #: The services tools may use, by class (``ToolContext.service``): each service
        #: that has tools is provided here (see :class:`agentd.assembly.Runtime`).
        self.services: dict[type, object] = {}
        #: Parts of every run's instructions the services add, in order, after the
        #: agent's own instructions and before its memory blocks.
        self.sections: list[ContextSection] = []
        #: The usage of a run's finished child runs (subtasks, calls), counted in its
        #: run budget and its final usage (``agentd.autonomy.subtasks``), if any.
        self.child_usage: ChildUsage | None = None
        #: ... for the runs of agents with one of these tools (the others have none).
        self.child_usage_tools: frozenset[str] = frozenset()
        #: Drives the runs of agents with ``settings.team`` (``agentd.autonomy.teams``).
        self.team_executor: type[RunExecutor] | None = None
        #: Drives the runs of agents backed by an adapter (``agentd.adapters``).
        self.adapter_executor: type[RunExecutor] | None = None
        self._policies: dict[tuple[int, str, int], tuple[AgentPlan, CallPolicy]] = {}
        #: Each plan's permissions for a session without a policy of its own, under the
        #: daemon's policy they were made with (a Policy is read only once made: one
        #: per plan serves all its runs until either changes, a reload for the daemon's).
        self._permissions: dict[int, tuple[AgentPlan, PolicyConfig, Policy]] = {}
        self._shared: RunShared | None = None
        #: Each awake agent's :class:`_Shape`, by id (checked against its record and
        #: plan at each run).
        self._shapes: dict[str, _Shape] = {}
        #: A tenant's day and month limits (its budget and spend quota), and a number
        #: that changes whenever they may have (call policies are cached on it).
        self.tenant_budget: Callable[[str], Budget | None] = self._configured_budget
        self.tenant_budgets_version: Callable[[], int] = lambda: 0
        #: Runs agents' checks (``settings.hooks``: ``agentd.hooks``), if any.
        self.checks: Checks | None = None
        #: Offers runs to the node holding their agent's files (None: none are).
        self.affinity: Affinity | None = None
        #: Whether a run of the agent (by id) is under way on this node.
        self.agent_busy: Callable[[str], bool] = lambda agent_id: False
        #: The values of the secrets an agent (tenant, name) could use, redacted out of
        #: what its runs write (``agentd.secrets``; None: no secrets).
        self.secret_values: SecretValues | None = None
        #: What resolves ``secret:NAME`` for a run of an agent (tenant, name), giving
        #: each value it resolves to the run's redactor (None: no secrets).
        self.secret_source: Callable[[str, str, SecretRedactor], SecretSource] | None = None
        #: What gives the OAuth access tokens of a run's MCP servers (``settings.mcp[]
        #: .oauth``: ``agentd.secrets.oauth``) for an agent (tenant, name), telling
        #: the run's redactor each one (None: no OAuth).
        self.mcp_tokens: Callable[[str, str, SecretRedactor], TokenSource] | None = None
        #: Builds the runs of replays (``agentd.runtime.replay``), if any.
        self.replay: ReplayBuild | None = None
        #: Builds the runs of forks (``agentd.runtime.fork``), if any.
        self.fork: ReplayBuild | None = None

    def provide(self, service: object) -> None:
        """Let tools find ``service`` by its class (``ctx.service(type(service))``)."""
        self.services[type(service)] = service

    async def build(self, run_id: str, prepared: Prepared | None) -> RunExecutor | None:
        """The executor of ``run_id``, or None when the run does not start here (ended,
        held while its agent is paused, or settled now because it cannot start)."""
        start = await self._startable(run_id, prepared)
        if start is None:
            return None
        if start.session_key.startswith((SCRATCH_PREFIX, FORK_PREFIX)):
            replayed = await self._replayed(start, prepared)
            if replayed is not False:
                return replayed
        head = await self._head(start) if self._may_follow(start) else None
        if head is not None and await self._offered(start, prepared, head):
            return None
        run, agent, plan = start.run, start.agent, start.plan
        history = await self.histories.get(
            run.session_id, min_seq=prepared.min_seq if prepared else None,
            agent_id=agent.id, log=prepared.log if prepared else None)
        shape = self._shape(agent, plan)
        redactor, source = await self.secrets_for(plan.settings.tenant, agent.name)
        tools: list[Any] = []
        notes: list[NewEvent] = []
        if shape.tooled and not shape.delegated:
            tools, notes = await self.agent_tools(agent, plan, run.id, source, redactor)
        if tools or shape.commands:
            tool_side = await self._tool_side(start, history, tools, notes, head)
            if tool_side is None:
                return None
        else:
            tool_side = self._tools_given(start, shape.workspace, [], notes)
        origin = (prepared.origin if prepared is not None and prepared.origin is not None
                  else await self._origin(run))
        policy, payer = ((self.call_policy(plan, run.priority), None)
                         if origin.get("payer") in (None, agent.id)
                         else await self._payer(plan, agent, run.priority, origin))
        base, instructions = await self.instructions(agent, plan)
        shared = self._shared
        if shared is None:
            shared = self._shared = RunShared(store=self.store, bus=self.bus,
                                              kernel=self.kernel, lease=self.lease,
                                              workers=self.workers)
        targets = (await self._keyed(agent, plan, source, shape.wanted) if shape.wanted
                   else plan.targets)
        return shape.executor(
            shared,
            RunSubject(run=run, agent_name=agent.name, session_key=start.session_key,
                       history=history, settings=plan.settings, origin=origin, payer=payer,
                       started=prepared is not None and prepared.started
                       and run.status == "running", redactor=redactor, secrets=source),
            self._model_side(plan, targets, policy, base, instructions,
                             children=shape.team or (bool(tools) and any(
                                 t.name in self.child_usage_tools for t in tools))),
            tool_side)

    def _shape(self, agent: AgentRecord, plan: AgentPlan) -> _Shape:
        """What the runs of this revision of ``agent`` share (see :class:`_Shape`)."""
        shape = self._shapes.get(agent.id)
        if shape is not None and shape.agent is agent and shape.plan is plan:
            return shape
        # A team's runs call no model and no tool: its members do (agentd.autonomy.teams);
        # an adapter's runs neither: its framework does (agentd.adapters).
        team = plan.settings.team is not None and self.team_executor is not None
        adapter = (self.adapter_executor is not None
                   and plan.targets[0].model.provider == "adapter")
        shape = _Shape(agent=agent, plan=plan,
                       executor=self._executor_class(team=team, adapter=adapter),
                       team=team, delegated=team or adapter,
                       wanted=self.agents.keyed_secrets(plan),
                       workspace=self.agents.workspace_of(agent),
                       tooled=bool(agent.tools or plan.mcp),
                       commands=plan.settings.all_checks.commands)
        if len(self._shapes) > 4096:
            self._shapes.clear()
        self._shapes[agent.id] = shape
        return shape

    def _executor_class(self, *, team: bool, adapter: bool) -> type[RunExecutor]:
        """What drives the run: a team's executor, an adapter's, or the agent loop."""
        if team and self.team_executor is not None:
            return self.team_executor
        if adapter and self.adapter_executor is not None:
            return self.adapter_executor
        return RunExecutor

    def _model_side(self, plan: AgentPlan, targets: list[Target], policy: CallPolicy,
                    base: str, full: str, *, children: bool) -> ModelSide:
        """What a run calls its models with; ``base``, ``full``: the agent's own
        instructions and the run's; ``children``: whether the run's usage counts its
        children's."""
        repairs = plan.settings.output.max_repairs
        return ModelSide(targets=targets, policy=policy,
                         instructions=full, base_instructions=base,
                         max_steps=plan.settings.max_steps or self.settings.max_steps,
                         checkpoint_every=self.settings.checkpoint_interval_s or None,
                         output_repairs=(self.settings.output_max_repairs if repairs is None
                                         else repairs),
                         memory=self.memory, compactor=self.compactor,
                         child_usage=self.child_usage if children else None)

    async def _keyed(self, agent: AgentRecord, plan: AgentPlan, source: SecretSource | None,
                     wanted: dict[str, str]) -> list[Target]:
        """The run's models: the plan's, or, for named endpoints whose key is a secret
        of the agent (``api_key_secret``: ``wanted``, endpoint -> secret), models
        holding its key. A key it has none of leaves the plan's model, whose calls fail
        saying which secret is missing."""
        keys: dict[str, str] = {}
        for endpoint, secret in wanted.items():
            if source is None:
                break
            try:
                keys[endpoint] = await source.resolve(secret, use=f"model:{endpoint} key")
            except AgentdError as exc:
                log.warning("agent %s: no key for model endpoint %s: %s", agent.name,
                            endpoint, exc.message)
        return self.agents.keyed_targets(agent, plan, keys) if keys else plan.targets

    async def secrets_for(self, tenant: str, agent: str
                          ) -> tuple[SecretRedactor, SecretSource | None]:
        """A run's redactor (the values of every secret its agent could use) and what
        resolves its ``secret:NAME`` references (giving that redactor what it
        resolves)."""
        redactor = SecretRedactor(await self.secret_values(tenant, agent)
                                  if self.secret_values is not None else None)
        source = (self.secret_source(tenant, agent, redactor)
                  if self.secret_source is not None else None)
        return redactor, source
    async def _replayed(self, start: _Start, prepared: Prepared | None
                        ) -> RunExecutor | Literal[False] | None:
        """The executor of a replay's run (``agentd.runtime.replay``: a run of a
        ``replay:`` session whose message names the run it replays) or of a fork's
        (``agentd.runtime.fork``: a ``fork:`` session's, whose message names the
        fork); False for any other run."""
        key = start.session_key
        if key.startswith(SCRATCH_PREFIX):
            build, mark = self.replay, "replay"
        elif key.startswith(FORK_PREFIX):
            build, mark = self.fork, "fork"
        else:
            return False
        if build is None:
            return False
        origin = (prepared.origin if prepared is not None and prepared.origin is not None
                  else await self._origin(start.run))
        if mark not in origin:
            return False
        return await build(start.run, start.agent, key, origin, prepared)

    def uses_workspace(self, tools: list[Any]) -> bool:
        """Whether any of ``tools`` reads or changes the agent's workspace."""
        return self._uses_workspace(tools)

    def _uses_workspace(self, tools: list[Any]) -> bool:
        memory_tools = self.memory.tool_names if self.memory is not None else frozenset()
        return any((not t.read_only and t.name not in memory_tools)
                   or t.name in WORKSPACE_TOOLS for t in tools)

    async def elsewhere(self, agent: AgentRecord) -> bool:
        """Whether a run of ``agent`` is best started on another node: the one where
        its files were last committed, if runs are offered there (read at most once a
        second per agent)."""
        keeper = self.workspaces
        if (self.affinity is None or not self.affinity.on or keeper is None
                or not self._uses_workspace(self.tools.resolve(agent.tools))):
            return False
        return await keeper.elsewhere(agent.id) is not None

    def _may_follow(self, start: _Start) -> bool:
        """Whether the agent's files may have to follow it here (a shared snapshot
        store, and tools that use the workspace)."""
        keeper = self.workspaces
        return keeper is not None and keeper.shared is not None and self._uses_workspace(
            self.tools.resolve(start.agent.tools))

    async def _head(self, start: _Start) -> WorkspaceHead | None:
        """The agent's workspace head (where its files were last committed); asked
        only when they may have to follow it here (:meth:`_may_follow`)."""
        keeper = self.workspaces
        return None if keeper is None else await keeper.head(start.agent.id)

    async def _offered(self, start: _Start, prepared: Prepared | None,
                       head: WorkspaceHead) -> bool:
        """Whether the run is offered to the node holding its agent's files instead
        of starting here: only a run accepted here with its message, not started yet,
        and not offered already (:mod:`agentd.runtime.affinity`)."""
        affinity, keeper = self.affinity, self.workspaces
        if (affinity is None or keeper is None or prepared is None or prepared.started
                or start.run.status != "queued" or not affinity.may_offer(start.run.id)):
            return False
        node = keeper.preferred(head)
        if node is None:
            return False
        await affinity.offer(start.run, node)
        return True

    async def _follow(self, start: _Start, history: SessionHistory, workspace: Path,
                      head: WorkspaceHead | None) -> NewEvent | bool | None:
        """Bring the agent's workspace to its last committed state before the run (see
        :meth:`WorkspaceKeeper.follow`): the ``workspace.restored`` event to log, None
        when nothing was restored, False when the run failed because the files could
        not be brought here (a missing or damaged snapshot: nothing was changed)."""
        keeper, run = self.workspaces, start.run
        if keeper is None or head is None:
            return None
        try:
            data = await keeper.follow(
                start.agent.id, workspace, scope=start.plan.settings.tenant,
                seq=history.last_seq, busy=self.agent_busy(start.agent.id), head=head)
        except AgentdError as exc:
            if exc.retryable:
                raise  # (the store cannot be read now: the run is left for later)
            await self.runlog.fail(run, StoreError(
                f"the agent's workspace could not be brought to its last committed "
                f"state ({exc.message}); the run did not start and nothing was changed",
                code="workspace_unavailable",
                details={"ref": head.ref, "node": head.node, "cause": exc.code}))
            return False
        if data is None:
            return None
        if data.get("written") or data.get("removed"):
            await self.sandboxes.prepare(workspace, agent_id=start.agent.id)
        return NewEvent.of(WorkspaceRestored(data=data), run.id)

    async def _tool_side(self, start: _Start, history: SessionHistory, tools: list[Any],
                         notes: list[NewEvent], head: WorkspaceHead | None = None
                         ) -> ToolSide | None:
        """What the run's tools get: the sandbox (None, and the run failed, when the
        agent's sandbox cannot be made), the workspace and its snapshots when a tool
        may write it (brought to the agent's last committed files first, when another
        node committed them), and the shell closed when the session is tainted."""
        run, agent, plan = start.run, start.agent, start.plan
        workspace = self.agents.workspace_of(agent)
        shell_key = f"{agent.id}/{run.session_id}"
        if tools and self._uses_workspace(tools):
            followed = await self._follow(start, history, workspace, head)
            if followed is False:
                return None
            if isinstance(followed, NewEvent):
                notes.insert(0, followed)
        sandbox = None
        if tools or plan.settings.all_checks.commands:  # (a command check runs in it too)
            try:
                sandbox = await self.sandboxes.for_run(
                    plan.sandbox, plan.limits, workspace=workspace,
                    permissions=start.permissions, shell_key=shell_key, agent_id=agent.id,
                    tenant=plan.settings.tenant)
            except (InvalidInput, Conflict) as exc:
                await self.runlog.fail(run, exc)
                return None
        workspace_steps = None
        if self.workspaces is not None and self._uses_workspace(tools):
            workspace_steps = SessionWorkspace(
                self.workspaces, agent_id=agent.id, session_id=run.session_id,
                workspace=workspace, history=history,
                budget_bytes=_mb(self.settings.sandbox.snapshot_budget_mb,
                                 plan.sandbox.snapshot_budget_mb),
                quota_bytes=_mb(self.settings.sandbox.workspace_max_mb,
                                plan.sandbox.workspace_max_mb),
                scope=plan.settings.tenant)

        return self._tools_given(start, workspace, tools, notes, sandbox, workspace_steps)

    def _tools_given(self, start: _Start, workspace: Path, tools: list[Any],
                     notes: list[NewEvent], sandbox: Sandbox | None = None,
                     workspace_steps: SessionWorkspace | None = None) -> ToolSide:
        """The :class:`ToolSide` of what :meth:`_tool_side` made ready; called alone
        for a run with no tools and no command check (no sandbox, no workspace steps,
        nothing to bring here)."""
        shell_key = f"{start.agent.id}/{start.run.session_id}"

        async def on_tainted() -> None:
            # Content from outside entered the session: its persistent shell, which
            # may hold state the content set up, is closed.
            await self.sandboxes.close_shells(shell_key)

        return ToolSide(tools=tools, timeout_s=self.settings.tool_timeout_s,
                        permissions=start.permissions, sandbox=sandbox, workspace=workspace,
                        workspace_steps=workspace_steps, on_tainted=on_tainted,
                        services=self.services, notes=notes, checks=self.checks)

    async def instructions(self, agent: AgentRecord, plan: AgentPlan) -> tuple[str, str]:
        """The agent's instructions with the services' sections (the base), and with
        its memory blocks after them too (what the model sees), read once per run."""
        base = agent.instructions
        for section in self.sections:
            text = await section(agent, plan)
            if text:
                base = f"{base}\n\n{text}" if base else text
        # One indexed read, none per step.
        instructions = (base if self.memory is None
                        else await self.memory.instructions(agent.id, base))
        return base, instructions

    async def _payer(self, plan: AgentPlan, agent: AgentRecord, priority: str,
                     origin: dict[str, Any]) -> tuple[CallPolicy, tuple[str, str] | None]:
        """The run's call policy, and whose agent budget its usage is charged to when
        another agent pays (``origin["payer"]``: a call or subtask run by another
        agent is paid for by the agent that started it, with its tenant and budget).
        A payer deleted meanwhile, or whose plan no longer resolves: the run's own."""
        payer_id = origin.get("payer")
        if isinstance(payer_id, str) and payer_id != agent.id:
            payer = await self.agents.by_id(payer_id)
            if payer is not None:
                try:
                    return (self.call_policy(self.agents.plan(payer), priority),
                            (payer.id, payer.name))
                except InvalidModel:
                    pass
        return self.call_policy(plan, priority), None

    async def _origin(self, run: RunRecord) -> dict[str, Any]:
        """Where the run's message came from (its ``message.user`` data beyond the
        content: see ``Store.accept_message(origin=...)``); empty for a client's."""
        if run.queued_seq is None or run.queued_seq < 2:
            return {}
        # The message is logged just before its run.queued event, in one append.
        events = await self.store.read_events(run.session_id, after=run.queued_seq - 2,
                                              limit=1)
        if not events or events[0].kind != "message.user" or events[0].run_id != run.id:
            return {}
        return {k: v for k, v in events[0].data.items() if k not in ("content", "steer")}

    async def _startable(self, run_id: str, prepared: Prepared | None) -> _Start | None:
        """The run, its agent and plan if it can start now; else None (settled here
        when it never can)."""
        agent_at: float | None = None
        if prepared is not None:
            # Accepted here against the copy held here (or a newer one): see
            # Runs.send, whose accepting transaction compares it with the store's.
            run, session_key = prepared.run, prepared.session_key
        else:
            # Accepted on any node, against the agent as stored then: a copy held
            # here that is older (a change made elsewhere, not heard of yet) is read
            # again, so the run starts with the settings its message was taken with.
            run, _, session_key, agent_at = await self.store.run_to_start(run_id)
        if run.terminal:
            return None
        agent = await self.agents.by_id(run.agent_id, at_least=agent_at)  # wakes it
        if agent is None:
            return None
        started = prepared is not None and prepared.started and run.status == "running"
        if agent.state == "paused" and not started:
            # Stays queued in the store; resume submits it again. (A run that started
            # goes on, as the runs under way when an agent is paused do.)
            return None
        if agent.state in ("stopped", "error"):
            await self.runlog.cancel(run, f"agent {agent.state}")
            return None
        try:
            plan = self.agents.plan(agent)
        except InvalidModel as exc:
            # The agent's state first: whoever sees the run fail (a waiter, a stream)
            # then finds the agent in error too. (A crash between the two leaves the
            # run queued; the restart cancels it, "agent error", as above.)
            await self.agents.set_state(agent.name, "error")
            await self.runlog.fail(run, exc)
            return None
        if prepared is not None:
            session_policy = prepared.session_policy
        else:
            session_policy = (await self.store.get_session(agent.id, session_key)).policy
        if session_policy is None:
            permissions = self._plan_permissions(plan)
        else:
            permissions = permissions_for(self.settings, plan.policy,
                                          PolicyConfig.model_validate(session_policy))
        return _Start(run=run, agent=agent, plan=plan, session_key=session_key,
                      permissions=permissions)

    async def agent_tools(self, agent: AgentRecord, plan: AgentPlan, run_id: str,
                          secrets: SecretSource | None = None,
                          redactor: SecretRedactor | None = None
                          ) -> tuple[list[Any], list[NewEvent]]:
        """A run's tools: the agent's, then its MCP servers' (with an event naming
        any server that could not be reached, whose secrets could not be had, or that
        waits for a person to authorize it)."""
        tools = self.tools.resolve(agent.tools)
        notes: list[NewEvent] = []
        if plan.mcp:
            servers, failures = await with_secrets(plan.mcp, secrets)
            spawn = self.sandboxes.mcp_spawner(
                plan.sandbox, plan.limits, workspace=self.agents.workspace_of(agent),
                network=permissions_for(self.settings, plan.policy, None).network,
                agent_id=agent.id, tenant=plan.settings.tenant)
            tokens = (self.mcp_tokens(plan.settings.tenant, agent.name,
                                      redactor or SecretRedactor())
                      if self.mcp_tokens is not None and any(s.oauth for s in plan.mcp)
                      else None)
            tools = [*tools, *await self.mcp.tools(agent.id, servers, failures=failures,
                                                   spawn=spawn, tokens=tokens)]
            if failures:
                notes.append(NewEvent.of(ToolsUnavailable(data={"errors": failures}),
                                         run_id))
        return tools, notes

    def _plan_permissions(self, plan: AgentPlan) -> Policy:
        """The permissions of a session of ``plan``'s agent with no policy of its own
        (made once per plan and daemon policy: neither changes, a reload replaces
        them)."""
        daemon = self.settings.policy
        cached = self._permissions.get(id(plan))
        if cached is not None and cached[0] is plan and cached[1] is daemon:
            return cached[2]
        permissions = permissions_for(self.settings, plan.policy, None)
        if len(self._permissions) > 4096:
            self._permissions.clear()
        self._permissions[id(plan)] = (plan, daemon, permissions)
        return permissions

    def _configured_budget(self, tenant: str) -> Budget | None:
        config = self.settings.tenants.get(tenant)
        return None if config is None or config.budget.empty else config.budget

    def call_policy(self, plan: AgentPlan, priority: str) -> CallPolicy:
        """How the run's model calls go through the kernel, and what they may spend
        (worked out once per plan and priority: a plan never changes)."""
        key = (id(plan), priority, self.tenant_budgets_version())
        cached = self._policies.get(key)
        if cached is not None and cached[0] is plan:
            return cached[1]
        policy = self._call_policy(plan, priority)
        if len(self._policies) > 4096:
            self._policies.clear()
        self._policies[key] = (plan, policy)
        return policy

    def _call_policy(self, plan: AgentPlan, priority: str) -> CallPolicy:
        settings = plan.settings
        tenant_budget = self.tenant_budget(settings.tenant)
        retry = self.kernel.retry if settings.max_retries is None else replace(
            self.kernel.retry, attempts=settings.max_retries + 1)
        return CallPolicy(
            priority=priority if priority in PRIORITIES else "background",
            tenant=settings.tenant, weight=settings.weight,
            budget=plan.budget, tenant_budget=tenant_budget,
            budgeted=plan.budgeted or tenant_budget is not None,
            retry=retry, park=settings.on_outage == "wait",
            outage_timeout_s=settings.outage_timeout_s,
            max_continuations=settings.max_continuations)
