"""The MCP door's bearer tokens of an outside authorization server (``[mcp.oauth]``):
verified, and mapped to the principal the operator's rules give them.

Two ways, as the operator configures: a signed JWT (RFC 9068) checked here, with the
issuer's keys (its JWKS, from ``jwks_uri`` or the issuer's metadata, kept and read
again when a token names a key not seen yet, at most once a minute); or any token
asked about at the issuer's introspection endpoint (RFC 7662). Either way the claims
go through :func:`agentd.security.resource.check_claims` (issuer, audience, expiry
on the daemon's clock) and the scope and principal decisions there.

A JWT's signature is checked with PyJWT, for the one algorithm its header names
when that algorithm is on the allow-list (never ``none`` nor an HMAC: a token signed
with the issuer's public key as an HMAC secret is refused before any key is used) and
matches the key the header's ``kid`` names (a JWK's own ``alg``, when it has one,
must be the same).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from agentd.clock import SYSTEM, Clock
from agentd.security.identity import Principal
from agentd.security.resource import (
    ResourceConfig,
    TokenProblem,
    check_claims,
    metadata_path,
    principal_for,
    scopes_of,
)

__all__ = ["ProtectedResource", "Verdict"]

log = logging.getLogger(__name__)

#: Seconds between two reads of the issuer's keys for a key not seen yet.
REFETCH_S = 60.0
_TIMEOUT_S = 10.0
_MAX_TOKEN = 16384


@dataclass(frozen=True, slots=True)
class Verdict:
    """A token's fate: its principal, or the problem (401 or 403) to answer with."""

    principal: Principal | None = None
    problem: TokenProblem | None = None


class ProtectedResource:
    """The verifier of one daemon's ``[mcp.oauth]`` (``resource``: its identifier).

    Args:
        http: Makes the client keys and introspection are fetched with.
        environ: Where ``introspection_secret_env`` is read (once, here).
    """

    def __init__(self, config: ResourceConfig, *, resource: str, clock: Clock = SYSTEM,
                 environ: Mapping[str, str] | None = None,
                 http: Callable[[], httpx.AsyncClient] | None = None) -> None:
        self.config = config
        self.resource = resource
        self.clock = clock
        self.http = http or (lambda: httpx.AsyncClient(timeout=_TIMEOUT_S,
                                                       follow_redirects=False))
        env = os.environ if environ is None else environ
        self._secret = (env.get(config.introspection_secret_env, "")
                        if config.introspection_secret_env else "")
        self._keys: dict[str, dict[str, Any]] = {}
        #: The keys parsed, by the JWK (its identity: read again, a key is new) and alg.
        self._parsed: dict[tuple[int, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._jwks_uri = config.jwks_uri
        self._lock = asyncio.Lock()

    # -- RFC 9728 ------------------------------------------------------------------------

    def metadata_url(self, base: str) -> str:
        """Where the resource's metadata is (RFC 9728 3.1), on the daemon at ``base``."""
        return f"{base.rstrip('/')}{metadata_path(self.resource)}"

    def metadata(self) -> dict[str, Any]:
        """The resource's metadata (RFC 9728 2)."""
        out: dict[str, Any] = {
            "resource": self.resource, "authorization_servers": [self.config.issuer],
            "bearer_methods_supported": ["header"],
            "resource_signing_alg_values_supported": list(self.config.algorithms)}
        if self.config.scopes:
            out["scopes_supported"] = list(self.config.scopes)
        if self.config.resource_name:
            out["resource_name"] = self.config.resource_name
        return out

    # -- a request's token -------------------------------------------------------------

    async def verify(self, token: str) -> Verdict:
        """Who ``token`` is, or why it is refused."""
        try:
            if len(token) > _MAX_TOKEN:
                raise TokenProblem("the token is too long")
            if self.config.introspection_endpoint is not None:
                claims = await self._introspect(token)
            else:
                claims = await self._decode(token)
            check_claims(claims, issuer=self.config.issuer, resource=self.resource,
                         now=self.clock.time(), leeway_s=self.config.leeway_s)
            missing = [s for s in self.config.scopes if s not in scopes_of(claims)]
            if missing:
                raise TokenProblem(f"the token lacks the scope {' '.join(missing)}",
                                   status=403, error="insufficient_scope")
            return Verdict(principal=principal_for(claims, self.config.principals))
        except TokenProblem as problem:
            return Verdict(problem=problem)

    async def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenProblem("the token is not a signed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise TokenProblem(f"the token is signed with {str(alg)[:20]!r}, which this "
                               "resource does not take")
        kid = header.get("kid")
        found = await self._key(kid if isinstance(kid, str) else None, alg)
        if found.get("alg") not in (None, alg):
            raise TokenProblem("the token's algorithm is not its key's")
        try:
            key = self._parsed.get((id(found), alg))
            if key is None:  # (parsing a key costs more than checking a signature)
                key = jwt.PyJWK(found, algorithm=alg)
                if len(self._parsed) > 64:
                    self._parsed.clear()
                self._parsed[(id(found), alg)] = key
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=[alg],
                # Time, issuer and audience are checked by check_claims, on the clock.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_aud": False, "verify_iss": False})
        except jwt.PyJWTError as exc:
            raise TokenProblem(f"the token's signature does not verify ({exc})") from None
        return claims

    async def _key(self, kid: str | None, alg: str) -> dict[str, Any]:
        async with self._lock:
            if not self._keys or (kid is not None and kid not in self._keys
                                  and self._may_fetch()):
                await self._fetch_keys()
        if kid is not None:
            key = self._keys.get(kid)
            if key is None:
                raise TokenProblem("the token is signed with a key the issuer does not "
                                   "publish")
            return key
        usable = [k for k in self._keys.values() if k.get("alg") in (None, alg)
                  and k.get("use", "sig") == "sig"]
        if len(usable) != 1:
            raise TokenProblem("the token names no key (kid), and the issuer has several")
        return usable[0]

    def _may_fetch(self) -> bool:
        return (self._fetched_at is None
                or self.clock.monotonic() - self._fetched_at >= REFETCH_S)

    async def _fetch_keys(self) -> None:
        self._fetched_at = self.clock.monotonic()
        try:
            async with self.http() as http:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover_jwks(http)
                answer = await http.get(self._jwks_uri)
                answer.raise_for_status()
                keys = answer.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.warning("the signing keys of %s could not be read: %s", self.config.issuer,
                        exc)
            if not self._keys:
                raise TokenProblem("the issuer's signing keys cannot be read now") from None
            return
        self._keys = {str(k.get("kid", i)): k for i, k in enumerate(keys)
                      if isinstance(k, dict)}
        self._parsed.clear()

    async def _discover_jwks(self, http: httpx.AsyncClient) -> str:
        base = self.config.issuer.rstrip("/")
        for url in (f"{base}/.well-known/oauth-authorization-server",
                    f"{base}/.well-known/openid-configuration"):
            answer = await http.get(url)
            if answer.status_code == 200:
                found = answer.json()
                if isinstance(found, dict) and found.get("issuer") == self.config.issuer \
                        and isinstance(found.get("jwks_uri"), str):
                    return str(found["jwks_uri"])
        raise httpx.HTTPError(f"no metadata of {self.config.issuer} names its jwks_uri")

    async def _introspect(self, token: str) -> dict[str, Any]:
        config = self.config
        assert config.introspection_endpoint is not None
        basic = base64.b64encode(
            f"{config.introspection_client_id}:{self._secret}".encode()).decode()
        try:
            async with self.http() as http:
                answer = await http.post(
                    config.introspection_endpoint, data={"token": token},
                    headers={"Authorization": f"Basic {basic}",
                             "Accept": "application/json"})
            answer.raise_for_status()
            claims = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("introspection at %s failed: %s", config.introspection_endpoint,
                        exc)
            raise TokenProblem("the token cannot be checked now") from None
        if not isinstance(claims, dict) or claims.get("active") is not True:
            raise TokenProblem("the token is not active")
        claims.setdefault("iss", config.issuer)
        return claims
