"""bench/instructions.py's ``get_load`` path sends its GETs over real sockets, each
client on one kept-alive connection, with the bench's token, reading each answer
whole; an answer other than 200, or one with no length, stops it with the status
(a run under callgrind needs valgrind, which the suite does not install)."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("instructions", None)
    return importlib.import_module("instructions")


class _Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None, int]] = []  # path, token, client port


@pytest.fixture
def server() -> Iterator[tuple[int, _Seen]]:
    seen = _Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with seen.lock:
                seen.requests.append((self.path, self.headers.get("Authorization"),
                                      self.client_address[1]))
            status, body, length = {
                "/ok": (200, b'{"name": "i-get"}', True),
                "/missing": (404, b'{"error": "agent_not_found"}', True),
                "/unsized": (200, b"", False),
            }[self.path]
            self.send_response(status)
            if length:
                self.send_header("Content-Length", str(len(body)))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_each_client_sends_its_gets_on_one_connection_with_the_token(
        server: tuple[int, _Seen], monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = _bench(monkeypatch)
    port, seen = server
    assert instructions.gets(port, "/ok", clients=3, requests=4) == 12
    assert len(seen.requests) == 12
    assert {(p, t) for p, t, _ in seen.requests} == {
        ("/ok", f"Bearer {instructions.TOKEN}")}
    by_connection: dict[int, int] = {}
    for _, _, connection in seen.requests:
        by_connection[connection] = by_connection.get(connection, 0) + 1
    assert sorted(by_connection.values()) == [4, 4, 4]


@pytest.mark.parametrize(("path", "refused"), [
    ("/missing", r"404 Not Found: b'\{\"error\": \"agent_not_found\"\}'"),
    ("/unsized", r"no content-length"),
])
def test_an_answer_not_200_or_with_no_length_stops_the_load_at_once(
        server: tuple[int, _Seen], monkeypatch: pytest.MonkeyPatch, path: str,
        refused: str) -> None:
    instructions = _bench(monkeypatch)
    port, seen = server
    with pytest.raises(RuntimeError, match=refused):
        instructions.gets(port, path, clients=1, requests=3)
    assert len(seen.requests) == 1
