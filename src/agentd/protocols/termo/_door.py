"""termo-agent's HTTP routes for one agent (adapter-backed, or a native agentd agent:
``agentd serve --termo``), mounted on the daemon.

:class:`TermoDoor` is a pure ASGI middleware, outermost in the daemon's stack: a
request for one of termo-agent's routes (or the adapter's extra routes) is answered
here, with termo-agent's shapes (``{"error": "..."}`` bodies, ``data: {...}`` SSE
frames); anything else goes on to agentd's own API unchanged. Which route wins:

1. termo-agent's own routes (``/health``, ``/api/send``, ``/api/sessions``, ...);
2. agentd's own routes (``/v1/...``, ``/openapi.json``, ...): an adapter cannot
   shadow them;
3. the adapter's ``extra_routes()``;
4. agentd's additions a termo client may use (``POST /api/memory/search``).

Every call reaches agentd through the Runtime facade, and the adapter through its
hooks (bounded by ``[adapters] timeout_s``). See docs/termo.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from agentd.config import Settings
from agentd.doors.access import may_use
from agentd.doors.http import (
    NamedTokens,
    TokenCheck,
    content_length,
    principal_of,
    trace_origin,
)
from agentd.doors.sse import sse_response
from agentd.errors import AgentdError, AgentNotFound, NotFound, SessionNotFound
from agentd.protocols.termo._hooks import (
    ExtraRoute,
    HandlerRequest,
    compile_path,
    own_hook,
    to_response,
)
from agentd.runtime import Token
from agentd.security.access import scope_access
from agentd.security.identity import Principal
from agentd.store.entries import EntryFilter

__all__ = ["Termo", "TermoDoor"]

log = logging.getLogger(__name__)

#: termo-agent's default session key (``/api/send`` without one).
DEFAULT_SESSION = "api:direct"
_PAGE = 10_000
_END_KINDS = ("run.completed", "run.failed", "run.cancelled", "run.interrupted")

Handler = Callable[[Request, Any, dict[str, str]], Awaitable[Response]]


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content, default=str), status_code=status,
                    media_type="application/json")


def _error(message: str, status: int, **extra: Any) -> Response:
    """termo-agent's error answer: ``{"error": "..."}`` (agentd adds a ``code``)."""
    return _json({"error": message, **extra}, status)


def _token_of(request: Request) -> str | None:
    """The name of the token the request carries (``termo``: the termo token)."""
    who = request.scope.get("state", {}).get("token")
    return who if isinstance(who, str) else None


async def _maybe_await(value: Any) -> Any:
    """A hook's answer (termo-agent's hooks are coroutines; a plain method's value is
    taken as it is)."""
    return await value if inspect.isawaitable(value) else value


class _Refused(Exception):
    """A request answered with an error before reaching agentd."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


class Termo:
    """The door's state: the agent it serves, who may call it, the adapter's extra
    routes. Made by ``create_app``; :meth:`prepare` runs at start-up (or on the first
    request when the app runs without its lifespan)."""

    def __init__(self, settings: Settings, tokens: dict[str, str], *,
                 principals: Mapping[str, Principal] | None = None,
                 book: Callable[[Scope], NamedTokens | None] | None = None) -> None:
        config = settings.termo
        if not config.served:
            raise ValueError("termo: neither an adapter nor enabled")
        self.agent = config.agent
        #: None: a native agent, with its own model (``agentd serve --termo``).
        self.model = f"adapter:{config.adapter}" if config.adapter is not None else None
        self.config_path = config.config
        self.timeout_s = settings.adapters.timeout_s
        self.max_body = settings.max_body_bytes
        self.max_message = settings.max_message_bytes
        self.token = config.token
        named, known = self._tokens(tokens, principals or {})
        self.check = TokenCheck(named, settings.public_paths, principals=known,
                                required=settings.auth_enabled, book=book)
        self._adapter: Any = None
        self._extras: list[ExtraRoute] = []
        self._prefixes: tuple[str, ...] = ()
        self._ready = False
        self._lock: asyncio.Lock | None = None
        table: list[tuple[str, dict[str, Handler]]] = [
                (r"/health", {"GET": self.health}),
                (r"/api/send", {"POST": self.send}),
                (r"/api/sessions/send", {"POST": self.send}),  # termo's old path
                (r"/api/sessions/(?P<key>[^/]+)/history", {"GET": self.history}),
                (r"/api/sessions", {"GET": self.sessions}),
                (r"/api/config", {"GET": self.get_config, "PATCH": self.patch_config}),
                (r"/api/tools", {"GET": self.tools}),
                (r"/api/memory", {"GET": self.get_memory, "PATCH": self.patch_memory}),
                (r"/api/heartbeat", {"GET": self.get_heartbeat,
                                     "PATCH": self.patch_heartbeat}),
                (r"/api/update", {"POST": self.update}),
                (r"/api/restart", {"POST": self.restart})]
        self.routes = [(re.compile(path), handlers) for path, handlers in table]
        self.fallbacks: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"/api/memory/search"), {"POST": self.search_memory})]

    # -- start-up -------------------------------------------------------------------

    def _tokens(self, tokens: dict[str, str], principals: Mapping[str, Principal]
                ) -> tuple[dict[str, str], dict[str, Principal]]:
        named = dict(tokens)
        known = dict(principals)
        if self.token:
            named["termo"] = self.token
            # termo-agent's token: a member of this one agent, on these routes only.
            known["termo"] = Principal(name="termo", role="member", access=scope_access(
                "termo", agents=[self.agent]))
        return named, known

    def reconfigure(self, settings: Settings, tokens: dict[str, str],
                    principals: Mapping[str, Principal]) -> None:
        """Take what a configuration reload changes of these routes: the daemon's
        tokens and ``max_message_bytes`` (the rest of ``[termo]`` needs a restart)."""
        named, known = self._tokens(tokens, principals)
        self.check.configure(named, known)
        self.max_message = settings.max_message_bytes

    async def prepare(self, runtime: Any) -> None:
        """Create the agent (or point it at the adapter), keep it awake (its adapter
        holds what a termo client expects to last), initialise the adapter and read
        its extra routes. An adapter that cannot load stops the daemon here."""
        try:
            agent = await runtime.stored_agent(self.agent)
        except AgentNotFound:
            agent = await (runtime.create_agent(name=self.agent, model=self.model)
                           if self.model is not None
                           else runtime.create_agent(name=self.agent))
        else:
            if self.model is not None and agent.model != self.model:
                agent = await runtime.update_agent(self.agent, {"model": self.model})
        if agent.state == "created":
            # Running now, not at its first message: that send then returns as soon
            # as its run is handed over, before the stream subscribes (no token missed).
            await runtime.set_state(self.agent, "resume")
        runtime.keep_awake(self.agent)
        if self.model is not None:
            await runtime.configure_adapter(self.agent, self.config_path)
            await self._adapter_of(runtime)
        self._ready = True

    async def _ensure(self, runtime: Any) -> None:
        if self._ready:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._ready:
                await self.prepare(runtime)

    async def _adapter_of(self, runtime: Any) -> Any:
        """The agent's adapter (a fresh one after a restart: its routes re-read); None
        for a native agent (every hook absent: the door's own answers)."""
        if self.model is None:
            return None
        adapter = await runtime.adapter_of(self.agent)
        if adapter is not self._adapter:
            extras: list[ExtraRoute] = []
            hook = own_hook(adapter, "extra_routes")
            for entry in (hook() if hook is not None else None) or ():
                method, path, handler = entry
                extras.append(ExtraRoute(method=str(method).upper(),
                                         pattern=compile_path(str(path)),
                                         handler=handler))
            prefixes = own_hook(adapter, "public_route_prefixes")
            self._prefixes = tuple(str(p) for p in (prefixes() if prefixes else ()) or ())
            self._extras = extras
            self._adapter = adapter
        return adapter

    # -- routing and auth -----------------------------------------------------------

    def _public(self, adapter: Any, path: str) -> bool:
        """The adapter's public paths (its prefixes, its dynamic check): on the
        door's routes only, never agentd's own."""
        if self._prefixes and path.startswith(self._prefixes):
            return True
        check = own_hook(adapter, "is_public_request")
        if check is None:
            return False
        try:
            return check(path) is True
        except Exception:
            log.exception("the adapter's is_public_request raised; %s needs a token",
                          path)
            return False

    def allows(self, scope: Scope, adapter: Any) -> bool:
        return self.check.allows(scope) or self._public(adapter, scope["path"])

    def find(self, scope: Scope) -> tuple[Handler | None, dict[str, str]] | None:
        """The handler of a request for one of the door's routes (None as the handler:
        the path is the door's, the method is not), or None: not the door's."""
        path, method = scope["path"], scope["method"]
        found = self._match(self.routes, path, method)
        if found is not None:
            return found
        app = scope.get("app")
        router = getattr(app, "router", None)
        if router is not None and any(
                route.matches(scope)[0] != Match.NONE for route in router.routes):
            return None  # agentd's own route: never shadowed
        for extra in self._extras:
            params = extra.match(method, path)
            if params is not None:
                return self._extra(extra), params
        return self._match(self.fallbacks, path, method)

    @staticmethod
    def _match(table: list[tuple[re.Pattern[str], dict[str, Handler]]], path: str,
               method: str) -> tuple[Handler | None, dict[str, str]] | None:
        for pattern, handlers in table:
            found = pattern.fullmatch(path)
            if found is not None:
                handler = handlers.get("GET" if method == "HEAD" else method)
                return handler, found.groupdict()
        return None

    def _extra(self, route: ExtraRoute) -> Handler:
        async def call(request: Request, runtime: Any, params: dict[str, str]
                       ) -> Response:
            body = await self._body(request)
            shim = HandlerRequest(method=request.method, path=request.url.path,
                                  headers=request.headers, query=request.query_params,
                                  match_info=params, body=body, starlette=request)
            try:
                async with asyncio.timeout(self.timeout_s):
                    result = await _maybe_await(route.handler(shim))
            except TimeoutError:
                return _error(f"the adapter's route did not answer within "
                              f"{self.timeout_s:g}s", 504)
            except Exception as exc:
                if isinstance(getattr(exc, "status", None), int):
                    return to_response(exc)  # aiohttp's raised web.HTTPException
                log.exception("the adapter's route %s %s raised", request.method,
                              request.url.path)
                return _error(f"the adapter's route raised {type(exc).__name__}", 500)
            return to_response(result)
        return call

    # -- helpers --------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        length = content_length(request.scope)
        if length is not None and length > self.max_body:
            raise _Refused(_error(f"request body over {self.max_body} bytes", 413))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise _Refused(_error(f"request body over {self.max_body} bytes", 413))
            chunks.append(chunk)
        return b"".join(chunks)

    async def _object(self, request: Request) -> dict[str, Any]:
        """The request's JSON object (termo-agent answers 500 to a body that is not
        JSON; agentd answers 400 saying why)."""
        raw = await self._body(request)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise _Refused(_error(f"request body is not valid JSON: {exc.msg}",
                                  400)) from None
        if not isinstance(body, dict):
            raise _Refused(_error("request body must be a JSON object", 400))
        return body

    async def _hook(self, runtime: Any, name: str) -> Any:
        """The adapter's own hook ``name`` bounded by the adapter timeout, or None."""
        hook = own_hook(await self._adapter_of(runtime), name)
        if hook is None:
            return None

        async def bounded(*args: Any) -> Any:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await _maybe_await(hook(*args))
            except TimeoutError:
                raise _Refused(_error(f"the adapter's {name} did not answer within "
                                      f"{self.timeout_s:g}s", 504)) from None
            except _Refused:
                raise
            except Exception as exc:
                log.exception("the adapter's %s raised", name)
                raise _Refused(_error(f"the adapter's {name} raised "
                                      f"{type(exc).__name__}: {str(exc)[:500]}",
                                      502)) from None
        return bounded

    # -- termo-agent's routes ---------------------------------------------------------

    async def health(self, request: Request, runtime: Any, _: dict[str, str]) -> Response:
        daemon: dict[str, Any] = await runtime.health()
        hook = await self._hook(runtime, "health")
        mine = await hook() if hook is not None else {"status": "ok"}
        data = {**daemon, **(mine if isinstance(mine, dict) else {})}
        if daemon.get("status") != "ok":
            data["status"] = daemon.get("status")
        return _json(data)

    async def send(self, request: Request, runtime: Any, _: dict[str, str]) -> Response:
        body = await self._object(request)
        message = body.get("message", "")
        key = body.get("session_key", DEFAULT_SESSION)
        if not message:
            return _error("message is required", 400)
        if not isinstance(message, str):
            return _error("message must be a string", 400)
        if not isinstance(key, str) or not key:
            return _error("session_key must be a non-empty string", 400)
        if len(message.encode()) > self.max_message:
            return _error(f"message is over {self.max_message} bytes", 413)
        stream = bool(body.get("stream", False))
        try:
            origin = {**({} if stream else {"whole": True}), **(trace_origin(request) or {})}
            sent = await runtime.send(self.agent, key, message,
                                      priority="interactive", stream=stream,
                                      origin=origin or None, start=True)
        except AgentdError as exc:
            return _error(exc.message, exc.status if exc.status < 500 else 503,
                          code=exc.code)
        if stream:
            sub = runtime.subscribe(sent.session.id)
            after = sent.events[0].seq - 1 if sent.events else 0
            return sse_response(self._frames(runtime, sub, sent.session.id, after,
                                             sent.run.id, sent.events))
        run = await runtime.wait(sent.run.id)
        if run.status == "completed":
            return _json({"response": run.output or "", "session_key": key})
        error = run.error or {}
        code = str(error.get("code") or run.status)
        return _error(str(error.get("message") or f"the run ended {run.status}"),
                      504 if code == "adapter_timeout" else 502, code=code,
                      run_id=run.id)

    async def _frames(self, runtime: Any, sub: Any, session_id: str, after: int,
                      run_id: str, known: list[Any]) -> AsyncIterator[bytes]:
        """termo-agent's SSE frames of one run, from the session's event stream (the
        run belongs to the daemon: a client that goes away ends only this)."""

        def frame(payload: dict[str, Any]) -> bytes:
            return b"data: " + orjson.dumps(payload, default=str) + b"\n\n"

        try:
            async for item in runtime.follow(session_id, after, known=known,
                                             subscription=sub):
                if isinstance(item, Token):
                    if item.run_id == run_id and item.text:
                        yield frame({"type": "token", "content": item.text})
                    continue
                if item is None or item.run_id != run_id:
                    continue
                data = item.data
                # An adapter's own metadata for a call (call_id...) is flattened into
                # the frame, as termo-agent does; it cannot replace the frame's keys.
                metadata = data.get("metadata") or {}
                if item.kind == "tool.started":
                    yield frame({**metadata, "type": "tool_start", "content": "",
                                 "name": data.get("name", ""),
                                 "input": data.get("arguments", {})})
                elif item.kind == "tool.finished":
                    payload = {**metadata, "type": "tool_end",
                               "content": data.get("output", ""),
                               "name": data.get("name", "")}
                    if data.get("is_error"):
                        payload["is_error"] = True
                    yield frame(payload)
                elif item.kind == "run.completed":
                    payload = {"type": "done", "content": data.get("output", "")}
                    usage = data.get("usage") or {}
                    if usage.get("input_tokens") or usage.get("output_tokens"):
                        payload["usage"] = {
                            "prompt_tokens": usage.get("input_tokens", 0),
                            "completion_tokens": usage.get("output_tokens", 0)}
                    yield frame(payload)
                    return
                elif item.kind in _END_KINDS:
                    error = data.get("error") or {}
                    yield frame({"type": "error",
                                 "content": str(error.get("message")
                                                or data.get("reason") or item.kind),
                                 "code": str(error.get("code") or item.kind)})
                    return
            yield frame({"type": "error", "content": "the daemon is stopping; the "
                         "run's outcome will be in the session's history",
                         "code": "shutting_down"})
        finally:
            sub.close()

    async def history(self, request: Request, runtime: Any, params: dict[str, str]
                      ) -> Response:
        key = params["key"]
        messages: list[dict[str, str]] = []
        try:
            _, session = await runtime.get_session(self.agent, key)
        except (SessionNotFound, AgentNotFound):
            return _json({"session_key": key, "messages": messages})
        except AgentdError as exc:
            return _error(exc.message, exc.status, code=exc.code)
        after = 0
        while True:
            page = await runtime.read_events(session.id, after=after, limit=_PAGE)
            for event in page:
                if event.kind == "message.user":
                    messages.append({"role": "user",
                                     "content": str(event.data.get("content", ""))})
                elif event.kind == "message.assistant" and event.data.get("text") and (
                        not event.data.get("silent")):
                    messages.append({"role": "assistant",
                                     "content": str(event.data["text"])})
            if len(page) < _PAGE:
                break
            after = page[-1].seq
        return _json({"session_key": key, "messages": messages})

    async def sessions(self, request: Request, runtime: Any, _: dict[str, str]
                       ) -> Response:
        records = await runtime.list_sessions(self.agent)
        return _json([{"session_key": s.key, "created_at": s.created_at,
                       "updated_at": s.updated_at}
                      for s in sorted(records, key=lambda s: s.key)])

    async def get_config(self, request: Request, runtime: Any, _: dict[str, str]
                         ) -> Response:
        hook = await self._hook(runtime, "get_config")
        if hook is not None:
            return _json(await hook())
        agent = await runtime.stored_agent(self.agent)
        return _json({"name": agent.name, "model": agent.model,
                      "instructions": agent.instructions, "settings": agent.settings})

    async def patch_config(self, request: Request, runtime: Any, _: dict[str, str]
                           ) -> Response:
        body = await self._object(request)
        hook = await self._hook(runtime, "update_config")
        if hook is not None:
            await hook(body)
            return _json({"status": "ok"})
        if _token_of(request) in (None, "termo"):
            # The agent's definition is agentd's, not the termo client's: the termo
            # token (or none) must not reach settings that lead elsewhere (a team).
            return _error("changing the agent's config needs one of the daemon's tokens "
                          "(the termo token opens the termo routes only)", 403,
                          code="forbidden")
        unknown = sorted(set(body) - {"instructions", "settings"})
        if unknown:
            return _error(f"config: only instructions and settings may be changed here "
                          f"(the agent's model is its adapter), not {', '.join(unknown)}",
                          400)
        try:
            await runtime.update_agent(self.agent, body,
                                       actor=principal_of(request.scope))
        except AgentdError as exc:
            return _error(exc.message, exc.status, code=exc.code)
        return _json({"status": "ok"})

    async def tools(self, request: Request, runtime: Any, _: dict[str, str]) -> Response:
        hook = await self._hook(runtime, "list_tools")
        if hook is not None:
            return _json(await hook())
        if self.model is not None:
            # An adapter-backed agent has no agentd tools: its framework brings its own.
            return _json([])
        # A native agent's: its tools as the model sees them (name, description).
        agent = await runtime.stored_agent(self.agent)
        return _json([{"name": spec.name, "description": spec.description}
                      for spec in runtime.tools.resolve(list(agent.tools))])

    async def get_memory(self, request: Request, runtime: Any, _: dict[str, str]
                         ) -> Response:
        hook = await self._hook(runtime, "get_memory")
        if hook is not None:
            content = await hook()
        else:
            try:
                content = (await runtime.get_block(self.agent, "memory")).value
            except NotFound:
                content = None
        return _json(content if isinstance(content, dict) else {"content": content})

    async def patch_memory(self, request: Request, runtime: Any, _: dict[str, str]
                           ) -> Response:
        body = await self._object(request)
        content = body.get("content")
        if content is None:
            return _error("content is required", 400)
        hook = await self._hook(runtime, "update_memory")
        if hook is not None:
            await hook(content)
            return _json({"status": "ok"})
        if not isinstance(content, str):
            return _error("content must be a string", 400)
        try:
            await runtime.put_block(self.agent, "memory", value=content, by="termo")
        except AgentdError as exc:
            return _error(exc.message, exc.status, code=exc.code)
        return _json({"status": "ok"})

    async def search_memory(self, request: Request, runtime: Any, _: dict[str, str]
                            ) -> Response:
        body = await self._object(request)
        query, limit, category = (body.get("query", ""), body.get("limit", 5),
                                  body.get("category"))
        if not query:
            return _error("query is required", 400)
        if not isinstance(query, str):
            return _error("query must be a string", 400)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            return _error("limit must be an integer from 1 to 100", 400)
        if category is not None and not isinstance(category, str):
            return _error("category must be a string", 400)
        try:
            hits = await runtime.search_memory(
                self.agent, query, limit=limit,
                filters=EntryFilter(tags_all=(category,)) if category else None)
        except AgentdError as exc:
            return _error(exc.message, exc.status, code=exc.code)
        return _json({"memories": [
            {"id": h.entry.id, "content": h.entry.content, "category": (
                h.entry.tags[0] if h.entry.tags else None), "tags": list(h.entry.tags),
             "metadata": h.entry.metadata, "score": h.score,
             "created_at": h.entry.created_at} for h in hits]})

    async def get_heartbeat(self, request: Request, runtime: Any, _: dict[str, str]
                            ) -> Response:
        hook = await self._hook(runtime, "get_heartbeat")
        if hook is not None:
            return _json(await hook())
        shown = await runtime.get_heartbeat(self.agent)
        area = shown.get("settings") or {}
        return _json({"content": area.get("document"),
                      "enabled": bool(area.get("enabled")),
                      "interval_s": area.get("every_s"), "state": shown.get("state")})

    async def patch_heartbeat(self, request: Request, runtime: Any, _: dict[str, str]
                              ) -> Response:
        body = await self._object(request)
        content = body.get("content")
        if content is None:
            return _error("content is required", 400)
        hook = await self._hook(runtime, "update_heartbeat")
        if hook is not None:
            await hook(content)
            return _json({"status": "ok"})
        if _token_of(request) is None:
            return _error("changing the agent's heartbeat needs a token, even when auth "
                          "is off", 403, code="forbidden")
        if not isinstance(content, str):
            return _error("content must be a string", 400)
        # As termo-agent's adapters read it: a heartbeat text beats, an empty one not.
        patch = {"document": content if content.strip() else None,
                 "enabled": bool(content.strip())}
        try:
            await runtime.update_heartbeat(self.agent, patch,
                                           actor=principal_of(request.scope))
        except AgentdError as exc:
            return _error(exc.message, exc.status, code=exc.code)
        return _json({"status": "ok"})

    async def update(self, request: Request, runtime: Any, _: dict[str, str]) -> Response:
        hook = await self._hook(runtime, "update")
        return _json(await hook() if hook is not None else {"status": "not supported"})

    async def restart(self, request: Request, runtime: Any, _: dict[str, str]
                      ) -> Response:
        hook = await self._hook(runtime, "restart")
        if hook is not None:
            await hook()
        elif self.model is not None:
            # agentd's restart of an adapter: shut down now, a fresh one next time.
            await runtime.restart_adapter(self.agent)
        else:
            # A native agent holds nothing in memory a restart would renew: its state
            # is its log, read again at each run.
            return _json({"status": "ok"})
        return _json({"status": "restarting"})


class TermoDoor:
    """The ASGI middleware serving :class:`Termo`'s routes (see the module)."""

    def __init__(self, app: ASGIApp, *, termo: Termo) -> None:
        self.app = app
        self.termo = termo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        termo = self.termo
        found = termo.find(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        response = await self._answer(scope, receive, found)
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive,
                      found: tuple[Handler | None, dict[str, str]]) -> Response:
        termo = self.termo
        runtime = scope["app"].state.runtime
        try:
            await termo._ensure(runtime)
            adapter = await termo._adapter_of(runtime)
            if not termo.allows(scope, adapter):
                return _error("unauthorized", 401)
            path = scope["path"]
            if not (termo.check.public(path) or termo._public(adapter, path)) and (
                    not await may_use(HTTPConnection(scope), termo.agent)):
                # A scoped token (``access``) without the door's agent: as no token.
                return _error("unauthorized", 401)
            handler, params = found
            if handler is None:
                return _error("method not allowed", 405)
            return await handler(Request(scope, receive), runtime, params)
        except _Refused as refused:
            return refused.response
        except AgentdError as exc:
            return _error(exc.message, exc.status, code=exc.code)
        except Exception:
            log.exception("termo route %s %s failed", scope["method"], scope["path"])
            return _error("internal error", 500)
