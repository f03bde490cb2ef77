"""/v1/agents/{name}/schedules and /v1/schedules: messages an agent gets on a clock
(``agentd.autonomy.schedules``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from agentd.autonomy.schedules import MAX_CONTENT, MAX_NEXT, ScheduleIn, schedule_dict
from agentd.doors.access import access_of, require_agent, require_owner, visible_agents
from agentd.doors.http import model_response
from agentd.errors import NotFound
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.routes.memory import _by

__all__ = ["agent_router", "router"]

agent_router = APIRouter(prefix="/v1/agents/{name}/schedules", tags=["schedules"])
router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

ScheduleId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                 description="The schedule's id (`sch_...`).")]
_YEAR = 366 * 86_400


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ScheduleBody(_In):
    cron: str | None = Field(default=None, min_length=1, max_length=200,
                             description="A 5-field cron expression (minute hour "
                                         "day-of-month month day-of-week) in `timezone`.")
    every_s: float | None = Field(default=None, gt=0, le=_YEAR,
                                  description="Fire every this many seconds (the first "
                                              "fire one interval from now).")
    at: datetime | None = Field(default=None, description="Fire once at this time (ISO "
                                                          "8601; without an offset: in "
                                                          "`timezone`).")
    timezone: str = Field(default="UTC", min_length=1, max_length=64,
                          description="An IANA time zone (`Europe/Berlin`).")
    session: str | None = Field(default=None, min_length=1, max_length=256,
                                description="The session key every fire goes to; left "
                                            "out or null: a new session per fire.")
    content: str = Field(min_length=1, max_length=MAX_CONTENT,
                         description="The message each fire sends.")
    jitter_s: float = Field(default=0.0, ge=0, le=3600,
                            description="Delay each fire by up to this much (the same "
                                        "on every node), below the interval.")
    overlap: Literal["skip", "enqueue", "interrupt"] | None = Field(
        default=None, description="When the previous fire's run is still going: skip "
                                  "this fire, enqueue it, or interrupt the run. Default: "
                                  "the agent's `settings.schedules.overlap`.")
    missed: Literal["skip", "once", "all"] | None = Field(
        default=None, description="Fire times missed while no daemon ran: fire none, "
                                  "the latest, or all (within `catchup_s`). Default: "
                                  "the agent's `settings.schedules.missed`.")
    catchup_s: float | None = Field(default=None, ge=0, le=_YEAR,
                                    description="Missed fire times older than this are "
                                                "never fired.")
    ends_at: datetime | None = Field(default=None, description="No fire after this time.")
    enabled: bool = Field(default=True, strict=True)


class SchedulePatch(_In):
    cron: str | None = Field(default=None, min_length=1, max_length=200)
    every_s: float | None = Field(default=None, gt=0, le=_YEAR)
    at: datetime | None = None
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    session: str | None = Field(default=None, min_length=1, max_length=256,
                                description="null: a new session per fire.")
    content: str | None = Field(default=None, min_length=1, max_length=MAX_CONTENT)
    jitter_s: float | None = Field(default=None, ge=0, le=3600)
    overlap: Literal["skip", "enqueue", "interrupt"] | None = None
    missed: Literal["skip", "once", "all"] | None = None
    catchup_s: float | None = Field(default=None, ge=0, le=_YEAR)
    ends_at: datetime | None = Field(default=None, description="null: no end.")
    enabled: bool | None = Field(default=None, strict=True,
                                 description="false pauses; true resumes (clearing "
                                             "`paused_reason` and the failure count).")


class ScheduleOut(BaseModel):
    id: str
    agent: str
    cron: str | None
    every_s: float | None
    at: str | None
    timezone: str
    session: str | None = Field(description="null: a new session per fire "
                                            "(`schedule:<id>:<fire time>`).")
    content: str
    jitter_s: float
    overlap: str
    missed: str
    catchup_s: float
    ends_at: str | None
    enabled: bool
    paused_reason: str | None = Field(description="Why it is paused (by request, or "
                                                  "after consecutive failed fires).")
    next_fire_at: str | None = Field(description="The next nominal fire time (before "
                                                 "jitter); null when paused or finished.")
    next: list[str] | None = Field(default=None, description="With `?next=N`: the next "
                                                             "N fire times.")
    last_fire_at: str | None
    last_run_id: str | None
    fires: int
    missed_count: int
    skipped_count: int
    failures: int = Field(description="Consecutive failed fire runs when last counted.")
    created_by: str
    created_run: str | None
    created_at: str
    updated_at: str
    version: int


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
    next_after: str | None = Field(description="Pass as `after` for the next page.")


class FireOut(BaseModel):
    fire_at: str
    status: str = Field(description="`fired`, `skipped`, or `missed` (the first of "
                        "`reason`'s count of fire times that were not fired).")
    reason: str | None
    run_id: str | None
    run_status: str | None
    at: str = Field(description="When the fire time was claimed.")


class FireList(BaseModel):
    fires: list[FireOut]


async def _own(request: Request, schedule_id: str) -> None:
    """404 (as for a schedule that does not exist) when the schedule's agent is outside
    the token's scope; nothing is read for an unscoped token."""
    if access_of(request.scope).everything:
        return
    rec = await runtime_of(request).schedules.get(schedule_id)
    await require_owner(request, rec.agent, NotFound(
        f"schedule {schedule_id!r} not found", code="schedule_not_found"))


def _spec(body: ScheduleBody) -> ScheduleIn:
    return ScheduleIn(**body.model_dump())


def _page(records: list[Any], limit: int) -> dict[str, Any]:
    return {"schedules": [schedule_dict(r) for r in records],
            "next_after": records[-1].id if len(records) == limit else None}


@agent_router.post("", status_code=201, response_model=ScheduleOut,
                   responses=ERRORS(404, 409, 422))
async def create_schedule(name: str, body: ScheduleBody, request: Request) -> Response:
    """A new schedule: exactly one of `cron`, `every_s` and `at`. Refused (nothing
    created) with 422 naming the field for an invalid cron expression or time zone,
    an interval below the agent's minimum, an `at` in the past; 404 for an unknown
    agent; 409 `schedule_limit` at the agent's maximum."""
    service = runtime_of(request).schedules
    rec = await service.create(name, _spec(body), by=_by(request))
    return model_response(ScheduleOut, schedule_dict(rec), 201)


@agent_router.get("", response_model=ScheduleList, responses=ERRORS(404, 422))
async def list_agent_schedules(
    name: str, request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The agent's schedules, oldest first."""
    records = await runtime_of(request).schedules.of_agent(name, after=after, limit=limit)
    return model_response(ScheduleList, _page(records, limit))


@router.get("", response_model=ScheduleList, responses=ERRORS(404, 422))
async def list_schedules(
    request: Request,
    agent: Annotated[str | None, Query(max_length=256,
                                       description="Only this agent's (404 if "
                                                   "unknown).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Schedules across agents, oldest first, a page at a time."""
    if agent is not None:
        await require_agent(request, agent)
    visible = None if agent is not None else await visible_agents(request)
    records = await runtime_of(request).schedules.list_all(
        agent=agent, after=after, limit=limit,
        agent_ids=None if visible is None else [a.id for a in visible])
    return model_response(ScheduleList, _page(records, limit))


@router.get("/{schedule_id}", response_model=ScheduleOut, responses=ERRORS(404, 422))
async def get_schedule(schedule_id: ScheduleId, request: Request,
                       next: Annotated[int, Query(ge=0, le=MAX_NEXT, description="Also "
                                                  "list the next N fire times.")] = 0,
                       ) -> Response:
    service = runtime_of(request).schedules
    rec = await service.get(schedule_id)
    await _own(request, schedule_id)
    return model_response(ScheduleOut, schedule_dict(
        rec, service.next_times(rec, next) if next else None))


@router.get("/{schedule_id}/fires", response_model=FireList, responses=ERRORS(404, 422))
async def list_fires(schedule_id: ScheduleId, request: Request,
                     limit: Annotated[int, Query(ge=1, le=256)] = 20) -> Response:
    """The latest fire times claimed (fired, skipped or missed), newest first."""
    await _own(request, schedule_id)
    fires = await runtime_of(request).schedules.fires(schedule_id, limit)
    return model_response(FireList, {"fires": fires})


@router.patch("/{schedule_id}", response_model=ScheduleOut,
              responses=ERRORS(404, 409, 422))
async def patch_schedule(schedule_id: ScheduleId, body: SchedulePatch, request: Request
                         ) -> Response:
    """Change fields; `{"enabled": false}` pauses, `{"enabled": true}` resumes. A change
    of timing (or a resume) works the next fire time out again from now."""
    change = body.model_dump(exclude_unset=True)
    for key in ("cron", "every_s", "at", "timezone", "content", "jitter_s", "overlap",
                "missed", "catchup_s", "enabled"):
        if key in change and change[key] is None:
            change.pop(key)  # null means "unchanged" except for session and ends_at
    await _own(request, schedule_id)
    service = runtime_of(request).schedules
    rec = await service.update(schedule_id, change) if change else (
        await service.get(schedule_id))
    return model_response(ScheduleOut, schedule_dict(rec))


@router.delete("/{schedule_id}", status_code=204, responses=ERRORS(404, 422))
async def delete_schedule(schedule_id: ScheduleId, request: Request) -> Response:
    await _own(request, schedule_id)
    await runtime_of(request).schedules.delete(schedule_id)
    return Response(status_code=204)
