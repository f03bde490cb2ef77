"""Agents as the tools of an MCP server, through the official SDK's server components.

``tools/list``: one tool per agent (its name), taking ``{"message", "session"?}``;
``tools/call`` sends the message through the Runtime facade like the native API (the
message and its run committed before anything else, the session's turn, the agent's
budgets, policy, approvals) and answers with the run's reply, reporting each step as
MCP progress (a model turn, a tool call, a wait for approval with its id) while it
runs. ``resources``: a session's conversation (``agentd://agents/{agent}/sessions/{key}``,
a template: listing every session of every agent would not scale) and the approvals
waiting (``agentd://approvals``). The transport is the SDK's streamable HTTP in
stateless mode: no per-client state in the daemon, so any node can answer and a
restart forgets nothing a client relies on. The bearer token is checked by the
daemon's own auth layer before a request reaches the SDK; a scoped token (``access``)
lists, calls and reads only its scope's agents (one outside it is "no tool", "no
resource", as one that does not exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import mcp_types as types
import orjson
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from agentd.assembly import Runtime
from agentd.doors.access import filter_agents, may_use
from agentd.errors import AgentdError, AgentNotFound, SessionNotFound, ShuttingDown
from agentd.events import TERMINAL_KINDS
from agentd.protocols.mcp._uris import SESSION_URI
from agentd.store.records import EventRecord, RunRecord
from agentd.version import __version__

__all__ = ["MCPDoor"]

log = logging.getLogger(__name__)

_APPROVALS_URI = "agentd://approvals"
#: The messages a session resource holds, newest last.
_HISTORY_LIMIT = 1000
_INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "minLength": 1,
                    "description": "What to say to the agent."},
        "session": {"type": "string", "minLength": 1, "maxLength": 256,
                    "description": "The session key to continue (created on first use); "
                                   "omitted: a new session. The result names it."},
    },
    "required": ["message"],
    "additionalProperties": False,
}
_OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"reply": {"type": "string"}, "session": {"type": "string"},
                   "run_id": {"type": "string"}, "status": {"type": "string"}},
    "required": ["reply", "session", "run_id", "status"],
}


def _conn(ctx: Any) -> HTTPConnection:
    """The HTTP request behind an MCP request (its scope names the token)."""
    request = getattr(ctx, "request", None)
    if not isinstance(request, HTTPConnection):
        raise MCPError(types.INTERNAL_ERROR, "no HTTP request behind this MCP request")
    return request


def _text(text: str, *, error: bool = False,
          structured: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                structured_content=structured, is_error=error)


def _result(done: RunRecord, key: str) -> types.CallToolResult:
    """A ``tools/call``'s answer for the run ``done`` (ended, as stored)."""
    structured = {"reply": done.output or "", "session": key, "run_id": done.id,
                  "status": done.status}
    if done.status != "completed":
        error = done.error or {}
        text = (f"run {done.id} {done.status}: "
                f"{error.get('message') or 'no reply'} (session {key})")
        return _text(text, error=True, structured=structured)
    return _text(done.output or "", structured=structured)


def _wants_progress(params: types.CallToolRequestParams) -> bool:
    """Whether the call carries a progress token (the SDK sends progress only then;
    a boolean is no token to it)."""
    meta: Any = getattr(params, "meta", None) or {}
    if isinstance(meta, dict):
        token = meta.get("progress_token", meta.get("progressToken"))
    else:
        token = getattr(meta, "progress_token", None)
    return token is not None and not isinstance(token, bool)


class MCPDoor:
    """The MCP server of one daemon (``runtime`` read per request: the app's lifespan
    opens it after this is built)."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime
        self.server: Server[Any] = Server(
            "agentd", version=__version__,
            instructions="Each tool is an agent of this agentd daemon: call it with a "
                         "message (and a session key to continue a conversation).",
            on_list_tools=self._list_tools, on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_templates,
            on_read_resource=self._read_resource)
        self.manager = StreamableHTTPSessionManager(app=self.server, stateless=True)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    async def _serve(self) -> None:
        async with self.manager.run():
            self._ready.set()
            await self._stop.wait()

    async def close(self) -> None:
        """Stop the SDK's task group (started by the first request)."""
        if self._task is not None:
            self._stop.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task

    async def start(self) -> None:
        """Have the SDK's task group running (ShuttingDown if it cannot start)."""
        # The SDK serves requests in a task group of its own, which must be entered
        # and left by one task: a task of the door's, started by the first request
        # (not the app's lifespan, whose start and end may run in different tasks).
        if self._ready.is_set():
            return
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name="mcp-door")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait((ready, self._task), return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise ShuttingDown("the MCP server is not running (see the daemon's log)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.start()
        await self.manager.handle_request(scope, receive, send)

    # -- tools ---------------------------------------------------------------------

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None
                          ) -> types.ListToolsResult:
        agents = filter_agents(_conn(ctx), await self._runtime().list_agents())
        return types.ListToolsResult(tools=[types.Tool(
            name=agent.name,
            description=f"Ask the agent {agent.name!r} (agentd, model {agent.model}); "
                        "returns its reply. Its tools run on the server under its policy.",
            input_schema=_INPUT_SCHEMA, output_schema=_OUTPUT_SCHEMA)
            for agent in agents])

    # complexity: the MCP tools/call of an agent: argument checks, scope, send, wait and
    # the mapping of each outcome onto MCP's result, in protocol order.
    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams
                         ) -> types.CallToolResult:
        runtime = self._runtime()
        # The tool first: a call to one that is not there says so, whatever its
        # arguments (it said "'message' must be a non-empty string").
        if not await may_use(_conn(ctx), params.name):
            raise MCPError(types.INVALID_PARAMS, f"no tool {params.name!r}")
        try:
            await runtime.find_agent(params.name)
        except AgentNotFound:
            raise MCPError(types.INVALID_PARAMS, f"no tool {params.name!r}") from None
        arguments = params.arguments or {}
        message, key = arguments.get("message"), arguments.get("session")
        unknown = set(arguments) - {"message", "session"}
        if not isinstance(message, str) or not message.strip():
            raise MCPError(types.INVALID_PARAMS, "'message' must be a non-empty string")
        if key is not None and not isinstance(key, str):
            raise MCPError(types.INVALID_PARAMS, "'session' must be a string")
        if unknown:
            raise MCPError(types.INVALID_PARAMS, f"unknown arguments: {sorted(unknown)}")
        limit = runtime.settings.max_message_bytes
        if len(message.encode()) > limit:
            raise MCPError(types.INVALID_PARAMS, f"the message is over {limit} bytes")
        key = key or f"mcp:{secrets.token_hex(12)}"
        try:
            sent = await runtime.send(params.name, key, message, mode="enqueue",
                                      priority="interactive", stream=True)
        except AgentNotFound:
            raise MCPError(types.INVALID_PARAMS, f"no tool {params.name!r}") from None
        except AgentdError as exc:
            # Refused before anything was written (a paused agent, a bad session key).
            return _text(f"{exc.code}: {exc.message}", error=True)
        run = sent.run
        if not sent.duplicate and not _wants_progress(params):
            # Nothing to report on the way (no progress token): wait for the run's
            # end as the native API's plain call does, not through its events.
            done = await runtime.wait(run.id)
            if done.terminal:
                return _result(done, key)
            # Waiting for a person's decision: followed to its end below.
        step = 0
        after = 0 if sent.duplicate or not sent.events else sent.events[0].seq - 1
        end: EventRecord | None = None
        async for item in runtime.follow(sent.session.id, after,
                                         known=None if sent.duplicate else sent.events):
            if not isinstance(item, EventRecord) or item.run_id != run.id:
                continue
            note = _progress_note(item.kind, item.data)
            if note is not None:
                step += 1
                await ctx.session.report_progress(step, None, note)
            if item.kind in TERMINAL_KINDS:
                end = item
                break
        if end is not None and end.kind == "run.completed":
            # The reply is the terminal event's (the run's record holds the same):
            # no store read for it.
            output: str = end.data.get("output") or ""
            return _text(output, structured={"reply": output, "session": key,
                                             "run_id": run.id, "status": "completed"})
        done, _, _ = await runtime.get_run(run.id)
        return _result(done, key)

    # -- resources -----------------------------------------------------------------

    async def _list_resources(self, ctx: Any, params: types.PaginatedRequestParams | None
                              ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(
            name="approvals", uri=_APPROVALS_URI, mime_type="application/json",
            description="Tool calls of agents' runs waiting for a person's decision "
                        "(decide them with `agentd approvals` or POST /v1/approvals/{id}).")])

    async def _list_templates(self, ctx: Any, params: types.PaginatedRequestParams | None
                              ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            name="session", uri_template=SESSION_URI, mime_type="application/json",
            description="A session's conversation: its messages and replies, oldest "
                        f"first (the last {_HISTORY_LIMIT}); `key` percent-encoded.")])

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams
                             ) -> types.ReadResourceResult:
        runtime = self._runtime()
        uri = str(params.uri)
        conn = _conn(ctx)
        if uri == _APPROVALS_URI:
            pending = [p for p in await runtime.approvals.pending(None)
                       if await may_use(conn, p["agent"])]
            body: Any = {"approvals": pending}
        else:
            agent, key = _session_of(uri)
            if not await may_use(conn, agent):
                raise MCPError(types.INVALID_PARAMS, f"no resource {uri!r}")
            try:
                _, session = await runtime.get_session(agent, key)
            except (AgentNotFound, SessionNotFound):
                raise MCPError(types.INVALID_PARAMS, f"no resource {uri!r}") from None
            body = {"agent": agent, "session": key,
                    "messages": await _messages(runtime, session.id, session.last_seq)}
        return types.ReadResourceResult(contents=[types.TextResourceContents(
            uri=uri, mime_type="application/json",
            text=orjson.dumps(body, default=str).decode())])


def _session_of(uri: str) -> tuple[str, str]:
    prefix = "agentd://agents/"
    agent, sep, key = uri.removeprefix(prefix).partition("/sessions/")
    if not uri.startswith(prefix) or not sep or not agent or not key:
        raise MCPError(types.INVALID_PARAMS, f"no resource {uri!r} (sessions are "
                                             f"{SESSION_URI})")
    return unquote(agent), unquote(key)


async def _messages(runtime: Runtime, session_id: str, last_seq: int
                    ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while after < last_seq:
        page = await runtime.read_events(session_id, after=after, limit=1000)
        if not page:
            break
        for event in page:
            if event.kind == "message.user":
                out.append({"role": "user", "content": event.data.get("content", ""),
                            "seq": event.seq, "run_id": event.run_id})
            elif (event.kind == "message.assistant" and event.data.get("text")
                  and not event.data.get("silent")):
                out.append({"role": "assistant", "content": event.data["text"],
                            "seq": event.seq, "run_id": event.run_id})
            elif event.kind == "message.proactive":
                out.append({"role": "assistant", "content": event.data.get("content", ""),
                            "seq": event.seq, "proactive": True})
        after = page[-1].seq
    return out[-_HISTORY_LIMIT:]


def _progress_note(kind: str, data: dict[str, Any]) -> str | None:
    """What a progress notification says about one of the run's events."""
    if kind == "run.started":
        return "started"
    if kind == "tool.started":
        return f"calling {data.get('name')}"
    if kind == "tool.finished":
        return f"{data.get('name')} {'failed' if data.get('is_error') else 'done'}"
    if kind == "approval.requested":
        return (f"waiting for approval {data.get('approval_id')} of "
                f"{data.get('name')} (see {_APPROVALS_URI})")
    if kind == "approval.decided":
        return f"approval decided: {data.get('action')}"
    if kind in TERMINAL_KINDS:
        return TERMINAL_KINDS[kind]
    return None
