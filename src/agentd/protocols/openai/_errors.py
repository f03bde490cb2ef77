"""Errors in OpenAI's shape, so that the official SDK raises the matching exception.

``{"error": {"message", "type", "param", "code"}}`` with OpenAI's statuses: a request
the door cannot take is 400 ``invalid_request_error`` (agentd answers 422 natively), a
bad key 401 ``invalid_api_key``, an unknown agent 404 ``model_not_found``.
"""

from __future__ import annotations

from starlette.responses import Response

from agentd.doors.http import json_response
from agentd.errors import AgentdError, AgentNotFound

__all__ = ["openai_error"]

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
          403: "permission_error", 404: "invalid_request_error",
          409: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error"}
_CODES = {"unauthorized": "invalid_api_key", "agent_not_found": "model_not_found",
          "payload_too_large": "request_too_large"}


def _param(error: AgentdError) -> str | None:
    errors = error.details.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        field = errors[0].get("field")
        if isinstance(field, str):
            # "body.messages.0.content" -> "messages.0.content": OpenAI names the
            # parameter, not where in the request it was.
            return field.removeprefix("body.").removeprefix("body") or None
    if isinstance(error, AgentNotFound):
        return "model"
    return None


def openai_error(error: AgentdError, headers: dict[str, str] | None = None) -> Response:
    """``error`` as OpenAI's API would answer it (see the module's docstring)."""
    status = 400 if error.status == 422 else error.status
    body = {"error": {
        "message": error.message,
        "type": _TYPES.get(status, "server_error" if status >= 500 else
                           "invalid_request_error"),
        "param": _param(error),
        "code": _CODES.get(error.code, error.code),
    }}
    response = json_response(body, status)
    if headers:
        response.headers.update(headers)
    run_id = error.details.get("run_id")
    if isinstance(run_id, str):
        # The run the request started (it failed, or waits for a decision).
        response.headers["x-agentd-run"] = run_id
    if not error.retryable and (status in (409, 429) or status >= 500):
        # The SDK retries 409, 429 and 5xx by itself; a message resent after its run
        # failed would be a second run (x-should-retry is the SDK's own header).
        response.headers["x-should-retry"] = "false"
    return response
