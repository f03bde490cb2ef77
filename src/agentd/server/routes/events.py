"""/v1/events/schema: the catalogue of event kinds, as a JSON schema."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from agentd import events
from agentd.doors.http import json_response

__all__ = ["router"]

router = APIRouter(prefix="/v1/events", tags=["sessions"])


@functools.cache
def _schema() -> dict[str, Any]:
    return events.schema()


@router.get("/schema", response_model=dict[str, Any])
async def get_event_schema() -> Response:
    """The JSON schema (draft 2020-12) of every event kind a session's log may hold: a
    union of ``{"kind", "data"}`` objects discriminated by ``kind``, one per kind, with
    the model of its ``data``. The events of ``GET .../events`` add ``seq``, ``run_id``
    and ``at``. A newer daemon may write kinds this schema does not list: skip them."""
    return json_response(_schema())
