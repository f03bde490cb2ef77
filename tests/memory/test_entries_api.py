"""/v1/agents/{name}/memory/entries and /memory/search through the app, on SQLite and
PostgreSQL (with pgvector where installed), with the offline default embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import bearer

from agentd.assembly import Runtime
from agentd.config import Settings
from agentd.server.app import create_app

BASE = "/v1/agents/a/memory"
NDJSON = {"content-type": "application/x-ndjson"}


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=bearer(settings)) as c:
        made = await c.post("/v1/agents", json={
            "name": "a", "model": "scripted",
            "settings": {"memory": {"namespaces": ["team"]}}})
        assert made.status_code == 201, made.text
        made = await c.post("/v1/agents", json={"name": "b", "model": "scripted"})
        assert made.status_code == 201, made.text
        yield c


def error_of(response: httpx.Response) -> tuple[str, str | None]:
    error: dict[str, Any] = response.json()["error"]
    errors = error.get("details", {}).get("errors") or [{}]
    return error["code"], errors[0].get("field")


async def test_write_read_update_delete(client: httpx.AsyncClient) -> None:
    made = await client.post(f"{BASE}/entries", json={
        "content": "My sister moved to Lisbon in May.", "tags": ["family"],
        "metadata": {"person": "sister", "year": 2026}})
    assert made.status_code == 201, made.text
    entry = made.json()
    assert entry["created"] is True and entry["id"].startswith("mem_")
    assert entry["tags"] == ["family"] and entry["metadata"]["year"] == 2026
    assert entry["tainted"] is False and entry["namespace"] is None
    assert entry["source"] == {"session": None, "run": None, "seq": None}
    again = await client.post(f"{BASE}/entries", json={
        "content": "  my SISTER moved to lisbon   in may. "})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["id"] == entry["id"]
    got = await client.get(f"{BASE}/entries/{entry['id']}")
    assert got.json()["content"] == "My sister moved to Lisbon in May."
    patched = await client.patch(f"{BASE}/entries/{entry['id']}",
                                 json={"content": "My sister moved to Porto.", "version": 1})
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == 2
    stale = await client.patch(f"{BASE}/entries/{entry['id']}",
                               json={"tags": ["x"], "version": 1})
    assert stale.status_code == 409
    # Another agent cannot see it.
    other = await client.get(f"/v1/agents/b/memory/entries/{entry['id']}")
    assert other.status_code == 404
    assert (await client.delete(f"{BASE}/entries/{entry['id']}")).status_code == 204
    assert (await client.get(f"{BASE}/entries/{entry['id']}")).status_code == 404


async def test_batch_search_and_filters(client: httpx.AsyncClient) -> None:
    facts = [
        ("My sister moved to Lisbon last spring.", ["family"]),
        ("The quarterly report is due on Friday.", ["work"]),
        ("I am allergic to peanuts.", ["health"]),
        ("Our cat is called Miso.", ["family", "pets"]),
        ("The database migration failed on staging.", ["work"]),
    ]
    made = await client.post(f"{BASE}/entries", json={
        "entries": [{"content": c, "tags": t} for c, t in facts]})
    assert made.status_code == 201, made.text
    assert made.json()["created"] == 5
    # Meaning, not words: no word of the question is in the answer.
    found = await client.post(f"{BASE}/search", json={
        "query": "where does my sibling live now?", "limit": 3})
    assert found.status_code == 200, found.text
    results = found.json()["results"]
    assert results[0]["content"] == "My sister moved to Lisbon last spring."
    assert results[0]["score"] > 0 and results[0]["scores"]["vector"] > 0.3
    # Words: full text alone.
    words = await client.post(f"{BASE}/search", json={
        "query": "peanuts", "vector_weight": 0.0})
    assert [r["content"] for r in words.json()["results"]] == ["I am allergic to peanuts."]
    assert words.json()["results"][0]["scores"]["text"] is not None
    # Filters apply to both sides.
    work = await client.post(f"{BASE}/search", json={
        "query": "where does my sibling live now?", "tags": ["work"]})
    assert {r["content"] for r in work.json()["results"]} <= {
        "The quarterly report is due on Friday.",
        "The database migration failed on staging."}
    pets = await client.post(f"{BASE}/search", json={"query": "animal",
                                                      "tags_any": ["pets", "health"]})
    assert {r["content"] for r in pets.json()["results"]} <= {
        "Our cat is called Miso.", "I am allergic to peanuts."}
    listed = await client.get(f"{BASE}/entries", params={"tag": "family"})
    assert len(listed.json()["entries"]) == 2


async def test_another_tenant_never_moves_a_search(client: httpx.AsyncClient) -> None:
    """Attack: a tenant writes, through the API, entries made of another tenant's
    search words (to move that tenant's rankings and so measure what it stores).
    The other tenant's searches give the same results with the same scores, by
    words alone and hybrid: full text ranks with the searched namespaces' own
    statistics only."""
    notes = [f"Meeting note {i}: the {w} budget for the {v} project" for i, (w, v) in
             enumerate([("marketing", "Lisbon"), ("travel", "Porto"), ("hiring", "Lisbon"),
                        ("marketing", "Berlin"), ("cloud", "Porto"), ("travel", "Oslo")])]
    made = await client.post(f"{BASE}/entries", json={"entries": [{"content": c}
                                                                  for c in notes]})
    assert made.status_code == 201, made.text
    searches = [{"query": "marketing budget Lisbon", "vector_weight": 0.0},
                {"query": "travel project", "vector_weight": 0.0},
                {"query": "which budget is for Porto?"}]

    async def results() -> list[list[tuple[str, float, float | None]]]:
        out = []
        for body in searches:
            found = await client.post(f"{BASE}/search", json=body)
            assert found.status_code == 200, found.text
            out.append([(r["id"], r["score"], r["scores"]["text"])
                        for r in found.json()["results"]])
        return out

    before = await results()
    assert all(before)
    rival = await client.post("/v1/agents", json={"name": "rival", "model": "scripted",
                                                  "settings": {"tenant": "rival"}})
    assert rival.status_code == 201, rival.text
    flood = [f"marketing Lisbon travel budget project Porto {i}" for i in range(300)]
    for start in range(0, len(flood), 100):
        wrote = await client.post("/v1/agents/rival/memory/entries", json={
            "entries": [{"content": c} for c in flood[start:start + 100]]})
        assert wrote.status_code == 201, wrote.text
    assert await results() == before
    await client.delete("/v1/agents/rival")
    assert await results() == before


async def test_shared_namespace(client: httpx.AsyncClient) -> None:
    made = await client.post(f"{BASE}/entries", json={"content": "The office wifi is "
                                                      "called agentd-guest.",
                                                      "namespace": "team"})
    assert made.status_code == 201 and made.json()["namespace"] == "team"
    refused = await client.post("/v1/agents/b/memory/entries", json={
        "content": "x", "namespace": "team"})
    assert refused.status_code == 403 and error_of(refused)[0] == "namespace_not_allowed"
    found = await client.post(f"{BASE}/search", json={"query": "wireless network name",
                                                      "namespaces": ["team"]})
    assert found.json()["results"][0]["namespace"] == "team"
    own_only = await client.post(f"{BASE}/search", json={"query": "wireless network",
                                                         "namespaces": [""]})
    assert own_only.json()["results"] == []


@pytest.mark.parametrize(("body", "field"), [
    ({"content": ""}, "body.content"),
    ({"content": "x" * 40_000}, "body.content"),
    ({"content": "ok", "tags": ["x" * 65]}, "body.tags.0"),
    ({"content": "ok", "bogus": 1}, "body.bogus"),
    ({"content": "ok", "metadata": [1]}, "body.metadata"),
    ({"entries": []}, "body.entries"),
    ({"entries": [{"content": "fine"}, {"content": ""}]},
     "body.entries.1.content"),
    ({"entries": [{"content": f"e{i}"} for i in range(1001)]}, "body.entries"),
])
async def test_bad_writes_name_the_field_and_write_nothing(
        client: httpx.AsyncClient, body: dict[str, Any], field: str) -> None:
    refused = await client.post(f"{BASE}/entries", json=body)
    assert refused.status_code == 422, refused.text
    assert error_of(refused)[1] == field
    assert (await client.get(f"{BASE}/entries")).json()["entries"] == []


async def test_non_finite_numbers_refused(client: httpx.AsyncClient) -> None:
    raw = b'{"content": "ok", "metadata": {"x": NaN}}'
    refused = await client.post(f"{BASE}/entries", content=raw,
                                headers={"content-type": "application/json"})
    assert refused.status_code == 422
    assert (await client.get(f"{BASE}/entries")).json()["entries"] == []


@pytest.mark.parametrize(("body", "field"), [
    ({"query": ""}, "body.query"),
    ({"query": "x", "limit": 0}, "body.limit"),
    ({"query": "x", "limit": 10**9}, "body.limit"),
    ({"query": "x", "limit": 10**6}, "body.limit"),
    ({"query": "x" * 100_000}, "body.query"),
    ({"query": "x", "tags": ["a"], "colour_filter": {"k": 1}}, "body.colour_filter"),
    ({"query": "x", "colour": "red"}, "body.colour"),
    ({"query": "x", "vector_weight": 2}, "body.vector_weight"),
    ({"query": "x", "metadata": {"k": [1]}}, "body.metadata.k"),
])
async def test_bad_searches(client: httpx.AsyncClient, body: dict[str, Any],
                            field: str) -> None:
    refused = await client.post(f"{BASE}/search", json=body)
    assert refused.status_code == 422, refused.text
    assert error_of(refused)[1] is not None and error_of(refused)[1].startswith(field)


async def test_a_bad_search_setting_is_refused_and_changes_nothing(
        client: httpx.AsyncClient) -> None:
    for memory in ({"neighbour_weight": 1.5}, {"neighbour_weight": -0.1},
                   {"vector_weight": "high"}):
        refused = await client.patch("/v1/agents/a", json={"settings": {"memory": memory}})
        assert refused.status_code == 422, refused.text
        assert f"memory.{next(iter(memory))}" in refused.text
    settings = (await client.get("/v1/agents/a")).json()["settings"]
    assert "neighbour_weight" not in settings.get("memory", {})


async def test_unknown_agent_and_entry(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/agents/nobody/memory/search",
                              json={"query": "x"})).status_code == 404
    missing = await client.get(f"{BASE}/entries/mem_nothing")
    assert missing.status_code == 404 and error_of(missing)[0] == "entry_not_found"


async def test_export_then_import_elsewhere(client: httpx.AsyncClient) -> None:
    await client.put(f"{BASE}/blocks/persona", json={"value": "terse", "limit": 50})
    await client.post(f"{BASE}/entries", json={"entries": [
        {"content": "fact one", "tags": ["t"]}, {"content": "fact two",
                                                 "tainted": True}]})
    exported = await client.get(f"{BASE}/export")
    assert exported.status_code == 200
    lines = exported.text.splitlines()
    assert len(lines) == 4 and '"agentd.memory"' in lines[0]
    imported = await client.post("/v1/agents/b/memory/import", content=exported.content,
                                 headers=NDJSON)
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"blocks": 1, "entries": 2, "duplicates": 0}
    again = await client.post("/v1/agents/b/memory/import", content=exported.content,
                                 headers=NDJSON)
    assert again.json()["duplicates"] == 2 and again.json()["entries"] == 0
    entries = (await client.get("/v1/agents/b/memory/entries")).json()["entries"]
    assert {e["content"]: e["tainted"] for e in entries} == {"fact one": False,
                                                             "fact two": True}
    block = (await client.get("/v1/agents/b/memory/blocks/persona")).json()
    assert block["value"] == "terse" and block["limit"] == 50


async def test_a_bad_import_line_writes_nothing(client: httpx.AsyncClient) -> None:
    body = b'{"type": "entry", "content": "good"}\n{"type": "entry", "content": ""}\n'
    refused = await client.post(f"{BASE}/import", content=body, headers=NDJSON)
    assert refused.status_code == 422
    assert error_of(refused)[1] == "body.line[2].content"
    broken = await client.post(f"{BASE}/import", content=b'{"type": "entry", "content"\n',
                             headers=NDJSON)
    assert broken.status_code == 422 and error_of(broken)[1] == "body.line[1]"
    over = (b'{"type": "block", "label": "p", "value": "xxxx", "limit": 2}\n'
            b'{"type": "entry", "content": "fine"}\n')
    refused = await client.post(f"{BASE}/import", content=over, headers=NDJSON)
    assert refused.status_code == 422 and error_of(refused)[1] == "body.line[1].value"
    assert (await client.get(f"{BASE}/entries")).json()["entries"] == []
    assert (await client.get(f"{BASE}/blocks")).json()["blocks"] == []


async def test_an_import_may_be_larger_than_other_bodies(settings: Settings,
                                                        runtime: Runtime) -> None:
    settings.max_body_bytes = 4096
    app = create_app(settings, runtime)
    lines = b"".join(b'{"type": "entry", "content": "fact %d %s"}\n' % (i, b"x" * 60)
                     for i in range(200))
    assert len(lines) > settings.max_body_bytes
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test",
            headers=bearer(settings)) as c:
        await c.post("/v1/agents", json={"name": "a", "model": "scripted"})
        imported = await c.post(f"{BASE}/import", content=lines, headers=NDJSON)
        assert imported.status_code == 200, imported.text
        assert imported.json()["entries"] == 200
        big = await c.post(f"{BASE}/entries", json={"content": "y" * 5000})
        assert big.status_code == 413
