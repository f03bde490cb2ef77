"""OAuth for agents' MCP servers: a person's login, the tokens in the secrets store,
refreshed before they expire.

A server of an agent's ``settings.mcp`` with an ``oauth`` block
(:class:`agentd.tools.mcp_config.MCPOAuth`) takes OAuth 2.1 access tokens. A person
authorizes agentd once:

1. :meth:`MCPLogins.start` (``POST /v1/agents/{name}/mcp/{server}/login``, ``agentd
   mcp login``, the console's button) discovers the server's authorization server,
   registers agentd with it unless the block names a client, and returns the link: the
   authorization-code flow with PKCE, a ``state`` of 256 random bits whose SHA-256
   keys a row of the store (:mod:`agentd.store.oauth`) holding, sealed with the
   secrets key, what finishing needs, who started it, and until when
   (:attr:`MCPLogins.flow_ttl_s`, on the daemon's clock).
2. The person signs in and consents there; the server sends the browser to the
   daemon's own callback (``GET /v1/mcp/oauth/callback``: the redirect URI is the
   daemon's ``public_url``, never one a request or a setting names).
   :meth:`MCPLogins.take` deletes the row of that state as it reads it (a state is
   used once), :meth:`MCPLogins.complete` exchanges the code (with the PKCE verifier)
   and stores the tokens.

The tokens are a secret (sealed as every secret is), named ``_mcp_oauth.<hash of the
server's URL>``, of the agent or (``oauth.tokens = "tenant"``) of its tenant: never
answered by the API, never in a run's context, redacted out of everything a run
writes (:meth:`MCPLogins.parts`). A connection gets its access token from
:meth:`MCPLogins.token` (:class:`agentd.tools.mcp_oauth.TokenSource`): from memory for
at most :data:`CACHE_S`, else from the store, refreshed when less than
:attr:`MCPLogins.margin_s` of it is left or when the server refused it. One refresh
at a time per token: an asyncio lock on this node, a lock row of the store across
nodes (a rotated refresh token spent twice makes the authorization server revoke the
whole grant); the new tokens (the new refresh token with them) are written, and the
lock given back, in one transaction. Each login, authorization, hand-out of a token
to a connection, refresh and logout is an audit row.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets as _random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakSet

import orjson
from mcp.shared.auth import OAuthClientInformationFull
from mcp.shared.auth_utils import resource_url_from_server_url

from agentd.clock import SYSTEM, Clock
from agentd.errors import (
    AgentdError,
    BadRequest,
    InvalidInput,
    InvalidSettings,
    NotFound,
    ToolError,
    UpstreamError,
)
from agentd.secrets import _oauth_wire as wire
from agentd.secrets.service import RESERVED_PREFIX, Secrets
from agentd.security.redaction import SecretRedactor
from agentd.settings import AgentSettings
from agentd.store.audit import AuditEntry
from agentd.store.oauth import FlowRow, OAuthStore
from agentd.store.records import AgentRecord, iso
from agentd.tools.mcp_config import MCPServer
from agentd.tools.mcp_oauth import needs_authorization

__all__ = ["CACHE_S", "CALLBACK_PATH", "AgentTokens", "Flow", "MCPLogins", "token_name"]

log = logging.getLogger(__name__)

#: Where the authorization server sends the person back (the daemon's own route).
CALLBACK_PATH = "/v1/mcp/oauth/callback"
#: Seconds a token read from the store is used from memory before it is read again
#: (a logout or refresh on another node is seen within this).
CACHE_S = 60.0
_WAIT_S = 0.2


def token_name(url: str) -> str:
    """The secret an MCP server's tokens are kept under: its canonical URL's hash
    (two agents' entries of one URL share a tenant's tokens; another URL, even under
    the same entry name, has none)."""
    digest = hashlib.sha256(resource_url_from_server_url(url).encode()).hexdigest()
    return f"{RESERVED_PREFIX}{digest[:32]}"


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _resource(agent: str, server: str) -> str:
    return f"agent:{agent}/mcp:{server}"


@dataclass(frozen=True, kw_only=True)
class _Key:
    tenant: str
    agent: str  # '' for the tenant's tokens
    name: str


@dataclass(kw_only=True)
class _Kept:
    """The tokens of one server (the secret's value, as JSON)."""

    server: str
    url: str
    resource: str
    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None
    client: dict[str, Any]
    client_secret_ref: str | None
    access_token: str
    refresh_token: str | None
    expires_at: float | None
    scope: str | None
    obtained_at: float
    wanted_scope: str | None = None

    def dumps(self) -> str:
        return orjson.dumps({k: getattr(self, k) for k in self.__dataclass_fields__}).decode()

    @classmethod
    def loads(cls, text: str) -> _Kept:
        data = orjson.loads(text)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True, kw_only=True)
class Flow:
    """A login taken by its callback: whose it was, and what finishing it needs."""

    tenant: str
    agent: str
    server: str
    principal: dict[str, Any]
    data: dict[str, Any]
    created_at: float

    @property
    def tokens(self) -> str:
        return str(self.data.get("tokens", "agent"))


@dataclass
class _Cached:
    kept: _Kept
    read_at: float


class MCPLogins:
    """The daemon's OAuth logins and tokens for agents' MCP servers (one per runtime).

    Args:
        redirect_uri: The daemon's callback (its ``public_url`` + :data:`CALLBACK_PATH`).
        node_id: This node's name in token locks.
        http: Makes the client the exchanges go through (tests give one of their own).
    """

    def __init__(self, secrets: Secrets, store: OAuthStore, *, redirect_uri: str,
                 node_id: str, clock: Clock = SYSTEM,
                 http: Callable[[], Any] = wire.client) -> None:
        self.secrets = secrets
        self.store = store
        self.redirect_uri = redirect_uri
        self.node_id = node_id
        self.clock = clock
        self.http = http
        #: Seconds a login may take from its link to its callback.
        self.flow_ttl_s = 600.0
        #: A token with less than this many seconds left is refreshed before use.
        self.margin_s = 60.0
        #: How long a refresh may hold its token's lock (another node takes it after).
        self.lock_ttl_s = 30.0
        self._cache: dict[_Key, _Cached] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}
        #: The redactors of the runs under way, by tenant: told every token handed out.
        self._redactors: dict[str, WeakSet[SecretRedactor]] = {}
        secrets.expand = self.parts

    # -- what a run must never write ---------------------------------------------------

    @staticmethod
    def parts(name: str, value: str) -> dict[str, str]:
        """The token secret ``name``'s parts a run must never write, by a name each."""
        try:
            kept = _Kept.loads(value)
        except (orjson.JSONDecodeError, TypeError):
            return {}
        found = {f"{name}.access": kept.access_token}
        if kept.refresh_token:
            found[f"{name}.refresh"] = kept.refresh_token
        secret = kept.client.get("client_secret")
        if isinstance(secret, str) and secret:
            found[f"{name}.client"] = secret
        return found

    def _tell(self, key: _Key, kept: _Kept) -> None:
        parts = self.parts(key.name, kept.dumps())
        self.secrets.learn(parts.values())
        for redactor in list(self._redactors.get(key.tenant, ())):
            redactor.add(parts)

    # -- keys, rows --------------------------------------------------------------------

    def _key(self, tenant: str, agent: str, server: MCPServer) -> _Key:
        assert server.url is not None and server.oauth is not None
        return _Key(tenant=tenant, agent="" if server.oauth.tokens == "tenant" else agent,
                    name=token_name(server.url))

    async def _read(self, key: _Key) -> _Kept | None:
        value = await self.secrets.open_row(tenant=key.tenant, agent=key.agent,
                                            name=key.name)
        if value is None:
            return None
        try:
            return _Kept.loads(value)
        except (orjson.JSONDecodeError, TypeError):
            log.warning("the tokens %s of tenant %s cannot be read; ignored", key.name,
                        key.tenant)
            return None

    async def _write(self, key: _Key, kept: _Kept, *, holder: str | None,
                     audit: list[AuditEntry | None]) -> None:
        cipher = await self.secrets.cipher()
        sealed = cipher.seal(kept.dumps(), tenant=key.tenant, agent=key.agent,
                             name=key.name)
        await self.store.refreshed(tenant=key.tenant, agent=key.agent, name=key.name,
                                   value=sealed, key_id=cipher.key_id,
                                   now=self.clock.time(), holder=holder, audit=audit)
        self._cache[key] = _Cached(kept, self.clock.monotonic())
        self.secrets.forget_values()
        self._tell(key, kept)

    def _audit(self, *, actor: str | None, role: str | None, action: str, resource: str,
               outcome: str = "allowed", reason: str = "",
               details: dict[str, Any] | None = None) -> AuditEntry:
        return AuditEntry(actor=actor, role=role, action=action, resource=resource,
                          outcome=outcome, reason=reason, details=details or {},
                          at=self.clock.time())

    async def _client_secret(self, ref: str | None, *, tenant: str, agent: str,
                             server: str, actor: str) -> str | None:
        if ref is None:
            return None
        name = ref.removeprefix("secret:")
        return await self.secrets.resolve(name, tenant=tenant, agent=agent,
                                          use=f"mcp:{server} oauth client_secret",
                                          actor=actor)

    # -- an agent's servers ------------------------------------------------------------

    @staticmethod
    def servers(agent: AgentRecord) -> tuple[str, list[MCPServer]]:
        """The tenant of ``agent`` and its MCP servers, as its settings are now."""
        try:
            settings = AgentSettings.model_validate(agent.settings)
        except ValueError as exc:
            raise InvalidSettings(f"agent {agent.name!r} has settings this daemon cannot "
                                  f"read: {str(exc)[:300]}") from None
        return settings.tenant, list(settings.mcp)

    def server(self, agent: AgentRecord, name: str) -> tuple[str, MCPServer]:
        """The tenant of ``agent`` and its MCP server ``name`` (404
        ``mcp_server_not_found`` when it has none of that name)."""
        tenant, servers = self.servers(agent)
        for server in servers:
            if server.name == name:
                return tenant, server
        raise NotFound(f"agent {agent.name!r} has no MCP server {name!r} (its servers: "
                       f"{', '.join(s.name for s in servers) or 'none'})",
                       code="mcp_server_not_found")

    # -- a login -----------------------------------------------------------------------

    async def start(self, *, tenant: str, agent: str, server: MCPServer,
                    principal: Mapping[str, Any]) -> dict[str, Any]:
        """Begin a login for ``agent``'s ``server`` on behalf of ``principal`` (name,
        role, source, tenant: checked again at the callback): the link to open."""
        oauth = server.oauth
        if oauth is None or server.url is None:
            raise InvalidInput(f"MCP server {server.name!r} of agent {agent!r} has no "
                               "oauth block: it takes no OAuth tokens",
                               code="mcp_no_oauth")
        actor = str(principal.get("name") or "")
        try:
            secret = await self._client_secret(oauth.client_secret, tenant=tenant,
                                               agent=agent, server=server.name,
                                               actor=actor)
        except AgentdError as exc:
            raise InvalidInput(f"oauth.client_secret of MCP server {server.name!r}: "
                               f"{exc.message}", code="secret_not_found") from None
        key = self._key(tenant, agent, server)
        kept = await self._read(key)
        async with self.http() as http:
            found = await wire.discover(http, server.url, issuer=oauth.authorization_server)
            scope = wire.scope_for(found, oauth.scopes, kept.wanted_scope if kept else None)
            if oauth.client_id is not None:
                client = wire.client_for(found, client_id=oauth.client_id,
                                         client_secret=secret,
                                         redirect_uri=self.redirect_uri)
            elif (kept is not None and kept.client_secret_ref is None
                  and kept.issuer == found.issuer and kept.client.get("client_id")):
                client = OAuthClientInformationFull.model_validate(kept.client)
            else:
                client = await wire.register(http, found, redirect_uri=self.redirect_uri,
                                             scope=scope, name=f"agentd ({agent})")
        pkce = wire.new_pkce()
        state = _random.token_urlsafe(32)
        now = self.clock.time()
        data = {"server_url": server.url, "tokens": oauth.tokens, "scope": scope,
                "found": found.to_json(), "verifier": pkce.code_verifier,
                "redirect_uri": self.redirect_uri,
                "client": client.model_dump(mode="json", exclude_none=True)
                | ({"client_secret": None} if oauth.client_secret else {}),
                "client_secret_ref": oauth.client_secret}
        cipher = await self.secrets.cipher()
        state_hash = _hash(state)
        sealed = cipher.seal(orjson.dumps(data).decode(), tenant=tenant, agent=agent,
                             name=f"_mcp_oauth.flow.{state_hash}")
        role = principal.get("role")
        await self.store.add_flow(FlowRow(
            state_hash=state_hash, tenant=tenant, agent=agent, server=server.name,
            principal=orjson.dumps(dict(principal)).decode(), data=sealed,
            key_id=cipher.key_id, created_at=now, expires_at=now + self.flow_ttl_s),
            audit=self._audit(actor=actor or None, role=str(role) if role else None,
                              action="mcp_oauth.login", resource=_resource(agent, server.name),
                              details={"issuer": found.issuer, "scope": scope,
                                       "tokens": oauth.tokens}))
        url = wire.authorization_url(found, client, redirect_uri=self.redirect_uri,
                                     scope=scope, state=state, challenge=pkce.code_challenge)
        return {"agent": agent, "server": server.name, "authorization_url": url,
                "issuer": found.issuer, "scope": scope, "tokens": oauth.tokens,
                "redirect_uri": self.redirect_uri, "expires_at": iso(now + self.flow_ttl_s)}

    async def take(self, state: str) -> Flow:
        """The login ``state`` belongs to, used up (a second callback with it finds
        nothing); BadRequest ``oauth_state_invalid`` for a state never given, used
        already, or expired."""
        if not state or len(state) > 512:
            raise BadRequest("the callback carries no valid state: open the link agentd "
                             "mcp login printed", code="oauth_state_invalid")
        row = await self.store.take_flow(_hash(state))
        again = "start again with agentd mcp login (or the agent's page in the console)"
        if row is None:
            raise BadRequest(f"this authorization is unknown or was finished already: "
                             f"{again}", code="oauth_state_invalid")
        if row.expires_at < self.clock.time():
            raise BadRequest(f"this authorization expired (a login has "
                             f"{self.flow_ttl_s:g} s): {again}", code="oauth_state_expired")
        cipher = await self.secrets.cipher()
        try:
            data = orjson.loads(cipher.open(row.data, key_id=row.key_id, tenant=row.tenant,
                                            agent=row.agent,
                                            name=f"_mcp_oauth.flow.{row.state_hash}"))
        except Exception:
            raise BadRequest(f"this authorization cannot be read with this daemon's "
                             f"secrets key: {again}", code="oauth_state_invalid") from None
        return Flow(tenant=row.tenant, agent=row.agent, server=row.server,
                    principal=orjson.loads(row.principal), data=data,
                    created_at=row.created_at)

    async def refuse(self, flow: Flow, *, reason: str) -> None:
        """Audit a callback refused after its state was taken (what for, and why)."""
        await self.store.audit(self._audit(
            actor=flow.principal.get("name"), role=flow.principal.get("role"),
            action="mcp_oauth.authorized", resource=_resource(flow.agent, flow.server),
            outcome="denied", reason=reason[:500]))

    async def complete(self, flow: Flow, server: MCPServer, *, code: str | None,
                       iss: str | None, error: str | None = None,
                       error_description: str | None = None) -> dict[str, Any]:
        """Finish ``flow`` with its authorization response: the tokens stored for
        ``server`` (the agent's entry as it is now, of the same URL)."""
        data = flow.data
        actor = flow.principal.get("name")
        if error:
            reason = f"the authorization server answered {error[:100]}" + (
                f": {error_description[:300]}" if error_description else "")
            await self.refuse(flow, reason=reason)
            raise BadRequest(f"{reason}; nothing was stored", code="oauth_denied")
        if not code:
            await self.refuse(flow, reason="no code")
            raise BadRequest("the callback carries no code: nothing was stored",
                             code="oauth_state_invalid")
        found = data["found"]
        wire.validate_iss(iss, found.get("metadata"))
        client_info = dict(data["client"])
        secret = await self._client_secret(data.get("client_secret_ref"), tenant=flow.tenant,
                                           agent=flow.agent, server=flow.server,
                                           actor=str(actor or ""))
        if secret is not None:
            client_info["client_secret"] = secret
        client = OAuthClientInformationFull.model_validate(client_info)
        try:
            async with self.http() as http:
                token = await wire.exchange(
                    http, token_endpoint=found["token_endpoint"], resource=found["resource"],
                    client=client, code=code, verifier=data["verifier"],
                    redirect_uri=data["redirect_uri"])
        except wire.Refused as exc:
            await self.refuse(flow, reason=f"the code was refused: {exc}")
            raise BadRequest(f"the authorization server refused the code ({exc}): start "
                             "again with agentd mcp login", code="oauth_denied") from None
        now = self.clock.time()
        kept = _Kept(
            server=flow.server, url=data["server_url"], resource=found["resource"],
            issuer=found["issuer"], token_endpoint=found["token_endpoint"],
            revocation_endpoint=found.get("revocation_endpoint"),
            client=client.model_dump(mode="json", exclude_none=True)
            | ({"client_secret": None} if data.get("client_secret_ref") else {}),
            client_secret_ref=data.get("client_secret_ref"),
            access_token=token.access_token, refresh_token=token.refresh_token,
            expires_at=None if token.expires_in is None else now + int(token.expires_in),
            scope=token.scope or data.get("scope"), obtained_at=now)
        key = self._key(flow.tenant, flow.agent, server)
        await self._write(key, kept, holder=None, audit=[self._audit(
            actor=actor, role=flow.principal.get("role"), action="mcp_oauth.authorized",
            resource=_resource(flow.agent, flow.server),
            details={"issuer": kept.issuer, "scope": kept.scope, "tokens": flow.tokens,
                     "refreshable": kept.refresh_token is not None})])
        return {"agent": flow.agent, "server": flow.server, "scope": kept.scope,
                "tokens": flow.tokens, "expires_at": None if kept.expires_at is None
                else iso(kept.expires_at)}

    # -- what an operator sees, and logging out -----------------------------------------

    async def status(self, *, tenant: str, agent: str, servers: list[MCPServer]
                     ) -> list[dict[str, Any]]:
        """Per server with ``oauth``: whether agentd holds its tokens (never a value),
        their scope and expiry, and whether a login is under way."""
        now = self.clock.time()
        pending = {f.server for f in await self.store.pending(tenant=tenant, agent=agent,
                                                              now=now)}
        out = []
        for server in servers:
            if server.oauth is None or server.url is None:
                continue
            kept = await self._read(self._key(tenant, agent, server))
            out.append({
                "server": server.name, "url": server.url, "tokens": server.oauth.tokens,
                "authorized": kept is not None, "login_pending": server.name in pending,
                "issuer": kept.issuer if kept else None,
                "scope": kept.scope if kept else None,
                "expires_at": iso(kept.expires_at) if kept and kept.expires_at else None,
                "refreshable": bool(kept and kept.refresh_token),
                "authorized_at": iso(kept.obtained_at) if kept else None})
        return out

    async def logout(self, *, tenant: str, agent: str, server: MCPServer,
                     actor: str | None, role: str | None) -> bool:
        """Forget ``server``'s tokens (revoked at the authorization server first, when
        it can) and its logins under way; whether there were tokens."""
        key = self._key(tenant, agent, server)
        async with self._lock(key):
            kept = await self._read(key)
            if kept is not None and kept.revocation_endpoint:
                await self._revoke(kept, tenant=tenant, agent=agent)
            await self.store.drop_flows(tenant=tenant, agent=agent, server=server.name)
            gone = await self.store.forget(
                tenant=key.tenant, agent=key.agent, name=key.name,
                audit=self._audit(actor=actor, role=role, action="mcp_oauth.logout",
                                  resource=_resource(agent, server.name),
                                  details={"tokens": "tenant" if not key.agent else "agent"}))
            self._cache.pop(key, None)
            self.secrets.forget_values()
        return gone

    async def _revoke(self, kept: _Kept, *, tenant: str, agent: str) -> None:
        assert kept.revocation_endpoint is not None
        info = dict(kept.client)
        try:
            secret = await self._client_secret(kept.client_secret_ref, tenant=tenant,
                                               agent=agent, server=kept.server,
                                               actor=f"agent:{agent}")
        except AgentdError:
            secret = None
        if secret is not None:
            info["client_secret"] = secret
        client = OAuthClientInformationFull.model_validate(info)
        async with self.http() as http:
            for token, hint in ((kept.refresh_token, "refresh_token"),
                                (kept.access_token, "access_token")):
                if token:
                    await wire.revoke(http, endpoint=kept.revocation_endpoint,
                                      client=client, token=token, hint=hint,
                                      redirect_uri=self.redirect_uri)

    # -- tokens for connections --------------------------------------------------------

    def source(self, tenant: str, agent: str, redactor: SecretRedactor | None = None
               ) -> AgentTokens:
        """The token source of one run of ``agent`` (its redactor learns every token
        handed out while it runs)."""
        if redactor is not None:
            self._redactors.setdefault(tenant, WeakSet()).add(redactor)
        return AgentTokens(self, tenant=tenant, agent=agent)

    def _lock(self, key: _Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 4096:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _usable(self, kept: _Kept) -> bool:
        return kept.expires_at is None or kept.expires_at - self.margin_s > self.clock.time()

    async def token(self, *, tenant: str, agent: str, server: MCPServer,
                    rejected: str | None = None, current: str | None = None) -> str:
        """An access token for ``agent``'s ``server`` (see the module's docstring);
        ``current``: the one the caller holds (handing out another is a use, audited)."""
        key = self._key(tenant, agent, server)
        cached = self._cache.get(key)
        if (cached is not None and rejected is None and self._usable(cached.kept)
                and self.clock.monotonic() - cached.read_at < CACHE_S):
            if cached.kept.access_token != current:
                await self._used(key, agent, server)
            return cached.kept.access_token
        async with self._lock(key):
            kept = await self._read(key)
            if kept is None:
                self._cache.pop(key, None)
                raise needs_authorization(agent, server.name, "agentd holds no token for it: "
                                          "never authorized, logged out, or refused")
            if not self._usable(kept) or (rejected is not None
                                          and kept.access_token == rejected):
                kept = await self._refresh(key, kept, agent=agent, server=server)
            else:
                self._cache[key] = _Cached(kept, self.clock.monotonic())
                self._tell(key, kept)
            if kept.access_token != current:
                await self._used(key, agent, server)
            return kept.access_token

    async def _used(self, key: _Key, agent: str, server: MCPServer) -> None:
        await self.store.audit(self._audit(
            actor=f"agent:{agent}", role=None, action="mcp_oauth.use",
            resource=_resource(agent, server.name),
            details={"tokens": "tenant" if not key.agent else "agent"}))

    async def _refresh(self, key: _Key, kept: _Kept, *, agent: str, server: MCPServer
                       ) -> _Kept:
        holder = f"{self.node_id}:{uuid.uuid4().hex}"
        waited = 0.0
        while not await self.store.lock(tenant=key.tenant, agent=key.agent, name=key.name,
                                        holder=holder, now=self.clock.time(),
                                        ttl_s=self.lock_ttl_s):
            if waited > self.lock_ttl_s + 5:
                raise ToolError(f"MCP server {server.name!r}: another node has been "
                                "refreshing its token for too long; try again",
                                code="mcp_unavailable", retryable=True)
            await self.clock.sleep(_WAIT_S)
            waited += _WAIT_S
        try:
            now_kept = await self._read(key)
            if now_kept is None:
                raise needs_authorization(agent, server.name, "its tokens were removed")
            if now_kept.access_token != kept.access_token and self._usable(now_kept):
                self._cache[key] = _Cached(now_kept, self.clock.monotonic())
                self._tell(key, now_kept)
                return now_kept  # (another node refreshed it meanwhile)
            return await self._refreshed(key, now_kept, holder, agent=agent, server=server)
        finally:
            await self.store.unlock(tenant=key.tenant, agent=key.agent, name=key.name,
                                    holder=holder)

    async def _refreshed(self, key: _Key, kept: _Kept, holder: str, *, agent: str,
                         server: MCPServer) -> _Kept:
        if not kept.refresh_token:
            raise needs_authorization(agent, server.name,
                                      "its token expired and cannot be refreshed")
        info = dict(kept.client)
        secret = await self._client_secret(kept.client_secret_ref, tenant=key.tenant,
                                           agent=agent, server=server.name,
                                           actor=f"agent:{agent}")
        if secret is not None:
            info["client_secret"] = secret
        resource = _resource(agent, server.name)
        try:
            async with self.http() as http:
                token = await wire.refresh(
                    http, token_endpoint=kept.token_endpoint, resource=kept.resource,
                    client=OAuthClientInformationFull.model_validate(info),
                    refresh_token=kept.refresh_token, redirect_uri=self.redirect_uri)
        except wire.Refused as exc:
            # The grant is gone (revoked, expired, or its refresh token spent): the
            # tokens are worth nothing, and a person must sign in again.
            await self.store.forget(tenant=key.tenant, agent=key.agent, name=key.name,
                                    audit=self._audit(
                                        actor=f"agent:{agent}", role=None,
                                        action="mcp_oauth.refresh", resource=resource,
                                        outcome="failed", reason=str(exc)[:500]))
            self._cache.pop(key, None)
            raise needs_authorization(agent, server.name,
                                      f"its authorization server refused to refresh its "
                                      f"token: {exc.error}") from None
        except UpstreamError as exc:
            raise ToolError(f"MCP server {server.name!r}: its token could not be "
                            f"refreshed: {exc.message}", code="mcp_unavailable",
                            retryable=True) from None
        now = self.clock.time()
        fresh = _Kept(**{**kept.__dict__,
                         "access_token": token.access_token,
                         "refresh_token": token.refresh_token or kept.refresh_token,
                         "expires_at": None if token.expires_in is None
                         else now + int(token.expires_in),
                         "scope": token.scope or kept.scope, "obtained_at": now})
        await self._write(key, fresh, holder=holder, audit=[self._audit(
            actor=f"agent:{agent}", role=None, action="mcp_oauth.refresh", resource=resource,
            details={"rotated": token.refresh_token not in (None, kept.refresh_token),
                     "tokens": "tenant" if not key.agent else "agent"})])
        return fresh

    async def wants_scope(self, *, tenant: str, agent: str, server: MCPServer,
                          scope: str | None) -> None:
        """Remember a scope a call was refused for want of: the next login asks for
        it too."""
        if not scope:
            return
        key = self._key(tenant, agent, server)
        async with self._lock(key):
            kept = await self._read(key)
            if kept is None or kept.wanted_scope == scope:
                return
            kept.wanted_scope = scope
            await self._write(key, kept, holder=None, audit=[])


class AgentTokens:
    """One agent's MCP access tokens (:class:`agentd.tools.mcp_oauth.TokenSource`)."""

    def __init__(self, logins: MCPLogins, *, tenant: str, agent: str) -> None:
        self.logins = logins
        self.tenant = tenant
        self.agent = agent

    async def access_token(self, server: MCPServer, *, rejected: str | None = None,
                           current: str | None = None) -> str:
        return await self.logins.token(tenant=self.tenant, agent=self.agent, server=server,
                                       rejected=rejected, current=current)

    async def wants_scope(self, server: MCPServer, scope: str | None) -> None:
        await self.logins.wants_scope(tenant=self.tenant, agent=self.agent, server=server,
                                      scope=scope)
