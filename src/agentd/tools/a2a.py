"""``a2a_call``: ask a remote A2A agent, with the official ``a2a-sdk`` client.

A network tool like ``http_fetch`` (:mod:`agentd.tools.net`), held to the same rules:
off unless the agent's policy grants the network (host patterns match the ``url``'s
host), the host's addresses checked by :func:`agentd.sandbox.egress.check` before
connecting (no private or loopback address unless the operator lists it in ``[sandbox]
private_endpoints``; never the daemon's own port), and the connection pinned to the
address that was checked, so a DNS answer that changes in between cannot move it. It
talks only to the URL it was given: no agent card is fetched (a card names URLs of
its own, which would be a second door past the check), the client is built from a
card made here with that one interface. What comes back is the remote agent's words:
untrusted, it taints the session; and sending a message out is ``sends_out`` (after
taint, the policy asks first). The call is bounded by ``timeout_s``.

The SDK is imported by the first call (in a worker thread), not with the tool
registry: most daemons never call an A2A agent, and importing it took a large share
of the daemon's start-up (docs/design-notes.md).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from agentd.errors import ToolError
from agentd.logcontext import tool_traceparent
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import check_async
from agentd.security.endpoints import endpoint_of
from agentd.tools.base import Tool, ToolContext, tool

if TYPE_CHECKING:
    from a2a.types.a2a_pb2 import AgentCard, StreamResponse, Task

__all__ = ["A2A_TOOLS", "RemoteTokens", "a2a_call"]

MAX_REPLY_CHARS = 100_000
#: The most an answer may be, on the wire: the SDK reads a whole response into memory.
MAX_ANSWER_BYTES = 10_000_000


class _Capped(httpx.AsyncByteStream):
    """A response body that fails once it is over ``limit`` bytes."""

    def __init__(self, stream: httpx.AsyncByteStream, limit: int) -> None:
        self._stream, self._limit = stream, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in self._stream:
            total += len(chunk)
            if total > self._limit:
                raise httpx.ReadError(f"the answer is over {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Pinned(httpx.AsyncHTTPTransport):
    """Every request goes to ``address`` (checked), for ``host`` only; the URL's host
    stays in ``Host`` and, for https, in TLS's server name."""

    def __init__(self, scheme: str, host: str, port: int, address: str) -> None:
        super().__init__(trust_env=False)
        self._scheme, self._host, self._port, self._address = scheme, host, port, address

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        # The one endpoint asked for (its token, if any, is for it alone).
        if url.scheme != self._scheme or url.host.lower() != self._host or (
                url.port or (443 if url.scheme == "https" else 80)) != self._port:
            raise httpx.ConnectError(f"refused: {url.host} is not the host asked for")
        request.url = url.copy_with(host=self._address)
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": self._host}
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Capped(response.stream, MAX_ANSWER_BYTES)
        return response


def _import_sdk() -> None:
    import a2a.client
    import a2a.client.errors
    import a2a.types.a2a_pb2
    import a2a.utils.errors  # noqa: F401


def _card(url: str) -> AgentCard:
    from a2a.types.a2a_pb2 import AgentCapabilities, AgentCard, AgentInterface
    from a2a.utils import constants

    return AgentCard(
        name="remote", supported_interfaces=[AgentInterface(
            url=url, protocol_binding="JSONRPC",
            protocol_version=constants.PROTOCOL_VERSION_1_0)],
        capabilities=AgentCapabilities(streaming=False))


def _text(parts: object) -> str:
    return "\n".join(p.text for p in parts if p.text)  # type: ignore[attr-defined]


def _render(response: StreamResponse) -> str:
    from a2a.types.a2a_pb2 import TaskState

    if response.HasField("message"):
        message = response.message
        return f"message (context {message.context_id or '-'})\n\n{_text(message.parts)}"
    task: Task = response.task
    state = TaskState.Name(task.status.state).removeprefix("TASK_STATE_").lower()
    body = "\n".join(_text(a.parts) for a in task.artifacts)
    if task.status.HasField("message"):
        note = _text(task.status.message.parts)
        body = f"{body}\n{note}" if body else note
    return f"task {task.id} (context {task.context_id}): {state}\n\n{body}"


@dataclass(frozen=True)
class RemoteTokens:
    """The operator's ``[a2a] remote_tokens`` as the ``a2a_call`` tool sees them (a
    service the composition root provides): endpoint -> the name of the environment
    variable holding its token."""

    by_endpoint: Mapping[str, str] = field(default_factory=dict)


def _token_for(ctx: ToolContext, scheme: str, host: str, port: int) -> str | None:
    """The bearer token the operator listed for exactly this endpoint, scheme, host
    and port (``[a2a] remote_tokens``, keys in :func:`endpoint_of`'s form), read from
    the daemon's environment; None when none is listed: another port of the host, or
    http where the operator listed https, gets no token."""
    config = ctx.service(RemoteTokens)
    tokens = config.by_endpoint if config is not None else {}
    where = endpoint_of(scheme, host, port)
    variable = tokens.get(where)
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise ToolError(f"the token for {where} is not set (the operator's "
                        f"[a2a] remote_tokens names a variable that is empty)",
                        code="tool_unavailable")
    return token


@tool(needs_network=True, sends_out=True, untrusted_output=True, timeout_s=300)
async def a2a_call(ctx: ToolContext, url: str, message: str, context_id: str | None = None,
                   task_id: str | None = None, timeout_s: float = 120.0) -> str:
    """Send a message to a remote A2A agent (protocol 1.0, JSON-RPC) and return its
    answer: the task's state and reply text, with its ids to continue it.

    Args:
        url: the remote agent's A2A endpoint (for an agentd daemon:
            http(s)://HOST:PORT/a2a/AGENT).
        message: what to say.
        context_id: the conversation to continue (a previous answer's context).
        task_id: a task of that agent waiting for input, to answer it.
        timeout_s: the whole call, in seconds (up to 300).
    """
    sandbox = ctx.sandbox
    ctx.reached_outside = False  # until the message is sent
    if not isinstance(sandbox, Sandbox) or not sandbox.network:
        raise ToolError("this agent has no network (settings.policy.network)",
                        code="network_denied")
    if not 0 < timeout_s <= 300:
        raise ToolError("timeout_s must be above 0 and at most 300",
                        code="tool_bad_arguments")
    if not message.strip():
        raise ToolError("message is empty", code="tool_bad_arguments")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError(f"not an http(s) URL: {url!r}", code="tool_bad_arguments")
    host = parts.hostname.lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ToolError(f"bad port in {url!r}", code="tool_bad_arguments") from None
    address = await check_async(host, port, sandbox.network, sandbox.rules)
    await asyncio.to_thread(_import_sdk)  # a first call: not on the event loop
    from a2a.client import ClientConfig, ClientFactory
    from a2a.client.errors import A2AClientError
    from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest
    from a2a.types.a2a_pb2 import StreamResponse as Response
    from a2a.utils.errors import A2AError

    token = _token_for(ctx, parts.scheme, host, port)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # The remote agent's spans continue this call's (its invoke_agent client span).
    parent = tool_traceparent(ctx.run_id, "a2a:" + ctx.call_id)
    if parent:
        headers["traceparent"] = parent
    request = SendMessageRequest(message=Message(
        role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=message)],
        context_id=context_id or "", task_id=task_id or ""))
    try:
        async with asyncio.timeout(timeout_s), httpx.AsyncClient(
                transport=_Pinned(parts.scheme, host, port, address), headers=headers,
                follow_redirects=False, trust_env=False, timeout=timeout_s) as http:
            client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)
                                   ).create(_card(url))
            # From here on what comes back (an answer, an error) is from outside.
            ctx.reached_outside = True
            last: Response | None = None
            async for response in client.send_message(request):
                last = response
    except TimeoutError:
        raise ToolError(f"{url} did not answer within {timeout_s:g}s",
                        code="tool_timeout") from None
    except (A2AError, A2AClientError, httpx.HTTPError) as exc:
        raise ToolError(f"the A2A agent at {url} answered with an error: "
                        f"{type(exc).__name__}: {str(exc)[:2000]}",
                        code="network_error") from None
    if last is None:
        raise ToolError(f"the A2A agent at {url} sent no answer", code="network_error")
    text = _render(last)
    if len(text) > MAX_REPLY_CHARS:
        text = text[:MAX_REPLY_CHARS] + f"\n[answer cut at {MAX_REPLY_CHARS} characters]"
    return text


A2A_TOOLS: dict[str, Tool] = {a2a_call.name: a2a_call}
