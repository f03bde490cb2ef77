"""GET /v1/agents/{name}/snapshots/{ref}: the files a workspace snapshot changed (what
the console's timeline shows under a snapshot). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.conftest import asgi_client

from agentd.assembly import Runtime
from agentd.config import Settings


def _write(path: str, content: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "write_file", "arguments": {"path": path,
                                                                "content": content}}]}


@pytest.fixture
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings, runtime) as c:
        yield c


async def _turn(client: httpx.AsyncClient, content: str, agent: str = "a") -> None:
    sent = await client.post(f"/v1/agents/{agent}/sessions/k/messages",
                             json={"content": content})
    assert sent.json()["status"] == "completed", sent.text


async def _refs(client: httpx.AsyncClient, agent: str = "a") -> list[str]:
    events = (await client.get(f"/v1/agents/{agent}/sessions/k/events")).json()["events"]
    return [e["data"]["ref"] for e in events if e["kind"] == "workspace.snapshot"]


async def _changes(client: httpx.AsyncClient, ref: str, **params: str) -> list[tuple[str, str]]:
    response = await client.get(f"/v1/agents/a/snapshots/{ref}", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ref"] == ref and body["truncated"] is False
    assert sum(body["counts"].values()) == len(body["changes"])
    return [(c["path"], c["change"]) for c in body["changes"]]


async def test_what_each_snapshot_changed(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/agents", json={
        "name": "a", "tools": ["write_file"], "settings": {"script": [
            _write("a.txt", "v1"), {"text": "one"},
            _write("a.txt", "version 2"), _write("b/c.txt", "new"), {"text": "two"},
            _write("a.txt", "v3"), {"text": "three"}]}})
    assert created.status_code == 201, created.text
    await _turn(client, "first")
    checkpoint = await client.post("/v1/agents/a/sessions/k/checkpoints",
                                   json={"name": "first"})
    assert checkpoint.status_code == 201
    await _turn(client, "second")
    base, v1, v2, c = await _refs(client)

    # Against the session's snapshot before each one: what that step changed.
    assert await _changes(client, base, session="k") == []
    assert await _changes(client, v1, session="k") == [("a.txt", "added")]
    assert await _changes(client, v2, session="k") == [("a.txt", "modified")]
    assert await _changes(client, c, session="k") == [("b", "added"), ("b/c.txt", "added")]
    # Between any two of the agent's snapshots, and against nothing (every file).
    assert await _changes(client, base, against=c) == [
        ("a.txt", "removed"), ("b", "removed"), ("b/c.txt", "removed")]
    assert await _changes(client, c) == [("a.txt", "added"), ("b", "added"),
                                         ("b/c.txt", "added")]
    full = (await client.get(f"/v1/agents/a/snapshots/{v2}", params={"against": v1})).json()
    assert full["changes"] == [{"path": "a.txt", "change": "modified", "type": "file",
                                "size": 9}]
    assert full["against"] == v1 and full["counts"] == {"added": 0, "removed": 0,
                                                        "modified": 1}

    # After a restore to "first" the script plays its second turn again, and the same
    # states come back (same refs). The step before is the restored state's (v1), not
    # the log's last snapshot (c): the restore put the files back, so "version 2"
    # changed a.txt and removed nothing.
    restored = await client.post("/v1/agents/a/sessions/k/restore",
                                 json={"checkpoint": "first"})
    assert restored.status_code == 200, restored.text
    await _turn(client, "again")
    events = (await client.get("/v1/agents/a/sessions/k/events")).json()["events"]
    again = [e for e in events if e["kind"] == "workspace.snapshot"][-2]
    assert again["data"]["ref"] == v2
    assert await _changes(client, v2, session="k", seq=str(again["seq"])) == [
        ("a.txt", "modified")]
    assert await _changes(client, v2, against=c) == [("b", "removed"), ("b/c.txt", "removed")]
    # seq must be that ref's event of the session.
    missing = await client.get(f"/v1/agents/a/snapshots/{v2}",
                               params={"session": "k", "seq": str(again["seq"] - 1)})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "snapshot_not_found"


async def test_refused_lookups(client: httpx.AsyncClient) -> None:
    for name, tools in (("a", ["write_file"]), ("other", ["write_file"])):
        created = await client.post("/v1/agents", json={
            "name": name, "tools": tools,
            "settings": {"script": [_write(f"{name}.txt", name), {"text": "ok"}]}})
        assert created.status_code == 201
        await _turn(client, "go", agent=name)
    mine = (await _refs(client))[-1]
    theirs = (await _refs(client, "other"))[-1]
    assert mine != theirs

    async def refused(url: str, status: int, code: str, **params: str) -> dict[str, Any]:
        response = await client.get(url, params=params)
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == code
        return error

    # Another agent's snapshot is not this agent's, though the store holds it.
    await refused(f"/v1/agents/a/snapshots/{theirs}", 404, "snapshot_not_found")
    await refused(f"/v1/agents/a/snapshots/{mine}", 404, "snapshot_not_found",
                  against=theirs)
    await refused(f"/v1/agents/a/snapshots/{'0' * 64}", 404, "snapshot_not_found")
    await refused(f"/v1/agents/nobody/snapshots/{mine}", 404, "agent_not_found")
    await refused(f"/v1/agents/a/snapshots/{mine}", 404, "session_not_found",
                  session="missing")
    for bad in ("abc", mine.upper(), mine + "0"):
        error = await refused(f"/v1/agents/a/snapshots/{bad}", 422, "invalid_input")
        assert error["details"]["errors"][0]["field"] == "path.ref"
    error = await refused(f"/v1/agents/a/snapshots/{mine}", 422, "invalid_input", seq="3")
    assert error["details"]["errors"][0]["field"] == "query.seq"
    error = await refused(f"/v1/agents/a/snapshots/{mine}", 422, "invalid_input",
                          against="x")
    assert error["details"]["errors"][0]["field"] == "query.against"
    error = await refused(f"/v1/agents/a/snapshots/{mine}", 422, "invalid_input",
                          against=mine, session="k")
    assert error["details"]["errors"][0]["field"] == "query.against"
