"""When a schedule fires: the times after a given one, jitter, and which of the due
fire times one pass fires (the ``missed`` policy). Pure functions of a schedule's row
and the time; :mod:`agentd.autonomy.schedules` acts on them."""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass

from agentd.autonomy._cron import check_timezone, cron_after, cron_before
from agentd.store.schedules import ScheduleRecord

__all__ = ["MAX_CATCHUP", "MAX_WALK", "Fire", "Plan", "due_at", "following", "jitter_of",
           "plan_fires"]

#: Missed fire times ``missed: all`` fires at most (the latest ones).
MAX_CATCHUP = 100
#: Cron steps a catch-up walks before jumping to the latest fire time.
MAX_WALK = 10_000


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


def due_at(rec: ScheduleRecord, t: float | None) -> float | None:
    return None if t is None else t + jitter_of(rec, t)


@dataclass(frozen=True, kw_only=True, slots=True)
class Fire:
    """One fire time about to be fired."""

    rec: ScheduleRecord
    t: float
    #: Where the schedule must still be (compare-and-set) and where it moves on to.
    expect: float
    after: float | None
    missed: int
    failures: int
    overlap: str
    key: str
    #: Its place in a burst of missed fire times (0: the first or only one): the
    #: schedule's ``fires`` was read before the pass, so a burst counts on from it.
    nth: int = 0
    #: Why ``missed`` fire times before it were not fired (recorded with its claim).
    missed_reason: str | None = None
    #: The schedule's version it was planned from (compare-and-set with the fire time:
    #: an edit since then, its content say, and the fire writes nothing); None: the
    #: fire time alone (a burst of missed times moves the version on as it goes).
    expect_version: int | None = None

    @property
    def missed_note(self) -> tuple[float, str] | None:
        """The claim recording its missed fire times: the first of them (where the
        schedule was, ``expect``: never fired when any was missed) and why."""
        if not self.missed or self.missed_reason is None:
            return None
        return self.expect, self.missed_reason


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass does with a due schedule."""

    fire: list[float]
    missed: int
    #: The first fire time not due yet (None: finished).
    after: float | None


# complexity: one walk of the due fire times that applies each `missed` policy in place;
# split per policy, each part would walk them again.
def plan_fires(rec: ScheduleRecord, now: float, grace_s: float) -> Plan:
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
            if steps >= MAX_WALK and t is not None and t <= now:
                # Far behind (a very long outage): only the latest fire time counts.
                assert rec.cron is not None
                latest = cron_before(rec.cron, check_timezone(rec.timezone), now)
                recent.clear()
                if latest is not None and latest >= max(t, horizon):
                    recent.append(latest)
                t = following(rec, now)
                break
    # A jittered time not due yet waits for the next pass.
    while recent and (due_at(rec, recent[-1]) or 0.0) > now:
        t = recent.pop()
    times = list(recent)
    if rec.missed == "all":
        fire = times
    elif rec.missed == "once":
        fire = times[-1:]
    else:
        fire = [x for x in times[-1:] if now - (due_at(rec, x) or x) <= grace_s]
    return Plan(fire=fire, missed=dropped + len(times) - len(fire), after=t)
