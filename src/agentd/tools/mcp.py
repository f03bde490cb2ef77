"""Tools from MCP servers: local ones run as subprocesses (stdio) or remote ones (HTTP).

An agent lists servers in its ``settings.mcp`` (:class:`MCPServer`); the
:class:`MCPManager` connects to each for that agent, lists its tools and wraps them as
:class:`MCPTool`, named ``<server>__<tool>``. What the runtime must know of a tool
comes from the server's annotations::

    readOnlyHint        -> read_only and idempotent
    idempotentHint      -> idempotent
    destructiveHint     -> needs_approval (true by default unless read-only)
    openWorldHint       -> sends_out (true by default); for a trusted server only
                           when the tool is not read-only as well
    server.trusted      -> untrusted_output when false (what the server says taints
                           the session)

Annotations are the server's word, and the MCP spec says not to rely on those of a
server one does not trust: for an untrusted server a read-only tool that reaches an
open world (a web search) still ``sends_out``, since its arguments can carry data out.
So by default the policy denies such tools until a rule allows them, and asks about
them once the session is tainted.

``needs_network`` stays false: the server, not the daemon, reaches the network.

A server that dies is restarted at the next call (a call in flight fails at once);
after too many crashes it is reported dead. A call that timed out leaves its
connection suspect, and the next call gets a fresh one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from agentd.errors import AgentdError, InvalidInput, ToolError
from agentd.logcontext import tool_traceparent
from agentd.tools._mcp_session import Connection
from agentd.tools.base import Tool, ToolContext
from agentd.tools.mcp_config import MCPServer
from agentd.tools.mcp_oauth import NEEDS_AUTHORIZATION, OAuthBearer, TokenSource
from agentd.tools.mcp_stdio import Spawner
from agentd.tools.secret_refs import SecretSource, parse_reference, resolve_mapping

if TYPE_CHECKING:
    from mcp_types import CallToolResult
    from mcp_types import Tool as ToolInfo

    from agentd.media import ToolImage, ToolOutput
    from agentd.tools.workers import WorkerPool

__all__ = ["MAX_DESCRIPTION", "MAX_RESULT", "MCPManager", "MCPServer", "MCPTool",
           "with_secrets"]

log = logging.getLogger(__name__)

#: Characters of a tool's description passed on to the model.
MAX_DESCRIPTION = 1024
#: Characters of a tool's result passed on to the model.
MAX_RESULT = 100_000
#: OpenAI's limit on tool names (which allow only ``[A-Za-z0-9_-]``).
_MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _fail_direct_call(**_: Any) -> Any:
    raise TypeError("an MCP tool runs through MCPTool.call")


@dataclass(kw_only=True)
class MCPTool(Tool):
    """A tool of an MCP server: arguments checked against its JSON schema, run remotely."""

    server: str
    #: The tool's name on the server.
    remote_name: str
    _connection: Connection = field(repr=False)
    _validator: Any = field(repr=False, default=None)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check the arguments against the tool's schema; raise ToolError if wrong."""
        if not isinstance(arguments, dict):
            raise ToolError(f"invalid arguments for {self.name}: expected an object",
                            code="tool_bad_arguments")
        if self._validator is None:
            return arguments
        from referencing.exceptions import Unresolvable  # (with jsonschema: see _validator)

        try:
            errors = sorted(self._validator.iter_errors(arguments),
                            key=lambda e: [str(p) for p in e.absolute_path])
        except Unresolvable as exc:
            # A $ref we cannot follow (a remote one): the server checks for itself.
            log.debug("tool %s: schema not checkable here: %s", self.name, exc)
            return arguments
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: {e.message}"
                for e in errors[:5])
            more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
            raise ToolError(f"invalid arguments for {self.name}: {problems}{more}",
                            code="tool_bad_arguments")
        return arguments

    async def call(self, arguments: dict[str, Any], ctx: ToolContext,
                   default_timeout_s: float, workers: WorkerPool | None = None
                   ) -> str | ToolOutput:
        timeout = self.timeout_s or default_timeout_s
        if workers is not None and self._validator is not None:
            # The server's schema may hold a "pattern" that backtracks on the model's
            # argument: checked in a worker process, stopped at the time limit.
            try:
                async with asyncio.timeout(timeout):
                    arguments = await workers.run("agentd.tools.mcp", "check_arguments",
                                                  self.parameters, self.name, arguments,
                                                  owner=ctx.agent)
            except TimeoutError:
                raise ToolError(f"checking the arguments of {self.name} took more than "
                                f"{timeout:g}s", code="tool_timeout") from None
        else:
            arguments = self.validate(arguments)
        # The call's span in the run's trace, for a server that traces (MCP's _meta).
        parent = tool_traceparent(ctx.run_id, "tool:" + ctx.call_id)
        result = await self._connection.call(
            self.remote_name, arguments, timeout_s=timeout, retry=self.idempotent,
            label=self.name, meta={"traceparent": parent} if parent else None)
        return _render(result, self.name)


class MCPManager:
    """Connections to MCP servers, kept per owner (an agent) and server configuration.

    Args:
        connect_timeout_s: Limit for a server to start and answer the handshake.
        max_restarts: Crashes (a server that died or could not restart) tolerated
            within ``restart_window_s``; one more and the server is dead: its calls
            fail at once until its tools are loaded again.
        restart_window_s: The window of ``max_restarts``.
    """

    def __init__(self, *, connect_timeout_s: float = 20.0, max_restarts: int = 3,
                 restart_window_s: float = 60.0) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._max_restarts = max_restarts
        self._restart_window_s = restart_window_s
        self._connections: dict[tuple[str, str], Connection] = {}

    async def tools(self, owner: str, servers: Sequence[MCPServer], *,
                    failures: list[str] | None = None,
                    spawn: Spawner | None = None,
                    tokens: TokenSource | None = None) -> list[Tool]:
        """Connect ``owner`` to ``servers`` (reusing live connections); return their tools.

        Connections ``owner`` had to servers no longer listed are closed. A dead server
        gets a fresh start. With ``failures``, servers that cannot be reached are
        reported there (one message each) and the others' tools returned. ``spawn``
        starts a stdio server in the owner's sandbox (without it, a stdio server is
        unavailable: it never runs as a plain child of the daemon). ``tokens`` gives
        the access tokens of the servers with ``oauth``; one that has none yet is
        reported in ``failures`` and still offers its tools (those it listed before,
        else those its ``tools`` names, else one named ``<server>__authorize``), each
        call of which answers what a person must do.

        Raises:
            ToolError: ``mcp_unavailable``: a server could not start or connect (the
                message names it and says why, with the tail of its stderr).
            InvalidInput: two servers share a name, or ``tools`` names a tool the
                server does not have.
        """
        names = [s.name for s in servers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidInput(f"MCP server name(s) used twice: {', '.join(twice)}")
        keys = [(owner, s.model_dump_json()) for s in servers]
        stale = [k for k in self._connections if k[0] == owner and k not in keys]
        await asyncio.gather(*(self._connections.pop(k).close() for k in stale))
        connections = []
        for key, server in zip(keys, servers, strict=True):
            if key not in self._connections:
                self._connections[key] = Connection(
                    owner, server, spawn=spawn, connect_timeout_s=self._connect_timeout_s,
                    max_restarts=self._max_restarts,
                    restart_window_s=self._restart_window_s,
                    auth=_bearer(server, tokens, owner))
            connection = self._connections[key]
            if connection.auth is not None and tokens is not None:
                connection.auth.source = tokens  # (the latest run's: its redactor)
            connections.append(connection)
        outcomes = await asyncio.gather(*(c.load() for c in connections),
                                        return_exceptions=True)
        failed: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, ToolError):
                failed.append(outcome.message)
            elif isinstance(outcome, BaseException):
                raise outcome
        if failed and failures is None:
            raise ToolError("; ".join(failed), code="mcp_unavailable")
        if failures is not None:
            failures.extend(failed)
        out: list[Tool] = []
        taken: set[str] = set()
        for connection, outcome in zip(connections, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                out.extend(_wrap(connection, taken))
            elif isinstance(outcome, ToolError) and outcome.code == NEEDS_AUTHORIZATION:
                out.extend(_waiting(connection, taken))
        return out

    async def close(self, owner: str | None = None) -> None:
        """Close ``owner``'s connections, or every connection; stops their processes."""
        keys = [k for k in self._connections if owner is None or k[0] == owner]
        await asyncio.gather(*(self._connections.pop(k).close() for k in keys))

    def status(self) -> list[dict[str, Any]]:
        """One entry per connection: server, owner, transport, state, restarts,
        last_error and the number of tools.

        ``state`` is ``connecting`` (first start, or it failed and the next call
        tries again), ``connected``, ``restarting`` (the connection was lost or is
        being replaced; the next call starts a new one), or ``dead``.
        """
        return [c.status() for c in self._connections.values()]


async def with_secrets(servers: Sequence[MCPServer], source: SecretSource | None
                       ) -> tuple[list[MCPServer], list[str]]:
    """``servers`` with the ``secret:NAME`` references of their ``env`` and
    ``headers`` replaced by the values (each use audited), and a message for each
    server left out because a reference cannot be resolved (a secret that does not
    exist for the agent, or cannot be opened)."""
    out: list[MCPServer] = []
    failed: list[str] = []
    for server in servers:
        if not any(parse_reference(v) for v in (*server.env.values(),
                                                 *server.headers.values())):
            out.append(server)
            continue
        try:
            env = await resolve_mapping(server.env, source, use=f"mcp:{server.name} env")
            headers = await resolve_mapping(server.headers, source,
                                            use=f"mcp:{server.name} header")
        except AgentdError as exc:
            failed.append(f"MCP server {server.name!r} not started: {exc.message}")
            continue
        out.append(server.model_copy(update={"env": env, "headers": headers}))
    return out, failed


class _NoTokens:
    """The tokens of an owner the runtime gave no source for."""

    def __init__(self, agent: str) -> None:
        self.agent = agent

    async def access_token(self, server: MCPServer, *, rejected: str | None = None,
                           current: str | None = None) -> str:
        from agentd.tools.mcp_oauth import needs_authorization

        raise needs_authorization(self.agent, server.name, "this daemon keeps no tokens")

    async def wants_scope(self, server: MCPServer, scope: str | None) -> None:
        return None


def _bearer(server: MCPServer, tokens: TokenSource | None, owner: str) -> OAuthBearer | None:
    if server.oauth is None:
        return None
    return OAuthBearer(tokens if tokens is not None else _NoTokens(owner), server)


@dataclass(kw_only=True)
class _StandIn(MCPTool):
    """A tool of a server not authorized yet: a call never reaches the server (its
    real tool may do anything; this one says it is read-only), it says what to do."""

    async def call(self, arguments: dict[str, Any], ctx: ToolContext,
                   default_timeout_s: float, workers: WorkerPool | None = None) -> str:
        auth = self._connection.auth
        if auth is not None:
            await auth.prepare()  # ToolError: what a person must do
        raise ToolError(f"MCP server {self.server!r} is authorized now: its tools are "
                        "there from the next message on", code="mcp_unavailable")


def _waiting(connection: Connection, taken: set[str]) -> list[MCPTool]:
    """The tools of a server that waits for a person to authorize agentd: those it
    listed before (their calls fail, saying so, until a token is there), else
    stand-ins named as its ``tools`` setting names them, else ``<server>__authorize``."""
    if connection.tools:
        return _wrap(connection, taken)
    server = connection.server
    names = server.tools or ["authorize"]
    out: list[MCPTool] = []
    for remote in names:
        name = _exposed_name(server.name, remote, taken)
        taken.add(name)
        out.append(_StandIn(
            name=name, description=(
                f"A tool of MCP server {server.name!r}, which agentd may not use until "
                "a person authorizes it: calling it says what to tell the user."),
            fn=_fail_direct_call, parameters={"type": "object"}, read_only=True,
            idempotent=True, needs_approval=False, needs_network=False, sends_out=False,
            untrusted_output=not server.trusted, timeout_s=server.timeout_s,
            server=server.name, remote_name=remote, _connection=connection))
    return out


def _wrap(connection: Connection, taken: set[str]) -> list[MCPTool]:
    server = connection.server
    listed = connection.tools
    if server.tools is not None:
        known = {t.name for t in listed}
        unknown = [n for n in server.tools if n not in known]
        if unknown:
            raise InvalidInput(
                f"MCP server {server.name!r} has no tool(s) {', '.join(unknown)}; it has: "
                f"{', '.join(sorted(known)) or 'none'}")
        wanted = set(server.tools)
        listed = [t for t in listed if t.name in wanted]
    return [_tool(server, connection, info, taken) for info in listed]


def _exposed_name(server: str, tool: str, taken: set[str] | None = None) -> str:
    """``<server>__<tool>``, made a valid OpenAI tool name (``[A-Za-z0-9_-]{1,64}``).

    Other characters become ``_``; a name that is too long, or that would clash with
    one already ``taken``, is cut and ends with a hash of the tool's real name.
    """
    name = f"{server}__{_UNSAFE.sub('_', tool)}"
    if len(name) > _MAX_NAME or (taken is not None and name in taken):
        digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
        name = f"{name[:_MAX_NAME - 9]}_{digest}"
    return name


def _tool(server: MCPServer, connection: Connection, info: ToolInfo,
          taken: set[str]) -> MCPTool:
    name = _exposed_name(server.name, info.name, taken)
    if name != f"{server.name}__{info.name}":
        log.info("MCP tool %r of server %r is exposed as %r", info.name, server.name, name)
    taken.add(name)
    ann = info.annotations
    read_only = bool(ann and ann.read_only_hint)
    idempotent = read_only or bool(ann and ann.idempotent_hint)
    # The MCP defaults: a tool that is not read-only may be destructive and may
    # reach an open world unless it says otherwise.
    destructive = not read_only and not (ann and ann.destructive_hint is False)
    open_world = not (ann and ann.open_world_hint is False)
    description = info.description or (ann.title if ann and ann.title else "") or ""
    if len(description) > MAX_DESCRIPTION:
        description = description[:MAX_DESCRIPTION - 1] + "…"
    schema = copy.deepcopy(info.input_schema)
    return MCPTool(
        name=name,
        description=description,
        fn=_fail_direct_call,
        parameters=schema,
        read_only=read_only,
        idempotent=idempotent,
        needs_approval=destructive,
        needs_network=False,
        sends_out=open_world and not (read_only and server.trusted),
        untrusted_output=not server.trusted,
        timeout_s=server.timeout_s,
        server=server.name,
        remote_name=info.name,
        _connection=connection,
        _validator=_validator(schema, name),
    )


def check_arguments(schema: dict[str, Any], name: str,
                    arguments: dict[str, Any]) -> dict[str, Any]:
    """:meth:`MCPTool.validate`, in a worker process (no connection there)."""
    probe = MCPTool(name=name, description="", fn=_fail_direct_call, parameters=schema,
                    server="", remote_name=name, _connection=cast(Connection, None),
                    _validator=_validator(schema, name))
    return probe.validate(arguments)


def _validator(schema: dict[str, Any], name: str) -> Any:
    # jsonschema is imported here, when an MCP tool is first listed: about 50 ms that
    # every process importing the settings (the CLI, each daemon) would pay otherwise.
    from jsonschema import Draft202012Validator, validators  # type: ignore[import-untyped]
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        # The server validates its arguments anyway; the tool stays usable.
        log.warning("MCP tool %s has an invalid input schema (%s); arguments are "
                    "not checked before the call", name, exc.message)
        return None
    return cls(schema)


def _render(result: CallToolResult, name: str) -> str | ToolOutput:
    """The text of a tool result for the model; an ``isError`` result raises ToolError.

    Text blocks are joined; without text, structured content is given as JSON; images,
    audio and binary resources are summarised. At most :data:`MAX_RESULT` characters.
    Images are also returned as images (a :class:`ToolOutput`): the run checks them as
    it does a built-in tool's (real decoders, limits, the model's vision, the quota)
    and gives a model that takes images each one that passes, a note otherwise.
    """
    from mcp_types import (
        AudioContent,
        EmbeddedResource,
        ImageContent,
        ResourceLink,
        TextContent,
        TextResourceContents,
    )

    parts: list[str] = []
    images: list[ToolImage] = []
    has_text = False
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
            has_text = True
        elif isinstance(block, ImageContent | AudioContent):
            kind = "image" if isinstance(block, ImageContent) else "audio"
            parts.append(f"[{kind}: {block.mime_type}, {_decoded_size(block.data)} bytes]")
            if isinstance(block, ImageContent):
                images.append(_image(block.data, block.mime_type))
        elif isinstance(block, EmbeddedResource):
            res = block.resource
            if isinstance(res, TextResourceContents):
                parts.append(f"[resource {res.uri}]\n{res.text}")
                has_text = True
            else:
                parts.append(f"[resource {res.uri}: {res.mime_type or 'binary'}, "
                             f"{_decoded_size(res.blob)} bytes]")
        elif isinstance(block, ResourceLink):
            parts.append(f"[resource link: {block.uri}"
                         f"{f' ({block.mime_type})' if block.mime_type else ''}]")
    if not has_text and result.structured_content is not None:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT:
        text = (text[:MAX_RESULT]
                + f"\n[MCP result truncated: {len(text)} characters in all]")
    if result.is_error:
        raise ToolError(f"{name} failed: {text or 'the server gave no details'}",
                        code="mcp_tool_error")
    if not images:
        return text
    from agentd.media import ToolOutput  # (Pillow's and the fetcher's imports: when used)

    return ToolOutput(text=text, images=tuple(images))


def _image(data: str, media_type: str) -> ToolImage:
    """An image block's bytes (bytes that are not base64 are kept as they came: the
    run's check refuses them, with a note the model reads)."""
    from agentd.media import ToolImage

    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raw = data.encode()
    return ToolImage(data=raw, media_type=media_type or None)


def _decoded_size(data: str) -> int:
    data = data.strip()
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
