"""The FastAPI application: routes, the request layer, and the runtime's lifespan."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.routing import APIRoute
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentd import web
from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.doors.access import agent_in_scope
from agentd.doors.http import (
    BODY_METHODS,
    BearerAuth,
    BodyLimit,
    ErrorMapping,
    FastRoute,
    LastResort,
    NamedTokens,
    TokenCheck,
    check_path,
    content_length,
    error_response,
    is_json_body,
    loads_strict,
    model_response,
    principal_of,
    read_body,
    replay,
    response_for,
)
from agentd.doors.resource import ResourceGate
from agentd.errors import AgentdError, Forbidden
from agentd.identity import config_principals
from agentd.identity.resource import ProtectedResource
from agentd.protocols import a2a as a2a_door
from agentd.protocols import langgraph as langgraph_door
from agentd.protocols import mcp as mcp_door
from agentd.protocols import openai as openai_door
from agentd.protocols import ws as ws_door
from agentd.security.access import Scopes
from agentd.security.tokens import BOOTSTRAP, ensure_token
from agentd.server import routes
from agentd.server._joined import join_writes
from agentd.server._origin import OriginCheck
from agentd.server.routes._deps import runtime_of
from agentd.server.schemas import Error, Health
from agentd.telemetry.metrics import ROUTE_KEY, HttpMetrics, count_request, route_label
from agentd.version import __version__

__all__ = ["create_app"]


#: The paths whose requests may carry images and files (the body limit is
#: ``[attachments] max_message_mb`` there): the native message route, the OpenAI
#: doors and A2A's JSON-RPC endpoints.
MEDIA_PATHS = (r"/v1/agents/[^/]+/sessions/.+/messages", r"/v1/chat/completions",
               r"/v1/responses", r"/a2a(/.*)?")


#: /health: a router of its own, made once (AgentdApp shares included routers).
_status = APIRouter()


@_status.get("/health", response_model=Health, tags=["status"])
async def health(request: Request) -> Response:
    """Liveness and what the daemon runs on. Public by default."""
    return model_response(Health, await runtime_of(request).health())


def runtime_of_app(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


_METHODS_ORDER = ("get", "post", "put", "patch", "delete")
_MESSAGE_PATH = re.compile(r"^/v1/agents/([^/]+)/sessions/(.+)/messages$")
_MESSAGE_ROUTE = "/v1/agents/{name}/sessions/{key}/messages"


class _Dispatch:
    """The innermost layer of the request path: refuses a path no route can take as
    sent, then hands the message route (the hot path) straight to its handler, and the
    doors' hot routes (``add_fast_route``) to theirs, and everything else to FastAPI's
    router, with a JSON body checked strictly first (FastAPI's own parser takes NaN,
    1e309 and integers the store cannot keep)."""

    def __init__(self, owner: FastAPI, app: ASGIApp) -> None:
        self.owner = owner
        self.app = app
        self._templates: list[tuple[re.Pattern[str], list[str]]] | None = None
        self._strict: tuple[str, ...] | None = None
        self._fast: list[FastRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        check_path(scope)
        await self.route(scope, receive, send)

    async def route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request whose path :func:`check_path` passed, to its route."""
        if scope["method"] == "POST":
            match = _MESSAGE_PATH.match(scope["path"])
            if match is not None:
                scope[ROUTE_KEY] = _MESSAGE_ROUTE
                await routes.sessions.serve_message(
                    self.owner, scope, receive, send, match.group(1), match.group(2))
                return
        fast = self._fast
        if fast is None:
            fast = self._fast = list(getattr(self.owner.state, "fast_routes", ()))
        for method, pattern, handler in fast:
            if scope["method"] == method:
                match = pattern.match(scope["path"])
                if match is not None:
                    scope[ROUTE_KEY] = route_label(pattern.pattern)
                    await handler(scope, receive, send, match)
                    return
        if (scope["method"] in BODY_METHODS and is_json_body(scope)
                and not scope["path"].startswith(self._strict_routes())):
            body = await read_body(receive)
            if body is None:
                return  # the client went away
            if body:
                loads_strict(body)
            receive = replay(body, receive)
        try:
            await self.app(scope, receive, send)
        except StarletteHTTPException as exc:
            if exc.status_code == 405:
                exc.headers = {"Allow": ", ".join(self._allowed(scope["path"]))}
            raise

    def _strict_routes(self) -> tuple[str, ...]:
        """Path prefixes whose routes read their JSON bodies strictly themselves (a
        door's, ``app.state.strict_json_routes``): their bodies are not parsed here too."""
        routes = self._strict
        if routes is None:
            routes = self._strict = tuple(getattr(self.owner.state, "strict_json_routes",
                                                  ()))
        return routes

    def _allowed(self, path: str) -> list[str]:
        """The methods the OpenAPI document gives the most specific path template that
        matches ``path``. Starlette's Allow names the methods of the first route that
        matched; a path has several (GET and DELETE of a session), and session keys may
        hold '/', so ``.../sessions/a/events`` also matches the session routes."""
        if self._templates is None:
            document = self.owner.openapi()
            self._templates = sorted(
                ((re.compile("^" + re.sub(
                    r"\\\{(\w+)\\\}",
                    lambda m: "(.+)" if m.group(1) == "key" else "([^/]+)",
                    re.escape(template)) + "$"),
                  [m.upper() for m in _METHODS_ORDER if m in item])
                 for template, item in document.get("paths", {}).items()),
                key=lambda entry: -len(entry[0].pattern))
        for pattern, methods in self._templates:
            if pattern.match(path):
                return methods
        return []


#: Routers included by :meth:`AgentdApp.include_router`, by router and what an include
#: takes from the app (its dependencies, compared by value, and content-type rule): the
#: router (kept alive: its id is in the key) and the routes the include made.
_SHARED_INCLUDES: dict[tuple[int, tuple[Any, ...], bool], tuple[APIRouter, list[BaseRoute]]] = {}


class _AppState(State):
    """Starlette's ``State`` with each value an attribute of its own as well.

    The request path reads ``app.state.runtime`` (the runtime a route reaches, the
    metrics a request counts in), and ``State`` answers through ``__getattr__``, which
    CPython 3.11 calls only after the ordinary lookup has made and dropped an
    AttributeError: a few thousand instructions a read. Here the ordinary lookup finds
    the value; a name never set still ends in ``State.__getattr__`` (AttributeError),
    and ``_state`` holds every value as in ``State``."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        super().__init__(state)
        for key, value in self._state.items():
            object.__setattr__(self, key, value)

    def __setattr__(self, key: Any, value: Any) -> None:
        self._state[key] = value
        object.__setattr__(self, key, value)

    def __delattr__(self, key: Any) -> None:
        del self._state[key]
        object.__delattr__(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.__setattr__(key, value)

    def __delitem__(self, key: str) -> None:
        self.__delattr__(key)


class AgentdApp(FastAPI):
    """FastAPI with one request path for every route.

    FastAPI's stack (ServerErrorMiddleware, the added middleware, ExceptionMiddleware,
    routing, dependency solving) costs about as much per request as the rest of a turn
    on the message route, which used to be served before it, with its own copy of the
    auth and limit checks. Here the added middleware (``add_middleware``: auth, body
    limit, and whatever comes next, CORS or rate limits) wrap one dispatch layer that
    serves the message route itself and sends the rest to the router, so nothing added
    to the stack can miss the busiest route. Errors are mapped in one place
    (:class:`ErrorMapping`) for both. See docs/design-notes.md.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.state = _AppState(dict(self.state._state))

    def include_router(self, router: APIRouter, **options: Any) -> None:
        """FastAPI's ``include_router``, with what FastAPI builds for each included route
        (its dependencies, parameter and response fields: about 0.15 s for the whole
        API, on the first request that passes each router) made once per process and
        shared by every app that includes the same router the same way. An app is made
        per daemon, but per test in the suite, and per request nothing changes. An
        include with options is FastAPI's own."""
        if options:
            super().include_router(router, **options)
            return
        base = self.router
        key = (id(router), tuple(base.dependencies), base.strict_content_type)
        shared = _SHARED_INCLUDES.get(key)
        if shared is None:
            # A router configured as this app's: what an include takes from its parent.
            template = APIRouter(dependencies=list(base.dependencies),
                                 strict_content_type=base.strict_content_type)
            template.include_router(router)
            shared = _SHARED_INCLUDES.setdefault(key, (router, list(template.routes)))
        self.router.routes.extend(shared[1])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's and FastAPI's __call__, without their two frames per request.
        scope["app"] = self
        if self.root_path:
            scope["root_path"] = self.root_path
        stack = self.middleware_stack
        if stack is None:
            stack = self.middleware_stack = self.build_middleware_stack()
        kind = scope["type"]
        if kind == "http":
            # A response's head and body in one send (agentd.server._joined).
            join_writes(scope, send)
        elif kind == "lifespan":
            send = self._refusals(send)
        await stack(scope, receive, send)

    def _refusals(self, send: Send) -> Send:
        """The lifespan's ``send``, saying why the daemon refuses to start in one line
        when it does on purpose (the lifespan's ``startup_refused``: a database with a
        newer schema, a node id in use...) instead of with a traceback."""
        async def refusing(message: MutableMapping[str, Any]) -> None:
            refused = getattr(self.state, "startup_refused", None)
            if message["type"] == "lifespan.startup.failed" and refused:
                message = {**message, "message": f"agentd cannot start: {refused}"}
            await send(message)

        return refusing

    def build_middleware_stack(self) -> ASGIApp:
        dispatch = _Dispatch(self, AsyncExitStackMiddleware(self.router))
        app: ASGIApp = ErrorMapping(dispatch)
        built: list[ASGIApp] = []
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
            built.append(app)
        stack = LastResort(app)
        return _Front.of(stack, built, dispatch) or stack


class _Front:
    """The request layer as ``create_app`` adds it (``LastResort``, ``HttpMetrics``
    when metrics are on, ``OriginCheck``, ``BearerAuth``, ``BodyLimit``,
    ``ErrorMapping``, then the dispatch's path check) in one frame for an HTTP request:
    each layer is a coroutine and its frame, made for every request and passed
    through again each time the request's task waits (twice a waited turn), which
    cost a turn about 15,000 instructions. Each check is the layer's own, in the same
    order, and anything out of the ordinary (a refusal's gate, a body over the
    smallest limit or of no declared length) goes on through the layer itself; a
    WebSocket or the lifespan goes through the layers one by one
    (:meth:`AgentdApp.build_middleware_stack`). Any other middleware added
    (``add_middleware``: termo-agent's door, a test's) leaves the stack unfused."""

    def __init__(self, stack: ASGIApp, metrics: HttpMetrics | None, origin: OriginCheck,
                 auth: BearerAuth, limit: BodyLimit, dispatch: _Dispatch) -> None:
        self.stack = stack
        self.metrics = None if metrics is None else metrics.metrics
        self.origin = origin
        self.check = auth.check
        self.auth = auth
        self.limit = limit
        self.floor = limit.floor
        self.dispatch = dispatch

    @classmethod
    def of(cls, stack: ASGIApp, built: list[ASGIApp], dispatch: _Dispatch
           ) -> _Front | None:
        """The stack fused, when the added middleware (``built``, innermost first) are
        exactly create_app's; else None."""
        kinds = [type(layer) for layer in built]
        if kinds not in ([BodyLimit, BearerAuth, OriginCheck],
                         [BodyLimit, BearerAuth, OriginCheck, HttpMetrics]):
            return None
        limit, auth, origin = built[0], built[1], built[2]
        assert isinstance(limit, BodyLimit) and isinstance(auth, BearerAuth)
        assert isinstance(origin, OriginCheck)
        metrics = built[3] if len(built) == 4 else None
        assert metrics is None or isinstance(metrics, HttpMetrics)
        return cls(stack, metrics, origin, auth, limit, dispatch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.stack(scope, receive, send)
            return
        try:  # LastResort's
            metrics = self.metrics() if self.metrics is not None else None
            status = 0
            out = send
            if metrics is not None:
                async def sending(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                    await send(message)

                out = sending
            try:  # HttpMetrics'
                problem = self.origin.problem(scope)
                if problem is not None:
                    await error_response(Forbidden(problem), scope=scope)(
                        scope, receive, out)
                elif (refused := self.check.decide(scope)) is not None:
                    await self.auth.refuse(refused, scope, receive, out)
                elif (length := content_length(scope)) is None or length > self.floor:
                    await self.limit(scope, receive, out)
                else:
                    try:  # ErrorMapping's
                        check_path(scope)
                        await self.dispatch.route(scope, receive, out)
                    except Exception as exc:
                        await ErrorMapping.answer(exc, scope, receive, out)
            except BaseException:
                status = status or 500
                raise
            finally:
                if metrics is not None and status:
                    count_request(metrics, scope, status)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await response_for(exc, scope)(scope, receive, send)
            raise


_ERROR_REF = "#/components/schemas/Error"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"  # check_path refuses control characters (422)
_STATUS_TEXT = {401: "Missing or invalid bearer token", 404: "Not found",
                413: "Request body too large", 422: "Invalid input"}


#: FastAPI's OpenAPI documents by what they are made of (see _routes_document), the
#: last few only; each with the routes of its key (kept alive: their ids are the key).
_DOCUMENTS: dict[tuple[Any, ...], tuple[list[BaseRoute], bytes]] = {}
_DOCUMENTS_KEPT = 4


def _routes_document(app: FastAPI, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """FastAPI's document of ``app`` (``make``), before the request layer's additions.

    Making it takes about 0.3 s of CPU (a JSON schema for every model of every route),
    and it is the same for every app made of the same route objects: AgentdApp shares
    its included routers between apps, so a process that builds several apps (a test
    process builds hundreds) makes it once. Starlette's own routes are not in the
    document; any other route's id is in the key, so an app with a route made for it
    has a key of its own."""
    documented: list[BaseRoute] = [
        route for route in app.routes if isinstance(route, APIRoute)
        or not isinstance(route, (Route, Mount, WebSocketRoute, Host))]
    key = (app.title, app.version, app.description, app.openapi_version,
           orjson.dumps([app.servers, app.openapi_tags]),
           tuple(id(route) for route in documented))
    kept = _DOCUMENTS.get(key)
    if kept is None:
        kept = (documented, orjson.dumps(make()))
        while len(_DOCUMENTS) >= _DOCUMENTS_KEPT:
            del _DOCUMENTS[next(iter(_DOCUMENTS))]
        _DOCUMENTS[key] = kept
    document: dict[str, Any] = orjson.loads(kept[1])  # (a copy: the caller completes it)
    return document


def _document_statuses(document: dict[str, Any], check: TokenCheck) -> dict[str, Any]:
    """Add to every operation the statuses the request layer can answer for it (routes
    list their own 404s, 409s and the like): 401 unless the path is public, 413 when it
    takes a body, 422 for a path, query or body it cannot take, 404 when the path names
    something; all with the one ``Error`` schema, which also replaces FastAPI's own 422
    shape (never sent). Path parameters say they take no control character. Done on
    the document, so routes added later get it too."""
    error = {"application/json": {"schema": {"$ref": _ERROR_REF}}}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            statuses = {422}
            if not check.public(path):
                statuses.add(401)
                operation["security"] = [{"bearer": []}]
            if method.upper() in BODY_METHODS:
                statuses.add(413)
            if "{" in path:
                statuses.add(404)
            for parameter in operation.get("parameters", ()):
                schema = parameter.get("schema", {})
                if parameter.get("in") == "path" and schema.get("type") == "string":
                    schema.setdefault("pattern", _NO_CONTROL)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses.setdefault(str(status), {"description": _STATUS_TEXT[status]})
            for status, response in responses.items():
                if int(status) >= 400:
                    # (a page for a person, which a route may document too, is kept)
                    response["content"] = {**{k: v for k, v in response.get(
                        "content", {}).items() if k != "application/json"}, **error}
    components = document.setdefault("components", {})
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "A daemon token: AGENTD_TOKEN(S), agentd.toml, or the file 'token' "
                       "in the daemon's home."}}
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            # A body documented by hand (openapi_extra: the message route) names its
            # models' schemas as components; they are moved there.
            for media in ((operation.get("requestBody") or {}).get("content") or {}).values():
                for name, schema in (media.get("schema") or {}).pop("$defs", {}).items():
                    schemas.setdefault(name, schema)
    for name, schema in Error.model_json_schema(
            ref_template="#/components/schemas/{model}").pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault("Error", Error.model_json_schema(
        ref_template="#/components/schemas/{model}"))
    return document


def _named_tokens(scope: Scope) -> NamedTokens | None:
    """The runtime's book of named tokens (None before the runtime is open)."""
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    return None if runtime is None else runtime.identity.tokens


def _mcp_resource(scope: Scope) -> ProtectedResource | None:
    """The runtime's verifier of ``[mcp.oauth]`` tokens (None before it is open)."""
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    return None if runtime is None else runtime.mcp_resource


def _record_refusal(scope: Scope, error: AgentdError, reason: str | None = None) -> None:
    """Tell the audit log of a refused request: who (the token's name and role, or the
    client's address for a request without a valid token), what, and why."""
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    if runtime is None:
        return
    principal = principal_of(scope)
    client = scope.get("client") or ("?", 0)
    name = principal.name if principal is not None else None
    runtime.identity.audit.refused(
        actor=name, role=principal.role if principal is not None else None,
        action="request.denied",
        resource=f"{scope.get('method', 'WEBSOCKET')} {scope.get('path', '')}"[:500],
        reason=(reason or f"{error.code}: {error.message}")[:500],
        key=None if name is not None else f"client:{client[0]}",
        details={"status": error.status, "code": error.code})


def _reload_tokens(app: FastAPI, runtime: Runtime) -> None:
    """The request layer's part of a configuration reload: the configuration's tokens,
    their roles and scopes (a token taken out is refused from the next request), and
    termo-agent's routes' own copy of them and of ``max_message_bytes``."""

    def prepare(new: Settings) -> Callable[[], object]:
        tokens = new.named_tokens()
        if not tokens:
            tokens[BOOTSTRAP] = ensure_token(new.home)
        principals = config_principals(new, tokens)

        def apply() -> None:
            app.state.token_check.configure(tokens, principals)
            app.state.principals = principals
            app.state.scopes = Scopes(new.access)
            runtime.identity.configure_tokens(principals)
            termo = getattr(app.state, "termo", None)
            if termo is not None:
                termo.reconfigure(new, tokens, principals)
        return apply

    runtime.on_reload(("token", "tokens", "admin_tokens", "access", "max_message_bytes"),
                      prepare)


def create_app(settings: Settings, runtime: Runtime | None = None, *,
               reload_from: Callable[[], Settings] | None = None) -> FastAPI:
    """Build the app. The runtime opens in the lifespan unless one is passed in;
    ``reload_from``: how its configuration reloads read the settings (the daemon's,
    with its command line's options)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        try:
            rt = (await Runtime.open(settings, reload_from=reload_from) if runtime is None
                  else runtime)
        except AgentdError as exc:
            app.state.startup_refused = exc.message
            raise
        # A daemon that must stop at once (store/nodes.py) stops its server too.
        exit_server = getattr(app.state, "exit_server", None)
        if exit_server is not None:
            rt.on_fatal = exit_server
        rt.identity.configure_tokens(app.state.principals)
        if owned:
            _reload_tokens(app, rt)
        app.state.runtime = rt
        try:
            termo = getattr(app.state, "termo", None)
            if termo is not None:
                # termo-agent's routes: the agent and its adapter, ready (or no start).
                await termo.prepare(rt)
            yield
        finally:
            await mcp.close()
            if owned:
                await rt.close()

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI's native OpenTelemetry hooks cost ~15% of a turn even with no
        # exporter; they are on only when asked for (AGENTD_TELEMETRY=true).
        on = settings.telemetry.http
        extra["telemetry"] = {"tracing": on, "metrics": on, "logs": on,
                              "operation_spans": on}
    app = AgentdApp(
        **extra,
        title="agentd",
        version=__version__,
        description="An operating system for AI agents: durable agents and sessions "
                    "behind one streaming HTTP API.",
        lifespan=lifespan,
        # Parse a JSON body that comes with no Content-Type at all.
        strict_content_type=False,
        # Token scopes: every /v1/agents/{name}/... route checks the agent first.
        dependencies=[Depends(agent_in_scope)],
    )
    if runtime is not None:
        # Usable without the lifespan too (ASGITransport, lifespan="off").
        app.state.runtime = runtime
    tokens = settings.named_tokens()
    if not tokens:
        tokens[BOOTSTRAP] = ensure_token(settings.home)
    # Telegram's webhook carries its own secret (checked by the channel), not a token.
    # The console's page and files are public too (they hold no data: docs/console.md).
    # Who each of the configuration's tokens is (role and scope: docs/security.md);
    # named tokens are the runtime's (agentd.identity), looked up per request.
    principals = config_principals(settings, tokens)
    app.state.principals = principals
    if runtime is not None and hasattr(runtime, "identity"):
        runtime.identity.configure_tokens(principals)
    # The A2A cards at the host's root and of the agent the operator names for it.
    public_card = settings.a2a.public_card
    host_card = ([a2a_door.CARD_PATH, f"{a2a_door.PREFIX}/{public_card}{a2a_door.CARD_PATH}"]
                 if public_card else [])
    # The MCP door as an OAuth protected resource ([mcp.oauth]): its metadata is public,
    # and the OAuth callback of agents' MCP servers' logins carries a state, no token.
    resource_paths = (mcp_door.install_resource(app, lambda: runtime_of_app(app),
                                                settings.mcp_resource())
                      if settings.mcp.oauth is not None else [])
    check = TokenCheck(tokens, [*settings.public_paths, *host_card, *resource_paths,
                                routes.mcp_oauth.CALLBACK,
                                routes.channels.WEBHOOK_PREFIX + "*",
                                *(web.PUBLIC_PATHS if settings.console else ())],
                       required=settings.auth_enabled,
                       api_key_prefixes=(langgraph_door.PREFIX + "/",),
                       principals=principals, book=_named_tokens)
    app.state.token_check = check
    if runtime is not None and hasattr(runtime, "on_reload"):
        _reload_tokens(app, runtime)
    app.state.scopes = Scopes(settings.access)
    app.state.on_refused = _record_refusal
    app.state.max_body_bytes = settings.max_body_bytes
    # The request layer (AgentdApp): a middleware added later goes outside these two.
    # The routes that take images and files: a body, and their bytes in base64 (4/3).
    media = settings.max_body_bytes + settings.attachments.max_message_bytes * 4 // 3
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, overrides=[
        (re.compile(r"/v1/agents/[^/]+/memory/import"), settings.memory.max_import_mb << 20),
        (re.compile(r"/v1/skills$"), routes.skills.MAX_ARCHIVE_BYTES),
        # Eval cases (imported from an export): a request holds one case up to
        # [evals] max_case_bytes, or many smaller ones (the client's chunks).
        (re.compile(r"/v1/evals/suites/[^/]+/cases"),
         settings.max_body_bytes + settings.evals.max_case_bytes),
        *((re.compile(path), media) for path in MEDIA_PATHS)])
    app.add_middleware(BearerAuth, check=check, on_refused=_record_refusal,
                       gate=ResourceGate((mcp_door.PATH,), _mcp_resource, settings.base_url())
                       if settings.mcp.oauth is not None else None)
    if settings.termo.served:
        # termo-agent's routes (agentd serve --adapter / --termo): outside the stack above,
        # answering its own paths with its own shapes and auth (docs/termo.md).
        from agentd.protocols.termo import Termo, TermoDoor

        app.state.termo = Termo(settings, tokens, principals=principals,
                                book=_named_tokens)
        app.add_middleware(TermoDoor, termo=app.state.termo)
    # Outside everything else: DNS rebinding and cross-site requests (server/_origin.py).
    app.add_middleware(OriginCheck, allowed_hosts=settings.allowed_hosts,
                       allowed_origins=settings.allowed_origins)
    if settings.telemetry.metrics:
        # Outermost, so that every answer counts (refusals too): docs/operations.md.
        app.add_middleware(HttpMetrics, metrics=lambda: getattr(
            getattr(app.state, "runtime", None), "metrics", None))

    app.include_router(_status)
    app.include_router(routes.metrics.router)
    # The message route is the hot path: its router goes first (routes match in order).
    app.include_router(routes.sessions.router)
    # The protocol doors (agentd.protocols), early for the same reason (their paths are
    # their own: none can take a native request); not in this document.
    openai_door.install(app)
    langgraph_door.install(app)
    # The MCP and A2A doors import their SDKs on their first request (docs/design-notes.md).
    mcp = mcp_door.install(app, lambda: runtime_of_app(app))
    app.include_router(ws_door.router)
    a2a_door.install(app, lambda: runtime_of_app(app), public_card=settings.a2a.public_card)
    app.include_router(routes.agents.router)
    app.include_router(routes.run_list.router)
    app.include_router(routes.export.router)
    app.include_router(routes.runs.router)
    app.include_router(routes.evals.fork_router)
    app.include_router(routes.evals.router)
    app.include_router(routes.subtasks.router)
    app.include_router(routes.checkpoints.router)
    app.include_router(routes.snapshots.router)
    app.include_router(routes.usage.router)
    app.include_router(routes.kernel.router)
    app.include_router(routes.overview.router)
    app.include_router(routes.memory.router)
    app.include_router(routes.memory_entries.router)
    app.include_router(routes.skills.router)
    app.include_router(routes.skills.agent_router)
    app.include_router(routes.schedules.agent_router)
    app.include_router(routes.schedules.router)
    app.include_router(routes.heartbeat.router)
    app.include_router(routes.webhooks.agent_router)
    app.include_router(routes.webhooks.router)
    app.include_router(routes.webhooks.delivery_router)
    app.include_router(routes.channels.router)
    app.include_router(routes.channels.state_router)
    app.include_router(routes.approvals.router)
    app.include_router(routes.tools.router)
    app.include_router(routes.identity.token_router)
    app.include_router(routes.identity.tenant_router)
    app.include_router(routes.identity.audit_router)
    app.include_router(routes.secrets.router)
    app.include_router(routes.mcp_oauth.router)
    app.include_router(routes.mcp_oauth.callback_router)
    app.include_router(routes.admin.router)
    app.include_router(routes.feed.router)
    app.include_router(routes.events.router)
    if settings.console:
        web.install(app)

    document_app = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_statuses(_routes_document(app, document_app),
                                                    check)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
