"""agentd's MCP door as an OAuth 2.0 protected resource: its settings (``[mcp.oauth]``)
and the decisions on a token's claims, with no I/O (the verifier that fetches keys
and asks introspection endpoints is :mod:`agentd.identity.resource`).

A token is accepted when its issuer is the configured one, its audience holds this
resource (RFC 8707 / RFC 9068: the token was asked for this server, not another),
it has not expired and is already valid (on the daemon's clock, with ``leeway_s``),
and it carries every required scope (else 403 ``insufficient_scope``). Who it then is
comes from the operator's rules (:class:`ClaimRule`), the first that matches its
claims: a role at most ``operator`` and a scope of agents and tenants. A token no rule
matches is refused (403): a valid token of the issuer is not by itself a right to
any agent.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentd.security.access import check_pattern, scope_access
from agentd.security.identity import Principal

__all__ = ["ALGORITHMS", "METADATA_PREFIX", "ClaimRule", "ResourceConfig", "TokenProblem",
           "check_claims", "metadata_path", "principal_for", "scopes_of"]

#: The signature algorithms a token may use unless ``algorithms`` says otherwise:
#: asymmetric only (an HMAC key is a secret the issuer would share with every
#: resource; ``none`` is no signature).
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA"]
#: Where a resource's metadata is (RFC 9728 3.1), before the resource's own path.
METADATA_PREFIX = "/.well-known/oauth-protected-resource"
_URL = re.compile(r"^https?://[^/\s?#]+[^\s#]*\Z")
_CLAIM = re.compile(r"^[A-Za-z0-9_.:-]{1,100}\Z")


class TokenProblem(Exception):
    """Why a token is refused: ``status`` 401 (``invalid_token``) or 403
    (``insufficient_scope``, or no rule maps it to anyone)."""

    def __init__(self, message: str, *, status: int = 401,
                 error: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error


class ClaimRule(BaseModel):
    """Who the tokens whose ``claim`` matches ``values`` are (one
    ``[[mcp.oauth.principals]]`` entry).

    Attributes:
        claim: The claim matched (``sub``, ``client_id``, ``email``...).
        values: fnmatch patterns its value must match (``*``: any).
        role: Their role: ``viewer``, ``member`` or ``operator`` (never ``admin``:
            the daemon-wide rights stay with the daemon's own tokens).
        agents: The agents they may use (patterns); left out: any, within ``tenants``.
        tenants: The tenants whose agents they may use (patterns); left out: any.
        tenant_claim: A claim naming the tenant: they are bound to the tenant it names
            (which must match ``tenants`` when that is given); a token without it is
            refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: str = "sub"
    values: list[str] = Field(min_length=1, max_length=1000)
    role: Literal["viewer", "member", "operator"] = "member"
    agents: list[str] | None = Field(default=None, max_length=1000)
    tenants: list[str] | None = Field(default=None, max_length=1000)
    tenant_claim: str | None = None

    @field_validator("claim", "tenant_claim")
    @classmethod
    def _claim(cls, value: str | None) -> str | None:
        if value is not None and not _CLAIM.match(value):
            raise ValueError(f"{value[:40]!r} is not a claim name")
        return value

    @field_validator("values", "agents", "tenants")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or ():
            check_pattern(pattern)
        return value


class ResourceConfig(BaseModel):
    """``[mcp.oauth]``: agentd's MCP endpoint as an OAuth 2.0 protected resource.

    Attributes:
        issuer: The authorization server whose tokens are taken (its ``iss``).
        resource: This resource's identifier, the audience a token must name; left
            out: the daemon's ``public_url`` and ``/mcp``.
        scopes: Scopes every token must carry (403 ``insufficient_scope`` otherwise).
        jwks_uri: Where the issuer's signing keys are; left out: its metadata's.
        introspection_endpoint: Ask the issuer about each token (RFC 7662) instead of
            reading it as a signed JWT (opaque tokens).
        introspection_client_id: The client the daemon asks as ...
        introspection_secret_env: ... and the environment variable holding its secret.
        algorithms: The JWS algorithms a token may be signed with (asymmetric only).
        leeway_s: Clock skew tolerated on ``exp`` and ``nbf``.
        principals: Who a token is, by its claims: the first rule that matches.
        resource_name: A name for people, in the resource's metadata.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    resource: str | None = None
    scopes: list[str] = Field(default_factory=list, max_length=50)
    jwks_uri: str | None = None
    introspection_endpoint: str | None = None
    introspection_client_id: str | None = Field(None, min_length=1, max_length=512)
    introspection_secret_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    algorithms: list[str] = Field(default_factory=lambda: list(ALGORITHMS), min_length=1)
    leeway_s: float = Field(30.0, ge=0, le=600)
    principals: list[ClaimRule] = Field(default_factory=list, max_length=1000)
    resource_name: str | None = Field(None, max_length=200)

    @field_validator("issuer", "resource", "jwks_uri", "introspection_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not _URL.match(value):
            raise ValueError(f"{value[:80]!r} is not an http(s) URL")
        return value

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ALGORITHMS]
        if bad:
            raise ValueError(f"algorithm(s) {', '.join(bad)} not allowed: a token is taken "
                             f"signed with an asymmetric key only ({', '.join(ALGORITHMS)}); "
                             "never 'none' or an HMAC (HS256...)")
        return value

    @model_validator(mode="after")
    def _introspection(self) -> ResourceConfig:
        if self.introspection_endpoint is not None and (
                self.introspection_client_id is None
                or self.introspection_secret_env is None):
            raise ValueError("introspection_endpoint needs introspection_client_id and "
                             "introspection_secret_env (the variable holding its secret)")
        return self


def metadata_path(resource: str) -> str:
    """The path of ``resource``'s metadata (RFC 9728 3.1: the well-known prefix, then
    the resource's own path)."""
    from urllib.parse import urlsplit

    return METADATA_PREFIX + urlsplit(resource).path.rstrip("/")


def _audience(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def check_claims(claims: Mapping[str, Any], *, issuer: str, resource: str, now: float,
                 leeway_s: float, needs_exp: bool = True) -> None:
    """TokenProblem unless ``claims`` are of ``issuer``, for ``resource``, and valid
    at ``now``."""
    if claims.get("iss") != issuer:
        raise TokenProblem(f"the token's issuer is {str(claims.get('iss'))[:200]!r}, not "
                           f"{issuer!r}")
    audience = _audience(claims.get("aud"))
    if not any(_same(a, resource) for a in audience):
        raise TokenProblem(f"the token is for {', '.join(audience)[:300] or 'no audience'}"
                           f", not this resource ({resource})")
    exp = claims.get("exp")
    if exp is None and needs_exp:
        raise TokenProblem("the token has no expiry (exp)")
    if exp is not None and (not isinstance(exp, int | float) or now > exp + leeway_s):
        raise TokenProblem("the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int | float) or now + leeway_s < nbf):
        raise TokenProblem("the token is not valid yet (nbf)")


def scopes_of(claims: Mapping[str, Any]) -> set[str]:
    """The scopes a token carries (``scope``: a string; ``scp``: a list or string)."""
    found: set[str] = set()
    for key in ("scope", "scp"):
        value = claims.get(key)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


def principal_for(claims: Mapping[str, Any], rules: list[ClaimRule]) -> Principal:
    """The principal of a token's claims: the first rule that matches; TokenProblem
    (403) when none does."""
    subject = str(claims.get("sub") or claims.get("client_id") or "?")[:200]
    for rule in rules:
        value = claims.get(rule.claim)
        if not isinstance(value, str) or not any(
                fnmatch.fnmatchcase(value, p) for p in rule.values):
            continue
        name = f"oauth:{subject}"
        tenants = rule.tenants
        tenant = None
        if rule.tenant_claim is not None:
            claimed = claims.get(rule.tenant_claim)
            if not isinstance(claimed, str) or not claimed or (
                    tenants is not None and not any(fnmatch.fnmatchcase(claimed, p)
                                                    for p in tenants)):
                raise TokenProblem(f"the token names no tenant this daemon takes "
                                   f"({rule.tenant_claim})", status=403, error="forbidden")
            tenant = claimed
            tenants = [_literal(claimed)]
        access = scope_access(name, agents=rule.agents, tenants=tenants)
        return Principal(name=name, role=rule.role, access=access, tenant=tenant,
                         source="oauth")
    raise TokenProblem("the token's holder is none of those this daemon lets in "
                       "([mcp.oauth] principals)", status=403, error="forbidden")


def _literal(text: str) -> str:
    """An fnmatch pattern matching ``text`` alone."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
