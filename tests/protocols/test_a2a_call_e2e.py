"""``a2a_call`` between two real daemons: an agent of the first asks an agent of the
second through the second's A2A door, with the official client; the answer taints the
caller's session. The network policy holds: no grant, no call; the daemon's own port
is refused even when the operator lists it; a refused call brings nothing in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.daemons import Daemon, create_agent, send

from agentd.security.tokens import read_token

pytestmark = pytest.mark.e2e

_ALLOW = [{"tool": "*", "action": "allow", "tainted": True}, {"tool": "*", "action": "allow"}]


def _daemon(root: Path) -> Daemon:
    root.mkdir(parents=True, exist_ok=True)
    return Daemon(root / "home", root / "agentd.log",
                  env={"AGENTD_DEMO_AGENT": "false"}, args=())


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    root = tmp_path_factory.mktemp("a2a-call")
    remote = _daemon(root / "remote").start()
    local = _daemon(root / "local")
    local.home.mkdir(parents=True)
    # The remote daemon's port is opened to tools; so, in vain, is the caller's own.
    # Its token is the operator's, sent to that endpoint only (plain http: written so),
    # and a wrong one to the same daemon named "localhost".
    (local.home / "agentd.toml").write_text(
        f'[sandbox]\nprivate_endpoints = ["127.0.0.1:{remote.port}", '
        f'"localhost:{remote.port}", "127.0.0.1:{local.port}"]\n'
        f'[a2a]\nremote_tokens = {{"http://127.0.0.1:{remote.port}" = "REMOTE_A2A_TOKEN", '
        f'"http://localhost:{remote.port}" = "WRONG_A2A_TOKEN"}}\n')
    local.env.update(REMOTE_A2A_TOKEN=read_token(remote.home) or "",
                     WRONG_A2A_TOKEN="wrong")
    local.start()
    try:
        with remote.client() as api:
            create_agent(api, "helper")
        yield local, remote
    finally:
        local.cleanup()
        remote.cleanup()


def _call(local: Daemon, agent: str, key: str, arguments: dict[str, Any], *,
          network: bool = True, tools: tuple[str, ...] = ("a2a_call",)
          ) -> list[dict[str, Any]]:
    """One run of ``agent`` (made or remade here) that calls a2a_call with
    ``arguments`` then answers; the tool.finished events' data of the session."""
    settings = {"policy": {"network": network, "rules": _ALLOW}, "script": [
        {"tool_calls": [{"name": "a2a_call", "arguments": arguments}]}, {"text": "done"}]}
    with local.client() as api:
        if api.get(f"/v1/agents/{agent}").status_code == 404:
            create_agent(api, agent, tools=list(tools), settings=settings)
        got = send(api, agent, key, "go")
        assert got.status_code == 200, got.text
        assert got.json()["status"] == "completed", got.text
        events = api.get(f"/v1/agents/{agent}/sessions/{quote(key, safe='')}/events"
                         ).json()["events"]
    return [e["data"] for e in events if e["kind"] == "tool.finished"]


def test_an_agent_asks_a_remote_agent(daemons: tuple[Daemon, Daemon]) -> None:
    local, remote = daemons
    url = f"{remote.url}/a2a/helper"
    [first] = _call(local, "caller", "c/1", {"url": url, "message": "hi from afar",
                                             "context_id": "from-local"})
    assert not first["is_error"], first
    assert "echo: hi from afar" in first["output"]
    assert "(context from-local): completed" in first["output"]
    # What the remote agent said comes from outside: the session is tainted.
    assert first["tainted"] == "its output comes from outside"
    # On the remote daemon the call is a run of helper in the context's session.
    with remote.client() as api:
        runs = api.get("/v1/runs", params={"agent": "helper", "session": "from-local"}
                       ).json()["runs"]
    assert [r["input"] for r in runs] == ["hi from afar"]


def test_a_wrong_token_is_an_error_from_outside(daemons: tuple[Daemon, Daemon]) -> None:
    local, remote = daemons
    [refused] = _call(local, "caller-bad-token", "c/2", {
        "url": f"http://localhost:{remote.port}/a2a/helper", "message": "hi"})
    assert refused["is_error"]
    assert "answered with an error" in refused["output"]
    assert refused.get("tainted")  # the remote's answer came in, even as an error


def test_the_daemons_own_port_is_refused(daemons: tuple[Daemon, Daemon]) -> None:
    local, _ = daemons
    [refused] = _call(local, "caller-self", "c/3", {
        "url": f"{local.url}/a2a/caller-self", "message": "loop"})
    assert refused["is_error"] and "tainted" not in refused, refused
    assert "the daemon's own port" in refused["output"]
    with local.client() as api:
        # Nothing reached the door: the agent has only the run the test sent.
        runs = api.get("/v1/runs", params={"agent": "caller-self"}).json()["runs"]
    assert [r["input"] for r in runs] == ["go"]


def test_no_network_grant_no_call(daemons: tuple[Daemon, Daemon]) -> None:
    local, remote = daemons
    [refused] = _call(local, "caller-offline", "c/4", {
        "url": f"{remote.url}/a2a/helper", "message": "hi"}, network=False)
    assert refused["is_error"] and "tainted" not in refused, refused
    assert "no network" in refused["output"]


def test_a_host_not_listed_is_refused(daemons: tuple[Daemon, Daemon]) -> None:
    local, _ = daemons
    [refused] = _call(local, "caller-private", "c/5", {
        "url": "http://127.0.0.1:9/a2a/x", "message": "hi"})
    assert refused["is_error"] and "tainted" not in refused, refused
    assert "private_endpoints" in refused["output"]


def test_bad_arguments_are_refused(daemons: tuple[Daemon, Daemon]) -> None:
    local, _ = daemons
    [refused] = _call(local, "caller-args", "c/6", {
        "url": "file:///etc/passwd", "message": "hi"})
    assert refused["is_error"] and "not an http(s) URL" in refused["output"]


def test_the_remote_agents_run_continues_the_callers_trace(
        daemons: tuple[Daemon, Daemon]) -> None:
    """a2a_call sends the call's traceparent (its invoke_agent client span); the A2A
    door takes it, so the remote run's spans are children of that span, in the
    caller's trace."""
    local, remote = daemons
    url = f"{remote.url}/a2a/helper"
    [done] = _call(local, "tracer", "t/1", {"url": url, "message": "trace me",
                                            "context_id": "traced"})
    assert not done["is_error"], done
    with local.client() as api:
        ours = _spans(api.get("/v1/agents/tracer/sessions/t%2F1/trace").json())
    with remote.client() as api:
        theirs = _spans(api.get("/v1/agents/helper/sessions/traced/trace").json())
    client = [s for s in ours if s["kind"] == 3 and s["name"].startswith("invoke_agent")]
    assert len(client) == 1, [s["name"] for s in ours]
    [root] = [s for s in theirs if s["name"] == "invoke_agent helper"]
    assert root["traceId"] == client[0]["traceId"] == ours[0]["traceId"]
    assert root["parentSpanId"] == client[0]["spanId"]
    tool = [s for s in ours if s["name"] == "execute_tool a2a_call"]
    assert client[0]["parentSpanId"] == tool[0]["spanId"]


def _spans(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for r in document["resourceSpans"] for ss in r["scopeSpans"]
            for s in ss["spans"]]
