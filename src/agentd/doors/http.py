"""The request layer's pieces: auth and body-size guards, strict JSON, the one mapping
from exceptions to error responses, and fast JSON responses.

Every request, the message fast path included, passes through the same stack (built by
``AgentdApp.build_middleware_stack`` in app.py)::

    LastResort                a failure inside a middleware itself: the same shape
    BearerAuth                401 (app.add_middleware: later ones go outside these)
    BodyLimit                 413
    ErrorMapping              any exception -> {"error": {...}} via response_for
    route dispatch            checks the path; the message route and the doors' hot
                              routes -> their handlers, everything else -> FastAPI's
                              router

With only create_app's middleware (``OriginCheck`` and ``HttpMetrics`` outside the
two above) an HTTP request passes them all in one frame (``_Front`` in app.py), each
check the layer's own; the layers above serve any other case.

A protocol door (``agentd.protocols``) answers errors in its protocol's own shape: it
registers an :data:`ErrorShape` for its path prefix with :func:`add_error_shape`, and
every error answer above (401, 413, a route's exception) is rendered through it. A door
whose route carries every turn registers it with :func:`add_fast_route`: the dispatch
layer hands it to the door past FastAPI's routing and dependency solving (which cost
a door as much as a native turn's bookkeeping), like the native message route.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentd.errors import AgentdError, Forbidden, InvalidInput, PayloadTooLarge, Unauthorized
from agentd.security.identity import Principal
from agentd.telemetry.spans import parse_traceparent

__all__ = [
    "BODY_METHODS",
    "HTTP_CODES",
    "INT64_MAX",
    "INT64_MIN",
    "NO_TOKEN",
    "BearerAuth",
    "BodyLimit",
    "ErrorMapping",
    "ErrorShape",
    "FastRoute",
    "LastResort",
    "NamedTokens",
    "OnRefused",
    "TokenCheck",
    "actor",
    "add_error_shape",
    "add_fast_route",
    "check_path",
    "content_length",
    "error_response",
    "install_error_handlers",
    "is_json_body",
    "is_write",
    "json_response",
    "loads_strict",
    "model_response",
    "person",
    "principal_of",
    "read_body",
    "replay",
    "response_for",
    "trace_origin",
    "traceparent_origin",
    "unauthorized",
]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
"""Codes of the framework's own HTTP errors (any other: ``http_error``)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

log = logging.getLogger(__name__)


def trace_origin(request: HTTPConnection) -> dict[str, str] | None:
    """The message's ``origin`` for the trace it continues: the request's W3C
    ``traceparent`` (a WebSocket's: its upgrade request's), when it has a valid one."""
    return traceparent_origin(request.headers.get("traceparent"))


def traceparent_origin(value: object) -> dict[str, str] | None:
    """``{"traceparent": value}`` for a valid W3C ``traceparent``; None for anything
    else (an invalid one is ignored, as the W3C recommendation says: the run starts a
    trace of its own)."""
    if not isinstance(value, str) or parse_traceparent(value.strip().lower()) is None:
        return None
    return {"traceparent": value.strip().lower()}


_JSON_TYPE = (b"content-type", b"application/json")


class _JsonResponse(Response):
    """Starlette's ``Response(body, status_code, media_type="application/json")`` for a
    body already encoded, with the headers it would work out (``render``,
    ``init_headers``: a dozen steps in Python) set directly: the same
    ``content-length`` (none for a status that has no body) and ``content-type``."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = ([_JSON_TYPE] if status_code < 200 or status_code in (204, 304)
                            else [(b"content-length", b"%d" % len(body)), _JSON_TYPE])


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response serialised with orjson, for the hot paths (messages, events)
    only: tests/server/test_openapi_contract.py checks what they send against their
    response models. Every other route answers through :func:`model_response`."""
    return _JsonResponse(orjson.dumps(content), status_code)


def model_response(model: type[BaseModel], content: Any, status_code: int = 200
                   ) -> Response:
    """A JSON response serialised through its response model, so what goes out is what
    the OpenAPI document says (a field the model lacks is not sent; one it needs and
    the content lacks is a bug, a 500, caught by the contract tests)."""
    body = model.model_validate(content).model_dump_json(exclude_unset=True)
    return Response(body, status_code=status_code, media_type="application/json")


# -- strict JSON ----------------------------------------------------------------------

# orjson refuses invalid UTF-8, lone surrogates, NaN/Infinity and numbers that overflow
# a double (1e309), but reads an integer past 64 bits as an int up to 2**64-1 or a
# rounded float beyond: only a run of 19+ digits can be one, so only then is the body
# read again with exact integers. The run is looked for with every digit made "0" and
# every other byte " " (bytes.translate, then a substring search: both in C, about
# 30x faster than a regular expression over a body of a megabyte, such as a client
# resending a long conversation).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


class _OutOfRange(ValueError):
    pass


def _int64(text: str) -> int:
    value = int(text) if len(text) <= 20 else INT64_MAX + 1
    if not INT64_MIN <= value <= INT64_MAX:
        raise _OutOfRange(f"integer {text[:24]}{'...' if len(text) > 24 else ''} "
                          "is outside the 64-bit range")
    return value


def loads_strict(raw: bytes) -> Any:
    """Parse a request body; InvalidInput (422) for anything that is not JSON the store
    can keep as it was sent: invalid UTF-8, a lone surrogate, NaN or Infinity, a number
    beyond a double, an integer beyond signed 64 bits."""
    try:
        value = orjson.loads(raw)
        if raw.translate(_DIGITS_AS_ZERO).find(_LONG_RUN) != -1:  # (see _PERCENT)
            json.loads(raw, parse_int=_int64)
    except (orjson.JSONDecodeError, _OutOfRange) as exc:
        reason = exc.msg if isinstance(exc, orjson.JSONDecodeError) else str(exc)
        raise InvalidInput(f"request body is not valid JSON: {reason}",
                           field=_where_out_of_range(raw)) from None
    except RecursionError:  # (the stdlib's parse: nested past the interpreter's stack)
        raise InvalidInput("request body is not valid JSON: nested too deep",
                           field="body") from None
    return value


class _Big(str):
    """An integer's text, kept by a second, lenient parse to find where it is."""


def _where_out_of_range(raw: bytes) -> str:
    """The field holding the first number the store cannot keep (an integer beyond 64
    bits, a float beyond a double), as ``body.settings.weight``; ``body`` when the body
    is not JSON at all or the culprit is elsewhere (a lone surrogate, bad UTF-8)."""
    try:
        value = json.loads(raw, parse_int=lambda t: _Big(t) if len(t) > 18 else int(t),
                           parse_constant=lambda t: float("nan"))
    except (ValueError, RecursionError):  # not JSON; nested deeper than orjson's 1024
        return "body"

    def bad(item: Any) -> bool:
        if isinstance(item, _Big):
            try:
                _int64(item)
            except _OutOfRange:
                return True
            return False
        return isinstance(item, float) and not math.isfinite(item)

    def walk(item: Any, path: str) -> str | None:
        if bad(item):
            return path
        children = (item.items() if isinstance(item, dict)
                    else ((f"[{i}]", v) for i, v in enumerate(item))
                    if isinstance(item, list) else ())
        for key, child in children:
            found = walk(child, f"{path}{key}" if str(key).startswith("[")
                         else f"{path}.{key}")
            if found is not None:
                return found
        return None

    return walk(value, "body") or "body"


def is_json_body(scope: Scope) -> bool:
    """Whether FastAPI would parse this request's body as JSON (no Content-Type, or a
    JSON one: ``strict_content_type=False``)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: bytes = value.partition(b";")[0].strip().lower()
            return media.startswith(b"application/") and (
                media == b"application/json" or media.endswith(b"+json"))
    return True


# -- request bodies -------------------------------------------------------------------


async def read_body(receive: Receive, limit: int | None = None, *,
                    first: Message | None = None) -> bytes | None:
    """The whole request body; None if the client went away. PayloadTooLarge once it
    passes ``limit`` bytes (the rest is left unread). ``first``: the message
    ``receive`` gave already, if the caller read one."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = first if first is not None else await receive()
        first = None
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the client sends next
    (a disconnect)."""
    replayed = False

    async def receive_again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


# -- the path -------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: "%" as a byte value. ``int in bytes`` looks for one byte in C; ``bytes in bytes``
#: first tries its operand as an int, and makes and drops a TypeError doing so (about
#: 2,000 instructions, ten times the search; ``bytes.find`` takes half as many).
_PERCENT = ord("%")


def check_path(scope: Scope) -> None:
    """Refuse a path (or query) the routes cannot take as it was sent (422): one whose
    percent-escapes are not UTF-8 (servers replace such bytes with U+FFFD, so two
    different keys would collide), or one with a control character (no route matches
    one, which would be a misleading 404)."""
    raw: bytes = scope.get("raw_path") or b""
    query: bytes = scope.get("query_string") or b""
    if _PERCENT in raw:
        _check_escapes(raw, "path")
    if _PERCENT in query:
        _check_escapes(query, "query")
    path: str = scope["path"]
    # An ASCII path is printable exactly when it holds no control character: two
    # checks in C, where the expression's search costs a request 2,500 instructions.
    if not (path.isascii() and path.isprintable()) and _CONTROL.search(path):
        raise InvalidInput("the path must not contain control characters", field="path")


def _check_escapes(part: bytes, where: str) -> None:
    try:
        unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the {where} holds percent-escapes that are not UTF-8",
                           field=where) from None


#: How a door renders an error: the error and the headers its answer must carry.
ErrorShape = Callable[[AgentdError, "dict[str, str] | None"], Response]


def add_error_shape(app: Any, prefix: str, shape: ErrorShape) -> None:
    """Render the errors of requests whose path starts with ``prefix`` with ``shape``
    (the longest matching prefix wins)."""
    shapes: list[tuple[str, ErrorShape]] = [*getattr(app.state, "error_shapes", ()),
                                             (prefix, shape)]
    shapes.sort(key=lambda item: -len(item[0]))
    app.state.error_shapes = shapes


#: A route the dispatch layer serves itself: called with the scope, receive, send and
#: the path's match (the door reads its body strictly itself: the dispatch layer does
#: not parse it first, as it does for the router's routes).
FastHandler = Callable[[Scope, Receive, Send, "re.Match[str]"], Awaitable[None]]
#: (method, path pattern, handler).
FastRoute = tuple[str, "re.Pattern[str]", FastHandler]


def add_fast_route(app: Any, method: str, pattern: str, handler: FastHandler) -> None:
    """Serve ``method`` requests whose path matches ``pattern`` (a regex, anchored by
    the caller) with ``handler``, in the dispatch layer: auth, the body limit and the
    error mapping (with the door's :func:`add_error_shape`) apply as to any route; the
    router is not asked. Keep the route in the router too (as the message route is):
    other methods on the path get its 405 there."""
    routes: list[FastRoute] = [*getattr(app.state, "fast_routes", ()),
                               (method, re.compile(pattern), handler)]
    app.state.fast_routes = routes


def _shape_for(scope: Scope | None) -> ErrorShape | None:
    if scope is None:
        return None
    app = scope.get("app")
    state = getattr(app, "state", None)
    path = scope.get("path", "")
    shapes: list[tuple[str, ErrorShape]] = getattr(state, "error_shapes", [])
    for prefix, shape in shapes:
        if path.startswith(prefix):
            return shape
    return None


def error_response(error: AgentdError, headers: dict[str, str] | None = None,
                   scope: Scope | None = None) -> Response:
    """The error as the API's JSON answer, or in the shape of the door ``scope``'s path
    belongs to."""
    shape = _shape_for(scope)
    if shape is not None:
        return shape(error, headers)
    response = json_response({"error": error.to_dict()}, error.status)
    if headers:
        response.headers.update(headers)
    return response


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def response_for(exc: Exception, scope: Scope | None = None) -> Response:
    """The one mapping from an exception to the API's JSON error response (in the
    shape of the door ``scope`` belongs to, if any)."""
    if isinstance(exc, AgentdError):
        return error_response(exc, scope=scope)
    if isinstance(exc, RequestValidationError):
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")}
                  for e in exc.errors()]
        invalid = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if invalid:
            reason = (invalid[0].get("ctx") or {}).get("error")
            message = "request body is not valid JSON" + (f": {reason}" if reason else "")
        else:
            message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        if (scope is not None and not is_json_body(scope)
                and any(e["field"] == "body" for e in errors)):
            # The body was never read as JSON (curl -d sends a form's content type):
            # say so, rather than only that it is not an object.
            media = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                          if k == b"content-type"), "")
            message += (f" (the body is read as JSON only with Content-Type: "
                        f"application/json, and this one is {media[:80]!r}: with curl, "
                        "add -H 'Content-Type: application/json')")
        err = AgentdError(message, code="invalid_input", details={"errors": errors})
        err.status = 422
        return error_response(err, scope=scope)
    if isinstance(exc, StarletteHTTPException):
        code = HTTP_CODES.get(exc.status_code, "http_error")
        err = AgentdError(str(exc.detail), code=code)
        err.status = exc.status_code
        return error_response(err, dict(exc.headers) if exc.headers else None, scope)
    log.exception("unhandled error", exc_info=exc)
    return error_response(AgentdError("internal error; see the daemon log"), scope=scope)


class ErrorMapping:
    """The request layer's error mapping: whatever a route raises (the message fast
    path's handler and FastAPI's router alike) becomes one JSON error response through
    :func:`response_for`. It sits inside the added middleware, so their ``send``
    wrappers (CORS headers, say) see error responses too. An error after the response
    started cannot be answered: it goes on up (the server logs it).

    ``send`` is not wrapped to learn whether the response started (every message of
    every response would pay for it): the error response is tried, and a server that
    refuses a second start says so by raising."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            await self.answer(exc, scope, receive, send)

    @staticmethod
    async def answer(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer what a route raised (``exc``), or raise it on if it cannot be."""
        if isinstance(exc, Forbidden) and not getattr(exc, "audited", False):
            # Every 403 a route raises (a role without the right, an operator-only
            # setting, a quota) is a refusal the audit log records.
            record = getattr(getattr(scope.get("app"), "state", None), "on_refused",
                             None)
            if record is not None:
                exc.audited = True  # type: ignore[attr-defined]
                record(scope, exc)
        try:
            await response_for(exc, scope)(scope, receive, send)
        except Exception:
            raise exc from None


class LastResort:
    """The outermost layer: an error raised inside a middleware (outside
    :class:`ErrorMapping`) still gets the one JSON shape if nothing was sent yet, and
    goes on up to the server's log either way."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await response_for(exc, scope)(scope, receive, send)
            raise


def install_error_handlers(app: FastAPI) -> None:
    """Register :func:`response_for` with FastAPI too (for an app that builds the
    ordinary stack; ``AgentdApp`` maps errors in :class:`ErrorMapping`)."""

    async def handle(_: Request, exc: Exception) -> Response:
        return response_for(exc)

    for kind in (AgentdError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)


class NamedTokens(Protocol):
    """The named tokens' book (``agentd.identity.TokenBook``)."""

    def find(self, token: bytes) -> tuple[Principal | None, str]: ...


#: POST routes that only read: a viewer may call them.
_READ_ONLY_POSTS = re.compile(r"^/v1/agents/[^/]+/memory/search$")


def is_write(scope: Scope) -> bool:
    """Whether a request may change something (what a viewer may not send): every
    method but GET, HEAD and OPTIONS, but the POST routes that only read; every
    WebSocket (its frames send messages and decide)."""
    if scope["type"] == "websocket":
        return True
    return scope["method"] not in ("GET", "HEAD", "OPTIONS") and not (
        scope["method"] == "POST" and _READ_ONLY_POSTS.match(scope["path"]))


#: The headers a token may come in (:meth:`TokenCheck.presented`). A request's header
#: names are looked up in a set, hashed once each (bytes keep their hash, for the
#: next layer's lookup too), rather than compared with each name in turn.
_TOKEN_HEADERS = frozenset({b"authorization", b"sec-websocket-protocol", b"x-api-key"})


class TokenCheck:
    """Bearer tokens (constant-time comparison), the paths that need none, and who a
    request is: the principal of the token it presented (``scope["state"]
    ["principal"]``; its name in ``["token"]``).

    The configuration's tokens are compared here (``tokens``: name -> text;
    ``principals``: name -> principal, an admin over every agent when missing);
    named tokens (``agd_...``) are looked up in the book ``book(scope)`` returns."""

    def __init__(self, tokens: dict[str, str], public_paths: list[str], *,
                 required: bool = True, api_key_prefixes: tuple[str, ...] = (),
                 principals: Mapping[str, Principal] | None = None,
                 book: Callable[[Scope], NamedTokens | None] | None = None) -> None:
        """``api_key_prefixes``: paths that also take the token as ``x-api-key`` (the
        header a protocol's own client sends: ``langgraph-sdk``'s)."""
        self.api_key_prefixes = api_key_prefixes
        self.book = book
        self._required = required
        self.configure(tokens, principals or {})
        self.exact = {p for p in public_paths if not p.endswith("*")}
        self.prefixes = tuple(p[:-1] for p in public_paths if p.endswith("*"))

    def configure(self, tokens: dict[str, str], principals: Mapping[str, Principal]
                  ) -> None:
        """Take the configuration's tokens (at start, and on a configuration reload: a
        token no longer listed is refused from the next request on)."""
        self.principals = dict(principals)
        self.tokens = [(name, t.encode()) for name, t in tokens.items()]
        self.required = self._required and (bool(self.tokens) or self.book is not None)

    def presented(self, scope: Scope) -> bytes:
        """The token the request carries (empty: none). A WebSocket handshake may carry
        it as the subprotocol ``agentd.token.<token>`` instead (browsers cannot set
        headers on one; a URL would put it in logs)."""
        header = b""
        offered = b""
        api_key = b""
        for name, value in scope.get("headers", ()):
            if name in _TOKEN_HEADERS:  # (one lookup for the headers that are not)
                if name == b"authorization":
                    header = value
                elif name == b"sec-websocket-protocol":
                    offered = value
                else:
                    api_key = value
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() == b"bearer" and token:
            return token
        token = b""
        if (api_key and self.api_key_prefixes
                and scope.get("path", "").startswith(self.api_key_prefixes)):
            token = api_key.strip()
        if scope["type"] == "websocket":
            for protocol in offered.split(b","):
                protocol = protocol.strip()
                if protocol.startswith(b"agentd.token."):
                    token = protocol[len(b"agentd.token."):]
        return token

    def principal(self, scope: Scope) -> tuple[Principal | None, str]:
        """Who the request is, or None and why not: ``missing`` (no token),
        ``invalid`` (no such token), ``expired``."""
        token = self.presented(scope)
        if not token:
            return None, "missing"
        found = None
        for name, expected in self.tokens:  # no early exit: every token is compared
            if hmac.compare_digest(token, expected):
                found = name
        if found is not None:
            return self.principals.get(found) or Principal(name=found, role="admin"), ""
        book = self.book(scope) if self.book is not None else None
        if book is not None:
            principal, why = book.find(token)
            return principal, why or "invalid"
        return None, "invalid"

    def identify(self, scope: Scope) -> str | None:
        """The name of the valid token the request carries, else None."""
        principal, _ = self.principal(scope)
        return None if principal is None else principal.name

    def decide(self, scope: Scope) -> AgentdError | None:
        """None when the request may go on (its principal recorded in its scope), else
        the error to answer: 401 for a missing, unknown or expired token where one is
        needed, 403 for a viewer's request that would write."""
        if not self.tokens and self.book is None:
            return None
        principal, why = self.principal(scope)
        state = scope.setdefault("state", {})
        if principal is not None:
            state["principal"] = principal
            state["token"] = principal.name
            if principal.role == "viewer" and is_write(scope) and not self.public(
                    scope["path"]):
                return Forbidden(f"token {principal.label!r} is a viewer: it reads, and "
                                 "may not change anything nor send messages")
            return None
        if not self.required:
            # auth = "none": any request goes on, as no one in particular.
            state["principal"] = NO_TOKEN
            return None
        if self.public(scope["path"]):
            return None
        return Unauthorized("the bearer token has expired" if why == "expired"
                            else "missing or invalid bearer token")

    def allows(self, scope: Scope) -> bool:
        """Whether the request may go on; records who it is in ``scope["state"]``."""
        return self.decide(scope) is None

    def public(self, path: str) -> bool:
        """Whether ``path`` is one of the public paths (no token needed)."""
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))


#: A request without a token where none is needed (``auth = "none"``): a member over
#: every agent (what only a person may do still needs a token: :func:`person`).
NO_TOKEN = Principal(name=None, role="member", source="none")


def content_length(scope: Scope) -> int | None:
    """The request's Content-Length (None if absent; -1 if not a number)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


def unauthorized(scope: Scope | None = None) -> Response:
    return error_response(Unauthorized("missing or invalid bearer token"),
                          {"WWW-Authenticate": "Bearer"}, scope)


def person(scope: Scope, what: str) -> str:
    """The name of the token behind a request that only a person may make (``what``
    says what it is); Unauthorized when it carries none, even with ``auth = "none"``."""
    return actor(scope, what).name or ""


def principal_of(scope: Scope) -> Principal | None:
    """The request's principal (None: no token, on a public path)."""
    found = scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None


def actor(scope: Scope, what: str) -> Principal:
    """The principal of a request that only a person may make (``what`` says what it
    is); Unauthorized when it carries no token, even with ``auth = "none"``."""
    found = principal_of(scope)
    if found is None or found.name is None:
        raise Unauthorized(f"{what} needs a daemon token (Authorization: Bearer ...; the "
                           "daemon's home holds it in the file 'token')")
    return found


#: Told of each refusal (the request's scope, the error): the audit log.
OnRefused = Callable[[Scope, AgentdError], None]


class Gate(Protocol):
    """Paths that also take an outside issuer's bearer tokens
    (:class:`agentd.doors.resource.ResourceGate`)."""

    def covers(self, path: str) -> bool: ...

    async def decide(self, scope: Scope, check: TokenCheck, refused: AgentdError
                     ) -> tuple[AgentdError | None, dict[str, str]]: ...


class BearerAuth:
    """Pure ASGI middleware enforcing :class:`TokenCheck`; each refusal is told to
    ``on_refused`` (the audit log). ``gate``: paths where a request the daemon's
    tokens refuse may still come in with an outside issuer's token."""

    def __init__(self, app: ASGIApp, *, check: TokenCheck,
                 on_refused: OnRefused | None = None, gate: Gate | None = None) -> None:
        self.app = app
        self.check = check
        self.on_refused = on_refused
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.check.decide(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        await self.refuse(refused, scope, receive, send)

    async def refuse(self, refused: AgentdError, scope: Scope, receive: Receive,
                     send: Send) -> None:
        """What follows :meth:`TokenCheck.decide`'s ``refused``: the gate's say, then
        the refusal (audited) unless the gate lets the request in."""
        headers: dict[str, str] | None = (
            {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None)
        if self.gate is not None and scope["type"] == "http" \
                and self.gate.covers(scope["path"]):
            decided, headers = await self.gate.decide(scope, self.check, refused)
            if decided is None:
                await self.app(scope, receive, send)
                return
            refused = decided
        if self.on_refused is not None:
            self.on_refused(scope, refused)
        if scope["type"] == "websocket":
            # Closing before accepting refuses the handshake (HTTP 403).
            await send({"type": "websocket.close", "code": 1008})
            return
        await error_response(refused, headers or None, scope)(scope, receive, send)


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, *, limit: int,
                 overrides: Sequence[tuple[re.Pattern[str], int]] = ()) -> None:
        """``overrides``: paths (full matches) with a limit of their own (a memory
        import takes whole exports)."""
        self.app = app
        self.limit = limit
        self.overrides = tuple(overrides)
        # A body no larger than every limit passes whichever applies: its path is not
        # matched against the overrides (about 3,000 instructions a request).
        self.floor = min([limit, *(n for _, n in self.overrides)])
        # The overrides as one pattern, each its own named group, in their order (an
        # alternation's full match takes the first override that matches the whole
        # path): one match a request, not one per override.
        self._joined = re.compile("|".join(
            f"(?P<_{i}>{p.pattern})" for i, (p, _) in enumerate(self.overrides)))

    def _limit_for(self, path: str) -> int:
        match = self._joined.fullmatch(path)
        if match is None or match.lastgroup is None:
            return self.limit
        return self.overrides[int(match.lastgroup[1:])][1]

    def _too_large(self, limit: int, scope: Scope) -> Response:
        return error_response(PayloadTooLarge(f"request body over {limit} bytes"),
                              scope=scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = content_length(scope)
        if length is not None and length <= self.floor:
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"]) if self.overrides else self.limit
        if length is not None:
            if length > limit:
                await self._too_large(limit, scope)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read the body here, up to the limit, so an
        # oversized one gets 413 whatever route it was meant for.
        try:
            body = await read_body(receive, limit)
        except PayloadTooLarge:
            await self._too_large(limit, scope)(scope, receive, send)
            return
        if body is not None:  # else the client went away
            await self.app(scope, replay(body, receive), send)
