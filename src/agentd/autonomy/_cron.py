"""Fire times: 5-field cron expressions in an IANA time zone, fixed intervals.

Cron parsing and iteration is :mod:`cronsim` (healthchecks.io's, no dependencies),
which handles daylight-saving changes the way Debian's cron does: a job at a fixed
time inside the hour skipped by a spring-forward runs once, right after the change;
one inside the hour repeated by a fall-back runs once (the first pass). Jobs that
run more often than hourly are scheduled in wall-clock time. Here every fire time
is an epoch second, and the next one is always strictly after the one given, so a
schedule never fires twice for a repeated wall-clock hour and never goes backwards.
"""

from __future__ import annotations

import functools
import itertools
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["check_cron", "check_timezone", "cron_after", "cron_before", "min_gap"]

#: Steps tried to get past a wall-clock time that repeats (a fall-back hour).
_MAX_STEPS = 1000


@functools.lru_cache(maxsize=512)
def check_timezone(name: str) -> ZoneInfo:
    """The zone named ``name`` (an IANA name such as ``Europe/Berlin``); ValueError
    when there is no such zone."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as "
                         "'Europe/Berlin' or 'UTC')") from None


def check_cron(expr: str) -> str:
    """``expr`` normalised (single spaces); ValueError naming the problem when it is not
    a 5-field cron expression that ever fires."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression {expr!r} must have 5 fields (minute hour "
                         f"day-of-month month day-of-week), not {len(fields)}")
    normal = " ".join(fields)
    try:
        it = CronSim(normal, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")))
        next(it)
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
    except StopIteration:
        raise ValueError(f"cron expression {expr!r} never fires") from None
    return normal


def cron_after(expr: str, zone: ZoneInfo, after: float) -> float | None:
    """The first fire time of ``expr`` in ``zone`` strictly after epoch ``after``
    (None: it never fires again)."""
    start = datetime.fromtimestamp(int(after), zone)
    it = CronSim(expr, start)
    for _ in range(_MAX_STEPS):
        try:
            when = next(it).timestamp()
        except StopIteration:
            return None
        if when > after:
            return when
    return None


def cron_before(expr: str, zone: ZoneInfo, at: float) -> float | None:
    """The last fire time of ``expr`` in ``zone`` at or before epoch ``at``."""
    it = CronSim(expr, datetime.fromtimestamp(int(at) + 1, zone), reverse=True)
    for _ in range(_MAX_STEPS):
        try:
            when = next(it).timestamp()
        except StopIteration:
            return None
        if when <= at:
            return when
    return None


def min_gap(expr: str, zone: ZoneInfo, after: float, count: int = 24) -> float:
    """The shortest time between two of the next ``count`` fire times (how often the
    expression fires at most, seen from ``after``)."""
    times: list[float] = []
    at = after
    for _ in range(count):
        nxt = cron_after(expr, zone, at)
        if nxt is None:
            break
        times.append(nxt)
        at = nxt
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return min(gaps) if gaps else float("inf")
