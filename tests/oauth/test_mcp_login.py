"""OAuth for an agent's MCP server, as a client: a person authorizes agentd once on a
real authorization server (oidc-provider: its sign-in and consent pages, PKCE, dynamic
client registration, rotating refresh tokens), the tokens are kept in the secrets
store, and the agent's runs call a real MCP server (the official SDK's, checking the
token's signature and audience) with them, refreshed before they expire."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client
from tests.oauth.authserver import AuthServer, Person
from tests.oauth.conftest import Protected, call, oauth_server

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.secrets.oauth import token_name
from agentd.store.oauth import OAuthStore
from agentd.testing import FakeClock
from agentd.tools.mcp_config import MCPServer

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
    return [e.data["output"] for e in events if e.kind == "tool.finished"]


def _needs_login(finished: dict[str, Any], agent: str = "a") -> bool:
    """A call that failed saying a person must authorize the server, and how."""
    return bool(finished["is_error"] and "needs authorization" in finished["output"]
                and f"agentd mcp login {agent} gh" in finished["output"])


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


async def _kept(rt: Runtime, url: str, tenant: str = "default", agent: str = "a"
                ) -> dict[str, Any]:
    """The tokens as stored (a test reads the sealed secret; the API never shows it)."""
    value = await rt.secrets.open_row(tenant=tenant, agent=agent, name=token_name(url))
    assert value is not None, "no tokens stored"
    found: dict[str, Any] = json.loads(value)
    return found


async def test_tokens_are_refreshed_before_they_expire_and_the_refresh_token_rotates(
        settings: Settings, store_url: str, authserver: AuthServer, protected: Protected,
        person: Person) -> None:
    clock = FakeClock(time.time())
    settings.database_url = store_url
    rt = await Runtime.open(settings, clock=clock)
    try:
        await rt.create_agent(name="a", model="scripted", settings={
            "mcp": [oauth_server(protected.url)],
            "script": [call("gh__add", a=2, b=3), {"text": "done"}]})
        async with asgi_client(settings, rt, base_url=settings.base_url()) as api:
            await _login(api, person)
        first = await _kept(rt, protected.url)
        refreshes = authserver.stats()["grants"].get("refresh_token", 0)
        run, events = await _run(rt, key="k1")
        assert run.status == "completed" and _outputs(events) == ["5"]
        # Not yet: the token has 300 s, more than the 60 s margin.
        assert authserver.stats()["grants"].get("refresh_token", 0) == refreshes
        await clock.advance(250)  # 50 s left: the next use refreshes it first
        run, events = await _run(rt, key="k2")
        assert run.status == "completed" and _outputs(events) == ["5"]
        assert authserver.stats()["grants"].get("refresh_token", 0) == refreshes + 1
        second = await _kept(rt, protected.url)
        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]  # rotated, and stored
        assert second["expires_at"] == pytest.approx(clock.time() + 300, abs=5)
        # The server saw the new token on the call after the refresh.
        assert protected.authorizations()[-1] == f"Bearer {second['access_token']}"
        await rt.identity.audit.flush()
        actions = [r.action for r in await rt.identity.audit.page(limit=1000)
                   if r.action.startswith("mcp_oauth.")]
        assert actions[:2] == ["mcp_oauth.login", "mcp_oauth.authorized"]
        assert "mcp_oauth.use" in actions and actions.count("mcp_oauth.refresh") == 1
    finally:
        await rt.close()


async def test_a_token_the_server_refuses_is_refreshed_once_and_the_call_sent_again(
        runtime: Runtime, api: httpx.AsyncClient, authserver: AuthServer,
        protected: Protected, person: Person) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [oauth_server(protected.url)],
        "script": [call("gh__add", a=1, b=1), {"text": "done"}]})
    await _login(api, person)
    kept = await _kept(runtime, protected.url)
    # The server no longer takes the stored access token (as after a key rotation or a
    # revocation there): still within its time, so only the 401 says so.
    await _store(runtime, protected.url, {**kept, "access_token": "no-longer-good"})
    refreshes = authserver.stats()["grants"].get("refresh_token", 0)
    run, events = await _run(runtime)
    assert run.status == "completed" and _outputs(events) == ["2"], _outputs(events)
    assert authserver.stats()["grants"].get("refresh_token", 0) == refreshes + 1
    seen = protected.authorizations()
    assert "Bearer no-longer-good" in seen
    assert seen[-1] == f"Bearer {(await _kept(runtime, protected.url))['access_token']}"


async def _store(rt: Runtime, url: str, kept: dict[str, Any], tenant: str = "default",
                 agent: str = "a") -> None:
    """Write tokens as the daemon keeps them (a test's stand-in for a change made
    elsewhere)."""
    cipher = await rt.secrets.cipher()
    name = token_name(url)
    await OAuthStore(rt.store.engine).refreshed(
        tenant=tenant, agent=agent, name=name, key_id=cipher.key_id,
        value=cipher.seal(json.dumps(kept), tenant=tenant, agent=agent, name=name),
        now=time.time())
    rt.mcp_oauth._cache.clear()


async def test_two_runs_at_once_spend_the_refresh_token_once(
        runtime: Runtime, api: httpx.AsyncClient, authserver: AuthServer,
        protected: Protected, person: Person) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [oauth_server(protected.url)],
        "script": [call("gh__add", a=20, b=22), {"text": "done"}]})
    await _login(api, person)
    kept = await _kept(runtime, protected.url)
    await _store(runtime, protected.url, {**kept, "expires_at": time.time() + 10})
    refreshes = authserver.stats()["grants"].get("refresh_token", 0)
    sent = [await runtime.send("a", f"s{i}", "go") for i in range(4)]
    runs = await asyncio.gather(*(asyncio.wait_for(runtime.wait(s.run.id), 60)
                                  for s in sent))
    assert [r.status for r in runs] == ["completed"] * 4
    assert authserver.stats()["grants"].get("refresh_token", 0) == refreshes + 1
    # The grant is alive: a rotated refresh token spent twice would have revoked it.
    await _store(runtime, protected.url, {**await _kept(runtime, protected.url),
                                          "expires_at": time.time() + 10})
    run, events = await _run(runtime, key="after")
    assert run.status == "completed" and _outputs(events) == ["42"]
    assert authserver.stats()["grants"].get("refresh_token", 0) == refreshes + 2


async def test_two_nodes_refresh_one_token_once(
        settings: Settings, store_url: str, authserver: AuthServer, protected: Protected,
        person: Person) -> None:
    """Two daemons sharing one store (PostgreSQL: a cluster) refresh a token at once:
    the store's lock lets one spend the refresh token; the other takes its result."""
    settings.database_url = store_url
    one = await Runtime.open(settings)
    two_settings = settings.model_copy(update={"node_id": "node-two"})
    two = await Runtime.open(two_settings)
    try:
        await one.create_agent(name="a", model="scripted",
                               settings={"mcp": [oauth_server(protected.url)]})
        async with asgi_client(settings, one, base_url=settings.base_url()) as api:
            await _login(api, person)
        kept = await _kept(one, protected.url)
        await _store(one, protected.url, {**kept, "expires_at": time.time() + 10})
        refreshes = authserver.stats()["grants"].get("refresh_token", 0)
        entry = MCPServer.model_validate(oauth_server(protected.url))
        tokens = await asyncio.gather(
            *(rt.mcp_oauth.token(tenant="default", agent="a", server=entry)
              for rt in (one, two, one, two)))
        assert len(set(tokens)) == 1 and tokens[0] != kept["access_token"]
        assert authserver.stats()["grants"].get("refresh_token", 0) == refreshes + 1
    finally:
        await two.close()
        await one.close()


async def test_without_a_token_the_model_is_told_what_a_person_must_do(
        runtime: Runtime, protected: Protected) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [oauth_server(protected.url)],
        "script": [call("gh__authorize"), {"text": "done"}]})
    run, events = await _run(runtime)
    assert run.status == "completed", run
    [unavailable] = [e for e in events if e.kind == "tools.unavailable"]
    assert "agentd mcp login a gh" in unavailable.data["errors"][0]
    [result] = [e for e in events if e.kind == "tool.finished"]
    assert _needs_login(result.data), result.data


async def test_a_stand_in_names_the_tools_the_settings_list(
        runtime: Runtime, protected: Protected) -> None:
    entry = {**oauth_server(protected.url), "tools": ["add"]}
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [entry], "script": [call("gh__add", a=1, b=2), {"text": "done"}]})
    _, events = await _run(runtime)
    [result] = [e for e in events if e.kind == "tool.finished"]
    assert _needs_login(result.data), result.data


async def test_logout_revokes_forgets_and_the_next_call_needs_a_login(
        runtime: Runtime, api: httpx.AsyncClient, authserver: AuthServer,
        protected: Protected, person: Person) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [oauth_server(protected.url)],
        "script": [call("gh__add", a=1, b=1), {"text": "done"}]})
    await _login(api, person)
    run, _ = await _run(runtime, key="before")
    assert run.status == "completed"
    kept = await _kept(runtime, protected.url)
    revoked = authserver.stats()["revoked"]
    gone = await api.delete("/v1/agents/a/mcp/gh/login")
    assert gone.status_code == 204, gone.text
    assert authserver.stats()["revoked"] > revoked
    # The refresh token is dead at the server too (revoking it revoked the grant).
    client = kept["client"]
    async with httpx.AsyncClient() as http:
        refused = await http.post(authserver.metadata()["token_endpoint"], data={
            "grant_type": "refresh_token", "refresh_token": kept["refresh_token"]},
            auth=(client["client_id"], client["client_secret"]))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert (await api.get("/v1/agents/a/mcp")).json()["servers"][0]["authorized"] is False
    again = await api.delete("/v1/agents/a/mcp/gh/login")
    assert again.status_code == 404 and again.json()["error"]["code"] == "mcp_not_authorized"
    run, events = await _run(runtime, key="after")
    [result] = [e for e in events if e.kind == "tool.finished"]
    assert _needs_login(result.data), result.data


async def test_a_refresh_the_server_refuses_forgets_the_tokens_and_asks_for_a_login(
        runtime: Runtime, api: httpx.AsyncClient, authserver: AuthServer,
        protected: Protected, person: Person) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [oauth_server(protected.url)],
        "script": [call("gh__add", a=1, b=1), {"text": "done"}]})
    await _login(api, person)
    run, _ = await _run(runtime, key="before")
    assert run.status == "completed"
    kept = await _kept(runtime, protected.url)
    await _store(runtime, protected.url, {**kept, "refresh_token": "forged-or-revoked",
                                          "expires_at": time.time() + 5})
    run, events = await _run(runtime)
    [result] = [e for e in events if e.kind == "tool.finished"]
    assert _needs_login(result.data), result.data
    [unavailable] = [e for e in events if e.kind == "tools.unavailable"]
    assert "refused to refresh its token: invalid_grant" in unavailable.data["errors"][0]
    assert (await api.get("/v1/agents/a/mcp")).json()["servers"][0]["authorized"] is False
    await runtime.identity.audit.flush()
    [failed] = await runtime.identity.audit.page(action="mcp_oauth.refresh",
                                                 outcome="failed")
    assert "invalid_grant" in failed.reason


async def test_a_tenants_tokens_serve_its_agents_of_that_url_and_no_other_tenants(
        runtime: Runtime, api: httpx.AsyncClient, protected: Protected,
        person: Person) -> None:
    shared = oauth_server(protected.url, tokens="tenant")
    script = [call("gh__whoami"), {"text": "done"}]
    for name in ("a", "b"):
        await runtime.create_agent(name=name, model="scripted",
                                   settings={"mcp": [shared], "script": script})
    await _login(api, person, agent="a")
    for name in ("a", "b"):
        _, events = await _run(runtime, agent=name)
        assert _outputs(events) == ["subject=alice"], (name, _outputs(events))
    # An agent's own (per-agent) entry of the same URL has none of the tenant's.
    await runtime.create_agent(name="c", model="scripted", settings={
        "mcp": [oauth_server(protected.url)], "script": script})
    _, events = await _run(runtime, agent="c")
    [unavailable] = [e for e in events if e.kind == "tools.unavailable"]
    assert "agentd mcp login c gh" in unavailable.data["errors"][0]
    assert _outputs(events) == ["unknown tool 'gh__whoami'; available: gh__authorize"]
    # Another tenant's agent sharing its own tenant's tokens of that URL has none.
    assert (await api.post("/v1/tenants", json={"name": "acme"})).status_code == 201
    await runtime.create_agent(name="d", model="scripted", settings={
        "tenant": "acme", "mcp": [shared], "script": script})
    _, events = await _run(runtime, agent="d")
    [unavailable] = [e for e in events if e.kind == "tools.unavailable"]
    assert "agentd mcp login d gh" in unavailable.data["errors"][0]


async def test_a_server_that_echoes_the_token_does_not_put_it_in_the_log(
        runtime: Runtime, api: httpx.AsyncClient, protected: Protected,
        person: Person) -> None:
    await runtime.create_agent(name="a", model="scripted", settings={
        "mcp": [oauth_server(protected.url)],
        "script": [call("gh__leak"), {"text": "done"}]})
    await _login(api, person)
    _, events = await _run(runtime)
    kept = await _kept(runtime, protected.url)
    [output] = _outputs(events)
    assert output.startswith("your header: Bearer [secret:"), output
    every = repr([e.data for e in events])
    for part in (kept["access_token"], kept["refresh_token"]):
        assert part not in every
