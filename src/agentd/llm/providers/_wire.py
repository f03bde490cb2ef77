"""A model's calls on the wire: the request its provider's SDK would send, built by the
SDK once, sent with each call's body as it is.

Both providers' SDKs (``openai``, ``anthropic``: Stainless clients) send a request
through a generic pipeline on every call: the options copied twice, the headers merged
and checked, the URL parsed again, an ``httpx2`` request, the ``httpx2`` client, then
the aiohttp transport their ``DefaultAioHttpClient`` adapts to it; the stream comes back
through the same layers and their SSE decoder. For a turn whose body is already
wire-ready that was more than the rest of the turn: 6.2 M instructions an OpenAI turn,
3.5 M without those layers (``bench/instructions.py``, docs/benchmarks.md, "The
provider's wire").

So the SDK builds the request once per model (``_build_request``: the URL, the headers
with its auth, version and platform, the time limits; the platform read in a thread
first, as its own ``request()`` reads it), and each call sends the body the provider
encoded with aiohttp, the SDKs' own transport, on a session of the model's. What stays
the SDK's: the status errors (``_make_status_error_from_response``: its exception
classes, messages and bodies, built from the answer), a stream's error events (the
provider raises what the SDK raises), timeouts and failed connections as its
``APITimeoutError`` and ``APIConnectionError`` (with the aiohttp error as their cause,
as its transport did), the time limits (its ``timeout``, mapped onto aiohttp's as its
transport maps them). Retries were never the SDK's (``max_retries=0``: the kernel
retries).

The SDK's private names used here (``_build_request``, ``FinalRequestOptions``,
``_platform`` and ``get_platform``, ``_make_status_error_from_response``,
``_make_status_error``) are the ones its own ``request()`` and stream use;
tests/llm/test_wire.py checks, for both SDKs, that what the wire sends is what the
SDK's ``post()`` sends, and fails when an SDK release changes either.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import httpx2
from yarl import URL

from agentd.security.tls import tls_context

__all__ = ["MAX_EVENT_BYTES", "SdkParts", "SseEvent", "SseTooLarge", "Wire", "WireReply",
           "proxy_for", "sse_events"]

#: Headers aiohttp writes itself from the request it sends.
_OWN = frozenset({"host", "content-length", "transfer-encoding"})
#: After a stream's last event, how long the rest of the body (the chunked encoding's
#: end) may take before the connection is closed instead of kept (the SDKs' own limit).
DRAIN_S = 0.1
#: The most a stream's event (its data lines, or a line not ended yet) may hold: a
#: model server is not trusted to end what it sends (a reply's largest event, a tool
#: call's arguments in one delta, is far below it).
MAX_EVENT_BYTES = 16 << 20
#: The most of an error's body that is read (the SDK's error quotes it).
_MAX_ERROR_BODY = 1 << 20
#: The SDKs' aiohttp client's pool: connections per model, how long an idle one is kept.
_POOL = 1000
_KEEPALIVE_S = 5.0


class SseTooLarge(ValueError):
    """A stream's event (or a line of it) over :data:`MAX_EVENT_BYTES`."""


class SseEvent(NamedTuple):
    """One Server-Sent Event: its ``event`` field (None when it had none) and data."""

    event: str | None
    data: str


@dataclass(frozen=True, slots=True)
class SdkParts:
    """What the wire takes from an SDK's module: the exception classes it raises, the
    request options' class, and what reads the platform its headers name (may block:
    read in a thread, once, as its own ``request()`` does)."""

    timeout: Callable[..., Exception]
    connection: Callable[..., Exception]
    options: Any
    platform: Callable[[], Any]


class _Endpoint(NamedTuple):
    url: URL
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout


class Wire:
    """The calls of one model: ``path`` (``/chat/completions``, ``/v1/messages``) on
    the SDK ``client``'s base URL, with its headers and time limits."""

    def __init__(self, client: Any, path: str, sdk: SdkParts) -> None:
        self._client = client
        self._path = path
        self._sdk = sdk
        self._endpoint: _Endpoint | None = None
        self._session: aiohttp.ClientSession | None = None
        #: The proxy the environment names for the model's URL, read when the model
        #: is made, as the SDK's client reads it then, and its credentials' header:
        #: for an https URL it goes with the tunnel's CONNECT, for a plain http one
        #: (a request the proxy forwards) with the request itself.
        self._proxy, self._proxy_headers = proxy_for(str(client.base_url))
        self._own_headers: dict[str, str] = {}
        if self._proxy_headers and client.base_url.scheme == "http":
            self._own_headers, self._proxy_headers = self._proxy_headers, None

    def _template(self) -> _Endpoint:
        """What the SDK's own request would be, but for its body (on the event loop:
        its headers say which async library sends it)."""
        request = self._client._build_request(self._sdk.options.construct(
            method="post", url=self._path, content=b""))
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in request.headers.raw
                   if name.decode("latin-1").lower() not in _OWN}
        limits = request.extensions.get("timeout") or {}
        # As the SDKs' aiohttp transport reads httpx's time limits.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=limits.get("connect"),
                                        sock_read=limits.get("read"),
                                        connect=limits.get("pool"))
        return _Endpoint(URL(str(request.url), encoded=True),
                         {**headers, **self._own_headers}, timeout)

    async def _ready(self) -> tuple[aiohttp.ClientSession, _Endpoint]:
        endpoint = self._endpoint
        if endpoint is None:
            if getattr(self._client, "_platform", False) is None:
                self._client._platform = await asyncio.to_thread(self._sdk.platform)
            endpoint = self._endpoint = self._template()
        session = self._session
        if session is None or session.closed:
            # Cookies are not kept: a model call carries the SDK's headers, nothing a
            # server set on an earlier answer.
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls_context(trust_env=True),
                                               limit=_POOL, keepalive_timeout=_KEEPALIVE_S),
                cookie_jar=aiohttp.DummyCookieJar(), timeout=endpoint.timeout)
        return session, endpoint

    async def open(self, body: bytes) -> WireReply:
        """Send ``body``; the open reply once its status is a success. Raises the
        SDK's errors: its status error (the error body read), a timeout, a failed
        connection."""
        session, endpoint = await self._ready()
        try:
            response = await session.post(endpoint.url, data=body, headers=endpoint.headers,
                                          proxy=self._proxy,
                                          proxy_headers=self._proxy_headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_error(exc) from exc
        if response.status >= 400:
            try:
                content = await response.content.read(_MAX_ERROR_BODY)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise self.transport_error(exc) from exc
            finally:
                response.release()
            raise self._client._make_status_error_from_response(
                self.sdk_response(response, content))
        return WireReply(self, response)

    def sdk_request(self) -> httpx2.Request:
        """The request as the SDK's errors name it (method and URL)."""
        return httpx2.Request("POST", str(self._endpoint.url) if self._endpoint else
                              str(self._client.base_url))

    def transport_error(self, exc: BaseException) -> Exception:
        """The SDK's error for a transport failure: a timeout, else a failed
        connection (reset, refused, cut off mid-body)."""
        request = self.sdk_request()
        if isinstance(exc, TimeoutError):
            return self._sdk.timeout(request=request)
        return self._sdk.connection(request=request)

    def sdk_response(self, response: aiohttp.ClientResponse, content: bytes = b""
                     ) -> httpx2.Response:
        """The answer as the SDK's errors hold it (an ``httpx2`` response)."""
        return httpx2.Response(
            response.status, content=content, request=self.sdk_request(),
            headers=[(k.decode("latin-1"), v.decode("latin-1"))
                     for k, v in response.raw_headers])

    def status_error(self, message: str, body: object, response: aiohttp.ClientResponse
                     ) -> Exception:
        """The SDK's error for an error event inside a stream that began with a
        success (Anthropic's ``error`` event: ``_make_status_error``)."""
        error: Exception = self._client._make_status_error(
            message, body=body, response=self.sdk_response(response))
        return error

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._client.close()


def proxy_for(url: str) -> tuple[URL | None, dict[str, str] | None]:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, less what ``NO_PROXY`` exempts, as ``urllib`` reads them), and the
    headers that carry its credentials (the proxy URL's user and password, as Basic
    auth): what the SDKs' aiohttp client sent the calls through."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(parts.netloc):
        return None, None
    chosen = proxies.get(parts.scheme) or proxies.get("all")
    if not chosen:
        return None, None
    proxy = URL(chosen)
    if proxy.user is None:
        return proxy, None
    token = base64.b64encode(f"{proxy.user}:{proxy.password or ''}".encode()).decode()
    return proxy.with_user(None), {"Proxy-Authorization": f"Basic {token}"}


class WireReply:
    """An answer being streamed: its events (:meth:`events`), then closed (``async
    with``), which keeps the connection for the next call when the body was read to
    its end."""

    def __init__(self, wire: Wire, response: aiohttp.ClientResponse) -> None:
        self.wire = wire
        self.response = response

    async def __aenter__(self) -> WireReply:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.response.release()  # (kept only if the body was read to its end)

    async def events(self) -> AsyncGenerator[SseEvent, None]:
        """The stream's events; a transport failure is the SDK's error."""
        try:
            async for event in sse_events(self.response.content.iter_any()):
                yield event
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.wire.transport_error(exc) from exc

    async def drain(self) -> None:
        """After the stream's last event: read the rest of the body (the end of its
        chunked encoding), for at most :data:`DRAIN_S`, else drop the connection."""
        content = self.response.content
        if content.at_eof():
            return
        try:
            async with asyncio.timeout(DRAIN_S):
                while await content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            self.response.close()


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncGenerator[SseEvent, None]:
    """Server-Sent Events from a body's chunks, as the WHATWG spec parses them: lines
    end with CRLF, LF or CR (one cut between two chunks too); ``:`` starts a comment;
    a field's value loses one leading space; ``data`` lines join with newlines; a
    blank line ends an event, which is dispatched if it had a ``data`` line (``id``
    and ``retry`` are not kept); an event the body ends inside is dropped. An event
    (or an unended line) over :data:`MAX_EVENT_BYTES` raises :class:`SseTooLarge`."""
    parts: list[bytes] = []  # (a line not ended yet, in the pieces it came in)
    size = 0
    state = _Event()
    async for chunk in chunks:
        if (b"\n" not in chunk and b"\r" not in chunk
                and not (parts and parts[-1].endswith(b"\r"))):
            # (A piece with no line end joins the line; after a CR, the CR ended it.)
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_EVENT_BYTES:
                raise SseTooLarge(f"a stream line ran over {MAX_EVENT_BYTES} bytes")
            continue
        data = b"".join([*parts, chunk]) if parts else chunk
        lines = data.splitlines(keepends=True)
        # The last line may be unfinished, or end in a CR whose LF is in the next chunk.
        if lines[-1].endswith(b"\n"):
            parts, size = [], 0
        else:
            last = lines.pop()
            parts, size = [last], len(last)
        for line in lines:
            event = state.feed(line)
            if event is not None:
                yield event
    if parts and parts[-1].endswith(b"\r"):
        event = state.feed(b"".join(parts))
        if event is not None:
            yield event


class _Event:
    """The event being read."""

    __slots__ = ("data", "event", "size")

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []
        self.size = 0

    def feed(self, raw: bytes) -> SseEvent | None:
        line = raw.rstrip(b"\r\n").decode()
        if not line:
            data, event = self.data, self.event
            self.event, self.data, self.size = None, [], 0
            return SseEvent(event, "\n".join(data)) if data else None
        if line[0] == ":":
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self.size += len(value)
            if self.size > MAX_EVENT_BYTES:
                raise SseTooLarge(f"a stream event ran over {MAX_EVENT_BYTES} bytes")
            self.data.append(value)
        elif name == "event":
            self.event = value
        return None
