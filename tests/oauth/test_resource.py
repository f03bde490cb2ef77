"""agentd's MCP door as an OAuth 2.0 protected resource (``[mcp.oauth]``), tested with
the other side's own code: the official MCP SDK's client (``OAuthClientProvider``:
RFC 9728 discovery from the 401's ``resource_metadata``, RFC 8414 metadata, dynamic
registration, PKCE, the ``resource`` parameter) against a real daemon on a socket and
a real authorization server (oidc-provider), a person signing in on its pages.

Then the attacks, each a real token or a forged one sent to the door: another
audience, expired (the daemon's clock moved), a key the issuer does not publish, alg
``none``, an HMAC signed with the issuer's public key (HS/RS confusion), a payload
changed under a valid signature, a missing scope (403 ``insufficient_scope``), a
holder no rule maps (403), an OAuth token on a path that is not the MCP door's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp.client.auth import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from mcp.shared.exceptions import MCPError
from pydantic import AnyUrl
from tests.conftest import asgi_client
from tests.daemons import ThreadDaemon
from tests.oauth.authserver import AuthServer, Person, query

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.testing import FakeClock

pytestmark = pytest.mark.no_replay

SCOPE = "agentd:mcp"
TOKEN = "own-daemon-token-0123456789abcdefghijk"


def oauth_config(issuer: str, **extra: Any) -> dict[str, Any]:
    """[mcp.oauth]: the issuer's tokens with scope agentd:mcp; alice and bob are
    members of the tenant their token names (agentd_tenant), anyone else no one."""
    return {"issuer": issuer, "scopes": [SCOPE], "principals": [
        {"claim": "sub", "values": ["alice", "bob"], "role": "member",
         "tenant_claim": "agentd_tenant"}], **extra}


def _settings(folder: Path, issuer: str, **extra: Any) -> dict[str, Any]:
    return {"demo_agent": False, "tenants": {"acme": {}, "globex": {}},
            "mcp": {"oauth": oauth_config(issuer, **extra)}}


class _Storage:
    """The SDK client's token storage (in memory)."""

    def __init__(self) -> None:
        self.tokens: Any = None
        self.client: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client

    async def set_client_info(self, info: Any) -> None:
        self.client = info


@pytest.fixture(scope="module")
def resource_daemon(authserver: AuthServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[ThreadDaemon]:
    folder = tmp_path_factory.mktemp("daemon")
    daemon = ThreadDaemon(folder / "home", folder / "agentd.log", token=TOKEN,
                          **_settings(folder, authserver.issuer)).start()
    try:
        with daemon.client() as api:
            for name, tenant in (("acme.support", "acme"), ("globex.sales", "globex"),
                                 ("plain", "default")):
                made = api.post("/v1/agents", json={"name": name, "model": "scripted",
                                                    "settings": {"tenant": tenant}})
                assert made.status_code == 201, made.text
        yield daemon
    finally:
        daemon.cleanup()


@contextlib.asynccontextmanager
async def sdk_client(url: str, login: str) -> AsyncIterator[tuple[Client, list[str]]]:
    """The SDK's own OAuth client, with ``login`` signing in where it is sent; the
    authorization URLs it opened."""
    opened: list[str] = []
    redirect = "http://127.0.0.1:9/callback"
    pending: asyncio.Future[AuthorizationCodeResult] = \
        asyncio.get_running_loop().create_future()

    async def redirect_handler(link: str) -> None:
        opened.append(link)
        person = Person(login)
        try:
            back = await asyncio.to_thread(person.authorize, link, stop_at=redirect)
        finally:
            person.close()
        params = query(back.headers["location"])
        pending.set_result(AuthorizationCodeResult(code=params["code"],
                                                   state=params.get("state"),
                                                   iss=params.get("iss")))

    async def callback_handler() -> AuthorizationCodeResult:
        return await pending

    provider = OAuthClientProvider(
        server_url=url, storage=_Storage(),
        client_metadata=OAuthClientMetadata(
            redirect_uris=[AnyUrl(redirect)], client_name="sdk test client",
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method="client_secret_basic"),
        redirect_handler=redirect_handler, callback_handler=callback_handler)

    @contextlib.asynccontextmanager
    async def transport() -> AsyncIterator[Any]:
        async with (httpx2.AsyncClient(auth=provider, timeout=60) as http,
                    streamable_http_client(url, http_client=http) as streams):
            yield streams

    async with Client(transport(), cache=None) as client:
        yield client, opened


async def test_the_sdks_oauth_client_finds_the_issuer_signs_in_and_calls_an_agent(
        resource_daemon: ThreadDaemon, authserver: AuthServer) -> None:
    url = f"{resource_daemon.url}/mcp"
    async with sdk_client(url, "alice") as (client, opened):
        tools = await client.list_tools()
        # Alice's token names tenant acme: its agents only.
        assert [t.name for t in tools.tools] == ["acme.support"]
        answer = await client.call_tool("acme.support", {"message": "hello"})
        assert not answer.is_error, answer
        assert "hello" in answer.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="no tool 'plain'"):
            await client.call_tool("plain", {"message": "hello"})
    [link] = opened
    asked = query(link)
    assert asked["resource"] == url  # RFC 8707: the token is for this resource
    assert SCOPE in asked["scope"].split()
    assert asked["code_challenge_method"] == "S256"


async def test_the_metadata_and_the_challenges(resource_daemon: ThreadDaemon,
                                               authserver: AuthServer) -> None:
    url = f"{resource_daemon.url}/mcp"
    metadata_url = f"{resource_daemon.url}/.well-known/oauth-protected-resource/mcp"
    async with httpx.AsyncClient() as http:
        for path in (metadata_url, f"{resource_daemon.url}/.well-known/"
                                   "oauth-protected-resource"):
            found = await http.get(path)
            assert found.status_code == 200, found.text
            assert found.json()["resource"] == url
            assert found.json()["authorization_servers"] == [authserver.issuer]
            assert found.json()["scopes_supported"] == [SCOPE]
        bare = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert bare.status_code == 401
        assert bare.headers["www-authenticate"] == (
            f'Bearer scope="{SCOPE}", resource_metadata="{metadata_url}"')
        assert bare.json()["error"]["code"] == -32600  # the door's JSON-RPC shape
        wrong = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                headers={"Authorization": "Bearer not-a-jwt"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert f'resource_metadata="{metadata_url}"' in wrong.headers["www-authenticate"]
        # agentd's own token keeps working.
        own = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                              headers={"Authorization": f"Bearer {TOKEN}",
                                       "Accept": "application/json, text/event-stream",
                                       "MCP-Protocol-Version": "2025-11-25"})
        assert own.status_code == 200, own.text


# -- the attacks, through the door over ASGI, on a clock the test moves --------------


@pytest.fixture(scope="module")
def tokens(authserver: AuthServer) -> dict[str, dict[str, Any]]:
    """Real tokens of the authorization server: for the daemon's resource, for
    another, without the scope, and one for a holder no rule maps."""
    ours = "http://127.0.0.1:8721/mcp"  # (the test settings' base URL)
    return {
        "good": authserver.issue(ours, f"{SCOPE} offline_access"),
        "other_audience": authserver.issue("http://127.0.0.1:8721/other",
                                           f"{SCOPE} offline_access"),
        "no_scope": authserver.issue(ours, "mcp:tools"),
        "bob": authserver.issue(ours, SCOPE, login="bob"),
    }


def _with(settings: Settings, store_url: str, **extra: Any) -> Settings:
    return Settings(home=settings.home, sandbox=settings.sandbox, database_url=store_url,
                    shutdown_grace_s=2.0, **extra)


@pytest.fixture
async def door(settings: Settings, store_url: str, authserver: AuthServer
               ) -> AsyncIterator[tuple[httpx.AsyncClient, FakeClock, Runtime]]:
    settings = _with(settings, store_url, **_settings(settings.home, authserver.issuer))
    clock = FakeClock(time.time())
    runtime = await Runtime.open(settings, clock=clock)
    try:
        await runtime.create_agent(name="acme.support", model="scripted",
                                   settings={"tenant": "acme"})
        async with asgi_client(settings, runtime, base_url=settings.base_url()) as api:
            yield api, clock, runtime
    finally:
        await runtime.close()


async def _ping(api: httpx.AsyncClient, token: str, path: str = "/mcp") -> httpx.Response:
    return await api.post(path, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"Authorization": f"Bearer {token}",
                                   "Accept": "application/json, text/event-stream",
                                   "MCP-Protocol-Version": "2025-11-25"})


def _refused(answer: httpx.Response, status: int, error: str, why: str) -> None:
    assert answer.status_code == status, answer.text
    challenge = answer.headers.get("www-authenticate", "")
    if error != "forbidden":
        assert challenge.startswith(f'Bearer error="{error}"'), challenge
    assert why in answer.text, answer.text


def _forge(claims: dict[str, Any], key: Any, alg: str, **header: Any) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=header or None)


async def test_a_good_token_lists_its_tenants_agents(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime],
        tokens: dict[str, dict[str, Any]]) -> None:
    api, _, _ = door
    answer = await _ping(api, tokens["good"]["access_token"])
    assert answer.status_code == 200, answer.text
    assert "acme.support" in answer.text


async def test_a_token_for_another_audience_is_refused(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime],
        tokens: dict[str, dict[str, Any]]) -> None:
    api, _, _ = door
    _refused(await _ping(api, tokens["other_audience"]["access_token"]), 401,
             "invalid_token", "not this resource")


async def test_an_expired_token_is_refused_on_the_daemons_clock(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime],
        tokens: dict[str, dict[str, Any]]) -> None:
    api, clock, _ = door
    token = tokens["good"]["access_token"]
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    clock.now = exp + 31  # past the 30 s leeway
    _refused(await _ping(api, token), 401, "invalid_token", "expired")


async def test_a_key_the_issuer_does_not_publish_is_refused(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime],
        tokens: dict[str, dict[str, Any]]) -> None:
    api, _, _ = door
    claims = jwt.decode(tokens["good"]["access_token"], options={"verify_signature": False})
    mine = ec.generate_private_key(ec.SECP256R1())
    forged = _forge(claims, mine, "ES256", kid="attacker-key")
    _refused(await _ping(api, forged), 401, "invalid_token", "does not publish")
    # ... nor with the issuer's own key id on it.
    real_kid = jwt.get_unverified_header(tokens["good"]["access_token"])["kid"]
    _refused(await _ping(api, _forge(claims, mine, "ES256", kid=real_kid)), 401,
             "invalid_token", "signature")


async def test_alg_none_and_an_hmac_with_the_public_key_are_refused(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime], authserver: AuthServer,
        tokens: dict[str, dict[str, Any]]) -> None:
    api, _, _ = door
    claims = jwt.decode(tokens["good"]["access_token"], options={"verify_signature": False})
    head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = base64.urlsafe_b64encode(json.dumps(claims).encode())
    unsigned = f"{head.decode().rstrip('=')}.{body.decode().rstrip('=')}."
    _refused(await _ping(api, unsigned), 401, "invalid_token", "'none'")
    # HS/RS confusion: the issuer's RSA public key (from its JWKS) as an HMAC secret.
    async with httpx.AsyncClient() as http:
        keys = (await http.get(authserver.metadata()["jwks_uri"])).json()["keys"]
    rsa = next(k for k in keys if k["kty"] == "RSA")
    public = jwt.PyJWK(rsa).key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "HS256", "typ": "JWT", "kid": rsa["kid"]}).encode()).decode().rstrip("=")
    payload = body.decode().rstrip("=")
    mac = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{header}.{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    _refused(await _ping(api, confused), 401, "invalid_token", "'HS256'")


async def test_a_payload_changed_under_a_valid_signature_is_refused(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime],
        tokens: dict[str, dict[str, Any]]) -> None:
    api, _, _ = door
    head, _, sig = tokens["good"]["access_token"].split(".")
    claims = jwt.decode(tokens["good"]["access_token"], options={"verify_signature": False})
    claims["agentd_tenant"] = "globex"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    _refused(await _ping(api, f"{head}.{body}.{sig}"), 401, "invalid_token", "signature")


async def test_a_missing_scope_is_403_insufficient_scope(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime],
        tokens: dict[str, dict[str, Any]]) -> None:
    api, _, _ = door
    answer = await _ping(api, tokens["no_scope"]["access_token"])
    _refused(answer, 403, "insufficient_scope", SCOPE)
    assert f'scope="{SCOPE}"' in answer.headers["www-authenticate"]


async def test_a_holder_no_rule_maps_and_a_tenant_not_taken_are_refused(
        settings: Settings, store_url: str, authserver: AuthServer,
        tokens: dict[str, dict[str, Any]]) -> None:
    config = oauth_config(authserver.issuer)
    config["principals"] = [{"claim": "sub", "values": ["alice"], "role": "member",
                             "tenant_claim": "agentd_tenant", "tenants": ["acme"]}]
    settings = _with(settings, store_url, demo_agent=False, tenants={"acme": {}},
                     mcp={"oauth": config})
    runtime = await Runtime.open(settings)
    try:
        async with asgi_client(settings, runtime, base_url=settings.base_url()) as api:
            # bob is valid at the issuer, and nobody here.
            _refused(await _ping(api, tokens["bob"]["access_token"]), 403, "forbidden",
                     "none of those this daemon lets in")
            assert (await _ping(api, tokens["good"]["access_token"])).status_code == 200
    finally:
        await runtime.close()


async def test_an_oauth_token_opens_the_mcp_door_only(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime],
        tokens: dict[str, dict[str, Any]]) -> None:
    api, _, _ = door
    token = tokens["good"]["access_token"]
    for method, path in (("GET", "/v1/agents"), ("GET", "/v1/secrets"),
                         ("POST", "/v1/chat/completions")):
        answer = await api.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, (path, answer.text)


async def test_opaque_tokens_are_asked_about_at_the_introspection_endpoint(
        settings: Settings, store_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``introspection_endpoint``: a token the daemon cannot read is asked about (RFC
    7662) with the daemon's own client; one revoked since is inactive: 401."""
    resource = "http://127.0.0.1:8721/mcp"
    server = AuthServer(tmp_path, opaque_resources=[resource]).start()
    try:
        meta = server.metadata()
        own = server.register(["http://127.0.0.1:9/unused"])
        monkeypatch.setenv("AGENTD_TEST_INTROSPECTION", own["client_secret"])
        config = oauth_config(server.issuer, introspection_endpoint=meta[
            "introspection_endpoint"], introspection_client_id=own["client_id"],
            introspection_secret_env="AGENTD_TEST_INTROSPECTION")
        settings = _with(settings, store_url, demo_agent=False, tenants={"acme": {}},
                         mcp={"oauth": config})
        issued = await asyncio.to_thread(server.issue, resource, SCOPE)
        token = issued["access_token"]
        assert token.count(".") != 2  # opaque: not a JWT
        runtime = await Runtime.open(settings)
        try:
            await runtime.create_agent(name="acme.support", model="scripted",
                                       settings={"tenant": "acme"})
            async with asgi_client(settings, runtime, base_url=settings.base_url()) as api:
                ok = await _ping(api, token)
                assert ok.status_code == 200 and "acme.support" in ok.text, ok.text
                assert server.stats()["introspected"] >= 1
                async with httpx.AsyncClient() as http:
                    holder = issued["client"]
                    revoked = await http.post(meta["revocation_endpoint"], data={
                        "token": token, "token_type_hint": "access_token"},
                        auth=(holder["client_id"], holder["client_secret"]))
                assert revoked.status_code == 200, revoked.text
                _refused(await _ping(api, token), 401, "invalid_token", "not active")
        finally:
            await runtime.close()
    finally:
        server.stop()


async def test_a_refused_daemon_token_keeps_its_own_reason_at_the_door(
        door: tuple[httpx.AsyncClient, FakeClock, Runtime]) -> None:
    api, _, _ = door
    made = await api.post("/v1/tokens", json={"name": "short", "role": "member",
                                              "expires_at": "2099-01-01T00:00:00Z"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert (await api.delete("/v1/tokens/short")).status_code == 204
    refused = await _ping(api, token)
    assert refused.status_code == 401
    assert "missing or invalid bearer token" in refused.text  # not "not a signed JWT"
    assert "resource_metadata=" in refused.headers["www-authenticate"]
