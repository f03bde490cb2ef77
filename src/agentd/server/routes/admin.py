"""/v1/admin: the daemon itself (admins): reloading its configuration."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from agentd.doors.access import require_right
from agentd.doors.http import model_response
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.server.schemas import ReloadOut

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/reload", response_model=ReloadOut, responses=ERRORS(403, 422))
async def reload_config(request: Request) -> Response:
    """Read agentd.toml (with `.env` and the daemon's environment, as at start) again:
    apply what can change live (tokens, tenants, limits, models, the policy, logging),
    report what needs a restart. A file that cannot be loaded changes nothing: 422
    `invalid_config` naming each field in `details.errors`. An admin token whose scope
    is every agent only (SIGHUP does the same)."""
    who = require_right(request, "reload_config", "reloading the configuration")
    outcome = await runtime_of(request).reload(actor=who)
    return model_response(ReloadOut, outcome.to_api())
