"""Requests a browser was tricked into making: DNS rebinding and cross-site requests.

Two checks in front of everything else (the token check included), on HTTP and
WebSocket alike:

* **Host.** A request that came in on a loopback address must name a loopback host
  (``127.0.0.1``, ``localhost``, ``[::1]``, any port) or one of ``allowed_hosts``. A page
  on ``evil.example`` whose name was rebound to 127.0.0.1 reaches the daemon with
  ``Host: evil.example``: refused. What matters is where the request arrived, not where
  the daemon was told to bind, so a daemon on 0.0.0.0 is covered for its loopback side.
* **Origin.** A request whose ``Origin`` is not the daemon's own (the scheme and
  ``Host`` it was sent to) nor one of ``allowed_origins`` is refused. Browsers send
  ``Origin`` on every cross-site request that could change something, and scripts
  cannot forge it; clients other than browsers send none. This is what keeps a web
  page from driving a daemon run with ``auth = "none"`` (a "simple" cross-site POST
  needs no preflight), and the console's own requests are same-origin.

Both answer 403 ``forbidden`` (a WebSocket handshake is closed with 1008) and name the
setting that would let the request in.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from agentd.doors.http import error_response
from agentd.errors import Forbidden

__all__ = ["LOOPBACK_NAMES", "OriginCheck"]

#: Host names a request that came in on a loopback address may carry.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: The request headers the checks read.
_HEADERS = frozenset({b"host", b"origin"})
#: The Host check's answers kept, and the longest Host kept (a DNS name and a port).
_HOST_ANSWERS_KEPT = 256
_HOST_KEPT_BYTES = 260


@functools.lru_cache(maxsize=256)
def _loopback(address: str) -> bool:
    """Whether the server address a request came in on is a loopback one (a daemon
    listens on a few: the answer is kept, as parsing it was 3 % of a turn)."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """``example.com:8721`` -> ``example.com``; ``[::1]:8721`` -> ``[::1]``."""
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class OriginCheck:
    """Pure ASGI middleware: the Host and Origin checks above."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str] | None = None,
                 allowed_origins: list[str] | None = None) -> None:
        self.app = app
        self.hosts = LOOPBACK_NAMES | {h.lower() for h in allowed_hosts or ()}
        self.any_host = "*" in self.hosts
        self.origins = frozenset(o.lower().rstrip("/") for o in allowed_origins or ())
        self.any_origin = "*" in self.origins
        #: The Host check's answers (:meth:`_refused_host`), by the address a request
        #: came in on and its Host header: a daemon sees a few of each, and working
        #: one out (the address parsed, the name decoded, cased and cut from its port)
        #: cost a request about 5,000 instructions.
        self._host_answers: dict[tuple[object, bytes], str | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await error_response(Forbidden(problem), scope=scope)(scope, receive, send)

    def problem(self, scope: Scope) -> str | None:
        """Why an HTTP request or WebSocket handshake is refused, or None if it may go
        on (the request layer's fused front, ``agentd.server.app``, asks too)."""
        host = origin = None
        for key, value in scope["headers"]:
            if key in _HEADERS:  # (see agentd.doors.http._TOKEN_HEADERS)
                if key == b"host":
                    host = value
                else:
                    origin = value
        problem = None
        if host is not None and not self.any_host:
            name = self._refused_host(scope.get("server"), host)
            if name is not None:
                problem = (f"Host {name!r} is not a name of this daemon (a request "
                           "to a loopback address must name a loopback host; add it "
                           "to allowed_hosts if a proxy sends it)")
        if problem is None and origin is not None and not self.any_origin:
            sent = origin.decode("latin-1").lower().rstrip("/")
            scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
            own = f"{scheme}://{host.decode('latin-1').lower()}" if host else None
            if sent != own and sent not in self.origins:
                problem = (f"cross-origin request from {sent!r} refused (add the origin "
                           "to allowed_origins to let a page on it use the API)")
        return problem

    def _refused_host(self, server: Any, host: bytes) -> str | None:
        """The name ``host`` gives if a request that came in on ``server`` may not carry
        it, else None."""
        key = (server[0] if server else None, host)
        answers = self._host_answers
        if key in answers:
            return answers[key]
        refused = None
        if server and _loopback(str(server[0])):
            name = _host_name(host.decode("latin-1").lower())
            if name not in self.hosts:
                refused = name
        if len(host) <= _HOST_KEPT_BYTES:  # (any Host may be sent: only names are kept)
            if len(answers) >= _HOST_ANSWERS_KEPT:
                answers.clear()
            answers[key] = refused
        return refused
