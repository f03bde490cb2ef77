"""GET /v1/runs: runs across agents and sessions, newest first, with filters and a
cursor for paging (the single-run routes are in ``runs.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from agentd.doors.access import require_agent, visible_agents
from agentd.doors.http import json_response
from agentd.errors import InvalidInput
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import RunOut
from agentd.store.runs_query import MAX_PAGE, RUN_STATUSES

__all__ = ["RunPageOut", "parse_since", "router"]

router = APIRouter(prefix="/v1/runs", tags=["runs"])


class RunPageOut(BaseModel):
    runs: list[RunOut]
    next_cursor: str | None = Field(
        description="Give it as ``cursor`` for the next page; null on the last page.")


def parse_since(value: str, name: str = "since") -> float:
    """Epoch seconds of an ISO 8601 date or time (UTC unless it says otherwise);
    ``name``: the query parameter it came in."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(f"{name} {value!r} is not an ISO 8601 date or time "
                           "(e.g. 2025-01-31 or 2025-01-31T12:00:00Z)",
                           field=f"query.{name}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@router.get("", response_model=RunPageOut, responses=ERRORS(404, 422))
async def list_runs(
    request: Request,
    agent: str | None = Query(default=None, max_length=256,
                              description="Only this agent's runs (404 if unknown)."),
    session: str | None = Query(default=None, max_length=256,
                                description="Only this session's runs (needs agent)."),
    status: str | None = Query(
        default=None, max_length=200,
        description=f"Only runs in these statuses, comma-separated: "
                    f"{', '.join(RUN_STATUSES)}."),
    since: str | None = Query(default=None, max_length=64,
                              description="Only runs created at or after this ISO 8601 "
                                          "date or time (UTC unless it says)."),
    limit: int = Query(default=50, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(default=None, max_length=512,
                               description="next_cursor of the page before."),
) -> Response:
    """Runs, newest first, a page at a time."""
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else []
    if agent is not None:
        await require_agent(request, agent)
    visible = None if agent is not None else await visible_agents(request)
    if visible is not None and len(visible) == 1 and session is None:
        agent, visible = visible[0].name, None  # one agent: its own index
    page = await runtime_of(request).list_runs(
        agent=agent, session=session, statuses=statuses,
        since=parse_since(since) if since is not None else None, cursor=cursor,
        limit=limit, agents=None if visible is None else [a.name for a in visible])
    return json_response({"runs": [run.to_api(name, key) for run, name, key in page.runs],
                          "next_cursor": page.next_cursor})
