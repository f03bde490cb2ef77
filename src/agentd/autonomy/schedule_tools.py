"""The agent's schedule tools: create, list and delete its OWN schedules.

They use the ``schedules`` service (``ctx.service(Schedules)``, a
:class:`agentd.autonomy.schedules.Schedules`). The arguments come from the model and
are treated as hostile: every schedule is the calling agent's (an id of another
agent's schedule is "not found", never acted on), the agent's limits apply
(``settings.schedules``: ``max_per_agent``, ``tool_max_per_agent``,
``min_interval_s``), and a run a schedule started (``ToolContext.origin`` has a
``schedule_id``, which a subtask or call it starts inherits, at any depth) may not
create schedules unless ``allow_from_schedule`` is set, so a scheduled run cannot
multiply itself.

A schedule's content becomes the message of runs that start later, in a session that
may be a channel's chat (``telegram:<chat>``, whose replies leave the daemon): its
runs would start clean, whatever the session that made it had read. So
``schedule_create`` from a tainted session is asked about (or denied) by the policy's
taint rule (:func:`schedules_to`), the approval naming where the runs answer; once a
person approved its content, its runs are as a schedule that person made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentd.autonomy.schedules import Schedules
from agentd.channels import channel_of
from agentd.errors import ToolError
from agentd.store.records import iso
from agentd.tools.base import Tool, ToolContext, acting, tool

if TYPE_CHECKING:
    from agentd.store.schedules import ScheduleRecord

__all__ = ["SCHEDULE_TOOLS", "schedule_create", "schedule_delete", "schedule_list",
           "schedules_to"]


def _service(ctx: ToolContext) -> Schedules:
    service = ctx.service(Schedules)
    if service is None or not ctx.agent_id:
        raise ToolError("schedules are not available here", code="schedules_unavailable")
    return service


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise ToolError(f"{name} must be an ISO 8601 time such as 2030-01-31T09:00:00 "
                        "(in the schedule's timezone unless it gives an offset)",
                        code="invalid_input") from None


def _line(rec: ScheduleRecord) -> str:
    when = (f"cron {rec.cron!r} ({rec.timezone})" if rec.cron else
            f"every {rec.every_s:g} s" if rec.every_s else f"at {iso(rec.at)}")
    state = "" if rec.enabled else f" PAUSED ({rec.paused_reason or 'paused'})"
    target = f"session {rec.session!r}" if rec.session else "a new session each time"
    text = rec.content if len(rec.content) <= 80 else rec.content[:77] + "..."
    return (f"{rec.id}: {when} -> {target}, next {iso(rec.next_fire_at) or 'never'}"
            f"{state}: {text!r}")


def schedules_to(arguments: Mapping[str, Any], session: str) -> str:
    """What a ``schedule_create`` call sends on (``Tool.sends_out_to``): always
    something (its content drives runs that start later, clean), and the channel's
    chat when the runs' session is one (their replies are delivered there)."""
    each = arguments.get("new_session_each_time") is True
    target = None if each else (arguments.get("session") or session)
    base = "schedules its content as the message of runs that start later"
    if target is None:
        return f"{base}, each in a new session"
    where = channel_of(target)
    if where is None:
        return f"{base}, in session {target!r}"
    return (f"{base}, in session {target!r}, whose replies are sent to {where}, "
            "outside the daemon")


@tool(idempotent=True, sends_out_to=schedules_to)
async def schedule_create(content: str, ctx: ToolContext, cron: str | None = None,
                          every_s: float | None = None, at: str | None = None,
                          timezone: str = "UTC", session: str | None = None,
                          new_session_each_time: bool = False,
                          ends_at: str | None = None) -> str:
    """Schedule a message to yourself: it starts a run of yours when it fires.

    Give exactly one of cron, every_s or at.

    Args:
        content: the message you will receive each time it fires
        cron: a 5-field cron expression (minute hour day-of-month month day-of-week),
            e.g. "0 9 * * 1-5" for 09:00 on weekdays, in timezone
        every_s: fire every this many seconds
        at: fire once at this ISO 8601 time (in timezone unless it has an offset)
        timezone: an IANA time zone name such as "Europe/Berlin" (default UTC)
        session: the session key it fires into (default: this session)
        new_session_each_time: fire into a new session each time instead
        ends_at: stop firing after this ISO 8601 time
    """
    from agentd.autonomy.schedules import ScheduleIn

    service = _service(ctx)
    if ctx.origin.get("schedule_id") is not None:
        agent = await acting(service.agents.get(ctx.agent))
        if not service.settings_of(agent).allow_from_schedule:
            raise ToolError("a run started by a schedule may not create schedules "
                            "(settings.schedules.allow_from_schedule is off)",
                            code="schedule_from_schedule")
    spec = ScheduleIn(content=content, cron=cron, every_s=every_s, at=_when(at, "at"),
                      timezone=timezone,
                      session=None if new_session_each_time else (session or ctx.session),
                      ends_at=_when(ends_at, "ends_at"))
    # The id is derived from the call's effect id: a call re-run after a crash finds
    # the schedule it made instead of making a second one.
    schedule_id = "sch_t" + hashlib.blake2b(ctx.effect_id.encode(),
                                            digest_size=12).hexdigest()
    existing = await service.store.get_schedule(schedule_id)
    if existing is not None and existing.agent_id == ctx.agent_id:
        return f"scheduled (already): {_line(existing)}"
    try:
        rec = await acting(service.create(ctx.agent, spec, by=f"agent:{ctx.agent}",
                                           run=ctx.run_id, schedule_id=schedule_id))
    except ToolError as exc:
        raise ToolError(exc.message.replace("body.", ""), code=exc.code) from None
    return f"scheduled: {_line(rec)}"


@tool(read_only=True)
async def schedule_list(ctx: ToolContext) -> str:
    """List your schedules (id, timing, target, next fire time)."""
    service = _service(ctx)
    records = await acting(service.of_agent(ctx.agent, limit=1000))
    return ("\n".join(f"- {_line(r)}" for r in records) if records
            else "you have no schedules")


@tool
async def schedule_delete(schedule_id: str, ctx: ToolContext) -> str:
    """Delete one of your schedules.

    Args:
        schedule_id: the schedule's id (sch_...), as schedule_list shows it
    """
    service = _service(ctx)
    if not schedule_id or len(schedule_id) > 64:
        raise ToolError("no such schedule of yours", code="schedule_not_found")
    rec = await service.store.get_schedule(schedule_id)
    if rec is None or rec.agent_id != ctx.agent_id:
        # Another agent's schedule is not acted on, nor said to exist.
        raise ToolError(f"no schedule {schedule_id!r} of yours", code="schedule_not_found")
    await acting(service.delete(schedule_id))
    return f"deleted schedule {schedule_id}"


SCHEDULE_TOOLS: dict[str, Tool] = {t.name: t for t in (
    schedule_create, schedule_list, schedule_delete)}
