"""The same requests to `agentd serve --adapter` and to a real termo-agent server
(from PyPI, its own CLI), both serving agentd.testing.termo_adapter over real
sockets: the same answers where the behaviour is meant to match, and the documented
differences (docs/termo.md) checked as differences."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.protocols.termo.conftest import (
    ADAPTER,
    TOKEN,
    SpawnAgentd,
    TermoServer,
    frames,
)

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Both:
    """One request sent to both servers; the two answers."""

    def __init__(self, agentd_url: str, termo_url: str) -> None:
        self.clients = [httpx.Client(base_url=agentd_url, timeout=60),
                        httpx.Client(base_url=termo_url, timeout=60)]

    def __call__(self, method: str, path: str, *, auth: bool = True,
                 **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        ours, theirs = (c.request(method, path, headers=headers, **kwargs)
                        for c in self.clients)
        return ours, theirs

    def same(self, method: str, path: str, **kwargs: Any) -> Any:
        """Both answer with the same status and the same JSON; that JSON."""
        ours, theirs = self(method, path, **kwargs)
        assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
        assert ours.json() == theirs.json(), (method, path)
        return ours.json()

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def both(spawn_agentd: SpawnAgentd, termo_server: TermoServer) -> Any:
    daemon = spawn_agentd("--adapter", ADAPTER)
    pair = Both(daemon.url, termo_server.url)
    try:
        yield pair
    finally:
        pair.close()


def test_messages_sessions_and_history_match(both: Both) -> None:
    assert both.same("POST", "/api/send", json={"message": "hello"}) == {
        "response": "echo[0]: hello", "session_key": "api:direct"}
    assert both.same("POST", "/api/send", json={"message": "one", "session_key": "u:1"}
                     )["response"] == "echo[0]: one"
    # The adapter's state carries on (agentd keeps the served agent awake).
    assert both.same("POST", "/api/send", json={"message": "two", "session_key": "u:1"}
                     )["response"] == "echo[1]: two"
    assert both.same("POST", "/api/sessions/send",  # termo-agent's older path
                     json={"message": "three", "session_key": "u:1"})["response"] == (
        "echo[2]: three")
    history = both.same("GET", "/api/sessions/u:1/history")
    assert history == {"session_key": "u:1", "messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "echo[0]: one"},
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "echo[1]: two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "echo[2]: three"}]}
    assert both.same("GET", "/api/sessions/nobody/history") == {
        "session_key": "nobody", "messages": []}
    ours, theirs = both("GET", "/api/sessions")
    assert ours.status_code == theirs.status_code == 200
    # agentd adds created_at / updated_at to each (a difference, documented).
    assert [s["session_key"] for s in ours.json()] == [
        s["session_key"] for s in theirs.json()] == ["api:direct", "u:1"]


def test_streams_match_frame_for_frame(both: Both) -> None:
    for body in ({"message": "tool owls", "stream": True, "session_key": "s:1"},
                 {"message": "a b c", "stream": True, "session_key": "s:1"}):
        ours, theirs = both("POST", "/api/send", json=body)
        assert ours.status_code == theirs.status_code == 200
        assert ours.headers["content-type"].startswith("text/event-stream")
        assert theirs.headers["content-type"].startswith("text/event-stream")
        assert frames(ours.text) == frames(theirs.text)
    got = frames(ours.text)
    assert [f["type"] for f in got] == ["token"] * 4 + ["done"]
    assert got[-1] == {"type": "done", "content": "echo[1]: a b c",
                       "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    first = frames(both("POST", "/api/send", json={
        "message": "tool bats", "stream": True, "session_key": "s:2"})[0].text)
    assert first[:2] == [
        {"type": "tool_start", "content": "", "name": "lookup", "input": {"q": "bats"}},
        {"type": "tool_end", "content": "found bats", "name": "lookup"}]


def test_auth_and_bad_input_match(both: Both) -> None:
    for auth, headers in ((False, {}), (False, {"Authorization": "Bearer wrong"}),
                          (False, {"Authorization": TOKEN})):
        assert both.same("POST", "/api/send", auth=auth, headers=headers,
                         json={"message": "x"}) == {"error": "unauthorized"}
        assert both.same("GET", "/api/config", auth=auth, headers=headers) == {
            "error": "unauthorized"}
    assert both.same("POST", "/api/send", json={}) == {"error": "message is required"}
    assert both.same("POST", "/api/send", json={"message": ""}) == {
        "error": "message is required"}
    assert both.same("PATCH", "/api/memory", json={}) == {"error": "content is required"}
    assert both.same("PATCH", "/api/heartbeat", json={"x": 1}) == {
        "error": "content is required"}
    ours, theirs = both("GET", "/api/send")
    assert ours.status_code == theirs.status_code == 405
    # Nothing of the refused requests was stored: no session was made.
    assert both.same("GET", "/api/sessions") == []


def test_config_tools_memory_heartbeat_update_restart_match(both: Both) -> None:
    assert both.same("GET", "/api/config") == {"model": "test", "temperature": 0}
    assert both.same("PATCH", "/api/config", json={"temperature": 1}) == {"status": "ok"}
    assert both.same("GET", "/api/config") == {"model": "test", "temperature": 1}
    assert both.same("GET", "/api/tools") == [
        {"name": "lookup", "description": "Look a word up"}]
    assert both.same("GET", "/api/memory") == {"content": None}
    assert both.same("PATCH", "/api/memory", json={"content": "likes owls"}) == {
        "status": "ok"}
    assert both.same("GET", "/api/memory") == {"content": "likes owls"}
    assert both.same("GET", "/api/heartbeat") == {
        "content": "", "enabled": False, "interval_s": 1800}
    assert both.same("PATCH", "/api/heartbeat", json={"content": "check mail"}) == {
        "status": "ok"}
    assert both.same("GET", "/api/heartbeat") == {
        "content": "check mail", "enabled": True, "interval_s": 1800}
    assert both.same("POST", "/api/update") == {"status": "not supported"}
    assert both.same("POST", "/api/restart") == {"status": "restarting"}
    ours, theirs = both("GET", "/health", auth=False)
    assert ours.status_code == theirs.status_code == 200
    for answer in (ours.json(), theirs.json()):
        assert answer["status"] == "ok" and answer["adapter"] == "test"
        assert answer["restarts"] == 1 and answer["version"]
        assert answer["config_path"] is None
    # agentd's health carries its own fields too (a documented difference).
    assert ours.json()["store"] == "sqlite" and "store" not in theirs.json()


def test_extra_and_public_routes_match(both: Both) -> None:
    assert both.same("GET", "/api/echo/xy", params={"q": "1"}) == {"word": "xy", "q": "1"}
    assert both.same("POST", "/api/custom", json={"x": [1, 2]}) == {
        "x": [1, 2], "method": "POST"}
    assert both.same("POST", "/api/custom", json={"y": 1}) == {"error": "x is required"}
    assert both.same("GET", "/api/echo/xy", auth=False) == {"error": "unauthorized"}
    for path in ("/api/public/ping", "/api/open"):  # a public prefix; a dynamic check
        ours, theirs = both("GET", path, auth=False)
        assert ours.status_code == theirs.status_code == 200
        assert ours.text == theirs.text == "pong"


def test_documented_differences(both: Both) -> None:
    # A body that is not JSON: termo-agent fails with a 500 in text; agentd says why.
    for raw in (b"{bad", b"[1, 2]"):
        ours, theirs = both("POST", "/api/send", content=raw)
        assert theirs.status_code == 500
        assert ours.status_code == 400, ours.text
        assert "JSON" in ours.json()["error"]
    # An adapter that raises: termo-agent's 500 in text, agentd's 502 naming it.
    ours, theirs = both("POST", "/api/send", json={"message": "raise now"})
    assert theirs.status_code == 500
    assert ours.status_code == 502
    assert ours.json()["code"] == "adapter_error"
    assert "adapter exploded on 'raise now'" in ours.json()["error"]
    # Streamed, both end with an error frame; agentd's names the adapter and a code.
    ours, theirs = both("POST", "/api/send",
                        json={"message": "raise again", "stream": True})
    mine, its = frames(ours.text)[-1], frames(theirs.text)[-1]
    assert mine["type"] == its["type"] == "error"
    assert its["content"] in mine["content"] and mine["code"] == "adapter_error"
    # agentd's log keeps the messages whose turn failed (termo's adapter forgets them).
    ours, theirs = both("GET", "/api/sessions/api:direct/history")
    assert [m["content"] for m in ours.json()["messages"]] == ["raise now", "raise again"]
    assert theirs.json()["messages"] == []
