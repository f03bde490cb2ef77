"""The OAuth exchanges of an MCP client, on the official ``mcp`` SDK's own pieces.

The SDK's ``OAuthClientProvider`` runs a whole login inside one connection, waiting in
that process for a person to come back. A daemon cannot: the person comes back to a
callback on whichever node, perhaps after a restart, and the connection that needs the
token belongs to a run. So the flow is cut where a person acts (docs/design-notes.md,
"OAuth for MCP servers"), and each step is built from what the SDK exports for it:
discovery (RFC 9728 protected resource metadata in SEP-985 order, RFC 8414 / OIDC
authorization server metadata and its issuer check), scope selection (the server's
challenge, then its metadata, ``offline_access`` when offered), dynamic client
registration (RFC 7591) and its usability check, PKCE (S256), client authentication
at the token endpoint (``client_secret_basic`` / ``_post`` / ``none``), the RFC 9207
``iss`` check, token responses. Only the requests' sending is here, on an
``httpx2`` client that follows no redirect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx2
from mcp.client.auth import OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.client.auth.oauth2 import OAuthContext, PKCEParameters, check_registration_usable
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_client_registration_request,
    create_oauth_metadata_request,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
    get_client_metadata_scopes,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    handle_registration_response,
    handle_token_response_scopes,
    issuers_match,
    validate_authorization_response_iss,
    validate_metadata_issuer,
)
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from mcp_types import LATEST_PROTOCOL_VERSION
from pydantic import AnyUrl

from agentd.errors import InvalidInput, UpstreamError
from agentd.version import __version__

__all__ = ["Discovered", "Refused", "authorization_url", "client_for", "discover",
           "exchange", "new_pkce", "refresh", "register", "revoke", "validate_iss"]

log = logging.getLogger(__name__)

#: Seconds one exchange with a server may take.
TIMEOUT_S = 15.0
#: What agentd's registrations ask to be able to do.
GRANT_TYPES = ["authorization_code", "refresh_token"]
_INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
    "clientInfo": {"name": "agentd", "version": __version__}}}


class Refused(Exception):
    """The authorization server refused a grant (``invalid_grant``: the refresh token
    was revoked, expired, or spent)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error


@dataclass(frozen=True, kw_only=True)
class Discovered:
    """What a login needs to know of a server and its authorization server."""

    server_url: str
    #: The RFC 8707 resource indicator the tokens are asked for.
    resource: str
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None
    revocation_endpoint: str | None
    metadata: OAuthMetadata | None
    #: The scope the server's 401 asked for, if it named one.
    challenged_scope: str | None
    prm: ProtectedResourceMetadata | None

    def to_json(self) -> dict[str, Any]:
        return {"server_url": self.server_url, "resource": self.resource,
                "issuer": self.issuer,
                "authorization_endpoint": self.authorization_endpoint,
                "token_endpoint": self.token_endpoint,
                "registration_endpoint": self.registration_endpoint,
                "revocation_endpoint": self.revocation_endpoint,
                "metadata": None if self.metadata is None
                else self.metadata.model_dump(mode="json", exclude_none=True)}


def client() -> httpx2.AsyncClient:
    """A client for the exchanges: no redirect followed (the SDK's discovery treats a
    redirect as "not here"), a bounded time."""
    return httpx2.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False,
                              headers={"User-Agent": f"agentd/{__version__}"})


def _unreachable(what: str, url: str, exc: Exception) -> UpstreamError:
    return UpstreamError(f"{what} at {url} could not be reached: "
                         f"{type(exc).__name__}: {exc}", code="oauth_server_error")


async def _send(http: httpx2.AsyncClient, request: httpx2.Request, what: str
                ) -> httpx2.Response:
    try:
        response = await http.send(request)
        await response.aread()
    except httpx2.HTTPError as exc:
        raise _unreachable(what, str(request.url), exc) from None
    return response


async def _challenge(http: httpx2.AsyncClient, server_url: str
                     ) -> tuple[str | None, str | None]:
    """What the server's 401 to a first request says: its resource metadata URL and
    the scope it asks for (both None when it asks for nothing)."""
    request = httpx2.Request("POST", server_url, json=_INITIALIZE, headers={
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": LATEST_PROTOCOL_VERSION})
    response = await _send(http, request, "the MCP server")
    if response.status_code not in (401, 403):
        return None, None
    return (extract_resource_metadata_from_www_auth(response),
            extract_scope_from_www_auth(response))


async def discover(http: httpx2.AsyncClient, server_url: str, *,
                   issuer: str | None = None) -> Discovered:
    """The server's protected resource metadata and its authorization server's
    metadata (``issuer``: the one to use among those the server names)."""
    metadata_url, scope = await _challenge(http, server_url)
    prm = None
    failed: int | None = None
    for url in build_protected_resource_metadata_discovery_urls(metadata_url, server_url):
        response = await _send(http, create_oauth_metadata_request(url),
                               "the MCP server's resource metadata")
        if response.status_code >= 500 or response.status_code == 429:
            failed = response.status_code
        prm = await handle_protected_resource_response(response)
        if prm is not None:
            break
    if prm is None and failed is not None:
        raise UpstreamError(f"the MCP server {server_url} failed to give its resource "
                            f"metadata (HTTP {failed})", code="oauth_server_error")
    resource = resource_url_from_server_url(server_url)
    if prm is not None:
        if not check_resource_allowed(requested_resource=resource,
                                      configured_resource=str(prm.resource)):
            raise UpstreamError(f"the MCP server's metadata names resource {prm.resource}, "
                                f"not {resource}: refused (RFC 9728 3.3)",
                                code="oauth_server_error")
        resource = str(prm.resource)
    return await _authorization_server(http, server_url, prm, resource, scope, issuer)


def _chosen(listed: list[str], issuer: str | None, prm: ProtectedResourceMetadata | None,
            server_url: str) -> str | None:
    """The authorization server to use among those the resource names: the one the
    settings pin (it must be among them), else the first; None: none named (the
    2025-03-26 fallback to the server's own origin)."""
    if issuer is None:
        return listed[0] if listed else None
    chosen = next((u for u in listed if issuers_match(u, issuer)), None)
    if chosen is None and (prm is not None or not _same_origin(issuer, server_url)):
        raise InvalidInput(
            f"the MCP server {server_url} names authorization server(s) "
            f"{', '.join(listed) or '(none)'}, not {issuer} (oauth.authorization_server)",
            code="oauth_server_mismatch")
    return chosen or issuer


async def _metadata(http: httpx2.AsyncClient, auth_url: str | None, server_url: str
                    ) -> OAuthMetadata | None:
    """The authorization server's metadata (RFC 8414 / OpenID discovery, in the SDK's
    order), its issuer checked (RFC 8414 3.3)."""
    expected = auth_url or _origin(server_url)
    for url in build_oauth_authorization_server_metadata_discovery_urls(auth_url, server_url):
        response = await _send(http, create_oauth_metadata_request(url),
                               "the authorization server's metadata")
        ok, found = await handle_auth_metadata_response(response)
        if not ok:
            break
        if found is None:
            continue
        if issuers_match(str(found.issuer), expected):
            expected = str(found.issuer)  # (a root issuer with or without its slash)
        try:
            validate_metadata_issuer(found, expected)
        except OAuthFlowError as exc:
            raise UpstreamError(f"{exc} (RFC 8414 3.3): refused",
                                code="oauth_server_error") from None
        return found
    if auth_url is not None:
        raise UpstreamError(f"the authorization server {auth_url} publishes no metadata "
                            "(RFC 8414, OpenID discovery)", code="oauth_server_error")
    return None


async def _authorization_server(http: httpx2.AsyncClient, server_url: str,
                                prm: ProtectedResourceMetadata | None, resource: str,
                                scope: str | None, issuer: str | None) -> Discovered:
    listed = [str(u) for u in prm.authorization_servers] if prm is not None else []
    auth_url = _chosen(listed, issuer, prm, server_url)
    metadata = await _metadata(http, auth_url, server_url)
    base = _origin(server_url)
    if metadata is None:  # (the 2025-03-26 fallback: endpoints at the server's origin)
        return Discovered(
            server_url=server_url, resource=resource, issuer=auth_url or base,
            authorization_endpoint=urljoin(base, "/authorize"),
            token_endpoint=urljoin(base, "/token"),
            registration_endpoint=urljoin(base, "/register"), revocation_endpoint=None,
            metadata=None, challenged_scope=scope, prm=prm)
    return Discovered(
        server_url=server_url, resource=resource, issuer=str(metadata.issuer),
        authorization_endpoint=str(metadata.authorization_endpoint),
        token_endpoint=str(metadata.token_endpoint),
        registration_endpoint=(str(metadata.registration_endpoint)
                               if metadata.registration_endpoint else None),
        revocation_endpoint=(str(metadata.revocation_endpoint)
                             if metadata.revocation_endpoint else None),
        metadata=metadata, challenged_scope=scope, prm=prm)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _same_origin(a: str, b: str) -> bool:
    return _origin(a).lower() == _origin(b).lower()


def scope_for(found: Discovered, wanted: list[str] | None, extra: str | None) -> str | None:
    """The scope to ask for: the agent's ``oauth.scopes``, else the server's choice
    (its challenge, its metadata, ``offline_access`` if offered); plus ``extra`` (a
    scope the server asked for since, when a call was refused for want of it)."""
    if wanted is not None:
        chosen: str | None = " ".join(wanted) or None
    else:
        chosen = get_client_metadata_scopes(found.challenged_scope, found.prm,
                                            found.metadata, GRANT_TYPES)
    if extra:
        have = (chosen or "").split()
        chosen = " ".join([*have, *(s for s in extra.split() if s not in have)])
    return chosen


def _auth_method(metadata: OAuthMetadata | None, secret: bool) -> str:
    offered = (metadata.token_endpoint_auth_methods_supported if metadata else None) or [
        "client_secret_basic"]
    if not secret:
        return "none"
    for method in ("client_secret_basic", "client_secret_post"):
        if method in offered:
            return method
    return "client_secret_basic"


def client_for(found: Discovered, *, client_id: str, client_secret: str | None,
               redirect_uri: str) -> OAuthClientInformationFull:
    """A client registered beforehand (its id, and its secret if it has one)."""
    return OAuthClientInformationFull(
        client_id=client_id, client_secret=client_secret,
        token_endpoint_auth_method=_auth_method(found.metadata, client_secret is not None),
        redirect_uris=[AnyUrl(redirect_uri)], grant_types=GRANT_TYPES, issuer=found.issuer)


async def register(http: httpx2.AsyncClient, found: Discovered, *, redirect_uri: str,
                   scope: str | None, name: str) -> OAuthClientInformationFull:
    """Register agentd with the authorization server (RFC 7591)."""
    if found.registration_endpoint is None:
        raise InvalidInput(
            f"the authorization server {found.issuer} offers no dynamic client "
            "registration: register a client there and give its id (and secret, as "
            "secret:NAME) in the server's oauth block", code="oauth_needs_client")
    offered = (found.metadata.token_endpoint_auth_methods_supported
               if found.metadata else None) or ["client_secret_basic"]
    method = next((m for m in ("client_secret_basic", "client_secret_post", "none")
                   if m in offered), "client_secret_basic")
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(redirect_uri)], token_endpoint_auth_method=method,
        grant_types=GRANT_TYPES, response_types=["code"], client_name=name, scope=scope,
        software_id="agentd", software_version=__version__, application_type="web")
    request = create_client_registration_request(found.metadata, metadata,
                                                 _origin(found.server_url))
    response = await _send(http, request, "the authorization server's registration")
    try:
        registered = await handle_registration_response(response)
        check_registration_usable(registered)
    except OAuthRegistrationError as exc:
        raise UpstreamError(f"registering with {found.issuer} failed: {exc}"[:2000],
                            code="oauth_server_error") from None
    return registered.model_copy(update={"issuer": found.issuer})


def new_pkce() -> PKCEParameters:
    """A fresh PKCE verifier and its S256 challenge."""
    return PKCEParameters.generate()


def authorization_url(found: Discovered, client: OAuthClientInformationFull, *,
                      redirect_uri: str, scope: str | None, state: str,
                      challenge: str) -> str:
    """The link a person opens (RFC 6749 4.1.1, PKCE, RFC 8707's ``resource``)."""
    params = {"response_type": "code", "client_id": client.client_id,
              "redirect_uri": redirect_uri, "state": state, "code_challenge": challenge,
              "code_challenge_method": "S256", "resource": found.resource}
    if scope:
        params["scope"] = scope
        if "offline_access" in scope.split():
            params["prompt"] = "consent"  # (OpenID Connect Core 11)
    joiner = "&" if urlsplit(found.authorization_endpoint).query else "?"
    return f"{found.authorization_endpoint}{joiner}{urlencode(params)}"


def validate_iss(iss: str | None, metadata: dict[str, Any] | None) -> None:
    """RFC 9207: the ``iss`` of the authorization response is the issuer's."""
    try:
        validate_authorization_response_iss(
            iss, None if metadata is None else OAuthMetadata.model_validate(metadata))
    except OAuthFlowError as exc:
        raise InvalidInput(f"{exc} (RFC 9207): refused", code="oauth_state_invalid") from None


def _context(client: OAuthClientInformationFull, redirect_uri: str) -> OAuthContext:
    context = OAuthContext(
        server_url="", storage=None,  # type: ignore[arg-type]
        client_metadata=OAuthClientMetadata(redirect_uris=[AnyUrl(redirect_uri)]),
        redirect_handler=None, callback_handler=None)
    context.client_info = client
    return context


async def _token_request(http: httpx2.AsyncClient, url: str, data: dict[str, str],
                         client: OAuthClientInformationFull, redirect_uri: str
                         ) -> OAuthToken:
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Accept": "application/json"}
    try:
        data, headers = _context(client, redirect_uri).prepare_token_auth(data, headers)
    except OAuthTokenError as exc:
        raise UpstreamError(str(exc), code="oauth_server_error") from None
    response = await _send(http, httpx2.Request("POST", url, data=data, headers=headers),
                           "the authorization server's token endpoint")
    if response.status_code in (400, 401):
        error, description = _error_of(response)
        if error in ("invalid_grant", "invalid_client", "unauthorized_client"):
            raise Refused(error, description)
    if response.status_code not in (200, 201):
        error, description = _error_of(response)
        raise UpstreamError(f"the token endpoint {url} answered {response.status_code}: "
                            f"{error} {description}".strip()[:2000],
                            code="oauth_server_error")
    try:
        return await handle_token_response_scopes(response)
    except OAuthTokenError as exc:
        raise UpstreamError(f"the token endpoint {url}: {exc}"[:2000],
                            code="oauth_server_error") from None


def _error_of(response: httpx2.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:300]
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error", ""))[:100], str(body.get("error_description", ""))[:300]


async def exchange(http: httpx2.AsyncClient, *, token_endpoint: str, resource: str,
                   client: OAuthClientInformationFull, code: str, verifier: str,
                   redirect_uri: str) -> OAuthToken:
    """The code of an authorization response for tokens (RFC 6749 4.1.3, PKCE)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": client.client_id, "code_verifier": verifier, "resource": resource}
    return await _token_request(http, token_endpoint, data, client, redirect_uri)


async def refresh(http: httpx2.AsyncClient, *, token_endpoint: str, resource: str,
                  client: OAuthClientInformationFull, refresh_token: str,
                  redirect_uri: str) -> OAuthToken:
    """New tokens for a refresh token (RFC 6749 6); :class:`Refused` when the server
    refuses it."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": client.client_id, "resource": resource}
    return await _token_request(http, token_endpoint, data, client, redirect_uri)


async def revoke(http: httpx2.AsyncClient, *, endpoint: str,
                 client: OAuthClientInformationFull, token: str, hint: str,
                 redirect_uri: str) -> bool:
    """Ask the authorization server to revoke a token (RFC 7009); whether it said
    yes. A failure is logged, not raised: the token is forgotten here either way."""
    data = {"token": token, "token_type_hint": hint, "client_id": client.client_id}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        data, headers = _context(client, redirect_uri).prepare_token_auth(data, headers)
        response = await http.send(httpx2.Request("POST", endpoint, data=data,
                                                  headers=headers))
    except (httpx2.HTTPError, OAuthTokenError) as exc:
        log.warning("revoking a token at %s failed: %s", endpoint, exc)
        return False
    return response.status_code == 200
