"""A stub Telegram Bot API server: real HTTP on a loopback socket, calls recorded,
failures injected.

Point ``[channels.telegram] api_base`` at :attr:`StubBotAPI.url`::

    with StubBotAPI(token="123:abc") as bot:
        bot.fail("sendMessage", 429, retry_after=1)   # the next sendMessage
        bot.fail("sendMessage", 502)                   # the one after
        bot.fail("sendMessage", "slow", delay_s=3)     # answered after 3 s (processed)
        bot.add_file("f1", b"...", file_path="photos/file_1.jpg")
        ...
        bot.texts(42)              # what chat 42 was sent, in order
        bot.calls("sendChatAction")

It speaks the Bot API's wire format: ``POST /bot<token>/<method>`` with a JSON body,
answered ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
"description": "...", "parameters": {"retry_after": S}}``; files at
``GET /file/bot<token>/<file_path>``. A wrong token gets Telegram's 401 (and is
recorded, so a test can see it was used). Methods: ``sendMessage`` (text at most 4096
characters, as Telegram counts them, else a 400), ``sendChatAction``, ``getFile``,
``getMe``, ``setWebhook``; any other answers a 404 "Not Found".

Faults are queued per method and used in order, one per call: an HTTP status (429
with ``retry_after``, 5xx, 400, 403 "bot was blocked by the user"), ``"slow"`` (the
call is processed, then answered after ``delay_s``: a client that gave up before
retries a call that took effect) and ``"drop"`` (the connection is closed with no
answer; nothing is processed).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["BotCall", "StubBotAPI"]

_DESCRIPTIONS = {400: "Bad Request: chat not found", 403: "Forbidden: bot was blocked by "
                 "the user", 429: "Too Many Requests: retry later", 500: "Internal Server "
                 "Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(kw_only=True, frozen=True)
class BotCall:
    """One call as the stub saw it; ``answered``: the status it answered (None:
    dropped)."""

    method: str
    token: str
    payload: dict[str, Any]
    at: float
    answered: int | None


@dataclass(kw_only=True)
class _Fault:
    kind: int | str
    retry_after: float | None = None
    delay_s: float = 0.0
    description: str | None = None
    chat_id: int | None = None


@dataclass
class _File:
    content: bytes
    path: str
    extra: dict[str, Any] = field(default_factory=dict)


class StubBotAPI:
    """A Bot API on a free 127.0.0.1 port, run by uvicorn in a thread.

    Args:
        token: The bot token it accepts (others get 401).
    """

    def __init__(self, *, token: str = "123456:stub-token") -> None:
        self.token = token
        self._lock = threading.Lock()
        self._calls: list[BotCall] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._files: dict[str, _File] = {}
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- set-up and records ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def fail(self, method: str, kind: int | str, *, retry_after: float | None = None,
             delay_s: float = 0.0, description: str | None = None,
             chat_id: int | None = None, times: int = 1) -> None:
        """Queue a fault (``times`` of them) for the next calls of ``method`` (to
        ``chat_id`` only, when given)."""
        with self._lock:
            for _ in range(times):
                self._faults.setdefault(method, deque()).append(_Fault(
                    kind=kind, retry_after=retry_after, delay_s=delay_s,
                    description=description, chat_id=chat_id))

    def clear_faults(self) -> None:
        """Drop every fault not yet used."""
        with self._lock:
            self._faults.clear()

    def add_file(self, file_id: str, content: bytes, *, file_path: str | None = None,
                 **extra: Any) -> None:
        """A file ``getFile`` knows (``file_size`` is its real size unless given)."""
        with self._lock:
            self._files[file_id] = _File(content, file_path or f"documents/{file_id}",
                                         extra)

    def calls(self, method: str | None = None) -> list[BotCall]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def texts(self, chat_id: int) -> list[str]:
        """The texts of the messages chat ``chat_id`` was sent (accepted calls only)."""
        return [str(c.payload.get("text")) for c in self.calls("sendMessage")
                if c.answered == 200 and c.payload.get("chat_id") == chat_id]

    def downloads(self) -> list[str]:
        return [str(c.payload["file_path"]) for c in self.calls("download")]

    # -- the app --------------------------------------------------------------------------

    def _record(self, method: str, token: str, payload: dict[str, Any],
                answered: int | None) -> None:
        with self._lock:
            self._calls.append(BotCall(method=method, token=token, payload=payload,
                                       at=time.time(), answered=answered))

    def _fault(self, method: str, payload: dict[str, Any]) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(method)
            for fault in queue or ():
                if fault.chat_id is None or fault.chat_id == payload.get("chat_id"):
                    queue.remove(fault)  # type: ignore[union-attr]
                    return fault
            return None

    @staticmethod
    def _error(status: int, description: str, retry_after: float | None = None
               ) -> Response:
        body: dict[str, Any] = {"ok": False, "error_code": status,
                                "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return JSONResponse(body, status_code=status)

    async def _method(self, request: Request) -> Response:
        token, method = request.path_params["token"], request.path_params["method"]
        try:
            payload = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            self._record(method, token, {}, 400)
            return self._error(400, "Bad Request: the body is not a JSON object")
        if token != self.token:
            self._record(method, token, payload, 401)
            return self._error(401, "Unauthorized")
        fault = self._fault(method, payload)
        if fault is not None and fault.kind == "drop":
            self._record(method, token, payload, None)
            return _Drop()
        if fault is not None and isinstance(fault.kind, int):
            self._record(method, token, payload, fault.kind)
            return self._error(fault.kind, fault.description
                               or _DESCRIPTIONS.get(fault.kind, "Error"),
                               fault.retry_after if fault.kind == 429 else None)
        status, result = self._answer(method, payload)
        self._record(method, token, payload, status)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        if status != 200:
            return self._error(status, str(result))
        return JSONResponse({"ok": True, "result": result})

    def _answer(self, method: str, payload: dict[str, Any]) -> tuple[int, Any]:
        if method == "sendMessage":
            text = payload.get("text")
            if not isinstance(text, str) or not text.strip():
                return 400, "Bad Request: message text is empty"
            if len(text.encode("utf-16-le")) // 2 > 4096:
                return 400, "Bad Request: message is too long"
            if not isinstance(payload.get("chat_id"), int | str):
                return 400, "Bad Request: chat not found"
            return 200, {"message_id": next(self._ids), "date": int(time.time()),
                         "chat": {"id": payload["chat_id"], "type": "private"},
                         "text": text}
        if method == "sendChatAction":
            return 200, True
        if method == "getFile":
            with self._lock:
                found = self._files.get(str(payload.get("file_id")))
            if found is None:
                return 400, "Bad Request: invalid file_id"
            return 200, {"file_id": payload["file_id"], "file_unique_id": "u",
                         "file_size": len(found.content), "file_path": found.path,
                         **found.extra}
        if method == "getMe":
            return 200, {"id": 1, "is_bot": True, "first_name": "stub"}
        if method == "setWebhook":
            return 200, True
        return 404, "Not Found"

    async def _file(self, request: Request) -> Response:
        token, path = request.path_params["token"], request.path_params["path"]
        if token != self.token:
            self._record("download", token, {"file_path": path}, 401)
            return self._error(401, "Unauthorized")
        fault = self._fault("download", {})
        if fault is not None and isinstance(fault.kind, int):
            self._record("download", token, {"file_path": path}, fault.kind)
            return self._error(fault.kind, _DESCRIPTIONS.get(fault.kind, "Error"))
        with self._lock:
            found = next((f for f in self._files.values() if f.path == path), None)
        if found is None:
            self._record("download", token, {"file_path": path}, 404)
            return self._error(404, "Not Found")
        self._record("download", token, {"file_path": path}, 200)
        return Response(found.content, media_type="application/octet-stream")

    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/bot{token}/{method}", self._method, methods=["POST", "GET"]),
            Route("/file/bot{token}/{path:path}", self._file, methods=["GET"]),
        ])

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("StubBotAPI already started")
        # IPPROTO_TCP: asyncio sets TCP_NODELAY only on a socket whose proto says TCP.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_config=None, access_log=False,
                                lifespan="off", loop="asyncio", http="h11", ws="none",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"stub-telegram-{self._port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("stub Bot API server failed to start")
            time.sleep(0.01)

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> StubBotAPI:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Drop(Response):
    """Closes the connection without an answer (the ASGI server sees the app fail
    before it started the response)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise ConnectionAbortedError("dropped by the stub")
