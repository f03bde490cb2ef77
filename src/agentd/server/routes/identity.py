"""/v1/tokens, /v1/tenants and /v1/audit: who may do what (``agentd.identity``).

A token is made with a name, a role, optionally a tenant or agent patterns and an
expiry; its text is in the answer that made (or rotated) it and nowhere else. Tenants
carry quotas; only admins make, change or delete them, and read the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from agentd.assembly import Runtime
from agentd.config import TenantQuotas
from agentd.doors.access import require_right
from agentd.doors.http import model_response
from agentd.errors import InvalidInput
from agentd.server.routes._deps import ERRORS, runtime_of
from agentd.store.records import iso

__all__ = ["audit_router", "tenant_router", "token_router"]

token_router = APIRouter(prefix="/v1/tokens", tags=["identity"])
tenant_router = APIRouter(prefix="/v1/tenants", tags=["identity"])
audit_router = APIRouter(prefix="/v1/audit", tags=["identity"])

Role = Literal["viewer", "member", "operator", "admin"]
TokenName = Annotated[str, Path(min_length=1, max_length=64,
                                pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
TenantName = Annotated[str, Path(min_length=1, max_length=64,
                                 pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Pattern = Annotated[str, Field(min_length=1, max_length=256)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenIn(_In):
    name: str = Field(min_length=1, max_length=64,
                      description="How the token is named in lists, audit rows and "
                                  "approvals' `by` (letters, digits, `_.@-`).")
    role: Role = Field(description="`viewer`, `member`, `operator` or `admin` "
                                   "(docs/security.md, \"Roles\"); at most the maker's.")
    tenant: str | None = Field(default=None, min_length=1, max_length=64,
                               description="The tenant it is bound to: it uses that "
                                           "tenant's agents only, and its new agents go "
                                           "there, named `<tenant>.<name>`.")
    agents: list[Pattern] | None = Field(default=None, max_length=1000,
                                         description="Agent name patterns (`support-*`) "
                                                     "it may use (with a tenant: both).")
    expires_at: datetime | None = Field(default=None, description="When it stops working "
                                                                  "(ISO 8601 with a time "
                                                                  "zone).")

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2027-01-01T00:00:00Z)")
        return value


class TokenOut(BaseModel):
    name: str
    role: Role
    source: Literal["config", "api"] = Field(description="`config`: agentd.toml, the "
                                                         "environment or the home's token; "
                                                         "`api`: made here.")
    tenant: str | None = None
    agents: list[str] | None = None
    scope: str | None = Field(default=None, description="A configured token's scope, "
                                                        "as words.")
    prefix: str | None = Field(default=None, description="The start of a named token's "
                                                         "text (`agd_<id>`): enough to "
                                                         "tell which one a client holds.")
    expires_at: str | None = None
    expired: bool | None = None
    created_at: str | None = None
    created_by: str | None = None
    rotated_at: str | None = None
    token: str | None = Field(default=None, description="The token itself: only in the "
                                                        "answer that made or rotated it.")


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TenantIn(_In):
    name: str = Field(min_length=1, max_length=64)
    quotas: TenantQuotas = Field(default_factory=TenantQuotas)
    description: str = Field(default="", max_length=500)


class TenantPatch(_In):
    quotas: TenantQuotas | None = Field(default=None, description="Quotas to change "
                                                                  "(null: no limit).")
    description: str | None = Field(default=None, max_length=500)


class TenantOut(BaseModel):
    name: str
    source: Literal["config", "api", "implicit"] = Field(
        description="`config`: agentd.toml's (changed there); `api`: made here; "
                    "`implicit`: a name agents use, with no quotas.")
    quotas: dict[str, float]
    description: str
    created_at: str | None = None
    updated_at: str | None = None
    usage: dict[str, int] | None = Field(default=None, description="What it holds of "
                                                                   "each counted quota.")


class TenantList(BaseModel):
    tenants: list[TenantOut]


class AuditRowOut(BaseModel):
    seq: int
    at: str
    actor: str | None
    role: str | None
    action: str
    resource: str
    outcome: str
    reason: str
    details: dict[str, Any]
    hash: str


class AuditPage(BaseModel):
    rows: list[AuditRowOut]
    next_after: int | None = Field(description="The `after` of the next page (null: "
                                                "none yet).")


class AuditVerifyOut(BaseModel):
    ok: bool
    rows: int
    head: dict[str, Any]
    problem: dict[str, Any] | None


def _identity(request: Request) -> Any:
    runtime: Runtime = runtime_of(request)
    return runtime.identity


def _token_out(described: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    out = dict(described)
    for key in ("expires_at", "created_at", "rotated_at"):
        if out.get(key) is not None:
            out[key] = iso(out[key])
    if text is not None:
        out["token"] = text
    return out


# -- tokens -----------------------------------------------------------------------------


@token_router.post("", status_code=201, response_model=TokenOut,
                   responses=ERRORS(403, 404, 409, 422))
async def create_token(body: TokenIn, request: Request) -> Response:
    """Make a named token. Its text is in this answer only (store it now); the daemon
    keeps a hash. A token makes none above its own role nor beyond its own scope."""
    who = require_right(request, "use", "making a token")
    identity = _identity(request)
    described, text = await identity.tokens.create(
        who, name=body.name, role=body.role, tenant=body.tenant, agents=body.agents,
        expires_at=None if body.expires_at is None else body.expires_at.timestamp(),
        audit=identity.audit)
    return model_response(TokenOut, _token_out(described, text), 201)


@token_router.get("", response_model=TokenList, responses=ERRORS(403))
async def list_tokens(request: Request) -> Response:
    """The tokens the caller may see: an admin, every one (the configuration's too);
    others, themselves and the tokens they made or could revoke. Never their text."""
    who = require_right(request, "read", "listing tokens")
    tokens = _identity(request).tokens.listing(who)
    return model_response(TokenList, {"tokens": [_token_out(t) for t in tokens]})


@token_router.post("/{name}/rotate", response_model=TokenOut, responses=ERRORS(403, 404, 409))
async def rotate_token(name: TokenName, request: Request) -> Response:
    """A new text for the token (same name, role and scope); the old text stops
    working at once (on other nodes within a second)."""
    who = require_right(request, "read", "rotating a token")
    identity = _identity(request)
    described, text = await identity.tokens.rotate(who, name, identity.audit)
    return model_response(TokenOut, _token_out(described, text))


@token_router.delete("/{name}", status_code=204, responses=ERRORS(403, 404, 409))
async def revoke_token(name: TokenName, request: Request) -> Response:
    """Revoke a named token (at once here, within a second on other nodes)."""
    who = require_right(request, "read", "revoking a token")
    identity = _identity(request)
    await identity.tokens.revoke(who, name, identity.audit)
    return Response(status_code=204)


# -- tenants ----------------------------------------------------------------------------


@tenant_router.post("", status_code=201, response_model=TenantOut,
                    responses=ERRORS(403, 409, 422))
async def create_tenant(body: TenantIn, request: Request) -> Response:
    """Make a tenant with quotas (admins)."""
    who = require_right(request, "manage_tenants", "making a tenant")
    identity = _identity(request)
    made = await identity.tenants.create(who, body.name, body.quotas, body.description,
                                         identity.audit)
    return model_response(TenantOut, _tenant_out(made), 201)


@tenant_router.get("", response_model=TenantList, responses=ERRORS(403))
async def list_tenants(request: Request) -> Response:
    """The tenants: every one for an unscoped token, else those of its scope. Names
    agents give that nobody made are tenants too (``source: implicit``, no quotas)."""
    who = require_right(request, "read", "listing tenants")
    tenants = await _identity(request).tenants.listing(who)
    return model_response(TenantList, {"tenants": [_tenant_out(t) for t in tenants]})


@tenant_router.get("/{name}", response_model=TenantOut, responses=ERRORS(404))
async def get_tenant(name: TenantName, request: Request) -> Response:
    """A tenant, with what it holds of each counted quota."""
    who = require_right(request, "read", "reading a tenant")
    return model_response(TenantOut, _tenant_out(await _identity(request).tenants.get(
        who, name)))


@tenant_router.patch("/{name}", response_model=TenantOut, responses=ERRORS(403, 404, 409))
async def update_tenant(name: TenantName, body: TenantPatch, request: Request) -> Response:
    """Change a tenant's quotas (each key given; null lifts it) or description (admins).
    A quota lowered below what the tenant holds refuses new writes; nothing is
    removed."""
    who = require_right(request, "manage_tenants", "changing a tenant")
    identity = _identity(request)
    changed = await identity.tenants.update(who, name, body.quotas, body.description,
                                            identity.audit)
    return model_response(TenantOut, _tenant_out(changed))


@tenant_router.delete("/{name}", status_code=204, responses=ERRORS(403, 404, 409))
async def delete_tenant(name: TenantName, request: Request) -> Response:
    """Delete a tenant that has no agents and no tokens left (admins)."""
    who = require_right(request, "manage_tenants", "deleting a tenant")
    identity = _identity(request)
    await identity.tenants.delete(who, name, identity.audit)
    return Response(status_code=204)


def _tenant_out(tenant: dict[str, Any]) -> dict[str, Any]:
    out = dict(tenant)
    for key in ("created_at", "updated_at"):
        if out.get(key) is not None:
            out[key] = iso(out[key])
    return out


# -- the audit log ----------------------------------------------------------------------


@audit_router.get("", response_model=AuditPage, responses=ERRORS(403, 422))
async def read_audit(
    request: Request,
    after: int = Query(default=0, ge=0, le=2**62, description="Rows after this seq."),
    limit: int = Query(default=100, ge=1, le=1000),
    actor: str | None = Query(default=None, max_length=64,
                              description="Only this token's rows (its name)."),
    action: str | None = Query(default=None, max_length=64,
                               description="Only this action (`token.create`), or a "
                                           "family (`token.*`)."),
    outcome: Literal["allowed", "denied"] | None = Query(default=None),
    resource: str | None = Query(default=None, max_length=500),
) -> Response:
    """The audit log, oldest first (admins)."""
    require_right(request, "read_audit", "reading the audit log")
    rows = await _identity(request).audit.page(after=after, limit=limit, actor=actor,
                                               action=action, outcome=outcome,
                                               resource=resource)
    return model_response(AuditPage, {
        "rows": [{**r.to_api(), "at": iso(r.at)} for r in rows],
        "next_after": rows[-1].seq if len(rows) == limit else None})


@audit_router.get("/verify", response_model=AuditVerifyOut, responses=ERRORS(403, 422))
async def verify_audit(
    request: Request,
    head: str | None = Query(default=None, max_length=100, pattern=r"^\d+:[0-9a-f]{64}$",
                             description="`SEQ:HASH` of a head noted earlier: the log "
                                         "must still hold it (rows cut off its end "
                                         "are caught)."),
) -> Response:
    """Walk the hash chain: ``ok`` false names the first row edited or removed."""
    require_right(request, "read_audit", "verifying the audit log")
    noted = None
    if head is not None:
        seq, _, digest = head.partition(":")
        if int(seq) < 1:
            raise InvalidInput("head's seq starts at 1", field="query.head")
        noted = (int(seq), digest)
    return model_response(AuditVerifyOut, await _identity(request).audit.verify(noted))

