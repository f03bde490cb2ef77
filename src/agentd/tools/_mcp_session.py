"""One MCP server connection, held open by its own long-lived task.

The SDK's client is a stack of anyio task groups and async context managers, which
must be exited by the task that entered them. So each live connection (a ``_Link``)
runs in an owner task of its own: it enters the client, lists the tools, then serves
the calls callers hand it through a queue, each in a child task, answering through
futures. A caller only ever awaits its future, under its own timeout, so a server
that hangs or dies cannot hang a run: when the connection ends for any reason the
owner task fails every pending future with that reason.

A :class:`Connection` is one owner's view of one configured server across restarts:
it starts links, replaces one that died or was left suspect by a timeout, counts the
crashes and declares the server dead after too many of them.

The SDK is imported when a connection starts, not when agentd is imported: it takes
most of a second to load and most daemons run no MCP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio

from agentd.errors import ToolError
from agentd.tools.mcp_oauth import NEEDS_AUTHORIZATION
from agentd.tools.mcp_stdio import Spawner, StderrTail, sandboxed_stdio
from agentd.version import __version__

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams
    from mcp.client.client import Client
    from mcp.shared._stream_protocols import ReadStream
    from mcp.shared.message import SessionMessage
    from mcp_types import CallToolResult, RequestParamsMeta
    from mcp_types import Tool as ToolInfo

    from agentd.tools.mcp_config import MCPServer
    from agentd.tools.mcp_oauth import OAuthBearer

log = logging.getLogger(__name__)

#: Characters of a server's stderr kept, and quoted when it fails.
STDERR_TAIL = 2000
#: How long closing one connection may take. The SDK's stdio shutdown (close stdin,
#: wait 2 s, SIGTERM the process group, wait 2 s, SIGKILL) stays well under this.
CLOSE_TIMEOUT_S = 10.0
#: Largest message accepted over streamable HTTP (the SDK's default, 1 MiB, is less
#: than some tools answer; results are cut to size later).
MAX_HTTP_MESSAGE = 16 * 1024 * 1024
_LIST_PAGES = 100

State = Literal["connecting", "connected", "restarting", "dead", "closed"]


def describe(exc: BaseException) -> str:
    """A one-line account of ``exc``, looking inside exception groups."""
    leaves = _leaves(exc)
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)] or leaves
    first = real[0]
    code = getattr(first, "code", None)
    error = getattr(first, "error", None)
    if code is not None and error is not None and hasattr(error, "message"):
        return f"{error.message} (MCP error {code})"
    text = str(first)
    return f"{type(first).__name__}: {text}" if text else type(first).__name__


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _quote(tail: str) -> str:
    return f"; its stderr ends with:\n{tail}" if tail else ""


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Mark an exception as seen: a future nobody awaits any more (its caller timed
    # out) must not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


class _EofWatch:
    """The transport's read stream, telling the link when the server hung up.

    Nothing else in the SDK says so while the client sits idle: the dispatcher only
    fails the requests that are pending when the stream ends.
    """

    def __init__(self, inner: ReadStream[SessionMessage | Exception],
                 on_eof: Callable[[], None]) -> None:
        self._inner = inner
        self._on_eof = on_eof

    @property
    def last_context(self) -> Any:
        # The dispatcher reads this off the streamable HTTP transport's stream.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_eof()
            raise

    def __aiter__(self) -> _EofWatch:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _EofWatch:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc_val: BaseException | None, exc_tb: TracebackType | None) -> None:
        await self.aclose()


class Lost(Exception):
    """The connection ended while a call was pending."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The request reached the server: whether it took effect is unknown.
        self.sent = sent


@dataclass(eq=False)
class _Request:
    name: str
    arguments: dict[str, Any]
    future: asyncio.Future[CallToolResult]
    #: The request's ``_meta`` (the calling span's ``traceparent``), if any.
    meta: dict[str, Any] | None = None
    scope: anyio.CancelScope | None = None
    sent: bool = False
    abandoned: bool = False

    def abandon(self) -> None:
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()


class _Link:
    """One live connection to a server and the task that owns it."""

    def __init__(self, server: MCPServer, label: str, spawn: Spawner | None,
                 auth: OAuthBearer | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.server = server
        self._spawn = spawn
        self._auth = auth
        self.label = label
        self.ready: asyncio.Future[list[ToolInfo]] = loop.create_future()
        self.ready.add_done_callback(_retrieve)
        self.ended = asyncio.Event()
        #: Why the link ended (set when it has).
        self.reason: str | None = None
        #: A call timed out: the server may be wedged, so no new call goes here.
        self.suspect = False
        #: The protocol version agreed with the server.
        self.protocol: str | None = None
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._pending: set[_Request] = set()
        self._scope: anyio.CancelScope | None = None
        self._stopping: str | None = None
        self._lost: str | None = None
        self._draining = False
        self._stderr: StderrTail | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return (self.ready.done() and not self.ready.cancelled()
                and self.ready.exception() is None and not self.ended.is_set()
                and self._stopping is None and self._lost is None and not self.suspect)

    def stderr_tail(self) -> str:
        return self._stderr.tail() if self._stderr is not None else ""

    async def start(self, timeout_s: float) -> list[ToolInfo]:
        """Start the owner task; return the server's tools once it answered."""
        self._task = asyncio.create_task(self._main(), name=f"mcp {self.label}")
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self.ready)
        except TimeoutError:
            tail = self.stderr_tail()
            self.stop("start-up timed out")
            raise ToolError(
                f"MCP server {self.label} did not finish its handshake within "
                f"{timeout_s:g}s{_quote(tail)}", code="mcp_unavailable") from None

    async def call(self, name: str, arguments: dict[str, Any],
                   meta: dict[str, Any] | None = None) -> CallToolResult:
        if not self.alive:
            raise Lost(self.reason or self._lost or "the connection is closing", sent=False)
        future: asyncio.Future[CallToolResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        request = _Request(name, arguments, future, meta=meta)
        self._pending.add(request)
        self._queue.put_nowait(request)
        try:
            return await future
        except asyncio.CancelledError:
            request.abandon()
            raise

    def retire(self) -> None:
        """Take no new calls; close once the calls in flight are over."""
        self.suspect = True
        self._draining = True
        if not self._pending:
            self.stop("replaced by a new connection")

    def stop(self, why: str) -> None:
        if self._stopping is None:
            self._stopping = why
        if self._scope is not None:
            self._scope.cancel()

    async def wait_closed(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)
        if not done:
            log.warning("MCP server %s did not close within %gs; abandoning it",
                        self.label, CLOSE_TIMEOUT_S)
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)

    def _on_eof(self) -> None:
        if self._stopping is None and self._lost is None:
            self._lose("the server process exited" if self.server.command
                       else "the server closed the connection")

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        if self._scope is not None:
            self._scope.cancel()

    async def _main(self) -> None:
        error: BaseException | None = None
        try:
            from mcp.client.client import Client
            from mcp_types import Implementation

            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._stopping is not None:
                    scope.cancel()
                info = Implementation(name="agentd", version=__version__)
                async with Client(self._transport(), cache=None, client_info=info) as client:
                    self.protocol = client.protocol_version
                    tools = await _list_tools(client)
                    if not self.ready.done():
                        self.ready.set_result(tools)
                    async with anyio.create_task_group() as tg:
                        while True:
                            request = await self._queue.get()
                            tg.start_soon(self._serve, client, request)
        except Exception as exc:
            error = exc
        finally:
            self._finish(error)

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[TransportStreams]:
        server = self.server
        async with contextlib.AsyncExitStack() as stack:
            if server.command is not None:
                # A command the agent's settings name: it runs in the agent's sandbox,
                # never as a plain child of the daemon.
                if self._spawn is None:
                    raise ToolError(f"MCP server {self.label}: stdio servers run in the "
                                    "agent's sandbox, and this agent has none",
                                    code="mcp_unavailable")
                self._stderr = stderr = StderrTail()
                child = await self._spawn(server)
                read, write = await stack.enter_async_context(
                    sandboxed_stdio(child, stderr))
            else:
                import httpx2
                from mcp.client.streamable_http import streamable_http_client

                assert server.url is not None
                http = await stack.enter_async_context(httpx2.AsyncClient(
                    headers=server.headers, auth=self._auth,
                    timeout=httpx2.Timeout(30.0, read=max(300.0, 2 * server.timeout_s))))
                read, write = await stack.enter_async_context(streamable_http_client(
                    server.url, http_client=http, max_sse_event_size=MAX_HTTP_MESSAGE))
            yield _EofWatch(read, self._on_eof), write

    async def _serve(self, client: Client, request: _Request) -> None:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST

        try:
            if request.abandoned or request.future.done():
                return
            with anyio.CancelScope() as scope:
                request.scope = scope
                request.sent = True
                try:
                    if request.meta:
                        result = await client.call_tool(
                            request.name, request.arguments,
                            meta=cast("RequestParamsMeta", request.meta))
                    else:
                        result = await client.call_tool(request.name, request.arguments)
                except MCPError as exc:
                    if self._auth is not None and self._auth.problem is not None:
                        # The server refused the token (and a fresh one): what to do
                        # about it, not the SDK's stand-in for an HTTP 401.
                        _settle(request, self._auth.problem)
                        return
                    if exc.code == CONNECTION_CLOSED:
                        # The link is ending; _finish fails the call with the reason.
                        self._lose("the connection closed")
                        return
                    if (exc.code == INVALID_REQUEST and self.server.url is not None
                            and "session" in exc.error.message.lower()):
                        # An HTTP server that restarted forgot the session ("Session
                        # not found", "Session terminated": a 404): it ran nothing,
                        # and a new connection can make the call.
                        request.sent = False
                        self._lose("the server ended the session (it may have restarted)")
                        return
                    _settle(request, ToolError(
                        f"MCP server {self.label} refused {request.name}: "
                        f"{exc.error.message} (MCP error {exc.code})", code="mcp_tool_error"))
                except Exception as exc:
                    _settle(request, ToolError(
                        f"MCP server {self.label}: the answer to {request.name} could not "
                        f"be read: {describe(exc)}", code="mcp_tool_error"))
                else:
                    _settle(request, result)
            self._pending.discard(request)
        finally:
            if request.abandoned:
                self._pending.discard(request)
            if self._draining and not self._pending:
                self.stop("replaced by a new connection")

    def _finish(self, error: BaseException | None) -> None:
        tail = self.stderr_tail()
        if self._stopping is not None:
            reason = self._stopping
        elif self._lost is not None:
            reason = self._lost
        elif error is not None:
            reason = describe(error)
        else:
            reason = "the connection ended"
        self.reason = reason
        if error is not None and not isinstance(error, OSError | BaseExceptionGroup):
            log.debug("MCP server %s ended with an error", self.label, exc_info=error)
        if not self.ready.done() and self._auth is not None and self._auth.problem:
            self.ready.set_exception(self._auth.problem)
        elif not self.ready.done():
            self.ready.set_exception(ToolError(
                f"MCP server {self.label} could not "
                f"{'start' if self.server.command else 'connect'}: {reason}{_quote(tail)}",
                code="mcp_unavailable"))
        elif self._stopping is None:
            log.warning("MCP server %s: connection lost: %s", self.label, reason)
        # A server that could not be reached ran none of the calls.
        unreached = error is not None and all(
            type(e).__name__ in ("ConnectError", "ConnectTimeout") for e in _leaves(error))
        for request in self._pending:
            if not request.future.done():
                request.future.set_exception(
                    Lost(reason + _quote(tail), sent=request.sent and not unreached))
        self._pending.clear()
        if self._stderr is not None:
            self._stderr.close()
        self.ended.set()


def _settle(request: _Request, outcome: CallToolResult | BaseException) -> None:
    if request.future.done():
        return
    if isinstance(outcome, BaseException):
        request.future.set_exception(outcome)
    else:
        request.future.set_result(outcome)


async def _list_tools(client: Client) -> list[ToolInfo]:
    tools: list[ToolInfo] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


class Connection:
    """One owner's connection to one configured server, across restarts."""

    def __init__(self, owner: str, server: MCPServer, *, spawn: Spawner | None,
                 connect_timeout_s: float,
                 max_restarts: int, restart_window_s: float,
                 auth: OAuthBearer | None = None) -> None:
        self.owner = owner
        self.server = server
        #: The OAuth access token on its requests (``server.oauth``), if any.
        self.auth = auth
        self.label = f"{server.name!r}"
        self.state: State = "connecting"
        #: Connections started after the first one (for status reports).
        self.restarts = 0
        self.last_error: str | None = None
        #: The server's tools, as last listed.
        self.tools: list[ToolInfo] = []
        self._connect_timeout_s = connect_timeout_s
        self._max_restarts = max_restarts
        self._window_s = restart_window_s
        self._crashes: deque[float] = deque()
        self._crashed = False  # the last link died or failed to start
        self._spawn = spawn
        self._connected_once = False
        self._link: _Link | None = None
        self._starting: _Link | None = None
        self._retiring: set[_Link] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def _died(self) -> str:
        return "died" if self.server.command is not None else "lost the connection"

    @property
    def transport(self) -> str:
        return "stdio" if self.server.command is not None else "http"

    def status(self) -> dict[str, Any]:
        state = self.state
        if state == "connected" and not (self._link is not None and self._link.alive):
            state = "restarting"  # lost or suspect: the next call starts a new one
        return {
            "server": self.server.name,
            "owner": self.owner,
            "transport": self.transport,
            "state": state,
            "protocol": self._link.protocol if self._link is not None else None,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "tools": len(self.tools),
        }

    async def load(self) -> list[ToolInfo]:
        """Connect unless connected and return the tools; a dead server starts afresh.
        A server that takes OAuth tokens and has none fails here (ToolError
        ``mcp_needs_authorization``), before any connection is tried or counted."""
        if self.auth is not None:
            await self.auth.prepare()
        if self.state == "dead":
            self._crashes.clear()
            self.state = "restarting"
        await self._ready_link()
        return self.tools

    async def call(self, name: str, arguments: dict[str, Any], *, timeout_s: float,
                   retry: bool, label: str, meta: dict[str, Any] | None = None
                   ) -> CallToolResult:
        """Call tool ``name``; ``retry``: repeat it on a fresh server if the first died.

        ``timeout_s`` bounds the call itself; (re)starting the server is bounded by
        the connect timeout, so a slow start does not eat a call's time.
        """
        if self.auth is not None:
            await self.auth.prepare()  # (a token near its expiry is refreshed first)
        link = await self._ready_link()
        try:
            return await self._call_on(link, name, arguments, timeout_s, label, meta)
        except Lost as lost:
            if self._closed:
                raise ToolError(f"MCP server {self.label} was closed while {label} was "
                                "running", code="mcp_unavailable") from None
            if lost.sent and not retry:
                raise ToolError(
                    f"MCP server {self.label} {self._died} while {label} was running "
                    f"({lost.reason}); the outcome is unknown: the call may or may not "
                    "have taken effect", code="mcp_server_died") from None
            log.info("MCP server %s: %s; calling %s again on a fresh connection",
                     self.label, lost.reason, label)
        link = await self._ready_link()
        try:
            return await self._call_on(link, name, arguments, timeout_s, label, meta)
        except Lost as lost:
            raise ToolError(f"MCP server {self.label} {self._died} again while {label} "
                            f"was running ({lost.reason})", code="mcp_server_died") from None

    async def _call_on(self, link: _Link, name: str, arguments: dict[str, Any],
                       timeout_s: float, label: str, meta: dict[str, Any] | None = None
                       ) -> CallToolResult:
        try:
            async with asyncio.timeout(timeout_s):
                return await link.call(name, arguments, meta)
        except TimeoutError:
            # Whatever holds the server up may hold up every later call: no new call
            # goes to this process, which is stopped once its calls are over.
            link.retire()
            raise ToolError(f"{label} timed out after {timeout_s:g}s (MCP server "
                            f"{self.label} is restarted before the next call)",
                            code="tool_timeout") from None

    async def close(self) -> None:
        self._closed = True
        self.state = "closed"
        links = [x for x in (self._link, self._starting, *self._retiring) if x is not None]
        self._link = self._starting = None
        self._retiring.clear()
        for link in links:
            link.stop("closed")
        await asyncio.gather(*(link.wait_closed() for link in links))

    async def _ready_link(self) -> _Link:
        async with self._lock:
            link = self._link
            if link is not None and link.alive:
                return link
            if self._closed:
                raise ToolError(f"MCP server {self.label} was closed", code="mcp_unavailable")
            if self.state == "dead":
                raise ToolError(self._dead_message(), code="mcp_unavailable")
            if link is not None:
                self._link = None
                if not link.suspect:
                    self._crashed = True
                    self.last_error = link.reason or link._lost or "the connection was lost"
                self._retire(link)
            if self._crashed:
                now = time.monotonic()
                while self._crashes and now - self._crashes[0] > self._window_s:
                    self._crashes.popleft()
                if len(self._crashes) >= self._max_restarts:
                    self.state = "dead"
                    log.error("MCP server %s (owner %s) is dead: %s", self.label, self.owner,
                              self._dead_message())
                    raise ToolError(self._dead_message(), code="mcp_unavailable")
                self._crashes.append(now)
            if self._connected_once:
                self.restarts += 1
                self.state = "restarting"
            new = self._starting = _Link(self.server, self.label, self._spawn, self.auth)
            try:
                tools = await new.start(self._connect_timeout_s)
            except ToolError as exc:
                # A token the server refused is no crash: the server is up.
                self._crashed = exc.code != NEEDS_AUTHORIZATION
                self.last_error = exc.message
                raise
            finally:
                self._starting = None
                if not new.alive:
                    self._retire(new)
            if self._closed:  # closed while it started
                self._retire(new)
                raise ToolError(f"MCP server {self.label} was closed", code="mcp_unavailable")
            self._link = new
            self.tools = tools
            self.state = "connected"
            self._crashed = False
            self._connected_once = True
            return new

    def _retire(self, link: _Link) -> None:
        self._retiring = {x for x in self._retiring if not x.ended.is_set()}
        if not link.ended.is_set():
            link.retire()
            self._retiring.add(link)

    def _dead_message(self) -> str:
        return (f"MCP server {self.label} failed {self._max_restarts + 1} times within "
                f"{self._window_s:g}s and is not restarted again until its tools are "
                f"loaded anew; last error: {self.last_error}")
