"""What several doors need alike."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from agentd.doors.http import loads_strict
from agentd.errors import InvalidInput

__all__ = ["json_body"]


async def json_body(request: Request) -> Any:
    """The request's JSON body, read strictly (NaN, 1e309 and oversized integers
    refused, as the request layer does); an empty body is refused naming ``body``."""
    raw = await request.body()
    if not raw:
        raise InvalidInput("the request needs a JSON body", field="body")
    return loads_strict(raw)
