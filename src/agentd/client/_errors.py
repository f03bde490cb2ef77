"""The errors :class:`agentd.client.Client` raises.

    ClientError             anything the client raises on purpose
    ├── APIError            the daemon answered with an error (status, code, message, ...)
    ├── ConnectionFailed    the daemon could not be reached at all
    ├── RunFailed           a run asked for a value ended without one (send_parsed)
    └── WaitTimeout         a run did not end within the time given (it goes on)
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["APIError", "ClientError", "ConnectionFailed", "RunFailed", "WaitTimeout"]


class ClientError(Exception):
    """Base class of every error :class:`Client` raises on purpose."""


class APIError(ClientError):
    """The daemon answered with an error.

    Attributes:
        status: HTTP status code (404, 409, 422, ...).
        code: Stable error code from the body (``agent_not_found``, ``agent_paused``, ...).
        message: Human-readable message from the daemon.
        retryable: Whether sending the same request again may succeed.
        details: Extra structured information (``details.errors`` for 422s).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retryable: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"

    def __repr__(self) -> str:
        return (
            f"APIError(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, retryable={self.retryable!r})"
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        """Build an error from a response whose body may or may not be agentd's JSON."""
        status = response.status_code
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            details = err.get("details")
            return cls(
                status,
                str(err.get("code") or f"http_{status}"),
                str(err.get("message") or response.reason_phrase or "error"),
                bool(err.get("retryable", False)),
                details if isinstance(details, dict) else None,
            )
        # Not agentd's error shape: a proxy, or a framework default such as {"detail": ...}.
        text = response.text.strip()
        if isinstance(body, dict) and "detail" in body:
            text = str(body["detail"])
        message = text[:300] if text else (response.reason_phrase or "error")
        return cls(status, f"http_{status}", message, status in (429, 502, 503, 504))


class ConnectionFailed(ClientError):
    """The daemon could not be reached (nothing listening, DNS failure, refused)."""

    def __init__(self, url: str, reason: str = "") -> None:
        self.url = url
        self.reason = reason
        because = f" ({reason})" if reason else ""
        super().__init__(
            f"the agentd daemon at {url} is not reachable{because}; "
            "start it with `agentd start` (or set AGENTD_URL / --url to where it runs)"
        )


class WaitTimeout(ClientError):
    """A run did not end within the ``timeout`` given to a streaming call.

    The run goes on in the daemon; follow it with :meth:`Client.get_run` or
    :meth:`Client.follow`.
    """


class RunFailed(ClientError):
    """A run whose value was asked for (:meth:`Client.send_parsed`) did not complete:
    it failed (``output_invalid``: its answer never matched the schema), was
    cancelled, or waits for a decision.

    Attributes:
        run: The Run object, as the daemon returned it.
        code: The run's error code (``output_invalid``, ``max_steps``, ...), else
            ``run_<status>``.
        message: The run's error message.
    """

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run
        error = run.get("error") or {}
        self.code = str(error.get("code") or f"run_{run.get('status')}")
        self.message = str(error.get("message") or f"the run ended {run.get('status')}")
        super().__init__(f"run {run.get('id')} {run.get('status')}: {self.message} "
                         f"[{self.code}]")
