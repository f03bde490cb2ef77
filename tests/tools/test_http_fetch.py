"""http_fetch against a real local HTTP server: grants, private addresses, redirects,
caps and timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentd.errors import ToolError
from agentd.sandbox.backends import Limits
from agentd.sandbox.context import Sandbox
from agentd.tools import NET_TOOLS, ToolContext


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8",
              **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/big":
            self._send(200, b"x" * 1_000_000)
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        elif self.path.startswith("/to/"):
            self._send(302, b"", Location=self.path[len("/to"):].replace("/http", "http", 1)
                       if "/http" in self.path else self.path[3:])
        elif self.path == "/loop":
            self._send(302, b"", Location="/loop")
        elif self.path == "/binary":
            self._send(200, bytes(range(256)) * 4, "application/octet-stream")
        else:
            self._send(200, f"hello from {self.headers['Host']} {self.path}".encode())

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        self._send(201, b"got " + data + b" " + self.headers.get("X-Tag", "").encode())


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _ctx(network: bool | tuple[str, ...]) -> ToolContext:
    return ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                       sandbox=Sandbox(backend=None, limits=Limits(), network=network))


async def fetch(network: bool | tuple[str, ...], **arguments: Any) -> str:
    return str(await NET_TOOLS["http_fetch"].call(arguments, _ctx(network), 30.0))


async def test_metadata() -> None:
    t = NET_TOOLS["http_fetch"]
    assert t.needs_network and t.untrusted_output and not t.read_only


async def test_get_from_a_host_named_in_the_grant(server: int) -> None:
    out = await fetch(("127.0.0.1",), url=f"http://127.0.0.1:{server}/page?q=1")
    assert "HTTP 200 OK" in out and f"hello from 127.0.0.1:{server} /page?q=1" in out
    head = await fetch(("127.0.0.1",), url=f"http://127.0.0.1:{server}/", method="HEAD")
    assert "HTTP 200" in head


async def test_post_with_body_and_headers(server: int) -> None:
    out = await fetch(("127.0.0.1",), url=f"http://127.0.0.1:{server}/x", method="POST",
                      body="payload", headers={"X-Tag": "t1", "Host": "evil"})
    assert "HTTP 201" in out and "got payload t1" in out


@pytest.mark.parametrize("network", [False, ("example.com",)])
async def test_not_granted(server: int, network: bool | tuple[str, ...]) -> None:
    with pytest.raises(ToolError) as caught:
        await fetch(network, url=f"http://127.0.0.1:{server}/")
    assert caught.value.code == "network_denied"
    assert "settings.policy.network" in caught.value.message


@pytest.mark.parametrize("network", [True, ("127.0.0.*",), ("*",)])
async def test_private_addresses_need_the_host_by_name(server: int,
                                                       network: bool | tuple[str, ...]
                                                       ) -> None:
    for url in (f"http://127.0.0.1:{server}/", f"http://localhost:{server}/",
                "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/"):
        with pytest.raises(ToolError) as caught:
            await fetch(network, url=url)
        assert caught.value.code == "network_denied", url
        if network != ("127.0.0.*",) or url.startswith("http://127"):
            assert "not a public address" in caught.value.message


async def test_redirects_are_checked_each_time(server: int) -> None:
    base = f"http://127.0.0.1:{server}"
    out = await fetch(("127.0.0.1",), url=f"{base}/to/final")
    assert "hello from" in out and "/final" in out
    with pytest.raises(ToolError) as caught:  # to a host the grant does not name
        await fetch(("127.0.0.1",), url=f"{base}/to/http://localhost:{server}/x")
    assert caught.value.code == "network_denied"
    with pytest.raises(ToolError) as loop:
        await fetch(("127.0.0.1",), url=f"{base}/loop")
    assert "redirects" in loop.value.message


async def test_size_and_time_caps(server: int) -> None:
    out = await fetch(("127.0.0.1",), url=f"http://127.0.0.1:{server}/big", max_bytes=1000)
    assert "[body cut at 1000 bytes]" in out and len(out) < 1300
    started = time.monotonic()
    with pytest.raises(ToolError) as caught:
        await fetch(("127.0.0.1",), url=f"http://127.0.0.1:{server}/slow", timeout_s=0.5)
    assert caught.value.code == "tool_timeout"
    assert time.monotonic() - started < 2.5  # not the server's 3 s
    binary = await fetch(("127.0.0.1",), url=f"http://127.0.0.1:{server}/binary")
    assert "HTTP 200" in binary


@pytest.mark.parametrize("arguments", [
    {"url": "file:///etc/passwd"}, {"url": "ftp://example.com/"}, {"url": "nonsense"},
    {"url": "http://127.0.0.1:99999/"}, {"url": "http://127.0.0.1/", "max_bytes": 0},
    {"url": "http://127.0.0.1/", "timeout_s": 500}])
async def test_bad_arguments(arguments: dict[str, Any]) -> None:
    with pytest.raises(ToolError) as caught:
        await fetch(("127.0.0.1",), **arguments)
    assert caught.value.code == "tool_bad_arguments"
