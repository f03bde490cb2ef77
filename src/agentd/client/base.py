"""The client's transport: where the daemon is, requests, error mapping, SSE streams."""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, SSEError

from agentd.client._errors import APIError, ClientError, ConnectionFailed, WaitTimeout
from agentd.client._sse import SSEEvent, parse_frame
from agentd.security.tls import tls_context
from agentd.security.tokens import read_token

__all__ = ["DEFAULT_URL", "BaseClient", "local_url", "locate_daemon", "segment"]

DEFAULT_URL = "http://127.0.0.1:8721"


def segment(value: str) -> str:
    """Encode one path segment; '/' too, so keys like ``a/b`` stay one segment."""
    return quote(value, safe="")


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a daemon bound to host:port."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _is_local(url: str) -> bool:
    host = (httpx.URL(url).host or "").lower()
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _local_home() -> Path:
    raw = os.environ.get("AGENTD_HOME")
    return Path(raw).expanduser() if raw else Path.home() / ".agentd"


def locate_daemon() -> tuple[str, str | None]:
    """The local daemon's URL and token, found as the ``agentd`` command finds them.

    ``AGENTD_URL`` wins (with ``AGENTD_TOKEN``, if set). Otherwise the daemon this
    machine's configuration describes (AGENTD_HOST / AGENTD_PORT / AGENTD_HOME, ``.env``,
    ``agentd.toml``): its URL, and ``AGENTD_TOKEN``, else its first configured token,
    else the bootstrap token in its home when this user may read it.

    Raises:
        ClientError: The configuration does not load (a bad AGENTD_PORT, a broken
            agentd.toml).
    """
    token = os.environ.get("AGENTD_TOKEN") or None
    url = os.environ.get("AGENTD_URL")
    if url:
        return url, token
    # Imported here: the configuration is only needed to find a local daemon, and the
    # client stays light to import.
    from pydantic import ValidationError

    from agentd.config import ConfigFileError, load_settings, settings_problem

    try:
        settings = load_settings()
    except (ConfigFileError, ValidationError) as exc:
        raise ClientError(f"invalid agentd configuration: {settings_problem(exc)}"
                          ) from None
    if token is None:
        token = settings.tokens[0] if settings.tokens else read_token(settings.home)
    return local_url(settings.host, settings.port), token


class BaseClient:
    """The transport every area of :class:`agentd.client.Client` builds on."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if base_url is None and not os.environ.get("AGENTD_URL"):
            base_url, found = locate_daemon()
            token = token if token is not None else found
        else:
            base_url = base_url or os.environ["AGENTD_URL"]
            token = token if token is not None else os.environ.get("AGENTD_TOKEN") or None
            if token is None and _is_local(base_url):
                # The local daemon's bootstrap token, when this user may read it.
                token = read_token(_local_home())
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "agentd-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport,
            # (made once per process, not per client: a CLI command may make several)
            verify=tls_context(trust_env=True),
        )

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    # -- plumbing ----------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> ClientError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
            return ConnectionFailed(self.base_url, str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(
                f"no reply from the agentd daemon at {self.base_url} within "
                f"{self._timeout:g}s ({type(exc).__name__})"
            )
        return ClientError(f"request to the agentd daemon at {self.base_url} failed: {exc!r}")

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if headers:
            kwargs["headers"] = dict(headers)
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if response.is_error:
            raise APIError.from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(
                f"the daemon at {self.base_url} sent a reply that is not JSON "
                f"(HTTP {response.status_code} {method} {path})"
            ) from exc

    def _frames(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_ms: list[int] | None = None,
        deadline: float | None = None,
    ) -> Generator[SSEEvent, None, None]:
        """Open one SSE request and yield its frames until the server ends it.

        With ``deadline`` (a ``time.monotonic()`` value), raise :class:`WaitTimeout`
        once it has passed; the daemon's heartbeats wake the check while nothing else
        comes."""
        req_headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        req_headers.update(headers or {})
        kwargs: dict[str, Any] = {
            "headers": req_headers,
            # Frames may be far apart (slow tools, an idle session): wait between
            # them for as long as it takes, but still bound connecting and writing.
            "timeout": httpx.Timeout(self._timeout, read=None),
        }
        if deadline is not None:
            # Heartbeats come every 15 s: a read that waits much longer than what is
            # left of the deadline has lost the daemon, or will be too late anyway.
            left = max(deadline - time.monotonic(), 0.0)
            kwargs["timeout"] = httpx.Timeout(self._timeout, read=left + 30.0)
        if json_body is not None:
            kwargs["json"] = json_body
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise APIError.from_response(response)
                source = EventSource(response)
                try:
                    for sse in source.iter_sse():
                        if sse.retry is not None and retry_ms is not None:
                            retry_ms[:] = [sse.retry]
                        if deadline is not None and time.monotonic() > deadline:
                            raise WaitTimeout(f"{method} {path}: no end within the timeout")
                        if sse.event == "message" and not sse.data:
                            continue  # a heartbeat, or an id:/retry: block: no frame
                        yield parse_frame(sse.event, sse.id, sse.data)
                except SSEError as exc:
                    raise ClientError(
                        f"the daemon at {self.base_url} did not answer {method} {path} "
                        f"with an event stream: {exc}"
                    ) from exc
        except httpx.ReadTimeout as exc:
            if deadline is None:
                raise self._transport_error(exc) from exc
            raise WaitTimeout(f"{method} {path}: no end within the timeout") from None
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    @staticmethod
    def _session_path(agent: str, key: str) -> str:
        return f"/v1/agents/{segment(agent)}/sessions/{segment(key)}"

