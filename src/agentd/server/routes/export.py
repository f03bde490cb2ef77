"""GET /v1/export/runs and /v1/export/pairs: finished runs, and preference pairs, as
JSON lines streamed a page of runs at a time (:mod:`agentd.telemetry.dataset`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from agentd.doors.access import require_agent, visible_agents
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.routes.run_list import parse_since
from agentd.telemetry.dataset import DEFAULT_MAX_CHARS, EXPORT_STATUSES, ExportFilter

__all__ = ["router"]

router = APIRouter(prefix="/v1/export", tags=["export"])

_NDJSON = {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}


async def _filter(request: Request, agent: str | None, status: str | None,
                  since: str | None, until: str | None, limit: int | None) -> ExportFilter:
    statuses = tuple(s.strip() for s in status.split(",") if s.strip()) if status else ()
    if agent is not None:
        await require_agent(request, agent)
    visible = None if agent is not None else await visible_agents(request)
    return ExportFilter(
        agent=agent, agents=None if visible is None else [a.name for a in visible],
        statuses=statuses, since=parse_since(since) if since is not None else None,
        until=parse_since(until, 'until') if until is not None else None,
        limit=limit)


_AGENT = Query(default=None, max_length=256, description="Only this agent's runs.")
_STATUS = Query(default=None, max_length=200,
                description=f"Only runs that ended so, comma-separated: "
                            f"{', '.join(EXPORT_STATUSES)} (default: all of them).")
_SINCE = Query(default=None, max_length=64,
               description="Only runs created at or after this ISO 8601 date or time.")
_UNTIL = Query(default=None, max_length=64,
               description="Only runs created before this ISO 8601 date or time.")
_LIMIT = Query(default=None, ge=1, le=10_000_000, description="At most this many runs.")
_MAX_CHARS = Query(default=DEFAULT_MAX_CHARS, ge=0, le=100_000_000,
                   description="Cut any string longer than this (0: keep everything).")


def _lines(lines: AsyncIterator[bytes], name: str) -> Response:
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{name}.jsonl"'})


@router.get("/runs", responses={**ERRORS(404, 422), 200: {
    **_NDJSON, "description": "One finished run per line, newest first."}})
async def export_runs(
    request: Request, agent: str | None = _AGENT, status: str | None = _STATUS,
    since: str | None = _SINCE, until: str | None = _UNTIL, limit: int | None = _LIMIT,
    context: bool = Query(default=False, description=(
        "Also the conversation the model had before each run (reads the session's log "
        "up to the run: dearer for long sessions).")),
    max_chars: int = _MAX_CHARS,
) -> Response:
    """Finished runs as JSON lines: messages, tool calls and their outcomes, model
    calls, output, usage, cost and error (docs/operations.md, "Traces as data")."""
    flt = await _filter(request, agent, status, since, until, limit)
    lines = await runtime_of(request).export_runs(flt, context=context,
                                                  max_chars=max_chars)
    return _lines(lines, "runs")


@router.get("/pairs", responses={**ERRORS(404, 422), 200: {
    **_NDJSON, "description": "One preference pair per line (prompt, chosen, rejected)."}})
async def export_pairs(
    request: Request, agent: str | None = _AGENT, status: str | None = _STATUS,
    since: str | None = _SINCE, until: str | None = _UNTIL, limit: int | None = _LIMIT,
    denied: bool = Query(default=False, description=(
        "Also pair a denied tool call (rejected) with the model's next step (chosen).")),
    max_chars: int = _MAX_CHARS,
) -> Response:
    """Preference pairs in the conversational form TRL's DPOTrainer reads, from the
    approvals of the runs selected (``limit`` counts runs read, not pairs)."""
    flt = await _filter(request, agent, status, since, until, limit)
    lines = await runtime_of(request).export_runs(flt, pairs=True, denied=denied,
                                                  max_chars=max_chars)
    return _lines(lines, "pairs")
