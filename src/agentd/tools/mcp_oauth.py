"""An MCP server's OAuth access token on the requests of its connection.

The tokens are not kept here: a :class:`TokenSource` (``agentd.secrets.oauth``: the
secrets store, refreshed before expiry, one refresh at a time) gives the current one.
:class:`OAuthBearer` is the ``httpx2`` auth of one connection: it makes sure of a token
before the connection starts and before each call (:meth:`OAuthBearer.prepare`, which
raises the error the model reads when there is none), puts it on every request, and
on a 401 asks the source once for a fresh one and sends the request again.

Nothing here raises inside the SDK's transport (an exception there closes the whole
connection): a problem met while a request is under way is kept
(:attr:`OAuthBearer.problem`) and becomes the call's error when the SDK reports the
request failed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Protocol

import httpx2

from agentd.errors import ToolError

if TYPE_CHECKING:
    from agentd.tools.mcp_config import MCPServer

__all__ = ["NEEDS_AUTHORIZATION", "OAuthBearer", "TokenSource", "needs_authorization"]

log = logging.getLogger(__name__)

#: The code of a call refused for want of a token.
NEEDS_AUTHORIZATION = "mcp_needs_authorization"
_CHALLENGE = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def needs_authorization(agent: str, server: str, why: str) -> ToolError:
    """The error a call gets when the server has no usable token: what a person must
    do, in words the model can pass on."""
    return ToolError(
        f"MCP server {server!r} needs authorization ({why}): an operator must run "
        f"`agentd mcp login {agent} {server}` (or open agent {agent!r} in the console) "
        "and sign in; tell the user, and try again once that is done",
        code=NEEDS_AUTHORIZATION)


class TokenSource(Protocol):
    """Where an agent's MCP servers' access tokens come from."""

    agent: str

    async def access_token(self, server: MCPServer, *, rejected: str | None = None,
                           current: str | None = None) -> str:
        """A valid access token for ``server`` (refreshed when near its expiry, or when
        it is ``rejected``: the token a server just refused; ``current``: the one the
        connection holds, whose keeping is no new use); ToolError
        (:data:`NEEDS_AUTHORIZATION`) when there is none to be had."""
        ...

    async def wants_scope(self, server: MCPServer, scope: str | None) -> None:
        """Note a scope ``server`` refused a call for want of (the next login asks
        for it)."""
        ...


def challenge(header: str | None) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate: Bearer ...`` challenge."""
    if not header:
        return {}
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _CHALLENGE.finditer(header)}


class OAuthBearer(httpx2.Auth):
    """The access token on a connection's requests (see the module's docstring)."""

    def __init__(self, source: TokenSource, server: MCPServer) -> None:
        self.source = source
        self.server = server
        self.token: str | None = None
        #: Why the last request failed for want of a token (None: it did not).
        self.problem: ToolError | None = None

    async def prepare(self) -> None:
        """Make sure of a token (the source refreshes one near its expiry); the
        ToolError the model reads when there is none."""
        self.problem = None
        self.token = await self.source.access_token(self.server, current=self.token)

    async def async_auth_flow(self, request: httpx2.Request
                              ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = self.token
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and token is not None:
            try:
                fresh = await self.source.access_token(self.server, rejected=token,
                                                       current=token)
            except ToolError as exc:
                self.problem = exc
                return
            except Exception as exc:  # (never into the SDK's transport: see above)
                log.warning("MCP server %r: no fresh token after a 401: %s",
                            self.server.name, exc)
                self.problem = needs_authorization(self.source.agent, self.server.name,
                                                   "its token was refused")
                return
            self.token = fresh
            request.headers["Authorization"] = f"Bearer {fresh}"
            response = yield request
            if response.status_code == 401:
                self.problem = needs_authorization(
                    self.source.agent, self.server.name,
                    "the server refuses even a fresh token")
        elif response.status_code == 401:
            self.problem = needs_authorization(self.source.agent, self.server.name,
                                               "the server asks for a token")
        elif response.status_code == 403:
            found = challenge(response.headers.get("WWW-Authenticate"))
            if found.get("error") == "insufficient_scope":
                wanted = found.get("scope")
                try:
                    await self.source.wants_scope(self.server, wanted)
                except Exception as exc:  # (never into the SDK's transport)
                    log.warning("MCP server %r: scope %r not noted: %s", self.server.name,
                                wanted, exc)
                self.problem = needs_authorization(
                    self.source.agent, self.server.name,
                    f"it needs the scope {wanted!r}" if wanted else "it needs more scope")
