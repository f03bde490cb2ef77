"""Bad input to MCP servers' OAuth, each a clear 4xx naming the field and nothing
written: an oauth block's fields (through the API), a client secret that is not a
reference, names no secret of the agent's, or another tenant's; ``[mcp.oauth]``'s
(a configuration the daemon refuses to start with, saying why); and the decisions on
a token's claims (issuer, audience, expiry, nbf, scopes, rules) on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.identity._daemon import ADMIN, SCOPED, daemon, settings_for
from tests.oauth.conftest import oauth_server

from agentd.config import Settings
from agentd.security.resource import (
    ClaimRule,
    ResourceConfig,
    TokenProblem,
    check_claims,
    principal_for,
    scopes_of,
)

URL = "http://127.0.0.1:9/mcp"


@pytest.mark.parametrize(("oauth", "field", "said"), [
    ({"client_secret": "plain-value-1234"}, "client_secret", "secret:NAME"),
    ({"client_secret": "secret:X"}, "", "goes with a client_id"),
    ({"scopes": ["has space"]}, "scopes", "not a scope"),
    ({"scopes": ['quo"te']}, "scopes", "not a scope"),
    ({"tokens": "everyone"}, "tokens", "'agent' or 'tenant'"),
    ({"authorization_server": "ftp://x"}, "authorization_server", "http"),
    ({"redirect_uri": "https://evil.example/cb"}, "redirect_uri", "unknown setting"),
    ({"client_id": "a\nb"}, "client_id", "control character"),
])
async def test_a_bad_oauth_block_is_a_422_naming_the_field(
        tmp_path: Path, store_url: str, oauth: dict[str, Any], field: str, said: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        made = await d.call("POST", "/v1/agents", ADMIN, json={
            "name": "a", "settings": {"mcp": [oauth_server(URL, **oauth)]}})
        assert made.status_code == 422, made.text
        assert said in made.text
        if field:
            assert f"oauth.{field}" in made.text, made.text
        assert (await d.call("GET", "/v1/agents/a", ADMIN)).status_code == 404


async def test_oauth_on_a_command_and_an_authorization_header_beside_it_are_refused(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url)) as d:
        on_command = await d.call("POST", "/v1/agents", ADMIN, json={"name": "a", "settings": {
            "mcp": [{"name": "x", "command": ["true"], "oauth": {}}]}})
        assert on_command.status_code == 422 and "oauth applies to a url" in on_command.text
        both = await d.call("POST", "/v1/agents", ADMIN, json={"name": "a", "settings": {
            "mcp": [{**oauth_server(URL), "headers": {"Authorization": "Bearer x"}}]}})
        assert both.status_code == 422 and "leave it out of headers" in both.text


async def test_a_client_secret_of_no_secret_or_another_tenants_is_refused(
        tmp_path: Path, store_url: str) -> None:
    async with daemon(settings_for(tmp_path, store_url, mcp_urls=[URL])) as d:
        set_acme = await d.call("POST", "/v1/secrets", SCOPED, json={
            "name": "ACME_CLIENT", "value": "acme-client-secret-1"})
        assert set_acme.status_code == 201, set_acme.text
        for name in ("NOPE", "ACME_CLIENT"):  # none; acme's, from tenant default
            made = await d.call("POST", "/v1/agents", ADMIN, json={"name": "a", "settings": {
                "mcp": [oauth_server(URL, client_id="c", client_secret=f"secret:{name}")]}})
            assert made.status_code == 422, made.text
            assert "mcp.0.oauth.client_secret" in made.text and name in made.text
        ok = await d.call("POST", "/v1/agents", SCOPED, json={"name": "acme.a", "settings": {
            "tenant": "acme", "mcp": [oauth_server(URL, client_id="c",
                                                   client_secret="secret:ACME_CLIENT")]}})
        assert ok.status_code == 201, ok.text


# -- [mcp.oauth] -----------------------------------------------------------------------


@pytest.mark.parametrize(("config", "said"), [
    ({"issuer": "https://as.example", "algorithms": ["HS256"]}, "never 'none' or an HMAC"),
    ({"issuer": "https://as.example", "algorithms": ["none"]}, "never 'none'"),
    ({"issuer": "not a url"}, "not an http(s) URL"),
    ({"issuer": "https://as.example", "introspection_endpoint": "https://as.example/i"},
     "introspection_client_id"),
    ({"issuer": "https://as.example", "principals": [{"values": ["a["]}]},
     "never closed"),
    ({"issuer": "https://as.example", "principals": [{"values": ["a"], "role": "admin"}]},
     "role"),
    ({"issuer": "https://as.example", "leeway_s": 3600}, "leeway_s"),
])
def test_a_bad_mcp_oauth_section_is_refused_saying_why(config: dict[str, Any],
                                                       said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(mcp={"oauth": config})
    assert said in str(caught.value)


def test_a_public_url_is_a_bare_origin() -> None:
    assert Settings(public_url="https://agentd.example.com/").base_url() == \
        "https://agentd.example.com"
    assert Settings(port=9000, host="0.0.0.0").base_url() == "http://127.0.0.1:9000"
    for bad in ("agentd.example.com", "https://agentd.example.com/path", "https://x/?q"):
        with pytest.raises(ValidationError):
            Settings(public_url=bad)


# -- a token's claims ----------------------------------------------------------------

ISS, RES = "https://as.example", "https://agentd.example/mcp"


def _claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "aud": RES, "exp": 1000, "sub": "alice", **extra}


@pytest.mark.parametrize(("claims", "now", "said"), [
    (_claims(iss="https://evil.example"), 900, "issuer"),
    (_claims(aud="https://other.example/mcp"), 900, "not this resource"),
    (_claims(aud=["https://a", "https://b"]), 900, "not this resource"),
    (_claims(aud=None), 900, "no audience"),
    (_claims(), 1031, "expired"),
    (_claims(exp=None), 900, "no expiry"),
    (_claims(exp="1000"), 900, "expired"),
    (_claims(nbf=960), 900, "not valid yet"),
])
def test_claims_that_are_refused(claims: dict[str, Any], now: float, said: str) -> None:
    with pytest.raises(TokenProblem, match=said):
        check_claims(claims, issuer=ISS, resource=RES, now=now, leeway_s=30)


def test_claims_that_are_taken() -> None:
    check_claims(_claims(), issuer=ISS, resource=RES, now=1029, leeway_s=30)
    check_claims(_claims(aud=["https://x", RES + "/"]), issuer=ISS, resource=RES, now=0,
                 leeway_s=30)
    check_claims(_claims(nbf=920), issuer=ISS, resource=RES, now=900, leeway_s=30)
    assert scopes_of({"scope": "a b", "scp": ["c", 1]}) == {"a", "b", "c"}


def test_a_tokens_holder_is_the_first_rule_that_matches() -> None:
    rules = [ClaimRule(claim="email", values=["*@ops.example"], role="operator"),
             ClaimRule(values=["*"], tenant_claim="org", tenants=["acme", "globex"])]
    ops = principal_for(_claims(email="bo@ops.example"), rules)
    assert (ops.role, ops.access.everything, ops.source) == ("operator", True, "oauth")
    member = principal_for(_claims(org="acme"), rules)
    assert (member.role, member.tenant, member.name) == ("member", "acme", "oauth:alice")
    assert member.access.allows("x", "acme") and not member.access.allows("x", "globex")
    # A tenant claim that is a pattern is only that literal tenant.
    starred = principal_for(_claims(org="acme"), [ClaimRule(values=["*"],
                                                            tenant_claim="org")])
    assert not starred.access.allows("x", "acmex")
    for claims in (_claims(org="initech"), _claims(org=None), _claims(org=["acme"])):
        with pytest.raises(TokenProblem) as caught:
            principal_for(claims, rules)
        assert caught.value.status == 403
    with pytest.raises(TokenProblem, match="none of those"):
        principal_for(_claims(), [ClaimRule(values=["bob"])])
    assert ResourceConfig(issuer=ISS).algorithms[0] == "RS256"
