"""A webhook receiver on a real socket (a thread of the test process): it records every
request (headers, body, whether the Standard Webhooks signature checks out) and answers
from a script of responses (the last one repeats)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    #: (status, extra headers) answered in turn; the last one repeats.
    script: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(200, {})])
    #: The secret signatures are checked with (set once the subscription is made).
    secret: str | None = None
    port: int = 0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(self.path, headers, body)
                status, extra = receiver._answer()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> None:
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        with self._lock:
            self.received.append(Received(path, headers, body, time.time(), verified))

    def _answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def of_kind(self, kind: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.json["type"] == kind]

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.received]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
