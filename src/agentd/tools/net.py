"""``http_fetch``: the one way tools reach the network from the daemon itself.

Off unless the agent's policy grants the network (``settings.policy.network``: True or
host patterns). Every request, and every redirect it follows, is checked against the
grant, and the host's addresses are checked before connecting, by the same check as
every connection of a sandbox (:func:`agentd.sandbox.egress.check`): a private,
loopback, link-local or otherwise non-public address, or one of this host's own, is
refused unless the operator lists that host and port in ``[sandbox]
private_endpoints``, and the daemon's own port always is (no grant opens the daemon's
API or a cloud metadata endpoint). The connection goes to the address that was
checked (the URL's host is kept for ``Host`` and TLS), so a DNS answer that changes in
between cannot redirect it. The response is capped in size and time, and its content
comes from outside: it taints the session. A fetch refused before any request left
(no grant, a refused address, bad arguments) brought nothing in, and does not.
"""

from __future__ import annotations

import asyncio
import codecs
from typing import Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from agentd.errors import AgentdError, ToolError
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import check_async
from agentd.security.tls import tls_context
from agentd.tools.base import Tool, ToolContext, tool
from agentd.tools.secret_refs import host_headers, resolve_mapping

__all__ = ["NET_TOOLS", "http_fetch"]

MAX_BYTES = 1_000_000
MAX_REDIRECTS = 5
_SLOW_CODECS = frozenset({"punycode", "idna"})
_DROPPED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _denied(message: str) -> ToolError:
    return ToolError(message, code="network_denied")


async def _address(sandbox: Sandbox, host: str, port: int) -> str:
    """The address to connect to, once the grant and every address of ``host`` are
    checked (the same check as the egress proxy of commands)."""
    return await check_async(host, port, sandbox.network, sandbox.rules)


@tool(needs_network=True, untrusted_output=True, timeout_s=120)
async def http_fetch(ctx: ToolContext, url: str, method: Method = "GET",
                     body: str | None = None, headers: dict[str, str] | None = None,
                     max_bytes: int = 100_000, timeout_s: float = 30.0) -> str:
    """Fetch a URL over HTTP(S) and return the status, content type and body text.

    Args:
        url: an http:// or https:// URL.
        method: GET (the default), HEAD, POST, PUT, PATCH or DELETE.
        body: the request body (for POST, PUT, PATCH).
        headers: extra request headers.
        max_bytes: at most this much of the body is returned (up to 1,000,000).
        timeout_s: the whole request, redirects included, in seconds (up to 120).
    """
    sandbox = ctx.sandbox
    ctx.reached_outside = False  # until a request is sent (see _fetch)
    if not isinstance(sandbox, Sandbox) or not sandbox.network:
        raise _denied("this agent has no network (settings.policy.network)")
    if not 1 <= max_bytes <= MAX_BYTES:
        raise ToolError(f"max_bytes must be 1 to {MAX_BYTES}", code="tool_bad_arguments")
    if not 0 < timeout_s <= 120:
        raise ToolError("timeout_s must be above 0 and at most 120",
                        code="tool_bad_arguments")
    # (The model's headers never replace the settings' own for a host.)
    own = {k.lower() for values in ctx.http_headers.values() for k in values}
    sent = {k: v for k, v in (headers or {}).items()
            if k.lower() not in _DROPPED_HEADERS and k.lower() not in own}
    if len(sent) > 50:
        raise ToolError("at most 50 headers", code="tool_bad_arguments")
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(ctx, sandbox, url, method, body, sent, max_bytes,
                                timeout_s)
    except TimeoutError:
        raise ToolError(f"{url} did not answer within {timeout_s:g}s",
                        code="tool_timeout") from None


async def _host_headers(ctx: ToolContext, host: str) -> dict[str, str]:
    extra = host_headers(ctx.http_headers, host)
    if not extra:
        return {}
    try:
        return await resolve_mapping(extra, ctx.secrets, use=f"http_fetch {host} header")
    except AgentdError as exc:
        raise ToolError(f"the headers settings.http_headers gives {host}: {exc.message}",
                        code="secret_not_found") from None


async def _fetch(ctx: ToolContext, sandbox: Sandbox, url: str, method: str,
                 body: str | None, headers: dict[str, str], max_bytes: int,
                 timeout_s: float) -> str:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                 verify=tls_context(), timeout=timeout_s) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ToolError(f"not an http(s) URL: {url!r}", code="tool_bad_arguments")
            host = parts.hostname.lower()
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise ToolError(f"bad port in {url!r}", code="tool_bad_arguments") from None
            address = await _address(sandbox, host, port)
            # Only now, past the grant, and for this host alone (a redirect elsewhere
            # gets its own or none): the settings' headers, their secrets resolved.
            sent = {**headers, **await _host_headers(ctx, host)}
            netloc = f"[{address}]" if ":" in address else address
            target = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/",
                                 parts.query, ""))
            request = client.build_request(
                method, target, content=body.encode() if body is not None else None,
                headers={**sent, "Host": parts.netloc.rpartition("@")[2]},
                extensions={"sni_hostname": host} if parts.scheme == "https" else {})
            # From here on what comes back (a page, an error, a redirect's target,
            # whose refusal names it) is from outside, whatever happens next.
            ctx.reached_outside = True
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise ToolError(f"{method} {url} failed: {exc}",
                                code="network_error") from None
            try:
                location = response.headers.get("location")
                if response.is_redirect and location and method in ("GET", "HEAD"):
                    url = urljoin(url, location)
                    continue
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        break
                return _render(method, url, response, bytes(data), max_bytes)
            finally:
                await response.aclose()
    raise ToolError(f"more than {MAX_REDIRECTS} redirects from {url}",
                    code="network_error")


def _render(method: str, url: str, response: httpx.Response, data: bytes,
            max_bytes: int) -> str:
    kind = response.headers.get("content-type", "")
    head = f"{method} {url}\nHTTP {response.status_code} {response.reason_phrase}\n" \
           f"content-type: {kind or '(none)'}\n\n"
    cut = len(data) > max_bytes
    data = data[:max_bytes]
    encoding = response.encoding or "utf-8"
    try:
        if codecs.lookup(encoding).name in _SLOW_CODECS:
            # The page names the charset: these decode in pure Python, in quadratic
            # time (a megabyte of "punycode" is minutes on the event loop).
            encoding = "utf-8"
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return head + f"[binary content: {len(data)} bytes shown of the body]"
    return head + text + (f"\n[body cut at {max_bytes} bytes]" if cut else "")


NET_TOOLS: dict[str, Tool] = {http_fetch.name: http_fetch}
