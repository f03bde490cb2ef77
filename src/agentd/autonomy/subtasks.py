"""Subtasks: child runs a run starts, waits on and gets the results of.

A child run is a message sent with :meth:`agentd.runtime.runs.Runs.send` into a
session of its own (``sub:<parent run>:<n>``; for a call to another agent, a session
of the callee: :mod:`agentd.autonomy.calls`). What makes it durable:

- **Linked in one commit.** The ``subtasks`` row and a ``subtask.started`` event in
  the parent's session are written by the ``also`` of the child's
  ``accept_message``: the same transaction that logs the child's message and queues
  its run. A crash leaves both or neither.
- **Exactly once.** The row's ``effect_id`` (the starting tool call's, stable across
  a re-run) is unique, and the start looks it up first: a tool call re-run after a
  crash answers with the child it started, never a second one. The tools are
  therefore marked idempotent (the loop re-runs them after a crash instead of
  asking a person).
- **Results from the store.** ``subtask_wait`` reads each child's status and output
  from the runs table, so a result reaches the parent whatever restarted in
  between; the parent logs it once, in the ``tool.finished`` of its wait.
- **Cancel cascade.** When a run ends cancelled, failed or interrupted, its
  unfinished children are cancelled (and so theirs, by the same hook). The hook is
  :attr:`EventBus.run_end_hooks` (called for every run-ending event this node
  publishes); what it missed (the daemon stopped in between, another node ended the
  run) is found at start and by a housekeeping job (:meth:`Subtasks.reconcile`).
- **Usage.** A run's usage includes its finished children's (its run budget is
  checked against it before each model call, and its final usage adds it); a child
  run by another agent is charged to the parent's agent and tenant (``origin.payer``,
  read when the child's executor is built).
- **Taint.** A child of a tainted session starts tainted (``origin.tainted``); a
  result from a tainted child taints the parent (the wait's tool result says so).
- **Origin.** A child inherits what started its parent's chain (:data:`INHERITED_ORIGIN`:
  a schedule's fire, a heartbeat's beat), so every rule that depends on it holds at
  any depth: a scheduled run cannot create schedules through a subtask, a call, or a
  team's member step unless the agent running that step allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from agentd.autonomy.calls import Peer, check_allowed, check_call, no_agent
from agentd.errors import AgentdError, AgentNotFound, ToolError
from agentd.events import SubtaskFinished, SubtaskFinishedData, UsageData
from agentd.logcontext import CURRENT, default_trace_id, span_id
from agentd.runtime.agents import Agents
from agentd.runtime.bus import EventBus
from agentd.runtime.history import HistoryCache
from agentd.runtime.runs import Runs
from agentd.settings.delegation import HARD_MAX_DEPTH, DelegationSettings
from agentd.store import Store, new_id
from agentd.store.records import EventRecord, RunRecord
from agentd.store.subtasks import SubtaskRecord
from agentd.tools import ToolContext

__all__ = ["DELEGATING_TOOLS", "INHERITED_ORIGIN", "Subtasks", "Waited"]

log = logging.getLogger(__name__)

#: The tools that start child runs (a run with any of them counts its children's usage).
DELEGATING_TOOLS = frozenset({"subtask_start", "agent_call"})
#: How often a wait re-reads the store when the children may run on other nodes.
SHARED_POLL_S = 1.0
#: ... and when every run is this node's (a safety net: the hook wakes it at once).
LOCAL_POLL_S = 10.0
_ENDED_BADLY = frozenset({"run.cancelled", "run.failed", "run.interrupted"})
#: The keys of a run's origin that its children inherit: what started the chain of
#: runs (a schedule's fire, a heartbeat's beat), which rules look at
#: (``ToolContext.origin``: ``schedule_id`` for ``allow_from_schedule``). Not a
#: heartbeat's ``ok_token``: a child's reply is its own, never a silent beat.
INHERITED_ORIGIN = ("schedule_id", "fire_at", "heartbeat", "beat_at")


@dataclass(frozen=True, kw_only=True, slots=True)
class Waited:
    """What a wait found: the children asked about, and whether it timed out."""

    children: list[SubtaskRecord]
    timed_out: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class _Caller:
    """The run starting a child, as the checks need it."""

    run: RunRecord
    agent: Peer
    agent_id: str
    delegation: DelegationSettings
    depth: int
    chain: list[str]
    payer: str
    tainted: str | None
    #: The origin keys the child inherits (:data:`INHERITED_ORIGIN`).
    inherited: dict[str, Any]


class Subtasks:
    """Starts child runs, waits on them, cascades cancels (see the module)."""

    def __init__(self, store: Store, *, bus: EventBus, runs: Runs, agents: Agents,
                 histories: HistoryCache, exclusive: bool) -> None:
        self.store = store
        self.bus = bus
        self.runs = runs
        self.agents = agents
        self.histories = histories
        self.exclusive = exclusive
        #: Child runs this node knows of and has not logged the end of.
        self._children: set[str] = set()
        #: Waits by child run id (set when it ends).
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        bus.run_end_hooks.append(self._on_run_end)

    # -- starting ------------------------------------------------------------------------

    async def _caller(self, ctx: ToolContext) -> _Caller:
        run = await self.store.get_run(ctx.run_id)
        agent = await self.agents.get(ctx.agent)
        settings = self.agents.plan(agent).settings
        origin = ctx.origin
        depth = origin.get("depth")
        chain = origin.get("chain")
        payer = origin.get("payer")
        scope = ctx.memory_scope
        tainted = getattr(scope, "tainted", None) if scope is not None else None
        if scope is None:
            tainted = (await self.histories.get(run.session_id, agent_id=run.agent_id)
                       ).tainted
        return _Caller(
            run=run, agent=Peer(name=agent.name, tenant=settings.tenant,
                                delegation=settings.delegation),
            agent_id=agent.id, delegation=settings.delegation,
            depth=depth if isinstance(depth, int) and depth >= 0 else 0,
            chain=[str(a) for a in chain] if isinstance(chain, list) else [agent.name],
            payer=payer if isinstance(payer, str) else agent.id,
            tainted=str(tainted) if tainted else None,
            inherited={k: origin[k] for k in INHERITED_ORIGIN if k in origin})

    async def start(self, ctx: ToolContext, *, content: str, title: str = "",
                    agent: str | None = None, type: Literal["subtask", "call"] = "subtask",
                    session: str | None = None, allow: Sequence[str] = ()
                    ) -> SubtaskRecord:
        """Start a child run for the tool call ``ctx`` (or find the one it started).

        ``agent``: the child's agent (default: the caller's own; another needs the
        call permission). ``session``: for a call, the caller's name for a
        conversation with the callee it continues (default: a new one per call).
        ``allow``: agents the caller may call here whatever its ``calls.allow`` (a
        team's members: its settings are the caller's half of the permission; the
        callee's ``accept_from``, tenants, cycles and depth are checked as ever).
        """
        existing = await self.store.subtask_of_effect(ctx.effect_id)
        if existing is not None:
            return existing
        caller = await self._caller(ctx)
        if allow:
            calls = caller.delegation.calls
            delegation = caller.delegation.model_copy(update={"calls": calls.model_copy(
                update={"allow": [*calls.allow, *allow]})})
            caller = replace(caller, delegation=delegation, agent=replace(
                caller.agent, delegation=delegation))
        limits = caller.delegation.subtasks
        depth = caller.depth + 1
        name = agent or caller.agent.name
        if type == "call" or name != caller.agent.name:
            # Refused before the agent is looked up: a run learns nothing of the agents
            # it may not call (not even whether they exist).
            check_allowed(caller.agent, name)
            try:
                record = await self.agents.get(name)
            except AgentNotFound:
                raise no_agent(name) from None
            check_call(caller.agent, record, chain=caller.chain,
                       depth=depth if type == "call" else 1)
        else:
            record = await self.agents.get(name)
        if type == "subtask" and depth > min(limits.max_depth, HARD_MAX_DEPTH):
            raise ToolError(
                f"this run is {caller.depth} subtask(s) deep; another level would pass "
                f"the limit of {limits.max_depth} (settings.delegation.subtasks.max_depth)",
                code="subtask_depth")
        if depth > HARD_MAX_DEPTH:
            raise ToolError(f"runs nest at most {HARD_MAX_DEPTH} deep", code="subtask_depth")
        total, active, n = await self.store.subtask_counts(caller.run.id)
        if total >= limits.max_children:
            raise ToolError(f"this run started {total} subtasks, its limit "
                            "(settings.delegation.subtasks.max_children)",
                            code="subtask_fanout")
        if active >= limits.max_concurrent:
            raise ToolError(f"{active} subtasks of this run are still running, its limit "
                            "(settings.delegation.subtasks.max_concurrent); wait for one "
                            "with subtask_wait first", code="subtask_busy")
        if type == "subtask":
            key = f"sub:{caller.run.id}:{n}"
        elif session is None:
            key = f"call:{caller.agent.name}:{caller.run.id}:{n}"
        else:
            key = f"call:{caller.agent.name}:{session}"
        origin: dict[str, Any] = {
            **caller.inherited, "parent_run": caller.run.id,
            "subtask_id": new_id("st"), "depth": depth,
            "chain": [*caller.chain, record.name]}
        if record.id != caller.payer:
            origin["payer"] = caller.payer
        # The child's run continues the caller's trace, under its invoke_agent span
        # (its logs and its spans name the same trace: agentd.telemetry).
        bound = CURRENT.get()
        trace = (bound.trace_id if bound is not None and bound.run_id == caller.run.id
                 else default_trace_id(caller.run.id))
        origin["traceparent"] = f"00-{trace}-{span_id(caller.run.id, 'run')}-01"
        if caller.tainted:
            origin["tainted"] = f"sent by run {caller.run.id}: {caller.tainted}"[:500]
        row = SubtaskRecord(
            id=origin["subtask_id"], type=type, parent_run=caller.run.id,
            parent_session=caller.run.session_id, parent_agent_id=caller.agent_id, n=n,
            effect_id=ctx.effect_id, child_run="", child_session="",
            child_agent_id=record.id, child_agent=record.name, child_key=key,
            title=title, depth=depth, created_at=time.time())
        published: list[EventRecord] = []
        try:
            sent = await self.runs.send(
                record.name, key, content, idempotency_key=ctx.effect_id,
                priority=caller.run.priority, origin=origin,
                also=self.store.link_subtask(row, published))
        except AgentdError as exc:
            raise ToolError(f"could not start the run of {record.name!r}: {exc.message}",
                            code=exc.code) from None
        except Exception as exc:
            if self.store.engine.is_unique_violation(exc):
                # The same effect (or this run's next n) committed meanwhile.
                return await self._found(ctx.effect_id)
            raise
        self.bus.publish(published)
        if sent.duplicate:
            return await self._found(ctx.effect_id)
        self._children.add(sent.run.id)
        row.child_run, row.child_session = sent.run.id, sent.session.id
        row.status = sent.run.status
        return row

    async def _found(self, effect_id: str) -> SubtaskRecord:
        found = await self.store.subtask_of_effect(effect_id)
        if found is None:
            raise ToolError("the subtask could not be started (a conflicting write); "
                            "try again", code="subtask_conflict")
        return found

    # -- waiting -------------------------------------------------------------------------

    async def wait(self, parent_run: str, ids: list[str] | None, *, every: bool,
                   timeout_s: float) -> Waited:
        """Wait until every child asked about has ended (``every``) or any has, or
        ``timeout_s`` passed; the children as stored then. ``ids`` None: all the run's.
        An id that is not a child of ``parent_run`` is refused."""
        deadline = time.monotonic() + timeout_s
        wake = asyncio.Event()
        watched: list[str] = []
        try:
            while True:
                children = await self._read(parent_run, ids)
                pending = [c for c in children if not c.finished]
                if self._satisfied(children, pending, every):
                    return await self._waited(children, timed_out=False)
                for child in pending:
                    if child.child_run not in watched:
                        self._watchers.setdefault(child.child_run, set()).add(wake)
                        watched.append(child.child_run)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return await self._waited(children, timed_out=True)
                # Registered before this re-read: an end in between is not missed.
                children = await self._read(parent_run, ids)
                pending = [c for c in children if not c.finished]
                if self._satisfied(children, pending, every):
                    return await self._waited(children, timed_out=False)
                poll = LOCAL_POLL_S if self.exclusive else SHARED_POLL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(remaining, poll))
                wake.clear()
        finally:
            for run_id in watched:
                events = self._watchers.get(run_id)
                if events is not None:
                    events.discard(wake)
                    if not events:
                        del self._watchers[run_id]

    async def _waited(self, children: list[SubtaskRecord], *, timed_out: bool) -> Waited:
        """The wait's answer, once the end of each finished child is logged in the
        parent's session (by the hook, or here if it has not committed yet): so it
        comes before the wait's result, and before the parent's run can end."""
        for child in children:
            if child.finished and not child.reported:
                await self.report(child)
        return Waited(children=children, timed_out=timed_out)

    @staticmethod
    def _satisfied(children: list[SubtaskRecord], pending: list[SubtaskRecord],
                   every: bool) -> bool:
        return not pending or (not every and len(pending) < len(children))

    async def _read(self, parent_run: str, ids: list[str] | None) -> list[SubtaskRecord]:
        children = await self.store.subtasks_of(parent_run, ids)
        if ids is not None and len(children) != len(set(ids)):
            unknown = sorted(set(ids) - {c.id for c in children})
            raise ToolError(f"not subtasks of this run: {', '.join(unknown)}",
                            code="subtask_not_found")
        return children

    async def tainted(self, child: SubtaskRecord) -> str | None:
        """Why the child's session is tainted (its reply may carry outside content), or
        None; a session deleted meanwhile: None (there is no reply either)."""
        if child.status == "gone":
            return None
        history = await self.histories.get(child.child_session,
                                           agent_id=child.child_agent_id)
        return history.tainted

    # -- usage ---------------------------------------------------------------------------

    async def usage_of_children(self, run_id: str) -> tuple[int, int, float]:
        """The finished children's usage: input tokens, output tokens, cost in USD
        (each child's own includes its children's)."""
        tokens_in = tokens_out = 0
        cost = 0.0
        for child in await self.store.subtasks_of(run_id):
            usage = child.usage or {}
            if not child.finished:
                continue
            tokens_in += int(usage.get("input_tokens") or 0)
            tokens_out += int(usage.get("output_tokens") or 0)
            cost += float(usage.get("cost_usd") or 0.0)
        return tokens_in, tokens_out, cost

    # -- runs ending: wake waits, cascade cancels, log children's ends ----------------------

    def _on_run_end(self, event: EventRecord) -> None:
        run_id = event.run_id
        if run_id is None:
            return
        for wake in self._watchers.get(run_id, ()):
            wake.set()
        if event.kind in _ENDED_BADLY:
            self._spawn(self.cascade(run_id, f"its parent run {run_id} ended "
                                             f"{event.kind.removeprefix('run.')}"))
        if run_id in self._children:
            self._children.discard(run_id)
            self._spawn(self._report_child(run_id))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def cascade(self, parent_run: str, reason: str) -> int:
        """Cancel the run's unfinished children (theirs follow when they end)."""
        cancelled = 0
        for child in await self.store.subtasks_of(parent_run):
            if not child.finished:
                cancelled += await self._cancel(child.child_run, reason)
        return cancelled

    async def _cancel(self, run_id: str, reason: str) -> int:
        try:
            run, _, _ = await self.runs.cancel(run_id, reason)
        except Exception:
            log.exception("could not cancel subtask run %s", run_id)
            return 0
        return 1 if run.status == "cancelled" else 0

    async def _report_child(self, run_id: str) -> None:
        try:
            child = await self.store.subtask_of_child(run_id)
            if child is not None:
                await self.report(child)
        except Exception:
            log.exception("could not log the end of subtask run %s", run_id)

    async def report(self, child: SubtaskRecord) -> bool:
        """Log ``subtask.finished`` in the parent's session, once (False: done before)."""
        data: SubtaskFinishedData = {
            "subtask_id": child.id, "type": child.type, "agent": child.child_agent,
            "run_id": child.child_run, "status": child.status,
            "usage": cast(UsageData, child.usage) if child.usage else None}
        records = await self.store.report_subtask(child, SubtaskFinished(data=data))
        self.bus.publish(records)
        self.histories.offer(records)
        return bool(records)

    async def reconcile(self) -> int:
        """What the hook missed: cancel the unfinished children of runs that ended
        badly, and log the ends of children that ended. At start and periodically."""
        done = 0
        for run_id, _session in await self.store.orphaned_subtasks():
            done += await self._cancel(run_id, "its parent run ended while the daemon "
                                               "was down")
        for child in await self.store.unreported_subtasks():
            done += await self.report(child)
        return done

    async def remember_unfinished(self) -> None:
        """Children still under way (from before a restart): their ends are logged by
        the hook when they end here."""
        self._children.update(await self.store.unreported_child_runs())

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
