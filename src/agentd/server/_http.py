"""Small HTTP pieces: fast JSON responses, error mapping, auth and body-size guards."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentd.errors import AgentdError, Unauthorized

__all__ = [
    "BearerAuth",
    "BodyLimit",
    "TokenCheck",
    "content_length",
    "error_response",
    "install_error_handlers",
    "json_response",
    "person",
    "response_for",
    "unauthorized",
]

log = logging.getLogger(__name__)


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response serialised with orjson (the API's hot paths skip re-validation)."""
    return Response(orjson.dumps(content), status_code=status_code,
                    media_type="application/json")


def error_response(error: AgentdError, headers: dict[str, str] | None = None) -> Response:
    response = json_response({"error": error.to_dict()}, error.status)
    if headers:
        response.headers.update(headers)
    return response


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def response_for(exc: Exception) -> Response:
    """The one mapping from an exception to the API's JSON error response."""
    if isinstance(exc, AgentdError):
        return error_response(exc)
    if isinstance(exc, RequestValidationError):
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")}
                  for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            message = "request body is not valid JSON"
        else:
            message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        err = AgentdError(message, code="invalid_input", details={"errors": errors})
        err.status = 422
        return error_response(err)
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = AgentdError(str(exc.detail), code=code)
        err.status = exc.status_code
        return error_response(err)
    log.exception("unhandled error", exc_info=exc)
    return error_response(AgentdError("internal error; see the daemon log"))


def install_error_handlers(app: FastAPI) -> None:
    async def handle(_: Request, exc: Exception) -> Response:
        return response_for(exc)

    for kind in (AgentdError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)


class TokenCheck:
    """Bearer tokens (constant-time comparison), the paths that need none, and who a
    request is: the name of the token it presented (``request.state.token``)."""

    def __init__(self, tokens: dict[str, str], public_paths: list[str], *,
                 required: bool = True) -> None:
        self.tokens = [(name, t.encode()) for name, t in tokens.items()]
        self.required = required and bool(self.tokens)
        self.exact = {p for p in public_paths if not p.endswith("*")}
        self.prefixes = tuple(p[:-1] for p in public_paths if p.endswith("*"))

    def identify(self, scope: Scope) -> str | None:
        """The name of the valid token the request carries, else None."""
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return None
        found = None
        for name, expected in self.tokens:  # no early exit: every token is compared
            if hmac.compare_digest(token, expected):
                found = name
        return found

    def allows(self, scope: Scope) -> bool:
        """Whether the request may go on; records who it is in ``scope["state"]``."""
        if not self.tokens:
            return True
        who = self.identify(scope)
        if who is not None:
            scope.setdefault("state", {})["token"] = who
            return True
        if not self.required:
            return True
        path: str = scope["path"]
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))


def content_length(scope: Scope) -> int | None:
    """The request's Content-Length (None if absent; -1 if not a number)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


def unauthorized() -> Response:
    return error_response(Unauthorized("missing or invalid bearer token"),
                          {"WWW-Authenticate": "Bearer"})


def person(scope: Scope, what: str) -> str:
    """The name of the token behind a request that only a person may make (``what``
    says what it is); Unauthorized when it carries none, even with ``auth = "none"``."""
    who = scope.get("state", {}).get("token")
    if not isinstance(who, str):
        raise Unauthorized(f"{what} needs a daemon token (Authorization: Bearer ...; the "
                           "daemon's home holds it in the file 'token')")
    return who


class BearerAuth:
    """Pure ASGI middleware enforcing :class:`TokenCheck`."""

    def __init__(self, app: ASGIApp, *, check: TokenCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.check.allows(scope):
            await self.app(scope, receive, send)
            return
        await unauthorized()(scope, receive, send)


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> Response:
        err = AgentdError(f"request body over {self.limit} bytes", code="payload_too_large")
        err.status = 413
        return error_response(err)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = content_length(scope)
        if length is not None:
            if length > self.limit:
                await self._too_large()(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read the body here, up to the limit, so an
        # oversized one gets 413 whatever route it was meant for.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


