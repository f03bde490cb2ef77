"""Fixtures of the OAuth tests: a real authorization server (oidc-provider, from npm),
MCP servers that take its tokens (the official SDK's server), and the person who
signs in on its pages."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client, free_port, wait_for_port
from tests.oauth.authserver import AuthServer, Person

from agentd.assembly import Runtime
from agentd.config import Settings

PROTECTED = Path(__file__).with_name("protected_mcp.py")


@pytest.fixture(scope="module")
def authserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """One authorization server for a module's tests (its accounts: authserver.ACCOUNTS;
    access tokens live 300 s, refresh tokens rotate)."""
    server = AuthServer(tmp_path_factory.mktemp("as"), access_token_ttl=300).start()
    try:
        yield server
    finally:
        server.stop()


class Protected:
    """An MCP server (the SDK's) taking ``authserver``'s tokens, at ``url``."""

    def __init__(self, issuer: str, folder: Path, scopes: str = "mcp:tools") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_path = folder / f"protected-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(PROTECTED), "--issuer", issuer, "--port", str(self.port),
             "--scopes", scopes, "--log", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, what="the protected MCP server")

    def authorizations(self) -> list[str]:
        """The Authorization header of every request it received, in order."""
        if not self.log_path.exists():
            return []
        return [line.split(" ", 3)[3] for line in self.log_path.read_text().splitlines()]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def protected(authserver: AuthServer, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Protected]:
    server = Protected(authserver.issuer, tmp_path_factory.mktemp("mcp"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def person() -> Iterator[Person]:
    """Alice, at a browser."""
    found = Person("alice")
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
async def api(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The daemon's API over ASGI with its bootstrap (admin) token, at the base URL
    its OAuth redirects come back to."""
    async with asgi_client(settings, runtime, base_url=settings.base_url()) as client:
        yield client


def oauth_server(url: str, **oauth: Any) -> dict[str, Any]:
    """An MCP server entry taking OAuth tokens (trusted: its results do not taint)."""
    return {"name": "gh", "url": url, "trusted": True, "oauth": oauth}


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}
