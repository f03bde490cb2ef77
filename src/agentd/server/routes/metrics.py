"""GET /metrics: the daemon's metrics in Prometheus' text format (agentd.telemetry)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from agentd.doors.access import require_right
from agentd.server.routes._deps import runtime_of
from agentd.telemetry.metrics import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter(tags=["status"])


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus' text exposition format (version 0.0.4)."},
    403: {"description": "A token below operator, or one with a scope"}})
async def get_metrics(request: Request) -> Response:
    """Every metric of the daemon (docs/operations.md, "Metrics"): a token of role
    ``operator`` or above whose scope is every agent (the figures count every
    tenant's runs, tokens and costs). 404 when ``[telemetry] metrics = false``."""
    metrics = runtime_of(request).metrics
    if metrics is None:
        raise StarletteHTTPException(404)
    require_right(request, "metrics", "reading /metrics")
    return Response(await metrics.render(), media_type=CONTENT_TYPE)
