"""An agent's MCP servers as its settings name them (``settings.mcp``): the model
alone, so that the settings, which every CLI call imports, need nothing of the MCP
client (:mod:`agentd.tools.mcp`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentd.trust import OperatorOnly

__all__ = ["MCPServer"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


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
        return self
