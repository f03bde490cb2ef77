"""http_fetch against a real local HTTP server: grants, private addresses (reached only
as an endpoint the operator lists), the daemon's own port, redirects, caps and
timeouts."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentd.errors import ToolError
from agentd.sandbox.backends import Limits
from agentd.sandbox.context import Sandbox
from agentd.sandbox.egress import EgressRules
from agentd.tools import NET_TOOLS, ToolContext

ROOT = Path(__file__).resolve().parents[2]


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
            time.sleep(60)
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


def serve() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The server in a process of its own: a port this process listens on counts as
    the daemon's own, which no setting opens."""
    proc = subprocess.Popen([sys.executable, "-c",
                             "from tests.tools.test_http_fetch import serve; serve()"],
                            stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield port
    proc.kill()
    proc.wait()


LISTED: list[str] = []  # the operator's private_endpoints for fetch()


@pytest.fixture(autouse=True)
def _listed(server: int) -> Iterator[None]:
    LISTED[:] = [f"127.0.0.1:{server}"]
    yield
    LISTED.clear()


def _ctx(network: bool | tuple[str, ...], listed: Iterable[str] | None = None
         ) -> ToolContext:
    rules = EgressRules.of(LISTED if listed is None else listed)
    return ToolContext(agent="a", session="s", run_id="r", call_id="c", effect_id="e",
                       sandbox=Sandbox(backend=None, limits=Limits(), network=network,
                                       rules=rules))


async def fetch(network: bool | tuple[str, ...], listed: Iterable[str] | None = None,
                **arguments: Any) -> str:
    return str(await NET_TOOLS["http_fetch"].call(arguments, _ctx(network, listed), 30.0))


async def test_metadata() -> None:
    t = NET_TOOLS["http_fetch"]
    assert t.needs_network and t.untrusted_output and not t.read_only


async def test_get_from_an_endpoint_the_operator_lists(server: int) -> None:
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


@pytest.mark.parametrize("network", [True, ("127.0.0.1",), ("127.0.0.*",), ("*",)])
async def test_private_addresses_need_the_operators_endpoint(
        server: int, network: bool | tuple[str, ...]) -> None:
    """A grant alone (even naming 127.0.0.1) never reaches a local service: only
    the operator's private_endpoints do, by host and port."""
    for url in (f"http://127.0.0.1:{server}/", f"http://localhost:{server}/",
                "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/",
                "http://10.1.2.3/", "http://0.0.0.0:9/", "http://2130706433:9/"):
        with pytest.raises(ToolError) as caught:
            await fetch(network, [], url=url)
        assert caught.value.code == "network_denied", url
        if network is True or network == ("*",) or url.startswith("http://127"):
            assert "not a public address" in caught.value.message, url
            assert "private_endpoints" in caught.value.message
    # Listed for another port, or under another name, is not listed.
    with pytest.raises(ToolError) as other:
        await fetch(network, [f"127.0.0.1:{server + 1}", f"localhost:{server}"],
                    url=f"http://127.0.0.1:{server}/")
    assert other.value.code == "network_denied"


async def test_the_daemons_own_port_is_refused_even_when_listed() -> None:
    """A port this process listens on (the daemon's API) is refused on every local
    address, whatever the grant and the operator's list say."""
    with socket.socket() as own:
        own.bind(("127.0.0.1", 0))
        own.listen(4)
        port = own.getsockname()[1]
        for host in ("127.0.0.1", "localhost", "0.0.0.0"):
            with pytest.raises(ToolError) as caught:
                await fetch(True, [f"{host}:{port}"], url=f"http://{host}:{port}/")
            assert caught.value.code == "network_denied"
            assert "daemon's own port" in caught.value.message, host


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
    with pytest.raises(ToolError) as caught:  # the server answers after a minute
        await fetch(("127.0.0.1",), url=f"http://127.0.0.1:{server}/slow", timeout_s=0.5)
    assert caught.value.code == "tool_timeout"
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
