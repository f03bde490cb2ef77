"""Agent changes on the activity feed (GET /v1/events), against the real daemon process
over sockets: one client creates, patches, pauses, resumes, stops and deletes agents
while others follow the feed; the frames come in order with the right data, ``?agent=``
narrows them, and a tenant-scoped token sees none of another tenant's agents' frames
(their deletion included). The Python client's feed passes the frames through."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from tests.daemons import Daemon, create_agent

from agentd.client import Client

pytestmark = pytest.mark.e2e

ACME, ADMIN = "acme-feed-token-0123", "admin-feed-token-012"
ACCESS = {"token-1": {"tenants": ["acme"]}}
#: The last change of each test: every reader stops at it.
END = ("agent.deleted", "acme-a")


@pytest.fixture
def daemon(tmp_path: Any) -> Iterator[Daemon]:
    process = Daemon(tmp_path / "home", tmp_path / "agentd.log", env={
        "AGENTD_DEMO_AGENT": "false", "AGENTD_TOKENS": json.dumps([ACME, ADMIN]),
        "AGENTD_ACCESS": json.dumps(ACCESS)}, args=())
    try:
        yield process.start()
    finally:
        process.cleanup()


def lifecycle(api: httpx.Client, name: str, tenant: str) -> None:
    """Create, patch, pause, resume, stop and delete an agent, each answered first."""
    create_agent(api, name, settings={"tenant": tenant})
    patched = api.patch(f"/v1/agents/{name}", json={"instructions": "be brief"})
    assert patched.status_code == 200, patched.text
    for action in ("pause", "resume", "stop"):
        done = api.post(f"/v1/agents/{name}/{action}")
        assert done.status_code == 200, done.text
    assert api.delete(f"/v1/agents/{name}").status_code == 204


def one_life(name: str) -> list[tuple[str, str, str]]:
    return [("agent.created", name, "created"), ("agent.updated", name, "created"),
            ("agent.state", name, "paused"), ("agent.state", name, "running"),
            ("agent.state", name, "stopped"), ("agent.deleted", name, "stopped")]


async def read_raw(daemon: Daemon, http: httpx.AsyncClient, token: str,
                   opened: asyncio.Event, params: dict[str, str] | None = None
                   ) -> list[dict[str, Any]]:
    """Every agent frame of the feed, with its SSE fields, until END."""
    frames: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    async with http.stream("GET", "/v1/events", params=params,
                           headers=daemon.auth(token)) as got:
        assert got.status_code == 200
        async for line in got.aiter_lines():
            if line.startswith(": feed"):
                opened.set()
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                if fields.get("event", "").startswith("agent."):
                    frame = {**fields, "data": orjson.loads(fields["data"])}
                    frames.append(frame)
                    if (frame["event"], frame["data"]["agent"]) == END:
                        return frames
                fields = {}
    return frames


def test_agent_changes_reach_the_feed_in_order_narrowed_and_scoped(daemon: Daemon) -> None:
    with daemon.client(ADMIN) as api:
        create_agent(api, "acme-a", settings={"tenant": "acme"})
    # The Python client's feed (a thread: it is synchronous) follows everything.
    client_frames: list[Any] = []
    client_failed: list[BaseException] = []
    client_open = threading.Event()

    def follow_with_client() -> None:
        try:
            with Client(daemon.url, ADMIN) as client:
                client_open.set()
                for frame in client.feed():
                    if frame.event.startswith("agent."):
                        client_frames.append(frame)
                        if (frame.event, frame.data["agent"]) == END:
                            return
        except BaseException as exc:
            client_failed.append(exc)
            client_open.set()

    thread = threading.Thread(target=follow_with_client, daemon=True)
    thread.start()
    assert client_open.wait(30)
    # The client's request is open once a change made now reaches it.
    with daemon.client(ADMIN) as api:
        for _ in range(60):
            assert api.patch("/v1/agents/acme-a", json={"instructions": "warm"}
                             ).status_code == 200
            for _ in range(50):
                if client_frames or not thread.is_alive():
                    break
                time.sleep(0.02)
            if client_frames or not thread.is_alive():
                break
    assert not client_failed, client_failed
    warm = len(client_frames)

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=60) as http:
            readers = {"admin": (ADMIN, None), "acme": (ACME, None),
                       "narrowed": (ADMIN, {"agent": "acme-a"})}
            opened = {key: asyncio.Event() for key in readers}
            tasks = {key: asyncio.create_task(read_raw(daemon, http, token, opened[key],
                                                       params))
                     for key, (token, params) in readers.items()}
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened.values())),
                                   30)

            def changes() -> None:
                with daemon.client(ADMIN) as api:
                    lifecycle(api, "globex-g", "globex")
                    lifecycle(api, "acme-b", "acme")
                    patched = api.patch("/v1/agents/acme-a", json={"tools": ["calculator"]})
                    assert patched.status_code == 200, patched.text
                    assert api.delete("/v1/agents/acme-a").status_code == 204

            await asyncio.to_thread(changes)
            done = await asyncio.wait_for(asyncio.gather(*tasks.values()), 60)
            return dict(zip(tasks, done, strict=True))

    seen = asyncio.run(scenario())
    thread.join(60)
    assert not client_failed, client_failed

    def plain(frames: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [(f["event"], f["data"]["agent"], f["data"]["state"]) for f in frames]

    last_of_a = [("agent.updated", "acme-a", "created"), ("agent.deleted", "acme-a", "created")]
    assert plain(seen["admin"]) == one_life("globex-g") + one_life("acme-b") + last_of_a
    # The tenant-scoped token: none of globex-g's frames, its deletion included.
    assert plain(seen["acme"]) == one_life("acme-b") + last_of_a
    assert plain(seen["narrowed"]) == last_of_a
    for frame in seen["admin"]:
        assert "id" not in frame  # in no session's log: no id to give back
        # Nothing of the definition; no kind or session (it is no session event).
        assert set(frame["data"]) == {"agent", "state", "updated_at"}
        assert frame["data"]["updated_at"].endswith("Z")
    stamps = [f["data"]["updated_at"] for f in seen["admin"]]
    assert stamps[:6] == sorted(stamps[:6])
    assert [(f.event, f.data["agent"], f.data["state"]) for f in client_frames[warm:]
            ] == plain(seen["admin"])
    assert all(f.id is None and f.raw_id is None for f in client_frames)
