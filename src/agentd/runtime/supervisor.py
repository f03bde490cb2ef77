"""The supervisor owns every run: one worker per busy session, runs in FIFO order.

A session has at most one active run. Runs queued behind it wait in the session's
queue; the worker exists only while the session has work, so idle sessions cost
nothing. HTTP handlers never own a run: they submit it and may wait for, or
subscribe to, its events.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentd.runtime.loop import RunExecutor
from agentd.store.records import RunRecord

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

#: Builds the executor for a queued run (None: the run was settled without one).
#: The second argument is whatever the submitter attached (or None).
ExecutorFactory = Callable[[str, Any], Awaitable[RunExecutor | None]]
#: Settles a queued run that will never start (cancelled before it ran).
CancelQueued = Callable[[str, str], Awaitable[None]]
#: The next run queued in a session by anyone (another node, in a cluster), or None.
NextQueued = Callable[[str], Awaitable[RunRecord | None]]


def _take_back_cancels(task: asyncio.Task[Any]) -> None:
    """The cancellations a run was sent are spent with it: its session worker, whose
    task it executed in, starts the next run with none pending (``asyncio.timeout``
    and the like count them)."""
    while task.cancelling():
        task.uncancel()


@dataclass(slots=True)
class _Session:
    queue: deque[str]
    context: dict[str, Any]
    agent_id: str | None = None
    #: Queued runs' places in the session's queue (their queued_seq), when known.
    order: dict[str, int] = field(default_factory=dict)
    #: The run taken off the queue whose executor is being built.
    building: str | None = None
    #: Runs cancelled while being built, with the reason.
    cancelled: dict[str, str] = field(default_factory=dict)
    #: Steer seqs for runs being built (applied to the executor once it exists).
    steered: dict[str, int] = field(default_factory=dict)
    #: Cancels of queued runs being written: the worker starts no run behind them
    #: until they are (the store refuses to start a run with one queued ahead, and
    #: such a run was dropped here, stranded queued until a takeover).
    ending: set[asyncio.Future[Any]] = field(default_factory=set)
    worker: asyncio.Task[None] | None = None
    active: RunExecutor | None = None


class Supervisor:
    def __init__(self, build: ExecutorFactory, cancel_queued: CancelQueued,
                 next_queued: NextQueued | None = None) -> None:
        self._build = build
        self._cancel_queued = cancel_queued
        self._next_queued = next_queued
        self._sessions: dict[str, _Session] = {}
        self._waiters: dict[str, list[asyncio.Future[RunRecord | None]]] = {}
        self._held: set[str] = set()
        #: Runs held here that wait for a client's decision.
        self.waiting_runs: set[str] = set()
        self._background: set[asyncio.Task[bool]] = set()
        self._closing = False

    # -- submitting and waiting ------------------------------------------------------

    def submit(self, session_id: str, run_id: str, context: Any = None,
               agent_id: str | None = None, order: int | None = None,
               start: bool = True) -> None:
        """Queue a run here. ``order`` (its queued_seq) keeps the session's runs in the
        order they were accepted even if their submissions arrive out of order (on
        PostgreSQL, concurrent accepts can return in another order than they
        committed). ``start`` False: the session's worker is not started for it
        (:meth:`start` does, later; a burst of schedule fires is queued in order
        as it commits but runs once it is all committed); anything else submitted to
        the session meanwhile starts it."""
        if self._closing:
            return  # it stays queued in the store; the next daemon starts it
        if run_id in self._held:
            return  # submitted twice (a takeover pass met it as it was handed over)
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = _Session(queue=deque(), context={},
                                                          agent_id=agent_id)
        if order is None:
            state.queue.append(run_id)
        else:
            state.order[run_id] = order
            at = len(state.queue)
            while at > 0 and state.order.get(state.queue[at - 1], -1) > order:
                at -= 1
            state.queue.insert(at, run_id)
        self._held.add(run_id)
        if context is not None:
            state.context[run_id] = context
        if start:
            self.start(session_id)

    def start(self, session_id: str) -> None:
        """Start the session's worker if it has runs queued here and none is going."""
        state = self._sessions.get(session_id)
        if state is not None and state.queue and state.worker is None and not self._closing:
            state.worker = asyncio.create_task(self._work(session_id, state),
                                               name=f"agentd-session-{session_id}")

    def waiter(self, run_id: str) -> asyncio.Future[RunRecord | None]:
        """A future resolved when ``run_id`` settles in this process, with the run as
        stored when the executor finished it (None: settled without an executor)."""
        future: asyncio.Future[RunRecord | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(run_id, []).append(future)
        return future

    def discard_waiter(self, run_id: str, future: asyncio.Future[RunRecord | None]) -> None:
        futures = self._waiters.get(run_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiters[run_id]

    def _settled(self, run_id: str, run: RunRecord | None = None) -> None:
        self._held.discard(run_id)
        self.waiting_runs.discard(run_id)
        for future in self._waiters.pop(run_id, []):
            if not future.done():
                future.set_result(run)

    def _waiting(self, run: RunRecord) -> None:
        """A run now waits for a client's decision: its waiters get it as it is."""
        self.waiting_runs.add(run.id)
        for future in self._waiters.pop(run.id, []):
            if not future.done():
                future.set_result(run.copy())

    def active_executor(self, session_id: str, run_id: str) -> RunExecutor | None:
        state = self._sessions.get(session_id)
        if state is not None and state.active is not None and state.active.run.id == run_id:
            return state.active
        return None

    def ahead_of(self, session_id: str, run_id: str) -> str | None:
        """The run held here that ``run_id`` waits behind in its session (the one under
        way or being started, else the one queued before it), or None. Free: the
        session's state is in memory."""
        state = self._sessions.get(session_id)
        if state is None:
            return None
        if state.active is not None and state.active.run.id != run_id:
            return state.active.run.id
        if state.building is not None and state.building != run_id:
            return state.building
        if state.queue and state.queue[0] != run_id:
            return state.queue[0]
        return None

    def is_known(self, run_id: str) -> bool:
        """Whether this process holds the run (queued here or active)."""
        return run_id in self._held

    def busy_agents(self) -> set[str]:
        """Agents with a run held here (queued or under way)."""
        return {s.agent_id for s in self._sessions.values() if s.agent_id is not None}

    def running_agent(self, agent_id: str) -> bool:
        """Whether a run of the agent is under way here (an executor driving it; not
        one queued or being built)."""
        return any(s.active is not None and s.active.run.agent_id == agent_id
                   for s in self._sessions.values())

    def executors(self) -> list[RunExecutor]:
        """The executors driving runs here now."""
        return [s.active for s in self._sessions.values() if s.active is not None]

    async def idle(self) -> None:
        """Return once no session worker runs here: every run this node was given has
        ended, parked or been left queued (a paused agent's). "Nothing more happens"
        is checked after this, never after a sleep."""
        while busy := self._busy():
            await asyncio.wait(busy)

    def _busy(self) -> list[asyncio.Task[Any]]:
        busy: list[asyncio.Task[Any]] = [s.worker for s in self._sessions.values()
                                         if s.worker is not None and not s.worker.done()]
        return busy + [task for task in self._background if not task.done()]

    @property
    def busy(self) -> bool:
        """Whether a session worker (or a cancel sent to one) is under way here."""
        return bool(self._busy())

    @property
    def active_runs(self) -> int:
        return sum(1 for s in self._sessions.values() if s.active is not None)

    @property
    def queued_runs(self) -> int:
        return sum(len(s.queue) for s in self._sessions.values())

    # -- the per-session worker -------------------------------------------------------

    async def _next_run(self, state: _Session) -> str | None:
        """The session's next run to start here, taken off its queue once the cancels
        of runs queued ahead of it are written (see ``_Session.ending``); None when
        none is queued or the supervisor is closing."""
        while pending := {f for f in state.ending if not f.done()}:
            await asyncio.wait(pending)
        return self._take(state)

    def _take(self, state: _Session) -> str | None:
        """The session's next run, taken off its queue (None: none, or closing)."""
        if not state.queue or self._closing:
            return None
        run_id = state.queue.popleft()
        state.order.pop(run_id, None)
        return run_id

    async def _work(self, session_id: str, state: _Session) -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            # (No cancel being written, the usual case: the next run is taken off the
            # queue without a coroutine made and awaited for it.)
            while (run_id := (self._take(state) if not state.ending
                              else await self._next_run(state))) is not None:
                state.building = run_id
                settled: RunRecord | None = None
                try:
                    executor = await self._build(run_id, state.context.pop(run_id, None))
                    state.building = None
                    reason = state.cancelled.pop(run_id, None)
                    steer_seq = state.steered.pop(run_id, None)
                    if executor is None:
                        continue
                    if steer_seq is not None:
                        executor.note_steer(steer_seq)
                    if reason is not None:  # cancelled while it was being prepared
                        await self._cancel_queued(run_id, reason)
                        continue
                    executor.on_waiting = self._waiting
                    # The run is executed in this task: a task of its own for every
                    # run cost a turn a task's making, scheduling and ending, and a
                    # future to wait on. Cancelling the run (RunExecutor.cancel)
                    # cancels this task while the run executes, never after.
                    executor.park_unasked = True
                    state.active = executor
                    try:
                        await executor.execute()
                    except asyncio.CancelledError:
                        if self._cancelled_itself(executor):
                            raise  # (the run is parked)
                        # The run's (ended, parked or lost): the worker goes on.
                    finally:
                        if not self._cancelled_itself(executor):
                            _take_back_cancels(me)
                    if executor.run.terminal:
                        settled = executor.run
                    elif executor.lost:
                        pass  # another node drives it (or its session) now
                    elif not executor.interrupt:
                        # Cancelled before its first step: nothing ran, so it is
                        # settled as cancelled here. (Interrupted ones stay queued.)
                        await self._cancel_queued(run_id, executor.cancel_reason
                                                  or "cancelled")
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("run %s crashed the session worker", run_id)
                finally:
                    state.building = None
                    state.active = None
                    self._settled(run_id, settled)
                if not state.queue and self._next_queued is not None and not self._closing:
                    # In a cluster, another node may have queued the session's next run
                    # while this one ran (or ahead of a run this node could not start):
                    # whoever ends a run starts the session's next one, if nothing runs.
                    following = await self._next_queued(session_id)
                    if (following is not None and following.id != run_id
                            and following.id not in self._held):
                        state.queue.append(following.id)
                        self._held.add(following.id)
        finally:
            state.worker = None
            if state.queue and not self._closing:
                # Cancelled mid-queue but not closing (should not happen): keep serving.
                state.worker = asyncio.create_task(self._work(session_id, state))
            elif self._sessions.get(session_id) is state:
                del self._sessions[session_id]

    def _cancelled_itself(self, executor: RunExecutor) -> bool:
        """Whether the session worker is cancelled itself (a shutdown, or a
        cancellation nobody asked of its run: ``RunExecutor.park_unasked``), not only
        the run it executes."""
        return self._closing or executor.cancelled_unasked

    # -- steering and interrupting ----------------------------------------------------

    def steer(self, session_id: str, run_id: str, seq: int) -> bool:
        """Tell a run held here that a message up to ``seq`` was steered into it."""
        state = self._sessions.get(session_id)
        if state is None or run_id not in self._held:
            return False
        if state.active is not None and state.active.run.id == run_id:
            state.active.note_steer(seq)
        else:
            # Not started yet: its history must reach the steer before it starts.
            prepared = state.context.get(run_id)
            if prepared is not None:
                prepared.min_seq = max(prepared.min_seq, seq)
            else:
                state.steered[run_id] = seq
        return True

    def stop_at_boundary(self, session_id: str, run_id: str, reason: str) -> None:
        """Cancel a run at its next step boundary (a queued one at once)."""
        state = self._sessions.get(session_id)
        if state is None or run_id not in self._held:
            return
        if state.active is not None and state.active.run.id == run_id:
            state.active.request_stop(reason)
        else:
            task = asyncio.create_task(self.cancel(session_id, run_id, reason))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # -- cancelling --------------------------------------------------------------------

    async def cancel(self, session_id: str, run_id: str, reason: str) -> bool:
        """Cancel a queued or active run and wait until it is settled.

        Returns False if this process does not hold the run.
        """
        state = self._sessions.get(session_id)
        if state is None or run_id not in self._held:
            return False
        done = self.waiter(run_id)
        try:
            if run_id in state.queue:
                state.queue.remove(run_id)
                state.order.pop(run_id, None)
                state.context.pop(run_id, None)
                ending = asyncio.ensure_future(self._cancel_queued(run_id, reason))
                state.ending.add(ending)
                ending.add_done_callback(state.ending.discard)
                await asyncio.shield(ending)
                self._settled(run_id)
            elif state.building == run_id:
                state.cancelled[run_id] = reason
            elif state.active is not None and state.active.run.id == run_id:
                state.active.cancel(reason)
            else:
                return False
            await done
            return True
        finally:
            self.discard_waiter(run_id, done)

    async def cancel_session(self, session_id: str, reason: str) -> None:
        state = self._sessions.get(session_id)
        if state is None:
            return
        for run_id in list(state.queue):
            await self.cancel(session_id, run_id, reason)
        if state.active is not None:
            await self.cancel(session_id, state.active.run.id, reason)

    async def shutdown(self, grace_s: float) -> None:
        """Let active runs finish within ``grace_s``, then park them (they stay
        ``running`` in the store and resume at the next start).

        Queued runs stay queued in the store and start again with the daemon.
        """
        self._closing = True
        workers = [s.worker for s in self._sessions.values() if s.worker is not None]
        if not workers:
            return
        # Runs still queued stay queued in the store; nothing here will start them.
        for state in self._sessions.values():
            for run_id in state.queue:
                self._settled(run_id)
        # Runs waiting for a client's decision are not worth waiting for. (A run
        # executes in its session's worker, which ends with it: _take gives no more.)
        tasks = [s.worker for s in self._sessions.values()
                 if s.worker is not None and s.active is not None
                 and s.active.run.id not in self.waiting_runs]
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        parking: set[asyncio.Task[Any]] = set()
        for state in self._sessions.values():
            executor = state.active
            if executor is None:
                continue
            executor.cancel_reason = "daemon shutting down"
            executor.interrupt = True
            if executor.cancel("daemon shutting down") and state.worker is not None:
                # Its worker ends once the run is parked: cancelled again, it would
                # not wait for that.
                parking.add(state.worker)
        for worker in workers:
            if worker not in parking:
                worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
