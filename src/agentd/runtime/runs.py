"""The runs service: accepting messages, and following, cancelling and deciding runs.

A message is accepted when the store has committed it with its queued run; only then
is the run handed to the supervisor, which starts it when its session's turn comes.
Everything here works on any node: a run another node drives is asked to stop
through the store, and waited for through the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentd.config import PRIORITIES
from agentd.errors import (
    AgentNotAccepting,
    AgentNotFound,
    Conflict,
    InvalidInput,
    ShuttingDown,
)
from agentd.events import TERMINAL_KINDS, RunWaitingData
from agentd.runtime.agents import Agents
from agentd.runtime.bus import EventBus, Subscription
from agentd.runtime.executors import Prepared
from agentd.runtime.history import HistoryCache
from agentd.runtime.runlog import RunLog
from agentd.runtime.session_ops import check_session_key
from agentd.runtime.supervisor import Supervisor
from agentd.security.redaction import SecretRedactor
from agentd.store import LeaseLost, Store
from agentd.store.engine import Tx
from agentd.store.log import Accepted, AgentChanged, ToAccept
from agentd.store.records import (
    AgentRecord,
    EventRecord,
    RunRecord,
    SessionRecord,
    tenant_of,
)

__all__ = ["MODES", "Also", "Message", "Runs", "SendResult"]

#: More writes committed with an accepted message (``send(also=...)``): called in the
#: accepting transaction; raising refuses the message, with nothing written.
Also = Callable[[Tx, Accepted], None]

log = logging.getLogger(__name__)

MODES = ("enqueue", "reject", "interrupt", "steer")
#: How many times a message is decided again when its agent keeps changing on other
#: nodes between the read and the commit (each time is one change committed there).
_FRESH_TRIES = 4


def _also_for(also_many: Callable[[Tx, list[tuple[int, Accepted]]], None],
              indexes: list[int], tx: Tx, done: list[tuple[int, Accepted]]) -> None:
    """``also_many`` of :meth:`Runs.send_many` for one commit of some of its messages
    (``indexes``: their places in the messages given)."""
    also_many(tx, [(indexes[j], accepted) for j, accepted in done])


def _ends(item: object, run_id: str) -> bool:
    """Whether a session's item is ``run_id``'s end (its terminal event)."""
    return (isinstance(item, EventRecord) and item.run_id == run_id
            and item.kind in TERMINAL_KINDS)


def _changing(name: str) -> Conflict:
    return Conflict(f"agent {name!r} kept changing while the message was sent; "
                    "try again", code="agent_changed", retryable=True)


@dataclass(kw_only=True, slots=True)
class SendResult:
    agent: AgentRecord
    session: SessionRecord
    run: RunRecord
    events: list[EventRecord]
    duplicate: bool
    #: The run of the session the new one is queued behind, if any (for a message
    #: steered into a run: that run).
    busy_run: str | None = None
    steered: bool = False
    #: The session's subscription, opened before the run could commit anything more
    #: (``Runtime.send(follow=True)``): the sender follows the run from it.
    subscription: Subscription | None = None

    def waiting(self) -> tuple[int, RunWaitingData] | None:
        """What the new run waits for when it is queued behind another run of the
        session, and the seq of its ``run.queued`` event: the sender's stream says
        so there (the log does not: a queued run writes nothing until it starts)."""
        if self.busy_run is None or self.duplicate or self.steered or not self.events:
            return None
        return self.events[-1].seq, {
            "reason": "queued", "model": None, "retry_in_s": None,
            "cause": f"run {self.busy_run} is ahead of it"}


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One message of :meth:`Runs.send_many` (the arguments of :meth:`Runs.send`)."""

    name: str
    key: str
    content: str
    mode: str = "enqueue"
    priority: str | None = None
    idempotency_key: str | None = None
    origin: Mapping[str, Any] | None = None
    also: Callable[[Tx, Accepted], None] | None = None


class Runs:
    """Messages in, runs followed and steered (see the module's docstring).

    Args:
        accepting: whether the daemon takes new work (False while it shuts down).
        lease_ttl_s: how long another node may take to notice a cancel sent to it, at
            most (it hears of it at once on PostgreSQL, unless its listening
            connection is down: then at its next renewal).
    """

    def __init__(self, store: Store, *, bus: EventBus, histories: HistoryCache,
                 agents: Agents, supervisor: Supervisor, runlog: RunLog,
                 accepting: Callable[[], bool], lease_ttl_s: float) -> None:
        self.store = store
        self.bus = bus
        self.histories = histories
        self.agents = agents
        self.supervisor = supervisor
        self.runlog = runlog
        self.accepting = accepting
        self.lease_ttl_s = lease_ttl_s
        self._background: set[asyncio.Task[Any]] = set()
        #: Whether the agent's runs are best started on another node (the one holding
        #: its files: :mod:`agentd.runtime.affinity`); such a message's run is queued,
        #: not started with it, so that it can be offered there.
        self.elsewhere: Callable[[AgentRecord], Awaitable[bool]] | None = None
        #: The values of the secrets an agent could use, by name (tenant, agent): a
        #: message's text holding one is logged with ``[secret:NAME]`` in its place,
        #: as everything its runs write (the secrets capability; None: no secrets).
        self.secret_values: Callable[[str, str], Awaitable[Mapping[str, str]]] | None = None

    async def send(self, name: str, key: str, content: str, *,
                   idempotency_key: str | None = None, mode: str = "enqueue",
                   priority: str | None = None, stream: bool = False,
                   origin: Mapping[str, Any] | None = None,
                   also: Callable[[Tx, Accepted], None] | None = None,
                   start: bool = False) -> SendResult:
        """Accept a message: committed (message + queued run) before this returns.

        ``mode``: what happens when the session has a run already (``enqueue`` behind
        it, ``reject`` with 409, ``interrupt`` it at its next step boundary, or
        ``steer`` the message into it). ``priority`` is the run's class in the
        kernel's scheduler (``interactive``, ``background``, ``batch``); default: the
        agent's ``settings.priority``, else ``background``. ``stream``: the sender
        follows the run, so :meth:`SendResult.waiting` must know the run it is queued
        behind even on another node (one more query in the accepting transaction, on
        a store nodes share; on one node the supervisor knows for free).

        ``origin`` and ``also`` are the store's (:meth:`Store.accept_message`): what
        started the message (a schedule's fire, a subtask, another agent), logged in
        its ``message.user`` data, and more writes committed with it.

        ``start``: the sender waits for the run (a reply held open, a stream), so a
        message to a session with nothing else active starts its run in the same
        commit (its ``run.started`` logged with it, under this node's lease): such a
        turn is two commits, not three, and its executor carries on from there. A
        sender answered at once (202) is told its run is queued, as it is.
        """
        agent = await self._sender(name, key, mode, priority)
        content = await self._redacted(agent, content)
        if start and self.elsewhere is not None and await self.elsewhere(agent):
            start = False
        for attempt in range(_FRESH_TRIES):
            try:
                accepted = await self.store.accept_message(
                    agent_id=agent.id, key=key, content=content,
                    idempotency_key=idempotency_key, mode=mode,
                    priority=priority or self.agents.priority_of(agent),
                    find_busy=stream and self.store.dialect == "postgresql", origin=origin,
                    also=also, session_quota=self.agents.guard.quotas.quota(
                        tenant_of(agent.settings), "sessions"),
                    start=self.runlog.lease if start else None,
                    agent_at=self._agent_at(agent))
                break
            except AgentChanged:
                if attempt + 1 == _FRESH_TRIES:
                    raise _changing(name) from None
                # Changed on another node since this one read it: the message is
                # decided again from the agent as stored (its state, settings).
                agent = await self._sender(name, key, mode, priority, fresh=True)
        # Nothing awaits between handing the run over and returning: a sender that
        # follows the run subscribes as soon as this returns, before the run's task
        # can commit anything (it had missed a run that ended meanwhile: the first
        # message to a new agent, whose state change was awaited here after the hand
        # over, on PostgreSQL).
        changed: AgentRecord | None = None
        try:
            if agent.state == "created":
                changed = await self.agents.set_state_from(name, "created", "running")
        finally:
            result = self._hand_over(agent, key, mode, accepted)
        if changed is not None:
            result.agent = changed
        return result

    async def send_many(self, messages: Sequence[Message], *,
                        defer: list[Callable[[], object]] | None = None,
                        also_many: Callable[[Tx, list[tuple[int, Accepted]]], None]
                        | None = None, start: bool = False) -> list[SendResult | Exception]:
        """Accept many messages in one commit (:meth:`Store.accept_messages`), each as
        :meth:`send` would (modes, ``origin``, ``also``, waking its agent) and each on
        its own: the outcome of each, or the error that refused it (nothing of it
        written), at its place in the list. ShuttingDown refuses them all.

        ``defer``: the new runs are queued in the supervisor now, in order, but
        start when the caller calls what is appended there (a burst of schedule fires
        is all committed before its runs compete with it for the event loop), once
        their sessions' logs are read in one query (:meth:`_start_burst`); any other
        message to one of their sessions starts it meanwhile.

        ``also_many``: the messages' ``also`` for the whole batch when the store
        writes it set-wise (:meth:`Store.accept_messages`), given ``(index in
        messages, accepted)`` of each message it accepted.

        ``start``: a new run whose session has nothing else active starts in the
        accepting transaction, under this node's lease (its ``run.started`` committed
        with its message: :meth:`Store.accept_messages`); its executor, built when
        the supervisor gets to it, carries on from there. A burst's runs then start
        as their fires are claimed."""
        out: list[SendResult | Exception | None] = [None] * len(messages)
        senders: list[tuple[int, AgentRecord]] = []
        for i, m in enumerate(messages):
            try:
                senders.append((i, await self._sender(m.name, m.key, m.mode, m.priority)))
            except (InvalidInput, AgentNotFound, AgentNotAccepting) as exc:
                out[i] = exc
        if self.secret_values is not None:
            messages = list(messages)
            for i, agent in senders:
                messages[i] = replace(messages[i], content=await self._redacted(
                    agent, messages[i].content))
        accepted = await self._accept_many(messages, senders, out, also_many, start)
        created: dict[str, AgentRecord] = {}
        starts: list[tuple[str, Prepared]] = []
        for (i, agent), done in accepted:
            if isinstance(done, Exception):
                out[i] = done
                continue
            out[i] = self._hand_over(agent, messages[i].key, messages[i].mode, done,
                                     defer=starts if defer is not None else None)
            if agent.state == "created":
                created[agent.name] = agent
        if defer is not None and starts:
            defer.append(functools.partial(self._start_burst, starts))
        for name in created:
            try:
                record = await self.agents.set_state_from(name, "created", "running")
            except AgentNotFound:
                continue
            for result in out:
                if isinstance(result, SendResult) and result.agent.name == name:
                    result.agent = record
        return [r for r in out if r is not None]

    async def _accept_many(
            self, messages: Sequence[Message], senders: list[tuple[int, AgentRecord]],
            out: list[SendResult | Exception | None],
            also_many: Callable[[Tx, list[tuple[int, Accepted]]], None] | None,
            start: bool) -> list[tuple[tuple[int, AgentRecord], Accepted | Exception]]:
        """:meth:`send_many`'s commits: the messages of ``senders`` (index in
        ``messages``, agent) and the outcome of each, in their order. A message
        refused because its agent changed on another node since this one read it
        (``AgentChanged``) is decided again from the agent as stored and sent again
        with the others so refused, in a commit of their own (the messages of one
        agent stay in their order: all of them are refused together)."""
        done: dict[int, tuple[tuple[int, AgentRecord], Accepted | Exception]] = {}
        # One record per agent (the newest read), so that a change refuses all its
        # messages or none.
        newest: dict[str, AgentRecord] = {}
        for _, agent in senders:
            if agent.name not in newest or agent.updated_at > newest[agent.name].updated_at:
                newest[agent.name] = agent
        pending = [(i, newest[agent.name]) for i, agent in senders]
        for attempt in range(_FRESH_TRIES):
            batch = pending
            accepted = await self.store.accept_messages([ToAccept(
                agent_id=agent.id, key=messages[i].key, content=messages[i].content,
                mode=messages[i].mode, idempotency_key=messages[i].idempotency_key,
                priority=messages[i].priority or self.agents.priority_of(agent),
                origin=messages[i].origin, also=messages[i].also,
                session_quota=self.agents.guard.quotas.quota(tenant_of(agent.settings),
                                                             "sessions"),
                agent_at=self._agent_at(agent))
                for i, agent in batch],
                also_many=None if also_many is None else functools.partial(
                    _also_for, also_many, [i for i, _ in batch]),
                start=self.runlog.lease if start else None)
            pending = []
            fresh: dict[str, AgentRecord | Exception] = {}
            for (i, agent), outcome in zip(batch, accepted, strict=True):
                if not isinstance(outcome, AgentChanged):
                    done[i] = ((i, agent), outcome)
                    continue
                m = messages[i]
                if m.name not in fresh:
                    try:
                        fresh[m.name] = await self.agents.reload(m.name)
                    except AgentNotFound as exc:
                        fresh[m.name] = exc
                again = fresh[m.name]
                if isinstance(again, Exception) or attempt + 1 == _FRESH_TRIES:
                    out[i] = again if isinstance(again, Exception) else _changing(m.name)
                    continue
                try:
                    self._check_state(m.name, again)
                except AgentNotAccepting as exc:
                    out[i] = exc
                    continue
                pending.append((i, again))
            if not pending:
                break
        return [done[i] for i in sorted(done)]

    async def _redacted(self, agent: AgentRecord, content: str) -> str:
        """``content`` with the values of the agent's secrets replaced by their names
        (a person pasting a key into a message: it is kept out of the log and so of
        the model's context, like a tool's output holding it)."""
        if self.secret_values is None or not content:
            return content
        tenant = tenant_of(agent.settings)
        if tenant is None:
            return content
        values = await self.secret_values(tenant, agent.name)
        return SecretRedactor(values).text(content) if values else content

    def _agent_at(self, agent: AgentRecord) -> float | None:
        """What a message to ``agent`` is accepted against: its record's version, on a
        store other nodes share (their changes reach this node a moment later)."""
        return agent.updated_at if self.store.engine.shared else None

    async def _sender(self, name: str, key: str, mode: str, priority: str | None, *,
                      fresh: bool = False) -> AgentRecord:
        """The agent a message goes to (woken), once the message is checked and the
        agent accepts messages. ``fresh``: as stored now, not as held here."""
        if mode not in MODES:
            raise InvalidInput(f"unknown mode {mode!r}; use one of {', '.join(MODES)}",
                               field="body.mode")
        if priority is not None and priority not in PRIORITIES:
            raise InvalidInput(f"unknown priority {priority!r}; use one of "
                               f"{', '.join(PRIORITIES)}", field="body.priority")
        if not self.accepting():
            raise ShuttingDown("the daemon is shutting down; retry shortly")
        check_session_key(key)
        agent = await (self.agents.reload(name) if fresh else self.agents.get(name))
        if (agent.state in AgentNotAccepting.STATES and not fresh
                and self.store.engine.shared):
            # Refused on this node's copy: another node may have resumed the agent
            # a moment ago (the pause itself is checked where the message would be
            # accepted, whatever this copy says).
            agent = await self.agents.reload(name)
        self._check_state(name, agent)
        return agent

    @staticmethod
    def _check_state(name: str, agent: AgentRecord) -> None:
        if agent.state in AgentNotAccepting.STATES:
            raise AgentNotAccepting.of(name, agent.state)

    def _hand_over(self, agent: AgentRecord, key: str, mode: str, accepted: Accepted,
                   defer: list[tuple[str, Prepared]] | None = None) -> SendResult:
        """A committed message's run to the supervisor (or its steer to the run); with
        ``defer``, queued there but not started: its session and what it starts from
        are appended to ``defer``."""
        self.bus.publish(accepted.events)
        self.histories.offer(accepted.events)
        busy_run = accepted.busy_run
        if accepted.steered:
            if not self.supervisor.steer(accepted.session.id, accepted.run.id,
                                         accepted.events[-1].seq):
                log.info("run %s was not active here; it reads the steer from the log",
                         accepted.run.id)
        elif not accepted.duplicate:
            busy_run, prepared = self._submit(agent, key, mode, accepted,
                                              start=defer is None)
            if defer is not None:
                defer.append((accepted.session.id, prepared))
        return SendResult(agent=agent, session=accepted.session, run=accepted.run,
                          events=accepted.events, duplicate=accepted.duplicate,
                          busy_run=busy_run, steered=accepted.steered)

    def _submit(self, agent: AgentRecord, key: str, mode: str, accepted: Accepted,
                start: bool = True) -> tuple[str | None, Prepared]:
        """Queue a new run here; the run it is queued behind, if any, and what it starts
        from."""
        first = accepted.events[0]
        origin = ({k: v for k, v in first.data.items() if k not in ("content", "steer")}
                  if first.kind == "message.user" and first.run_id == accepted.run.id
                  else None)
        prepared = Prepared(
            run=accepted.run.copy(), session_key=key, min_seq=accepted.events[-1].seq,
            session_policy=accepted.session.policy, origin=origin,
            log=accepted.events if accepted.created_session else None,
            started=accepted.started)
        self.supervisor.submit(accepted.session.id, accepted.run.id, prepared,
                               agent_id=agent.id, order=accepted.run.queued_seq, start=start)
        busy_run = accepted.busy_run
        if mode == "interrupt" and busy_run is not None:
            self.supervisor.stop_at_boundary(accepted.session.id, busy_run,
                                             "interrupted by a newer message")
        return (busy_run or self.supervisor.ahead_of(accepted.session.id, accepted.run.id),
                prepared)

    def _start_burst(self, starts: list[tuple[str, Prepared]]) -> None:
        """Start the sessions of a burst's runs (``send_many(defer=...)``), once the
        logs of those not cached here are read, in one query: each run then starts
        without a read of its own (a new session's log came with its message)."""
        async def start() -> None:
            try:
                wanted: dict[str, list[Prepared]] = {}
                for _, p in starts:
                    if p.log is None and not self.histories.cached(p.run.session_id):
                        wanted.setdefault(p.run.session_id, []).append(p)
                logs = await self.store.read_logs(list(wanted))
                for session_id, prepared in wanted.items():
                    for p in prepared:
                        p.log = logs.get(session_id)
            except Exception:
                log.warning("could not read a burst's logs; its runs read their own",
                            exc_info=True)
            finally:
                for session_id, _ in starts:
                    self.supervisor.start(session_id)

        task = asyncio.create_task(start())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            # Held while its agent is paused, owned by another process, or settled
            # here without an end (interrupted: queued again): read it, and wait for
            # it with a future that has not resolved yet (a resolved one would make
            # this loop spin on the store), or a poll for another node's.
            while True:
                run = await self.store.get_run(run_id)
                if run.terminal or not self.accepting():
                    return run
                if future.done():
                    self.supervisor.discard_waiter(run_id, future)
                    future = self.supervisor.waiter(run_id)
                    continue  # (read again with it in place: no end is missed)
                await asyncio.wait({future}, timeout=0.5)
        finally:
            self.supervisor.discard_waiter(run_id, future)

    async def get(self, run_id: str) -> tuple[RunRecord, str, str]:
        """The run, its agent's name and its session's key."""
        return await self.store.run_context(run_id)

    async def cancel(self, run_id: str, reason: str = "cancelled by request"
                     ) -> tuple[RunRecord, str, str]:
        run, agent_name, key = await self.store.run_context(run_id)
        if run.terminal:
            return run, agent_name, key
        if not await self.supervisor.cancel(run.session_id, run_id, reason):
            # Not held by this process: a paused agent's queued run (settled here), or a
            # run another node drives (asked to cancel it; it does within a third of
            # lease_ttl_s, and this call waits that long for it).
            try:
                await self.runlog.cancel_queued(run_id, reason)
            except LeaseLost:
                await self._cancel_elsewhere(run, reason)
        return await self.store.run_context(run_id)

    async def _cancel_elsewhere(self, run: RunRecord, reason: str) -> None:
        """Ask the node driving ``run`` to cancel it, and wait (a third of
        ``lease_ttl_s`` and 2 s at most) until it has. On PostgreSQL that node hears of
        it at once (``agentd_cancels``), else at its next lease renewal; its commits
        reach this node's subscribers of the session as they are made, so the wait
        ends with the run's end, not at a poll."""
        with self.bus.subscribe(run.session_id) as commits:
            await self.store.request_cancel(run.id, reason)
            deadline = time.monotonic() + self.lease_ttl_s / 3 + 2.0
            polled = 0.0
            while (left := deadline - time.monotonic()) > 0:
                if time.monotonic() - polled >= 0.5:
                    # (and every half second: the session's commits may not be heard)
                    polled = time.monotonic()
                    if (await self.store.get_run(run.id)).terminal:
                        return
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(commits.queue.get(), min(left, 0.5))
                    if _ends(item, run.id):
                        return

    def cancel_in_background(self, session_id: str, run_id: str, reason: str) -> None:
        """Cancel a run this node drives, without waiting (from a housekeeping job)."""
        task = asyncio.create_task(self.supervisor.cancel(session_id, run_id, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start_held(self, agent: AgentRecord) -> None:
        """Submit the runs held in the store while the agent was paused."""
        for run in await self.store.runs_with_status(["queued"], agent_id=agent.id):
            if not self.supervisor.is_known(run.id):
                self.supervisor.submit(run.session_id, run.id, agent_id=run.agent_id,
                                       order=run.queued_seq)

    async def cancel_held(self, agent: AgentRecord, reason: str) -> None:
        """Cancel the runs held in the store for the agent (queued, no executor)."""
        for run in await self.store.runs_with_status(["queued"], agent_id=agent.id):
            await self.runlog.cancel_queued(run.id, reason)
