"""Two nodes on one PostgreSQL database: a token made on one works on the other, and a
token revoked (or a quota lowered) on one stops working there too, within the poll of
the identity version (each node re-reads tokens and tenants when it changed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import eventually
from tests.identity._daemon import ADMIN, auth, settings_for

from agentd.assembly import Runtime
from agentd.server.app import create_app
from agentd.store import open_store

pytestmark = pytest.mark.postgres


@pytest.fixture
async def apis(pg_url: str, tmp_path: Path
               ) -> AsyncIterator[tuple[list[httpx.AsyncClient], list[Runtime]]]:
    clients: list[httpx.AsyncClient] = []
    runtimes: list[Runtime] = []
    contexts = []
    try:
        for name in ("n1", "n2"):
            settings = settings_for(tmp_path / name, pg_url, node_id=name)
            runtime = Runtime(settings, await open_store(pg_url))
            await runtime.start()
            runtimes.append(runtime)
            app = create_app(settings, runtime)
            lifespan = app.router.lifespan_context(app)
            await lifespan.__aenter__()
            contexts.append(lifespan)
            clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url="http://test"))
        yield clients, runtimes
    finally:
        for client in clients:
            await client.aclose()
        for lifespan in contexts:
            await lifespan.__aexit__(None, None, None)
        for runtime in runtimes:
            await runtime.close()


async def test_a_token_revoked_on_one_node_stops_on_every_node(
        apis: tuple[list[httpx.AsyncClient], list[Runtime]]) -> None:
    (one, two), (_, node_two) = apis
    made = await one.post("/v1/tokens", headers=auth(ADMIN), json={
        "name": "roaming", "role": "member", "tenant": "acme"})
    assert made.status_code == 201, made.text
    text = made.json()["token"]

    async def status_on_two() -> int:
        return (await two.get("/v1/agents", headers=auth(text))).status_code

    await eventually(lambda: _is(status_on_two, 200), what="the token working on n2")
    assert (await one.delete("/v1/tokens/roaming", headers=auth(ADMIN))).status_code == 204
    assert (await one.get("/v1/agents", headers=auth(text))).status_code == 401
    await eventually(lambda: _is(status_on_two, 401), what="the revocation reaching n2")
    # Quotas too: lowered on n1, refused on n2.
    await one.post("/v1/tenants", headers=auth(ADMIN), json={"name": "shared"})
    await one.patch("/v1/tenants/shared", headers=auth(ADMIN), json={"quotas": {
        "agents": 0}})
    await eventually(lambda: node_two.identity.tenants.quotas("shared").agents == 0,
                     what="the quota reaching n2")
    create = await two.post("/v1/agents", headers=auth(ADMIN), json={
        "name": "shared.a", "settings": {"tenant": "shared"}})
    assert create.status_code == 403 and "quota_exceeded" in create.text, create.text


async def _is(check: object, wanted: int) -> bool:
    return await check() == wanted  # type: ignore[operator, no-any-return]
