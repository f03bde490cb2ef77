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
n``) and the fires of what it returns, concurrently (their commits group). It then
sleeps until the next due time, or until a schedule is created or changed here
(on a shared PostgreSQL database, at most ``poll_s``: other nodes change schedules
too).

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
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from agentd.autonomy._cron import (
    check_cron,
    check_timezone,
    cron_after,
    cron_before,
    min_gap,
)
from agentd.autonomy.schedule_settings import MISSED, OVERLAP, ScheduleSettings
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
from agentd.runtime._session_ops import check_session_key
from agentd.store._rows import new_id
from agentd.store._schedules import Moved, ScheduleRecord, claim_fire, move
from agentd.store.records import AgentRecord, iso

if TYPE_CHECKING:
    from agentd.runtime.agents import Agents
    from agentd.runtime.runs import Runs
    from agentd.store import Store
    from agentd.store._engine import Tx
    from agentd.store._log import Accepted

__all__ = ["MAX_CATCHUP", "MAX_CONTENT", "MAX_NEXT", "ScheduleIn", "Schedules",
           "schedule_dict"]

log = logging.getLogger(__name__)

#: Missed fire times ``missed: all`` fires at most (the latest ones).
MAX_CATCHUP = 100
#: The longest message a schedule sends.
MAX_CONTENT = 100_000
#: Fire times ``next`` may list.
MAX_NEXT = 100
#: The longest interval, catch-up window, jitter: a year.
MAX_SPAN_S = 366 * 86_400.0
#: Cron steps a catch-up walks before jumping to the latest fire time.
_MAX_WALK = 10_000
_ACTIVE = ("queued", "running", "waiting_approval")
_MODE = {"skip": "reject", "enqueue": "enqueue", "interrupt": "interrupt"}


@dataclass(frozen=True, kw_only=True)
class ScheduleIn:
    """A schedule's definition as a client or a tool gives it.

    Exactly one of ``cron``, ``every_s`` and ``at``. A naive ``at`` / ``ends_at`` is
    a wall-clock time in ``timezone``. ``session`` None: a new session per fire.
    ``overlap``, ``missed``, ``catchup_s`` None: the agent's defaults
    (``settings.schedules``).
    """

    content: str
    cron: str | None = None
    every_s: float | None = None
    at: datetime | None = None
    timezone: str = "UTC"
    session: str | None = None
    jitter_s: float = 0.0
    overlap: str | None = None
    missed: str | None = None
    catchup_s: float | None = None
    ends_at: datetime | None = None
    enabled: bool = True


_FIELDS = frozenset(f.name for f in fields(ScheduleIn))


def schedule_dict(rec: ScheduleRecord, next_times: list[float] | None = None
                  ) -> dict[str, Any]:
    """The API's form of a schedule (times as ISO 8601 UTC)."""
    out: dict[str, Any] = {
        "id": rec.id, "agent": rec.agent, "cron": rec.cron, "every_s": rec.every_s,
        "at": iso(rec.at), "timezone": rec.timezone, "session": rec.session,
        "content": rec.content, "jitter_s": rec.jitter_s, "overlap": rec.overlap,
        "missed": rec.missed, "catchup_s": rec.catchup_s, "ends_at": iso(rec.ends_at),
        "enabled": rec.enabled, "paused_reason": rec.paused_reason,
        "next_fire_at": iso(rec.next_fire_at) if rec.enabled else None,
        "last_fire_at": iso(rec.last_fire_at), "last_run_id": rec.last_run_id,
        "fires": rec.fires, "missed_count": rec.missed_count,
        "skipped_count": rec.skipped_count, "failures": rec.failures,
        "created_by": rec.created_by, "created_run": rec.created_run,
        "created_at": iso(rec.created_at), "updated_at": iso(rec.updated_at),
        "version": rec.version,
    }
    if next_times is not None:
        out["next"] = [iso(t) for t in next_times]
    return out


def jitter_of(rec: ScheduleRecord, fire_at: float) -> float:
    """The delay of a fire time: the same on every node, under ``jitter_s``."""
    if rec.jitter_s <= 0:
        return 0.0
    digest = hashlib.blake2b(f"{rec.id}:{fire_at!r}".encode(), digest_size=8).digest()
    return rec.jitter_s * (int.from_bytes(digest, "big") / 2**64)


def following(rec: ScheduleRecord, t: float) -> float | None:
    """The fire time after ``t`` (None: the schedule is finished)."""
    if rec.at is not None:
        nxt: float | None = None
    elif rec.every_s is not None:
        nxt = t + rec.every_s
    else:
        assert rec.cron is not None
        nxt = cron_after(rec.cron, check_timezone(rec.timezone), t)
    if nxt is not None and rec.ends_at is not None and nxt > rec.ends_at:
        return None
    return nxt


def _due(rec: ScheduleRecord, t: float | None) -> float | None:
    return None if t is None else t + jitter_of(rec, t)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one pass does with a due schedule."""

    fire: list[float]
    missed: int
    #: The first fire time not due yet (None: finished).
    after: float | None


def plan_fires(rec: ScheduleRecord, now: float, grace_s: float) -> _Plan:
    """The due fire times of ``rec`` at ``now`` and which of them to fire, by its
    ``missed`` policy (see the module's docstring)."""
    start = rec.next_fire_at
    assert start is not None
    horizon = now - rec.catchup_s
    recent: deque[float] = deque(maxlen=MAX_CATCHUP)
    dropped = 0
    t: float | None = start
    if rec.every_s is not None and rec.at is None:
        # Arithmetic: an interval schedule may be millions of periods behind.
        e = rec.every_s
        last = math.floor((now - start) / e)
        first_in = max(0, math.ceil((horizon - start) / e))
        lo = max(first_in, last - MAX_CATCHUP + 1)
        dropped = lo
        for i in range(lo, last + 1):
            ti = start + i * e
            if rec.ends_at is not None and ti > rec.ends_at:
                break
            recent.append(ti)
        nxt = start + (last + 1) * e
        t = None if rec.ends_at is not None and nxt > rec.ends_at else nxt
    else:
        steps = 0
        while t is not None and t <= now:
            if t >= horizon:
                if len(recent) == MAX_CATCHUP:
                    dropped += 1
                recent.append(t)
            else:
                dropped += 1
            t = following(rec, t)
            steps += 1
            if steps >= _MAX_WALK and t is not None and t <= now:
                # Far behind (a very long outage): only the latest fire time counts.
                assert rec.cron is not None
                latest = cron_before(rec.cron, check_timezone(rec.timezone), now)
                recent.clear()
                if latest is not None and latest >= max(t, horizon):
                    recent.append(latest)
                t = following(rec, now)
                break
    # A jittered time not due yet waits for the next pass.
    while recent and (_due(rec, recent[-1]) or 0.0) > now:
        t = recent.pop()
    times = list(recent)
    if rec.missed == "all":
        fire = times
    elif rec.missed == "once":
        fire = times[-1:]
    else:
        fire = [x for x in times[-1:] if now - (_due(rec, x) or x) <= grace_s]
    return _Plan(fire=fire, missed=dropped + len(times) - len(fire), after=t)


class Schedules:
    """Schedules of every agent, and the task that fires them (module docstring).

    Args:
        exclusive: the store is this daemon's alone (SQLite): nobody else changes
            schedules, so the task can sleep until the next due time.
        poll_s: on a shared store, how long the task sleeps at most.
        batch: due schedules one query returns (and fired concurrently).
        clock: the time decisions are made at (tests give their own).
    """

    def __init__(self, store: Store, *, agents: Agents, runs: Runs, exclusive: bool,
                 poll_s: float = 1.0, batch: int = 512,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.agents = agents
        self.runs = runs
        self.exclusive = exclusive
        self.poll_s = poll_s
        self.batch = batch
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

    def _check(self, spec: ScheduleIn, limits: ScheduleSettings, now: float
               ) -> tuple[ScheduleIn, float | None]:
        """``spec`` checked and normalised, and its first fire time; InvalidInput
        naming the field (``body.<field>``)."""
        triggers = [n for n in ("cron", "every_s", "at") if getattr(spec, n) is not None]
        if len(triggers) != 1:
            raise InvalidInput("give exactly one of cron, every_s or at"
                               + (f" (got {', '.join(triggers)})" if triggers else ""),
                               field=f"body.{triggers[1] if len(triggers) > 1 else 'cron'}")
        try:
            zone = check_timezone(spec.timezone)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="body.timezone") from None
        if not spec.content or len(spec.content) > MAX_CONTENT:
            raise InvalidInput(f"content must be 1-{MAX_CONTENT} characters",
                               field="body.content")
        if spec.session is not None:
            try:
                check_session_key(spec.session)
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field="body.session") from None
        overlap = spec.overlap or limits.overlap
        if overlap not in OVERLAP:
            raise InvalidInput(f"overlap must be one of {', '.join(OVERLAP)}",
                               field="body.overlap")
        missed = spec.missed or limits.missed
        if missed not in MISSED:
            raise InvalidInput(f"missed must be one of {', '.join(MISSED)}",
                               field="body.missed")
        catchup = limits.catchup_s if spec.catchup_s is None else spec.catchup_s
        if not 0 <= catchup <= MAX_SPAN_S:
            raise InvalidInput(f"catchup_s must be 0-{MAX_SPAN_S:.0f}", field="body.catchup_s")
        if not 0 <= spec.jitter_s <= 3600:
            raise InvalidInput("jitter_s must be 0-3600", field="body.jitter_s")

        def epoch(value: datetime) -> float:
            return (value.replace(tzinfo=zone) if value.tzinfo is None else value).timestamp()

        ends = None if spec.ends_at is None else epoch(spec.ends_at)
        if ends is not None and ends <= now:
            raise InvalidInput("ends_at is in the past", field="body.ends_at")
        first: float | None
        cron = None
        if spec.cron is not None:
            try:
                cron = check_cron(spec.cron)
            except ValueError as exc:
                raise InvalidInput(str(exc), field="body.cron") from None
            gap = min_gap(cron, zone, now)
            if gap < limits.min_interval_s:
                raise InvalidInput(
                    f"cron expression {cron!r} fires every {gap:.0f} s, more often than "
                    f"the agent's minimum interval of {limits.min_interval_s:g} s "
                    "(settings.schedules.min_interval_s)", field="body.cron")
            if spec.jitter_s >= gap:
                raise InvalidInput("jitter_s must be below the time between fires",
                                   field="body.jitter_s")
            first = cron_after(cron, zone, now)
        elif spec.every_s is not None:
            if not math.isfinite(spec.every_s) or spec.every_s > MAX_SPAN_S:
                raise InvalidInput(f"every_s must be at most {MAX_SPAN_S:.0f}",
                                   field="body.every_s")
            if spec.every_s < limits.min_interval_s:
                raise InvalidInput(
                    f"every_s {spec.every_s:g} is below the agent's minimum interval of "
                    f"{limits.min_interval_s:g} s (settings.schedules.min_interval_s)",
                    field="body.every_s")
            if spec.jitter_s >= spec.every_s:
                raise InvalidInput("jitter_s must be below every_s", field="body.jitter_s")
            first = now + spec.every_s
        else:
            assert spec.at is not None
            first = epoch(spec.at)
            if first <= now:
                raise InvalidInput("at is in the past", field="body.at")
        if first is not None and ends is not None and first > ends:
            raise InvalidInput("the schedule would end before it first fires",
                               field="body.ends_at")
        normal = replace(spec, cron=cron, overlap=overlap, missed=missed, catchup_s=catchup)
        return normal, first

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
        rec.next_due_at = _due(rec, first)
        return rec

    async def create(self, agent_name: str, spec: ScheduleIn, *, by: str,
                     run: str | None = None, schedule_id: str | None = None
                     ) -> ScheduleRecord:
        """A new schedule of the agent (AgentNotFound; InvalidInput naming the field;
        Conflict ``schedule_limit``). ``run``: the run whose tool creates it (its
        limit is ``tool_max_per_agent``)."""
        agent = await self.agents.get(agent_name)
        limits = self.settings_of(agent)
        now = self.clock()
        spec, first = self._check(spec, limits, now)
        rec = self._record(spec, schedule_id=schedule_id or new_id("sch"), agent=agent,
                           first=first, now=now, by=by, run=run)
        made = await self.store.insert_schedule(
            rec, max_per_agent=limits.max_per_agent,
            max_by_tools=limits.tool_max_per_agent if run is not None else None)
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
                       limit: int = 100) -> list[ScheduleRecord]:
        if agent is not None:
            return await self.of_agent(agent, after=after, limit=limit)
        return await self.store.list_schedules(after=after, limit=limit)

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
        unknown = set(change) - _FIELDS
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
            now = self.clock()
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
                    checked, first = self._check(spec, limits, now)
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
                    new.next_due_at = _due(new, first)
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
        while True:
            self._wake.clear()
            before = self._progress()
            try:
                done = await self.fire_due()
            except ShuttingDown:
                return
            except Exception:
                log.exception("firing schedules failed; trying again shortly")
                done = 0
                await asyncio.sleep(1.0)
            if done and self._progress() == before:
                # Due schedules that could not be moved on (each failure is logged):
                # not a busy loop.
                await asyncio.sleep(1.0)
            elif done >= self.batch:
                continue  # more are due
            try:
                upcoming = await self.store.next_schedule_due()
            except Exception:
                log.exception("could not read the next due schedule")
                upcoming = None
            cap = self.poll_s if not self.exclusive else 3600.0
            delay = cap if upcoming is None else min(max(upcoming - self.clock(), 0.0), cap)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    def _progress(self) -> int:
        f = self.figures
        return f["fired"] + f["skipped"] + f["missed"] + f["lost"] + f["moved"]

    async def fire_due(self) -> int:
        """Fire what is due now (one query, at most ``batch`` schedules); how many
        schedules were due."""
        now = self.clock()
        due = await self.store.due_schedules(now, self.batch)
        self.figures["passes"] += 1
        if due:
            await asyncio.gather(*(self._handle(rec, now) for rec in due))
        return len(due)

    async def _handle(self, rec: ScheduleRecord, now: float) -> None:
        try:
            await self._process(rec, now)
            self.figures["moved"] += 1
        except (Moved, AgentNotFound):
            self.figures["lost"] += 1  # fired by another node, changed or deleted
        except ShuttingDown:
            pass
        except Exception:
            log.exception("schedule %s: could not fire", rec.id)

    async def _process(self, rec: ScheduleRecord, now: float) -> None:
        assert rec.next_fire_at is not None
        agent = await self.agents.get(rec.agent)
        limits = self.settings_of(agent)
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
            return
        if failures and limits.backoff_s > 0 and failures[1] is not None:
            count, finished_at, _ = failures
            wait = min(limits.backoff_s * 2 ** min(count - 1, 30), limits.backoff_max_s)
            until = finished_at + wait
            if now < until:
                t: float | None = rec.next_fire_at
                skipped = 0
                while t is not None and (_due(rec, t) or 0.0) < until and skipped < _MAX_WALK:
                    t = following(rec, t)
                    skipped += 1
                await self.store.move_schedule(rec.id, expect_next=rec.next_fire_at,
                                               next_fire_at=t, next_due_at=_due(rec, t),
                                               missed=skipped, failures=count)
                self.figures["missed"] += skipped
                return
        count = failures[0] if failures else 0
        plan = plan_fires(rec, now, limits.grace_s)
        expect = rec.next_fire_at
        missed = plan.missed
        self.figures["missed"] += missed
        if not plan.fire:
            await self.store.move_schedule(rec.id, expect_next=expect,
                                           next_fire_at=plan.after,
                                           next_due_at=_due(rec, plan.after),
                                           missed=missed, failures=count)
            return
        for i, t in enumerate(plan.fire):
            after = plan.fire[i + 1] if i + 1 < len(plan.fire) else plan.after
            # A burst of missed fire times queues up behind its first.
            await self._fire(rec, t, expect=expect, after=after, missed=missed,
                             failures=count, catching_up=i > 0, nth=i)
            if after is None:
                break
            expect, missed = after, 0

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

    async def _fire(self, rec: ScheduleRecord, t: float, *, expect: float,
                    after: float | None, missed: int, failures: int,
                    catching_up: bool = False, nth: int = 0) -> None:
        key = rec.session or f"schedule:{rec.id}:{iso(t)}"
        overlap = "enqueue" if catching_up else rec.overlap
        if (rec.session is None and overlap != "enqueue" and rec.last_run_id
                and rec.last_run_status in _ACTIVE):
            # A new session per fire: the previous fire's run is in another session.
            if overlap == "skip":
                await self._skip(rec, t, expect=expect, after=after, missed=missed,
                                 reason=f"run {rec.last_run_id} of the previous fire "
                                        "is still going (overlap: skip)")
                return
            self._cancel_later(rec.last_run_id)
        # ``rec.fires`` is as read before this pass: the ``nth`` fire of a burst counts
        # on from it (a burst must not step over the fire that prunes old claims).
        prune = (rec.fires + nth) % 32 == 31

        def claim(tx: Tx, accepted: Accepted) -> None:
            at = time.time()
            move(tx, rec.id, expect_next=expect, next_fire_at=after,
                 next_due_at=_due(rec, after), now=at, missed=missed,
                 fired_run=accepted.run.id, fired_at=t, failures=failures)
            claim_fire(tx, rec.id, t, run_id=accepted.run.id, status="fired", reason=None,
                       now=at, prune=prune)

        try:
            await self.runs.send(rec.agent, key, rec.content, mode=_MODE[overlap],
                                 origin={"schedule_id": rec.id, "fire_at": t}, also=claim)
        except SessionBusy:
            await self._skip(rec, t, expect=expect, after=after, missed=missed,
                             reason="the session's run is still going (overlap: skip)")
            return
        except AgentNotAccepting as exc:
            await self._skip(rec, t, expect=expect, after=after, missed=missed,
                             reason=exc.message)
            return
        except Exception as exc:
            if not self.store.engine.is_unique_violation(exc):
                raise
            # Claimed already (cannot happen while next_fire_at only moves forward):
            # move past it rather than trying it for ever.
            log.warning("schedule %s: fire time %s was claimed before", rec.id, iso(t))
            await self.store.move_schedule(rec.id, expect_next=expect, next_fire_at=after,
                                           next_due_at=_due(rec, after), missed=missed)
            return
        self.figures["fired"] += 1

    async def _skip(self, rec: ScheduleRecord, t: float, *, expect: float,
                    after: float | None, missed: int, reason: str) -> None:
        await self.store.move_schedule(rec.id, expect_next=expect, next_fire_at=after,
                                       next_due_at=_due(rec, after), missed=missed,
                                       skip=(t, reason))
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
