"""Fork a finished run onto another configuration from one of its steps, and compare.

``POST /v1/runs/{id}/fork`` (``agentd fork``, ``Runtime.fork``) with ``from_step`` K,
and any of ``model``, ``instructions``, ``settings`` (keys over the agent's) and
``tools`` (``recorded``, the default, or ``live``):

1. the original must have ended (409 ``run_in_flight``) and have a step K (422
   ``step_out_of_range``); the candidate is checked as a change of the agent by the
   caller would be (a model that does not resolve: 422 naming it; an operator-only
   setting from a token below operator: 403), and nothing is written before that;
2. a scratch session of the same agent, ``fork:<run id>:<n>``, is forked from the
   original's session just before the run's message (as a replay's is); the run's
   message is sent to it again, naming the fork, whose row (``forks``: what the
   fork's run needs, the original's events included) is committed with it;
3. the fork's run (:class:`~agentd.runtime._forked.ForkExecutor`) serves the steps
   before K from the original's log, then runs the candidate for real: its models
   through the kernel (charged to the agent and its tenant, under its budgets), its
   tools either answered from the recording where the original made the same call
   (name and arguments; any other call fails with a tool error, ``fork_unrecorded``)
   or, with ``tools: "live"``, run in a scratch copy of the workspace as it was when
   step K began (the session's last snapshot before it; 422
   ``fork_workspace_unknown`` when there is none and the agent's tools use the
   workspace). The agent's memory is its own: a fork reads its blocks but never
   writes, so memory tools are answered from the recording in either mode. No one
   decides a fork's calls: an approval is decided as the original's same call was,
   else refused;
4. :meth:`Forks.report`: the first step where the fork decided differently, the tool
   calls it added and removed, both final answers, and both runs' tokens and cost.

A fork never touches the original session, its workspace or the agent's memory.
Evaluations (:mod:`agentd.evals`) fork their cases the same way, from a copy the case
keeps (:meth:`Forks.start_case`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from agentd.errors import (
    AgentdError,
    AgentNotAccepting,
    InvalidInput,
    NotFound,
)
from agentd.runtime._divergence import (
    calls_diff,
    calls_of,
    compared,
    first_divergence,
    normalised,
    usage_from,
)
from agentd.runtime._forked import UNRECORDED, CallBook, ForkExecutor, Live, by_call
from agentd.runtime._recorded import Answers, RecordedModel, Recording, recorded_tools
from agentd.runtime.agents import AgentPlan
from agentd.runtime.calls import ModelCaller, Target
from agentd.runtime.executors import FORK_PREFIX, permissions_for
from agentd.runtime.loop import CallPolicy, ModelSide, RunShared, RunSubject, ToolSide
from agentd.runtime.replay import check_ended
from agentd.runtime.workspaces import snapshot_at
from agentd.security.identity import Principal
from agentd.security.policy import Policy, PolicyConfig
from agentd.settings.check import stored_settings
from agentd.store import Accepted, Tx, new_id
from agentd.store.records import AgentRecord, EventRecord, RunRecord, tenant_of

if TYPE_CHECKING:
    from agentd.runtime.executors import ExecutorFactory, Prepared
    from agentd.runtime.loop import RunExecutor
    from agentd.runtime.replay import Replays
    from agentd.runtime.runs import Runs
    from agentd.tools import Tool

__all__ = ["FORK_PREFIX", "TOOL_MODES", "ForkRequest", "Forks"]

ToolMode = Literal["live", "recorded"]
TOOL_MODES: tuple[ToolMode, ...] = ("recorded", "live")
#: Candidate plans kept (an eval run forks every case onto one candidate).
_PLANS = 16
#: A scratch workspace without its fork's row is left this long (seconds of its age):
#: the row is committed with the fork's message, after the copy is made.
_YOUNG_S = 3600.0
#: Why a copy of a snapshot the agent has no mark of is untrusted.
_UNKNOWN_COPY = "the fork's copy of the workspace is of unknown provenance"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ForkRequest:
    """What to fork onto: the step, and what replaces the agent's own."""

    from_step: int
    model: str | None = None
    instructions: str | None = None
    settings: Mapping[str, Any] | None = None
    tools: ToolMode = "recorded"
    #: The fork's run's class in the kernel's scheduler (None: the original's).
    priority: str | None = None

    def candidate(self) -> dict[str, Any]:
        return {"model": self.model, "instructions": self.instructions,
                "settings": dict(self.settings) if self.settings is not None else None,
                "tools": self.tools}


@dataclasses.dataclass(kw_only=True, slots=True)
class _Source:
    """What a fork is made from: the original run's record (as much as is known),
    its events, and its message."""

    run: dict[str, Any]
    events: list[EventRecord]
    message: dict[str, Any]


def _recorded(events: Sequence[EventRecord]) -> list[dict[str, Any]]:
    return [{"seq": e.seq, "kind": e.kind, "data": e.data, "at": e.at} for e in events]


def _events(items: Sequence[Mapping[str, Any]], run_id: str) -> list[EventRecord]:
    return [EventRecord(session_id="", seq=int(i["seq"]), kind=str(i["kind"]),
                        data=i["data"], at=float(i.get("at") or 0.0), run_id=run_id)
            for i in items]


def _answers(events: Sequence[EventRecord]) -> list[EventRecord]:
    return [e for e in events if e.kind == "message.assistant"]


def _usage_stripped(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**a, "usage": None} for a in answers]


class Forks:
    """Forks runs (see the module's docstring)."""

    def __init__(self, factory: ExecutorFactory, runs: Runs, replays: Replays) -> None:
        self.factory = factory
        self.store = factory.store
        self.runs = runs
        self.replays = replays
        #: Where the scratch copies of workspaces live (``$AGENTD_HOME/forks``).
        self.root = factory.settings.home / "forks"
        # (agent id, its updated_at, the candidate) -> [record, plan, runs using it]
        self._plans: OrderedDict[str, list[Any]] = OrderedDict()

    # -- starting ----------------------------------------------------------------------

    async def fork(self, run_id: str, request: ForkRequest, *,
                   actor: Principal | None = None) -> dict[str, Any]:
        """Fork ``run_id`` and wait for the fork's run to end: the report."""
        fork_id, _ = await self.start(run_id, request, actor=actor)
        return await self.report(fork_id, wait=True)

    async def start(self, run_id: str, request: ForkRequest, *,
                    actor: Principal | None = None) -> tuple[str, RunRecord]:
        """Fork ``run_id`` (see the module's docstring): the fork's id and its run
        (queued or started). Refused, with nothing written, when it cannot be."""
        original, name, key = await self.store.run_context(run_id)
        check_ended(original, "forked", "fork_unsupported")
        agent = await self.factory.agents.get(name)
        if agent.state in AgentNotAccepting.STATES:
            raise AgentNotAccepting.of(name, agent.state)
        log = await self.store.read_events(original.session_id)
        mine = [e for e in log if e.run_id == run_id]
        messages = [e for e in mine if e.kind == "message.user"]
        if not messages:
            raise InvalidInput(f"run {run_id!r} has no message in its session's log "
                               "(restored away?)", code="fork_unsupported")
        if len(messages) > 1:
            raise InvalidInput(f"run {run_id!r} had messages steered into it; a fork "
                               "cannot place them", code="fork_unsupported")
        source = _Source(run={"run_id": original.id, "status": original.status,
                              "output": original.output, "error": original.error,
                              "steps": original.steps, "usage": original.usage,
                              "agent": name, "session": key},
                         events=[e for e in self.replays.run_events(log, original)],
                         message=messages[0].data)
        spec = await self.check(agent, source, request, actor=actor)
        workspace = None
        if request.tools == "live":
            workspace = await self._workspace_ref(agent, log, source, request)
        fork_id = new_id("fk")
        copy = (await self._copy(fork_id, agent, workspace) if request.tools == "live"
                else None)
        try:
            scratch = await self.replays.scratch(original, agent, key, messages[0].seq - 1,
                                                 kind=FORK_PREFIX)
            spec["workspace"] = None if copy is None else {"ref": workspace,
                                                           "dir": str(copy)}
            sent = await self._send(fork_id, name, scratch, spec, source.message,
                                    request.priority or original.priority,
                                    source_run=run_id, start=True)
        except BaseException:
            if copy is not None:
                await asyncio.to_thread(shutil.rmtree, copy, True)
            raise
        return fork_id, sent

    async def start_case(self, agent_name: str, key: str, *, history: list[dict[str, Any]],
                         policy: dict[str, Any] | None, source: dict[str, Any],
                         request: ForkRequest, priority: str, workspace: str | None = None,
                         actor: Principal | None = None,
                         also: Callable[[Tx, Accepted], None] | None = None
                         ) -> tuple[str, RunRecord]:
        """Fork a run kept as a copy (an eval case, :mod:`agentd.evals`) into the new
        session ``key``: ``history`` (the session's events before the run, as
        :meth:`~agentd.store.Store.session_context` gives them), the session
        ``policy``, ``source`` (``run``: the run's record as :meth:`report` shows
        it, ``events``: its events as a fork keeps them, ``message``: its
        ``message.user`` data, ``session``: the key it had) and ``workspace``, the
        snapshot for ``tools: "live"`` (one the agent took: another's is refused).
        ``also``: more writes committed with the fork's message (the case's result).
        :class:`~agentd.errors.SessionExists` when ``key`` is taken."""
        agent = await self.factory.agents.get(agent_name)
        if agent.state in AgentNotAccepting.STATES:
            raise AgentNotAccepting.of(agent_name, agent.state)
        origin = _Source(run=dict(source["run"]),
                         events=_events(source["events"], str(source["run"]["run_id"])),
                         message=dict(source["message"]))
        spec = await self.check(agent, origin, request, actor=actor)
        fork_id = new_id("fk")
        copy = None
        if request.tools == "live":
            f = self.factory
            if workspace is None and f.uses_workspace(f.tools.resolve(agent.tools)):
                raise InvalidInput("the workspace as it was at the case's step cannot be "
                                   "reconstructed (the case holds no snapshot of it: it was "
                                   "imported, or its session had none); run it with tools: "
                                   "recorded", code="fork_workspace_unknown",
                                   field="body.tools")
            if workspace is not None and await self._taint_of(
                    agent, workspace) == _UNKNOWN_COPY:
                raise InvalidInput(f"the case's workspace snapshot {workspace} is not one "
                                   f"agent {agent_name!r} took: a live fork cannot use it",
                                   code="fork_workspace_unknown", field="body.tools")
            copy = await self._copy(fork_id, agent, workspace)
        try:
            quota = self.factory.agents.guard.quotas.quota(tenant_of(agent.settings),
                                                           "sessions")
            await self.store.seed_session(agent.id, key, history, policy=policy, forked={
                "agent": agent_name, "session": str(source.get("session") or ""),
                "seq": len(history)}, quota=quota)
            spec["workspace"] = None if copy is None else {"ref": workspace,
                                                           "dir": str(copy)}
            sent = await self._send(fork_id, agent_name, key, spec, origin.message,
                                    priority, source_run=None, start=False, also=also)
        except BaseException:
            if copy is not None:
                await asyncio.to_thread(shutil.rmtree, copy, True)
            raise
        return fork_id, sent

    async def check(self, agent: AgentRecord, source: _Source, request: ForkRequest, *,
                    actor: Principal | None) -> dict[str, Any]:
        """The fork's spec, once the request is checked against the original and the
        candidate against the caller's rights (nothing is written)."""
        steps = max(len(_answers(source.events)), int(source.run.get("steps") or 0))
        if not 1 <= request.from_step <= max(steps, 1):
            raise InvalidInput(
                f"from_step {request.from_step} is out of range: run "
                f"{source.run['run_id']!r} has step{'s 1 to' if steps > 1 else ''} "
                f"{max(steps, 1)}", field="body.from_step", code="step_out_of_range")
        if request.tools not in TOOL_MODES:
            raise InvalidInput(f"tools must be one of {', '.join(TOOL_MODES)}",
                               field="body.tools")
        prefix = self._prefix(source.events, request.from_step)
        unsupported = Recording.of(prefix).unsupported
        if unsupported is not None:
            raise InvalidInput(f"run {source.run['run_id']!r} cannot be forked at step "
                               f"{request.from_step}: {unsupported}",
                               code="fork_unsupported")
        _, plan = await self.factory.agents.candidate(
            agent, model=request.model, instructions=request.instructions,
            settings=request.settings, actor=actor)
        try:
            if plan.settings.team is not None:
                raise InvalidInput("a team's runs are not forked: its members' runs are",
                                   code="fork_unsupported")
            if plan.targets[0].model.provider == "adapter":
                raise InvalidInput("an adapter-backed agent's loop is its framework's: "
                                   "its runs are not forked", code="fork_unsupported")
        finally:
            await self.factory.agents.close_plan(plan)
        return {**request.candidate(), "from_step": request.from_step,
                "original": source.run, "recording": _recorded(source.events),
                "message": source.message}

    @staticmethod
    def _prefix(events: Sequence[EventRecord], from_step: int) -> list[EventRecord]:
        """The original's events before step ``from_step``'s answer."""
        answers = _answers(events)
        if from_step > len(answers):
            # (a step whose model call failed: everything before its end)
            end = next((e for e in reversed(events) if e.kind.startswith("run.")
                        and e.kind not in ("run.started", "run.queued", "run.waiting",
                                           "run.resumed", "run.parked")), None)
            return [e for e in events if end is None or e.seq < end.seq]
        cut = answers[from_step - 1].seq
        return [e for e in events if e.seq < cut]

    async def _workspace_ref(self, agent: AgentRecord, log: list[EventRecord],
                             source: _Source, request: ForkRequest) -> str | None:
        """The snapshot of the workspace as it was when step K began (the session's
        last snapshot before it), or None when the agent's tools do not use the
        workspace (a fork's live tools then get an empty one); 422 when it cannot be
        reconstructed."""
        f = self.factory
        if not f.uses_workspace(f.tools.resolve(agent.tools)):
            return None
        prefix = self._prefix(source.events, request.from_step)
        at = (prefix[-1].seq if prefix else source.events[0].seq)
        keeper = f.workspaces
        ref = snapshot_at(log, at) if keeper is not None else None
        where = f"the workspace as it was at step {request.from_step}"
        if keeper is None:
            raise InvalidInput(f"{where} cannot be reconstructed: workspace snapshots are "
                               "off on this daemon ([sandbox] snapshots); fork with "
                               "tools: recorded", code="fork_workspace_unknown",
                               field="body.tools")
        if ref is None:
            raise InvalidInput(f"{where} cannot be reconstructed: the session's log has "
                               "no snapshot of it; fork with tools: recorded",
                               code="fork_workspace_unknown", field="body.tools")
        if not await asyncio.to_thread(keeper.store.exists, ref) and keeper.shared is None:
            raise InvalidInput(f"{where} cannot be reconstructed: its snapshot {ref} is no "
                               "longer kept; fork with tools: recorded",
                               code="fork_workspace_unknown", field="body.tools")
        return ref

    async def _copy(self, fork_id: str, agent: AgentRecord, ref: str | None) -> Path:
        """The fork's scratch workspace: snapshot ``ref`` written into a folder of its
        own (empty for None), owned by the agent's sandbox uid."""
        target = self.root / fork_id
        keeper = self.factory.workspaces
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        if ref is not None:
            why = ("workspace snapshots are off" if keeper is None else
                   await keeper.copy_to(ref, target,
                                       scope=tenant_of(agent.settings) or "default"))
            if why is not None:
                await asyncio.to_thread(shutil.rmtree, target, True)
                raise InvalidInput(f"the workspace's snapshot {ref} cannot be copied for "
                                   f"the fork ({why}); fork with tools: recorded",
                                   code="fork_workspace_unknown", field="body.tools")
        await self.factory.sandboxes.prepare(target, agent_id=agent.id)
        return target

    async def _send(self, fork_id: str, name: str, key: str, spec: dict[str, Any],
                    message: Mapping[str, Any], priority: str, *, source_run: str | None,
                    start: bool, also: Callable[[Tx, Accepted], None] | None = None
                    ) -> RunRecord:
        # (a fork is paid for by its own agent: a payer of the original's is not kept)
        origin = {k: v for k, v in message.items()
                  if k not in ("content", "steer", "payer", "replay", "traceparent")}
        link = self.store.link_fork(fork_id, spec, source_run)

        def linked(tx: Tx, accepted: Accepted) -> None:
            link(tx, accepted)
            if also is not None:
                also(tx, accepted)

        sent = await self.runs.send(name, key, str(message.get("content", "")),
                                    priority=priority, start=start,
                                    origin={**origin, "fork": fork_id}, also=linked)
        return sent.run

    # -- the report --------------------------------------------------------------------

    async def report(self, fork_id: str, *, wait: bool = False) -> dict[str, Any]:
        """The fork compared with its original (see :meth:`compare`); ``wait``: once
        its run has ended. :class:`NotFound` ``fork_not_found`` for no such fork."""
        fork = await self.store.get_fork(fork_id)
        if fork is None:
            raise NotFound(f"fork {fork_id!r} not found", code="fork_not_found")
        if wait:
            await self.replays.settled(fork.run_id)
        run, _, key = await self.store.run_context(fork.run_id)
        log = await self.store.read_events(fork.session_id)
        return {"fork_id": fork.id, "session": key,
                **self.compare(fork.spec, run, self.replays.run_events(log, run), key)}

    @staticmethod
    def compare(spec: Mapping[str, Any], run: RunRecord, events: Sequence[EventRecord],
                key: str | None = None) -> dict[str, Any]:
        """The divergence report of a fork's ``run`` (its ``events``; its session's
        ``key``) against the original its ``spec`` keeps."""
        original = spec["original"]
        k = int(spec["from_step"])
        recorded = _events(spec["recording"], original["run_id"])
        expected = compared(normalised(recorded, original["run_id"], original["run_id"]))
        got = compared(normalised(events, run.id, original["run_id"], key=key,
                                  as_key=original.get("session")))
        before, after = (calls_of(recorded, original["run_id"], k),
                         calls_of(events, run.id, k))
        added, removed = calls_diff(before, after)
        unrecorded = [{"name": e.data.get("name"), "call_id": e.data.get("call_id")}
                      for e in events if e.run_id == run.id and e.kind == "tool.finished"
                      and str(e.data.get("output", "")).startswith(UNRECORDED)]
        return {
            "run_id": run.id, "status": run.status, "from_step": k,
            "model": spec.get("model"), "tools": spec.get("tools", "recorded"),
            "original": {**{k_: original.get(k_) for k_ in (
                "run_id", "status", "output", "error", "steps", "usage")},
                "usage_from_step": usage_from(recorded, original["run_id"], k),
                "tool_calls": before},
            "fork": {"run_id": run.id, "status": run.status, "output": run.output,
                     "error": run.error, "steps": run.steps, "usage": run.usage,
                     "tool_calls": after},
            "first_divergence": first_divergence(expected, got) if run.terminal else None,
            "tool_calls_added": added, "tool_calls_removed": removed,
            "unrecorded_calls": unrecorded,
            "same_output": run.terminal and run.output == original.get("output"),
        }

    # -- the fork's run's executor (ExecutorFactory.fork) ------------------------------

    async def build(self, run: RunRecord, agent: AgentRecord, key: str,
                    origin: dict[str, Any], prepared: Prepared | None
                    ) -> RunExecutor | None:
        """The executor of a fork's run (:class:`ForkExecutor`)."""
        f = self.factory
        fork = await self.store.get_fork(str(origin["fork"]))
        if fork is None or fork.run_id != run.id:
            await f.runlog.fail(run, AgentdError("cannot fork: the fork's record is gone",
                                                 code="fork_unsupported"))
            return None
        spec = fork.spec
        try:
            record, plan = await self._plan(agent, spec)
        except AgentdError as exc:
            await f.runlog.fail(run, exc)
            await self._clean(spec)
            return None
        try:
            return await self._build(run, agent, key, origin, prepared, spec, record, plan)
        except BaseException:
            self._release(agent, spec)
            raise

    async def _build(self, run: RunRecord, agent: AgentRecord, key: str,
                     origin: dict[str, Any], prepared: Prepared | None, spec: dict[str, Any],
                     record: AgentRecord, plan: AgentPlan) -> RunExecutor | None:
        f = self.factory
        original = spec["original"]
        recorded = _events(spec["recording"], original["run_id"])
        prefix = Recording.of(self._prefix(recorded, int(spec["from_step"])))
        served = 0
        if run.status != "queued":  # resumed after a restart: go on where it was
            served = prefix.skip_served(self.replays.run_events(
                await self.store.read_events(run.session_id), run))
        settings = plan.settings
        history = await f.histories.get(
            run.session_id, min_seq=prepared.min_seq if prepared else None,
            agent_id=agent.id, log=prepared.log if prepared else None)
        policy = f.call_policy(plan, run.priority)
        redactor, secrets = await f.secrets_for(settings.tenant, agent.name)
        session_policy = (prepared.session_policy if prepared is not None else
                          (await self.store.get_session(agent.id, key)).policy)
        session = (None if session_policy is None
                   else PolicyConfig.model_validate(session_policy))
        tools, notes = await f.agent_tools(record, plan, run.id, secrets)
        workspace = spec.get("workspace") or {}
        live_tools = self._live_tools(tools, recorded, spec.get("tools"))
        before = await self.store.agent_as_of(agent.id, float(recorded[0].at)
                                              if recorded else run.created_at)
        prefix_permissions = permissions_for(
            f.settings, stored_settings((before or agent).settings).policy, session)
        permissions = permissions_for(f.settings, settings.policy, session)
        folder = Path(workspace["dir"]) if workspace.get("dir") else None
        sandbox = None
        if tools:
            sandbox = await f.sandboxes.for_run(
                plan.sandbox, plan.limits, workspace=folder or f.agents.workspace_of(agent),
                permissions=permissions, shell_key=f"{agent.id}/{run.session_id}",
                agent_id=agent.id, tenant=settings.tenant)
        answers = Answers(_usage_stripped(prefix.answers), served)
        base, instructions = await f.instructions(record, plan)
        executor = ForkExecutor(
            RunShared(store=self.store, bus=f.bus, kernel=f.kernel, lease=f.lease,
                      workers=f.workers),
            RunSubject(run=run, agent_name=agent.name, session_key=key, history=history,
                       settings=settings, origin=origin,
                       started=prepared is not None and prepared.started
                       and run.status == "running", redactor=redactor, secrets=secrets),
            self._prefix_side(agent, prefix, answers, plan, policy, (base, instructions)),
            ToolSide(tools=tools, timeout_s=f.settings.tool_timeout_s,
                     permissions=prefix_permissions, sandbox=sandbox, workspace=folder,
                     services=f.services, notes=notes))
        executor.recording, executor.answers = prefix, answers
        executor.prefix_tools = {t.name: t for t in recorded_tools(tools, prefix)}
        executor.book = CallBook(recorded, {t.name: t for t in tools})
        executor.live = self._live(executor, plan, policy, live_tools, permissions)
        executor.live.ref = workspace.get("ref")
        executor.live.tainted = await self._taint_of(agent, executor.live.ref)
        executor.tools = executor.prefix_tools
        executor.checks = None
        if answers.exhausted:
            executor.go_live()
        executor.on_end = lambda: self._ended(agent, spec)
        return executor

    def _prefix_side(self, agent: AgentRecord, prefix: Recording, answers: Answers,
                     plan: AgentPlan, policy: CallPolicy, instructions: tuple[str, str]
                     ) -> ModelSide:
        """What the steps before the fork step are asked of: the models that gave the
        recorded answers, each serving its own (:class:`RecordedModel`)."""
        f, settings = self.factory, plan.settings
        chain = list(dict.fromkeys([str(a.get("model")) for a in prefix.answers
                                    if a.get("model")] or [agent.model]))
        base, full = instructions
        repairs = settings.output.max_repairs
        return ModelSide(targets=[Target(model=m, info=f.agents.catalog.get(m.spec))
                                  for m in (RecordedModel(c, answers) for c in chain)],
                         policy=policy, instructions=full, base_instructions=base,
                         max_steps=settings.max_steps or f.settings.max_steps,
                         output_repairs=(f.settings.output_max_repairs if repairs is None
                                         else repairs))

    def _live(self, executor: ForkExecutor, plan: AgentPlan, policy: CallPolicy,
              tools: list[Tool], permissions: Policy) -> Live:
        """What the fork becomes at its step: the candidate's models, tools, policy
        and checks."""
        targets = plan.targets
        return Live(
            caller=ModelCaller(self.factory.kernel, targets, priority=policy.priority,
                               tenant=policy.tenant, agent=executor.run.agent_id,
                               weight=policy.weight, retry=policy.retry,
                               publish=executor._publish_text, note=executor._note,
                               park=policy.park, outage_timeout_s=policy.outage_timeout_s),
            tools={t.name: t for t in tools}, permissions=permissions,
            info=targets[0].info, priced=any(t.info is not None for t in targets),
            checks=self.factory.checks)

    def _live_tools(self, tools: list[Tool], recorded: list[EventRecord],
                    mode: Any) -> list[Tool]:
        """The candidate's tools from the fork step on: answered from the recording
        (``recorded``), else run for real but for the memory tools (a fork never
        writes the agent's memory)."""
        book = CallBook(recorded, {t.name: t for t in tools})
        if mode != "live":
            return by_call(tools, book)
        memory = (self.factory.memory.tool_names if self.factory.memory is not None
                  else frozenset())
        served = {t.name: t for t in by_call([t for t in tools if t.name in memory], book)}
        return [served.get(t.name, t) for t in tools]

    async def _taint_of(self, agent: AgentRecord, ref: str | None) -> str | None:
        """Why the scratch copy of ``ref`` is untrusted, if it is (one of unknown
        provenance is)."""
        keeper = self.factory.workspaces
        if ref is None or keeper is None:
            return None
        mark = await keeper.mark_of(agent.id, ref)
        if mark is None:
            return _UNKNOWN_COPY
        return mark or None

    # -- candidate plans ---------------------------------------------------------------

    @staticmethod
    def _plan_key(agent: AgentRecord, spec: Mapping[str, Any]) -> str:
        return orjson.dumps([agent.id, agent.updated_at, spec.get("model"),
                             spec.get("instructions"), spec.get("settings")],
                            option=orjson.OPT_SORT_KEYS).decode()

    async def _plan(self, agent: AgentRecord, spec: Mapping[str, Any]
                    ) -> tuple[AgentRecord, AgentPlan]:
        """The candidate's record and plan (shared by the forks of one candidate: an
        eval run's cases), held until :meth:`_release`."""
        key = self._plan_key(agent, spec)
        held = self._plans.get(key)
        if held is None:
            record, plan = await self.factory.agents.candidate(
                agent, model=spec.get("model"), instructions=spec.get("instructions"),
                settings=spec.get("settings"))
            held = self._plans[key] = [record, plan, 0]
            await self._evict()
        self._plans.move_to_end(key)
        held[2] += 1
        return held[0], held[1]

    def _release(self, agent: AgentRecord, spec: Mapping[str, Any]) -> None:
        held = self._plans.get(self._plan_key(agent, spec))
        if held is not None:
            held[2] = max(0, held[2] - 1)

    async def _evict(self) -> None:
        for key in [k for k, (_, _, users) in self._plans.items() if not users]:
            if len(self._plans) <= _PLANS:
                break
            _, plan, _ = self._plans.pop(key)
            await self.factory.agents.close_plan(plan)

    async def _ended(self, agent: AgentRecord, spec: Mapping[str, Any]) -> None:
        self._release(agent, spec)
        await self._clean(spec)

    async def _clean(self, spec: Mapping[str, Any]) -> None:
        """Remove the fork's scratch workspace, if it has one."""
        folder = (spec.get("workspace") or {}).get("dir")
        if folder:
            # (the folder only: with the agent's id it would close its egress proxies,
            # which the agent's other runs use)
            await self.factory.sandboxes.forget(Path(folder))
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def sweep(self) -> int:
        """Remove the scratch workspaces of forks that will not run again (their run
        ended without an executor to clean up: cancelled while queued; or their fork
        is gone with its session); how many."""
        def listed() -> list[tuple[str, float]]:
            if not self.root.is_dir():
                return []
            return sorted((p.name, p.stat().st_mtime) for p in self.root.iterdir())

        removed = 0
        for name, made in await asyncio.to_thread(listed):
            fork = await self.store.get_fork(name)
            if fork is None and time.time() - made < _YOUNG_S:
                continue  # (a fork being made: its row comes with its message)
            if fork is not None and not (await self.store.get_run(fork.run_id)).terminal:
                continue
            # (the folder only: with an agent id it would close the agent's proxies)
            await self.factory.sandboxes.forget(self.root / name)
            await asyncio.to_thread(shutil.rmtree, self.root / name, True)
            removed += 1
        return removed

    async def close(self) -> None:
        """Close the candidate plans' models."""
        plans, self._plans = list(self._plans.values()), OrderedDict()
        for _, plan, _ in plans:
            await self.factory.agents.close_plan(plan)

