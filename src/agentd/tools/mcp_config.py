"""An agent's MCP servers as its settings name them (``settings.mcp``): the model
alone, so that the settings, which every CLI call imports, need nothing of the MCP
client (:mod:`agentd.tools.mcp`)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentd.trust import OperatorOnly

__all__ = ["MCPOAuth", "MCPServer"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: ``secret:NAME`` (a named secret of the agent or its tenant: agentd.secrets).
_SECRET_REF = re.compile(r"^secret:[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
#: A scope token (RFC 6749 3.3: printable ASCII but space, quote and backslash).
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,200}\Z")


class MCPOAuth(BaseModel):
    """An MCP server that takes OAuth 2.1 access tokens (``settings.mcp[].oauth``):
    a person authorizes agentd once (``agentd mcp login AGENT SERVER``: the
    authorization-code flow with PKCE), and the tokens are kept in the secrets store,
    refreshed before they expire (docs/security.md, "OAuth for MCP servers").

    Attributes:
        scopes: The scopes to ask for; None: what the server's challenge or metadata
            names (and ``offline_access`` when its authorization server offers it).
        client_id: A client registered with the authorization server beforehand;
            None: agentd registers itself (dynamic client registration).
        client_secret: That client's secret, as ``secret:NAME`` (never the value).
        tokens: Whose the tokens are: ``agent`` (this agent's alone) or ``tenant``
            (every agent of the tenant using the same server URL shares them).
        authorization_server: The authorization server (its issuer URL) the login
            must go to, among those the server's metadata names; None: the first it
            names. The daemon sends codes, refresh tokens and the client's secret
            there: an operator's to set, or a URL under the daemon's ``mcp_urls``.
    """

    model_config = ConfigDict(extra="forbid")

    scopes: list[str] | None = Field(None, max_length=50)
    client_id: str | None = Field(None, min_length=1, max_length=512)
    client_secret: str | None = None
    tokens: Literal["agent", "tenant"] = "agent"
    authorization_server: Annotated[str | None, OperatorOnly(
        "secrets", "the daemon sends authorization codes, refresh tokens and the "
                   "client's secret to this server (off the daemon's mcp_urls)",
        allows=lambda grants, value: grants.mcp_url(value))] = None

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        bad = [s for s in value or () if not _SCOPE.match(s)]
        if bad:
            raise ValueError(f"not a scope (printable characters, no space, quote or "
                             f"backslash): {bad[0][:80]!r}")
        return value

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_REF.match(value):
            raise ValueError("client_secret is a reference to a named secret, "
                             "secret:NAME (set it with agentd secret set), never the value")
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
            raise ValueError("client_id holds a control character")
        return value

    @field_validator("authorization_server")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s?#]+[^\s#]*\Z", value):
            raise ValueError("authorization_server is an http:// or https:// URL (the "
                             "server's issuer)")
        return value

    @model_validator(mode="after")
    def _secret_needs_id(self) -> MCPOAuth:
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("client_secret goes with a client_id (a client registered "
                             "beforehand)")
        return self


class MCPServer(BaseModel):
    """An MCP server whose tools an agent may use (one entry of ``settings.mcp``).

    Exactly one of ``command`` and ``url`` is given.

    Attributes:
        name: Prefix of its tools' names (``<name>__<tool>``).
        command: Argv of a local server speaking MCP over stdin/stdout. It runs in the
            agent's sandbox (its backend, workspace, limits and network grant), like
            the agent's shell commands.
        env: Variables for that process, on top of the sandbox's fixed environment
            (nothing of the daemon's), so a secret reaches it only when listed here.
        cwd: Its working directory, relative to the workspace.
        url: A streamable HTTP endpoint.
        headers: HTTP headers sent with every request (``Authorization``, ...).
        trusted: Its results are trusted; when false (the default) every result taints
            the session that reads it.
        tools: Only these of its tools (by the server's names); None: all.
        timeout_s: Limit of one call.
        oauth: The server takes OAuth access tokens (a ``url`` only):
            :class:`MCPOAuth`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
    command: Annotated[list[str] | None, OperatorOnly(
        "host", "a stdio server's command off the daemon's mcp_commands",
        allows=lambda grants, value: grants.mcp_command(value))
    ] = Field(None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: Annotated[str | None, OperatorOnly(
        "host", "the daemon itself connects to this URL (off the daemon's mcp_urls)",
        allows=lambda grants, value: grants.mcp_url(value))] = None
    headers: dict[str, str] = Field(default_factory=dict)
    trusted: bool = False
    tools: list[str] | None = None
    timeout_s: float = Field(60.0, gt=0, le=86_400)
    oauth: MCPOAuth | None = None

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value[0]:
            raise ValueError("the command's first item (the program) is empty")
        if value is not None and any("\x00" in a for a in value):
            raise ValueError("the command contains a NUL character")
        return value

    @field_validator("cwd")
    @classmethod
    def _in_workspace(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.split("/")
                                  or "\x00" in value):
            raise ValueError("cwd is a folder of the workspace: relative, without '..'")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"invalid environment variable name(s): {', '.join(bad)}")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("url must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command (a local server) and url "
                             "(a streamable HTTP server)")
        if self.url is not None and (self.env or self.cwd is not None):
            raise ValueError("env and cwd apply to a command, not to a url")
        if self.command is not None and self.headers:
            raise ValueError("headers apply to a url, not to a command")
        if self.command is not None and self.oauth is not None:
            raise ValueError("oauth applies to a url, not to a command")
        if self.oauth is not None and any(k.lower() == "authorization"
                                          for k in self.headers):
            raise ValueError("a server with oauth gets its Authorization header from its "
                             "tokens: leave it out of headers")
        return self
