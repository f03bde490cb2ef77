"""One send for a response's head and its body.

uvicorn writes a response in two calls of its transport: the status line and headers
when the app sends ``http.response.start``, then the body. On uvloop each call is a
``write`` system call of its own, so a waited turn's answer left in two TCP segments,
each going through the loopback stack and waking the client. :class:`JoinedWrites`
stands in for the connection's transport during one request: a head that announces a
``Content-Length`` (a body follows, of a known size) is held back and leaves with the
body's first piece, in one write. Anything else passes straight through: a streamed
response's head (``Transfer-Encoding: chunked``, server-sent events), whose client
must have it before the first event; ``100 Continue``; a ``HEAD`` request's answer,
which has no body (:func:`join_writes` is not used for one).

:func:`join_writes` installs it on uvicorn's request cycle (the ``send`` an ASGI app is
given is that cycle's bound method; its ``transport`` attribute is what it writes
to). With any other server, or a uvicorn whose cycle no longer looks like that, it
does nothing and the response goes out as the server writes it. A test
(tests/server/test_joined_writes.py) holds the installed uvicorn to one write.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope, Send

__all__ = ["JoinedWrites", "join_writes"]

#: The modules of uvicorn's HTTP/1.1 request cycles (httptools' and h11's).
_CYCLES = frozenset({"uvicorn.protocols.http.httptools_impl",
                     "uvicorn.protocols.http.h11_impl"})


class JoinedWrites:
    """A connection's transport for one request: a response head that announces a
    ``Content-Length`` is held until the next write, and the two go out as one.
    Everything else is the real transport's (``close`` sends a held head first)."""

    __slots__ = ("_done", "_head", "_real")

    def __init__(self, real: Any) -> None:
        self._real = real
        self._head: bytes | None = None
        self._done = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._real.write(b"".join((head, data)))  # (data may be any bytes-like)
            return
        if not self._done and data[:5] == b"HTTP/" and data[9:10] != b"1":
            # The response's head (not an interim 1xx): the only write ever held, and
            # only when a body of known length follows. Whatever comes after it, a
            # body that reads like a head included, passes through. (Both servers
            # write header names in lower case, as the app gave them; starlette's are.)
            self._done = True
            if (b"\r\ncontent-length:" in data
                    and b"\r\ntransfer-encoding:" not in data):
                self._head = bytes(data)
                return
        self._real.write(data)

    def close(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._real.write(head)
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def join_writes(scope: Scope, send: Send) -> None:
    """Have the response to this request (``scope``, ``send``: an ``http`` request's)
    leave in one write when uvicorn serves it and its head announces a length."""
    if scope["method"] == "HEAD":
        return
    cycle = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ not in _CYCLES:
        return
    transport = getattr(cycle, "transport", None)
    if transport is not None and not isinstance(transport, JoinedWrites):
        cycle.transport = JoinedWrites(transport)
