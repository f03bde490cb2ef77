"""A daemon for the identity tests: an admin (``token-1``), a configured token scoped to
tenant ``acme`` (``token-2``, a member), and named tokens made through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app
from agentd.store import open_store

ADMIN = "admin-token-0123456789abcdefghijklmnop"
SCOPED = "acme-token-0123456789abcdefghijklmnopq"


def settings_for(tmp_path: Path, database_url: str, **extra: Any) -> Settings:
    access = extra.pop("access", {"token-2": {"tenants": ["acme"]}})
    return Settings(home=tmp_path / "home", database_url=database_url, demo_agent=False,
                    shutdown_grace_s=2.0, tokens=[ADMIN, SCOPED], access=access,
                    tenants={"acme": {}}, **extra)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Daemon:
    runtime: Runtime
    api: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(self, method: str, path: str, token: str, **kwargs: Any
                   ) -> httpx.Response:
        return await self.api.request(method, path, headers=auth(token), **kwargs)

    async def mint(self, name: str, role: str, *, by: str = ADMIN,
                   **scope: Any) -> str:
        """A named token made by ``by``; its text."""
        made = await self.call("POST", "/v1/tokens", by,
                               json={"name": name, "role": role, **scope})
        assert made.status_code == 201, made.text
        text: str = made.json()["token"]
        self.tokens[name] = text
        return text


@asynccontextmanager
async def daemon(settings: Settings) -> AsyncIterator[Daemon]:
    runtime = Runtime(settings, await open_store(settings.database_url))
    await runtime.start()
    try:
        app = create_app(settings, runtime)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as api:
            yield Daemon(runtime, api)
    finally:
        await runtime.close()
