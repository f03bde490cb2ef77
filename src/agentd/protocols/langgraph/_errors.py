"""Errors as the LangGraph server answers them: ``{"detail": message}`` (FastAPI's
shape), with agentd's stable ``code`` beside it, which ``langgraph-sdk`` reads into
``APIError.code``. Statuses are agentd's: the SDK raises its matching exception
(``NotFoundError`` for 404, ``UnprocessableEntityError`` for 422, ...)."""

from __future__ import annotations

from starlette.responses import Response

from agentd.doors.http import json_response
from agentd.errors import AgentdError

__all__ = ["langgraph_error"]


def langgraph_error(error: AgentdError, headers: dict[str, str] | None = None
                    ) -> Response:
    """``error`` in the LangGraph server's shape."""
    body: dict[str, object] = {"detail": error.message, "code": error.code}
    errors = error.details.get("errors")
    if isinstance(errors, list):
        body["errors"] = errors
    response = json_response(body, error.status)
    if headers:
        response.headers.update(headers)
    return response
