"""/v1/kernel: the model-call kernel's state: scheduler lanes, breakers, counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.doors.http import json_response
from agentd.server.routes._deps import runtime_of

__all__ = ["router"]

router = APIRouter(prefix="/v1/kernel", tags=["kernel"])


@router.get("", response_model=dict[str, Any])
async def get_kernel(request: Request) -> Response:
    """Per scheduler lane: limits, calls in flight and queued (per priority class),
    grants and waits (p50/p99/max over the last 1,024 grants), pauses; per provider
    breaker: state and failures; counters of calls, retries, fallbacks, rate limits,
    stream resets and outages since the daemon started (this node only)."""
    return json_response(runtime_of(request).kernel_metrics())
