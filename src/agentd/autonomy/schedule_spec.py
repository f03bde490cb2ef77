"""A schedule's definition as a client or a tool gives it (:class:`ScheduleIn`), its
check (:func:`check_spec`: each field refused with its name, and the first fire time)
and the API's form of a stored schedule (:func:`schedule_dict`).
:mod:`agentd.autonomy.schedules` fires them."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from agentd.autonomy._cron import check_cron, check_timezone, cron_after, min_gap
from agentd.errors import InvalidInput
from agentd.runtime.session_ops import check_session_key
from agentd.settings.schedules import MISSED, OVERLAP, ScheduleSettings
from agentd.store.records import iso
from agentd.store.schedules import ScheduleRecord

__all__ = ["FIELDS", "MAX_CONTENT", "MAX_NEXT", "MAX_SPAN_S", "ScheduleIn", "check_spec",
           "schedule_dict"]

#: The longest message a schedule sends.
MAX_CONTENT = 100_000
#: Fire times ``next`` may list.
MAX_NEXT = 100
#: The longest interval, catch-up window, jitter: a year.
MAX_SPAN_S = 366 * 86_400.0

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


#: The fields of a definition (what an update may change).
FIELDS = frozenset(f.name for f in fields(ScheduleIn))


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


# complexity: one check per field of a schedule, each raising InvalidInput naming
# it, in the order a client reads the errors; the fields depend on each other
# (trigger, timezone, window).
def check_spec(spec: ScheduleIn, limits: ScheduleSettings, now: float
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
