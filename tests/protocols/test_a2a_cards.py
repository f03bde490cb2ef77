"""The A2A door's agent cards: the one at the host's root (``[a2a] public_card``),
public as A2A discovery expects, and the shape each version's clients parse (a 1.0
security scheme is a one-of; 0.3's is flat)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from a2a.types.a2a_pb2 import AgentCard
from google.protobuf.json_format import ParseDict
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import A2AConfig, Settings

CARD = "/.well-known/agent-card.json"


async def _agent(client: httpx.AsyncClient, name: str) -> None:
    got = await client.post("/v1/agents", json={"name": name})
    assert got.status_code == 201, got.text


async def test_no_card_at_the_root_unless_the_operator_names_one(
        settings: Settings, runtime: Runtime) -> None:
    async with asgi_client(settings, runtime) as client:
        await _agent(client, "quiet")
        # Without a token: 401, as everywhere (nothing says the path exists) ...
        anonymous = await client.get(CARD, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        # ... and with one: not found, saying where the cards are.
        got = await client.get(CARD)
        assert got.status_code == 404
        assert "/a2a/<agent>" in got.text
        assert (await client.get(f"/a2a/quiet{CARD}", headers={"Authorization": ""})
                ).status_code == 401


async def test_the_public_card_is_served_at_the_root_and_its_own_path_without_a_token(
        settings: Settings, runtime: Runtime) -> None:
    settings = settings.model_copy(update={"a2a": A2AConfig(public_card="front")})
    async with asgi_client(settings, runtime) as client:
        await _agent(client, "front")
        await _agent(client, "private")
        anonymous = {"Authorization": ""}
        root = await client.get(CARD, headers=anonymous)
        assert root.status_code == 200, root.text
        own = await client.get(f"/a2a/front{CARD}", headers=anonymous)
        assert own.json() == root.json()
        card = root.json()
        assert card["name"] == "front"
        assert {i["url"] for i in card["supportedInterfaces"]} == {"http://test/a2a/front"}
        # Public means the card only: the endpoint, and every other agent's card,
        # still need the token.
        assert (await client.get(f"/a2a/private{CARD}", headers=anonymous)
                ).status_code == 401
        rpc = await client.post("/a2a/front", headers=anonymous, json={
            "jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}})
        assert rpc.status_code == 401
        # Nothing of the agent's settings is in it (a card is public by design).
        await client.patch("/v1/agents/front", json={"instructions": "the secret plan"})
        assert "secret plan" not in (await client.get(CARD, headers=anonymous)).text


async def test_a_deleted_public_agent_is_not_found(settings: Settings,
                                                   runtime: Runtime) -> None:
    settings = settings.model_copy(update={"a2a": A2AConfig(public_card="gone")})
    async with asgi_client(settings, runtime) as client:
        got = await client.get(CARD, headers={"Authorization": ""})
        assert got.status_code == 404
        assert got.json()["error"]["code"] == "agent_not_found"  # the native shape


def _strict_v1(card: dict[str, Any]) -> AgentCard:
    """The card as a strict 1.0 parser reads it: 0.3's top-level keys left aside
    (1.0 lists url and preferredTransport as deprecated), everything else exact."""
    legacy = {"url", "preferredTransport", "protocolVersion", "security",
              "additionalInterfaces", "supportsAuthenticatedExtendedCard"}
    return ParseDict({k: v for k, v in card.items() if k not in legacy}, AgentCard())


@pytest.mark.parametrize("version", [None, "1.0"])
async def test_a_10_client_gets_10_security_schemes(settings: Settings, runtime: Runtime,
                                                    version: str | None) -> None:
    async with asgi_client(settings, runtime) as client:
        await _agent(client, "echo")
        headers = {"A2A-Version": version} if version else {}
        card = (await client.get(f"/a2a/echo{CARD}", headers=headers)).json()
    # One key per scheme: the one-of of 1.0 (the SDK's dict mixed 0.3's flat keys in).
    assert card["securitySchemes"] == {"bearer": {"httpAuthSecurityScheme": {
        "scheme": "bearer", "description": "the daemon's bearer authentication"}}}
    parsed = _strict_v1(card)
    assert parsed.security_schemes["bearer"].http_auth_security_scheme.scheme == "bearer"
    # A word the A2A TCK takes for a leaked credential anywhere in a public card.
    assert "token" not in str(card).lower()


async def test_a_03_client_gets_the_card_it_parses(settings: Settings,
                                                   runtime: Runtime) -> None:
    from a2a.compat.v0_3 import types as v03

    async with asgi_client(settings, runtime) as client:
        await _agent(client, "echo")
        card = (await client.get(f"/a2a/echo{CARD}", headers={"A2A-Version": "0.3"})).json()
    parsed = v03.AgentCard.model_validate(card)
    assert parsed.url == "http://test/a2a/echo"
    assert parsed.security_schemes is not None
    scheme = parsed.security_schemes["bearer"].root
    assert isinstance(scheme, v03.HTTPAuthSecurityScheme) and scheme.scheme == "bearer"
