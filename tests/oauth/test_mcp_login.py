"""OAuth for an agent's MCP server, as a client: a person authorizes agentd once on a
real authorization server (oidc-provider: its sign-in and consent pages, PKCE, dynamic
client registration, rotating refresh tokens), the tokens are kept in the secrets
store, and the agent's runs call a real MCP server (the official SDK's, checking the
token's signature and audience) with them, refreshed before they expire."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.oauth.authserver import AuthServer, Person
from tests.oauth.conftest import Protected, call, oauth_server

from agentd.assembly import Runtime

pytestmark = pytest.mark.no_replay  # (MCP servers and an authorization server)


async def _login(api: httpx.AsyncClient, person: Person, agent: str = "a",
                 server: str = "gh") -> dict[str, Any]:
    """Start a login, have ``person`` sign in and consent, deliver the redirect to the
    daemon's callback: its JSON answer."""
    started = await api.post(f"/v1/agents/{agent}/mcp/{server}/login")
    assert started.status_code == 201, started.text
    link = started.json()["authorization_url"]
    back = person.authorize(link, stop_at=started.json()["redirect_uri"])
    assert back.is_redirect, back.text
    done = await api.get(back.headers["location"], headers={"Accept": "application/json"})
    assert done.status_code == 200, done.text
    return dict(done.json())


async def _run(rt: Runtime, agent: str = "a", key: str = "k") -> tuple[Any, list[Any]]:
    sent = await rt.send(agent, key, "go")
    run = await asyncio.wait_for(rt.wait(sent.run.id), 60)
    _, session = await rt.get_session(agent, key)
    return run, await rt.read_events(session.id)


def _outputs(events: list[Any]) -> list[Any]:
    return [e.data.get("output", e.data.get("error")) for e in events
            if e.kind == "tool.finished"]


async def test_a_person_authorizes_once_and_the_agent_calls_the_server(
        runtime: Runtime, api: httpx.AsyncClient, authserver: AuthServer,
        protected: Protected, person: Person) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [oauth_server(protected.url)],
        "script": [call("gh__whoami"), {"text": "done"}]})
    done = await _login(api, person)
    assert done["agent"] == "a" and done["server"] == "gh"
    assert "mcp:tools" in done["scope"].split()
    run, events = await _run(runtime)
    assert run.status == "completed", run
    assert _outputs(events) == ["subject=alice"]
    status = (await api.get("/v1/agents/a/mcp")).json()["servers"]
    assert status[0]["authorized"] is True and status[0]["refreshable"] is True
    assert status[0]["issuer"] == authserver.issuer
