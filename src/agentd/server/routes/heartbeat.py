"""/v1/agents/{name}/heartbeat: an agent's periodic autonomous turn (settings + state)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.responses import JSONResponse, Response

from agentd.doors.access import require_right
from agentd.server.routes._deps import ERRORS, runtime_of

__all__ = ["router"]

router = APIRouter(prefix="/v1/agents/{name}/heartbeat", tags=["heartbeat"])


class HeartbeatPatch(BaseModel):
    """Keys of the agent's ``settings.heartbeat`` to change; the rest are kept. A key
    given as ``null`` goes back to its default. ``active_hours`` is merged key by key
    (``null`` removes it: all day). Checked as ``PATCH /v1/agents/{name}`` checks
    settings; a bad value is a 422 naming the key (``body.every_s``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: JsonValue = Field(None, description="Beat (bool).")
    every_s: JsonValue = Field(None, description="Seconds between beats (60 .. 604800).")
    document: JsonValue = Field(None, description="The heartbeat's text (wins over "
                                                  "`file`; `null`: read `file`).")
    file: JsonValue = Field(None, description="A workspace file read at each beat.")
    session: JsonValue = Field(None, description="The session key beats go to.")
    active_hours: JsonValue = Field(None, description='`{"start": "09:00", "end": '
                                                      '"18:00", "timezone": "UTC"}`.')
    ok_token: JsonValue = Field(None, description="A reply that is exactly this is "
                                                  "logged, not delivered.")
    max_document_bytes: JsonValue = Field(None, description="A larger file is skipped.")


class HeartbeatState(BaseModel):
    last_beat_at: str | None = Field(description="The last slot beaten (ISO 8601 UTC).")
    last_run_id: str | None
    last_outcome: str | None = Field(description="Its run's status; `ok` for a silent "
                                                 "reply; `deleted`.")
    next_beat_at: str | None = Field(description="When this node tries next (null: off).")
    last_skip_at: str | None
    last_skip_reason: str | None


class HeartbeatOut(BaseModel):
    agent: str
    settings: dict[str, Any] | None = Field(description="`settings.heartbeat`, defaults "
                                                        "filled in (as stored if not valid).")
    valid: bool = Field(description="false: the stored area is refused by this version "
                                    "(never beaten until fixed).")
    state: HeartbeatState


@router.get("", response_model=HeartbeatOut, responses=ERRORS(404))
async def get_heartbeat(name: str, request: Request) -> Response:
    """The heartbeat's settings (defaults filled in) and state: the last beat (its
    slot, run and outcome: the run's status, or `ok` for a silent reply), the next
    beat, and the last skip and why."""
    return JSONResponse(await runtime_of(request).get_heartbeat(name))


@router.patch("", response_model=HeartbeatOut, responses=ERRORS(401, 404, 422))
async def patch_heartbeat(name: str, body: HeartbeatPatch, request: Request) -> Response:
    runtime = runtime_of(request)
    patch: dict[str, Any] = body.model_dump(exclude_unset=True)
    if not patch:
        return JSONResponse(await runtime.get_heartbeat(name))
    who = require_right(request, "use", "changing an agent")
    return JSONResponse(await runtime.update_heartbeat(name, patch, actor=who))
