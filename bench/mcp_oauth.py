"""What OAuth costs at the MCP door and on an MCP client's call, in one process.

The door (``[mcp.oauth]``): a daemon over ASGI answers ``tools/list`` at ``/mcp`` with
an agentd token, and with an OAuth access token (an ES256 JWT of a local issuer whose
keys the verifier reads once, through an in-process transport); reported per request,
the process's CPU microseconds (client included: httpx over ASGI, one request at a
time), the median of ``--rounds`` rounds taken in turns. Then the verifier alone
(``ProtectedResource.verify``: signature, claims, scope, the principal) in
microseconds per token.

The client: what an MCP call of a server with ``oauth`` adds before it is sent
(``MCPLogins.token`` with the token in memory, the path of every call while the token
is fresh), in microseconds.

stdout gets one JSON line; progress goes to stderr.

    PYTHONPATH=src .venv/bin/python bench/mcp_oauth.py [--requests 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.secrets.oauth import _Cached, _Kept
from agentd.server.app import create_app
from agentd.tools.mcp_config import MCPServer

ISSUER = "https://login.bench.example"
TOKEN = "bench-daemon-token-0123456789abcdef"


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _issuer() -> tuple[Any, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return key, {**public, "kid": "bench", "alg": "ES256", "use": "sig"}


def _jwks_transport(jwk: dict[str, Any]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/openid-configuration"):
            return httpx.Response(200, json={"issuer": ISSUER,
                                             "jwks_uri": f"{ISSUER}/jwks"})
        if request.url.path == "/jwks":
            return httpx.Response(200, json={"keys": [jwk]})
        return httpx.Response(404)

    return httpx.MockTransport(answer)


async def _cpu_per_request(api: httpx.AsyncClient, headers: dict[str, str],
                           requests: int) -> float:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    start = time.process_time()
    for _ in range(requests):
        answer = await api.post("/mcp", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
    return (time.process_time() - start) / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    key, jwk = _issuer()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            home=Path(folder) / "home", demo_agent=False, tokens=[TOKEN], agent_idle_s=0,
            tenants={"acme": {}}, mcp={"oauth": {
                "issuer": ISSUER, "scopes": ["agentd:mcp"],
                "principals": [{"values": ["*"], "tenant_claim": "org"}]}})
        runtime = await Runtime.open(settings)
        try:
            runtime.mcp_resource.http = lambda: httpx.AsyncClient(  # type: ignore[union-attr]
                transport=_jwks_transport(jwk))
            for i in range(20):
                await runtime.create_agent(name=f"acme.bot{i}", model="scripted",
                                           settings={"tenant": "acme"})
            now = int(time.time())
            oauth = jwt.encode({"iss": ISSUER, "aud": settings.mcp_resource(), "sub": "alice",
                                "org": "acme", "scope": "agentd:mcp", "iat": now,
                                "exp": now + 3600}, key, algorithm="ES256",
                               headers={"kid": "bench"})
            common = {"Accept": "application/json, text/event-stream",
                      "MCP-Protocol-Version": "2025-11-25"}
            app = create_app(settings, runtime)
            rounds: dict[str, list[float]] = {"daemon_token": [], "oauth_token": []}
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url=settings.base_url()) as api:
                for token in (TOKEN, oauth):
                    await _cpu_per_request(api, {**common, "Authorization":
                                                 f"Bearer {token}"}, 20)  # warm
                for round_ in range(args.rounds):
                    info(f"round {round_ + 1}/{args.rounds}")
                    for name, token in (("daemon_token", TOKEN), ("oauth_token", oauth)):
                        rounds[name].append(await _cpu_per_request(
                            api, {**common, "Authorization": f"Bearer {token}"},
                            args.requests))
            verifier = runtime.mcp_resource
            assert verifier is not None
            start = time.process_time()
            for _ in range(args.requests * 5):
                verdict = await verifier.verify(oauth)
                assert verdict.principal is not None
            verify_us = (time.process_time() - start) / (args.requests * 5) * 1e6
            # The client's side: a fresh token in memory, asked for before each call.
            entry = MCPServer.model_validate({"name": "gh", "url": "https://mcp.example/mcp",
                                              "oauth": {}})
            logins = runtime.mcp_oauth
            key_ = logins._key("acme", "acme.bot0", entry)
            logins._cache[key_] = _Cached(_Kept(
                server="gh", url=entry.url or "", resource=entry.url or "", issuer=ISSUER,
                token_endpoint="", revocation_endpoint=None, client={},
                client_secret_ref=None, access_token="tok", refresh_token=None,
                expires_at=time.time() + 3600, scope=None, obtained_at=time.time()),
                runtime.clock.monotonic())
            start = time.process_time()
            calls = args.requests * 50
            for _ in range(calls):
                await logins.token(tenant="acme", agent="acme.bot0", server=entry,
                                   current="tok")
            token_us = (time.process_time() - start) / calls * 1e6
        finally:
            await runtime.close()
    daemon = statistics.median(rounds["daemon_token"])
    with_oauth = statistics.median(rounds["oauth_token"])
    print(orjson.dumps({
        "requests": args.requests, "rounds": args.rounds,
        "door_tools_list_cpu_us": {"daemon_token": round(daemon, 1),
                                   "oauth_token": round(with_oauth, 1),
                                   "oauth_extra": round(with_oauth - daemon, 1)},
        "verify_jwt_us": round(verify_us, 1),
        "client_token_per_call_us": round(token_us, 2),
    }).decode())


if __name__ == "__main__":
    asyncio.run(main())
