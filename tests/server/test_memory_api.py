"""/v1/agents/{name}/memory/blocks through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import bearer

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app

BASE = "/v1/agents/a/memory/blocks"


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=bearer(settings)) as c:
        for name in ("a", "b"):
            made = await c.post("/v1/agents", json={"name": name, "model": "scripted"})
            assert made.status_code == 201, made.text
        yield c


def field_of(response: httpx.Response) -> str:
    errors: list[dict[str, Any]] = response.json()["error"]["details"]["errors"]
    return errors[0]["field"]


async def test_put_get_patch_history_restore_delete(client: httpx.AsyncClient) -> None:
    assert (await client.get(BASE)).json() == {"blocks": []}
    put = await client.put(f"{BASE}/persona", json={"value": "terse", "limit": 20,
                                                    "description": "who"})
    assert put.status_code == 200, put.text
    body = put.json()
    assert (body["label"], body["value"], body["chars"], body["limit"], body["version"]) \
        == ("persona", "terse", 5, 20, 1)
    patched = await client.patch(f"{BASE}/persona", json={"value": "verbose"})
    assert patched.json()["version"] == 2 and patched.json()["description"] == "who"
    again = await client.put(f"{BASE}/persona", json={"value": "calm"})
    assert again.json()["limit"] == 20 and again.json()["version"] == 3
    history = (await client.get(f"{BASE}/persona/history")).json()["versions"]
    assert [v["value"] for v in history] == ["terse", "verbose", "calm"]
    assert history[0]["changed_by"].startswith("api") and history[0]["run_id"] is None
    restored = await client.post(f"{BASE}/persona/restore", json={"version": 1})
    assert restored.status_code == 200 and restored.json()["value"] == "terse"
    assert restored.json()["version"] == 4
    assert (await client.get(f"{BASE}/persona")).json()["value"] == "terse"
    listed = (await client.get(BASE)).json()["blocks"]
    assert [b["label"] for b in listed] == ["persona"]
    assert (await client.delete(f"{BASE}/persona")).status_code == 204
    gone = await client.get(f"{BASE}/persona")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "block_not_found"


@pytest.mark.parametrize(("path", "body", "field"), [
    ("persona", {"value": "x", "limit": 0}, "body.limit"),
    ("persona", {"value": "x", "limit": 10**9}, "body.limit"),
    ("persona", {"value": "x" * 11, "limit": 10}, "body.value"),
    ("persona", {"value": 5}, "body.value"),
    ("persona", {"value": "x", "read_only": "yes"}, "body.read_only"),
    ("persona", {"value": "x", "other": 1}, "body.other"),
    ("bad%20label", {"value": "x"}, "path.label"),
    ("a" * 65, {"value": "x"}, "path.label"),
])
async def test_bad_input_is_422_naming_the_field(client: httpx.AsyncClient, path: str,
                                                 body: dict[str, Any], field: str) -> None:
    response = await client.put(f"{BASE}/{path}", json=body)
    assert response.status_code == 422, response.text
    assert field_of(response) == field
    assert (await client.get(BASE)).json() == {"blocks": []}  # nothing written


async def test_refusals_keep_the_block(client: httpx.AsyncClient) -> None:
    await client.put(f"{BASE}/notes", json={"value": "abcdef", "limit": 10})
    lower = await client.patch(f"{BASE}/notes", json={"limit": 3})
    assert lower.status_code == 422 and lower.json()["error"]["code"] == "block_over_limit"
    assert (await client.patch(f"{BASE}/nope", json={"value": "x"})).status_code == 404
    bad = await client.post(f"{BASE}/notes/restore", json={"version": 7})
    assert bad.status_code == 404
    assert (await client.post(f"{BASE}/notes/restore", json={"version": 0})).status_code \
        == 422
    assert (await client.get("/v1/agents/zz/memory/blocks")).status_code == 404
    # The API may change a read-only block (and the flag).
    await client.patch(f"{BASE}/notes", json={"read_only": True})
    changed = await client.put(f"{BASE}/notes", json={"value": "by person"})
    assert changed.status_code == 200 and changed.json()["read_only"] is True
    block = (await client.get(f"{BASE}/notes")).json()
    assert (block["value"], block["limit"], block["version"]) == ("by person", 10, 3)


async def test_share_with_another_agent(client: httpx.AsyncClient,
                                        runtime: Runtime) -> None:
    await client.put(f"{BASE}/team", json={"value": "v1"})
    shared = await client.post(f"{BASE}/team/attach", json={"agent": "b"})
    assert shared.status_code == 200, shared.text
    twice = await client.post(f"{BASE}/team/attach", json={"agent": "b"})
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "block_exists"
    assert (await client.post(f"{BASE}/team/attach", json={"agent": "a"})).status_code \
        == 422
    assert (await client.post(f"{BASE}/team/attach", json={"agent": "zz"})).status_code \
        == 404
    await client.put("/v1/agents/b/memory/blocks/team", json={"value": "v2"})
    assert (await client.get(f"{BASE}/team")).json()["value"] == "v2"
    # Deleting it from b leaves a's.
    assert (await client.delete("/v1/agents/b/memory/blocks/team")).status_code == 204
    assert (await client.get(f"{BASE}/team")).json()["value"] == "v2"
