"""Attack tests: another tenant's image by its hash. Blobs are kept per tenant and read
only through a session that refers to them, so a token of another tenant (or of the
same daemon, scoped elsewhere) that knows a blob's SHA-256 reads nothing, sends nothing
with it, and learns nothing from the answer (the same 404 as a hash nobody holds).
Its own copy of the same bytes is its own. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.media.images import png
from tests.server._scopes import ACME, ADMIN, GLOBEX, auth, scoped_daemon, settings_for

from agentd.assembly import Runtime

IMAGE = png(21, 13)
SHA = hashlib.sha256(IMAGE).hexdigest()
GHOST = hashlib.sha256(b"nobody holds this").hexdigest()


@pytest.fixture
async def daemon(tmp_path: Path, store_url: str
                 ) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with scoped_daemon(settings_for(tmp_path, store_url)) as (runtime, api):
        for name, tenant in (("acme-bot", "acme"), ("globex-bot", "globex")):
            made = await api.post("/v1/agents", headers=auth(ADMIN), json={
                "name": name, "settings": {"tenant": tenant}})
            assert made.status_code == 201, made.text
        sent = await api.post("/v1/agents/acme-bot/sessions/pics/messages", headers=auth(ACME),
                              json={"content": [{"type": "image",
                                                 "data": base64.b64encode(IMAGE).decode()}]})
        assert sent.status_code == 200, sent.text
        yield runtime, api


async def blobs(runtime: Runtime) -> list[tuple[str, str]]:
    rows = await runtime.store.engine.read(lambda tx: tx.all(
        "SELECT tenant, sha256 FROM blobs ORDER BY tenant"))
    return [(str(r[0]), str(r[1])) for r in rows]


async def test_another_tenants_blob_cannot_be_read_by_its_hash(
        daemon: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, api = daemon
    # Its own agent's session: "not found", word for word as a hash nobody holds.
    mine = await api.get(f"/v1/agents/globex-bot/sessions/pics/blobs/{SHA}",
                         headers=auth(GLOBEX))
    await api.post("/v1/agents/globex-bot/sessions/pics/messages", headers=auth(GLOBEX),
                   json={"content": "hi"})
    found = await api.get(f"/v1/agents/globex-bot/sessions/pics/blobs/{SHA}",
                          headers=auth(GLOBEX))
    ghost = await api.get(f"/v1/agents/globex-bot/sessions/pics/blobs/{GHOST}",
                          headers=auth(GLOBEX))
    assert mine.status_code == 404
    assert found.status_code == ghost.status_code == 404
    assert found.json()["error"]["code"] == ghost.json()["error"]["code"] == "blob_not_found"
    assert found.json()["error"]["message"].replace(SHA, "X") == \
        ghost.json()["error"]["message"].replace(GHOST, "X")
    # The victim's agent is not its to name at all.
    theirs = await api.get(f"/v1/agents/acme-bot/sessions/pics/blobs/{SHA}",
                           headers=auth(GLOBEX))
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "agent_not_found"
    # The owner reads it.
    owner = await api.get(f"/v1/agents/acme-bot/sessions/pics/blobs/{SHA}", headers=auth(ACME))
    assert owner.status_code == 200 and owner.content == IMAGE


async def test_another_tenants_blob_cannot_be_sent_by_its_hash(
        daemon: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, api = daemon
    before = await blobs(runtime)
    for sha in (SHA, GHOST):
        sent = await api.post("/v1/agents/globex-bot/sessions/steal/messages",
                              headers=auth(GLOBEX), json={"content": [
                                  {"type": "text", "text": "describe"},
                                  {"type": "image", "blob": sha}]})
        assert sent.status_code == 404, sent.text
        assert sent.json()["error"]["code"] == "blob_not_found"
    assert (await api.get("/v1/agents/globex-bot/sessions/steal",
                          headers=auth(GLOBEX))).status_code == 404
    assert await blobs(runtime) == before
    # The same tenant may send its own blob again by its hash, in another session.
    again = await api.post("/v1/agents/acme-bot/sessions/again/messages", headers=auth(ACME),
                           json={"content": [{"type": "image", "blob": SHA}]})
    assert again.status_code == 200 and again.json()["output"] == \
        "echo: [image image/png 21x13]"


async def test_the_same_bytes_are_each_tenants_own_copy(
        daemon: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, api = daemon
    sent = await api.post("/v1/agents/globex-bot/sessions/mine/messages", headers=auth(GLOBEX),
                          json={"content": [{"type": "image",
                                             "data": base64.b64encode(IMAGE).decode()}]})
    assert sent.status_code == 200, sent.text
    assert await blobs(runtime) == [("acme", SHA), ("globex", SHA)]
    # The victim deleting its session frees its copy; the other tenant's is untouched.
    gone = await api.delete("/v1/agents/acme-bot/sessions/pics", headers=auth(ACME))
    assert gone.status_code == 204
    assert await blobs(runtime) == [("globex", SHA)]
    kept = await api.get(f"/v1/agents/globex-bot/sessions/mine/blobs/{SHA}",
                         headers=auth(GLOBEX))
    assert kept.status_code == 200 and kept.content == IMAGE
