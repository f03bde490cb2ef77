"""Attacks on MCP servers' OAuth logins, each through the real API, the real
authorization server and the real MCP server, checking the harm did not happen:

- a forged, a replayed and an expired ``state``: 400, nothing stored;
- a login whose starting token was revoked before the callback: 403, nothing stored;
- another tenant's token: it cannot start, see, finish or undo a login of an agent of
  a tenant not its own (404, as an agent that does not exist), nor read or name the
  tokens (reserved secret names: never listed, set, deleted or named by settings);
- an agent-scoped token cannot replace a tenant's shared tokens (403);
- an oauth block pointed at an authorization server of the attacker's choosing: an
  operator's setting (403 for a member), and one the MCP server does not name is
  refused at login;
- a redirect URI other than the daemon's own: no setting names one, no request may,
  and the Host a request carries does not change it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from tests.identity._daemon import ADMIN, SCOPED, Daemon, daemon, settings_for
from tests.oauth.authserver import AuthServer, Person, query
from tests.oauth.conftest import Protected, oauth_server

from agentd.secrets.oauth import token_name
from agentd.testing import FakeClock

pytestmark = pytest.mark.no_replay


def _local(url: str) -> str:
    """The path and query of a URL of the daemon (the tests' client is over ASGI)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def _agent(d: Daemon, name: str, settings: dict[str, Any], token: str = ADMIN
                 ) -> httpx.Response:
    return await d.call("POST", "/v1/agents", token, json={"name": name,
                                                           "settings": settings})


async def _start(d: Daemon, agent: str, token: str = ADMIN) -> httpx.Response:
    return await d.call("POST", f"/v1/agents/{agent}/mcp/gh/login", token)


async def _redirect(d: Daemon, agent: str, person: Person, token: str = ADMIN) -> str:
    """Start a login and have the person sign in and consent: the callback URL the
    authorization server sent the browser to (not delivered yet)."""
    started = await _start(d, agent, token)
    assert started.status_code == 201, started.text
    back = person.authorize(started.json()["authorization_url"],
                            stop_at=started.json()["redirect_uri"])
    assert back.is_redirect, back.text
    return _local(back.headers["location"])


async def _tokens(d: Daemon) -> list[tuple[str, str, str]]:
    rows = await d.runtime.store.engine.read(lambda tx: tx.all(
        "SELECT tenant, agent, name FROM secrets ORDER BY tenant, agent, name"))
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_a_forged_state_and_a_replayed_one_store_nothing(
        tmp_path: Path, store_url: str, protected: Protected, person: Person) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        assert (await _agent(d, "a", {"mcp": [oauth_server(protected.url)]})).status_code \
            == 201
        callback = await _redirect(d, "a", person)
        params = query("http://x" + callback)
        forged = await d.api.get(_local(f"http://x/v1/mcp/oauth/callback?code="
                                        f"{params['code']}&state=forged-{params['state']}"))
        assert forged.status_code == 400 and "unknown" in forged.text
        assert forged.headers["content-type"].startswith("text/html")
        missing = await d.api.get("/v1/mcp/oauth/callback?code=abc",
                                  headers={"Accept": "application/json"})
        assert missing.status_code == 400
        assert missing.json()["error"]["code"] == "oauth_state_invalid"
        assert await _tokens(d) == []
        done = await d.api.get(callback, headers={"Accept": "application/json"})
        assert done.status_code == 200, done.text
        stored = await _tokens(d)
        assert stored == [("default", "a", token_name(protected.url))]
        before = await d.runtime.secrets.open_row(tenant="default", agent="a",
                                                  name=token_name(protected.url))
        replayed = await d.api.get(callback, headers={"Accept": "application/json"})
        assert replayed.status_code == 400
        assert replayed.json()["error"]["code"] == "oauth_state_invalid"
        after = await d.runtime.secrets.open_row(tenant="default", agent="a",
                                                 name=token_name(protected.url))
        assert after == before  # nothing rewritten


async def test_an_expired_state_stores_nothing(tmp_path: Path, store_url: str,
                                               protected: Protected, person: Person
                                               ) -> None:
    import time

    from agentd.assembly import Runtime
    from agentd.server.app import create_app
    from agentd.store import open_store

    settings = settings_for(tmp_path, store_url)
    clock = FakeClock(time.time())
    runtime = Runtime(settings, await open_store(store_url, clock=clock), clock=clock)
    await runtime.start()
    try:
        app = create_app(settings, runtime)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test",
                headers={"Authorization": f"Bearer {ADMIN}"}) as api:
            d = Daemon(runtime, api)
            await _agent(d, "a", {"mcp": [oauth_server(protected.url)]})
            callback = await _redirect(d, "a", person)
            clock.now = clock.time() + 601  # a login has 600 s
            late = await api.get(callback, headers={"Accept": "application/json"})
            assert late.status_code == 400, late.text
            assert late.json()["error"]["code"] == "oauth_state_expired"
            assert await _tokens(d) == []
    finally:
        await runtime.close()


async def test_a_login_whose_token_was_revoked_is_not_finished(
        tmp_path: Path, store_url: str, protected: Protected, person: Person) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        member = await d.mint("ops", "member")
        await _agent(d, "a", {"mcp": [oauth_server(protected.url)]})
        callback = await _redirect(d, "a", person, token=member)
        assert (await d.call("DELETE", "/v1/tokens/ops", ADMIN)).status_code == 204
        late = await d.api.get(callback, headers={"Accept": "application/json"})
        assert late.status_code == 403, late.text
        assert await _tokens(d) == []
        await d.runtime.identity.audit.flush()
        [refused] = await d.runtime.identity.audit.page(action="mcp_oauth.authorized",
                                                        outcome="denied")
        assert refused.actor == "ops"


async def test_another_tenants_token_cannot_touch_an_agents_login_or_its_tokens(
        tmp_path: Path, store_url: str, protected: Protected, person: Person) -> None:
    async with daemon(settings_for(tmp_path, store_url, mcp_urls=[protected.url])) as d:
        await _agent(d, "a", {"mcp": [oauth_server(protected.url)]})  # tenant default
        callback = await _redirect(d, "a", person)
        # The acme token sees no agent a: it cannot start, read, log out.
        for method, path in (("POST", "/v1/agents/a/mcp/gh/login"),
                             ("GET", "/v1/agents/a/mcp"),
                             ("DELETE", "/v1/agents/a/mcp/gh/login")):
            answer = await d.call(method, path, SCOPED)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "agent_not_found"
        # Its own agent's login cannot be steered to agent a: the state decides.
        assert (await _agent(d, "b", {"tenant": "acme",
                                      "mcp": [oauth_server(protected.url)]},
                             SCOPED)).status_code == 201
        theirs = await _redirect(d, "b", Person("bob"), token=SCOPED)
        done = await d.api.get(theirs + "&agent=a&tenant=default",
                               headers={"Accept": "application/json"})
        assert done.status_code == 200 and done.json()["agent"] == "b"
        assert await _tokens(d) == [("acme", "b", token_name(protected.url))]
        await d.api.get(callback)
        # The tokens are no secret anyone lists, sets, deletes or names.
        for token in (ADMIN, SCOPED):
            listed = (await d.call("GET", "/v1/secrets", token)).json()["secrets"]
            assert listed == [], listed
        name = token_name(protected.url)
        for method, path, body in (
                ("POST", "/v1/secrets", {"name": name, "value": "x" * 20}),
                ("POST", "/v1/secrets", {"name": name, "value": "x" * 20, "agent": "b"}),
                ("DELETE", f"/v1/secrets/{name}?agent=b", None)):
            answer = await d.call(method, path, SCOPED, json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["code"] == "secret_reserved"
        named = await d.call("PATCH", "/v1/agents/b", SCOPED, json={"settings": {
            "tenant": "acme", "mcp": [{"name": "x", "url": protected.url,
                                       "headers": {"X-T": f"secret:{name}"}}]}})
        assert named.status_code == 422, named.text
        assert named.json()["error"]["code"] == "secret_reserved"
        admin_named = await d.call("PATCH", "/v1/agents/a", ADMIN, json={"settings": {
            "mcp": [{"name": "x", "url": protected.url,
                     "headers": {"X-T": f"secret:{name}"}}]}})
        assert admin_named.status_code == 422, admin_named.text
        assert admin_named.json()["error"]["code"] == "secret_reserved"
        assert len(await _tokens(d)) == 2


async def test_an_agent_scoped_token_cannot_replace_a_tenants_shared_tokens(
        tmp_path: Path, store_url: str, protected: Protected) -> None:
    async with daemon(settings_for(tmp_path, store_url, mcp_urls=[protected.url])) as d:
        narrow = await d.mint("acme.one", "member", tenant="acme", agents=["acme.one"])
        made = await _agent(d, "acme.one", {"tenant": "acme", "mcp": [
            oauth_server(protected.url, tokens="tenant")]})
        assert made.status_code == 201, made.text
        refused = await _start(d, "acme.one", narrow)
        assert refused.status_code == 403, refused.text
        assert "whole tenant" in refused.json()["error"]["message"]
        assert (await _start(d, "acme.one", SCOPED)).status_code == 201


async def test_an_authorization_server_of_the_members_choosing_is_refused(
        tmp_path: Path, store_url: str, authserver: AuthServer,
        protected: Protected) -> None:
    evil = "http://127.0.0.1:9/"
    async with daemon(settings_for(tmp_path, store_url,
                                   mcp_urls=[protected.url])) as d:
        member = await d.mint("m", "member")
        pointed = await _agent(d, "a", {"mcp": [oauth_server(
            protected.url, authorization_server=evil)]}, member)
        assert pointed.status_code == 403, pointed.text
        assert "authorization_server" in pointed.text
        # The server's own, a member may not name either unless the operator listed it.
        own = await _agent(d, "a", {"mcp": [oauth_server(
            protected.url, authorization_server=authserver.issuer)]}, member)
        assert own.status_code == 403
        # An operator may; a server the MCP server does not name is refused at login.
        assert (await _agent(d, "b", {"mcp": [oauth_server(
            protected.url, authorization_server=evil)]})).status_code == 201
        refused = await _start(d, "b")
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "oauth_server_mismatch"


async def test_the_redirect_uri_is_always_the_daemons_own(
        tmp_path: Path, store_url: str, protected: Protected) -> None:
    async with daemon(settings_for(tmp_path, store_url,
                                   public_url="https://agentd.example.com")) as d:
        redirect = "https://agentd.example.com/v1/mcp/oauth/callback"
        in_settings = await _agent(d, "x", {"mcp": [oauth_server(
            protected.url, redirect_uri="https://evil.example/cb")]})
        assert in_settings.status_code == 422, in_settings.text
        assert (await _agent(d, "a", {"mcp": [oauth_server(protected.url)]})).status_code \
            == 201
        in_body = await d.call("POST", "/v1/agents/a/mcp/gh/login", ADMIN,
                               json={"redirect_uri": "https://evil.example/cb"})
        assert in_body.status_code == 422, in_body.text
        started = await d.api.post("/v1/agents/a/mcp/gh/login", headers={
            "Authorization": f"Bearer {ADMIN}", "Host": "localhost:9999",
            "X-Forwarded-Host": "evil.example"})
        assert started.status_code == 201, started.text
        assert started.json()["redirect_uri"] == redirect
        assert query(started.json()["authorization_url"])["redirect_uri"] == redirect
        # The client agentd registered knows that one redirect URI only.
        flow_client = json.loads(json.dumps(started.json()))
        assert flow_client["redirect_uri"] == redirect


async def test_a_person_who_denies_consent_stores_nothing(
        tmp_path: Path, store_url: str, protected: Protected) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        await _agent(d, "a", {"mcp": [oauth_server(protected.url)]})
        refusing = Person("alice", consent=False)
        try:
            callback = await _redirect(d, "a", refusing)
        finally:
            refusing.close()
        assert query("http://x" + callback)["error"] == "access_denied"
        denied = await d.api.get(callback, headers={"Accept": "application/json"})
        assert denied.status_code == 400, denied.text
        assert denied.json()["error"]["code"] == "oauth_denied"
        assert await _tokens(d) == []
        await d.runtime.identity.audit.flush()
        [row] = await d.runtime.identity.audit.page(action="mcp_oauth.authorized")
        assert row.outcome == "denied" and "access_denied" in row.reason
