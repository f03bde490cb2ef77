"""One exception tree for agentd.

Every error that can reach a client carries a stable ``code``, an HTTP ``status``,
a human ``message`` and whether retrying the same request may succeed
(``retryable``). One mapping (:meth:`AgentdError.to_dict`) serves JSON responses,
SSE ``error`` frames and run results alike.

::

    AgentdError                      500 internal
    ├── BadRequest                   400 bad_request
    │   └── InvalidInput             422 invalid_input
    │       └── InvalidModel         422 invalid_model
    │           └── InvalidSettings  422 invalid_settings (an agent's stored settings)
    ├── Unauthorized                 401 unauthorized
    ├── Forbidden                    403 forbidden
    │   └── QuotaExceeded            403 quota_exceeded (details: tenant, quota, limit)
    ├── NotFound                     404 not_found
    │   ├── AgentNotFound            404 agent_not_found
    │   ├── SessionNotFound          404 session_not_found
    │   ├── RunNotFound              404 run_not_found
    │   └── CheckpointNotFound       404 checkpoint_not_found
    ├── Conflict                     409 conflict
    │   ├── AgentExists              409 agent_exists
    │   ├── AgentNotAccepting        409 agent_paused | agent_stopped | agent_error
    │   ├── SessionExists            409 session_exists
    │   ├── CheckpointExists         409 checkpoint_exists
    │   └── SessionBusy              409 session_busy (details.active_run)
    ├── PayloadTooLarge              413 payload_too_large
    ├── UnsupportedMedia             415 unsupported_media (an image or file type refused)
    ├── ShuttingDown                 503 shutting_down (retryable)
    ├── StoreError                   500 store_error
    ├── ModelError                   502 model_error (retryable unless said otherwise)
    ├── UpstreamError                502 upstream_error (another server answered wrongly)
    ├── ToolError                    (inside runs only) tool_error
    └── RunFailed                    (inside runs only) max_steps, run_failed
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "AgentExists",
    "AgentNotAccepting",
    "AgentNotFound",
    "AgentdError",
    "BadRequest",
    "CheckpointExists",
    "CheckpointNotFound",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "InvalidModel",
    "InvalidSettings",
    "ModelError",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RunFailed",
    "RunNotFound",
    "SessionBusy",
    "SessionExists",
    "SessionNotFound",
    "ShuttingDown",
    "StoreError",
    "ToolError",
    "Unauthorized",
    "UnsupportedMedia",
    "UpstreamError",
]


class AgentdError(Exception):
    """Base of every error agentd raises on purpose."""

    status: int = 500
    code: str = "internal"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The wire form used by JSON errors, SSE error frames and run results."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details:
            out["details"] = self.details
        return out


class BadRequest(AgentdError):
    status = 400
    code = "bad_request"


class InvalidInput(BadRequest):
    """A bad value; ``field`` (e.g. ``body.name``) is listed in ``details.errors``."""

    status = 422
    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if field is not None:
            self.details = {**self.details,
                            "errors": [{"field": field, "message": message}]}

    @classmethod
    def of(cls, exc: ValidationError, name: str, location: str) -> InvalidInput:
        """The first problem pydantic found in a setting, as ``<name><where>: <msg>``
        with ``field`` ``<location><where>`` (``where`` like ``.rules[0].action``)."""
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        return cls(f"{name}{where}: {first['msg']}", field=f"{location}{where}")

    def for_field(self, field: str) -> InvalidInput:
        """This error, naming ``field`` unless it already names one."""
        if "errors" not in self.details:
            self.details = {**self.details,
                            "errors": [{"field": field, "message": self.message}]}
        return self


class InvalidModel(InvalidInput):
    code = "invalid_model"


class InvalidSettings(InvalidModel):
    """An agent's settings as stored (by an older version, or by hand) that this
    version refuses: its runs fail with this, naming each field in
    ``details.errors``. A model error too, since a run cannot get its model without
    valid settings, and is handled as one."""

    code = "invalid_settings"


class Unauthorized(AgentdError):
    status = 401
    code = "unauthorized"


class Forbidden(AgentdError):
    status = 403
    code = "forbidden"


class QuotaExceeded(Forbidden):
    """A write that would take a tenant past one of its quotas (``/v1/tenants``)."""

    code = "quota_exceeded"

    def __init__(self, tenant: str, quota: str, limit: int | float, *,
                 what: str | None = None) -> None:
        shown = int(limit) if float(limit).is_integer() else limit
        super().__init__(
            f"tenant {tenant!r} is at its {quota} quota ({shown}{' ' + what if what else ''})"
            "; an admin can raise it (PATCH /v1/tenants/" + tenant + ")",
            details={"tenant": tenant, "quota": quota, "limit": limit})


class NotFound(AgentdError):
    status = 404
    code = "not_found"


class AgentNotFound(NotFound):
    code = "agent_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class CheckpointNotFound(NotFound):
    code = "checkpoint_not_found"


class Conflict(AgentdError):
    status = 409
    code = "conflict"


class AgentExists(Conflict):
    code = "agent_exists"


class AgentNotAccepting(Conflict):
    """The agent is paused, stopped or in error and refuses new messages."""

    code = "agent_not_accepting"
    #: The agent states in which it refuses messages.
    STATES = ("paused", "stopped", "error")

    @classmethod
    def of(cls, name: str, state: str) -> AgentNotAccepting:
        """The refusal of a message to agent ``name`` in ``state`` (one of STATES)."""
        return cls(f"agent {name!r} is {state} and does not accept messages"
                   + ("; resume it first" if state != "error" else ""),
                   code=f"agent_{state}")


class SessionExists(Conflict):
    code = "session_exists"


class CheckpointExists(Conflict):
    code = "checkpoint_exists"


class SessionBusy(Conflict):
    """A message with ``mode: reject`` to a session that has a run queued or running."""

    code = "session_busy"


class PayloadTooLarge(AgentdError):
    status = 413
    code = "payload_too_large"


class UnsupportedMedia(AgentdError):
    """An image or file of a type the daemon does not take (``[attachments]``)."""

    status = 415
    code = "unsupported_media"


class ShuttingDown(AgentdError):
    status = 503
    code = "shutting_down"
    retryable = True


class StoreError(AgentdError):
    status = 500
    code = "store_error"


class ModelError(AgentdError):
    """A model provider failed; mapped from SDK errors at the provider boundary."""

    status = 502
    code = "model_error"
    retryable = True


class UpstreamError(AgentdError):
    """A server agentd asked on a request's behalf (an MCP server's authorization
    server, say) could not be reached or answered wrongly; the message says which
    and how."""

    status = 502
    code = "upstream_error"
    retryable = True


class ToolError(AgentdError):
    status = 500
    code = "tool_error"


class RunFailed(AgentdError):
    status = 500
    code = "run_failed"
