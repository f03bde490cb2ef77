"""A door as an OAuth 2.0 protected resource (the MCP door with ``[mcp.oauth]``): the
bearer tokens of an outside authorization server taken beside the daemon's own, and
the challenges of RFC 6750 and RFC 9728 when one is missing or refused.

:class:`BearerAuth <agentd.doors.http.BearerAuth>` asks the gate about a request to a
path it covers that the daemon's own tokens did not let in (a daemon token still
works there). The gate answers with:

- no token: 401, ``WWW-Authenticate: Bearer resource_metadata="<metadata URL>"``
  (and the scope the resource needs), which an MCP client follows to find the
  authorization server;
- a token refused (another issuer or audience, expired, not yet valid, a key or an
  algorithm not taken, not a JWT, inactive): 401 with ``error="invalid_token"``;
- a token without a required scope: 403 with ``error="insufficient_scope"`` and the
  ``scope`` needed;
- a valid token no ``principals`` rule maps to anyone: 403 ``forbidden``;
- else the request goes on as the rule's principal (``scope["state"]["principal"]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import Scope

from agentd.doors.http import TokenCheck, is_write
from agentd.errors import AgentdError, Forbidden, Unauthorized
from agentd.identity.resource import ProtectedResource
from agentd.security.identity import TOKEN_PREFIX

__all__ = ["ResourceGate"]

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def _quoted(text: str) -> str:
    """``text`` as the value of a challenge's parameter (RFC 7235 quoted-string,
    printable ASCII only)."""
    return _UNSAFE.sub("'", text)[:300]


class ResourceGate:
    """The protected paths (``paths``: exact, or a prefix ending in ``/``) and the
    verifier ``verifier(scope)`` finds for a request (None: none configured)."""

    def __init__(self, paths: tuple[str, ...],
                 verifier: Callable[[Scope], ProtectedResource | None],
                 base_url: str) -> None:
        self.paths = paths
        self.verifier = verifier
        self.base_url = base_url

    def covers(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p))
                   for p in self.paths)

    def _challenge(self, found: ProtectedResource, error: str | None = None,
                   description: str | None = None, scope: str | None = None) -> str:
        parts = []
        if error:
            parts.append(f'error="{error}"')
        if description:
            parts.append(f'error_description="{_quoted(description)}"')
        if scope:
            parts.append(f'scope="{_quoted(scope)}"')
        parts.append(f'resource_metadata="{found.metadata_url(self.base_url)}"')
        return "Bearer " + ", ".join(parts)

    async def decide(self, scope: Scope, check: TokenCheck, refused: AgentdError
                     ) -> tuple[AgentdError | None, dict[str, str]]:
        """What to answer a request the daemon's tokens refused (``refused``): None
        and no headers to let it in."""
        found = self.verifier(scope)
        if found is None or refused.status != 401:
            return refused, {"WWW-Authenticate": "Bearer"} if refused.status == 401 else {}
        needed = " ".join(found.config.scopes) or None
        token = check.presented(scope)
        if not token:
            return Unauthorized("this resource needs an OAuth access token (or a daemon "
                                "token): see its metadata"), {
                "WWW-Authenticate": self._challenge(found, scope=needed)}
        if token.startswith(TOKEN_PREFIX.encode()):
            # A daemon token (named) the check refused (unknown, expired, revoked): its
            # own reason, with the way to an OAuth token beside it.
            return refused, {"WWW-Authenticate": self._challenge(
                found, "invalid_token", refused.message)}
        verdict = await found.verify(token.decode("utf-8", "replace"))
        problem = verdict.problem
        if verdict.principal is not None:
            state = scope.setdefault("state", {})
            state["principal"] = verdict.principal
            state["token"] = verdict.principal.name
            if verdict.principal.role == "viewer" and is_write(scope):
                return Forbidden(f"{verdict.principal.label} is a viewer: it reads, and "
                                 "may not send messages"), {}
            return None, {}
        assert problem is not None
        if problem.error == "insufficient_scope":
            return Forbidden(problem.message, code="insufficient_scope"), {
                "WWW-Authenticate": self._challenge(found, "insufficient_scope",
                                                    problem.message, needed)}
        if problem.status == 403:
            return Forbidden(problem.message), {}
        return Unauthorized(problem.message, code="invalid_token"), {
            "WWW-Authenticate": self._challenge(found, "invalid_token", problem.message)}
