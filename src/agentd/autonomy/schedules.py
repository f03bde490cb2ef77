"""Schedules: an agent's messages sent on a clock, each fire time exactly once.

A schedule fires on a 5-field ``cron`` expression in an IANA ``timezone`` (daylight
saving handled as Debian's cron does, :mod:`agentd.autonomy._cron`), every
``every_s`` seconds, or once ``at`` a time; until ``ends_at`` if given. A fire sends
``content`` to the schedule's ``session`` (or to a new session per fire) through
:meth:`Runs.send`, its ``message.user`` data carrying ``{"schedule_id", "fire_at"}``
(the nominal fire time, epoch seconds), and wakes a sleeping agent like any message.

**Exactly once.** A fire's claim is committed in the transaction that logs its
message and queues its run (``Runs.send(also=...)``): the schedule moves on from the
fire time only if it is still there (compare-and-set), and ``(schedule_id,
fire_at)`` is inserted under a primary key. A restart, a second node on the same
PostgreSQL database, or an edit made meanwhile cannot fire a time twice: the loser's
transaction writes nothing, its run included.

**Finding due work.** One task per runtime runs :meth:`Schedules.fire_due`: one
indexed query (``WHERE enabled = 1 AND next_due_at <= now ORDER BY next_due_at LIMIT
n``) and the fires of what it returns, committed together in chunks
(:meth:`Runs.send_many`: one transaction written set-wise, one statement per table
for the chunk, the claims included; when any fire of it fails, say lost to a
compare-and-set, the chunk is written again fire by fire, each in its own
savepoint, so that one drops alone), the next query at once while they fill a
batch; the runs of such a burst start once it is all claimed. It then sleeps until
``lead_s`` before the next due time, or until a schedule is created or changed here
(on a shared PostgreSQL database, at most ``poll_s``: other nodes change schedules
too), reads and plans what is due then and makes its messages, and commits them from
the due time on (each planned fire also a compare-and-set on the schedule's version,
so an edit in between makes it write nothing and the schedule is read again).

**Per fire time:** ``jitter_s`` delays it by a fixed pseudo-random part of that
(the same on every node). ``overlap`` says what happens when the previous fire's run
is still going: ``skip`` (the fire time is claimed as skipped), ``enqueue`` (queued
behind it) or ``interrupt`` (it stops at its next step boundary) - the session modes
of ``Runs.send``. Fire times more than the agent's ``grace_s`` late (the daemon was
down) are missed: ``missed`` fires none of them (``skip``), the latest (``once``),
or every one (``all``, at most :data:`MAX_CATCHUP`), within ``catchup_s``.

**Failures.** Before a fire, the outcomes of the schedule's latest fire runs are
counted: after N consecutive failed runs the next fire waits ``backoff_s * 2^(N-1)``
(at most ``backoff_max_s``) after the last failure, and at ``pause_after_failures``
the schedule is paused with ``paused_reason`` saying why. Resuming it clears the
reason and counts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from agentd.autonomy._cron import (
    check_timezone,
)
from agentd.autonomy._schedule_plan import (
    MAX_CATCHUP,
    MAX_WALK,
    Fire,
    Plan,
    due_at,
    following,
    jitter_of,
    plan_fires,
)
from agentd.autonomy.schedule_spec import (
    FIELDS,
    MAX_CONTENT,
    MAX_NEXT,
    ScheduleIn,
    check_spec,
    schedule_dict,
)
from agentd.clock import SYSTEM, Clock, wait_event
from agentd.errors import (
    AgentNotAccepting,
    AgentNotFound,
    Conflict,
    InvalidInput,
    InvalidModel,
    NotFound,
    SessionBusy,
    ShuttingDown,
)
from agentd.runtime.runs import Message
from agentd.settings.schedules import ScheduleSettings
from agentd.store.records import AgentRecord, iso, tenant_of
from agentd.store.rows import new_id
from agentd.store.schedules import (
    FireClaim,
    Moved,
    ScheduleRecord,
    claim_fire,
    claim_fires,
    move,
)

if TYPE_CHECKING:
    from agentd.runtime.agents import Agents
    from agentd.runtime.runs import Runs
    from agentd.store import Store
    from agentd.store.engine import Tx
    from agentd.store.log import Accepted

__all__ = ["MAX_CATCHUP", "MAX_CONTENT", "MAX_NEXT", "ScheduleIn", "Schedules", "following",
           "jitter_of", "plan_fires", "schedule_dict"]

log = logging.getLogger(__name__)

_ACTIVE = ("queued", "running", "waiting_approval")
#: The most due schedules prepared ahead of one fire time (:meth:`Schedules.fire_due`).
MAX_AHEAD = 50_000
_MODE = {"skip": "reject", "enqueue": "enqueue", "interrupt": "interrupt"}


class Schedules:
    """Schedules of every agent, and the task that fires them (module docstring).

    Args:
        exclusive: the store is this daemon's alone (SQLite): nobody else changes
            schedules, so the task can sleep until the next due time.
        poll_s: on a shared store, how long the task sleeps at most.
        batch: due schedules one query returns (and fired concurrently).
        chunk: fires committed together (one transaction, each fire claimed on its
            own in it).
        lead_s: how long before the next due time the task reads and plans what is
            due then (0: at the time). The fires still commit at or after their time.
        clock: the time decisions are made at (:mod:`agentd.clock`; tests give a
            :class:`agentd.testing.FakeClock`).
    """

    def __init__(self, store: Store, *, agents: Agents, runs: Runs, exclusive: bool,
                 poll_s: float = 1.0, batch: int = 2048, chunk: int = 256,
                 lead_s: float = 1.0, clock: Clock = SYSTEM) -> None:
        self.store = store
        self.agents = agents
        self.runs = runs
        self.exclusive = exclusive
        self.poll_s = poll_s
        self.batch = batch
        self.chunk = chunk
        self.lead_s = lead_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        #: Figures for /health, the bench and tests.
        self.figures: dict[str, int] = {"fired": 0, "skipped": 0, "missed": 0, "lost": 0,
                                        "moved": 0, "passes": 0}

    # -- settings --------------------------------------------------------------------

    def settings_of(self, agent: AgentRecord) -> ScheduleSettings:
        """The agent's ``settings.schedules`` (the defaults when unreadable)."""
        try:
            return self.agents.plan(agent).settings.schedules
        except InvalidModel:
            try:
                return ScheduleSettings.model_validate(
                    (agent.settings or {}).get("schedules") or {})
            except ValidationError:
                return ScheduleSettings()

    # -- definitions -----------------------------------------------------------------

    def _record(self, spec: ScheduleIn, *, schedule_id: str, agent: AgentRecord,
                first: float | None, now: float, by: str, run: str | None
                ) -> ScheduleRecord:
        zone = check_timezone(spec.timezone)

        def epoch(value: datetime | None) -> float | None:
            if value is None:
                return None
            return (value.replace(tzinfo=zone) if value.tzinfo is None else value).timestamp()

        assert spec.overlap is not None and spec.missed is not None
        rec = ScheduleRecord(
            id=schedule_id, agent_id=agent.id, cron=spec.cron, every_s=spec.every_s,
            at=epoch(spec.at), timezone=spec.timezone, session=spec.session,
            content=spec.content, jitter_s=spec.jitter_s, overlap=spec.overlap,
            missed=spec.missed, catchup_s=float(spec.catchup_s or 0.0),
            ends_at=epoch(spec.ends_at), enabled=spec.enabled, paused_reason=None,
            next_fire_at=first, next_due_at=None, last_fire_at=None, last_run_id=None,
            fires=0, missed_count=0, skipped_count=0, failures=0, counted_after=now,
            created_by=by, created_run=run, created_at=now, updated_at=now, version=1,
            agent=agent.name)
        rec.next_due_at = due_at(rec, first)
        return rec

    async def create(self, agent_name: str, spec: ScheduleIn, *, by: str,
                     run: str | None = None, schedule_id: str | None = None
                     ) -> ScheduleRecord:
        """A new schedule of the agent (AgentNotFound; InvalidInput naming the field;
        Conflict ``schedule_limit``). ``run``: the run whose tool creates it (its
        limit is ``tool_max_per_agent``)."""
        agent = await self.agents.get(agent_name)
        limits = self.settings_of(agent)
        now = self.clock.time()
        spec, first = check_spec(spec, limits, now)
        rec = self._record(spec, schedule_id=schedule_id or new_id("sch"), agent=agent,
                           first=first, now=now, by=by, run=run)
        made = await self.store.insert_schedule(
            rec, max_per_agent=limits.max_per_agent,
            max_by_tools=limits.tool_max_per_agent if run is not None else None,
            quota=self.agents.guard.quotas.quota(tenant_of(agent.settings), "schedules"))
        self._wake.set()
        return made

    async def get(self, schedule_id: str) -> ScheduleRecord:
        rec = await self.store.get_schedule(schedule_id)
        if rec is None:
            raise NotFound(f"schedule {schedule_id!r} not found", code="schedule_not_found")
        return rec

    async def of_agent(self, agent_name: str, *, after: str | None = None,
                       limit: int = 100) -> list[ScheduleRecord]:
        agent = await self.store.get_agent(agent_name)  # listing wakes no agent
        return await self.store.list_schedules(agent_id=agent.id, after=after, limit=limit)

    async def list_all(self, *, agent: str | None = None, after: str | None = None,
                       limit: int = 100, agent_ids: Sequence[str] | None = None
                       ) -> list[ScheduleRecord]:
        """``agent_ids``: only these agents' (a token's scope)."""
        if agent is not None:
            return await self.of_agent(agent, after=after, limit=limit)
        return await self.store.list_schedules(after=after, limit=limit,
                                               agent_ids=agent_ids)

    def next_times(self, rec: ScheduleRecord, count: int) -> list[float]:
        """The schedule's next ``count`` nominal fire times (none while paused)."""
        out: list[float] = []
        t = rec.next_fire_at if rec.enabled else None
        while t is not None and len(out) < count:
            out.append(t)
            t = following(rec, t)
        return out

    async def update(self, schedule_id: str, change: Mapping[str, Any]) -> ScheduleRecord:
        """Change a schedule's fields (the keys of ``change``, ScheduleIn's names).
        Its next fire time is worked out again from now when its timing changes or
        it is resumed; ``enabled: true`` also clears ``paused_reason`` and its count
        of failures."""
        unknown = set(change) - FIELDS
        if unknown:
            raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}",
                               field=f"body.{sorted(unknown)[0]}")
        for _ in range(8):
            rec = await self.get(schedule_id)
            agent = await self.store.get_agent(rec.agent, by="name")
            zone = check_timezone(rec.timezone)

            def dt(ts: float | None) -> datetime | None:
                return None if ts is None else datetime.fromtimestamp(ts, zone)  # noqa: B023

            current = ScheduleIn(
                content=rec.content, cron=rec.cron, every_s=rec.every_s, at=dt(rec.at),
                timezone=rec.timezone, session=rec.session, jitter_s=rec.jitter_s,
                overlap=rec.overlap, missed=rec.missed, catchup_s=rec.catchup_s,
                ends_at=dt(rec.ends_at), enabled=rec.enabled)
            values = dict(change)
            if any(k in values for k in ("cron", "every_s", "at")):
                values = {"cron": None, "every_s": None, "at": None, **values}
            spec = replace(current, **values)
            now = self.clock.time()
            timing = any(k in change for k in ("cron", "every_s", "at", "timezone",
                                                "ends_at", "jitter_s"))
            resumed = spec.enabled and not rec.enabled
            new = replace(rec, content=spec.content, session=spec.session,
                          overlap=spec.overlap or rec.overlap,
                          missed=spec.missed or rec.missed, enabled=spec.enabled,
                          updated_at=now, version=rec.version + 1)
            if timing or resumed or "catchup_s" in change or "session" in change:
                limits = self.settings_of(agent)
                if not timing and rec.at is not None and rec.at <= now:
                    # A one-shot whose time passed: resuming it does not fire it again.
                    spec = replace(spec, at=None, every_s=None, cron=None)
                    checked, first = spec, None
                else:
                    checked, first = check_spec(spec, limits, now)
                fresh = self._record(checked, schedule_id=rec.id, agent=agent, first=first,
                                     now=now, by=rec.created_by, run=rec.created_run)
                new = replace(new, cron=fresh.cron, every_s=fresh.every_s,
                              at=fresh.at if checked.at is not None else rec.at,
                              timezone=fresh.timezone, jitter_s=fresh.jitter_s,
                              catchup_s=fresh.catchup_s, ends_at=fresh.ends_at,
                              session=fresh.session, overlap=fresh.overlap,
                              missed=fresh.missed)
                if timing or resumed:
                    new.next_fire_at = first
                    new.next_due_at = due_at(new, first)
            if resumed:
                new.paused_reason, new.failures, new.counted_after = None, 0, now
            if not spec.enabled and rec.enabled:
                new.paused_reason = "paused by request"
            if await self.store.replace_schedule(new, rec.version):
                self._wake.set()
                return new
        raise Conflict("the schedule kept changing; try again", code="schedule_changed",
                       retryable=True)

    async def delete(self, schedule_id: str) -> None:
        if not await self.store.delete_schedule(schedule_id):
            raise NotFound(f"schedule {schedule_id!r} not found", code="schedule_not_found")

    async def fires(self, schedule_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The schedule's latest claimed fire times, newest first."""
        await self.get(schedule_id)
        return [{"fire_at": iso(f.fire_at), "status": f.status, "reason": f.reason,
                 "run_id": f.run_id, "run_status": f.run_status, "at": iso(f.at)}
                for f in await self.store.schedule_fires(schedule_id, limit)]

    # -- firing ----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="agentd-schedules")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for bg in list(self._background):
            bg.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def wake(self) -> None:
        """Look for due schedules now (a schedule was created or changed)."""
        self._wake.set()

    async def _loop(self) -> None:
        ahead: float | None = None  # the due time to prepare for, once it is this near
        while True:
            self._wake.clear()
            before = self._progress()
            try:
                done = await self.fire_due(at=ahead)
                ahead = None
            except ShuttingDown:
                return
            except Exception:
                log.exception("firing schedules failed; trying again shortly")
                done = 0
                await self.clock.sleep(1.0)
            if done and self._progress() == before:
                # Due schedules that could not be moved on (each failure is logged):
                # not a busy loop.
                await self.clock.sleep(1.0)
            elif done >= self.batch:
                continue  # more are due
            try:
                upcoming = await self.store.next_schedule_due()
            except Exception:
                log.exception("could not read the next due schedule")
                upcoming = None
            cap = self.poll_s if not self.exclusive else 3600.0
            ahead = None
            delay = cap
            if upcoming is not None:
                delay = upcoming - self.clock.time()
                if delay <= cap and delay > 0 and self.lead_s > 0:
                    # Wake lead_s early: read and plan what is due then, commit at it.
                    ahead = upcoming
                    delay -= self.lead_s
                delay = min(max(delay, 0.0), cap)
            if delay > 0:
                await wait_event(self.clock, self._wake, delay)
                if self._wake.is_set():
                    ahead = None  # something changed: look again from now

    def _progress(self) -> int:
        f = self.figures
        return f["fired"] + f["skipped"] + f["missed"] + f["lost"] + f["moved"]

    async def fire_due(self, at: float | None = None) -> int:
        """Fire what is due now; how many schedules were due.

        ``at`` (a due time a little ahead, :attr:`lead_s`): what is due then is read
        and planned now, every schedule of it (up to :data:`MAX_AHEAD`), and fired in
        batches from ``at`` on, then what else is due. A burst's reads and planning
        are done by its time instead of between its commits. What changes meanwhile
        is safe: every claim is a compare-and-set on the schedule's fire time and on
        its version (an edit, a pause, a deletion, another node's fire: the planned
        fire writes nothing, and the schedule is planned again from the store).

        One indexed query finds up to ``batch`` due schedules; what each does is
        decided here at no cost in I/O in the usual case (its agent awake, its last
        fire's run not failed), and the fires commit in transactions of up to
        ``chunk`` fires (:meth:`Runs.send_many`), every fire still claimed on its
        own (module docstring). The rest (failures to count, catch-ups, skips) go
        one by one, concurrently. While a query fills ``batch``, the next follows:
        a burst (10,000 ``* * * * *`` schedules) is claimed as a whole before its
        runs are handed to the supervisor, so that they do not slow its claims."""
        deferred: list[Callable[[], object]] = []
        total = 0
        try:
            if at is not None and at > self.clock.time():
                # Not ahead: a fire whose previous run (in another session) is still
                # going, for its overlap (skip, interrupt) is decided at its time.
                due = [rec for rec in await self.store.due_schedules(at, MAX_AHEAD)
                       if not _overlaps(rec)]
                self.figures["passes"] += 1
                total += len(due)
                if due:
                    batch, others = await self._prepare(due, at)
                    messages = [self._message(fire) for fire in batch]
                    left = at - self.clock.time()
                    if left > 0:  # (the loop's clock and the wall's: 2 ms to spare)
                        await self.clock.sleep(left + 0.002)
                    await self._commit(batch, others, deferred, messages)
            while True:
                before = self._progress()
                now = self.clock.time()
                due = await self.store.due_schedules(now, self.batch)
                self.figures["passes"] += 1
                total += len(due)
                if due:
                    await self._fire_due(due, now, deferred)
                if len(due) < self.batch or self._progress() == before:
                    return total
        finally:
            for hand_over in deferred:
                hand_over()

    async def _fire_due(self, due: list[ScheduleRecord], now: float,
                        deferred: list[Callable[[], object]]) -> None:
        await self._commit(*await self._prepare(due, now), deferred)

    async def _prepare(self, due: list[ScheduleRecord], now: float
                       ) -> tuple[list[Fire], list[tuple[ScheduleRecord, Awaitable[bool | None]]]]:
        """What each due schedule does at ``now``: the fires that join a batch, and the
        other steps (not started: coroutines the caller awaits by :meth:`_commit`)."""
        limits: dict[str, ScheduleSettings | None] = {}
        batch: list[Fire] = []
        others: list[tuple[ScheduleRecord, Awaitable[bool | None]]] = []
        for rec in due:
            if rec.agent in limits:
                got = limits[rec.agent]
            else:
                # Sequentially: an awake agent is no I/O (no turn of the loop to wait).
                agent = await self._agent(rec.agent)
                got = limits[rec.agent] = None if agent is None else self.settings_of(agent)
            if got is None:
                self.figures["lost"] += 1  # its agent was deleted meanwhile
            elif rec.last_run_status == "failed" and (got.pause_after_failures
                                                      or got.backoff_s):
                others.append((rec, self._process(rec, now, got, batch)))
            else:
                others.extend(self._plan(rec, now, got, 0, batch))
        return batch, others

    async def _commit(self, batch: list[Fire],
                      others: list[tuple[ScheduleRecord, Awaitable[bool | None]]],
                      deferred: list[Callable[[], object]],
                      messages: list[Message] | None = None) -> None:
        """Carry out what :meth:`_prepare` planned: the other steps, then the fires,
        ``batch`` at a time (each commit's fires are claimed as it ends). ``messages``:
        the fires' messages, made beforehand."""
        if others:
            # (a schedule whose last fire failed may join the batch here)
            await asyncio.gather(*(self._guarded(rec, step) for rec, step in others))
        messages = [*(messages or ()), *map(self._message, batch[len(messages or ()):])]
        # A batch's chunks at once: on SQLite they commit in one turn of the loop (one
        # group commit), not one turn each behind every run's steps; on PostgreSQL
        # side by side (all take their sessions' locks in the same order).
        for start in range(0, len(batch), self.batch):
            end = min(start + self.batch, len(batch))
            await asyncio.gather(*(self._fire_many(
                batch[i:min(i + self.chunk, end)], messages[i:min(i + self.chunk, end)],
                deferred) for i in range(start, end, self.chunk)))

    async def _agent(self, name: str) -> AgentRecord | None:
        try:
            return await self.agents.get(name)
        except AgentNotFound:
            return None

    async def _guarded(self, rec: ScheduleRecord, step: Awaitable[bool | None]) -> None:
        """Await what a due schedule does (False: its fire joined a batch, where it
        is counted), counting its outcome."""
        try:
            if await step is not False:
                self.figures["moved"] += 1
        except (Moved, AgentNotFound):
            self.figures["lost"] += 1  # fired by another node, changed or deleted
        except ShuttingDown:
            pass
        except Exception:
            log.exception("schedule %s: could not fire", rec.id)

    async def _process(self, rec: ScheduleRecord, now: float, limits: ScheduleSettings,
                       batch: list[Fire]) -> bool | None:
        """A due schedule whose last fire's run failed: paused, backed off, or fired
        (False: its fire joined ``batch``)."""
        assert rec.next_fire_at is not None
        failures = await self._failures(rec, limits)
        if failures and limits.pause_after_failures and (
                failures[0] >= limits.pause_after_failures):
            count, _, error = failures
            reason = (f"paused after {count} consecutive failed fires"
                      + (f"; the last: {error}" if error else ""))
            await self.store.move_schedule(rec.id, expect_next=rec.next_fire_at,
                                           next_fire_at=rec.next_fire_at,
                                           next_due_at=rec.next_due_at, failures=count,
                                           pause=reason)
            log.warning("schedule %s of agent %s %s", rec.id, rec.agent, reason)
            return None
        if failures and limits.backoff_s > 0 and failures[1] is not None:
            count, finished_at, _ = failures
            wait = min(limits.backoff_s * 2 ** min(count - 1, 30), limits.backoff_max_s)
            until = finished_at + wait
            if now < until:
                t: float | None = rec.next_fire_at
                skipped = 0
                while t is not None and (due_at(rec, t) or 0.0) < until and skipped < MAX_WALK:
                    t = following(rec, t)
                    skipped += 1
                note = (rec.next_fire_at, (
                    f"{_times(skipped)} passed over from this one on: backing off "
                    f"{wait:g} s after {count} consecutive failed fire run(s) "
                    "(settings.schedules.backoff_s)"))
                await self.store.move_schedule(rec.id, expect_next=rec.next_fire_at,
                                               next_fire_at=t, next_due_at=due_at(rec, t),
                                               missed=skipped, failures=count,
                                               missed_note=note if skipped else None)
                self.figures["missed"] += skipped
                return None
        steps = self._plan(rec, now, limits, failures[0] if failures else 0, batch)
        if not steps:
            return False
        [(_, step)] = steps
        await step
        return None

    def _plan(self, rec: ScheduleRecord, now: float, limits: ScheduleSettings, count: int,
              batch: list[Fire]) -> list[tuple[ScheduleRecord, Awaitable[None]]]:
        """What a due schedule does now by its plan (:func:`plan_fires`): one fire
        joins ``batch`` (nothing to await); anything else is the step returned."""
        assert rec.next_fire_at is not None
        plan = plan_fires(rec, now, limits.grace_s)
        expect = rec.next_fire_at
        self.figures["missed"] += plan.missed
        reason = _missed_reason(rec, plan.missed, limits.grace_s) if plan.missed else None
        if not plan.fire:
            return [(rec, self.store.move_schedule(
                rec.id, expect_next=expect, next_fire_at=plan.after,
                next_due_at=due_at(rec, plan.after), missed=plan.missed, failures=count,
                missed_note=None if reason is None else (expect, reason)))]
        if len(plan.fire) > 1:
            return [(rec, self._catch_up(rec, plan, count, reason))]
        t = plan.fire[0]
        fire = Fire(rec=rec, t=t, expect=expect, after=plan.after, missed=plan.missed,
                     failures=count, overlap=rec.overlap,
                     key=rec.session or f"schedule:{rec.id}:{iso(t)}", missed_reason=reason,
                     expect_version=rec.version)
        step = self._before(fire)
        if step is not None:
            return [(rec, step)]
        batch.append(fire)
        return []

    async def _catch_up(self, rec: ScheduleRecord, plan: Plan, count: int,
                        reason: str | None) -> None:
        """Missed fire times fired in order: a burst queues up behind its first (which
        records the times missed before them, if any: ``reason``). The first goes on
        its own (its ``overlap`` may skip it or interrupt the run before it); the rest,
        queued behind it, in one commit (:meth:`_fire_many`: their claims move the
        schedule on from one to the next in the transaction that queues their runs).
        One at a time, each a commit of its own, a store whose commits take tens of
        milliseconds (PostgreSQL on a busy machine) fired fewer than came due while
        a daemon was killed and started again, fell behind, and at ``MAX_CATCHUP``
        behind dropped fire times (docs/benchmarks.md, issue 33)."""
        assert rec.next_fire_at is not None
        fires: list[Fire] = []
        expect, missed = rec.next_fire_at, plan.missed
        for i, t in enumerate(plan.fire):
            after = plan.fire[i + 1] if i + 1 < len(plan.fire) else plan.after
            fires.append(Fire(rec=rec, t=t, expect=expect, after=after, missed=missed,
                              failures=count, overlap="enqueue" if i > 0 else rec.overlap,
                              key=rec.session or f"schedule:{rec.id}:{iso(t)}", nth=i,
                              missed_reason=reason if i == 0 else None))
            if after is None:
                break
            expect, missed = after, 0
        first, rest = fires[0], fires[1:]
        step = self._before(first)
        if step is not None:
            await step
        else:
            [outcome] = await self.runs.send_many([self._message(first)])
            if isinstance(outcome, Exception):
                await self._after_refusal(first, outcome)
            else:
                self.figures["fired"] += 1
        deferred: list[Callable[[], object]] = []
        try:
            for i in range(0, len(rest), self.chunk):
                chunk = rest[i:i + self.chunk]
                await self._fire_many(chunk, [self._message(f) for f in chunk], deferred,
                                      burst=True)
        finally:
            for hand_over in deferred:
                hand_over()

    def _before(self, fire: Fire) -> Awaitable[None] | None:
        """A new session per fire: the previous fire's run is in another session, so
        ``overlap`` acts here: skip (the step returned), or interrupt that run."""
        rec = fire.rec
        if fire.overlap != "enqueue" and _overlaps(rec):
            if fire.overlap == "skip":
                return self._skip(fire, reason=f"run {rec.last_run_id} of the previous "
                                               "fire is still going (overlap: skip)")
            self._cancel_later(str(rec.last_run_id))
        return None

    def _message(self, fire: Fire) -> Message:
        """The fire's message, its claim committed with it (module docstring)."""
        rec = fire.rec
        prune = _prunes(fire)

        def claim(tx: Tx, accepted: Accepted) -> None:
            at = self.clock.time()
            move(tx, rec.id, expect_next=fire.expect, next_fire_at=fire.after,
                 next_due_at=due_at(rec, fire.after), now=at, missed=fire.missed,
                 fired_run=accepted.run.id, fired_at=fire.t, failures=fire.failures,
                 missed_note=fire.missed_note, expect_version=fire.expect_version)
            claim_fire(tx, rec.id, fire.t, run_id=accepted.run.id, status="fired",
                       reason=None, now=at, prune=prune)

        return Message(name=rec.agent, key=fire.key, content=rec.content,
                       mode=_MODE[fire.overlap],
                       origin={"schedule_id": rec.id, "fire_at": fire.t}, also=claim)

    async def _fire_many(self, fires: list[Fire], messages: list[Message],
                         deferred: list[Callable[[], object]], *, burst: bool = False
                         ) -> None:
        """Fires committed together, each claimed on its own (their runs handed to
        the supervisor by ``deferred``); the refused ones follow up (a skip, a fire
        time claimed before) one by one. ``burst``: successive fire times of one
        schedule (a catch-up), each moving it on from the one before: if one is
        refused, those after it cannot be claimed (the next pass fires them)."""
        def claim_all(tx: Tx, done: list[tuple[int, Accepted]]) -> None:
            # The chunk's claims set-wise (each fire's own ``also`` when the store
            # writes the chunk fire by fire instead).
            at = self.clock.time()
            claim_fires(tx, [FireClaim(
                schedule_id=fires[i].rec.id, expect_next=fires[i].expect,
                next_fire_at=fires[i].after, next_due_at=due_at(fires[i].rec, fires[i].after),
                missed=fires[i].missed, failures=fires[i].failures, run_id=accepted.run.id,
                fire_at=fires[i].t, prune=_prunes(fires[i]),
                missed_note=fires[i].missed_note, expect_version=fires[i].expect_version)
                for i, accepted in done], at)

        try:
            outcomes = await self.runs.send_many(messages, defer=deferred, also_many=claim_all,
                                                 start=True)
        except ShuttingDown:
            return
        follow: list[tuple[ScheduleRecord, Awaitable[None]]] = []
        for fire, outcome in zip(fires, outcomes, strict=True):
            if isinstance(outcome, Exception):
                if not burst:
                    follow.append((fire.rec, self._after_refusal(fire, outcome)))
                elif isinstance(outcome, Moved):
                    break  # (an earlier fire of the burst was refused: the next pass)
                else:
                    # In order: each follow-up (a skip) moves the schedule on to the
                    # next fire time, where the next one expects it.
                    await self._guarded(fire.rec, self._after_refusal(fire, outcome))
            else:
                self.figures["fired"] += 1
                self.figures["moved"] += 1
        if follow:
            await asyncio.gather(*(self._guarded(rec, step) for rec, step in follow))

    async def _after_refusal(self, fire: Fire, exc: Exception) -> None:
        """A fire whose message was refused (nothing of it written)."""
        if isinstance(exc, SessionBusy):
            await self._skip(fire, reason="the session's run is still going "
                                          "(overlap: skip)")
        elif isinstance(exc, AgentNotAccepting):
            await self._skip(fire, reason=exc.message)
        elif self.store.engine.is_unique_violation(exc):
            # Claimed already (cannot happen while next_fire_at only moves forward):
            # move past it rather than trying it for ever.
            log.warning("schedule %s: fire time %s was claimed before", fire.rec.id,
                        iso(fire.t))
            await self.store.move_schedule(fire.rec.id, expect_next=fire.expect,
                                           next_fire_at=fire.after,
                                           next_due_at=due_at(fire.rec, fire.after),
                                           missed=fire.missed, missed_note=fire.missed_note)
        else:
            raise exc

    async def _failures(self, rec: ScheduleRecord, limits: ScheduleSettings
                        ) -> tuple[int, float | None, str | None] | None:
        """Consecutive failed fire runs (newest first, still active ones passed over),
        when the latest fire's run failed; None otherwise (the usual case: no read)."""
        if rec.last_run_status != "failed" or not (limits.pause_after_failures
                                                   or limits.backoff_s):
            return None
        rows = await self.store.schedule_outcomes(
            rec.id, after=rec.counted_after,
            limit=max(limits.pause_after_failures, 1) + 32)
        count, finished, error = 0, None, None
        for status, finished_at, err in rows:
            if status in _ACTIVE:
                continue
            if status != "failed":
                break
            if count == 0:
                finished = finished_at
                error = _error_text(err)
            count += 1
        return (count, finished, error) if count else None

    async def _skip(self, fire: Fire, *, reason: str) -> None:
        await self.store.move_schedule(fire.rec.id, expect_next=fire.expect,
                                       next_fire_at=fire.after,
                                       next_due_at=due_at(fire.rec, fire.after),
                                       missed=fire.missed, skip=(fire.t, reason),
                                       missed_note=fire.missed_note)
        self.figures["skipped"] += 1

    def _cancel_later(self, run_id: str) -> None:
        async def cancel() -> None:
            try:
                await self.runs.cancel(run_id)
            except Exception:
                log.warning("could not interrupt run %s", run_id, exc_info=True)

        task = asyncio.create_task(cancel())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _overlaps(rec: ScheduleRecord) -> bool:
    """Whether the schedule's next fire, in a new session, has the previous fire's run
    still going beside it (what ``overlap`` then says: :meth:`Schedules._before`)."""
    return (rec.session is None and rec.overlap != "enqueue" and bool(rec.last_run_id)
            and rec.last_run_status in _ACTIVE)


def _times(count: int) -> str:
    return f"{count} fire time{'s' if count != 1 else ''}"


def _missed_reason(rec: ScheduleRecord, count: int, grace_s: float) -> str:
    """Why ``count`` fire times from the schedule's next one on were not fired."""
    if rec.missed == "all":
        why = (f"older than the catch-up window (catchup_s: {rec.catchup_s:g} s) or "
               f"more than {MAX_CATCHUP} behind")
    elif rec.missed == "once":
        why = "missed: once fires only the latest"
    else:
        why = (f"missed: skip fires only the latest, and only within grace_s "
               f"({grace_s:g} s) of its time")
    return (f"{_times(count)} missed from this one on (the daemon was down or behind): "
            f"{why}")


def _prunes(fire: Fire) -> bool:
    """Whether the fire prunes its schedule's old claims (one in 32). A burst must not
    step over the fire that does (Fire.nth)."""
    return (fire.rec.fires + fire.nth) % 32 == 31


def _error_text(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        err = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200]
    if isinstance(err, dict):
        return f"{err.get('code', 'error')}: {str(err.get('message', ''))[:200]}"
    return str(err)[:200]
