"""DNS rebinding and cross-site requests (server/_origin.py), over a real socket on
127.0.0.1: what a browser tricked by a hostile page would send, refused before the
token check or any route; what the daemon's own page and plain clients send, let in."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agentd.config import Settings
from agentd.testing.live import LiveServer

TOKEN = "origin-test-token-0123456789"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(Settings(home=tmp_path / "home", tokens=[TOKEN]),
                    startup_timeout_s=30) as live:
        yield live


def request(server: LiveServer, method: str, path: str, headers: dict[str, str],
            body: bytes | None = None) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        # skip_host: the Host header is the test's to choose.
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        answer = connection.getresponse()
        data = answer.read()
    finally:
        connection.close()
    return answer.status, (json.loads(data) if data.startswith(b"{") else {})


def test_a_rebound_host_is_refused_before_anything_else(server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.nip.io",
                 "attacker.localhost.evil"):
        status, body = request(server, "GET", "/v1/agents", {"Host": host, **auth})
        assert status == 403, host
        assert "allowed_hosts" in body["error"]["message"]  # type: ignore[index]
        # Public paths too: the console's files and /health.
        assert request(server, "GET", "/health", {"Host": host})[0] == 403
        assert request(server, "GET", "/ui/", {"Host": host})[0] == 403
    for host in (f"127.0.0.1:{server.port}", "localhost", f"LOCALHOST:{server.port}",
                 f"[::1]:{server.port}"):
        assert request(server, "GET", "/v1/agents", {"Host": host, **auth})[0] == 200


def test_a_cross_site_request_changes_nothing(server: LiveServer) -> None:
    host = f"127.0.0.1:{server.port}"
    auth = {"Authorization": f"Bearer {TOKEN}", "Host": host}
    body = b'{"name": "planted", "model": "scripted"}'
    for origin in ("http://evil.example", "null", f"http://localhost:{server.port}",
                   f"https://127.0.0.1:{server.port}"):
        status, answer = request(server, "POST", "/v1/agents",
                                 {**auth, "Origin": origin, "Content-Type": "text/plain"},
                                 body)
        assert status == 403, origin
        assert "allowed_origins" in answer["error"]["message"]  # type: ignore[index]
    status, listed = request(server, "GET", "/v1/agents", auth)
    assert status == 200
    assert "planted" not in [a["name"] for a in listed["agents"]]  # type: ignore[union-attr]
    # The daemon's own page (same origin) and clients that send no Origin get in.
    same = {**auth, "Origin": f"http://{host}", "Content-Type": "application/json"}
    assert request(server, "POST", "/v1/agents", same, body)[0] == 201


def test_a_cross_site_websocket_handshake_is_refused(server: LiveServer) -> None:
    url = f"ws://127.0.0.1:{server.port}/v1/agents/demo/sessions/s/ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin="http://evil.example",  # type: ignore[arg-type]
                additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=30)
    assert refused.value.response.status_code == 403
    with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                 open_timeout=30):
        pass


def test_the_operator_can_let_a_proxy_name_and_a_page_in(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", tokens=[TOKEN],
                        allowed_hosts=["agents.example.com"],
                        allowed_origins=["https://app.example.com"])
    with LiveServer(settings, startup_timeout_s=30) as live:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert request(live, "GET", "/v1/agents",
                       {"Host": "agents.example.com", **auth})[0] == 200
        assert request(live, "GET", "/v1/agents",
                       {"Host": "other.example.com", **auth})[0] == 403
        assert request(live, "GET", "/v1/agents", {
            "Host": f"127.0.0.1:{live.port}", "Origin": "https://app.example.com",
            **auth})[0] == 200


def test_the_host_answers_kept_are_bounded_and_the_same_as_worked_out() -> None:
    from agentd.server._origin import _HOST_ANSWERS_KEPT, OriginCheck

    check = OriginCheck(lambda *_: None, allowed_hosts=["proxy.example"])  # type: ignore[arg-type]
    loopback, outside = ("127.0.0.1", 8721), ("192.0.2.1", 8721)
    for _ in range(2):  # worked out, then kept
        assert check._refused_host(loopback, b"evil.example:8721") == "evil.example"
        assert check._refused_host(loopback, b"LocalHost:8721") is None
        assert check._refused_host(loopback, b"Proxy.Example") is None
        assert check._refused_host(outside, b"evil.example") is None
        assert check._refused_host(None, b"evil.example") is None
    long = b"a" * 300 + b".example"
    assert check._refused_host(loopback, long) == long.decode()
    assert (loopback[0], long) not in check._host_answers
    for i in range(3 * _HOST_ANSWERS_KEPT):
        assert check._refused_host(loopback, b"h%d.example" % i) == f"h{i}.example"
    assert len(check._host_answers) <= _HOST_ANSWERS_KEPT
