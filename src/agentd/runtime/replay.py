"""Exact replay: a finished run executed again from its log, calling no model and
running no tool, and its events compared with the original's.

``POST /v1/runs/{id}/replay`` (``agentd replay RUN``, ``Runtime.replay``):

1. the original must be finished (409 ``run_in_flight`` while it is not) and have
   started (422 ``replay_unsupported`` for a run cancelled in the queue);
2. a scratch session of the same agent, key ``replay:<run id>:<n>``, is forked from
   the original's session just before the run's message (the context is the same;
   no file is touched; deleting it touches nothing of the original);
3. the run's message is sent to it again, with the same origin and ``replay`` naming
   the original: an ordinary run of the scratch session (queued, leased, resumed after
   a restart like any other), except that :class:`ExecutorFactory` has it built here:
   its model is a :class:`~agentd.runtime._recorded.RecordedModel` serving the
   original's answers, its tools answer from the original's ``tool.finished``
   events, approval requests are decided as the original's were, and the agent's
   model, instructions, tools and settings are those the original started with (its
   revision, :meth:`agentd.store.Store.agent_as_of`). Its usage is logged (to compare)
   but charged to no ledger and no budget;
4. the two runs' events are compared (:mod:`agentd.runtime._divergence`).

What later features build on (fork a run at a step, evals, export): :meth:`Replays.
start` (the scratch run, without waiting) and :meth:`Replays.compare` are separate.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentd.errors import (
    AgentdError,
    AgentNotAccepting,
    Conflict,
    InvalidInput,
    RunNotFound,
    SessionExists,
)
from agentd.runtime._divergence import first_divergence, normalised
from agentd.runtime._recorded import (
    Answers,
    RecordedModel,
    Recording,
    ReplayExecutor,
    children_usage,
    recorded_tools,
)
from agentd.runtime.agents import runs_no_loop
from agentd.runtime.calls import Target
from agentd.runtime.executors import SCRATCH_PREFIX as _SCRATCH
from agentd.runtime.executors import ExecutorFactory, permissions_for
from agentd.runtime.loop import CallPolicy, ModelSide, RunExecutor, RunShared, RunSubject, ToolSide
from agentd.security.policy import Policy, PolicyConfig
from agentd.settings.check import stored_settings
from agentd.store.records import AgentRecord, EventRecord, RunRecord, tenant_of

if TYPE_CHECKING:
    from agentd.runtime.executors import Prepared
    from agentd.runtime.runs import Runs

__all__ = ["SCRATCH_PREFIX", "Replays", "check_ended", "is_scratch"]

#: The key of a replay's scratch session: ``replay:<run id>:<n>``.
SCRATCH_PREFIX = _SCRATCH
#: Tries at a free scratch key (``n`` counts the original's replays).
_KEY_TRIES = 5


def is_scratch(key: str) -> bool:
    """Whether ``key`` names a replay's scratch session."""
    return key.startswith(SCRATCH_PREFIX)


def check_ended(run: RunRecord, doing: str, code: str) -> None:
    """Refuse to work from ``run`` (``doing``: "replayed", "forked", ...) until it has
    ended (409 ``run_in_flight``), and when it never started (422 ``code``)."""
    if not run.terminal:
        raise Conflict(f"run {run.id!r} is {run.status}; it can be {doing} once it has "
                       "ended", code="run_in_flight")
    if run.started_at is None:
        raise InvalidInput(f"run {run.id!r} never started ({run.status} while queued): "
                           "there is nothing to work from", code=code)


class Replays:
    """Replays runs (see the module's docstring)."""

    def __init__(self, factory: ExecutorFactory, runs: Runs) -> None:
        self.factory = factory
        self.store = factory.store
        self.runs = runs

    async def replay(self, run_id: str) -> dict[str, Any]:
        """Replay ``run_id`` and compare: ``{run_id, session, model_calls,
        tools_executed, matches, first_divergence}``."""
        original, replay, key = await self.start(run_id)
        done = await self.settled(replay.id)
        return {"run_id": done.id, "session": key, "status": done.status,
                "model_calls": 0, "tools_executed": 0,
                **await self.compare(original, done)}

    async def start(self, run_id: str) -> tuple[RunRecord, RunRecord, str]:
        """The original run, the replay's run (queued or started) and its session's
        key."""
        original, name, key = await self.store.run_context(run_id)
        check_ended(original, "replayed", "replay_unsupported")
        agent = await self.factory.agents.get(name)
        if agent.state in AgentNotAccepting.STATES:
            # (refused before the scratch session is made: nothing is left behind)
            raise AgentNotAccepting.of(name, agent.state)
        as_run = await self._agent_as_run(original, agent)  # (refused now, not later)
        if stored_settings(as_run.settings).team is not None:
            raise InvalidInput(f"run {run_id!r} is a team's: its members' runs are "
                               "replayed one by one", code="replay_unsupported")
        if runs_no_loop(as_run.model, stored_settings(as_run.settings)) is not None:
            # (what its framework decided is not in agentd's loop to decide again)
            raise InvalidInput(f"run {run_id!r} is an adapter-backed agent's: its "
                               "framework ran it, not agentd's loop",
                               code="replay_unsupported")
        events = await self.store.read_events(original.session_id)
        mine = [e for e in events if e.run_id == run_id]
        message = next((e for e in mine if e.kind == "message.user"), None)
        if message is None:
            raise InvalidInput(f"run {run_id!r} has no message in its session's log "
                               "(restored away?)", code="replay_unsupported")
        if sum(1 for e in mine if e.kind == "message.user") > 1:
            raise InvalidInput(f"run {run_id!r} had messages steered into it; a replay "
                               "cannot place them", code="replay_unsupported")
        unsupported = Recording.of(mine).unsupported
        if unsupported is not None:
            raise InvalidInput(f"run {run_id!r} cannot be replayed exactly: {unsupported}",
                               code="replay_unsupported")
        session = await self.scratch(original, agent, key, message.seq - 1)
        origin = {k: v for k, v in message.data.items() if k not in ("content", "steer")}
        sent = await self.runs.send(name, session, str(message.data.get("content", "")),
                                    priority=original.priority, start=True,
                                    origin={**origin, "replay": run_id})
        return original, sent.run, session

    async def scratch(self, original: RunRecord, agent: AgentRecord, key: str, seq: int,
                      kind: str = SCRATCH_PREFIX) -> str:
        """Fork the original's session at ``seq`` into a free scratch key
        (``<kind><run id>:<n>``, ``n``: one more than the highest of the run's kept);
        a scratch session counts against the tenant's quota of sessions like any
        other."""
        quota = self.factory.agents.guard.quotas.quota(tenant_of(agent.settings), "sessions")
        prefix = f"{kind}{original.id}:"
        page = await self.store.session_page(original.agent_id, limit=1000, q=prefix)
        taken = [int(k) for s in page.sessions
                 if s.key.startswith(prefix) and (k := s.key[len(prefix):]).isdigit()]
        n = max(taken, default=0)
        for attempt in range(1, _KEY_TRIES + 1):
            scratch = f"{prefix}{n + attempt}"
            try:
                await self.store.fork_session(original.session_id, key=scratch, seq=seq,
                                              source={"agent": agent.name, "session": key},
                                              quota=quota)
            except SessionExists:
                continue  # (another replay of the run took it meanwhile)
            return scratch
        raise Conflict("no free scratch session key; try again",
                       code=f"{kind.rstrip(':')}_busy", retryable=True)

    async def settled(self, run_id: str) -> RunRecord:
        """A replay's (or a fork's) run once it has ended (it decides its own
        approvals: a ``waiting_approval`` seen on the way is brief)."""
        while True:
            run = await self.runs.wait(run_id)
            if run.terminal:
                return run
            await asyncio.sleep(0.005)

    async def compare(self, original: RunRecord, replay: RunRecord) -> dict[str, Any]:
        """``{matches, first_divergence}`` of the two runs' logs."""
        _, _, key = await self.store.run_context(original.id)
        _, _, scratch = await self.store.run_context(replay.id)
        expected = normalised(await self._events(original), original.id, original.id)
        got = normalised(await self._events(replay), replay.id, original.id,
                         key=scratch, as_key=key)
        divergence = first_divergence(expected, got)
        return {"matches": divergence is None, "first_divergence": divergence}

    async def _events(self, run: RunRecord) -> list[EventRecord]:
        return self.run_events(await self.store.read_events(run.session_id), run)

    @staticmethod
    def run_events(log: list[EventRecord], run: RunRecord) -> list[EventRecord]:
        """The run's events of its session's ``log``, and the session's own events
        logged while it ran (a workspace check's ``workspace.snapshot`` names no run)."""
        seqs = [e.seq for e in log if e.run_id == run.id]
        if not seqs:
            return []
        return [e for e in log if e.run_id == run.id
                or (e.run_id is None and seqs[0] < e.seq < seqs[-1])]

    async def _agent_as_run(self, original: RunRecord, agent: AgentRecord) -> AgentRecord:
        """The agent as the run started with it: its revision then, or the agent as it
        is when it has not changed since (409 ``replay_settings_unknown`` when it has
        and no revision is that old)."""
        at = original.started_at or original.created_at
        revision = await self.store.agent_as_of(agent.id, at)
        if revision is not None:
            return revision
        if agent.updated_at <= at:
            return agent
        raise Conflict(f"agent {agent.name!r} changed since run {original.id!r} started and "
                       "its settings then were not recorded (the run predates agent "
                       "revisions); it cannot be replayed exactly",
                       code="replay_settings_unknown")

    # -- the scratch run's executor (ExecutorFactory.replay) -------------------------

    async def _policy_timeline(self, original: RunRecord, agent: AgentRecord,
                               session_policy: dict[str, Any] | None
                               ) -> Callable[[float], Policy] | None:
        """The agent's policy at each time of the original run, when it changed while
        the run ran (a rule remembered at one of its approvals); None when it did not."""
        started = original.started_at or original.created_at
        changes = await self.store.agent_settings_between(
            agent.id, started, original.finished_at or started)
        if not changes:
            return None
        session = (None if session_policy is None
                   else PolicyConfig.model_validate(session_policy))
        policies = [(at, permissions_for(self.factory.settings,
                                         stored_settings(raw).policy, session))
                    for at, raw in changes]

        def policy_at(at: float) -> Policy:
            chosen = None
            for changed, policy in policies:
                if changed <= at:
                    chosen = policy
            return chosen if chosen is not None else first

        first = permissions_for(self.factory.settings, stored_settings(
            (await self._agent_as_run(original, agent)).settings).policy, session)
        return policy_at

    async def build(self, run: RunRecord, agent: AgentRecord, key: str,
                    origin: dict[str, Any], prepared: Prepared | None
                    ) -> RunExecutor | None:
        """The executor of a replay's run: the original's recording, its agent's
        revision, no sandbox work, no memory, no compaction."""
        f = self.factory
        try:
            original = await self.store.get_run(str(origin["replay"]))
            as_run = await self._agent_as_run(original, agent)
        except (RunNotFound, Conflict) as exc:
            await f.runlog.fail(run, AgentdError(f"cannot replay: {exc}",
                                                 code="replay_unsupported"))
            return None
        recorded = await self._events(original)
        recording = Recording.of(recorded)
        if recording.unsupported is not None:
            await f.runlog.fail(run, InvalidInput(
                f"cannot replay: {recording.unsupported}", code="replay_unsupported"))
            return None
        served = 0
        if run.status != "queued":  # resumed after a restart: go on where it was
            served = recording.skip_served(await self._events(run))
        settings = stored_settings(as_run.settings)
        history = await f.histories.get(
            run.session_id, min_seq=prepared.min_seq if prepared else None,
            agent_id=agent.id, log=prepared.log if prepared else None)
        # No budget is looked at (a replay spends nothing), no retry, no parking.
        policy = CallPolicy(
            priority=run.priority, tenant=settings.tenant, weight=settings.weight,
            budget=settings.budget, retry=dataclasses.replace(f.kernel.retry, attempts=1),
            park=False, max_continuations=settings.max_continuations)
        session_policy = (prepared.session_policy if prepared is not None else
                          (await self.store.get_session(agent.id, key)).policy)
        permissions = permissions_for(
            f.settings, settings.policy,
            None if session_policy is None else PolicyConfig.model_validate(session_policy))
        tools = recorded_tools(f.tools.resolve(as_run.tools), recording)
        sandbox = None
        if tools:
            # The verdicts depend on whether commands are walled in: the sandbox the
            # run would get (nothing is started in it).
            try:
                sandbox = await f.sandboxes.for_run(
                    settings.sandbox, f.sandboxes.limits(settings.sandbox),
                    workspace=f.agents.workspace_of(agent), permissions=permissions,
                    shell_key=f"{agent.id}/{run.session_id}", agent_id=agent.id,
                    tenant=settings.tenant)
            except AgentdError:
                sandbox = None
        answers = Answers(recording.answers, served)
        # The chain the run had (its model, then its fallbacks), and any other model
        # that answered it: each serves the answers its model gave.
        chain = [as_run.model, *(f.model for f in settings.fallbacks)]
        chain += sorted({str(a.get("model")) for a in recording.answers
                         if a.get("model") and a.get("model") not in chain})
        models = [RecordedModel(spec, answers) for spec in chain]
        repairs = settings.output.max_repairs
        executor = ReplayExecutor(
            RunShared(store=self.store, bus=f.bus, kernel=f.kernel, lease=f.lease),
            RunSubject(run=run, agent_name=agent.name, session_key=key, history=history,
                       settings=settings, origin=origin,
                       started=prepared is not None and prepared.started
                       and run.status == "running"),
            ModelSide(targets=[Target(model=m, info=f.agents.catalog.get(m.spec))
                               for m in models],
                      policy=policy, instructions=as_run.instructions,
                      max_steps=settings.max_steps or f.settings.max_steps,
                      # (the repairs a wrong structured answer gets, as the run had)
                      output_repairs=(f.settings.output_max_repairs if repairs is None
                                      else repairs)),
            ToolSide(tools=tools, timeout_s=f.settings.tool_timeout_s,
                     permissions=permissions, sandbox=sandbox))
        executor.recording, executor.answers = recording, answers
        executor.policy_at = await self._policy_timeline(original, agent, session_policy)
        if recording.cancelled is not None:
            for m in models:
                m.on_cancelled = executor.stop_as_recorded
            recording.on_unfinished = executor.cancel_as_recorded
        # The original's usage counted its child runs' (subtasks, calls to agents): the
        # replay's counts them as recorded (it starts none).
        children = children_usage(recorded, original.id)
        if any(children):
            async def child_usage(_: str) -> tuple[int, int, float]:
                return children

            executor.child_usage = child_usage
        return executor
