"""The metrics' listener of its own (``[telemetry] metrics_listen``): a minimal HTTP/1.1
server on the event loop answering ``GET /metrics`` and nothing else, without a token.

It must be bound to a private address (the figures name every tenant and model): it
reads one request head per connection, answers, and closes; anything else is a 404,
a 405 or a 400, and a client that sends nothing in :data:`_HEAD_TIMEOUT_S` is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from agentd.errors import InvalidInput

__all__ = ["CONTENT_TYPE", "Listener", "parse_listen"]

log = logging.getLogger(__name__)

_HEAD_TIMEOUT_S = 10.0
_HEAD_LIMIT = 16 * 1024
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) as (host, port); InvalidInput if not."""
    host, colon, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"telemetry.metrics_listen must be 'host:port', not {value!r}",
                           field="telemetry.metrics_listen")
    return host, int(port)


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              *, head: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head else body)


class Listener:
    """A running listener; :meth:`close` stops it."""

    def __init__(self, render: Callable[[], Awaitable[bytes]]) -> None:
        self._render = render
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(cls, host: str, port: int, render: Callable[[], Awaitable[bytes]]
                    ) -> Listener:
        listener = cls(render)
        try:
            listener._server = await asyncio.start_server(listener._serve, host, port,
                                                          limit=_HEAD_LIMIT)
        except OSError as exc:
            raise InvalidInput(f"telemetry.metrics_listen: cannot listen on "
                               f"{host}:{port}: {exc.strerror or exc}",
                               field="telemetry.metrics_listen") from exc
        log.info("metrics: /metrics served without a token on %s:%d", host,
                 listener.address[1])
        return listener

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                     ) -> None:
        try:
            try:
                async with asyncio.timeout(_HEAD_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                writer.write(_response("400 Bad Request", b"bad request\n"))
            else:
                method, path = parts[0], parts[1].split(b"?", 1)[0]
                if path != b"/metrics":
                    writer.write(_response("404 Not Found", b"only /metrics is served "
                                                            b"here\n"))
                elif method not in (b"GET", b"HEAD"):
                    writer.write(_response("405 Method Not Allowed", b"GET only\n"))
                else:
                    body = await self._render()
                    writer.write(_response("200 OK", body, CONTENT_TYPE,
                                           head=method == b"HEAD"))
            await writer.drain()
        except ConnectionError:
            pass
        except Exception:
            log.exception("metrics: the listener could not answer")
            with contextlib.suppress(Exception):
                writer.write(_response("500 Internal Server Error", b"error\n"))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
